"""Scan pages: the list with its filters and the form to start one, a scan's results, diff and live output."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Blueprint, g, request, url_for

from controller.api.auth import requires
from controller.api.context import config, db, executor, principal, session
from controller.errors import ApiError, NotFound, ValidationError
from controller.queue.jobs import check_owner, last_events
from controller.schemas.scans import ScanListQuery, ScanRequest
from controller.schemas.types import QUERY_DIGITS
from controller.services.diff import scan_diff
from controller.services.scans import create_scan, delete_scan, get_scan, scan_view, scans_page, stop_scan
from controller.web.forms import form_data, parsed_query, refused, submitted
from controller.web.pages import done, page

bp = Blueprint("scans", __name__)
SCAN_FIELDS = ("tool", "scan_type", "target", "ports", "timeout")
PORT_STATES = ("open", "closed", "filtered", "open|filtered", "closed|filtered", "unfiltered")
SORTS = {
    "address": lambda host, port: (host["address"], port["port"] if port else -1),
    "port": lambda host, port: (port["port"] if port else -1, host["address"]),
    "state": lambda host, port: (port["state"] if port else "", host["address"]),
    "service": lambda host, port: ((port or {}).get("service") or "", host["address"]),
}
OUTPUT_LINES = 300
PAGE_ROWS = 500  # rows of the hosts and ports table a page shows (a /16 has tens of thousands)
DIFF_INLINE_HOSTS = 1000


def _list(errors: dict[str, str], given: dict[str, str], status: int = 200) -> Any:
    query, filter_error = parsed_query(ScanListQuery)
    with session() as s:
        scans, next_before = scans_page(s, query.limit, query.before, tool=query.tool, status=query.status, target=query.target)
    return page(
        "scans.html",
        "scans",
        status,
        scans=scans,
        next_before=next_before,
        query=query,
        filter_error=filter_error,
        errors=errors,
        given=given,
    )


@bp.get("/scans")
@requires("viewer")
def index() -> Any:
    return _list({}, {"tool": "nmap", "scan_type": "default"})


@bp.post("/scans")
@requires("operator")
def submit() -> Any:
    """The form of GET /scans, checked by the API's own model: its messages are shown next to their fields."""
    given = form_data(SCAN_FIELDS)
    try:
        body = ScanRequest.parse(submitted(given, ("target",), ("timeout",)), config=config())
        with session() as s:
            job_id = create_scan(s, config(), principal(), body).job_id
    except ApiError as exc:
        return _list(refused(exc, SCAN_FIELDS), given, exc.status)
    executor().submit(job_id)
    g.audit_job_id = job_id
    return done(url_for(".show", job_id=job_id), "scan-submitted")


def _rows(hosts: list[dict[str, Any]], state: str, port: str, host: str, sort: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """One row per port (a host without ports has one), filtered and sorted as the table asks."""
    rows = []
    for h in hosts:
        if host and host not in h["address"] and not any(host in name for name in h.get("hostnames") or []):
            continue
        ports = [p for p in h["ports"] if (not state or p["state"] == state) and (not port or str(p["port"]) == port)]
        if ports:
            rows += [(h, p) for p in ports]
        elif not h["ports"] and not state and not port:
            rows.append((h, None))
    return sorted(rows, key=lambda row: SORTS[sort](*row))


@bp.get("/scans/<job_id>")
@requires("viewer")
def show(job_id: str) -> Any:
    filters = {name: request.args.get(name, "").strip() for name in ("state", "port", "host", "sort", "from", "diff")}
    filters["sort"] = filters["sort"] or "address"
    state, port, sort, start = filters["state"], filters["port"], filters["sort"], filters["from"] or "0"
    if state not in ("", *PORT_STATES) or sort not in SORTS or not QUERY_DIGITS.fullmatch(port or "0") or not QUERY_DIGITS.fullmatch(start):
        raise ValidationError("state, port, sort or from is not one the table offers")
    with session() as s:
        stored = get_scan(s, job_id, with_results=True)
        scan, created_by = scan_view(stored, with_results=True), stored.job.created_by
        hosts = scan["results"]["hosts"]
        # A large scan's diff is worked out when asked for: it reads both scans whole.
        diff_inline = len(hosts) <= DIFF_INLINE_HOSTS or filters["diff"] == "1"
        diff, diff_error = _diff(s, job_id) if scan["status"] == "successful" and diff_inline else (None, None)
        output = last_events(s, job_id, OUTPUT_LINES)
    rows = _rows(hosts, state, port, filters["host"], sort)
    first = int(start)
    table = {k: v for k, v in filters.items() if v and k not in ("from", "diff")}

    def rows_from(row: int) -> str | None:
        return url_for(".show", job_id=job_id, **table, **({"from": row} if row else {})) if 0 <= row < len(rows) else None

    return page(
        "scan.html",
        "scans",
        scan=scan,
        created_by=created_by,
        rows=rows[first : first + PAGE_ROWS],
        total_rows=len(rows),
        first_row=first,
        page_rows=PAGE_ROWS,
        previous_rows=rows_from(max(first - PAGE_ROWS, 0)) if first else None,
        next_rows=rows_from(first + PAGE_ROWS),
        filters=filters,
        states=PORT_STATES,
        sorts=list(SORTS),
        diff=diff,
        diff_error=diff_error,
        diff_inline=diff_inline,
        output=output,
    )


def _diff(s: Any, job_id: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return scan_diff(s, job_id, None), None
    except ApiError as exc:
        return None, exc.message


@bp.post("/scans/<job_id>/stop")
@requires("operator")
def stop(job_id: str) -> Any:
    with session() as s:
        stop_scan(s, principal(), job_id)
    executor().cancel(job_id)
    g.audit_job_id = job_id
    return done(url_for(".show", job_id=job_id), "stop-requested")


@bp.get("/scans/<job_id>/delete")
@requires("operator")
def confirm_delete(job_id: str) -> Any:
    with session() as s:
        stored = get_scan(s, job_id)
        check_owner(stored.job, principal())
        scan = scan_view(stored)
    return page(
        "confirm.html",
        "scans",
        what=f"scan {job_id} of {scan['target']} ({scan['tool']} {scan['scan_type']})",
        detail="Its results, events and files are deleted; an active scan is stopped first.",
        action=url_for(".delete", job_id=job_id),
        cancel=url_for(".show", job_id=job_id),
        button="Delete scan",
    )


@bp.post("/scans/<job_id>/delete")
@requires("operator")
def delete(job_id: str) -> Any:
    with contextlib.suppress(NotFound):  # deleted already (a second click): the list is what the user wanted to see
        delete_scan(db(), config(), principal(), job_id, executor().cancel)
    g.audit_job_id = job_id
    return done(url_for(".index"), "scan-deleted")
