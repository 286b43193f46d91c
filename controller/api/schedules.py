"""Schedules: scans and deployments started at the times a cron expression or an interval gives."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from controller.api.auth import requires
from controller.api.body import body, doc, query, reply
from controller.api.context import config, executor, principal, session
from controller.schemas.schedules import (
    SCHEDULE_NAME,
    DeploymentSchedule,
    ScanSchedule,
    Schedule,
    ScheduleDeleted,
    ScheduleListQuery,
    SchedulePage,
    SchedulePatch,
    ScheduleRequest,
    ScheduleRuns,
    ScheduleRunsQuery,
)
from controller.services import schedules

bp = Blueprint("schedules", __name__)
SCHEDULE_PATH = {"schedule_id": {"type": "string", "pattern": SCHEDULE_NAME.pattern}}
NO_SCHEDULE = {404: "No schedule with this id or name."}
NOT_YOURS = "Only its creator or an admin may change or delete it."


@bp.post("/schedules")
@requires("operator")
@body(ScheduleRequest)
@doc(
    "create_schedule",
    "schedules",
    "Schedule a scan or a deployment",
    {201: Schedule},
    errors={
        400: "The input is not valid (request's errors name request.<field>), or request holds a pasted secret, names a stored "
        "credential that does not exist, or an inventory pattern that matches no host.",
        403: "request's targets are outside the scope policy or the token's scope.",
        409: "A schedule of that name exists.",
    },
    description="request is checked as its POST /api/scans or /api/deployments would be now; each run is checked again with the "
    "creator's rights as they stand then (a revoked creator pauses the schedule). A schedule keeps no pasted secret.",
)
def create_schedule(body: ScanSchedule | DeploymentSchedule) -> Any:
    with session() as s:
        schedule = schedules.create_schedule(s, config(), principal(), body, executor().holder_id)
        return reply(Schedule, schedules.schedule_views(s, [schedule])[0], 201)


@bp.get("/schedules")
@requires("viewer")
@query(ScheduleListQuery)
@doc("list_schedules", "schedules", "Schedules, by name", {200: SchedulePage}, errors={400: "limit or after is not valid."})
def list_schedules(query: ScheduleListQuery) -> Any:
    with session() as s:
        views, next_after = schedules.schedules_page(s, query.limit, query.after)
        return reply(SchedulePage, {"schedules": views, "next_after": next_after})


@bp.get("/schedules/<schedule_id>")
@requires("viewer")
@doc("get_schedule", "schedules", "One schedule", {200: Schedule}, errors=NO_SCHEDULE, path=SCHEDULE_PATH)
def get_schedule(schedule_id: str) -> Any:
    with session() as s:
        return reply(Schedule, schedules.schedule_views(s, [schedules.get_schedule(s, schedule_id)])[0])


@bp.patch("/schedules/<schedule_id>")
@requires("operator")
@body(SchedulePatch)
@doc(
    "update_schedule",
    "schedules",
    "Change, pause or resume a schedule",
    {200: Schedule},
    errors={**NO_SCHEDULE, 403: NOT_YOURS, 409: "Another schedule has that name."},
    path=SCHEDULE_PATH,
    description="enabled: false pauses it, true resumes it from now (the paused time holds no missed runs). A new request is "
    "checked with its creator's rights.",
)
def update_schedule(schedule_id: str, body: SchedulePatch) -> Any:
    with session() as s:
        schedule = schedules.update_schedule(s, config(), principal(), schedule_id, body, executor().holder_id)
        return reply(Schedule, schedules.schedule_views(s, [schedule])[0])


@bp.delete("/schedules/<schedule_id>")
@requires("operator")
@doc(
    "delete_schedule",
    "schedules",
    "Delete a schedule (the jobs it started are kept)",
    {200: ScheduleDeleted},
    errors={**NO_SCHEDULE, 403: NOT_YOURS},
    path=SCHEDULE_PATH,
)
def delete_schedule(schedule_id: str) -> Any:
    with session() as s:
        return reply(ScheduleDeleted, {"deleted": schedules.delete_schedule(s, principal(), schedule_id)})


@bp.get("/schedules/<schedule_id>/runs")
@requires("viewer")
@query(ScheduleRunsQuery)
@doc(
    "schedule_runs",
    "schedules",
    "What became of a schedule's due times, newest first",
    {200: ScheduleRuns},
    errors={**NO_SCHEDULE, 400: "limit or before is not valid."},
    path=SCHEDULE_PATH,
    description="started (with its job), missed (no controller ran), skipped (the previous run was still active), refused "
    "(the checks of its request failed, with why) or paused (its creator may no longer start jobs).",
)
def schedule_runs(schedule_id: str, query: ScheduleRunsQuery) -> Any:
    with session() as s:
        return reply(ScheduleRuns, schedules.runs_page(s, schedule_id, query.limit, query.before))
