"""Retention and backups: the events and artifact folders of jobs finished long ago are pruned (`cloudx prune`, and
the `Pruner` thread of each `cloudx serve` process), SQLite gives the space back (incremental vacuum), and a
SQLite database is copied while jobs write to it (SQLite's online backup).

Job rows and their per-host summaries stay: they are small, and a job's history (status, timings, who asked,
the recap) is what an old job is looked up for. Scans (hosts and ports) and assets stay unless asked (`scans`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import ColumnElement, Delete, and_, delete, exists, func, select
from sqlalchemy.engine import make_url

from controller.config import Config
from controller.errors import ApiError, Conflict, NotFound, ValidationError
from controller.services.background import Periodic
from controller.services.web_sessions import prune_sessions
from controller.store.database import Database
from controller.store.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    AssetScan,
    Job,
    JobEvent,
    Scan,
    ScanHost,
    ScanPort,
    WebhookDelivery,
    WebhookOutbox,
    utcnow,
)

log = logging.getLogger("cloudx.retention")

# Rows per delete transaction: short enough that job workers writing their events wait milliseconds for the lock.
BATCH_ROWS = 5000
# A pause between two batches, so that a writer waiting on SQLite's busy handler gets the lock in between.
BATCH_PAUSE = 0.02
# Pages given back per incremental vacuum transaction (8 MiB of 4 KiB pages).
VACUUM_PAGES = 2000
# The Pruner converts a database to incremental vacuum by itself (a VACUUM, which rewrites the whole file and holds
# the write lock meanwhile) only up to this size: a new database; a larger one waits for `cloudx prune`.
AUTO_CONVERT_MAX_BYTES = 64 * 1024 * 1024
# The first automatic prune comes this soon after start (at most): a controller restarted often still prunes.
FIRST_PRUNE_AFTER = 60.0
# Artifact folders are named by their job's id (controller.runner.worker.job_dir); others (.cleanup, .imports) are not jobs'.
JOB_FOLDER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What a scan job's folder keeps while its scan is kept: the scanner's raw output and parsed files (GET /raw).
SCAN_RESULTS = "results"
AGE = re.compile(r"(\d+)\s*([smhd]?)")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 86400}
AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}
MAX_AGE_DAYS = 36500
# A folder of no job is removed only this old, whatever the cutoff: an import writes its folder before its job's row
# is committed.
ORPHAN_MIN_AGE = 3600
# Webhook events delivered or given up, and their delivery log, are kept as long as events are.
DONE_OUTBOX = ("delivered", "failed")


def parse_age(value: str, field_name: str = "older_than") -> timedelta:
    """'30d', '12h', '90m', '3600s' (a bare number is days) as an age."""
    match = AGE.fullmatch(value.strip())
    if match is None:
        raise ValidationError(f"{field_name} must be an age such as 30d, 12h, 90m or 3600s", field=field_name)
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds > MAX_AGE_DAYS * 86400:
        raise ValidationError(f"{field_name} must be at most {MAX_AGE_DAYS} days", field=field_name)
    return timedelta(seconds=seconds)


@dataclass
class Vacuum:
    """How SQLite gave space back: `mode` is its auto_vacuum after the prune (none on PostgreSQL, whose own
    autovacuum reuses the space); `converted` when this prune turned incremental vacuum on (a one-time VACUUM)."""

    mode: str
    converted: bool = False
    freed_bytes: int = 0
    note: str | None = None


@dataclass
class PruneReport:
    cutoff: datetime
    dry_run: bool
    scans_included: bool
    events: int = 0
    event_jobs: int = 0
    artifact_folders: int = 0
    artifact_bytes: int = 0
    scans: int = 0
    webhook_events: int = 0
    web_sessions: int = 0
    vacuum: Vacuum | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.events or self.artifact_folders or self.scans or self.webhook_events or self.web_sessions)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cutoff"] = self.cutoff.isoformat().replace("+00:00", "Z")
        return data


def old_job(cutoff: datetime) -> ColumnElement[bool]:
    """A job that ended before the cutoff: final statuses only, never a queued or running one."""
    return and_(Job.status.in_(FINAL_STATUSES), Job.finished_at.is_not(None), Job.finished_at < cutoff)


def prune(
    db: Database,
    config: Config,
    older_than: timedelta,
    *,
    scans: bool = False,
    dry_run: bool = False,
    convert_max_bytes: int | None = None,
    now: datetime | None = None,
) -> PruneReport:
    """Remove the events and artifact folders of jobs finished more than `older_than` ago (with `scans`, their scans'
    results too), then give SQLite's free pages back. Every step is idempotent: two prunes at once do no harm.
    `convert_max_bytes`: the largest database this prune converts to incremental vacuum (None: any; 0: none)."""
    report = PruneReport(cutoff=(now or utcnow()) - older_than, dry_run=dry_run, scans_included=scans)
    _prune_events(db, report)
    _prune_webhook_log(db, report)
    if not dry_run:  # dashboard sign-ins that can no longer be used, whatever the retention
        with db.session() as session:
            report.web_sessions = prune_sessions(session)
    if scans:
        _prune_scans(db, report)
    _prune_artifacts(db, config, report)
    if not dry_run:
        report.vacuum = give_space_back(db, convert_max_bytes)
    return report


# --- events ---------------------------------------------------------------------------------------------------------


def _prune_webhook_log(db: Database, report: PruneReport) -> None:
    """Webhook events delivered or given up before the cutoff, with their attempts (deleted with them: ON DELETE
    CASCADE). Pending ones stay, whatever their age."""
    done = and_(WebhookOutbox.status.in_(DONE_OUTBOX), WebhookOutbox.finished_at.is_not(None), WebhookOutbox.finished_at < report.cutoff)
    if report.dry_run:
        with db.session() as session:
            report.webhook_events = session.scalar(select(func.count()).select_from(WebhookOutbox).where(done)) or 0
        return

    def batch() -> Delete:
        chosen = select(WebhookOutbox.id).where(done).limit(BATCH_ROWS).scalar_subquery()
        return delete(WebhookOutbox).where(WebhookOutbox.id.in_(chosen))

    with db.session() as session:  # the attempts first: a database without foreign keys on must lose none of them
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.outbox_id.in_(select(WebhookOutbox.id).where(done))))
    report.webhook_events = _delete_in_batches(db, batch)


def _prune_events(db: Database, report: PruneReport) -> None:
    with db.session() as session:
        jobs = list(session.scalars(select(Job.id).where(old_job(report.cutoff), exists().where(JobEvent.job_id == Job.id))))
    report.event_jobs = len(jobs)
    for job_id in jobs:
        if report.dry_run:
            with db.session() as session:
                report.events += session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)) or 0
            continue
        # The job's condition again in the statement itself: a job is never touched unless it is final and old.
        still_old = select(Job.id).where(Job.id == job_id, old_job(report.cutoff))
        report.events += _delete_in_batches(
            db,
            lambda job_id=job_id, still_old=still_old: delete(JobEvent).where(
                JobEvent.id.in_(select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.job_id.in_(still_old)).limit(BATCH_ROWS))
            ),
        )


def _delete_in_batches(db: Database, statement: Callable[[], Delete]) -> int:
    """Run a delete of at most BATCH_ROWS rows, each in its own short transaction, until it deletes fewer."""
    total = 0
    while True:
        with db.engine.begin() as connection:
            deleted = connection.execute(statement()).rowcount
        total += deleted
        if deleted < BATCH_ROWS:
            return total
        time.sleep(BATCH_PAUSE)


# --- scans ----------------------------------------------------------------------------------------------------------


def _prune_scans(db: Database, report: PruneReport) -> None:
    """The old scans and their results: hosts and ports, and the links assets keep to them (asset_scans). The assets
    keep their own state (addresses, names, ports now, first and last seen) and their port history, whose changes then
    name no scan (scan_id SET NULL, as last_scan_id)."""
    with db.session() as session:
        scan_ids = list(session.scalars(select(Scan.id).join(Job, Job.id == Scan.job_id).where(old_job(report.cutoff))))
    report.scans = len(scan_ids)
    if report.dry_run:
        return
    for scan_id in scan_ids:
        # Ports, hosts and asset links in batches first: a /16 scan is millions of rows, too many for one transaction.
        hosts = select(ScanHost.id).where(ScanHost.scan_id == scan_id)
        _delete_in_batches(
            db,
            lambda hosts=hosts: delete(ScanPort).where(
                ScanPort.id.in_(select(ScanPort.id).where(ScanPort.host_id.in_(hosts)).limit(BATCH_ROWS))
            ),
        )
        _delete_in_batches(db, lambda hosts=hosts: delete(ScanHost).where(ScanHost.id.in_(hosts.limit(BATCH_ROWS))))
        linked = select(AssetScan.asset_id).where(AssetScan.scan_id == scan_id)
        _delete_in_batches(
            db,
            lambda scan_id=scan_id, linked=linked: delete(AssetScan).where(
                AssetScan.scan_id == scan_id, AssetScan.asset_id.in_(linked.limit(BATCH_ROWS))
            ),
        )
        with db.engine.begin() as connection:
            connection.execute(delete(Scan).where(Scan.id == scan_id))


# --- artifact folders -----------------------------------------------------------------------------------------------


@dataclass
class Folder:
    path: Path
    keep: tuple[str, ...] = ()  # names of entries left in place


def _prune_artifacts(db: Database, config: Config, report: PruneReport) -> None:
    """ansible-runner's private data dir of each old job (and a folder whose job is gone, once it is as old)."""
    root = Path(config.ARTIFACTS_DIR).resolve()
    folders = {
        entry.name: Path(entry.path) for entry in _scandir(root) if JOB_FOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
    }
    for folder in _folders_to_prune(db, folders, report):
        removed = _remove(folder, report.dry_run, report.errors)
        if removed is not None:
            report.artifact_folders += 1
            report.artifact_bytes += removed


