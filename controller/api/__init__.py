"""The HTTP API: blueprints, JSON errors, and the one place every request passes through."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from controller.config import Config
from controller.db import Database
from controller.errors import ApiError, ValidationError
from controller.executor import Executor


def init_app(app: Flask) -> None:
    from controller.api import deployments, jobs, scans, scripts, system

    for module in (system, scans, jobs, deployments, scripts):
        app.register_blueprint(module.bp, url_prefix="/api")

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        return jsonify(exc.to_dict()), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        messages = {413: f"request body larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"}
        return jsonify({"error": messages.get(exc.code or 500, exc.description or exc.name)}), exc.code

    @app.errorhandler(Exception)
    def server_error(exc: Exception) -> Any:
        current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify({"error": "internal server error"}), 500

    @app.after_request
    def no_store(response: Any) -> Any:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


def config() -> Config:
    return current_app.extensions["cloudx.config"]


def db() -> Database:
    return current_app.extensions["cloudx.db"]


def executor() -> Executor:
    return current_app.extensions["cloudx.executor"]


def session() -> Any:
    """A request's database session, committed when the block ends without error."""
    return db().session()


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    if not request.is_json:
        raise ValidationError("send a JSON object with Content-Type: application/json", field="body")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", field="body")
    return body


__all__ = ["config", "db", "executor", "json_object", "session"]
