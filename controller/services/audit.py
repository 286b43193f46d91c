"""The audit log as it is read: pages of entries, newest first (controller.api.audit writes them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store.models import AuditEntry


def audit_page(session: Session, limit: int, before: int | None) -> tuple[list[AuditEntry], int | None]:
    """Entries newest first, with ids below `before`; and the `before` of the next page."""
    statement = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if before is not None:
        statement = statement.where(AuditEntry.id < before)
    rows = list(session.scalars(statement))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)