def _scandir(root: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(root) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _folders_to_prune(db: Database, folders: dict[str, Path], report: PruneReport) -> list[Folder]:
    chosen: list[Folder] = []
    names = sorted(folders)
    cutoff = report.cutoff.timestamp()
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        with db.session() as session:
            known = set(session.scalars(select(Job.id).where(Job.id.in_(chunk))))
            old = set(session.scalars(select(Job.id).where(Job.id.in_(chunk), old_job(report.cutoff))))
            # A scan kept keeps its raw output (results/); with --scans (dry run too) the whole folder goes.
            scanned = set(session.scalars(select(Scan.job_id).where(Scan.job_id.in_(old)))) if old and not report.scans_included else set()
        for name in chunk:
            if name in old:
                chosen.append(Folder(folders[name], (SCAN_RESULTS,) if name in scanned else ()))
            elif name not in known and _mtime(folders[name]) < min(cutoff, time.time() - ORPHAN_MIN_AGE):
                # No job of this database (deleted, or a database restored from an older backup): as old as the cutoff,
                # it belongs to no active job (a job's folder is made after its row, and is written while it runs).
                chosen.append(Folder(folders[name]))
    return chosen


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return float("inf")


def _remove(folder: Folder, dry_run: bool, errors: list[str]) -> int | None:
    """Remove the folder (or its entries but the kept ones); the bytes removed, None when there was nothing to remove."""
    if not folder.keep:
        entries = [folder.path]
    else:
        entries = [Path(e.path) for e in _scandir(folder.path) if e.name not in folder.keep]
        if not entries:
            return None
    size = sum(tree_bytes(entry) for entry in entries)
    if dry_run:
        return size
    for entry in entries:
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another prune took it first
            continue
        except OSError as exc:
            errors.append(f"{entry}: {exc.strerror}")
    return size


def tree_bytes(path: Path) -> int:
    """Bytes of the files under path (symbolic links not followed)."""
    if not path.is_dir() or path.is_symlink():
        return _size(path)
    total = 0
    for directory, _dirs, files in os.walk(path):
        total += sum(_size(Path(directory) / name) for name in files)
    return total


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


# --- space ----------------------------------------------------------------------------------------------------------


def give_space_back(db: Database, convert_max_bytes: int | None = None) -> Vacuum:
    """SQLite: free pages back to the file system (PRAGMA incremental_vacuum, a few MiB per transaction). A database made
    with auto_vacuum NONE (every one before this) is converted once by VACUUM when no job is active and it is at most
    `convert_max_bytes` (None: any size; 0: never). PostgreSQL: nothing (autovacuum makes the space reusable)."""
    if db.engine.dialect.name != "sqlite":
        return Vacuum("none")  # PostgreSQL: its autovacuum makes the space of deleted rows reusable
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        raw: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
        page_size, before = _pragma(raw, "page_size"), _pragma(raw, "page_count")
        mode = AUTO_VACUUM.get(_pragma(raw, "auto_vacuum"), "none")
        result = Vacuum(mode)
        if mode == "none":
            reason = _no_conversion(db, page_size * before, convert_max_bytes)
            if reason:
                result.note = reason
                return result
            # Only VACUUM changes auto_vacuum on a database that has tables; it rewrites the file once.
            raw.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            result.mode, result.converted = AUTO_VACUUM.get(_pragma(raw, "auto_vacuum"), "none"), True
        elif mode == "incremental":
            # executescript steps the pragma to its end (execute would free one page: a step per page).
            for _ in range(1_000_000):
                if _pragma(raw, "freelist_count") == 0:
                    break
                raw.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
                time.sleep(BATCH_PAUSE)
        result.freed_bytes = max(0, before - _pragma(raw, "page_count")) * page_size
        # The file shrinks when the WAL is checkpointed; PASSIVE never waits for (nor blocks) readers and writers.
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return result


def _pragma(raw: sqlite3.Connection, name: str) -> int:
    return int(raw.execute(f"PRAGMA {name}").fetchone()[0])


def _no_conversion(db: Database, size: int, convert_max_bytes: int | None) -> str | None:
    """Why the database is not converted to incremental vacuum now (None: it is)."""
    advice = "run `cloudx prune --vacuum` once while no job runs to turn incremental vacuum on (a one-time VACUUM)"
    if convert_max_bytes is not None and size > convert_max_bytes:
        return f"auto_vacuum is NONE: the space of deleted rows is reused but not given back; {advice}"
    with db.session() as session:
        active = session.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE_STATUSES))) or 0
    if active:
        return f"auto_vacuum is NONE and {active} job(s) are queued or running: not converted now (VACUUM holds the write lock); {advice}"
    return None


