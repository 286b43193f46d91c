"""The dashboard's gate: the session behind the cookie, each page's role, and the CSRF token of every change."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any
from urllib.parse import quote

from flask import current_app, g, redirect, request
from markupsafe import Markup
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from controller.api.auth import PUBLIC, cookie_name, role_of
from controller.api.context import session
from controller.errors import ApiError
from controller.principal import Principal
from controller.queue.jobs import may_change
from controller.services.auth import record_use
from controller.services.web_sessions import COOKIE, COOKIE_FORMAT, PRESESSION_COOKIE, csrf_token, csrf_valid, session_principal, touch
from controller.store.models import utcnow
from controller.web.pages import page

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
_COOKIE = re.compile(COOKIE_FORMAT)
log = logging.getLogger("cloudx.web")


def cookie(base: str) -> str | None:
    """The browser's cookie `base` (under its __Host- name over HTTPS), if it is one of ours in form."""
    value = request.cookies.get(cookie_name(base))
    return value if value is not None and _COOKIE.fullmatch(value) else None


def every_session_cookie() -> tuple[str, ...]:
    """This browser's session cookies under both names (set over HTTP and over HTTPS), to end them all: only the
    name of this request's scheme ever opens a session."""
    values = (request.cookies.get(COOKIE), request.cookies.get(f"__Host-{COOKIE}"))
    return tuple(v for v in values if v is not None and _COOKIE.fullmatch(v))


def browser_cookie() -> str | None:
    """What this browser's CSRF token derives from: its session cookie (also one that has ended: its sign-out form still
    works), else the sign-in form's pre-session cookie."""
    return g.get("web_cookie") or cookie(PRESESSION_COOKIE) or g.get("presession")


def csrf_field() -> Markup:
    cookie = browser_cookie()
    return Markup(f'<input type="hidden" name="csrf_token" value="{csrf_token(cookie)}">') if cookie else Markup("")


def can(role: str, created_by: str | None = None, owned: bool = False) -> bool:
    """Whether the signed-in user has `role`; with owned, also whether they may change a job `created_by` someone
    (its creator or an admin: queue.jobs.may_change, as the server checks it)."""
    me: Principal | None = g.get("principal")
    return me is not None and me.has(role) and (not owned or may_change(created_by, me))


def admit() -> Any:
    """Before every page: the session, the page's role, and the CSRF token of a form that changes something."""
    g.content_security_policy = PAGE_CSP
    if request.endpoint == "web.static":
        return None
    g.rendered_at = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as jsontext.iso writes the streams' times
    g.web_cookie = cookie(COOKIE)
    g.principal = _principal(g.web_cookie) if g.web_cookie else None
    view = current_app.view_functions.get(request.endpoint or "")
    role = role_of(view) if view is not None else "viewer"
    if role != PUBLIC and g.principal is None:  # before the CSRF check: no one's refused form is a bounded 401
        if request.method in MUTATING:
            raise ApiError("you are not signed in (or the session ended): sign in again, then send the form again", status=401)
        return redirect(f"/signin?next={quote(request.full_path.rstrip('?'), safe='/')}", 303)
    if request.method in MUTATING and not csrf_valid(browser_cookie(), request.form.get("csrf_token")):
        raise ApiError("the form's CSRF token is missing or not this session's: reload the page and send it again", status=403)
    if role != PUBLIC and not g.principal.has(role):
        raise ApiError(f"this page needs the {role} role; you are signed in as {g.principal.name!r} ({g.principal.role})", status=403)
    return None


def _principal(session_cookie: str) -> Principal | None:
    with session() as s:
        principal = session_principal(s, session_cookie)
    if principal is not None and principal.stale_use:
        with contextlib.suppress(OperationalError), session() as s:  # best effort, as for the API's tokens
            record_use(s, principal.token_id)  # type: ignore[arg-type]
            touch(s, session_cookie)
    return principal


def api_error(exc: ApiError) -> Any:
    g.error = exc.message
    return page("error.html", "", exc.status, status=exc.status, message=exc.message)


def http_error(exc: HTTPException) -> Any:
    g.error = exc.description or exc.name
    return page("error.html", "", exc.code or 500, status=exc.code, message=g.error)


def unavailable(exc: OperationalError) -> Any:
    g.error = "the database is unavailable; nothing was changed, try again"
    return page("error.html", "", 503, status=503, message=g.error)


def server_error(exc: Exception) -> Any:
    log.exception("%s unhandled error on %s %s", g.get("request_id"), request.method, request.path)
    g.error = "internal server error"
    return page("error.html", "", 500, status=500, message=f"internal server error (request id {g.get('request_id')})")
