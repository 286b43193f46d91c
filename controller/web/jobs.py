"""Job pages: the list, and a job with its per-host summary, live output, cancel and relaunch of failed hosts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, url_for
from sqlalchemy import select

from controller.api.auth import requires
from controller.api.context import config, executor, principal, session
from controller.errors import ApiError
from controller.queue.jobs import cancel_owned, get_job, host_progress, jobs_page, last_events
from controller.schemas.jobs import Job, JobListQuery, RelaunchRequest
from controller.services.relaunch import relaunch, secrets_needed
from controller.store.models import JobHostSummary, Scan
from controller.web.forms import FORM_ERROR, form_data, parsed_query, refused, submitted
from controller.web.pages import done, page
from controller.web.scans import OUTPUT_LINES

bp = Blueprint("jobs", __name__)
RELAUNCH_FIELDS = ("hosts", "password", "ssh_key", "become_password", "enrollment_password")
KINDS = ("scan", "deploy", "import")
SUMMARY_COLUMNS = ("host", "ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")


@bp.get("/jobs")
@requires("viewer")
def index() -> Any:
    query, filter_error = parsed_query(JobListQuery)
    with session() as s:
        try:
            jobs, cursor = jobs_page(s, query.limit, query.cursor, query.status, query.kind)
        except ApiError as exc:  # a cursor that is not one of ours
            (jobs, cursor), filter_error = jobs_page(s, query.limit, None, query.status, query.kind), exc.message
            g.query_refused = exc.message
        views = [Job.dump(job) for job in jobs]
    return page("jobs.html", "jobs", jobs=views, next_cursor=cursor, query=query, kinds=KINDS, filter_error=filter_error)


def _job_page(job_id: str, errors: dict[str, str], status: int = 200) -> Any:
    with session() as s:
        stored = get_job(s, job_id)
        job, pasted = Job.dump(stored), secrets_needed(stored)
        hosts = list(s.scalars(select(JobHostSummary).where(JobHostSummary.job_id == job_id).order_by(JobHostSummary.host)))
        summaries = [{c: getattr(h, c) for c in SUMMARY_COLUMNS} for h in hosts]
        output = last_events(s, job_id, OUTPUT_LINES)
        so_far = host_progress(s, job_id) if stored.active else []
        is_scan = s.scalar(select(Scan.id).where(Scan.job_id == job_id)) is not None
    return page(
        "job.html", "jobs", status, job=job, hosts=summaries, so_far=so_far, output=output, is_scan=is_scan, errors=errors, pasted=pasted
    )


@bp.get("/jobs/<job_id>")
@requires("viewer")
def show(job_id: str) -> Any:
    return _job_page(job_id, {})


@bp.post("/jobs/<job_id>/cancel")
@requires("operator")
def cancel(job_id: str) -> Any:
    with session() as s:
        cancel_owned(s, principal(), job_id)
    executor().cancel(job_id)
    g.audit_job_id = job_id
    return done(url_for(".show", job_id=job_id), "job-canceled")


@bp.post("/jobs/<job_id>/relaunch")
@requires("operator")
def relaunch_hosts(job_id: str) -> Any:
    given = submitted(form_data(RELAUNCH_FIELDS))
    run = executor()
    try:
        body = RelaunchRequest.parse(given, config=config())
        with session() as s:
            started = relaunch(s, config(), principal(), job_id, body, run.holder_id)
            new_id, secrets = started.job.id, started.secrets
    except ApiError as exc:
        errors = refused(exc, RELAUNCH_FIELDS)
        return _job_page(job_id, errors if errors.keys() - {FORM_ERROR} else {"relaunch": exc.message}, exc.status)
    run.submit(new_id, secrets)
    g.audit_job_id = new_id
    return done(url_for(".show", job_id=new_id), "relaunched")
