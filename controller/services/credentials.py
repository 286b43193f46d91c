"""Stored credentials: SSH keys and passwords kept encrypted (AES-256-GCM) with a key from the environment.

The key (CLOUDX_CREDENTIALS_KEY) never reaches the database; each row holds a random nonce and the
ciphertext, bound to the credential's name, so a row copied under another name does not decrypt.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import Conflict, NotFound, ValidationError
from controller.services.policy import validate_scope
from controller.store.models import Credential
from controller.store.sealing import decode_key, seal, unseal

KINDS = ("ssh_key", "password")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,63}$")
MAX_SECRET = 16 * 1024
NO_KEY = "stored credentials need CLOUDX_CREDENTIALS_KEY: 32 random bytes in URL-safe base64 (`cloudx credential keygen`)"


def _key(config: Config) -> tuple[bytes, str]:
    """The key and its short fingerprint."""
    if not config.CREDENTIALS_KEY:
        raise ValidationError(NO_KEY, field="credential")
    key = decode_key(config.CREDENTIALS_KEY)
    if key is None:
        raise ValidationError("CLOUDX_CREDENTIALS_KEY is not 32 bytes in URL-safe base64", field="credential")
    return key, hashlib.sha256(b"cloudx-credentials" + key).hexdigest()[:16]


def validate_secret(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_SECRET or "\x00" in value:
        raise ValidationError(f"{field} must be a non-empty string of at most {MAX_SECRET} characters", field=field)
    return value


def validate_ssh_key(value: Any, field: str = "ssh_key") -> str:
    key = validate_secret(value, field)
    if not key.lstrip().startswith("-----BEGIN ") or "PRIVATE KEY-----" not in key:
        raise ValidationError(f"{field} must be a private key in PEM/OpenSSH format", field=field)
    return key if key.endswith("\n") else key + "\n"


def store_credential(session: Session, config: Config, body: Any, created_by: str) -> Credential:
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", field="body")
    unknown = set(body) - {"name", "kind", "username", "secret", "scope", "ports"}
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    name, kind, username = body.get("name"), body.get("kind"), body.get("username")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(f"name must match {NAME.pattern}", field="name")
    if kind not in KINDS:
        raise ValidationError(f"kind must be one of: {', '.join(KINDS)}", field="kind")
    if username is not None and (not isinstance(username, str) or not USERNAME.fullmatch(username)):
        raise ValidationError("username may hold letters, digits, _ . - and \\ (1-64 characters)", field="username")
    secret = validate_ssh_key(body.get("secret"), "secret") if kind == "ssh_key" else validate_secret(body.get("secret"), "secret")
    scope = validate_scope(body["scope"]) if body.get("scope") is not None else None
    ports = _ports(body["ports"]) if body.get("ports") is not None else None
    key, key_id = _key(config)
    if session.scalar(select(Credential.id).where(Credential.name == name)) is not None:
        raise Conflict(f"a credential named {name!r} exists; delete it first to replace it")
    credential = Credential(
        name=name,
        kind=kind,
        username=username,
        scope=scope,
        ports=ports,
        key_id=key_id,
        ciphertext="",
        created_by=created_by,
    )
    credential.ciphertext = seal(key, _bound(credential), {"secret": secret})
    session.add(credential)
    session.flush()
    return credential


def open_credential(session: Session, config: Config, name: Any) -> tuple[Credential, str]:
    """The credential and its decrypted secret."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(f"credential must match {NAME.pattern}", field="credential")
    credential = session.scalar(select(Credential).where(Credential.name == name))
    if credential is None:
        raise ValidationError(f"no stored credential {name!r}", field="credential")
    key, key_id = _key(config)
    if credential.key_id != key_id:
        raise ValidationError(f"credential {name!r} was stored with another CLOUDX_CREDENTIALS_KEY", field="credential")
    try:
        return credential, unseal(key, _bound(credential), credential.ciphertext)["secret"]
    except ValueError:
        raise ValidationError(f"credential {name!r} does not decrypt: it was altered", field="credential") from None


def _bound(credential: Credential) -> bytes:
    """What the ciphertext is bound to: changing any of it in the database makes it fail to decrypt.
    (Ports are bound when set; credentials stored before they existed have none.)"""
    bound: list[Any] = [credential.name, credential.kind, credential.username, credential.scope]
    if credential.ports is not None:
        bound.append(credential.ports)
    return json.dumps(bound).encode()


DEFAULT_PORTS = {"ssh": [22], "winrm": [5986]}


def _ports(value: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 64
        or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in value)
    ):
        raise ValidationError("ports must be a list of 1 to 64 port numbers (1-65535)", field="ports")
    return sorted(set(value))


def credential_ports(credential: Credential, transport: str) -> list[int]:
    """The ports a stored credential may be used on over "ssh" or "winrm": its own, else 22 or 5986."""
    return list(credential.ports) if credential.ports is not None else DEFAULT_PORTS[transport]


def delete_credential(session: Session, name: str) -> None:
    credential = session.scalar(select(Credential).where(Credential.name == name))
    if credential is None:
        raise NotFound(f"no stored credential {name!r}")
    session.delete(credential)


def credential_view(credential: Credential) -> dict[str, Any]:
    from controller.queue.jobs import iso

    return {
        "name": credential.name,
        "kind": credential.kind,
        "username": credential.username,
        "scope": credential.scope,
        "ports": credential.ports,
        "created_by": credential.created_by,
        "created_at": iso(credential.created_at),
    }


def list_credentials(session: Session) -> list[Credential]:
    return list(session.scalars(select(Credential).order_by(Credential.name)))
