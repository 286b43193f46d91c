"""API tokens and roles: who a request comes from and what that role may do."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from controller.errors import Conflict, NotFound
from controller.principal import Principal
from controller.schemas.admin import Token, TokenRequest
from controller.schemas.types import TOKEN_FORMAT
from controller.store.models import ACTIVE_STATUSES, ApiToken, Job, utcnow

# A token seen in use is recorded at most this often, so reads do not all become writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


def cli_principal(allow_large_targets: bool = False) -> Principal:
    """Whoever runs `cloudx` on the controller's machine owns its database: an admin."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal(name=f"cli:{user}", role="admin", allow_large_targets=allow_large_targets)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, role: str, created_by: str, **options: Any) -> tuple[ApiToken, str]:
    """issue_token with the request's fields as arguments (scope, allow_large_targets, expires_in, max_queued, max_running)."""
    return issue_token(session, TokenRequest.parse({"name": name, "role": role, **options}), created_by)


def issue_token(session: Session, request: TokenRequest, created_by: str) -> tuple[ApiToken, str]:
    """A new token and its secret text, which is returned here once and never stored."""
    name, lifetime = request.name, request.lifetime
    expires_at = utcnow() + lifetime if lifetime is not None else None
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} exists (names are never reused, even revoked); choose another name")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        id=token_id,
        name=name,
        role=request.role,
        token_hash=_hash(secret),
        scope=request.scope,
        allow_large_targets=request.allow_large_targets,
        created_by=created_by,
        expires_at=expires_at,
        max_queued=request.max_queued,
        max_running=request.max_running,
    )
    session.add(token)
    session.flush()
    return token, f"cx_{token_id}_{secret}"


# Columns, not an ORM object, and one statement built once: this runs for every request.
_TOKEN_BY_ID = select(
    ApiToken.id,
    ApiToken.token_hash,
    ApiToken.revoked_at,
    ApiToken.last_used_at,
    ApiToken.name,
    ApiToken.role,
    ApiToken.scope,
    ApiToken.allow_large_targets,
    ApiToken.expires_at,
    ApiToken.max_queued,
    ApiToken.max_running,
).where(ApiToken.id == bindparam("token_id"))


def authenticate(session: Session, presented: str) -> Principal | None:
    """A token is "cx_<id>_<secret>": the id finds the row, the secret is checked against its hash.

    The principal of a valid, unrevoked, unexpired token, or None. The hash comparison takes constant time."""
    match = TOKEN_FORMAT.fullmatch(presented)
    return token_principal(session, match.group(1) if match else None, _hash(match.group(2) if match else presented))


def token_principal(session: Session, token_id: str | None, presented_hash: str) -> Principal | None:
    """The principal of token `token_id` if `presented_hash` is its hash and it is neither revoked nor expired
    (a dashboard session keeps the hash it was opened with: a revoked token ends its sessions at once)."""
    token = session.connection().execute(_TOKEN_BY_ID, {"token_id": token_id}).first() if token_id else None
    expected = token.token_hash if token is not None else _DUMMY_HASH
    ok = hmac.compare_digest(presented_hash, expected)
    now = utcnow()
    if not ok or token is None or token.revoked_at is not None or expired(token.expires_at, now):
        return None
    last = token.last_used_at
    return Principal(
        max_queued=token.max_queued,
        max_running=token.max_running,
        stale_use=last is None or now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo)) > LAST_USED_RESOLUTION,
        name=token.name,
        role=token.role,
        token_id=token.id,
        scope=tuple(token.scope) if token.scope is not None else None,
        allow_large_targets=token.allow_large_targets,
    )


def token_active(session: Session, token_id: str) -> bool:
    """Whether the token is still neither revoked nor expired (an open stream asks, now and then)."""
    row = session.execute(select(ApiToken.revoked_at, ApiToken.expires_at).where(ApiToken.id == token_id)).first()
    return row is not None and row.revoked_at is None and not expired(row.expires_at)


def expired(expires_at: datetime | None, now: datetime | None = None) -> bool:
    if expires_at is None:
        return False
    now = now or utcnow()
    return (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)) <= now


def record_use(session: Session, token_id: str) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))


def revoke_token(session: Session, name: str) -> tuple[ApiToken, list[str]]:
    """Revoke a token, and stop what it started: its queued jobs are canceled at once, its running jobs are
    asked to stop (a revoked token may have been stolen). Returns the token and the ids of those jobs."""
    token = get_token(session, name)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
    jobs = list(session.scalars(select(Job.id).where(Job.created_by == name, Job.status.in_(ACTIVE_STATUSES))))
    reason = f"canceled: the token {name!r} that submitted it was revoked"
    session.execute(
        update(Job)
        .where(Job.created_by == name, Job.status == "queued")
        .values(status="canceled", status_reason=reason, finished_at=utcnow(), cancel_requested=True)
    )
    session.execute(update(Job).where(Job.created_by == name, Job.status == "running").values(cancel_requested=True))
    return token, jobs


def token_view(token: ApiToken) -> dict[str, Any]:
    return Token.dump(token)


def get_token(session: Session, name: str) -> ApiToken:
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token {name!r}")
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))
