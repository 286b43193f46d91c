"""What every page is rendered with: its section of the navigation, and the notice a redirect asked for."""

from __future__ import annotations

from typing import Any

from flask import g, redirect, render_template, request

SECTIONS = (  # key, endpoint, label, and the least role the page needs (the same as the API's twin)
    ("overview", "web.overview.show", "Overview", "viewer"),
    ("scans", "web.scans.index", "Scans", "viewer"),
    ("jobs", "web.jobs.index", "Jobs", "viewer"),
    ("fleet", "web.fleet.index", "Fleet", "viewer"),
    ("schedules", "web.automation.schedules", "Schedules", "viewer"),
    ("webhooks", "web.automation.webhooks", "Webhooks", "admin"),
    ("tokens", "web.admin.tokens", "Tokens", "admin"),
    ("policy", "web.admin.policy", "Policy", "operator"),
    ("audit", "web.admin.audit", "Audit", "admin"),
)
# What a redirect after a form may announce: keys of this table only, so no text of the URL is ever shown.
NOTICES = {
    "scan-submitted": "Scan submitted.",
    "stop-requested": "Stop requested; the scan ends in a moment.",
    "scan-deleted": "Scan deleted.",
    "job-canceled": "Cancel requested.",
    "relaunched": "Relaunched: this is the new job.",
    "deploy-submitted": "Deployment submitted.",
    "schedule-saved": "Schedule saved.",
    "schedule-deleted": "Schedule deleted.",
    "schedule-paused": "Schedule paused: it starts nothing until it is resumed.",
    "schedule-resumed": "Schedule resumed: its next run is counted from now.",
    "webhook-saved": "Webhook saved.",
    "webhook-deleted": "Webhook deleted.",
    "webhook-paused": "Webhook paused: its queued events wait, and jobs that end meanwhile send it nothing.",
    "webhook-resumed": "Webhook resumed.",
    "token-revoked": "Token revoked; its queued jobs were canceled and its running jobs asked to stop.",
    "policy-saved": "Policy saved.",
}


def page(template: str, section: str, code: int = 200, **context: Any) -> Any:
    """The page; a 400 when its query string was refused (it then shows the message, and the first page instead)."""
    notice = NOTICES.get(request.args.get("notice", ""))
    if code == 200 and g.get("query_refused"):
        g.error, code = g.query_refused, 400
    return render_template(template, section=section, notice=notice, **context), code


def done(location: str, notice: str) -> Any:
    """After a form: see the result (303, so a reload does not post again), with one of NOTICES."""
    assert notice in NOTICES, notice
    return redirect(f"{location}{'&' if '?' in location else '?'}notice={notice}", 303)
