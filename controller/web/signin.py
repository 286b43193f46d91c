"""Sign-in and sign-out: a pasted API token becomes a server-side session (services.web_sessions)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Blueprint, g, make_response, redirect, request

from controller.api.auth import PUBLIC, cookie_name, requires, secure_request
from controller.api.context import config, session
from controller.services.web_sessions import COOKIE, PRESESSION_COOKIE, new_cookie, sign_in, sign_out
from controller.store.models import utcnow
from controller.web.gate import browser_cookie, every_session_cookie
from controller.web.pages import page

bp = Blueprint("signin", __name__)
# Where to go after signing in: a path of this site only (not //host, not /\\host).
_LOCAL = re.compile(r"^/(?![/\\])[^\s]*$")


def _next() -> str:
    wanted = request.values.get("next", "/")
    return wanted if _LOCAL.fullmatch(wanted) and len(wanted) <= 2048 else "/"


@bp.get("/signin")
@requires(PUBLIC)
def form() -> Any:
    return _page(None, 200)


def _page(error: str | None, status: int) -> Any:
    """The sign-in form, with a pre-session cookie if the browser has none (the form's CSRF token derives from it)."""
    if browser_cookie() is None:
        g.presession = new_cookie()
    response = make_response(*page("signin.html", "", status, next=_next(), error=error))
    if g.get("presession"):
        _set(response, PRESESSION_COOKIE, g.presession, 3600)
    return response


@bp.post("/signin")
@requires(PUBLIC)
def submit() -> Any:
    lifetime = timedelta(hours=config().WEB_SESSION_HOURS)
    with session() as s:
        opened = sign_in(s, request.form.get("token", ""), lifetime, replacing=every_session_cookie())
    if opened is None:
        g.error = "sign-in refused: the token is not valid, expired or was revoked"
        return _page("That token is not valid, expired or was revoked.", 401)
    g.principal = opened.principal  # the audit entry names who signed in
    response = redirect(_next(), 303)
    lasts = max(int((opened.expires_at - utcnow()).total_seconds()), 1)  # the browser drops it when the server does
    _set(response, COOKIE, opened.cookie, lasts)
    _set(response, PRESESSION_COOKIE, "", 0)
    _end_other_scheme(response)
    return response


def _set(response: Any, base: str, value: str, max_age: int) -> None:
    """A dashboard cookie: HttpOnly, SameSite=Strict, for the whole site; Secure and __Host- over HTTPS. Max-Age 0 ends it."""
    secure = secure_request()
    response.set_cookie(cookie_name(base), value, max_age=max_age, httponly=True, samesite="Strict", secure=secure, path="/")


@bp.post("/signout")
@requires(PUBLIC)  # also for a session that has ended: its row and cookie go all the same
def signout() -> Any:
    with session() as s:
        for cookie in every_session_cookie():
            sign_out(s, cookie)
    response = redirect("/signin", 303)
    _set(response, COOKIE, "", 0)
    _end_other_scheme(response)
    return response


def _end_other_scheme(response: Any) -> None:
    """A session cookie left under the other scheme's name (signed in over HTTP, now over HTTPS) is cleared too."""
    secure = secure_request()
    other = COOKIE if secure else f"__Host-{COOKIE}"
    if other in request.cookies:
        response.delete_cookie(other, path="/", secure=not secure, httponly=True, samesite="Strict")
