"""Stored credentials: SSH keys and passwords kept encrypted (AES-256-GCM) with a key from the environment.

The key (CLOUDX_CREDENTIALS_KEY) never reaches the database; each row holds a random nonce and the
ciphertext, bound to the credential's name, so a row copied under another name does not decrypt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import Conflict, NotFound, ValidationError
from controller.schemas.admin import Credential as CredentialView
from controller.schemas.admin import CredentialRequest
from controller.schemas.types import CREDENTIAL_NAME
from controller.store.models import Credential
from controller.store.sealing import decode_key, seal, unseal

NO_KEY = "stored credentials need CLOUDX_CREDENTIALS_KEY: 32 random bytes in URL-safe base64 (`cloudx credential keygen`)"


def _key(config: Config) -> tuple[bytes, str]:
    """The key and its short fingerprint."""
    if not config.CREDENTIALS_KEY:
        raise ValidationError(NO_KEY, field="credential")
    key = decode_key(config.CREDENTIALS_KEY)
    if key is None:
        raise ValidationError("CLOUDX_CREDENTIALS_KEY is not 32 bytes in URL-safe base64", field="credential")
    return key, hashlib.sha256(b"cloudx-credentials" + key).hexdigest()[:16]


def store_credential(session: Session, config: Config, request: CredentialRequest | Mapping[str, Any], created_by: str) -> Credential:
    request = CredentialRequest.coerce(request)
    name, kind, username, secret, scope, ports = request.name, request.kind, request.username, request.secret, request.scope, request.ports
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
    if not isinstance(name, str) or not CREDENTIAL_NAME.fullmatch(name):
        raise ValidationError(f"credential must match {CREDENTIAL_NAME.pattern}", field="credential")
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


def credential_ports(credential: Credential, transport: str) -> list[int]:
    """The ports a stored credential may be used on over "ssh" or "winrm": its own, else 22 or 5986."""
    return list(credential.ports) if credential.ports is not None else DEFAULT_PORTS[transport]


def delete_credential(session: Session, name: str) -> None:
    credential = session.scalar(select(Credential).where(Credential.name == name))
    if credential is None:
        raise NotFound(f"no stored credential {name!r}")
    session.delete(credential)


def credential_view(credential: Credential) -> dict[str, Any]:
    return CredentialView.dump(credential)


def list_credentials(session: Session) -> list[Credential]:
    return list(session.scalars(select(Credential).order_by(Credential.name)))
