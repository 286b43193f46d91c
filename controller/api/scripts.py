"""The standalone agent scripts (scripts/<os>/), served read-only for hosts installed by hand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, send_file

from controller.api.auth import requires
from controller.api.body import doc
from controller.api.context import config
from controller.errors import NotFound, ValidationError
from controller.schemas.system import SCRIPT_DIRS as OS_DIRS
from controller.schemas.system import ScriptList

bp = Blueprint("scripts", __name__)
FILE_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # no "..": never a way out of scripts/<os>/


def _root() -> Path:
    return (Path(config().PROJECT_DIR) / "scripts").resolve()


@bp.get("/scripts")
@requires("viewer")
@doc("list_scripts", "scripts", "The standalone agent scripts", {200: ScriptList})
def list_scripts() -> Any:
    root = _root()
    return jsonify(
        {os_dir: sorted(p.name for p in (root / os_dir).iterdir() if p.is_file()) for os_dir in OS_DIRS if (root / os_dir).is_dir()}
    )


@bp.get("/scripts/<os_dir>/<name>")
@requires("viewer")
@doc(
    "get_script",
    "scripts",
    "Download an agent script",
    {200: ("The script, as an attachment.", {"text/plain": {"schema": {"type": "string"}}})},
    errors={400: "os_dir or name is not valid.", 404: "No such script."},
    path={"os_dir": {"type": "string", "enum": list(OS_DIRS)}, "name": {"type": "string", "pattern": FILE_NAME.pattern}},
)
def get_script(os_dir: str, name: str) -> Any:
    if os_dir not in OS_DIRS:
        raise ValidationError(f"os must be one of: {', '.join(OS_DIRS)}", field="os")
    if not FILE_NAME.fullmatch(name):
        raise ValidationError("name must be a plain file name", field="name")
    root = _root()
    path = (root / os_dir / name).resolve()
    # Refuse anything that resolves outside scripts/<os>/ (symlinks included).
    if path.parent != root / os_dir or not path.is_file():
        raise NotFound(f"no script {os_dir}/{name}")
    return send_file(path, mimetype="text/plain", as_attachment=True, download_name=name, max_age=0)
