"""The dashboard: server-rendered pages over the same services as the API (controller.api), on the same port.

Pages are Jinja2 templates that read without JavaScript; the scripts in static/ only make them live (the API's
streams, followed with the session cookie) and never carry the data themselves. A browser signs in by pasting an
API token once (services.web_sessions); every form that changes something carries the session's CSRF token. The
Content-Security-Policy allows no inline script or style at all.
"""

from __future__ import annotations

from flask import Blueprint, Flask, g
from jinja2 import StrictUndefined
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from controller.errors import ApiError
from controller.scanlib import SCAN_TYPES
from controller.schemas.types import JOB_STATUSES
from controller.web import admin, automation, fleet, jobs, overview, scans, signin
from controller.web.format import FILTERS
from controller.web.gate import admit, api_error, can, csrf_field, http_error, server_error, unavailable
from controller.web.pages import SECTIONS

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
for _module in (signin, overview, scans, jobs, fleet, automation, admin):
    bp.register_blueprint(_module.bp)
bp.before_request(admit)
bp.register_error_handler(ApiError, api_error)
bp.register_error_handler(HTTPException, http_error)
bp.register_error_handler(OperationalError, unavailable)
bp.register_error_handler(Exception, server_error)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.filters.update(FILTERS)
    app.jinja_env.globals.update(
        csrf=csrf_field,
        can=can,
        SECTIONS=SECTIONS,
        JOB_STATUSES=JOB_STATUSES,
        rendered_at=lambda: g.get("rendered_at", ""),  # before the page's queries: jobs created since are new to it
        SCAN_TYPES={tool: list(types) for tool, types in SCAN_TYPES.items()},  # the forms' tools and their types
    )
    app.jinja_env.undefined = StrictUndefined  # a misspelt name in a template fails its test, not silently blank
