"""Schedules and webhooks pages (being written)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from controller.api.auth import requires
from controller.web.pages import page

bp = Blueprint("automation", __name__)


@bp.get("/schedules")
@requires("viewer")
def schedules() -> Any:
    return page("error.html", "schedules", 501, status=501, message="not written yet")


@bp.get("/webhooks")
@requires("viewer")
def webhooks() -> Any:
    return page("error.html", "webhooks", 501, status=501, message="not written yet")
