"""`cloudx import`: a scanner's output file becomes a scan record, as POST /api/imports makes it (one path:
controller.services.imports)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from controller.cli.context import Context, cli, pass_ctx, record_audit
from controller.errors import ApiError
from controller.services.auth import cli_principal

ERROR = 2


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tool", metavar="nmap|masscan|zmap", help="The tool that wrote FILE (detected when not given).")
@click.option("--name", "filename", help="The source name the scan keeps (default: FILE's name).")
@click.option("--json", "as_json", is_flag=True, help="Print the imported scan as JSON (as POST /api/imports answers).")
@pass_ctx
def import_scan(ctx: Context, file: Path, tool: str | None, filename: str | None, as_json: bool) -> None:
    """Import FILE, the output of a scan run elsewhere (nmap XML, masscan JSON or output, zmap CSV), as a scan.
    Errors are one line and exit status 2; nothing is stored then."""
    from controller.schemas.imports import Imported, ImportQuery
    from controller.services.imports import file_chunks
    from controller.services.imports import import_scan as store_import

    try:
        query = ImportQuery.parse({k: v for k, v in (("tool", tool), ("filename", filename)) if v is not None})
        with file.open("rb") as stream:
            imported = store_import(ctx.db, ctx.config, cli_principal().name, file_chunks(stream), query.filename or file.name, query.tool)
    except ApiError as exc:
        record_audit(ctx, "import", exc.status, exc.message)
        _fail(exc.message)
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}")
    except SQLAlchemyError as exc:
        _fail(f"cannot store the scan: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    view = Imported.dump(imported)
    record_audit(ctx, "import", 201, f"{view['tool']} {view['scan_type']} {view['target']} from {view['source']}", job_id=view["job_id"])
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    count = f"{view['hosts']} host{'' if view['hosts'] == 1 else 's'}"
    notes = (", truncated" if view["truncated"] else "") + ("" if view["status"] == "successful" else f", {view['status']}")
    click.echo(f"imported scan {view['job_id']}: {view['tool']} {view['scan_type']} {view['target']} from {view['source']}, {count}{notes}")


def _fail(message: str) -> NoReturn:
    click.echo(f"cloudx import: {message}", err=True)
    sys.exit(ERROR)
