"""Schedules: scan and deployment requests started at the times a cron expression (croniter) or an interval gives.

Each due time is claimed once, whatever the number of API processes or machines: the run that moves a schedule's
next_run_at on is an UPDATE conditioned on the revision it read (as job claims are), and each due time has one row in
schedule_runs. A due time passed while no controller ran is recorded as missed; `catch_up: one` starts one run for
the latest of them. A run starts with its creator's rights as they stand then (a revoked or demoted creator pauses
the schedule, with why) and through the same checks as the request it holds (scope, credential, quotas).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from croniter import croniter
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import ApiError, Conflict, Forbidden, NotFound, TooBusy, ValidationError
from controller.principal import Principal
from controller.schemas.deployments import CoverageDeployment
from controller.schemas.schedules import SCHEDULE_ID, DeploymentSchedule, ScanSchedule, SchedulePatch, parse_request, time_zone
from controller.services.deployments import create_deployment
from controller.services.policy import check_targets, principal_for
from controller.services.scans import create_scan
from controller.store.database import Database
from controller.store.models import Credential, Job, Schedule, ScheduleRun, aware, utcnow

log = logging.getLogger("cloudx.schedules")

# Missed due times recorded one row each (the newest); missed_runs counts them all.
MISSED_ROWS = 100
# Due times of a cron expression counted one by one after an outage; beyond, the count says "at least".
MISSED_COUNTED = 10_000
DUE_PER_TICK = 200


class Started(NamedTuple):
    """A job a schedule queued: the executor is told once the transaction is committed."""

    schedule: str
    job_id: str
    secrets: dict[str, Any] | None


def next_due(cron: str | None, every: int | None, zone: str, after: datetime) -> datetime:
    """The first due time strictly after `after` (UTC)."""
    if every is not None:
        return after + timedelta(seconds=every)
    assert cron is not None
    local = aware(after).astimezone(time_zone(zone))
    runs = croniter(cron, local)
    while True:
        following = runs.get_next(datetime)
        # When clocks go back an hour, croniter gives the repeated local times twice: a daily 02:30 would run
        # twice that night. A wall-clock time already run is skipped (as Vixie cron does).
        if following.replace(tzinfo=None) > local.replace(tzinfo=None):
            return following.astimezone(UTC)


def _due_until(schedule: Schedule, now: datetime) -> tuple[int, list[datetime]]:
    """The due times from next_run_at up to now: how many (a lower bound past MISSED_COUNTED) and the newest of them
    (at most MISSED_ROWS + 1, oldest first)."""
    first = aware(schedule.next_run_at)  # type: ignore[arg-type]
    if first > now:
        return 0, []
    if schedule.every_seconds is not None:
        step = schedule.every_seconds
        count = math.floor((now - first).total_seconds() / step) + 1
        newest = range(max(0, count - MISSED_ROWS - 1), count)
        return count, [first + timedelta(seconds=step * i) for i in newest]
    times: deque[datetime] = deque(maxlen=MISSED_ROWS + 1)
    count, moment = 0, first
    while moment <= now and count < MISSED_COUNTED:
        times.append(moment)
        count += 1
        moment = next_due(schedule.cron, None, schedule.timezone, moment)
    if moment <= now:  # still more: jump to the latest due time
        latest = croniter(schedule.cron, now.astimezone(time_zone(schedule.timezone))).get_prev(datetime).astimezone(UTC)
        times.append(latest)
        count += 1
    return count, list(times)


# --- requests -----------------------------------------------------------------------------------------------------


def submit_request(
    session: Session, config: Config, principal: Principal, kind: str, request: dict[str, Any], holder: str
) -> tuple[str, dict[str, Any] | None]:
    """Queue the job a schedule's request stands for, as POST /api/scans or /api/deployments would: (job id, secrets)."""
    parsed = parse_request(kind, request, config=config)
    if kind == "scan":
        scan = create_scan(session, config, principal, parsed)  # type: ignore[arg-type]
        return scan.job_id, None
    job, secrets = create_deployment(session, config, principal, parsed, holder)  # type: ignore[arg-type]
    return job.id, secrets


def check_request(session: Session, config: Config, principal: Principal, kind: str, request: dict[str, Any], holder: str) -> None:
    """Refuse a request its creator could not submit now (scope, credential, inventory, timeout): the same checks
    as its runs, by queueing its job in a savepoint that is rolled back. What depends on the moment is not held
    against it: a full queue, or a network with no uncovered host today."""
    savepoint = session.begin_nested()
    try:
        _dry_run(session, config, principal, kind, request, holder)
    except ApiError as exc:
        if exc.field and not exc.field.startswith("request."):  # a field of the request, as the schedule names it
            exc.field = f"request.{exc.field}"
        raise
    finally:
        if savepoint.is_active:
            savepoint.rollback()


