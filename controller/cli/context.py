"""What every command shares: the settings and database, the audit of changes, the `cloudx` group."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import ApiError
from controller.services.auth import cli_principal
from controller.store.database import Database
from controller.store.models import AuditEntry


class Context:
    def __init__(self) -> None:
        self.config = Config.from_env()
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.config.DATABASE_URL, self.config.DB_BUSY_TIMEOUT)
            self._db.upgrade()
        return self._db


pass_ctx = click.make_pass_decorator(Context, ensure=True)
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def record_audit(ctx: Context, command: str, status: int, detail: str | None = None, job_id: str | None = None) -> None:
    """Record a changing command in the audit log, as the API records its requests."""
    who = cli_principal()
    outcome = "ok" if status < 400 else "denied" if status in (401, 403) else "refused"
    with ctx.db.session() as session:
        session.add(
            AuditEntry(
                actor=who.name,
                role=who.role,
                method="CLI",
                path=f"cloudx {command}",
                action=command,
                status=status,
                outcome=outcome,
                job_id=job_id,
                detail=detail,
            )
        )


def refused(ctx: Context, command: str, exc: ApiError) -> click.ClickException:
    record_audit(ctx, command, exc.status, exc.message)
    return click.ClickException(exc.message)


T = TypeVar("T")


def audited_change(ctx: Context, command: str, change: Callable[[Session], T], status: int, detail: str) -> T:
    """Make a change in one transaction and audit it; a refused change is audited too and ends the command."""
    try:
        with ctx.db.session() as session:
            result = change(session)
    except ApiError as exc:
        raise refused(ctx, command, exc) from None
    record_audit(ctx, command, status, detail)
    return result


@click.group()
def cli() -> None:
    """Cloud-X playbooks controller."""
