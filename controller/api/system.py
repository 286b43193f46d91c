"""Health, ping, sync heartbeat and system monitor."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy import text

from controller.api import PUBLIC, config, principal, requires, session
from controller.errors import ValidationError
from controller.scanlib import ScanInputError, scanner
from controller.services.heartbeat import HeartbeatError, sync_status
from controller.services.monitor import LOCAL_TARGETS, LocalMonitor, ping_latency
from controller.services.policy import check_targets

bp = Blueprint("system", __name__)
_local_monitor = LocalMonitor()


@bp.get("/health")
@requires(PUBLIC)
def health() -> Any:
    with session() as s:
        s.execute(text("SELECT 1"))
    return jsonify({"status": "ok", "database": "ok"})


@bp.get("/ping")
@requires(PUBLIC)
def ping() -> Any:
    return jsonify({"status": "pong"})


@bp.get("/sync-status")
@requires("viewer")
def sync() -> Any:
    cfg = config()
    try:
        return jsonify(sync_status(cfg.SYNC_HEARTBEAT_FILE, cfg.SYNC_MAX_AGE))
    except HeartbeatError as exc:
        return jsonify({"status": "error", "error": str(exc)}), 500


@bp.get("/system-monitor")
@requires("viewer")
def system_monitor() -> Any:
    target = request.args.get("target", "local")
    if target in LOCAL_TARGETS:
        return jsonify(_local_monitor.sample())
    try:
        host = scanner.validate_target(target)
    except ScanInputError as exc:
        raise ValidationError(exc.message, field="target") from None
    if "/" in host:
        raise ValidationError("target must be one host, not a network", field="target")
    with session() as s:
        checked = check_targets(s, principal(), [host])
    # Ping the address that was checked: resolving the name again could give another (DNS rebinding).
    result = ping_latency(checked[host][0], target=host)
    return jsonify(result), (503 if result["status"] == "unavailable" else 200)