def _dry_run(session: Session, config: Config, principal: Principal, kind: str, request: dict[str, Any], holder: str) -> None:
    try:
        submit_request(session, config, principal, kind, request, holder)
    except TooBusy:
        pass
    except Conflict as exc:
        parsed = parse_request(kind, request, config=config)
        if exc.field != "coverage" or not isinstance(parsed, CoverageDeployment):
            raise
        _check_coverage(session, principal, parsed)


def _check_coverage(session: Session, principal: Principal, parsed: CoverageDeployment) -> None:
    """A coverage deployment with no uncovered host today: what does not depend on which hosts it will reach (the
    network, the manager, the platform, the stored credential's existence). The rest is checked at each run."""
    manager = [parsed.manager_ip] if parsed.manager_ip else []
    check_targets(session, principal, [parsed.coverage.network, *manager], windows=parsed.os_type == "windows")
    if parsed.credential is not None and session.scalar(select(Credential.id).where(Credential.name == parsed.credential)) is None:
        raise ValidationError(f"no stored credential {parsed.credential!r}", field="credential")


# --- create, read, change, delete ---------------------------------------------------------------------------------


def get_schedule(session: Session, ident: str) -> Schedule:
    """By id or by name."""
    column = Schedule.id if SCHEDULE_ID.fullmatch(ident) else Schedule.name
    schedule = session.scalar(select(Schedule).where(column == ident))
    if schedule is None:
        raise NotFound(f"no schedule {ident}")
    return schedule


def create_schedule(
    session: Session, config: Config, principal: Principal, body: ScanSchedule | DeploymentSchedule, holder: str
) -> Schedule:
    if session.scalar(select(Schedule.id).where(Schedule.name == body.name)) is not None:
        raise Conflict(f"a schedule named {body.name!r} exists", field="name")
    now = utcnow()
    request = body.given_request
    schedule = Schedule(
        name=body.name,
        kind=body.kind,
        request=request,
        cron=body.cron,
        every_seconds=body.every_seconds,
        timezone=body.timezone,
        enabled=body.enabled,
        catch_up=body.catch_up,
        created_by=principal.name,
        next_run_at=next_due(body.cron, body.every_seconds, body.timezone, now) if body.enabled else None,
        created_at=now,
    )
    session.add(schedule)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a schedule named {body.name!r} exists", field="name") from None
    check_request(session, config, principal, body.kind, request, holder)
    return schedule


def update_schedule(session: Session, config: Config, principal: Principal, ident: str, patch: SchedulePatch, holder: str) -> Schedule:
    """Change what was given. A new request is checked as a new schedule's is, with its creator's rights and, when
    another (an admin) changes it, with the caller's too: no one widens a schedule beyond their own scope."""
    schedule = get_schedule(session, ident)
    check_owner_of(schedule, principal)
    # Written first: on SQLite the transaction then holds the write lock, and the checks below (which read, then
    # write in a savepoint) never find their snapshot stale because another process wrote meanwhile.
    schedule.revision += 1  # and a claim computed from what was here before does not apply
    session.flush()
    if patch.name is not None and patch.name != schedule.name:
        if session.scalar(select(Schedule.id).where(Schedule.name == patch.name)) is not None:
            raise Conflict(f"a schedule named {patch.name!r} exists", field="name")
        schedule.name = patch.name
    if patch.request is not None:
        parse_request(schedule.kind, patch.request, config=config)
        for who in {schedule.created_by, principal.name}:
            rights = principal if who == principal.name else principal_for(session, who)
            check_request(session, config, rights, schedule.kind, patch.request, holder)
        schedule.request = patch.request
    timing = _retime(schedule, patch)
    if patch.catch_up is not None:
        schedule.catch_up = patch.catch_up
    if patch.enabled is not None and patch.enabled != schedule.enabled:
        if patch.enabled:
            _may_run(session, schedule)  # a schedule paused because its creator lost the right stays paused
        schedule.enabled, schedule.paused_reason, timing = patch.enabled, None, True
    if timing:
        # Paused: no due time. Resumed or retimed: the next one from now (the paused time holds no missed runs).
        schedule.next_run_at = next_due(schedule.cron, schedule.every_seconds, schedule.timezone, utcnow()) if schedule.enabled else None
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a schedule named {patch.name!r} exists", field="name") from None
    return schedule


