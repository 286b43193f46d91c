"""Jobs: creating, cancelling, listing and reconciling them. Executors run what this queues."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import secrets
import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import Integer, Select, Text, and_, bindparam, cast, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from controller.errors import Conflict, Forbidden, NotFound, TooBusy, ValidationError
from controller.principal import Principal, Quota
from controller.store import jsontext
from controller.store.jsontext import iso
from controller.store.models import ACTIVE_STATUSES, FINAL_STATUSES, Job, JobEvent, aware, utcnow
from controller.store.redact import redact


@functools.cache
def machine() -> str:
    """This machine as job records name it: the host name and a token of the kernel boot and PID namespace,
    so that containers or cloned machines sharing a host name never judge each other's process ids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{hashlib.sha256(f'{boot}:{namespace}'.encode()).hexdigest()[:8]}"


def worker_id() -> str:
    """Names the process that runs a job: machine and pid."""
    return f"{machine()}:{os.getpid()}"


def create_job(
    session: Session,
    *,
    kind: str,
    playbook: str,
    inventory: str,
    extra_vars: dict[str, Any],
    timeout: int,
    limit: str | None = None,
    settings: dict[str, Any] | None = None,
    secrets_holder: str | None = None,
    created_by: str | None = None,
    quota: Quota | None = None,
    max_queued: int = 0,
) -> Job:
    """A queued job; TooBusy if max_queued (when set) jobs already wait, or its submitter's quota of waiting
    jobs is used up. The quota of running jobs is kept on the job, for the claims (claim_next)."""
    if (max_queued or quota is not None) and session.get_bind().dialect.name == "postgresql":
        # Serialise admissions: under READ COMMITTED two requests could each miss the other's row.
        session.execute(text("SELECT pg_advisory_xact_lock(7261)"))
    job = Job(
        kind=kind,
        playbook=playbook,
        inventory=inventory,
        limit=limit,
        extra_vars=redact(extra_vars),
        timeout=timeout,
        status="queued",
        settings=settings or {},
        secrets_holder=secrets_holder,
        created_by=created_by,
        quota_running=quota.running if quota else None,
    )
    session.add(job)
    session.flush()
    if quota is not None and quota.queued is not None:
        waiting = session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued", Job.created_by == created_by))
        if waiting > quota.queued:
            raise TooBusy(
                f"token {created_by!r} already has {quota.queued} jobs waiting, its quota; try again when some have started "
                "(an admin changes quotas: cloudx policy set --token-max-queued N, or per token)",
                retry_after=30,
            )
    # Counted after the insert: SQLite serialises writers, so each request sees the rows admitted before it.
    if max_queued and session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) > max_queued:
        raise TooBusy(f"{max_queued} jobs are already waiting; try again later", retry_after=5)
    return job


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def may_change(created_by: str | None, principal: Principal) -> bool:
    """Only a job's creator and admins may stop or delete it (operators share the queue, not each other's jobs)."""
    return principal.role == "admin" or created_by == principal.name


def check_owner(job: Job, principal: Principal) -> None:
    if not may_change(job.created_by, principal):
        raise Forbidden(f"job {job.id} was started by {job.created_by!r}: only its creator or an admin may stop or delete it")


def cancel_owned(session: Session, principal: Principal, job_id: str) -> Job:
    """A caller's cancel (POST /api/jobs/<id>/cancel): its creator or an admin; refused once the job has ended
    (other than canceled). The executor is told after the commit."""
    job = get_job(session, job_id)
    check_owner(job, principal)
    job = cancel_job(session, job_id)
    if not job.active and job.status != "canceled":
        raise Conflict(f"job {job_id} already ended as {job.status}")
    return job


def cancel_job(session: Session, job_id: str) -> Job:
    """Cancel a queued job at once, or ask the worker of a running one to stop it."""
    job = get_job(session, job_id)
    queued = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="canceled", status_reason="canceled before it started", finished_at=utcnow(), cancel_requested=True)
    ).rowcount
    if not queued:
        session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True))
    session.flush()
    session.refresh(job)
    return job


