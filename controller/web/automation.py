"""Automation pages: schedules (scans and deployments started at the times a cron expression or an interval gives) with
their runs, and webhooks with their delivery log. Each change goes through the API's own models and services, with the
role of the API route it stands for (webhooks are the admin's: their URLs can carry tokens of their own)."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Blueprint, request, url_for

from controller.api.auth import requires
from controller.api.context import config, executor, principal, session
from controller.errors import ApiError, NotFound
from controller.schemas.schedules import Schedule, ScheduleListQuery, SchedulePatch, ScheduleRequest, ScheduleRuns, ScheduleRunsQuery
from controller.schemas.webhooks import EVENTS, Deliveries, DeliveriesQuery, Webhook, WebhookPatch, WebhookRequest, Webhooks
from controller.services import schedules as schedule_service
from controller.services import webhooks as webhook_service
from controller.web.forms import form_data, parsed_query, refused, submitted
from controller.web.pages import done, page

bp = Blueprint("automation", __name__)
WHEN_FIELDS = ("name", "cron", "every_seconds", "timezone", "catch_up")
REQUEST_FIELDS = ("tool", "scan_type", "target", "ports", "timeout")
SCHEDULE_FIELDS = WHEN_FIELDS + REQUEST_FIELDS
SCHEDULE_DEFAULTS = {"tool": "nmap", "scan_type": "default", "timezone": "UTC", "catch_up": "none"}
REQUIRED = ("name", "target")  # sent even when empty: the model says what they must be
NUMBERS = ("every_seconds", "timeout")  # the models are strict: a form's digits are sent as the number they spell
WEBHOOK_FIELDS = ("url", "events", "secret")
PAGE_SIZE = "50"  # runs and deliveries shown at once (the API's default is its maximum)


# --- what the pages show ----------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A value of a stored request as one line: lists joined, mappings as key=value."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _what(schedule: dict[str, Any]) -> str:
    r = schedule["request"]
    if schedule["kind"] == "scan":
        ports = f", ports {_text(r.get('ports') or r.get('port'))}" if r.get("ports") or r.get("port") else ""
        return f"{r.get('tool')} {r.get('scan_type')} of {_text(r.get('target'))}{ports}"
    where = r.get("hosts") or r.get("limit") or (r.get("coverage") or {}).get("network")
    action = "remove the agent" if r.get("state") == "absent" else "deploy the agent"
    return f"{action} ({r.get('os_type', 'linux')}) on {_text(where)}"


def _when(schedule: dict[str, Any]) -> str:
    if schedule["cron"]:
        return f"{schedule['cron']} ({schedule['timezone']})"
    return f"every {schedule['every_seconds']} s"


def _shown(view: dict[str, Any]) -> dict[str, Any]:
    """A schedule as GET /api/schedules gives it, with what it starts and when, in words."""
    schedule = Schedule.dump(view)
    return {**schedule, "what": _what(schedule), "when": _when(schedule)}


def _given(given: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    return submitted({k: given[k] for k in names}, REQUIRED, NUMBERS)


# --- schedules --------------------------------------------------------------------------------------------------------


def _schedules_page(errors: dict[str, str], given: dict[str, str], status: int = 200) -> Any:
    query, filter_error = parsed_query(ScheduleListQuery)
    with session() as s:
        views, next_after = schedule_service.schedules_page(s, query.limit, query.after)
    return page(
        "schedules.html",
        "schedules",
        status,
        schedules=[_shown(v) for v in views],
        next_after=next_after,
        filter_error=filter_error,
        errors=errors,
        given=given,
    )


@bp.get("/schedules")
@requires("viewer")
def schedules() -> Any:
    return _schedules_page({}, dict(SCHEDULE_DEFAULTS))


@bp.post("/schedules")
@requires("operator")
def add_schedule() -> Any:
    """The form of GET /schedules as POST /api/schedules takes it (a scan schedule); request.<field> messages are shown
    next to the request's field."""
    given = form_data(SCHEDULE_FIELDS)
    try:
        body = ScheduleRequest.parse(
            {**_given(given, WHEN_FIELDS), "kind": "scan", "request": _given(given, REQUEST_FIELDS)}, config=config()
        )
        with session() as s:
            schedule_id = schedule_service.create_schedule(s, config(), principal(), body, executor().holder_id).id
    except ApiError as exc:
        return _schedules_page(refused(exc, SCHEDULE_FIELDS), given, exc.status)
    return done(url_for(".schedule", schedule_id=schedule_id), "schedule-saved")


def _schedule_page(ident: str, errors: dict[str, str], status: int = 200) -> Any:
    query, filter_error = parsed_query(ScheduleRunsQuery, {"limit": PAGE_SIZE})
    with session() as s:
        view = _shown(schedule_service.schedule_views(s, [schedule_service.get_schedule(s, ident)])[0])
        runs = ScheduleRuns.dump(schedule_service.runs_page(s, ident, query.limit, query.before))
    return page(
        "schedule.html",
        "schedules",
        status,
        schedule=view,
        request_items=[(name, _text(value)) for name, value in view["request"].items()],
        runs=runs["runs"],
        next_before=runs["next_before"],
        limit=query.limit,
        filter_error=filter_error,
        errors=errors,
    )


@bp.get("/schedules/<schedule_id>")
@requires("viewer")
def schedule(schedule_id: str) -> Any:
    return _schedule_page(schedule_id, {})