def _retime(schedule: Schedule, patch: SchedulePatch) -> bool:
    """Apply a new cron expression, interval or time zone; whether the due time must be computed again."""
    if patch.cron is not None:
        schedule.cron, schedule.every_seconds = patch.cron, None
    if patch.every_seconds is not None:
        schedule.cron, schedule.every_seconds = None, patch.every_seconds
    if patch.timezone is not None:
        schedule.timezone = patch.timezone
    return patch.cron is not None or patch.every_seconds is not None or patch.timezone is not None


def _may_run(session: Session, schedule: Schedule) -> Principal:
    """The creator's rights now; Forbidden (with why) when they may no longer start jobs."""
    creator = principal_for(session, schedule.created_by)
    if not creator.has("operator"):
        raise Forbidden(f"the token {schedule.created_by!r} that made it is now a {creator.role}, and may not start jobs")
    return creator


def check_owner_of(schedule: Schedule, principal: Principal) -> None:
    if principal.role != "admin" and schedule.created_by != principal.name:
        raise Forbidden(f"schedule {schedule.name} was made by {schedule.created_by!r}: only its creator or an admin may change it")


def delete_schedule(session: Session, principal: Principal, ident: str) -> str:
    schedule = get_schedule(session, ident)
    check_owner_of(schedule, principal)
    session.execute(delete(ScheduleRun).where(ScheduleRun.schedule_id == schedule.id))
    session.delete(schedule)
    return schedule.id


def schedule_views(session: Session, schedules: list[Schedule]) -> list[dict[str, Any]]:
    """Schedules as the API shows them: with the status of the last job each started."""
    jobs = [s.last_job_id for s in schedules if s.last_job_id]
    status = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(jobs))).all()) if jobs else {}
    fields = ("id", "name", "kind", "request", "cron", "every_seconds", "timezone", "enabled", "catch_up", "paused_reason", "created_by")
    views = []
    for s in schedules:
        view = {name: getattr(s, name) for name in fields}
        view.update(
            created_at=aware(s.created_at),
            next_run_at=aware(s.next_run_at) if s.next_run_at else None,
            last_run_at=aware(s.last_run_at) if s.last_run_at else None,
            last_job_id=s.last_job_id,
            last_status=status.get(s.last_job_id) if s.last_job_id else None,
            missed_runs=s.missed_runs,
            skipped_runs=s.skipped_runs,
        )
        views.append(view)
    return views


