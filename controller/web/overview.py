"""The overview: what runs now, what the latest scans changed, agent coverage, the heartbeat and this machine."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint
from sqlalchemy import func, select

from controller.api.auth import requires
from controller.api.context import config, session
from controller.errors import ApiError, NotFound
from controller.queue.jobs import jobs_page
from controller.schemas.jobs import Job
from controller.services.coverage import coverage
from controller.services.diff import scan_diff
from controller.services.heartbeat import HeartbeatError, sync_status
from controller.services.scans import scans_page
from controller.store.models import ScanHost
from controller.web.pages import page
from controller.web.scans import DIFF_INLINE_HOSTS

bp = Blueprint("overview", __name__)
ACTIVE_SHOWN = 50
CHANGES_SHOWN = 5
FIRST_SCAN = "the first scan of this target: nothing to compare"
LARGE_SCAN = f"more than {DIFF_INLINE_HOSTS} hosts: compare it on its page"


# What a scan changed against the previous one, by scan: the results of ended scans do not change, so each is worked
# out once a minute at most per process (the overview is the landing page; comparing is most of its time).
CHANGE_SECONDS = 60.0
_changes: dict[str, tuple[float, dict[str, Any]]] = {}
_changes_lock = threading.Lock()


def latest_changes(s: Any) -> list[dict[str, Any]]:
    """The newest successful scans with what each changed against the previous scan of its target."""
    scans, _ = scans_page(s, CHANGES_SHOWN, None, status="successful")
    now = time.monotonic()
    with _changes_lock:
        known = {job_id: found for job_id, (at, found) in _changes.items() if now - at < CHANGE_SECONDS}
    changes = []
    for scan in scans:
        change = known.get(scan["job_id"]) or _change(s, scan)
        with _changes_lock:
            _changes.setdefault(scan["job_id"], (now, change))
        changes.append({**change, "scan": scan})
    with _changes_lock:  # only the scans shown stay
        for job_id in set(_changes) - {scan["job_id"] for scan in scans}:
            del _changes[job_id]
    return changes


def _change(s: Any, scan: dict[str, Any]) -> dict[str, Any]:
    hosts = s.scalar(select(func.count()).select_from(ScanHost).where(ScanHost.scan_id == scan["id"])) or 0
    if hosts > DIFF_INLINE_HOSTS:  # comparing reads both scans whole: on the scan's own page, when asked
        return {"summary": None, "differences": None, "note": LARGE_SCAN}
    try:
        diff = scan_diff(s, scan["job_id"], None)
        return {"summary": diff["summary"], "differences": diff["differences"], "note": None}
    except NotFound:
        return {"summary": None, "differences": None, "note": FIRST_SCAN}
    except ApiError as exc:  # targets that cannot be compared
        return {"summary": None, "differences": None, "note": exc.message}


@bp.get("/")
@requires("viewer")
def show() -> Any:
    cfg = config()
    with session() as s:
        running, _ = jobs_page(s, ACTIVE_SHOWN, None, "running", None)
        queued, _ = jobs_page(s, ACTIVE_SHOWN, None, "queued", None)
        active = [Job.dump(job) for job in running + queued]
        changes = latest_changes(s)
        counts = coverage(s, None, 30, 0)["counts"]
    try:
        heartbeat = sync_status(cfg.SYNC_HEARTBEAT_FILE, cfg.SYNC_MAX_AGE)
    except HeartbeatError as exc:
        heartbeat = {"status": "error", "error": str(exc)}
    return page("overview.html", "overview", active=active, changes=changes, counts=counts, heartbeat=heartbeat)
