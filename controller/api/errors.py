"""Every error is JSON: the API's own, HTTP errors, an unavailable database, and anything unexpected."""

from __future__ import annotations

import errno
import logging
from typing import Any

from flask import Flask, current_app, g, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from controller.api.auth import Unauthorized
from controller.errors import ApiError, TooBusy

log = logging.getLogger("cloudx.api")


def api_error(exc: ApiError) -> Any:
    response = jsonify(exc.to_dict())
    if isinstance(exc, TooBusy):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        error = ', error="invalid_token"' if request.headers.get("Authorization") else ""
        response.headers["WWW-Authenticate"] = f'Bearer realm="cloudx"{error}'
    g.error = exc.message
    return response, exc.status


def http_error(exc: HTTPException) -> Any:
    messages = {413: f"request body larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"}
    g.error = messages.get(exc.code or 500, exc.description or exc.name)
    response = jsonify({"error": g.error})
    # Keep what the exception says beyond its body, such as Allow on a 405.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, exc.code


def database_unavailable(exc: OperationalError) -> Any:
    # Locked past the busy timeout, or out of disk: the transaction was rolled back, so nothing changed.
    log.error("%s database unavailable on %s %s: %s", g.get("request_id"), request.method, request.path, exc.orig)
    g.error = f"the database is unavailable ({str(exc.orig)[:120]}); nothing was changed, try again"
    response = jsonify({"error": g.error})
    response.headers["Retry-After"] = "5"
    return response, 503


def server_error(exc: Exception) -> Any:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        g.error = "the controller's disk is full; nothing was changed"
        log.error("%s %s on %s %s", g.get("request_id"), g.error, request.method, request.path)
        return jsonify({"error": g.error}), 503
    log.exception("%s unhandled error on %s %s", g.get("request_id"), request.method, request.path)
    g.error = "internal server error"
    return jsonify({"error": g.error, "request_id": g.get("request_id")}), 500


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, api_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(OperationalError, database_unavailable)
    app.register_error_handler(Exception, server_error)
