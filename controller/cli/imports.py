"""`cloudx import`: a scanner's output file becomes a scan record, as POST /api/imports makes it (one path:
controller.services.imports)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from controller.cli.context import Context, cli, record_audit
from controller.config import SettingsError
from controller.errors import ApiError
from controller.services.auth import cli_principal

ERROR = 2


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tool", metavar="nmap|masscan|zmap", help="The tool that wrote FILE (detected when not given).")
@click.option("--name", "filename", help="The source name the scan keeps (default: FILE's name).")
@click.option("--json", "as_json", is_flag=True, help="Print the imported scan as JSON (as POST /api/imports answers).")
@click.pass_context
def import_scan(click_ctx: click.Context, file: Path, tool: str | None, filename: str | None, as_json: bool) -> None:
    """Import FILE, the output of a scan run elsewhere (nmap XML, masscan JSON or output, zmap CSV), as a scan.
    Errors are one line and exit status 2 (a bad setting or an unreachable database too); nothing is stored then."""
    from controller.schemas.imports import Imported, ImportQuery
    from controller.services.imports import file_chunks
    from controller.services.imports import import_scan as store_import

    # The context is built here, not by pass_ctx, so that a bad setting (SettingsError, raised while it is built)
    # ends this command as its other errors do.
    try:
        ctx = click_ctx.ensure_object(Context)
    except SettingsError as exc:
        _fail(str(exc.code).removeprefix("cloudx: "))
    try:
        query = ImportQuery.parse({k: v for k, v in (("tool", tool), ("filename", filename)) if v is not None})
        with file.open("rb") as stream:
            imported = store_import(ctx.db, ctx.config, cli_principal().name, file_chunks(stream), query.filename or file.name, query.tool)
    except ApiError as exc:
        _audit_refusal(ctx, exc)
        _fail(exc.message)
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}")
    except _database_errors() as exc:
        _fail(f"cannot store the scan: {_first_line(exc)}")
    view = Imported.dump(imported)
    try:
        detail = f"{view['tool']} {view['scan_type']} {view['target']} from {view['source']}"
        record_audit(ctx, "import", 201, detail, job_id=view["job_id"])
    except SQLAlchemyError as exc:
        _fail(f"imported scan {view['job_id']}, but its audit entry could not be recorded: {_first_line(exc)}")
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    count = f"{view['hosts']} host{'' if view['hosts'] == 1 else 's'}"
    notes = (", truncated" if view["truncated"] else "") + ("" if view["status"] == "successful" else f", {view['status']}")
    click.echo(f"imported scan {view['job_id']}: {view['tool']} {view['scan_type']} {view['target']} from {view['source']}, {count}{notes}")


def _audit_refusal(ctx: Context, exc: ApiError) -> None:
    """Audit a refused import; a database that cannot take the entry does not hide the refusal's own message."""
    try:
        record_audit(ctx, "import", exc.status, exc.message)
    except _database_errors() as error:
        _fail(f"{exc.message} (not audited: {_first_line(error)})")


def _database_errors() -> tuple[type[Exception], ...]:
    """What reaching or upgrading the database raises (alembic: a schema newer than this code)."""
    from alembic.util.exc import CommandError

    return SQLAlchemyError, CommandError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(message: str) -> NoReturn:
    click.echo(f"cloudx import: {message}", err=True)
    sys.exit(ERROR)
