"""Sign-in and sign-out: a pasted API token becomes a server-side session (services.web_sessions)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Blueprint, g, make_response, redirect, request

from controller.api.auth import PUBLIC, requires
from controller.api.context import config, session
from controller.services.web_sessions import COOKIE, PRESESSION_COOKIE, new_cookie, sign_in, sign_out
from controller.store.models import utcnow
from controller.web.gate import browser_cookie
from controller.web.pages import page

bp = Blueprint("signin", __name__)
# Where to go after signing in: a path of this site only (not //host, not /\\host).
_LOCAL = re.compile(r"^/(?![/\\])[^\s]*$")


def _next() -> str:
    wanted = request.values.get("next", "/")
    return wanted if _LOCAL.fullmatch(wanted) and len(wanted) <= 2048 else "/"


def _secure() -> bool:
    return request.is_secure or config().WEB_SECURE_COOKIES == "always"


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
        response.set_cookie(PRESESSION_COOKIE, g.presession, max_age=3600, httponly=True, samesite="Strict", secure=_secure(), path="/")
    return response


@bp.post("/signin")
@requires(PUBLIC)
def submit() -> Any:
    lifetime = timedelta(hours=config().WEB_SESSION_HOURS)
    with session() as s:
        opened = sign_in(s, request.form.get("token", ""), lifetime)
    if opened is None:
        g.error = "sign-in refused: the token is not valid, expired or was revoked"
        return _page("That token is not valid, expired or was revoked.", 401)
    g.principal = opened.principal  # the audit entry names who signed in
    response = redirect(_next(), 303)
    lasts = max(int((opened.expires_at - utcnow()).total_seconds()), 1)  # the browser drops it when the server does
    response.set_cookie(COOKIE, opened.cookie, max_age=lasts, httponly=True, samesite="Strict", secure=_secure(), path="/")
    response.delete_cookie(PRESESSION_COOKIE, path="/")
    return response


@bp.post("/signout")
@requires("viewer")
def signout() -> Any:
    with session() as s:
        sign_out(s, g.web_cookie)
    response = redirect("/signin", 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure())
    return response
