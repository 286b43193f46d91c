"""The standalone agent scripts (scripts/<os>/), served read-only for hosts installed by hand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, send_file

from controller.api import config, requires
from controller.errors import NotFound, ValidationError

bp = Blueprint("scripts", __name__)
OS_DIRS = ("linux", "mac", "windows")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _root() -> Path:
    return (Path(config().PROJECT_DIR) / "scripts").resolve()


@bp.get("/scripts")
@requires("viewer")
def list_scripts() -> Any:
    root = _root()
    return jsonify(
        {os_dir: sorted(p.name for p in (root / os_dir).iterdir() if p.is_file()) for os_dir in OS_DIRS if (root / os_dir).is_dir()}
    )


@bp.get("/scripts/<os_dir>/<name>")
@requires("viewer")
def get_script(os_dir: str, name: str) -> Any:
    if os_dir not in OS_DIRS:
        raise ValidationError(f"os must be one of: {', '.join(OS_DIRS)}", field="os")
    if not FILE_NAME.fullmatch(name) or ".." in name:
        raise ValidationError("name must be a plain file name", field="name")
    root = _root()
    path = (root / os_dir / name).resolve()
    # Refuse anything that resolves outside scripts/<os>/ (symlinks included).
    if path.parent != root / os_dir or not path.is_file():
        raise NotFound(f"no script {os_dir}/{name}")
    return send_file(path, mimetype="text/plain", as_attachment=True, download_name=name, max_age=0)
