"""Values sealed at rest (AES-256-GCM): stored credentials, and job secrets on their way through a broker."""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def keygen() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def decode_key(raw: str) -> bytes | None:
    """A 32-byte AES key from URL-safe base64, or None when raw is not one."""
    try:
        key = base64.urlsafe_b64decode(raw.encode())
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None


def seal(key: bytes, bound_to: bytes, value: Any) -> str:
    """value as JSON, encrypted and authenticated (AES-256-GCM, random nonce), bound to `bound_to`."""
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, json.dumps(value).encode(), bound_to)).decode()


def unseal(key: bytes, bound_to: bytes, sealed: str) -> Any:
    """What seal() sealed; ValueError for another key, another binding or altered text."""
    try:
        raw = base64.b64decode(sealed, validate=True)
        return json.loads(AESGCM(key).decrypt(raw[:12], raw[12:], bound_to))
    except (InvalidTag, binascii.Error, ValueError):
        raise ValueError("does not decrypt: another key, or altered") from None
