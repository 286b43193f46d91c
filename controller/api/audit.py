"""The audit log of the API: one entry per mutating request, always written; unauthenticated denials bounded.

Anyone who reaches the port can send requests without a token. Each API process writes at most
ANONYMOUS_ROWS_PER_MINUTE entries for them a minute; the rest of that minute's are counted in one
aggregate entry (`count`), so a flood adds at most that many rows a minute, whatever its size.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import g, request
from sqlalchemy import update

from controller.principal import Principal
from controller.store.database import Database
from controller.store.models import AuditEntry

ANONYMOUS_ROWS_PER_MINUTE = 10
# Counts of the aggregate entry are written at most this often (a flood must not become a flood of writes).
AGGREGATE_FLUSH_SECONDS = 2.0
log = logging.getLogger("cloudx.api")


def text(value: Any, limit: int) -> str | None:
    """Text safe to store: lone surrogates and NUL (PostgreSQL refuses it in text) escaped, cut to `limit`."""
    if value is None:
        return None
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")[:limit]


def outcome_of(status: int) -> str:
    return "ok" if status < 400 else "denied" if status in (401, 403) else "refused" if status < 500 else "error"


class AnonymousDenials:
    """Per-process bound on the entries written for requests without a valid token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minute = -1
        self._written = 0
        self._aggregate: int | None = None
        self._creating = False
        self._pending = 0
        self._flushed_at = 0.0

    def admit(self, db: Database) -> bool:
        """True: write an entry of its own; False: counted in this minute's aggregate entry.
        The lock guards the counters only: database writes happen outside it (a locked database must not
        hold every unauthenticated request behind one)."""
        minute = int(time.time() // 60)
        with self._lock:
            flush = self._take(minute) if minute != self._minute else None
            if minute != self._minute:
                self._minute, self._written, self._aggregate, self._creating = minute, 0, None, False
            if self._written < ANONYMOUS_ROWS_PER_MINUTE:
                self._written += 1
                own = True
            else:
                own = False
                create = self._aggregate is None and not self._creating
                self._creating = self._creating or create
                if not create:
                    self._pending += 1
                    if flush is None and self._aggregate is not None and time.monotonic() - self._flushed_at >= AGGREGATE_FLUSH_SECONDS:
                        flush = self._take(minute)
        if flush is not None:
            self._write(db, *flush)
        if not own and create:
            self._create(db, minute)
        return own

    def _take(self, minute: int) -> tuple[int, int] | None:
        """The aggregate entry's pending count, handed over for writing (under the lock)."""
        self._flushed_at = time.monotonic()
        if self._aggregate is None or not self._pending:
            return None
        taken, self._pending = (self._aggregate, self._pending), 0
        return taken

    def _write(self, db: Database, entry_id: int, pending: int) -> None:
        try:
            with db.session() as session:
                session.execute(update(AuditEntry).where(AuditEntry.id == entry_id).values(count=AuditEntry.count + pending))
        except Exception:
            log.exception("could not add %d denials to audit entry %d", pending, entry_id)
            with self._lock:  # counted again with the next write, if it is still this minute's entry
                if self._aggregate == entry_id:
                    self._pending += pending

    def _create(self, db: Database, minute: int) -> None:
        entry_id = None
        try:
            with db.session() as session:
                entry = _entry(None, 401, "denied", "unauthenticated requests denied in this minute, counted here (aggregated)")
                entry.path, entry.method, entry.action = "*", "*", None
                session.add(entry)
                session.flush()
                entry_id = entry.id
        except Exception:
            log.exception("could not write the aggregate audit entry")
        with self._lock:
            if self._minute == minute:
                self._aggregate, self._creating = entry_id, False
                self._flushed_at = time.monotonic()


def _entry(principal: Principal | None, status: int, outcome: str, detail: str | None) -> AuditEntry:
    return AuditEntry(
        request_id=g.get("request_id"),
        client_request_id=g.get("client_request_id"),
        actor=principal.name if principal else "anonymous",
        role=principal.role if principal else None,
        remote_addr=text(request.remote_addr or "", 64) or None,
        method=request.method,
        path=text(request.path, 1024) or "",
        action=request.endpoint,
        status=status,
        outcome=outcome,
        detail=text(detail, 1000) or None,
    )


def record(db: Database, denials: AnonymousDenials, response: Any, principal: Principal | None) -> None:
    """Record a mutating request. The entry is always written (escaped, or without its detail if even that
    fails); a failure to record is logged and the response stands."""
    status = response.status_code
    outcome = outcome_of(status)
    job_id = g.get("audit_job_id")  # a dashboard form names the job it made or acted on (it answers with a redirect)
    if response.is_json and status < 400:
        body = response.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("job_id"), str):
            job_id = body["job_id"]
    try:
        # Requests of no one (no token, a dashboard form without a session or its CSRF token, a sign-out with no
        # session): their entries are bounded, whatever the answer.
        if principal is None and not denials.admit(db):
            return
        for detail in (g.get("error"), "(the error text could not be stored)"):
            try:
                with db.session() as session:
                    entry = _entry(principal, status, outcome, detail)
                    entry.job_id = job_id
                    session.add(entry)
                return
            except Exception:
                log.exception("%s could not write the audit entry; trying without its detail", g.get("request_id"))
    except Exception:  # the audit must not turn a done request into a failure
        log.exception("%s could not write the audit entry", g.get("request_id"))
