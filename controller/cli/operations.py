"""`cloudx heartbeat`, `cloudx prune` and the database commands (`db upgrade`, `db status`, `db backup`)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from controller.cli.context import Context, cli, pass_ctx, record_audit
from controller.config import Config
from controller.store.database import Database

if TYPE_CHECKING:
    from controller.services.retention import PruneReport


@cli.command()
@click.option("--file", "path", help="Heartbeat file (default CLOUDX_SYNC_HEARTBEAT_FILE or sync_heartbeat.json).")
@click.option("--interval", type=click.IntRange(min=1), help="Keep writing every N seconds.")
@click.option("--source", default="cloudx heartbeat", show_default=True, help="Recorded as 'source'.")
def heartbeat(path: str | None, interval: int | None, source: str) -> None:
    """Write the sync heartbeat that /api/sync-status reads."""
    from controller.services.heartbeat import write_heartbeat

    target = path or Config.from_env().SYNC_HEARTBEAT_FILE
    while True:
        try:
            data = write_heartbeat(target, source=source)
        except OSError as exc:
            raise click.ClickException(f"cannot write {target}: {exc.strerror}") from None
        click.echo(f"{target}: {data['timestamp']}", err=True)
        if interval is None:
            return
        time.sleep(interval)


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (done automatically by serve and scan too)."""
    config = Config.from_env()
    Database(config.DATABASE_URL).upgrade()
    click.echo(f"database at {config.database_shown} is up to date", err=True)


@db_group.command("status")
def db_status() -> None:
    """Print the current migration revision."""
    from sqlalchemy import text

    config = Config.from_env()
    database = Database(config.DATABASE_URL)
    with database.session() as session:
        click.echo(session.scalar(text("SELECT version_num FROM alembic_version")) or "empty")


@db_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def db_backup(file: Path, force: bool) -> None:
    """Copy the SQLite database to FILE while jobs run (SQLite's online backup) and check the copy.

    The database is not migrated first: a backup taken before an upgrade holds the schema it had."""
    from controller.errors import ApiError
    from controller.services.retention import backup_sqlite, human_bytes

    config = Config.from_env()
    try:
        result = backup_sqlite(config.DATABASE_URL, file, config.DB_BUSY_TIMEOUT, force=force)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{result.path}: {human_bytes(result.bytes)}, {result.events} events, integrity {result.integrity}")


@cli.command()
@click.option("--older-than", help="Prune jobs finished longer ago than this: 30d, 12h, 90m, 3600s (default: CLOUDX_RETENTION_DAYS days).")
@click.option("--scans", is_flag=True, help="Also remove the old jobs' scans: their hosts and ports (assets keep their own state).")
@click.option("--dry-run", is_flag=True, help="Print what would be removed and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option(
    "--vacuum", is_flag=True, help="Turn incremental vacuum on for a database made without it (a one-time VACUUM, while no job runs)."
)
@pass_ctx
def prune(ctx: Context, older_than: str | None, scans: bool, dry_run: bool, as_json: bool, vacuum: bool) -> None:
    """Remove the events and artifact folders of jobs finished long ago (never of queued or running ones), then give
    SQLite's free space back. Job rows and host summaries stay."""
    from sqlalchemy.exc import SQLAlchemyError

    from controller.errors import ApiError
    from controller.services import retention

    try:
        age = retention.parse_age(older_than, "--older-than") if older_than else _retention_age(ctx)
        # The one-time VACUUM holds the write lock while it rewrites the file: only when asked for.
        report = retention.prune(ctx.db, ctx.config, age, scans=scans, dry_run=dry_run, convert_max_bytes=None if vacuum else 0)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {getattr(exc, 'orig', None) or exc}") from None
    if not dry_run:
        record_audit(ctx, "prune", 200, retention.summary(report))
    _print_prune(report, as_json)
    if report.errors:
        raise click.ClickException(f"{len(report.errors)} artifact entries could not be removed")


def _retention_age(ctx: Context) -> timedelta:
    if ctx.config.RETENTION_DAYS <= 0:
        raise click.ClickException("CLOUDX_RETENTION_DAYS is 0 (no retention): give --older-than")
    return timedelta(days=ctx.config.RETENTION_DAYS)


def _print_prune(report: PruneReport, as_json: bool) -> None:
    from controller.services.retention import human_bytes

    for error in report.errors:
        click.echo(f"cloudx prune: cannot remove {error}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    done = "would be removed" if report.dry_run else "removed"
    click.echo(f"events: {report.events} {done} (of {report.event_jobs} jobs finished before {report.as_dict()['cutoff']})")
    size = human_bytes(report.artifact_bytes) + (f", {report.artifact_bytes} bytes" if report.artifact_bytes >= 1024 else "")
    click.echo(f"artifact folders: {report.artifact_folders} {done} ({size})")
    click.echo(f"scans: {report.scans} {done}" if report.scans_included else "scans: 0 (kept: --scans removes the old ones)")
    click.echo(f"webhook events delivered or given up: {report.webhook_events} {done}")
    if not report.dry_run:
        click.echo(f"dashboard sessions ended or expired: {report.web_sessions} deleted")
    vacuum = report.vacuum
    if vacuum is not None:
        if vacuum.converted:
            click.echo("cloudx prune: the database was converted to incremental vacuum (a one-time VACUUM)", err=True)
        if vacuum.note:
            click.echo(f"cloudx prune: {vacuum.note}", err=True)
        if vacuum.mode != "none":
            click.echo(f"database space given back: {human_bytes(vacuum.freed_bytes)}")


cli.add_command(db_group)
