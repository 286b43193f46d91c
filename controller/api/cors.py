"""CORS with Flask-CORS, for the origins in CLOUDX_CORS_ORIGINS only.

Flask-CORS adds Access-Control-Allow-Origin (the origin itself), the exposed headers and `Vary: Origin` to
answers for an allowed origin. The preflight is answered here, before authentication: 204 for an allowed
origin, and a JSON 403 for any other (Flask-CORS alone would answer it without CORS headers).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_cors import CORS

METHODS = ["GET", "POST", "PUT", "DELETE"]
ALLOW_HEADERS = ["Authorization", "Content-Type", "X-Request-ID"]
EXPOSE_HEADERS = ["X-Request-ID", "Retry-After"]


def origins(setting: str) -> list[str]:
    return sorted({o.strip().rstrip("/") for o in setting.split(",") if o.strip()})


def _only_with_origin(app: Flask) -> None:
    """Flask-CORS's after-request hook costs about 40 µs a request (a fifth of GET /api/ping) even when there is no
    Origin header, for which it adds nothing (always_send off): only requests with one go through it."""
    hooks = app.after_request_funcs[None]
    cors_hook = hooks[-1]
    assert cors_hook.__name__ == "cors_after_request", cors_hook  # the one CORS(app) just registered

    def with_origin(response: Response) -> Response:
        return cors_hook(response) if "Origin" in request.headers else response

    hooks[-1] = with_origin


def init_app(app: Flask) -> None:
    allowed = origins(app.config["CORS_ORIGINS"])
    # Compiled, so that Flask-CORS matches exactly as the preflight below does: the whole origin, case and all,
    # trailing slashes aside. always_send off: a request without an Origin gets no CORS headers (they would
    # tell anyone the configured origins).
    patterns = [re.compile(re.escape(o) + r"/*\Z") for o in allowed]
    if allowed:
        CORS(
            app,
            origins=patterns,
            methods=METHODS,
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            max_age=600,
            vary_header=True,
            always_send=False,
        )
        _only_with_origin(app)

    def preflight() -> Any:
        origin = request.headers.get("Origin")
        if request.method != "OPTIONS" or not origin or not request.headers.get("Access-Control-Request-Method"):
            return None
        if origin.rstrip("/") not in allowed:
            return jsonify({"error": f"origin {origin[:200]!r} is not allowed (CLOUDX_CORS_ORIGINS)"}), 403
        response = current_app.response_class(status=204)
        if not request.headers.get("Access-Control-Request-Headers"):
            response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOW_HEADERS)
        return response

    app.before_request(preflight)
