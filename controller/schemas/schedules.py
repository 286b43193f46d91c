"""Schedules: a scan or deployment request, when it runs (a cron expression or an interval), and what became of its runs."""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from croniter import CroniterError, croniter
from pydantic import AfterValidator, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

from controller.errors import ValidationError
from controller.schemas.base import Query, Request, Response
from controller.schemas.deployments import PASTED_SECRETS, CoverageDeployment, DeploymentRequest, HostsDeployment, PatternDeployment
from controller.schemas.scans import ScanRequest
from controller.schemas.types import MAX_PAGE, Documented, FieldError, MaybeTimestamp, PageSize, QueryInt, Timestamp, matching

SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SCHEDULE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
KINDS = ("scan", "deployment")
OUTCOMES = ("started", "missed", "skipped", "refused", "paused")
MAX_EVERY = 366 * 86400
MAX_CRON = 128  # the column's size
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# The gaps of a cron expression are checked against the minimum interval over this many of its next runs.
CRON_GAPS_CHECKED = 500
RANDOM = re.compile(r"(?<![A-Za-z])R(?![A-Za-z])", re.IGNORECASE)


@functools.cache
def time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone(value: str, field: str = "timezone") -> zoneinfo.ZoneInfo:
    """The IANA time zone of that name (the tz database of the Python package tzdata or of the system)."""
    if value not in time_zones():
        raise FieldError(field, f"{field} must be an IANA time zone name such as UTC or Europe/Paris")
    return zoneinfo.ZoneInfo(value)


def cron_expression(value: str, min_interval: int = 60, field: str = "cron") -> str:
    """A cron expression of five fields (minute hour day month weekday) or a macro such as @daily, parsed by croniter,
    whose runs are at least min_interval seconds apart."""
    text = " ".join(value.split())
    if len(text) > MAX_CRON:
        raise FieldError(field, f"{field} must be at most {MAX_CRON} characters")
    if not (text in CRON_MACROS or (len(text.split(" ")) == 5 and croniter.is_valid(text))):
        raise FieldError(
            field, f"{field} must be a cron expression of five fields (minute hour day month weekday), such as '0 3 * * 1-5', or @daily"
        )
    if RANDOM.search(text):  # croniter's R draws a new time whenever it is read: no due time would hold
        raise FieldError(field, f"{field}: random fields (R) are not supported")
    try:
        runs = croniter(text, datetime(2026, 1, 1, tzinfo=UTC))
        last = runs.get_next(datetime)
        # Five fields run at most once a minute; a larger minimum is checked over the next runs.
        for _ in range(CRON_GAPS_CHECKED if min_interval > 60 else 0):
            following = runs.get_next(datetime)
            if (following - last).total_seconds() < min_interval:
                raise FieldError(field, f"{field} runs more often than every {min_interval} s (CLOUDX_SCHEDULE_MIN_INTERVAL)")
            last = following
    except CroniterError:
        raise FieldError(field, f"{field} never runs (such as on the 31st of February)") from None
    return text


def _cron(value: str, info: ValidationInfo) -> str:
    config = (info.context or {}).get("config")
    return cron_expression(value, config.SCHEDULE_MIN_INTERVAL if config is not None else 60, info.field_name or "cron")


def _zone(value: str, info: ValidationInfo) -> str:
    time_zone(value, info.field_name or "timezone")
    return value


def _every(value: int, info: ValidationInfo) -> int:
    config = (info.context or {}).get("config")
    least = config.SCHEDULE_MIN_INTERVAL if config is not None else 60
    if value < least:
        raise FieldError("every_seconds", f"every_seconds must be at least {least} (CLOUDX_SCHEDULE_MIN_INTERVAL)")
    return value


def _not_an_id(value: str, info: ValidationInfo) -> str:
    if SCHEDULE_ID.fullmatch(value):  # paths name a schedule by id or name: a name shaped like an id could not be reached
        raise FieldError(info.field_name or "name", f"{info.field_name} may not have the shape of a schedule id")
    return value


