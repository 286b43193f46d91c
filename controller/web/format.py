"""How the pages show values: times in UTC, durations, sizes (Jinja2 filters)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

NONE = "\u2013"  # an en dash: no value


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """A time as the API gives it, shown to the second in UTC."""
    moment = _time(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else NONE


def iso(value: Any) -> str:
    moment = _time(value)
    return moment.isoformat() if moment else ""


def duration(start: Any, end: Any = None) -> str:
    """How long from start to end (or to now): 4 s, 3 min 20 s, 2 h 5 min."""
    begun = _time(start)
    if begun is None:
        return NONE
    seconds = int(((_time(end) or datetime.now(UTC)) - begun).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def size(value: Any) -> str:
    number = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if number < 1024 or unit == "GiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return ""


FILTERS: dict[str, Callable[..., str]] = {"when": when, "iso": iso, "duration": duration, "size": size}
