"""Relaunch: a new job with the same playbook and variables as an ended one, limited to some of its hosts.

The hosts come from the job's stored records: its per-host summaries (playbook_on_stats) and, for a job that
never reached its recap (canceled, timed out, its worker lost), its runner_on_failed and runner_on_unreachable
events. The new job goes through every check a new request does (scope, credential, host keys, quotas).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import ValidationError as PydanticError
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import Conflict, ValidationError
from controller.principal import Principal
from controller.queue.jobs import check_owner, get_job
from controller.schemas.deployments import PASTED_SECRETS, PLAYBOOKS, AgentRequest, DeploySettings, HostsDeployment, PatternDeployment
from controller.schemas.jobs import RelaunchRequest
from controller.schemas.scans import ScanRequest
from controller.services.deployments import create_deployment
from controller.services.policy import max_scan_timeout
from controller.services.scans import create_scan
from controller.store.models import Job, JobEvent, JobHostSummary, Scan

HOST_EVENTS = ("runner_on_failed", "runner_on_unreachable", "runner_on_ok", "runner_on_skipped")
WORDS = {"failed": "failed", "unreachable": "was unreachable", "failed_or_unreachable": "failed or was unreachable", "all": "ran"}


class Relaunched(NamedTuple):
    job: Job
    secrets: dict[str, Any] | None
    hosts: list[str]


def job_hosts(session: Session, job: Job) -> dict[str, set[str]]:
    """The job's hosts that failed, that were unreachable, and all it ran on (or was to run on)."""
    found: dict[str, set[str]] = {"failed": set(), "unreachable": set(), "all": set()}
    for s in session.scalars(select(JobHostSummary).where(JobHostSummary.job_id == job.id)):
        found["all"].add(s.host)
        if s.failed:
            found["failed"].add(s.host)
        if s.unreachable:
            found["unreachable"].add(s.host)
    summarised = set(found["all"])  # the recap's word (rescued and ignored failures are not failures) wins over events
    seen = session.execute(
        select(JobEvent.host, JobEvent.event)
        .where(JobEvent.job_id == job.id, JobEvent.event.in_(HOST_EVENTS), JobEvent.host.is_not(None))
        .distinct()
    )
    for host, event in seen:
        found["all"].add(host)
        if host in summarised:
            continue
        if event == "runner_on_unreachable":
            found["unreachable"].add(host)
        elif event == "runner_on_failed" and _failed_for_real(session, job.id, host):
            found["failed"].add(host)
    listed = (job.settings or {}).get("hosts")
    if listed:
        found["all"].update(listed)
    return found


def _failed_for_real(session: Session, job_id: str, host: str) -> bool:
    """Whether a host without a recap had a failure that was not ignored (ignore_errors)."""
    data = session.scalars(
        select(JobEvent.event_data).where(JobEvent.job_id == job_id, JobEvent.host == host, JobEvent.event == "runner_on_failed")
    )
    return any(not (d or {}).get("ignore_errors") for d in data)


def relaunch(session: Session, config: Config, principal: Principal, job_id: str, body: RelaunchRequest, holder: str) -> Relaunched:
    job = get_job(session, job_id)
    check_owner(job, principal)
    if job.active:
        raise Conflict(f"job {job_id} is still {job.status}: relaunch it once it has ended")
    if job.kind not in ("deploy", "scan"):
        raise Conflict(f"job {job_id} is an {job.kind}: it ran no playbook to run again")
    found = job_hosts(session, job)
    chosen = found["failed"] | found["unreachable"] if body.hosts == "failed_or_unreachable" else found[body.hosts]
    if job.kind == "deploy" and (job.settings or {}).get("hosts") is not None:
        chosen &= set(job.settings["hosts"])  # the generated inventory's hosts; never another one
    if not chosen:
        raise Conflict(f"no host of job {job_id} {WORDS[body.hosts]}: there is nothing to relaunch", field="hosts")
    hosts = sorted(chosen)
    if job.kind == "scan":
        new, secrets = _scan_again(session, config, principal, job), None
    else:
        new, secrets = create_deployment(session, config, principal, _deploy_request(job, hosts, body), holder)
    new.relaunched_from = job.id
    session.flush()
    return Relaunched(new, secrets, hosts)


def _scan_again(session: Session, config: Config, principal: Principal, job: Job) -> Job:
    """A scan is run again whole: its hosts are the scanners, and its target is what it scans."""
    scan = session.scalar(select(Scan).where(Scan.job_id == job.id))
    if scan is None:
        raise Conflict(f"job {job.id} has no scan record left to run again")
    given: dict[str, Any] = {"tool": scan.tool, "scan_type": scan.scan_type, "target": scan.target}
    if scan.ports:
        given["ports"] = scan.ports
    if isinstance(job.extra_vars.get("scanner_timeout"), int):  # within what the caller's role may ask for now
        given["timeout"] = min(job.extra_vars["scanner_timeout"], max_scan_timeout(session, principal, config.SCAN_MAX_TIMEOUT))
    return create_scan(session, config, principal, ScanRequest.parse(given, config=config)).job


def secrets_needed(job: Job) -> list[str]:
    """The secrets a deployment's request pasted (never stored), which its relaunch must be given again."""
    if job.kind != "deploy" or not job.settings:
        return []
    try:
        settings = DeploySettings.model_validate(job.settings)
    except PydanticError:  # settings of an older version: a relaunch says what it lacks, a page shows no prompt
        return []
    return sorted(set(settings.pasted or ()) | {"key": {"ssh_key"}, "password": {"password"}}.get(settings.auth, set()))


def _deploy_request(job: Job, hosts: list[str], body: RelaunchRequest) -> AgentRequest | HostsDeployment | PatternDeployment:
    """The original request, for these hosts, with the secrets it pasted given again."""
    settings = DeploySettings.model_validate(job.settings)
    extra = job.extra_vars or {}
    given: dict[str, Any] = {
        "os_type": settings.os_type,
        "username": settings.username,
        "credential": settings.credential,
        "known_hosts": _known_for(settings, hosts) or None,
        "manager_ip": extra.get("cloudx_agent_manager_address"),
        "group": extra.get("cloudx_agent_group"),
    }
    for name in secrets_needed(job):
        if getattr(body, name) is None:
            raise ValidationError(f"job {job.id} was run with a pasted {name}, which is never stored: give it again", field=name)
    given.update({name: getattr(body, name) for name in PASTED_SECRETS if getattr(body, name) is not None})
    given = {name: value for name, value in given.items() if value is not None}
    state = next(state for state, playbook in PLAYBOOKS.items() if playbook == job.playbook)
    if settings.hosts is None:
        # Each host is an inventory name the job ran on; the list of them can be longer than a limit a request may give.
        request = PatternDeployment.parse({**given, "limit": hosts[0], "state": state})
        return request.model_copy(update={"limit": ",".join(hosts)})
    if settings.port is not None or "cloudx_agent_name" in extra:  # POST /api/deploy/agent: one host
        agent = {"target": hosts[0], "port": settings.port, "agent_name": extra.get("cloudx_agent_name")}
        return AgentRequest.parse({**given, **{k: v for k, v in agent.items() if v is not None}})
    return HostsDeployment.parse({**given, "hosts": hosts, "state": state})


def _known_for(settings: DeploySettings, hosts: list[str]) -> list[str]:
    """The job's known_hosts lines for the hosts relaunched (a line for a host it does not reach is refused)."""
    reached = set(hosts) | {(settings.addresses or {}).get(host, host) for host in hosts}
    return [line for line in settings.known_hosts if line.split(" ", 1)[0].split("]:", 1)[0].lstrip("[") in reached]
