"""Health, ping, the sync heartbeat, the system monitor, the agent scripts and the error body."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.schemas.base import Query, Response

LOCAL_TARGETS = ("", "127.0.0.1", "::1", "local", "localhost")
METRICS = ("cpu_percent", "memory_percent", "disk_percent", "net_sent_bytes_per_s", "net_recv_bytes_per_s")
SCRIPT_DIRS = ("linux", "mac", "windows")


class Error(Response):
    sends_every_field = False  # field: only when a field is at fault; request_id: only on 500

    error: str
    field: str | None = None
    request_id: str | None = Field(default=None, description="Only on 500: quote it when reporting the error.")

    model_config = {"extra": "forbid", "json_schema_extra": {"required": ["error"]}}  # type: ignore[typeddict-unknown-key]


class Health(Response):
    status: Literal["ok"]
    database: Literal["ok"]


class Pong(Response):
    status: Literal["pong"]


class SyncStatus(Response):
    sends_every_field = False  # inactive: the reason only; active: the heartbeat's time and age

    status: Literal["active", "inactive"]
    reason: str | None = None
    last_heartbeat: str | None = None
    age_seconds: float | None = None
    max_age_seconds: int | None = None


class SyncError(Response):
    status: Literal["error"]
    error: str


class MonitorQuery(Query):
    target: str = Field(
        default="local",
        description="`local` (or empty, localhost, 127.0.0.1, ::1) for this machine; otherwise one host (not a network), "
        "which must be inside the scope policy.",
        json_schema_extra={"anyOf": [{"enum": list(LOCAL_TARGETS)}, {"format": "cloudx-host", "minLength": 1, "maxLength": 253}]},
    )


class Point(Response):
    value: float
    timestamp: str = Field(json_schema_extra={"format": "date-time"})
    spike: bool


class Metrics(Response):
    cpu_percent: list[Point]
    memory_percent: list[Point]
    disk_percent: list[Point]
    net_sent_bytes_per_s: list[Point]
    net_recv_bytes_per_s: list[Point]


class LocalMonitor(Response):
    target: Literal["local"]
    kind: Literal["local"]
    metrics: Metrics = Field(description="Up to 60 recent samples per metric.")


class PingPoint(Response):
    value: float | None
    timestamp: str = Field(json_schema_extra={"format": "date-time"})
    spike: bool
    error: str | None


class PingMonitor(Response):
    target: str
    address: str = Field(description="The address pinged: the one the scope check approved.")
    kind: Literal["ping"]
    status: Literal["reachable", "unreachable"]
    latency_ms: list[PingPoint]
    loss_percent: float = Field(ge=0, le=100)


class PingUnavailable(Response):
    target: str
    address: str
    kind: Literal["ping"]
    status: Literal["unavailable"]
    error: str


class ScriptList(Response):
    model_config = {"extra": "forbid"}  # type: ignore[typeddict-unknown-key]
    sends_every_field = False  # the platforms that have scripts

    linux: list[str] | None = None
    mac: list[str] | None = None
    windows: list[str] | None = None
