"""Engine and sessions; the schema is created and upgraded by Alembic migrations."""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("cloudx.db")
# Bound parameters per SQLite statement (SQLITE_MAX_VARIABLE_NUMBER is 32766 since SQLite 3.32).
SQLITE_MAX_VARIABLES = 32766
# A batch is retried when its commit fails with a dropped connection, which may have committed after all: rows
# already there (same unique key) are skipped, not an error that would end the job.
IGNORE_DUPLICATES = " ON CONFLICT DO NOTHING"
T = TypeVar("T")


def make_engine(url: str, busy_timeout: float = 30) -> Engine:
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        # Several processes write (API, dispatcher, job workers): wait for the lock instead of failing.
        kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
        # Times come back in UTC whatever the server's time zone (code adding seconds to a time in a zone with
        # daylight saving would add wall-clock time).
        kwargs["connect_args"] = {"options": "-c timezone=UTC"}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # A new (empty) database gives deleted rows' space back (cloudx prune). Only there: on one that has tables
            # only VACUUM changes it, and setting it takes the write lock a running import or job may hold.
            if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
                cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.close()

    return engine


def transient(exc: BaseException) -> bool:
    """A database error that may pass: a lock held too long, a full disk, a dropped connection."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig).lower()
    return any(word in text for word in ("locked", "busy", "disk is full", "disk i/o", "connection", "terminating"))


def retrying(action: Callable[[], T], budget: float, what: str) -> T:
    """Run action, again on transient database errors, for up to budget seconds; then raise the last error."""
    deadline = time.monotonic() + budget
    delay = 0.1
    while True:
        try:
            return action()
        except OperationalError as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: %s; retrying in %.1f s", what, exc.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def insert_rows(connection: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], json: Sequence[str] = ()) -> None:
    """executemany straight to the driver, for bulk rows that are final (JSON columns as JSON text already).

    The ORM's per-row work costs more than SQLite's own for the controller's bulk paths (events, scan ports).
    """
    if not rows:
        return
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    if connection.dialect.name == "sqlite":
        # Many rows per statement: executemany would release and retake the GIL for every row, and a
        # thread that wants it back waits for the interpreter's switch interval each time.
        per_statement = max(1, SQLITE_MAX_VARIABLES // len(columns))
        group = "(" + ", ".join("?" for _ in columns) + ")"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            connection.exec_driver_sql(
                head + ", ".join([group] * len(chunk)) + IGNORE_DUPLICATES, tuple(itertools.chain.from_iterable(chunk))
            )
    else:  # psycopg: JSON text is cast where it lands
        values = ", ".join("%s::json" if c in json else "%s" for c in columns)
        connection.exec_driver_sql(f"{head}({values}){IGNORE_DUPLICATES}", rows)


class Database:
    def __init__(self, url: str, busy_timeout: float = 30) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (a database already there is checked with one query: every
        `cloudx` command and process starts here, and Alembic's own check cost 0.16 s of each)."""
        if self.revision() == head_revision():
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # The API and workers may start together on a new database: one of them migrates it.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7262)")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        """The migration the database is at (None: none yet)."""
        try:
            with self.engine.connect() as connection:
                return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except DBAPIError:  # no table yet
            return None

    def dispose(self) -> None:
        self.engine.dispose()


@functools.cache
def head_revision() -> str:
    """The newest migration: its file's name starts with its revision id, which is also the order (0001, 0002, ...);
    tests/test_distributed.py checks the two agree with Alembic's own head."""
    return max(path.name[:4] for path in (Path(__file__).parent / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
