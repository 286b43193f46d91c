"""The sync heartbeat file: written by `cloudx heartbeat` (cron or a sync job), read by /api/sync-status."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("cloudx.heartbeat")


class HeartbeatError(Exception):
    """The file exists but cannot be read as a heartbeat. The message says what is wrong for API clients,
    without the file's path or parser details; those go to the "cloudx.heartbeat" log."""


def write_heartbeat(path: str | Path, **extra: Any) -> dict[str, Any]:
    """Write {"timestamp": now, ...} atomically, so a reader never sees half a file."""
    path = Path(path)
    data = {"timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".heartbeat-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(tmp, path)
    return data


def parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise HeartbeatError("timestamp is missing or not a string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise HeartbeatError("timestamp is not ISO-8601") from None
    # A timestamp without a zone is taken as UTC.
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def sync_status(path: str | Path, max_age: int, now: datetime | None = None) -> dict[str, Any]:
    """active / inactive (with reason and age); HeartbeatError when the file is unreadable.

    Neither the result nor a HeartbeatError names the file or quotes the parser: the API returns them to any
    viewer. The full detail is logged on "cloudx.heartbeat".
    """
    path = Path(path)
    now = now or datetime.now(UTC)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        log.info("sync status: no heartbeat file at %s", path)
        return {"status": "inactive", "reason": "no heartbeat file"}
    except OSError as exc:
        log.warning("sync status: cannot read the heartbeat file %s: %s", path, exc)
        # strerror is the system's text for the errno ("Permission denied"); the path is in exc.filename, not here.
        raise HeartbeatError(f"the heartbeat file cannot be read ({(exc.strerror or 'unknown error').lower()})") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # tolerate a UTF-8 byte-order mark
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("sync status: the heartbeat file %s is not valid JSON: %s", path, exc)
        raise HeartbeatError("the heartbeat file is not valid JSON") from None
    if not isinstance(data, dict):
        log.warning("sync status: the heartbeat file %s holds a JSON %s, not an object", path, type(data).__name__)
        raise HeartbeatError("the heartbeat file must hold a JSON object")
    try:
        stamp = parse_timestamp(data.get("timestamp"))
    except HeartbeatError as exc:
        log.warning("sync status: the heartbeat file %s: %s (timestamp %.200r)", path, exc, data.get("timestamp"))
        raise
    age = (now - stamp).total_seconds()
    result: dict[str, Any] = {
        "last_heartbeat": stamp.isoformat().replace("+00:00", "Z"),
        "age_seconds": round(age, 1),
        "max_age_seconds": max_age,
    }
    if age > max_age:
        return {"status": "inactive", "reason": f"last heartbeat is {age:.0f} s old (limit {max_age} s)", **result}
    if age < -max_age:
        return {"status": "inactive", "reason": "last heartbeat is in the future: check the clocks", **result}
    return {"status": "active", **result}