def claim_next(session: Session, max_running: int, worker: str, node: str, only: str | None = None) -> str | None:
    """Move the oldest queued job (or the job `only`) to running if fewer than max_running run.

    It is one UPDATE, atomic on every backend, so dispatchers in several processes (services, CLI runs,
    Celery workers) never exceed the limit or claim the same job: the status is checked again on the
    row itself, which PostgreSQL re-reads after a concurrent update.
    A CLI run or a Celery worker claims its own job (`only`) whatever the limit: it was sent there to run;
    but not beyond its submitter's quota of running jobs (a Celery worker sends it back for later).
    """
    if only is None:
        if session.get_bind().dialect.name == "postgresql":
            # Under READ COMMITTED the running count is not re-read after a concurrent claim: serialise them.
            session.execute(text("SELECT pg_advisory_xact_lock(7263)"))
        # A job with credentials runs only where they are held (in that executor's memory).
        claimable = and_(Job.status == "queued", or_(Job.secrets_holder.is_(None), Job.secrets_holder == worker), within_quota())
        oldest = select(Job.id).where(claimable).order_by(Job.created_at, Job.id).limit(1).scalar_subquery()
        running = select(func.count()).select_from(Job).where(Job.status == "running").scalar_subquery()
        condition = and_(Job.id == oldest, Job.status == "queued", running < max_running)
    else:
        if session.get_bind().dialect.name == "postgresql":
            # Two workers claiming jobs of one submitter must see each other's claims (its running quota).
            session.execute(text("SELECT pg_advisory_xact_lock(7263)"))
        condition = and_(Job.id == only, Job.status == "queued", within_quota())
    now = utcnow()
    return session.execute(
        update(Job).where(condition).values(status="running", worker=worker, node=node, started_at=now, heartbeat_at=now).returning(Job.id)
    ).scalar()


def within_quota() -> Any:
    """A queued job whose submitter runs fewer jobs than the job's quota_running (if it has one)."""
    mine = aliased(Job)
    running = select(func.count()).select_from(mine).where(mine.status == "running", mine.created_by == Job.created_by)
    return or_(Job.quota_running.is_(None), running.scalar_subquery() < Job.quota_running)


def set_worker(session: Session, job_id: str, worker: str) -> None:
    session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(worker=worker))


def fail_job(session: Session, job_id: str, status: str, reason: str) -> bool:
    """End a job that is still active; False when it had already ended.

    A worker that is still alive after all (a network partition, a paused machine) sees the job is no longer
    running and stops its playbook (controller.runner.worker.JobRun._watch).
    """
    return bool(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
            .values(status=status, status_reason=reason, finished_at=utcnow())
        ).rowcount
    )


def reconcile(session: Session, lost_after: int) -> list[str]:
    """End running jobs whose worker is gone (as "error"); queued jobs stay queued and run again.

    A worker on this machine whose process no longer exists is gone at once;
    any other is gone when it has not reported for `lost_after` seconds.
    """
    host = machine()
    ended = []
    stale = utcnow() - timedelta(seconds=lost_after)
    for job in session.scalars(select(Job).where(Job.status == "running")):
        worker_host, _, pid = (job.worker or "").rpartition(":")
        local_dead = worker_host == host and pid.isdigit() and not _pid_alive(int(pid))
        heartbeat = aware(job.heartbeat_at or job.started_at or job.created_at)
        if local_dead or heartbeat < stale:
            why = "its worker process is gone" if local_dead else f"its worker has not reported for {lost_after} s"
            if fail_job(session, job.id, "error", f"worker lost: the worker or its machine stopped while the job was running ({why})"):
                ended.append(job.id)
    for job in session.scalars(select(Job).where(Job.status == "queued", Job.secrets_holder.is_not(None))):
        holder_host, _, pid = (job.secrets_holder or "").rpartition(":")
        if holder_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            reason = "the credentials of this job were held in memory by a controller that stopped; submit it again"
            if fail_job(session, job.id, "error", reason):
                ended.append(job.id)
    return ended


def undispatched(session: Session, older_than: float) -> list[tuple[str, str, str | None]]:
    """Queued jobs last sent to the broker more than older_than seconds ago: (id, kind, secrets_holder)."""
    stale = utcnow() - timedelta(seconds=older_than)
    return [
        (row.id, row.kind, row.secrets_holder)
        for row in session.execute(
            select(Job.id, Job.kind, Job.secrets_holder).where(
                Job.status == "queued", or_(Job.dispatched_at < stale, and_(Job.dispatched_at.is_(None), Job.created_at < stale))
            )
        )
    ]


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- views and pages ----------------------------------------------------------


# The fields of schemas.jobs.Event, in order (the page encoder below builds them fast; tests/test_schemas.py checks).
EVENT_VIEW_COLUMNS = ("counter", "uuid", "parent_uuid", "event", "host", "task", "play", "stdout", "created", "event_data")


def encode_cursor(created_at: datetime, key: str | int) -> str:
    return base64.urlsafe_b64encode(f"{iso(created_at)}|{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, key = raw.split("|", 1)
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")), key
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("cursor is not valid; use next_cursor from the previous page", field="cursor") from None


def jobs_page(session: Session, limit: int, cursor: str | None, status: str | None, kind: str | None) -> tuple[list[Job], str | None]:
    query: Select[tuple[Job]] = select(Job)
    if status:
        if status not in ACTIVE_STATUSES + FINAL_STATUSES:
            raise ValidationError(f"status must be one of: {', '.join(ACTIVE_STATUSES + FINAL_STATUSES)}", field="status")
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    if cursor:
        created, key = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < key)))
    jobs = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(jobs[limit - 1].created_at, jobs[limit - 1].id) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


