"""Keeps secrets out of everything the controller stores."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "********"
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?$|secret|token|private_key|ssh_key|api_key|credential", re.I)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """A copy of `value` with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
