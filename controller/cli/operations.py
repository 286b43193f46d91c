"""`cloudx heartbeat` and the database commands (`db upgrade`, `db status`)."""

from __future__ import annotations

import time

import click

from controller.cli.context import cli
from controller.config import Config
from controller.store.database import Database


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


cli.add_command(db_group)
