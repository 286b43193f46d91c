"""JSON for what the controller stores and serves in bulk: orjson, several times faster than the standard library."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import orjson


def loads(text: str | bytes) -> Any:
    """JSON the controller wrote (hosts.jsonl, event data). orjson reads integers beyond 64 bits as floats."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # What the standard library also reads: NaN and Infinity, lone surrogates ("\\ud800").
        return json.loads(text)


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8; values JSON cannot hold become their str(), NaN and infinities null."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:
        # orjson refuses integers beyond 64 bits, lone surrogates (json.loads makes both from JSON text) and
        # non-str keys; the standard library writes them, escaped to ASCII.
        return json.dumps(_finite(value), default=str, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    # As orjson writes them: NaN and infinities are not JSON (PostgreSQL's json type refuses them).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# Times as the API shows them: ISO 8601 in UTC with a Z.
def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # stored in UTC; SQLite hands it back without a zone
        return value.isoformat() + "Z"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
