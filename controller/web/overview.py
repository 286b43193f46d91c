"""The overview: what runs now, what the latest scans changed, agent coverage, the heartbeat and this machine."""

from __future__ import annotations

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


def latest_changes(s: Any) -> list[dict[str, Any]]:
    """The newest successful scans with what each changed against the previous scan of its target."""
    scans, _ = scans_page(s, CHANGES_SHOWN, None, status="successful")
    changes = []
    for scan in scans:
        hosts = s.scalar(select(func.count()).select_from(ScanHost).where(ScanHost.scan_id == scan["id"])) or 0
        if hosts > DIFF_INLINE_HOSTS:  # comparing reads both scans whole: on the scan's own page, when asked
            changes.append({"scan": scan, "summary": None, "differences": None, "note": LARGE_SCAN})
            continue
        try:
            diff = scan_diff(s, scan["job_id"], None)
            changes.append({"scan": scan, "summary": diff["summary"], "differences": diff["differences"], "note": None})
        except NotFound:
            changes.append({"scan": scan, "summary": None, "differences": None, "note": FIRST_SCAN})
        except ApiError as exc:  # targets that cannot be compared
            changes.append({"scan": scan, "summary": None, "differences": None, "note": exc.message})
    return changes


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