# --- the recurring task ---------------------------------------------------------------------------------------------


class Pruner(Periodic):
    """A thread of each `cloudx serve` process: prunes with CLOUDX_RETENTION_DAYS every CLOUDX_PRUNE_INTERVAL seconds
    (never scans: only `cloudx prune --scans` removes them). Several processes may prune at once: deletes are idempotent."""

    name = "pruner"

    def __init__(self, config: Config, db: Database) -> None:
        super().__init__()
        self.config = config
        self.db = db
        self._noted: str | None = None

    def first_wait(self) -> float:
        return min(self.config.PRUNE_INTERVAL, FIRST_PRUNE_AFTER)

    def interval(self) -> float:
        return self.config.PRUNE_INTERVAL

    def tick(self) -> PruneReport | None:
        if self.config.RETENTION_DAYS <= 0:
            return None
        report = prune(self.db, self.config, timedelta(days=self.config.RETENTION_DAYS), convert_max_bytes=AUTO_CONVERT_MAX_BYTES)
        if report.anything:
            log.info("pruned %s", summary(report))
        note = report.vacuum.note if report.vacuum else None
        if note and note != self._noted:  # once, not every hour
            log.warning("retention: %s", note)
        self._noted = note
        for error in report.errors:
            log.warning("retention: cannot remove %s", error)
        return report


