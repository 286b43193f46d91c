"""Jobs, their events and per-host summaries."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from controller.api import executor, principal, requires, session
from controller.errors import Conflict
from controller.queue.jobs import cancel_job, check_owner, events_page_json, get_job, int_arg, job_view, jobs_page, page_limit, summary_view
from controller.store.models import JobHostSummary

bp = Blueprint("jobs", __name__)


@bp.get("/jobs")
@requires("viewer")
def list_jobs() -> Any:
    limit = page_limit(request.args.get("limit"))
    with session() as s:
        jobs, cursor = jobs_page(s, limit, request.args.get("cursor"), request.args.get("status"), request.args.get("kind"))
        return jsonify({"jobs": [job_view(job) for job in jobs], "next_cursor": cursor})


@bp.get("/jobs/<job_id>")
@requires("viewer")
def show_job(job_id: str) -> Any:
    with session() as s:
        return jsonify(job_view(get_job(s, job_id)))


@bp.get("/jobs/<job_id>/events")
@requires("viewer")
def list_events(job_id: str) -> Any:
    limit = page_limit(request.args.get("limit"), default=100)
    after = int_arg(request.args.get("after", "0"), "after", "after must be an event counter (an integer)") or 0
    with session() as s:
        body = events_page_json(s, job_id, limit, after, request.args.get("event"), request.args.get("host"))
    return Response(body, mimetype="application/json")


@bp.get("/jobs/<job_id>/hosts")
@requires("viewer")
def list_hosts(job_id: str) -> Any:
    with session() as s:
        get_job(s, job_id)
        rows = s.scalars(select(JobHostSummary).where(JobHostSummary.job_id == job_id).order_by(JobHostSummary.host))
        return jsonify({"job_id": job_id, "hosts": [summary_view(r) for r in rows]})


@bp.post("/jobs/<job_id>/cancel")
@requires("operator")
def cancel(job_id: str) -> Any:
    with session() as s:
        check_owner(get_job(s, job_id), principal())
        job = cancel_job(s, job_id)
        if not job.active and job.status != "canceled":
            raise Conflict(f"job {job_id} already ended as {job.status}")
        view = job_view(job)
    executor().cancel(job_id)
    return jsonify(view), 202
