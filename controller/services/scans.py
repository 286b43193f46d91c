"""Scans: requests become scan jobs; results come back from the role's files into hosts and ports."""

from __future__ import annotations

import functools
import ipaddress
import json
import operator
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Integer, Select, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session, selectinload

from controller.config import Config
from controller.errors import Conflict, NotFound, ValidationError
from controller.principal import Principal
from controller.queue.jobs import cancel_job, check_owner, create_job
from controller.schemas.scans import Scan as ScanView
from controller.schemas.scans import ScanRequest, ScanResults
from controller.services.assets import AssetUpdate
from controller.services.policy import check_targets, max_scan_timeout, principal_for, quota_for
from controller.store import jsontext
from controller.store.database import Database, insert_rows
from controller.store.jsontext import iso
from controller.store.models import FINAL_STATUSES, Job, Scan, ScanHost, utcnow

PLAYBOOK = "playbooks/scan.yml"
HOST_COLUMNS = ("id", "scan_id", "address", "status", "reason", "hostnames", "mac", "extra_state")
PORT_COLUMNS = ("host_id", "protocol", "port", "state", "reason", "service", "product", "version")
_port_fields = operator.itemgetter(*PORT_COLUMNS[1:])  # one C call per port, where dict.get took seven
RAW_TYPES = {"xml": "application/xml", "json": "application/json", "csv": "text/csv"}


def create_scan(session: Session, config: Config, principal: Principal, request: ScanRequest) -> Scan:
    """A queued scan job, once its timeout is within the caller's role's limit and its target in the caller's scope."""
    top = max_scan_timeout(session, principal, config.SCAN_MAX_TIMEOUT)
    timeout = min(config.SCAN_TIMEOUT, top) if request.timeout is None else request.timeout
    if not 1 <= timeout <= top:
        raise ValidationError(f"timeout must be an integer number of seconds from 1 to {top}", field="timeout")
    # A hostname is scanned at the address checked here (the first, if it has several).
    address = check_targets(session, principal, [request.target])[request.target][0]
    if "/" in address:
        # The scanner refuses larger networks (scanner_max_addresses): say so now, not after a job started.
        size = ipaddress.ip_network(address, strict=False).num_addresses
        if size > config.SCAN_MAX_ADDRESSES:
            raise ValidationError(
                f"target covers {size} addresses, more than the scanner's limit of {config.SCAN_MAX_ADDRESSES} (CLOUDX_SCAN_MAX_ADDRESSES)",
                field="target",
            )
    extra_vars = {
        "scanner_hosts": config.SCANNER_PATTERN,
        "scanner_tool": request.tool,
        "scanner_scan_type": request.scan_type,
        "scanner_target": address,
        "scanner_ports": request.ports or "",
        "scanner_timeout": timeout,
        "scanner_max_addresses": config.SCAN_MAX_ADDRESSES,
    }
    job = create_job(
        session,
        kind="scan",
        playbook=PLAYBOOK,
        inventory=config.INVENTORY,
        extra_vars=extra_vars,
        timeout=timeout + 300,
        created_by=principal.name,
        quota=quota_for(session, principal),
        max_queued=config.MAX_QUEUED_JOBS,
    )
    scan = Scan(job=job, tool=request.tool, target=request.target, scan_type=request.scan_type, ports=request.ports)
    session.add(scan)
    session.flush()
    return scan


CLEANUP_PLAYBOOK = "playbooks/scan_cleanup.yml"


