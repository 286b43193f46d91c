"""The HTTP API: blueprints, and the one place every request passes through.

Every request is given a request id, authenticated (bearer token) and authorised (the view's role)
before its view runs; every mutating request is written to the audit log after it.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from controller.config import Config
from controller.errors import ApiError, TooBusy, ValidationError
from controller.principal import ROLES, Principal
from controller.queue.local import Executor
from controller.services.auth import authenticate, record_use
from controller.store.database import Database

PUBLIC = "public"
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
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


class Unauthorized(ApiError):
    status = 401


def init_app(app: Flask) -> None:
    from controller.api import admin, audit, deployments, jobs, openapi, scans, scripts, system

    for module in (system, scans, jobs, deployments, scripts, admin, openapi):
        app.register_blueprint(module.bp, url_prefix="/api")
    denials = audit.AnonymousDenials()
    cors_origins = {o.strip().rstrip("/") for o in app.config["CORS_ORIGINS"].split(",") if o.strip()}

    @app.before_request
    def gate() -> Any:
        g.started = time.perf_counter()
        # The server's id is always its own (unique in the audit log); the client's is kept beside it.
        given = request.headers.get("X-Request-ID", "")
        g.request_id = uuid.uuid4().hex
        g.client_request_id = given if REQUEST_ID.fullmatch(given) else None
        g.principal = None
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin and request.headers.get("Access-Control-Request-Method"):
            if origin.rstrip("/") not in cors_origins:
                return jsonify({"error": f"origin {origin[:200]!r} is not allowed (CLOUDX_CORS_ORIGINS)"}), 403
            response = current_app.response_class(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-ID"
            response.headers["Access-Control-Max-Age"] = "600"
            return response
        view = current_app.view_functions.get(request.endpoint or "")
        role = getattr(view, "_cloudx_role", "admin") if view is not None else "viewer"
        if role == PUBLIC:
            return None
        g.principal = _authenticate()
        if not g.principal.has(role):
            raise ApiError(f"this needs the {role} role; token {g.principal.name!r} has {g.principal.role}", status=403)
        return None

    @app.after_request
    def finish(response: Any) -> Any:
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value  # also over send_file's own caching headers
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if g.get("client_request_id"):
            response.headers["X-Client-Request-ID"] = g.client_request_id
        origin = request.headers.get("Origin")
        if origin and origin.rstrip("/") in cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"
            response.headers.add("Vary", "Origin")
        principal: Principal | None = g.get("principal")
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info(
            "%s%s %s %s %r %d %.1fms",  # the path quoted: a decoded %0a must not start a forged log line
            g.get("request_id"),
            f" ({g.client_request_id})" if g.get("client_request_id") else "",
            principal.name if principal else "-",
            request.method,
            request.path,
            response.status_code,
            elapsed,
        )
        if request.method in MUTATING:
            audit.record(db(), denials, response, principal)
        return response

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        response = jsonify(exc.to_dict())
        if isinstance(exc, TooBusy):
            response.headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthorized):
            error = ', error="invalid_token"' if request.headers.get("Authorization") else ""
            response.headers["WWW-Authenticate"] = f'Bearer realm="cloudx"{error}'
        g.error = exc.message
        return response, exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        messages = {413: f"request body larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"}
        g.error = messages.get(exc.code or 500, exc.description or exc.name)
        response = jsonify({"error": g.error})
        # Keep what the exception says beyond its body, such as Allow on a 405.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, exc.code

    @app.errorhandler(OperationalError)
    def database_unavailable(exc: OperationalError) -> Any:
        # Locked past the busy timeout, or out of disk: the transaction was rolled back, so nothing changed.
        log.error("%s database unavailable on %s %s: %s", g.get("request_id"), request.method, request.path, exc.orig)
        g.error = f"the database is unavailable ({str(exc.orig)[:120]}); nothing was changed, try again"
        response = jsonify({"error": g.error})
        response.headers["Retry-After"] = "5"
        return response, 503

    @app.errorhandler(Exception)
    def server_error(exc: Exception) -> Any:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            g.error = "the controller's disk is full; nothing was changed"
            log.error("%s %s on %s %s", g.get("request_id"), g.error, request.method, request.path)
            return jsonify({"error": g.error}), 503
        log.exception("%s unhandled error on %s %s", g.get("request_id"), request.method, request.path)
        g.error = "internal server error"
        return jsonify({"error": g.error, "request_id": g.get("request_id")}), 500


def _authenticate() -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header:
        raise Unauthorized("authentication required: send Authorization: Bearer <token> (cloudx token create)")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
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


def config() -> Config:
    return current_app.extensions["cloudx.config"]


def db() -> Database:
    return current_app.extensions["cloudx.db"]


def executor() -> Executor:
    return current_app.extensions["cloudx.executor"]


def principal() -> Principal:
    """The caller of this request (set by the gate)."""
    return g.principal


def session() -> Any:
    """A request's database session, committed when the block ends without error."""
    return db().session()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers could read a duplicated key differently; refuse it instead of picking one.
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate[:64]!r}")
    return body


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be one object of strict JSON (no NaN, no duplicate keys)."""
    if not request.is_json:
        raise ValidationError("send a JSON object with Content-Type: application/json", field="body")
    try:
        body = json.loads(request.get_data(cache=True), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValidationError("the request body is nested too deeply", field="body") from None
    except ValueError as exc:
        raise ValidationError(f"the request body is not valid JSON: {str(exc)[:200]}", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", field="body")
    return body


__all__ = ["PUBLIC", "config", "db", "executor", "json_object", "principal", "requires", "session"]
