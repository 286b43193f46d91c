"""Dashboard sessions: an API token pasted once becomes a server-side session behind a random cookie.

The cookie's value is never stored, only its SHA-256 (a copy of the database opens no session). A session stands
for its token: each request checks the token again (revoked or expired, the session ends with it). The CSRF token
of a page is derived from the cookie (an HMAC), so it needs no storage and a page of another browser's session
is no use to this one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from controller.principal import Principal
from controller.schemas.types import TOKEN_FORMAT
from controller.services.auth import token_principal
from controller.store.models import ApiToken, WebSession, aware, utcnow

COOKIE = "cloudx_session"
# Before sign-in: the cookie the sign-in form's CSRF token is derived from (login CSRF).
PRESESSION_COOKIE = "cloudx_presession"
COOKIE_FORMAT = r"[A-Za-z0-9_-]{43}"


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def new_cookie() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(cookie: str) -> str:
    return hmac.new(cookie.encode(), b"cloudx-csrf", hashlib.sha256).hexdigest()


def csrf_valid(cookie: str | None, given: str | None) -> bool:
    return bool(cookie and given) and hmac.compare_digest(csrf_token(cookie), given)  # type: ignore[arg-type]


class Opened(NamedTuple):
    cookie: str
    principal: Principal
    expires_at: datetime


def sign_in(session: Session, presented: str, lifetime: timedelta, replacing: tuple[str, ...] = ()) -> Opened | None:
    """A new session for a valid token (its cookie value, principal and end), or None. It ends after `lifetime`,
    or when the token expires if that is sooner; the browser's previous sessions (`replacing`) end now."""
    match = TOKEN_FORMAT.fullmatch(presented.strip())
    if match is None:
        token_principal(session, None, _digest(presented))  # the same work as for a known id: no timing hint
        return None
    presented_hash = _digest(match.group(2))
    principal = token_principal(session, match.group(1), presented_hash)
    if principal is None:
        return None
    now = utcnow()
    expires_at = now + lifetime
    token_expiry = session.scalar(select(ApiToken.expires_at).where(ApiToken.id == principal.token_id))
    if token_expiry is not None:
        expires_at = min(expires_at, aware(token_expiry))
    for old in replacing:
        sign_out(session, old)
    session.execute(delete(WebSession).where(WebSession.expires_at <= utcnow()))  # cheap (indexed), even with no prune
    cookie = new_cookie()
    session.add(WebSession(id=_digest(cookie), token_id=principal.token_id, token_hash=presented_hash, expires_at=expires_at))
    session.flush()
    return Opened(cookie, principal, expires_at)


def session_principal(session: Session, cookie: str) -> Principal | None:
    """The principal of an open session: its token still valid and the session not expired."""
    columns = (WebSession.token_id, WebSession.token_hash, WebSession.expires_at)
    row = session.execute(select(*columns).where(WebSession.id == _digest(cookie))).first()
    if row is None or aware(row.expires_at) <= utcnow():
        return None
    return token_principal(session, row.token_id, row.token_hash)


def sign_out(session: Session, cookie: str) -> bool:
    return session.execute(delete(WebSession).where(WebSession.id == _digest(cookie))).rowcount > 0  # type: ignore[attr-defined]


def touch(session: Session, cookie: str) -> None:
    """Record that the session is in use (called at most about once a minute, with the token's own record of use)."""
    session.execute(update(WebSession).where(WebSession.id == _digest(cookie)).values(last_seen_at=utcnow()))


def prune_sessions(session: Session) -> int:
    """Delete the sessions that can no longer be used: expired, or of a revoked or expired token."""
    now = utcnow()
    dead = select(ApiToken.id).where(or_(ApiToken.revoked_at.is_not(None), ApiToken.expires_at <= now))
    result = session.execute(delete(WebSession).where(or_(WebSession.expires_at <= now, WebSession.token_id.in_(dead))))
    return result.rowcount or 0  # type: ignore[attr-defined]
