"""Admin pages (being written)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from controller.web.pages import page

bp = Blueprint("admin", __name__)


@bp.get("/admin/tokens")
def tokens() -> Any:
    return page("error.html", "tokens", 501, status=501, message="not written yet")


@bp.get("/admin/policy")
def policy() -> Any:
    return page("error.html", "policy", 501, status=501, message="not written yet")


@bp.get("/admin/audit")
def audit() -> Any:
    return page("error.html", "audit", 501, status=501, message="not written yet")
