"""API tokens and roles: who a request comes from and what that role may do."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from controller.errors import Conflict, NotFound, ValidationError
from controller.principal import ROLES, Principal
from controller.store.models import ACTIVE_STATUSES, ApiToken, Job, utcnow

TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# "cx_<id>_<secret>": the id finds the row, the secret is checked against its hash.
TOKEN_FORMAT = re.compile(r"^cx_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# A token seen in use is recorded at most this often, so reads do not all become writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


MAX_TOKEN_LIFETIME = timedelta(days=3650)
EXPIRES_IN = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_expires_in(value: Any, field: str = "expires_in") -> timedelta:
    """'30d', '12h', '90m', '3600s' (or a number of seconds) as a lifetime."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        seconds = value
    elif isinstance(value, str) and (match := EXPIRES_IN.fullmatch(value)):
        seconds = int(match.group(1)) * UNITS[match.group(2)]
    else:
        raise ValidationError(f"{field} must be a lifetime such as 30d, 12h, 90m or a number of seconds", field=field)
    if seconds > MAX_TOKEN_LIFETIME.total_seconds():
        raise ValidationError(f"{field} must be at most {MAX_TOKEN_LIFETIME.days} days", field=field)
    return timedelta(seconds=seconds)


def _quota_value(value: Any, field: str) -> int | None:
    if value is None:
        return None
    # At least 1: a quota of 0 would keep the token's jobs waiting for ever (revoke the token instead).
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10000:
        raise ValidationError(f"{field} must be an integer from 1 to 10000", field=field)
    return value


def cli_principal(allow_large_targets: bool = False) -> Principal:
    """Whoever runs `cloudx` on the controller's machine owns its database: an admin."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal(name=f"cli:{user}", role="admin", allow_large_targets=allow_large_targets)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session,
    name: str,
    role: str,
    created_by: str,
    scope: list[str] | None = None,
    allow_large_targets: bool = False,
    expires_in: Any = None,
    max_queued: Any = None,
    max_running: Any = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret text, which is returned here once and never stored."""
    from controller.services.policy import validate_scope

    if not isinstance(name, str) or not TOKEN_NAME.fullmatch(name):
        raise ValidationError(f"name must match {TOKEN_NAME.pattern}", field="name")
    if role not in ROLES:
        raise ValidationError(f"role must be one of: {', '.join(ROLES)}", field="role")
    if not isinstance(allow_large_targets, bool):
        raise ValidationError("allow_large_targets must be true or false", field="allow_large_targets")
    if scope is not None:
        scope = validate_scope(scope)
    expires_at = utcnow() + parse_expires_in(expires_in) if expires_in is not None else None
    quotas = _quota_value(max_queued, "max_queued"), _quota_value(max_running, "max_running")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} exists (names are never reused, even revoked); choose another name")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        id=token_id,
        name=name,
        role=role,
        token_hash=_hash(secret),
        scope=scope,
        allow_large_targets=allow_large_targets,
        created_by=created_by,
        expires_at=expires_at,
        max_queued=quotas[0],
        max_running=quotas[1],
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
    """The principal of a valid, unrevoked, unexpired token, or None. The hash comparison takes constant time."""
    match = TOKEN_FORMAT.fullmatch(presented)
    token = session.connection().execute(_TOKEN_BY_ID, {"token_id": match.group(1)}).first() if match else None
    expected = token.token_hash if token is not None else _DUMMY_HASH
    ok = hmac.compare_digest(_hash(match.group(2) if match else presented), expected)
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
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token {name!r}")
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
    from controller.queue.jobs import iso

    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "scope": token.scope,
        "allow_large_targets": token.allow_large_targets,
        "created_by": token.created_by,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
        "expires_at": iso(token.expires_at),
        "max_queued": token.max_queued,
        "max_running": token.max_running,
    }


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))