_JOB_STATE = select(Job.status, Job.final_counter).where(Job.id == bindparam("job_id"))


def events_page_json(session: Session, job_id: str, limit: int, after: int, event: str | None, host: str | None) -> bytes:
    """GET /api/jobs/<id>/events: the job's state and a page of its events, as JSON."""
    job = session.connection().execute(_JOB_STATE, {"job_id": job_id}).first()
    if job is None:
        raise NotFound(f"no job {job_id}")
    rows, next_after = events_page(session, job_id, limit, after, event, host, data_as_text=True)
    head = {"job_id": job_id, "job_status": job.status, "final_counter": job.final_counter}
    return event_page_json(head, rows, {"next_after": next_after})


def events_page(
    session: Session, job_id: str, limit: int, after: int, event: str | None, host: str | None, data_as_text: bool = False
) -> tuple[list[Any], int | None]:
    """A keyset page of events (rows with the event columns, not ORM objects: pages are read-only and hot).

    data_as_text: event_data as the JSON text stored, not decoded (for event_page_json).
    """
    params: dict[str, Any] = {"job_id": job_id, "after": after, "limit": limit + 1}
    if event:
        params["event"] = event
    if host:
        params["host"] = host
    events = session.connection().execute(_events_query(bool(event), bool(host), data_as_text), params).all()
    next_after = events[limit - 1].counter if len(events) > limit else None
    return events[:limit], next_after


@functools.cache
def _events_query(event: bool, host: bool, data_as_text: bool) -> Select[Any]:
    # Built once per kind of page, with bound parameters: building and caching a statement per request cost
    # more than SQLite's own work on a page.
    columns: list[Any] = [JobEvent.__table__.c[name] for name in EVENT_VIEW_COLUMNS]
    if data_as_text:
        columns[-1] = cast(JobEvent.__table__.c.event_data, Text).label("event_data")
    query = select(*columns).where(JobEvent.job_id == bindparam("job_id"), JobEvent.counter > bindparam("after"))
    if event:
        query = query.where(JobEvent.event == bindparam("event"))
    if host:
        query = query.where(JobEvent.host == bindparam("host"))
    return query.order_by(JobEvent.counter).limit(bindparam("limit", type_=Integer))


# The events that count a task's result on a host, by the play recap's names.
HOST_RESULTS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable": "unreachable", "runner_on_skipped": "skipped"}


def host_progress(session: Session, job_id: str) -> list[dict[str, Any]]:
    """A running job's results per host so far, from its events (the recap's counts come only at the end)."""
    query = (
        select(JobEvent.host, JobEvent.event, func.count())
        .where(JobEvent.job_id == job_id, JobEvent.host.is_not(None), JobEvent.event.in_(HOST_RESULTS))
        .group_by(JobEvent.host, JobEvent.event)
    )
    hosts: dict[str, dict[str, Any]] = {}
    for host, event, count in session.execute(query):
        hosts.setdefault(host, {"host": host, **dict.fromkeys(HOST_RESULTS.values(), 0)})[HOST_RESULTS[event]] = count
    return [hosts[name] for name in sorted(hosts)]


def last_events(session: Session, job_id: str, count: int) -> list[Any]:
    """The job's newest `count` events, oldest first (a page shows the end of a long output and follows it live)."""
    columns = [JobEvent.counter, JobEvent.event, JobEvent.host, JobEvent.task, JobEvent.stdout]
    query = select(*columns).where(JobEvent.job_id == job_id).order_by(JobEvent.counter.desc()).limit(count)
    return list(reversed(session.execute(query).all()))


def event_page_json(head: dict[str, Any], rows: list[Any], tail: dict[str, Any]) -> bytes:
    """{**head, "events": [...], **tail} as JSON, with each event's data spliced in as stored.

    Event data is JSON the controller wrote itself (controller.store.events): decoding and encoding it again for
    every page cost most of an events request's CPU time. The page is encoded in one call with a random
    placeholder for each event's data, which the event text (from hosts) cannot guess.
    """
    marker = f"\x00{secrets.token_hex(16)}"
    page = {**head, "events": [{**dict(zip(EVENT_VIEW_COLUMNS[:-1], row[:-1], strict=True)), "event_data": marker} for row in rows], **tail}
    parts = jsontext.dumps(page).split(jsontext.dumps(marker))
    if len(parts) != len(rows) + 1:  # cannot happen; if it did, the slow way is still right
        page["events"] = [{**event, "event_data": jsontext.loads(row[-1] or "{}")} for event, row in zip(page["events"], rows, strict=True)]
        return jsontext.dumps(page)
    spliced = [parts[0]]
    for row, part in zip(rows, parts[1:], strict=True):
        spliced += ((row[-1] or "{}").encode(), part)
    return b"".join(spliced)
