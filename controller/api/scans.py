"""Scans: the dashboard's view of scan jobs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, request, send_file
from sqlalchemy import delete

from controller.api import config, executor, json_object, principal, requires, session
from controller.errors import Conflict
from controller.queue.jobs import cancel_job, check_owner, int_arg, page_limit
from controller.services.scans import create_scan, get_scan, raw_output, scan_view, scans_page
from controller.store.models import Job

bp = Blueprint("scans", __name__)


@bp.post("/scans")
@requires("operator")
def submit_scan() -> Any:
    body = json_object()
    with session() as s:
        scan = create_scan(s, config(), principal(), body)
        job_id, status = scan.job_id, scan.job.status
    executor().submit(job_id)
    return jsonify({"job_id": job_id, "status": status}), 202


@bp.get("/scans")
@requires("viewer")
def list_scans() -> Any:
    limit = page_limit(request.args.get("limit"))
    before = int_arg(request.args.get("before"), "before", "before must be a scan id")
    with session() as s:
        scans, next_before = scans_page(s, limit, before)
        return jsonify({"scans": scans, "next_before": next_before})


@bp.get("/scans/<job_id>")
@requires("viewer")
def show_scan(job_id: str) -> Any:
    with session() as s:
        return jsonify(scan_view(get_scan(s, job_id, with_results=True), with_results=True))


@bp.post("/scans/<job_id>/stop")
@requires("operator")
def stop_scan(job_id: str) -> Any:
    with session() as s:
        check_owner(get_scan(s, job_id).job, principal())
        job = cancel_job(s, job_id)
        if not job.active and not job.cancel_requested:
            raise Conflict(f"scan {job_id} already ended as {job.status}")
        status = job.status
    executor().cancel(job_id)
    return jsonify({"job_id": job_id, "status": status, "cancel_requested": True}), 202


@bp.get("/scans/<job_id>/raw")
@requires("viewer")
def download_raw(job_id: str) -> Any:
    with session() as s:
        scan = get_scan(s, job_id)
    path, mimetype = raw_output(config(), scan)
    return send_file(path, mimetype=mimetype, as_attachment=True, download_name=f"scan-{job_id}{path.suffix}")


@bp.delete("/scans/<job_id>")
@requires("operator")
def delete_scan(job_id: str) -> Any:
    """Stop the scan if it is active, then delete it with its job, events and files."""
    with session() as s:
        check_owner(get_scan(s, job_id).job, principal())
        job = cancel_job(s, job_id)
        active = job.active
    if active:
        executor().cancel(job_id)
        deadline = time.monotonic() + 30
        while active and time.monotonic() < deadline:
            time.sleep(0.25)
            with session() as s:
                active = get_scan(s, job_id).job.active
        if active:
            raise Conflict(f"scan {job_id} is still stopping; try again shortly")
    with session() as s:
        s.execute(delete(Job).where(Job.id == job_id))
    shutil.rmtree(Path(config().ARTIFACTS_DIR).resolve() / job_id, ignore_errors=True)
    return jsonify({"job_id": job_id, "deleted": True})
