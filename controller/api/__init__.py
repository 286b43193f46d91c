"""The HTTP API: blueprints, and the one place every request passes through.

Every request is given a request id (here), authenticated and authorised for the view's role (auth) before its
view runs, its body and query string validated into the view's models (body), and written to the audit log
after it if it changes anything (audit); every error is JSON (errors); CORS only for the configured origins (cors).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from flask import Flask, g, request

from controller.api import (
    admin,
    assets,
    audit,
    auth,
    cors,
    coverage,
    deployments,
    errors,
    exports,
    imports,
    jobs,
    metrics,
    openapi,
    scans,
    schedules,
    scripts,
    streams,
    system,
    webhooks,
)
from controller.api.auth import PUBLIC, requires
from controller.api.body import json_object
from controller.api.context import config, db, executor, principal, session
from controller.principal import Principal
from controller.services.metrics import observe_request

MUTATING = ("POST", "PUT", "PATCH", "DELETE")
METHODS = frozenset(("GET", "HEAD", "OPTIONS", *MUTATING))
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
BLUEPRINTS = (system, scans, exports, imports, assets, coverage, jobs, streams, deployments, schedules, webhooks, scripts, admin, openapi)
log = logging.getLogger("cloudx.api")


def init_app(app: Flask) -> None:
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp, url_prefix="/api")
    app.register_blueprint(metrics.bp)  # /metrics, where Prometheus looks by default
    denials = audit.AnonymousDenials()
    app.before_request(begin)
    cors.init_app(app)  # the preflight is answered before authentication
    app.before_request(auth.authorize)
    errors.init_app(app)

    @app.after_request
    def finish(response: Any) -> Any:
        headers(response)
        principal: Principal | None = g.get("principal")
        access_log(response, principal)
        # The route, never the path, and only the methods HTTP defines: a client cannot make new series.
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in METHODS else "other"
        observe_request(method, rule, response.status_code, time.perf_counter() - g.get("started", time.perf_counter()))
        if request.method in MUTATING:
            audit.record(db(), denials, response, principal)
        return response


def begin() -> None:
    g.started = time.perf_counter()
    # The server's id is always its own (unique in the audit log); the client's is kept beside it.
    given = request.headers.get("X-Request-ID", "")
    g.request_id = uuid.uuid4().hex
    g.client_request_id = given if REQUEST_ID.fullmatch(given) else None
    g.principal = None


def headers(response: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value  # also over send_file's own caching headers
    # The dashboard's pages load their own scripts and styles (controller.web), and may keep them revalidated.
    if g.get("content_security_policy"):
        response.headers["Content-Security-Policy"] = g.content_security_policy
        if request.endpoint == "web.static":
            response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Request-ID"] = g.get("request_id", "")
    if g.get("client_request_id"):
        response.headers["X-Client-Request-ID"] = g.client_request_id


def access_log(response: Any, principal: Principal | None) -> None:
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


__all__ = ["PUBLIC", "config", "db", "executor", "json_object", "principal", "requires", "session"]
