"""Agent coverage: which hosts the scans see have the agent, from the controller's own records.

A host has the agent when its latest successful deployment with `state: present` is newer than its latest
successful removal. A deployment's hosts are its job's per-host results (job_host_summaries), each at the
address the deployment's scope check resolved it to (DeploySettings.addresses).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.errors import Conflict, ValidationError
from controller.schemas.deployments import PLAYBOOKS
from controller.services.assets import network_keys
from controller.store.models import FINAL_STATUSES, Asset, Job, JobHostSummary, aware

STATE_OF_PLAYBOOK = {playbook: state for state, playbook in PLAYBOOKS.items()}


@dataclass
class AgentRecord:
    """What the deployments did to one address: its latest success of each state and its latest attempt."""

    address: str
    installed: datetime | None = None  # the latest successful state: present
    removed: datetime | None = None  # the latest successful state: absent
    last_at: datetime | None = None
    last_ok: bool = True
    last_job: str | None = None
    last_error: str | None = None
    jobs: list[str] = field(default_factory=list)

    @property
    def has_agent(self) -> bool:
        return self.installed is not None and (self.removed is None or self.installed > self.removed)


def _address(host: str, addresses: dict[str, str]) -> str | None:
    candidate = addresses.get(host, host)
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None  # a name the deployment did not resolve: not comparable with what the scans saw


def _deployment_results(session: Session) -> list[tuple[Job, JobHostSummary]]:
    query = (
        select(Job, JobHostSummary)
        .join(JobHostSummary, JobHostSummary.job_id == Job.id)
        .where(Job.kind == "deploy", Job.status.in_(FINAL_STATUSES))
        .order_by(func.coalesce(Job.finished_at, Job.created_at), Job.id)  # NULLs sort apart in SQLite and PostgreSQL
    )
    return [(job, summary) for job, summary in session.execute(query)]


def agent_records(session: Session) -> dict[str, AgentRecord]:
    """Every address a deployment reached, with what it did there, oldest first so the latest wins."""
    records: dict[str, AgentRecord] = {}
    for job, summary in _deployment_results(session):
        state = STATE_OF_PLAYBOOK.get(job.playbook)
        address = _address(summary.host, (job.settings or {}).get("addresses") or {})
        if state is None or address is None:
            continue
        record = records.setdefault(address, AgentRecord(address))
        at = aware(job.finished_at or job.created_at)
        ok = summary.failed == 0 and summary.unreachable == 0
        if ok and state == "present":
            record.installed = at
        elif ok:
            record.removed = at
        record.last_at, record.last_ok, record.last_job = at, ok, job.id
        record.last_error = None if ok else job.status_reason or ("unreachable" if summary.unreachable else "failed")
        record.jobs.append(job.id)
    return records


def _in(network: ipaddress.IPv4Network | ipaddress.IPv6Network | None, address: str) -> bool:
    return network is None or ipaddress.ip_address(address) in network


def coverage(session: Session, network: str | None, unseen_days: int, limit: int, now: datetime | None = None) -> dict[str, Any]:
    """Counts and lists (each at most `limit` long) of: assets seen up without the agent, hosts with the agent no
    scan has seen up for `unseen_days` days, and hosts whose latest deployment failed."""
    net = None
    query = select(Asset.address, Asset.last_seen, Asset.hostnames).where(Asset.last_seen.is_not(None))
    if network:
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValidationError("network must be an address or a CIDR network such as 192.0.2.0/24", field="network") from None
        low, high = network_keys(network)
        query = query.where(Asset.sort_key.between(low, high))
    records = {a: r for a, r in agent_records(session).items() if _in(net, a)}
    cutoff = (now or datetime.now(UTC)) - timedelta(days=unseen_days)
    seen: dict[str, datetime] = {}
    uncovered: list[dict[str, Any]] = []
    assets = 0
    for address, last_seen, hostnames in session.execute(query.order_by(Asset.sort_key)):
        assets += 1
        seen[address] = aware(last_seen) if last_seen is not None else None  # type: ignore[assignment]
        record = records.get(address)
        if record is None or not record.has_agent:
            uncovered.append({"address": address, "hostnames": hostnames, "last_seen": last_seen, "removed": record and record.removed})
    with_agent = [r for r in records.values() if r.has_agent]
    unseen = [
        {"address": r.address, "installed": r.installed, "last_seen": seen.get(r.address)}
        for r in with_agent
        if seen.get(r.address) is None or seen[r.address] < cutoff
    ]
    failed = [
        {"address": r.address, "at": r.last_at, "job_id": r.last_job, "error": r.last_error} for r in records.values() if not r.last_ok
    ]
    return {
        "network": net.with_prefixlen if net else None,
        "unseen_days": unseen_days,
        "counts": {
            "assets": assets,
            "with_agent": len(with_agent),
            "covered": assets - len(uncovered),
            "uncovered": len(uncovered),
            "unseen": len(unseen),
            "failed": len(failed),
        },
        "uncovered": uncovered[:limit],
        "unseen": sorted(unseen, key=lambda r: r["address"])[:limit],
        "failed": sorted(failed, key=lambda r: r["address"])[:limit],
    }


def uncovered_addresses(session: Session, network: str, most: int) -> list[str]:
    """The addresses of the assets in `network` seen up without the agent; Conflict (the records' state, not the
    request, is what refuses it) when there is none, or more than `most`."""
    found = coverage(session, network, unseen_days=0, limit=most + 1)
    addresses = [entry["address"] for entry in found["uncovered"]]
    if not addresses:
        raise Conflict(f"no asset in {found['network']} is without the agent", field="coverage")
    if found["counts"]["uncovered"] > most:
        raise Conflict(
            f"{found['counts']['uncovered']} hosts in {found['network']} are without the agent, more than {most} in one deployment: "
            "give a smaller network",
            field="coverage",
        )
    return addresses