ScheduleName = Annotated[
    matching(SCHEDULE_NAME, "{field} must match {pattern}"),
    AfterValidator(_not_an_id),
    Documented(**{"not": {"pattern": SCHEDULE_ID.pattern}}),
]
Cron = Annotated[
    str,
    AfterValidator(_cron),
    Documented(format="cloudx-cron", maxLength=MAX_CRON, description="Five fields (minute hour day month weekday) or @daily, @hourly, ..."),
]
TimeZone = Annotated[str, AfterValidator(_zone), Documented(format="cloudx-timezone", maxLength=64, description="An IANA time zone.")]
# The least value is CLOUDX_SCHEDULE_MIN_INTERVAL: the document states this configuration's (controller.api.openapi).
Every = Annotated[int, Field(ge=1, le=MAX_EVERY), AfterValidator(_every)]
CatchUp = Literal["none", "one"]


def _given(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


# One of cron and every_seconds, as JSON Schema (the document allows only what is accepted).
WHEN_RULES = [{"anyOf": [_given("cron"), _given("every_seconds")]}, {"not": {"allOf": [_given("cron"), _given("every_seconds")]}}]
NO_SECRETS = {"properties": {name: {"type": "null"} for name in PASTED_SECRETS}}
REQUEST_SCHEMAS = [
    {"$ref": "#/components/schemas/ScanRequest"},
    {"allOf": [{"anyOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in DeploymentRequest.variants]}, NO_SECRETS]},
]


def parse_request(kind: str, data: Any, **context: Any) -> ScanRequest | HostsDeployment | PatternDeployment | CoverageDeployment:
    """A schedule's request as POST /api/scans or /api/deployments reads it, with no pasted secret; errors name
    request.<field>."""
    try:
        parsed = (ScanRequest if kind == "scan" else DeploymentRequest).parse(data, **context)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=f"request.{exc.field or 'body'}") from None
    for name in PASTED_SECRETS:
        if getattr(parsed, name, None) is not None:
            raise ValidationError(
                f"a schedule keeps no pasted secret: instead of request.{name}, name a stored credential "
                "(request.credential; cloudx credential add)",
                field=f"request.{name}",
            )
    return parsed


class _When(Request):
    messages: ClassVar[dict[str, str]] = {
        "name": f"name must match {SCHEDULE_NAME.pattern}",
        "every_seconds": f"every_seconds must be an integer number of seconds, at most {MAX_EVERY}",
        "enabled": "enabled must be true or false",
        "catch_up": "catch_up must be none or one",
        "cron": "cron must be a string",
        "timezone": "timezone must be a string",
    }

    cron: Cron | None = Field(default=None, description="When it runs, in `timezone`: five cron fields or a macro. Or every_seconds.")
    every_seconds: Every | None = Field(default=None, description="Or: every this many seconds, from its creation.")
    timezone: TimeZone = Field(default="UTC", description="The time zone of the cron expression.")
    enabled: bool = Field(default=True, description="false: it is kept, but does not run (cloudx schedule pause).")
    catch_up: CatchUp = Field(
        default="none",
        description="After runs were missed (the controller was down): none starts nothing; one starts one run at once.",
    )


class _Create(_When):
    """What every new schedule gives."""

    KIND: ClassVar[str]
    model_config = ConfigDict(json_schema_extra={"allOf": WHEN_RULES})

    name: ScheduleName = Field(description="Unique; the CLI names schedules by it.")

    @model_validator(mode="after")
    def _when(self) -> Self:
        if (self.cron is None) == (self.every_seconds is None):
            raise ValidationError("give one of cron (a cron expression) or every_seconds", field="cron")
        return self

    # The request as given: what is stored and parsed again at each run (a parsed model, dumped, is not a request).
    _given_request: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, **context: Any) -> Self:
        if isinstance(data, Mapping) and isinstance(data.get("request"), Mapping):
            parse_request(cls.KIND, data["request"], **context)  # its errors name request.<field>
        parsed = super().parse(data, **context)
        parsed._given_request = dict(data["request"])
        return parsed

    @property
    def given_request(self) -> dict[str, Any]:
        return self._given_request


def _secret_free(schema: dict[str, Any]) -> None:
    schema["allOf"] = WHEN_RULES
    schema["properties"]["request"] = {"allOf": [schema["properties"]["request"], NO_SECRETS]}


class ScanSchedule(_Create):
    """A schedule of scans: request is the body of POST /api/scans."""

    KIND = "scan"
    kind: Literal["scan"]
    request: ScanRequest


class DeploymentSchedule(_Create):
    """A schedule of deployments: request is the body of POST /api/deployments, without a pasted secret (name a stored
    credential, or use the inventory's login)."""

    model_config = ConfigDict(json_schema_extra=_secret_free)

    KIND = "deployment"
    kind: Literal["deployment"]
    request: HostsDeployment | PatternDeployment | CoverageDeployment


class ScheduleRequest:
    """POST /api/schedules: kind picks the request's type."""

    variants = (ScanSchedule, DeploymentSchedule)

    @classmethod
    def parse(cls, data: Any, **context: Any) -> ScanSchedule | DeploymentSchedule:
        if not isinstance(data, dict):
            raise ValidationError("the request body must be a JSON object", field="body")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValidationError(f"kind must be one of: {', '.join(KINDS)}", field="kind")
        return (ScanSchedule if kind == "scan" else DeploymentSchedule).parse(data, **context)


class SchedulePatch(_When):
    """PATCH /api/schedules/<id>: the fields to change. Giving cron drops every_seconds and the other way round;
    request is checked against the schedule's kind."""

    model_config = ConfigDict(json_schema_extra={"not": {"allOf": [_given("cron"), _given("every_seconds")]}})

    name: ScheduleName | None = None
    timezone: TimeZone | None = None  # type: ignore[assignment]
    enabled: bool | None = None  # type: ignore[assignment]
    catch_up: CatchUp | None = None  # type: ignore[assignment]
    request: dict[str, Any] | None = Field(
        default=None,
        description="The body of POST /api/scans (a scan schedule) or POST /api/deployments (a deployment schedule), "
        "without a pasted secret.",
        json_schema_extra={"anyOf": [*REQUEST_SCHEMAS, {"type": "null"}]},
    )

    @model_validator(mode="after")
    def _one(self) -> Self:
        if self.cron is not None and self.every_seconds is not None:
            raise ValidationError("give one of cron (a cron expression) or every_seconds", field="cron")
        return self


class ScheduleListQuery(Query):
    limit: PageSize = Field(default=MAX_PAGE, description=f"At most this many (1-{MAX_PAGE}).")
    after: ScheduleName | None = Field(default=None, description="next_after of the previous page: the schedules named after it.")


class Schedule(Response):
    """A schedule and the state of its runs."""

    id: str
    name: str
    kind: str
    request: dict[str, Any]
    cron: str | None
    every_seconds: int | None
    timezone: str
    enabled: bool
    catch_up: str
    paused_reason: str | None = Field(description="Why the controller paused it (e.g. its creator's token was revoked).")
    created_by: str = Field(description="It runs with this token's rights, checked at every run.")
    created_at: Timestamp
    next_run_at: MaybeTimestamp = Field(description="The next due time; null while paused.")
    last_run_at: MaybeTimestamp
    last_job_id: str | None
    last_status: str | None = Field(description="The status of the last job it started.")
    missed_runs: int = Field(description="Due times that passed while no controller ran.")
    skipped_runs: int = Field(description="Due times skipped because the previous run was still active, or refused.")


class SchedulePage(Response):
    """A page of schedules, by name."""

    schedules: list[Schedule]
    next_after: str | None


class ScheduleRun(Response):
    """What became of one due time."""

    due_at: Timestamp
    outcome: Literal["started", "missed", "skipped", "refused", "paused"]
    job_id: str | None
    reason: str | None
    created_at: Timestamp


class ScheduleRuns(Response):
    """A schedule's runs, newest first."""

    schedule_id: str
    runs: list[ScheduleRun]
    next_before: int | None


class ScheduleRunsQuery(Query):
    limit: PageSize = Field(default=MAX_PAGE, description=f"At most this many (1-{MAX_PAGE}).")
    before: QueryInt | None = Field(default=None, description="next_before of the previous page.")


class ScheduleDeleted(Response):
    """The schedule was deleted (its jobs are kept)."""

    deleted: str
