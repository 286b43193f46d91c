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

from controller.api.auth import PUBLIC, role_of
from controller.api.context import session
from controller.errors import ApiError
from controller.principal import Principal
from controller.services.auth import record_use
from controller.services.web_sessions import COOKIE, COOKIE_FORMAT, PRESESSION_COOKIE, csrf_token, csrf_valid, session_principal
from controller.web.pages import page

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
_COOKIE = re.compile(COOKIE_FORMAT)
log = logging.getLogger("cloudx.web")


def _cookie(name: str) -> str | None:
    value = request.cookies.get(name)
    return value if value is not None and _COOKIE.fullmatch(value) else None


def browser_cookie() -> str | None:
    """What this browser's CSRF token derives from: its session, else the sign-in form's pre-session cookie."""
    return g.get("web_cookie") or _cookie(PRESESSION_COOKIE) or g.get("presession")


def csrf_field() -> Markup:
    cookie = browser_cookie()
    return Markup(f'<input type="hidden" name="csrf_token" value="{csrf_token(cookie)}">') if cookie else Markup("")


def can(role: str) -> bool:
    me: Principal | None = g.get("principal")
    return me is not None and me.has(role)


def admit() -> Any:
    """Before every page: the session, the page's role, and the CSRF token of a form that changes something."""
    g.content_security_policy = PAGE_CSP
    if request.endpoint == "web.static":
        return None
    cookie = _cookie(COOKIE)
    principal = None
    if cookie is not None:
        with session() as s:
            principal = session_principal(s, cookie)
        if principal is not None and principal.stale_use:
            with contextlib.suppress(OperationalError), session() as s:  # best effort, as for the API's tokens
                record_use(s, principal.token_id)  # type: ignore[arg-type]
    g.principal, g.web_cookie = principal, cookie if principal is not None else None
    if request.method in MUTATING and not csrf_valid(browser_cookie(), request.form.get("csrf_token")):
        raise ApiError("the form's CSRF token is missing or not this session's: reload the page and send it again", status=403)
    view = current_app.view_functions.get(request.endpoint or "")
    role = role_of(view) if view is not None else "viewer"
    if role == PUBLIC:
        return None
    if principal is None:
        return redirect(f"/signin?next={quote(request.full_path.rstrip('?'), safe='/')}", 303)
    if not principal.has(role):
        raise ApiError(f"this page needs the {role} role; you are signed in as {principal.name!r} ({principal.role})", status=403)
    return None


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
