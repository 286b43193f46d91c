"""The sync heartbeat file: written by `cloudx heartbeat` (cron or a sync job), read by /api/sync-status."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class HeartbeatError(Exception):
    """The file exists but cannot be read as a heartbeat."""


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
        raise HeartbeatError(f"timestamp {value!r} is not ISO-8601") from None
    # A timestamp without a zone is taken as UTC.
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def sync_status(path: str | Path, max_age: int, now: datetime | None = None) -> dict[str, Any]:
    """active / inactive (with reason and age); HeartbeatError when the file is unreadable."""
    path = Path(path)
    now = now or datetime.now(UTC)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"status": "inactive", "reason": "no heartbeat file", "file": str(path)}
    except OSError as exc:
        raise HeartbeatError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # tolerate a UTF-8 byte-order mark
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeartbeatError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HeartbeatError(f"{path} must hold a JSON object")
    stamp = parse_timestamp(data.get("timestamp"))
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
