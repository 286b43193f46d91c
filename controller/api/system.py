"""Health, ping, sync heartbeat and system monitor."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from controller.api.auth import PUBLIC, requires
from controller.api.body import doc, query
from controller.api.context import config, principal, session
from controller.errors import ValidationError
from controller.schemas.system import (
    LOCAL_TARGETS,
    Error,
    Health,
    LocalMonitor,
    MonitorQuery,
    PingMonitor,
    PingUnavailable,
    Pong,
    SyncError,
    SyncStatus,
)
from controller.schemas.types import FieldError, host
from controller.services.heartbeat import HeartbeatError, sync_status
from controller.services.monitor import LocalMonitor as Sampler
from controller.services.monitor import ping_latency
from controller.services.policy import check_targets

bp = Blueprint("system", __name__)
_local_monitor = Sampler()


@bp.get("/health")
@requires(PUBLIC)
@doc("health", "system", "Liveness and database check", {200: Health}, errors={503: "The database does not answer."})
def health() -> Any:
    with session() as s:
        s.execute(text("SELECT 1"))
    return jsonify({"status": "ok", "database": "ok"})


@bp.get("/ping")
@requires(PUBLIC)
@doc("ping", "system", "Ping", {200: Pong})
def ping() -> Any:
    return jsonify({"status": "pong"})


@bp.get("/sync-status")
@requires("viewer")
@doc(
    "sync_status",
    "system",
    "The sync heartbeat",
    {200: SyncStatus, 500: SyncError},
    description="Reads the heartbeat file written by `cloudx heartbeat` (CLOUDX_SYNC_HEARTBEAT_FILE).",
)
def sync() -> Any:
    cfg = config()
    try:
        return jsonify(sync_status(cfg.SYNC_HEARTBEAT_FILE, cfg.SYNC_MAX_AGE))
    except HeartbeatError as exc:
        return jsonify({"status": "error", "error": str(exc)}), 500


@bp.get("/system-monitor")
@requires("viewer")
@query(MonitorQuery)
@doc(
    "system_monitor",
    "system",
    "CPU, memory, disk and network of this machine, or ping latency of a host",
    {200: [LocalMonitor, PingMonitor], 503: [Error, PingUnavailable]},
    errors={400: "target is not a host address or name.", 403: None},
)
def system_monitor(query: MonitorQuery) -> Any:
    if query.target in LOCAL_TARGETS:
        return jsonify(_local_monitor.sample())
    try:
        one = host(query.target, "target")
    except FieldError as exc:
        raise ValidationError(exc.message, field="target") from None
    with session() as s:
        checked = check_targets(s, principal(), [one])
    # Ping the address that was checked: resolving the name again could give another (DNS rebinding).
    result = ping_latency(checked[one][0], target=one)
    return jsonify(result), (503 if result["status"] == "unavailable" else 200)
