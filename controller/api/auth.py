"""Who calls: the bearer token becomes a principal, checked against the role each view declares (@requires)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy.exc import OperationalError

from controller.api.context import config, session
from controller.errors import ApiError
from controller.principal import ROLES, Principal
from controller.services.auth import authenticate, record_use
from controller.services.web_sessions import COOKIE, session_principal

PUBLIC = "public"
log = logging.getLogger("cloudx.api")
View = TypeVar("View", bound=Callable[..., Any])


def requires(role: str) -> Callable[[View], View]:
    """The least role that may call a view ("public": no token). Views without one need admin."""
    if role != PUBLIC and role not in ROLES:
        raise ValueError(role)

    def mark(view: View) -> View:
        view._cloudx_role = role  # type: ignore[attr-defined]
        return view

    return mark


def role_of(view: Any) -> str:
    return getattr(view, "_cloudx_role", "admin")


class Unauthorized(ApiError):
    status = 401


def authorize() -> None:
    """Before a view: its role, and the caller's token when it is not public (the dashboard has its own gate)."""
    if (request.blueprint or "").partition(".")[0] == "web":
        return
    view = current_app.view_functions.get(request.endpoint or "")
    role = role_of(view) if view is not None else "viewer"
    if role == PUBLIC:
        return
    g.principal = authenticated()
    if not g.principal.has(role):
        raise ApiError(f"this needs the {role} role; token {g.principal.name!r} has {g.principal.role}", status=403)


def secure_request() -> bool:
    """Whether this request came over HTTPS (behind a proxy named in CLOUDX_TRUSTED_PROXY, as it says), or cookies are
    to be Secure anyway (CLOUDX_WEB_SECURE_COOKIES=always)."""
    return request.is_secure or config().WEB_SECURE_COOKIES == "always"


def cookie_name(base: str) -> str:
    """A dashboard cookie's name: with the __Host- prefix when Secure, which a browser accepts only from this host,
    over TLS, for the whole site: a sibling subdomain cannot plant a session or a pre-session cookie."""
    return f"__Host-{base}" if secure_request() else base


def authenticated() -> Principal:
    """The bearer token's principal; for reads without one, a dashboard session's (its pages follow streams and
    download exports with the session cookie). Changes always need the bearer token: no CSRF on the API."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header:
        cookie = request.cookies.get(cookie_name(COOKIE))
        if not cookie or request.method not in ("GET", "HEAD"):
            raise Unauthorized("authentication required: send Authorization: Bearer <token> (cloudx token create)")
        with session() as s:
            principal = session_principal(s, cookie)
        if principal is None:
            raise Unauthorized("the dashboard session has ended: sign in again")
        g.session_cookie = cookie  # a stream it opens ends when the session does
    elif scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    else:
        with session() as s:
            principal = authenticate(s, presented.strip())
        if principal is None:
            raise Unauthorized("the token is not valid or was revoked")
    if principal.stale_use:
        # Best effort: a locked database must not turn a read into an error.
        try:
            with session() as s:
                record_use(s, principal.token_id)  # type: ignore[arg-type]
        except OperationalError as exc:
            log.warning("%s could not record the use of token %s: %s", g.get("request_id"), principal.name, exc.orig)
    return principal