def cleanup_playbook(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """After a scan canceled, timed out or killed, its playbook's own clean-up did not run: the scanner still
    holds its work directory (raw output, hosts, the argv) and the scan process's status file."""
    return CLEANUP_PLAYBOOK, {"scanner_hosts": job["extra_vars"]["scanner_hosts"], "scanner_scan_id": job["id"]}


def results_root(config: Config, job_id: str) -> Path:
    return Path(config.ARTIFACTS_DIR).resolve() / job_id / "results"


def prepare(db: Database, job: dict[str, Any]) -> dict[str, Any]:
    """Check the target again where the job runs: the policy or the submitter's token may have changed."""
    with db.session() as session:
        check_targets(session, principal_for(session, job["created_by"]), [job["extra_vars"]["scanner_target"]])
    return {}


def runtime_vars(config: Config, job_id: str) -> dict[str, Any]:
    return {
        "scanner_results_dir": str(results_root(config, job_id)),
        "scanner_scan_id": job_id,
        "scanner_lease_seconds": config.SCAN_LEASE_SECONDS,
        "scanner_poll_interval": config.SCAN_POLL_INTERVAL,
    }


def result_dirs(config: Config, job_id: str) -> list[Path]:
    """One directory per scanner host that returned files."""
    root = results_root(config, job_id) / job_id
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def store_results(db: Database, config: Config, job_id: str, status: str, reason: str | None) -> tuple[str, str | None]:
    """Read the role's summary.json and hosts.jsonl into the scan's hosts and ports, streaming, in one transaction."""
    with db.session() as session:
        return store_results_in(session, config, job_id, status, reason)


def store_results_in(session: Session, config: Config, job_id: str, status: str, reason: str | None) -> tuple[str, str | None]:
    """store_results in the caller's session (its transaction: nothing is committed here); the job's status and
    reason as the summary tells them."""
    scan = session.scalar(select(Scan).where(Scan.job_id == job_id))
    if scan is None:
        return status, reason
    summary: dict[str, Any] | None = None
    seen_at = utcnow()
    for directory in result_dirs(config, job_id):
        summary_file = directory / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            summary["scanner"] = directory.name
        hosts_file = directory / "hosts.jsonl"
        if hosts_file.is_file():
            _store_hosts(session, scan.id, hosts_file, assets=AssetUpdate(session.connection(), scan, summary, seen_at))
    scan.summary = summary
    state = (summary or {}).get("state")
    if state == "timeout":
        return "timeout", f"the scan reached its timeout after {summary.get('elapsed')} s; partial results kept" if summary else reason
    if state == "failed" and status != "canceled":
        return "failed", (summary or {}).get("error") or reason
    return status, reason


def _store_hosts(session: Session, scan_id: int, path: Path, batch: int = 2000, assets: AssetUpdate | None = None) -> None:
    """Store the hosts and ports of a hosts.jsonl file (one host per line, as the scanner role writes it), and what
    they tell of the assets."""
    hosts: list[dict[str, Any]] = []

    def flush() -> None:
        connection = session.connection()
        if assets is not None:
            assets.add(hosts)
        ids = _insert_hosts(connection, scan_id, hosts)
        pairs = [(host_id, p) for host_id, h in zip(ids, hosts, strict=True) for p in h["ports"]]
        try:
            ports = [(host_id, *_port_fields(p)) for host_id, p in pairs]
        except KeyError:  # a port without every field (the scanner role writes them all): None for the missing
            ports = [(host_id, *(p.get(c) for c in PORT_COLUMNS[1:])) for host_id, p in pairs]
        insert_rows(connection, "scan_ports", PORT_COLUMNS, ports)
        hosts.clear()

    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                hosts.append(jsontext.loads(line))
                if len(hosts) >= batch:
                    flush()
    if hosts:
        flush()
    if assets is not None:
        assets.finish()


def _insert_hosts(connection: Connection, scan_id: int, hosts: list[dict[str, Any]]) -> list[int]:
    """Insert scan hosts; their ids, in order."""
    values = [{"scan_id": scan_id, **{c: h.get(c) for c in HOST_COLUMNS[2:]}} for h in hosts]
    if connection.dialect.name != "sqlite":
        statement = insert(ScanHost).returning(ScanHost.id, sort_by_parameter_order=True)
        return list(connection.execute(statement, values).scalars())
    # SQLite serialises writers, and this transaction holds the write lock from its first insert on: after
    # it, the next ids are known, so the rest go in one statement instead of a RETURNING per row.
    first = connection.execute(insert(ScanHost).returning(ScanHost.id), values[0]).scalar_one()
    ids = list(range(first, first + len(hosts)))
    rows = [
        (i, scan_id, h["address"], h["status"], h["reason"], jsontext.dumps(h["hostnames"]).decode(), h["mac"], h.get("extra_state"))
        for i, h in zip(ids[1:], hosts[1:], strict=True)
    ]
    insert_rows(connection, "scan_hosts", HOST_COLUMNS, rows)
    return ids


def raw_output(config: Config, scan: Scan) -> tuple[Path, str]:
    """The scanner's raw output file and its media type."""
    summary = scan.summary or {}
    for directory in result_dirs(config, scan.job_id):
        name = (summary.get("files") or {}).get("raw") or ""
        for candidate in ([directory / name] if name else []) + sorted(directory.glob("raw.*")):
            if candidate.is_file() and candidate.resolve().parent == directory.resolve():
                return candidate, RAW_TYPES.get(candidate.suffix.lstrip("."), "application/octet-stream")
    raise NotFound("this scan has no raw output (yet)")


def get_scan(session: Session, job_id: str, with_results: bool = False) -> Scan:
    query = select(Scan).where(Scan.job_id == job_id).options(selectinload(Scan.job))
    if with_results:
        query = query.options(selectinload(Scan.hosts).selectinload(ScanHost.ports))
    scan = session.scalar(query)
    if scan is None:
        raise NotFound(f"no scan with job_id {job_id}")
    return scan


def scan_view(scan: Scan, with_results: bool = False) -> dict[str, Any]:
    """The scan (schemas.scans.Scan), with its results (ScanDetail)."""
    view = listed(scan, scan.job.status, scan.job.status_reason, scan.job.progress, scan.job.updated_at)
    if with_results:
        view["results"] = ScanResults.dump({"summary": scan.summary, "hosts": scan.hosts})
    return view


# The fields of schemas.scans.Scan, in order, and those of them that are the scan's own columns (the others are
# its job's): a field added to the model and to the table is listed, and read by the list's query, with no edit here.
SCAN_VIEW_FIELDS = tuple(ScanView.model_fields)
SCAN_COLUMNS = tuple(name for name in SCAN_VIEW_FIELDS if name in Scan.__table__.c and name not in ("updated_at",))


def listed(scan: Any, status: str, reason: str | None, progress: int, job_updated_at: Any) -> dict[str, Any]:
    """What a scan list shows of a scan (a Scan or a row with its columns) and its job: schemas.scans.Scan, built here
    because this is the scans list's hot path (tests/test_schemas.py checks it against the model)."""
    job = {
        "status": status,
        "status_reason": reason,
        "progress": progress,
        "created_at": iso(scan.created_at),
        "updated_at": iso(max(scan.updated_at, job_updated_at)),
    }
    return {name: job[name] if name in job else getattr(scan, name) for name in SCAN_VIEW_FIELDS}


# A final status filter first looks among this many newest scans, walking them in order (see scans_page).
STATUS_WINDOW = 5000


@functools.cache
def _scans_query(before: bool, filters: frozenset[str], window: bool = False) -> Select[Any]:
    # Built once per set of filters, with bound parameters: building and caching a statement per request cost more
    # than SQLite's work.
    columns = [getattr(Scan, name) for name in SCAN_COLUMNS] + [Scan.updated_at]
    job_columns = (Job.status, Job.status_reason, Job.progress, Job.updated_at.label("job_updated_at"))
    query = select(*columns, *job_columns).join(Job, Job.id == Scan.job_id).order_by(Scan.id.desc())
    if before:
        query = query.where(Scan.id < bindparam("before"))
    if window:  # status || '': no index on it, so the planner walks the scans newest first and stops at the page's end
        query = query.where(Scan.id >= bindparam("floor"), Job.status.concat("") == bindparam("status"))
    for name in sorted(filters - {"status"} if window else filters):
        query = query.where((Job.status if name == "status" else getattr(Scan, name)) == bindparam(name))
    return query.limit(bindparam("limit", type_=Integer))


def scans_page(session: Session, limit: int, before: int | None, **filters: str | None) -> tuple[list[dict[str, Any]], int | None]:
    """A page of scan views, newest first: only the columns the list shows, in one joined query. Filters: tool,
    status, target (exact); empty ones are ignored.

    A final status is common (most scans succeed) or rare (errors), and SQLite's planner takes the status index for
    both: reading every successful job of 100,000 took 230 ms for a page of 50. So the newest STATUS_WINDOW scans are
    walked first (a common status fills the page there: under a millisecond), and only then the index (a rare one)."""
    given = {name: value for name, value in filters.items() if value}
    params: dict[str, Any] = {"limit": limit + 1, **given}
    if before is not None:
        params["before"] = before
    rows = None
    if given.get("status") in FINAL_STATUSES:
        top = before if before is not None else (session.scalar(select(func.max(Scan.id))) or 0) + 1
        window = _scans_query(before is not None, frozenset(given), True)
        rows = session.connection().execute(window, {**params, "floor": top - STATUS_WINDOW}).all()
        rows = rows if len(rows) > limit else None
    if rows is None:
        rows = session.connection().execute(_scans_query(before is not None, frozenset(given)), params).all()
    views = [listed(r, r.status, r.status_reason, r.progress, r.job_updated_at) for r in rows[:limit]]
    return views, (rows[limit - 1].id if len(rows) > limit else None)


def stop_scan(session: Session, principal: Principal, job_id: str) -> Job:
    """Ask a scan to stop (its creator or an admin); the executor is told after the commit."""
    check_owner(get_scan(session, job_id).job, principal)
    job = cancel_job(session, job_id)
    if not job.active and not job.cancel_requested:
        raise Conflict(f"scan {job_id} already ended as {job.status}")
    return job


def delete_scan(db: Database, config: Config, principal: Principal, job_id: str, cancel: Callable[[str], None], wait: float = 30) -> None:
    """Stop the scan if it is active (waiting up to `wait` seconds), then delete it with its job, events and files."""
    with db.session() as s:
        check_owner(get_scan(s, job_id).job, principal)
        active = cancel_job(s, job_id).active
    if active:
        cancel(job_id)
        deadline = time.monotonic() + wait
        while active and time.monotonic() < deadline:
            time.sleep(0.25)
            with db.session() as s:
                active = get_scan(s, job_id).job.active
        if active:
            raise Conflict(f"scan {job_id} is still stopping; try again shortly")
    with db.session() as s:
        s.execute(delete(Job).where(Job.id == job_id))
    shutil.rmtree(Path(config.ARTIFACTS_DIR).resolve() / job_id, ignore_errors=True)
