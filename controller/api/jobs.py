"""Jobs, their events and per-host summaries."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from controller.api.auth import requires
from controller.api.body import body, doc, query, reply
from controller.api.context import config, executor, principal, session
from controller.queue.jobs import cancel_owned, events_page_json, get_job, jobs_page
from controller.schemas.jobs import EventPage, EventQuery, HostSummaries, Job, JobListQuery, JobPage, Relaunched, RelaunchRequest
from controller.services.relaunch import relaunch
from controller.store.models import JobHostSummary

bp = Blueprint("jobs", __name__)
NO_JOB = {404: "No such job."}


@bp.get("/jobs")
@requires("viewer")
@query(JobListQuery)
@doc("list_jobs", "jobs", "Jobs, newest first", {200: JobPage}, errors={400: "limit, status or cursor is not valid."})
def list_jobs(query: JobListQuery) -> Any:
    with session() as s:
        jobs, cursor = jobs_page(s, query.limit, query.cursor, query.status, query.kind)
        return reply(JobPage, {"jobs": jobs, "next_cursor": cursor})


@bp.get("/jobs/<job_id>")
@requires("viewer")
@doc("get_job", "jobs", "A job", {200: Job}, errors=NO_JOB)
def show_job(job_id: str) -> Any:
    with session() as s:
        return reply(Job, get_job(s, job_id))


@bp.get("/jobs/<job_id>/events")
@requires("viewer")
@query(EventQuery)
@doc(
    "list_job_events",
    "jobs",
    "A job's Ansible events, in order",
    {200: EventPage},
    errors={400: "limit or after is not valid.", **NO_JOB},
    description="Poll with after = the last counter seen until job_status is final and the last counter is final_counter.",
)
def list_events(job_id: str, query: EventQuery) -> Any:
    with session() as s:
        # The hot path: the page is spliced as bytes (queue.jobs.event_page_json), not built through the model.
        body = events_page_json(s, job_id, query.limit, query.after, query.event, query.host)
    return Response(body, mimetype="application/json")


@bp.get("/jobs/<job_id>/hosts")
@requires("viewer")
@doc("list_job_hosts", "jobs", "A job's per-host counts", {200: HostSummaries}, errors=NO_JOB)
def list_hosts(job_id: str) -> Any:
    with session() as s:
        get_job(s, job_id)
        rows = s.scalars(select(JobHostSummary).where(JobHostSummary.job_id == job_id).order_by(JobHostSummary.host))
        return reply(HostSummaries, {"job_id": job_id, "hosts": list(rows)})


@bp.post("/jobs/<job_id>/cancel")
@requires("operator")
@doc("cancel_job", "jobs", "Cancel a job", {202: Job}, errors={**NO_JOB, 409: "The job has already ended (other than canceled)."})
def cancel(job_id: str) -> Any:
    with session() as s:
        view = Job.dump(cancel_owned(s, principal(), job_id))
    executor().cancel(job_id)
    return jsonify(view), 202


@bp.post("/jobs/<job_id>/relaunch")
@requires("operator")
@body(RelaunchRequest)
@doc(
    "relaunch_job",
    "jobs",
    "Run an ended job again on its failed or unreachable hosts (or all)",
    {202: Relaunched},
    errors={
        **NO_JOB,
        400: "The input is not valid, or the job pasted a secret that is not given again.",
        403: "Not the job's creator nor an admin, or a host is now outside the scope.",
        409: "The job is still active, it is an import, or no host matches.",
        429: None,
    },
    description="A new job with the same playbook and variables, limited to those hosts and linked by relaunched_from; it goes through "
    "every check a new request does. A scan runs again whole.",
)
def relaunch_job(job_id: str, body: RelaunchRequest) -> Any:
    run = executor()
    with session() as s:
        done = relaunch(s, config(), principal(), job_id, body, run.holder_id)
        view = {"job_id": done.job.id, "status": done.job.status, "relaunched_from": job_id, "hosts": done.hosts}
    run.submit(view["job_id"], done.secrets)
    return reply(Relaunched, view, 202)
