"""Scans: the dashboard's view of scan jobs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, send_file

from controller.api.auth import requires
from controller.api.body import body, doc, query, reply
from controller.api.context import config, db, executor, principal, session
from controller.schemas.diff import DiffQuery, ScanDiff
from controller.schemas.scans import Deleted, ScanDetail, ScanListQuery, ScanPage, ScanRequest, StopRequested, Submitted
from controller.services.diff import scan_diff
from controller.services.scans import create_scan, get_scan, raw_output, scan_view, scans_page
from controller.services.scans import delete_scan as delete
from controller.services.scans import stop_scan as stop

bp = Blueprint("scans", __name__)


QUEUED = {429: None, 503: "See Unavailable; also when the job could not be stored."}
NO_SCAN = {404: "No scan with this job_id."}


@bp.post("/scans")
@requires("operator")
@body(ScanRequest)
@doc(
    "submit_scan",
    "scans",
    "Submit a scan",
    {202: Submitted},
    errors=QUEUED,
    description="Queues a scan job. The target must lie inside the scope policy (and the token's scope).",
)
def submit_scan(body: ScanRequest) -> Any:
    with session() as s:
        scan = create_scan(s, config(), principal(), body)
        job_id, status = scan.job_id, scan.job.status
    executor().submit(job_id)
    return reply(Submitted, {"job_id": job_id, "status": status}, 202)


@bp.get("/scans")
@requires("viewer")
@query(ScanListQuery)
@doc("list_scans", "scans", "Scans, newest first", {200: ScanPage}, errors={400: "limit, before, tool, status or target is not valid."})
def list_scans(query: ScanListQuery) -> Any:
    with session() as s:
        # The hot path: views built by hand (services.scans.listed), encoded without a model.
        scans, next_before = scans_page(s, query.limit, query.before, tool=query.tool, status=query.status, target=query.target)
        return jsonify({"scans": scans, "next_before": next_before})


@bp.get("/scans/<job_id>")
@requires("viewer")
@doc("get_scan", "scans", "A scan with its results", {200: ScanDetail}, errors=NO_SCAN)
def show_scan(job_id: str) -> Any:
    with session() as s:
        return jsonify(scan_view(get_scan(s, job_id, with_results=True), with_results=True))


@bp.post("/scans/<job_id>/stop")
@requires("operator")
@doc("stop_scan", "scans", "Stop a scan", {202: StopRequested}, errors={**NO_SCAN, 409: "The scan has already ended."})
def stop_scan(job_id: str) -> Any:
    with session() as s:
        status = stop(s, principal(), job_id).status
    executor().cancel(job_id)
    return reply(StopRequested, {"job_id": job_id, "status": status, "cancel_requested": True}, 202)


@bp.get("/scans/<job_id>/diff")
@requires("viewer")
@query(DiffQuery)
@doc(
    "diff_scans",
    "scans",
    "What changed between two scans",
    {200: ScanDiff},
    errors={
        400: "The two scans' targets do not overlap (field against), or a scan's target is not an address or a network "
        "(field job_id for this scan, against for the other).",
        404: "No scan with this job_id or against, or no earlier successful scan of the same target, tool and scan type.",
        409: "One of the scans is still queued or running.",
    },
    description="Compares the stored results of the scan `against` (by default the previous successful scan of the same "
    "target, tool and scan type) with this one: hosts new, gone, up or down; ports opened, closed, changed state or "
    "service. Ports that not both scans probed, and hosts outside the other scan's target, are not comparable; "
    "with masscan or zmap on either side only open versus not open is compared (mode open_ports), and a host that "
    "their port scan did not report is gone or new only if it had an open port among the ports that scan probed "
    "(else it is compared on the ports both probed, or not comparable).",
)
def diff_scans(job_id: str, query: DiffQuery) -> Any:
    with session() as s:
        return reply(ScanDiff, scan_diff(s, job_id, query.against or None))


RAW = {"application/xml": {}, "application/json": {}, "text/csv": {}, "application/octet-stream": {}}


@bp.get("/scans/<job_id>/raw")
@requires("viewer")
@doc(
    "download_scan_raw",
    "scans",
    "The scanner's raw output file",
    {200: ("nmap XML, masscan JSON or zmap CSV, as an attachment.", RAW)},
    errors={404: "No scan with this job_id, or it has no raw output (yet)."},
)
def download_raw(job_id: str) -> Any:
    with session() as s:
        scan = get_scan(s, job_id)
    path, mimetype = raw_output(config(), scan)
    return send_file(path, mimetype=mimetype, as_attachment=True, download_name=f"scan-{job_id}{path.suffix}")


@bp.delete("/scans/<job_id>")
@requires("operator")
@doc(
    "delete_scan",
    "scans",
    "Delete a scan",
    {200: Deleted},
    errors={**NO_SCAN, 409: "The scan is still stopping after 30 s; try again shortly."},
    description="Stops the scan if it is active (waiting up to 30 s), then deletes it with its job, events and files.",
)
def delete_scan(job_id: str) -> Any:
    delete(db(), config(), principal(), job_id, executor().cancel)
    return reply(Deleted, {"job_id": job_id, "deleted": True})