def _set_schedule(ident: str, enabled: bool, notice: str) -> Any:
    """PATCH /api/schedules/<id> with enabled: a refusal (not its creator, a creator who may no longer start jobs) is
    shown on its page."""
    try:
        patch = SchedulePatch.parse({"enabled": enabled}, config=config())
        with session() as s:
            schedule_id = schedule_service.update_schedule(s, config(), principal(), ident, patch, executor().holder_id).id
    except NotFound:
        raise
    except ApiError as exc:
        return _schedule_page(ident, refused(exc, ()), exc.status)
    return done(url_for(".schedule", schedule_id=schedule_id), notice)


@bp.post("/schedules/<schedule_id>/pause")
@requires("operator")
def pause_schedule(schedule_id: str) -> Any:
    return _set_schedule(schedule_id, False, "schedule-paused")


@bp.post("/schedules/<schedule_id>/resume")
@requires("operator")
def resume_schedule(schedule_id: str) -> Any:
    return _set_schedule(schedule_id, True, "schedule-resumed")


@bp.get("/schedules/<schedule_id>/delete")
@requires("operator")
def confirm_delete_schedule(schedule_id: str) -> Any:
    with session() as s:
        view = _shown(schedule_service.schedule_views(s, [schedule_service.get_schedule(s, schedule_id)])[0])
    return page(
        "confirm.html",
        "schedules",
        what=f"schedule {view['name']} ({view['what']}, {view['when']})",
        detail="It starts nothing more and its run history is deleted; the jobs it started are kept.",
        action=url_for(".delete_schedule", schedule_id=view["id"]),
        cancel=url_for(".schedule", schedule_id=view["id"]),
        button="Delete schedule",
    )


@bp.post("/schedules/<schedule_id>/delete")
@requires("operator")
def delete_schedule(schedule_id: str) -> Any:
    with contextlib.suppress(NotFound), session() as s:  # deleted already (a second click): the list is what was wanted
        schedule_service.delete_schedule(s, principal(), schedule_id)
    return done(url_for(".schedules"), "schedule-deleted")


# --- webhooks ---------------------------------------------------------------------------------------------------------


def _webhooks_page(errors: dict[str, str], given: dict[str, Any], status: int = 200) -> Any:
    with session() as s:
        views = Webhooks.dump({"webhooks": webhook_service.list_webhooks(s)})["webhooks"]
    return page("webhooks.html", "webhooks", status, webhooks=views, events=EVENTS, errors=errors, given=given)


@bp.get("/webhooks")
@requires("admin")
def webhooks() -> Any:
    return _webhooks_page({}, {"url": "", "events": []})


@bp.post("/webhooks")
@requires("admin")
def add_webhook() -> Any:
    """The form of GET /webhooks as POST /api/webhooks takes it. The secret is never sent back, not even to a form
    shown again after a refusal."""
    given = {"url": request.form.get("url", "").strip(), "events": request.form.getlist("events")}
    secret = request.form.get("secret", "")
    try:
        body = WebhookRequest.parse({**given, **({"secret": secret} if secret else {})}, config=config())
        with session() as s:
            webhook_id = webhook_service.create_webhook(s, config(), body, principal().name).id
    except ApiError as exc:
        return _webhooks_page(refused(exc, WEBHOOK_FIELDS), given, exc.status)
    return done(url_for(".webhook", webhook_id=webhook_id), "webhook-saved")


def _webhook_view(s: Any, webhook_id: str) -> dict[str, Any]:
    return Webhook.dump(webhook_service.webhook_views(s, [webhook_service.get_webhook(s, webhook_id)])[0])


@bp.get("/webhooks/<webhook_id>")
@requires("admin")
def webhook(webhook_id: str) -> Any:
    query, filter_error = parsed_query(DeliveriesQuery, {"limit": PAGE_SIZE})
    with session() as s:
        view = _webhook_view(s, webhook_id)
        deliveries = Deliveries.dump(webhook_service.deliveries_page(s, webhook_id, query.limit, query.before))
    return page(
        "webhook.html",
        "webhooks",
        webhook=view,
        deliveries=deliveries["deliveries"],
        next_before=deliveries["next_before"],
        limit=query.limit,
        filter_error=filter_error,
    )


def _set_webhook(webhook_id: str, enabled: bool, notice: str) -> Any:
    patch = WebhookPatch.parse({"enabled": enabled}, config=config())
    with session() as s:
        webhook_service.update_webhook(s, config(), webhook_id, patch)
    return done(url_for(".webhook", webhook_id=webhook_id), notice)


@bp.post("/webhooks/<webhook_id>/pause")
@requires("admin")
def pause_webhook(webhook_id: str) -> Any:
    return _set_webhook(webhook_id, False, "webhook-paused")


@bp.post("/webhooks/<webhook_id>/resume")
@requires("admin")
def resume_webhook(webhook_id: str) -> Any:
    return _set_webhook(webhook_id, True, "webhook-resumed")


@bp.get("/webhooks/<webhook_id>/delete")
@requires("admin")
def confirm_delete_webhook(webhook_id: str) -> Any:
    with session() as s:
        view = _webhook_view(s, webhook_id)
    return page(
        "confirm.html",
        "webhooks",
        what=f"the webhook to {view['url']}",
        detail="Its queued events and its delivery log are deleted with it; it is told of nothing more.",
        action=url_for(".delete_webhook", webhook_id=webhook_id),
        cancel=url_for(".webhook", webhook_id=webhook_id),
        button="Delete webhook",
    )


@bp.post("/webhooks/<webhook_id>/delete")
@requires("admin")
def delete_webhook(webhook_id: str) -> Any:
    with contextlib.suppress(NotFound), session() as s:
        webhook_service.delete_webhook(s, webhook_id)
    return done(url_for(".webhooks"), "webhook-deleted")
