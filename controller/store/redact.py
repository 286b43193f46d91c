"""Keeps secrets out of everything the controller stores."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "********"
_SECRET_WORDS = r"secret|token|private_key|ssh_key|api_key|credential"
_SECRET_KEY = re.compile(rf"pass(word|wd|phrase)?$|{_SECRET_WORDS}", re.I)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def may_hold_secrets(encoded: str) -> bool:
    """False only when JSON text has no secret-looking key at all (then redact() would change nothing)."""
    if not encoded.isascii() or "\\u" in encoded:
        # re.I matches some non-ASCII letters to ASCII ones (the Kelvin sign to k), written raw or escaped: redact() decides.
        return True
    lowered = encoded.lower()  # plain substring tests: far faster than a case-insensitive regex
    # Any text with a key _SECRET_KEY finds holds one of these words ("_key" covers private_key, ssh_key and
    # api_key; values may hold them too: then redact() runs). Spelled out: any() over a generator costs more.
    return "pass" in lowered or "secret" in lowered or "token" in lowered or "_key" in lowered or "credential" in lowered


def redact(value: Any) -> Any:
    """A copy of `value` with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