def schedules_page(session: Session, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
    query = select(Schedule).order_by(Schedule.name).limit(limit + 1)
    if after is not None:
        query = query.where(Schedule.name > after)
    found = list(session.scalars(query))
    next_after = found[limit - 1].name if len(found) > limit else None
    return schedule_views(session, found[:limit]), next_after


def runs_page(session: Session, ident: str, limit: int, before: int | None) -> dict[str, Any]:
    schedule = get_schedule(session, ident)
    query = select(ScheduleRun).where(ScheduleRun.schedule_id == schedule.id).order_by(ScheduleRun.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(ScheduleRun.id < before)
    runs = list(session.scalars(query))
    return {
        "schedule_id": schedule.id,
        "runs": [
            {"due_at": aware(r.due_at), "outcome": r.outcome, "job_id": r.job_id, "reason": r.reason, "created_at": aware(r.created_at)}
            for r in runs[:limit]
        ],
        "next_before": runs[limit - 1].id if len(runs) > limit else None,
    }


# --- running what is due ------------------------------------------------------------------------------------------


def run_due(db: Database, config: Config, holder: str, now: datetime | None = None) -> list[Started]:
    """Claim and start every schedule due by now; the jobs queued, for the caller to hand to its executor."""
    fixed = now
    now = now or utcnow()
    with db.session() as session:
        due = list(
            session.execute(
                select(Schedule.id, Schedule.revision)
                .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                .order_by(Schedule.next_run_at)
                .limit(DUE_PER_TICK)
            )
        )
    started = []
    for schedule_id, revision in due:
        # Lateness is measured when each schedule is claimed, not when the tick began.
        moment = fixed or utcnow()
        try:
            with db.session() as session:
                job = run_one(session, config, holder, schedule_id, revision, moment)
        except Exception as exc:  # one broken schedule must not stop the others, tick after tick
            log.exception("schedule %s: starting its due run failed", schedule_id)
            _move_on(db, schedule_id, moment, exc)
            continue
        if job is not None:
            started.append(job)
    return started


def _move_on(db: Database, schedule_id: str, now: datetime, exc: Exception) -> None:
    """After an error that is not a refusal: the due time is recorded as refused, and the schedule moves on."""
    try:
        with db.session() as session:
            schedule = session.get(Schedule, schedule_id)
            if schedule is None or not schedule.enabled or schedule.next_run_at is None:
                return
            due = aware(schedule.next_run_at)
            schedule.revision += 1
            schedule.next_run_at = next_due(schedule.cron, schedule.every_seconds, schedule.timezone, max(due, now))
            schedule.skipped_runs += 1
            reason = f"an internal error stopped this run ({type(exc).__name__}); see the controller's log"
            if session.scalar(select(ScheduleRun.id).where(ScheduleRun.schedule_id == schedule_id, ScheduleRun.due_at == due)) is None:
                _record(session, schedule, due, "refused", reason)
    except Exception:
        log.exception("schedule %s: moving it past the failed run failed too", schedule_id)


def run_one(session: Session, config: Config, holder: str, schedule_id: str, revision: int, now: datetime) -> Started | None:
    """Claim the due times of one schedule (None: another process did, or it changed) and start its run."""
    # The claim comes first: it takes SQLite's write lock before anything is read in this transaction, and on
    # PostgreSQL a concurrent claim waits for this one and then matches no row.
    claimed = session.execute(
        update(Schedule)
        .where(Schedule.id == schedule_id, Schedule.revision == revision, Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        .values(revision=revision + 1)
    ).rowcount
    if not claimed:
        return None
    schedule = session.get(Schedule, schedule_id)
    assert schedule is not None
    session.refresh(schedule)
    count, times = _due_until(schedule, now)
    latest = times[-1]
    on_time = (now - latest).total_seconds() <= config.SCHEDULE_MISFIRE_GRACE
    run_at = latest if on_time or schedule.catch_up == "one" else None
    missed = times[:-1] if run_at is not None else times
    missed_count = count - (1 if run_at is not None else 0)
    for moment in missed:
        why = "the controller was not running at this time"
        if moment is missed[-1] and missed_count > len(missed):
            more = "at least " if count >= MISSED_COUNTED else ""
            why += f" ({more}{missed_count} runs missed, the newest {len(missed)} are listed)"
        session.add(ScheduleRun(schedule_id=schedule.id, due_at=moment, outcome="missed", reason=why))
    schedule.missed_runs += missed_count
    schedule.next_run_at = next_due(schedule.cron, schedule.every_seconds, schedule.timezone, latest)
    if missed_count:
        log.warning("schedule %s: %d run(s) missed while no controller ran", schedule.name, missed_count)
    if run_at is None:
        return None
    note = None if on_time else f"catch-up run: {missed_count} due time(s) were missed while the controller was down"
    return _start(session, config, holder, schedule, run_at, now, note)


def _record(session: Session, schedule: Schedule, due: datetime, outcome: str, reason: str | None, job_id: str | None = None) -> None:
    session.add(ScheduleRun(schedule_id=schedule.id, due_at=due, outcome=outcome, job_id=job_id, reason=reason))


def _start(
    session: Session, config: Config, holder: str, schedule: Schedule, due: datetime, now: datetime, note: str | None
) -> Started | None:
    try:
        creator = _may_run(session, schedule)
    except Forbidden as exc:
        schedule.enabled, schedule.next_run_at = False, None
        schedule.paused_reason = f"paused: its creator may no longer start jobs ({exc.message})"
        _record(session, schedule, due, "paused", schedule.paused_reason)
        log.warning("schedule %s paused: %s", schedule.name, exc.message)
        return None
    previous = session.get(Job, schedule.last_job_id) if schedule.last_job_id else None
    if previous is not None and previous.active:
        schedule.skipped_runs += 1
        _record(session, schedule, due, "skipped", f"the previous run (job {previous.id}) is still {previous.status}")
        return None
    savepoint = session.begin_nested()
    try:
        job_id, secrets = submit_request(session, config, creator, schedule.kind, schedule.request, holder)
        savepoint.commit()
    except ApiError as exc:
        savepoint.rollback()
        schedule.skipped_runs += 1
        _record(session, schedule, due, "refused", exc.message)
        log.warning("schedule %s: the run due at %s was refused: %s", schedule.name, due.isoformat(), exc.message)
        return None
    schedule.last_run_at, schedule.last_job_id = now, job_id
    _record(session, schedule, due, "started", note, job_id)
    return Started(schedule.id, job_id, secrets)