def summary(report: PruneReport) -> str:
    return (
        f"events {report.events} (of {report.event_jobs} jobs), artifact folders {report.artifact_folders} "
        f"({report.artifact_bytes} bytes), scans {report.scans}, webhook events {report.webhook_events}; "
        f"jobs finished before {report.as_dict()['cutoff']}"
    )


# --- backups --------------------------------------------------------------------------------------------------------


@dataclass
class Backup:
    path: str
    bytes: int
    pages: int
    integrity: str
    events: int


def sqlite_file(url: str) -> Path:
    """The file of a SQLite DATABASE_URL; PostgreSQL and in-memory databases have none."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValidationError(
            f"the database is {parsed.get_backend_name()}, not SQLite: back it up with pg_dump "
            "(pg_dump -Fc -f cloudx.dump postgresql://USER@HOST/DB; README: Retention and backups)"
        )
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        raise ValidationError(f"DATABASE_URL names no SQLite file: {parsed.render_as_string(hide_password=True)}")
    return Path(parsed.database).resolve()


def backup_sqlite(url: str, target: Path, busy_timeout: float = 30, force: bool = False) -> Backup:
    """A consistent copy of the SQLite database at `target`, taken while jobs write to it, and checked.

    One backup step copies every page inside one read transaction: in WAL mode writers go on meanwhile and the copy
    is the database as it was when the step began (a stepwise copy would start over at every write of another
    connection, and might never end while jobs run). The copy is written beside the target and renamed into place."""
    source = sqlite_file(url)
    target = target.resolve()
    if not source.is_file():
        raise NotFound(f"no SQLite database at {source}")
    if target == source:
        raise ValidationError("the backup must be another file than the database")
    if target.exists() and not force:
        raise Conflict(f"{target} exists: give --force to replace it")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        result = _copy(source, partial, busy_timeout)
        if result.integrity != "ok":
            raise ApiError(f"the copy failed its integrity check ({result.integrity}); nothing was written to {target}", status=500)
        with partial.open("rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
    except sqlite3.Error as exc:
        raise ApiError(f"backup of {source} failed: {exc}", status=503) from None
    except OSError as exc:
        raise ApiError(f"cannot write {target}: {exc.strerror}", status=500) from None
    finally:
        partial.unlink(missing_ok=True)
    result.path = str(target)
    return result


def _copy(source: Path, partial: Path, busy_timeout: float) -> Backup:
    # mode=rw: a missing database is an error here, never a new empty file.
    src = sqlite3.connect(f"file:{quote(str(source))}?mode=rw", uri=True, timeout=busy_timeout)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: one step (see backup_sqlite)
            # A file that stands alone (no -wal beside it); the controller turns WAL on again when it opens it.
            dst.execute("PRAGMA journal_mode=DELETE").fetchall()
            integrity = "; ".join(row[0] for row in dst.execute("PRAGMA integrity_check").fetchall()[:3])
            events = _count_events(dst)
            pages = _pragma(dst, "page_count")
        finally:
            dst.close()
    finally:
        src.close()
    return Backup(path=str(partial), bytes=partial.stat().st_size, pages=pages, integrity=integrity, events=events)


def _count_events(connection: sqlite3.Connection) -> int:
    try:
        return int(connection.execute("SELECT count(*) FROM job_events").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet: no such table
        return 0


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"
