"""Retention and backups: `cloudx prune` removes the events and artifact folders of old finished jobs and nothing else
(scans only with --scans), --dry-run changes nothing, the Pruner thread prunes, SQLite gives the space back, and
`cloudx db backup` taken while a job writes its events holds a consistent prefix of them and restores."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.app import create_app, start_executor, stop_executor
from controller.cli import cli
from controller.services import retention
from controller.store.database import Database, insert_rows
from controller.store.events import EVENT_COLUMNS
from controller.store.models import (
    Asset,
    AssetPort,
    AssetPortChange,
    AssetScan,
    AuditEntry,
    Job,
    JobEvent,
    JobHostSummary,
    Scan,
    ScanHost,
    ScanPort,
    utcnow,
)
from tests.support.app import make_config, prepare_app

OLD, NEW = 40, 2  # days since the jobs ended (the retention is 30 days)


def _sql(path: Path, query: str, *args: object) -> list[tuple]:
    """A query on a database file, on a connection of its own that is closed after it."""
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(query, args).fetchall()


def _db(config) -> Database:
    return Database(config.DATABASE_URL)


def _events(db: Database, job_id: str, count: int, start: int = 1, stdout: str = "ok") -> None:
    rows = [(job_id, n, None, None, "runner_on_ok", "h1", "task", "play", stdout, None, "{}") for n in range(start, start + count)]
    with db.engine.begin() as connection:
        insert_rows(connection, "job_events", EVENT_COLUMNS, rows, json=("event_data",))


def _job(db: Database, config, status: str, days: float | None, events: int = 5, kind: str = "deploy", finished: bool = True) -> str:
    """A job with events, a host summary and an artifact folder like ansible-runner's; `days` ago it ended (or was made)."""
    at = utcnow() - timedelta(days=days or 0)
    with db.session() as session:
        job = Job(kind=kind, playbook="playbooks/x.yml", inventory="inv", timeout=60, status=status, created_at=at)
        job.finished_at = at if finished else None
        session.add(job)
        session.flush()
        session.add(JobHostSummary(job_id=job.id, host="h1", ok=events))
        job_id = job.id
    _events(db, job_id, events)
    folder = Path(config.ARTIFACTS_DIR) / job_id
    (folder / "artifacts" / job_id / "job_events").mkdir(parents=True)
    (folder / "artifacts" / job_id / "stdout").write_text("x" * 1000)
    (folder / "artifacts" / job_id / "job_events" / "1-a.json").write_text("{}" * 100)
    (folder / "inventory").mkdir()
    (folder / "inventory" / "hosts").write_text("h1\n")
    return job_id


def _scan(db: Database, config, days: float, address: str) -> tuple[str, int]:
    """A finished scan job with one host and port, the asset it made (linked, with a port change) and raw output."""
    job_id = _job(db, config, "successful", days, events=3, kind="scan")
    at = utcnow() - timedelta(days=days)
    with db.session() as session:
        scan = Scan(job_id=job_id, tool="nmap", target=address, scan_type="tcp", ports="22")
        host = ScanHost(address=address, status="up", ports=[ScanPort(protocol="tcp", port=22, state="open")])
        scan.hosts.append(host)
        session.add(scan)
        session.flush()
        asset = Asset(address=address, sort_key=address, status="up", first_seen=at, last_seen=at, last_scan_id=scan.id)
        session.add(asset)
        session.flush()
        session.add_all(
            [
                AssetScan(asset_id=asset.id, scan_id=scan.id),
                AssetPort(asset_id=asset.id, sort_key=address, protocol="tcp", port=22, state="open", first_seen=at, last_seen=at),
                AssetPortChange(asset_id=asset.id, protocol="tcp", port=22, change="opened", state="open", scan_id=scan.id, at=at),
            ]
        )
        scan_id = scan.id
    results = Path(config.ARTIFACTS_DIR) / job_id / "results" / job_id / "localhost"
    results.mkdir(parents=True)
    (results / "raw.xml").write_text("<nmaprun/>")
    return job_id, scan_id


@pytest.fixture
def jobs(config):
    """Old and new finished jobs, an old running and an old queued job (ended long ago, say their clocks: status wins)."""
    db = _db(config)
    made = {
        "old_ok": _job(db, config, "successful", OLD),
        "old_failed": _job(db, config, "failed", OLD),
        "old_canceled": _job(db, config, "canceled", OLD + 100),
        "new_ok": _job(db, config, "successful", NEW),
        "running": _job(db, config, "running", OLD),
        "queued": _job(db, config, "queued", OLD),
        "running_unfinished": _job(db, config, "running", OLD, finished=False),
    }
    made["old_scan"], made["old_scan_id"] = _scan(db, config, OLD, "192.0.2.1")
    made["new_scan"], made["new_scan_id"] = _scan(db, config, NEW, "192.0.2.2")
    db.dispose()
    return made


def _state(config) -> dict:
    """Every row count and artifact file, to compare before and after."""
    db = _db(config)
    with db.session() as session:
        counts = {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Job, JobHostSummary, Scan, ScanHost, ScanPort, Asset, AssetScan, AssetPort, AssetPortChange)
        }
        per_job = dict(session.execute(select(JobEvent.job_id, func.count()).group_by(JobEvent.job_id)).all())
    db.dispose()
    files = sorted(str(p.relative_to(config.ARTIFACTS_DIR)) for p in Path(config.ARTIFACTS_DIR).rglob("*"))
    return {"counts": counts, "events": per_job, "files": files}


def _prune(runner, *args: str) -> dict:
    result = runner.invoke(cli, ["prune", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prune_removes_the_events_and_folders_of_old_finished_jobs_and_keeps_everything_else(runner, config, jobs):
    before = _state(config)
    report = _prune(runner, "--older-than", "30d")

    old = ["old_ok", "old_failed", "old_canceled", "old_scan"]
    assert report["events"] == 5 + 5 + 5 + 3 and report["event_jobs"] == 4 and report["scans"] == 0 and not report["dry_run"]
    assert report["artifact_folders"] == 4 and report["artifact_bytes"] >= 4 * 1200
    after = _state(config)
    # Events: exactly the old finished jobs' gone; the new one's, the running and queued ones' (however old) kept.
    assert after["events"] == {job: n for job, n in before["events"].items() if _key(jobs, job) not in old}
    # Rows: every job, host summary, scan, host, port and asset kept.
    assert after["counts"] == before["counts"]
    folders = {p.name for p in Path(config.ARTIFACTS_DIR).iterdir()}
    assert folders == {jobs[k] for k in ("new_ok", "running", "queued", "running_unfinished", "new_scan", "old_scan")}
    # The old scan's folder keeps only its results (the raw output GET /api/scans/<id>/raw serves), as its scan is kept.
    assert [p.name for p in (Path(config.ARTIFACTS_DIR) / jobs["old_scan"]).iterdir()] == ["results"]
    assert (Path(config.ARTIFACTS_DIR) / jobs["old_scan"] / "results" / jobs["old_scan"] / "localhost" / "raw.xml").is_file()
    assert set(after["files"]) < set(before["files"])

    # Idempotent: a second prune finds nothing (a folder left with its results only is not counted again).
    again = _prune(runner, "--older-than", "30d")
    assert (again["events"], again["artifact_folders"], again["artifact_bytes"], again["scans"]) == (0, 0, 0, 0)
    assert _state(config) == after

    # Audited, with the counts.
    db = _db(config)
    with db.session() as session:
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "prune").order_by(AuditEntry.id)))
    db.dispose()
    assert len(entries) == 2 and entries[0].detail.startswith("events 18 (of 4 jobs), artifact folders 4")


def _key(jobs: dict, job_id: str) -> str:
    return next(k for k, v in jobs.items() if v == job_id)


def test_even_an_age_of_zero_never_touches_queued_or_running_jobs(runner, config, jobs):
    report = _prune(runner, "--older-than", "0s")
    assert report["event_jobs"] == 6  # every finished job, the new ones too
    after = _state(config)
    assert set(after["events"]) == {jobs["running"], jobs["queued"], jobs["running_unfinished"]}
    assert all((Path(config.ARTIFACTS_DIR) / jobs[k] / "artifacts").is_dir() for k in ("running", "queued", "running_unfinished"))


def test_dry_run_prints_what_would_go_and_changes_nothing(runner, config, jobs):
    before = _state(config)
    database = Path(config.DATABASE_URL.removeprefix("sqlite:///"))
    result = runner.invoke(cli, ["prune", "--older-than", "30d", "--scans", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("events: 18 would be removed (of 4 jobs finished before ")
    assert lines[1].startswith("artifact folders: 4 would be removed (") and lines[2] == "scans: 1 would be removed"
    assert _state(config) == before
    report = _prune(runner, "--older-than", "30d", "--scans", "--dry-run")
    assert (report["events"], report["artifact_folders"], report["scans"], report["vacuum"]) == (18, 4, 1, None)
    # Nothing was audited, and the database was not vacuumed (a VACUUM is a change).
    assert _sql(database, "SELECT count(*) FROM audit_log WHERE action = 'prune'") == [(0,)]
    assert _sql(database, "PRAGMA auto_vacuum") == [(2,)]  # a new database starts incremental
    assert _state(config) == before


def test_scans_removes_old_scans_results_and_assets_keep_their_own_state(runner, config, jobs, client):
    report = _prune(runner, "--older-than", "30d", "--scans")
    assert report["scans"] == 1 and report["artifact_folders"] == 4
    db = _db(config)
    with db.session() as session:
        assert list(session.scalars(select(Scan.job_id))) == [jobs["new_scan"]]
        assert session.scalar(select(func.count()).select_from(ScanHost)) == 1
        assert session.scalar(select(func.count()).select_from(ScanPort)) == 1
        assert list(session.scalars(select(AssetScan.scan_id))) == [jobs["new_scan_id"]]
        old_asset = session.scalar(select(Asset).where(Asset.address == "192.0.2.1"))
        assert old_asset is not None and old_asset.last_scan_id is None and old_asset.status == "up"
        changes = list(session.scalars(select(AssetPortChange).order_by(AssetPortChange.id)))
        assert [(c.change, c.scan_id) for c in changes] == [("opened", None), ("opened", jobs["new_scan_id"])]
        assert session.scalar(select(func.count()).select_from(AssetPort)) == 2
        assert session.get(Job, jobs["old_scan"]) is not None  # the job row stays
    db.dispose()
    assert not (Path(config.ARTIFACTS_DIR) / jobs["old_scan"]).exists()
    # The API: the old scan is gone, its asset is there with its ports and history (naming no scan).
    assert client.get(f"/api/scans/{jobs['old_scan']}").status_code == 404
    asset = client.get("/api/assets/192.0.2.1").get_json()
    assert [p["port"] for p in asset["ports"]] == [22] and asset["scans"] == []
    assert [(h["change"], h["scan_job_id"]) for h in asset["history"]] == [("opened", None)]
    assert client.get(f"/api/jobs/{jobs['old_scan']}").status_code == 200
    assert client.get(f"/api/scans/{jobs['new_scan']}").get_json()["results"]["hosts"]


def test_folders_of_no_job_go_once_as_old_and_other_folders_stay(runner, config):
    root = Path(config.ARTIFACTS_DIR)
    old_orphan, new_orphan = root / "00000000-0000-4000-8000-000000000001", root / "00000000-0000-4000-8000-000000000002"
    for folder in (old_orphan, new_orphan, root / ".cleanup" / "x", root / ".imports" / "y", root / "not-a-job"):
        folder.mkdir(parents=True)
        (folder / "file").write_text("data")
    past = time.time() - 40 * 86400
    for folder in (old_orphan, root / ".cleanup", root / "not-a-job"):
        os.utime(folder, (past, past))
    report = _prune(runner, "--older-than", "30d")
    assert report["artifact_folders"] == 1 and report["artifact_bytes"] == 4
    assert sorted(p.name for p in root.iterdir()) == sorted([new_orphan.name, ".cleanup", ".imports", "not-a-job"])


def test_older_than_defaults_to_the_retention_setting_and_bad_values_are_one_line(runner, config, jobs, monkeypatch):
    assert _prune(runner)["event_jobs"] == 4  # CLOUDX_RETENTION_DAYS: 30
    result = runner.invoke(cli, ["prune", "--older-than", "soon"])
    assert result.exit_code == 1 and result.output == "Error: --older-than must be an age such as 30d, 12h, 90m or 3600s\n"
    monkeypatch.setenv("CLOUDX_RETENTION_DAYS", "0")
    result = runner.invoke(cli, ["prune"])
    assert result.exit_code == 1 and "CLOUDX_RETENTION_DAYS is 0" in result.output
    assert [retention.parse_age(v) for v in ("30d", "12h", "90m", "5s", "7")] == [
        timedelta(days=30),
        timedelta(hours=12),
        timedelta(minutes=90),
        timedelta(seconds=5),
        timedelta(days=7),
    ]


def test_the_pruner_thread_prunes_and_start_executor_runs_it(config, jobs, tmp_path):
    fast = make_config(tmp_path, PRUNE_INTERVAL=0.05)
    db = _db(fast)
    pruner = retention.Pruner(fast, db)
    pruner.start()
    try:
        deadline = time.monotonic() + 10
        # Folders go after events; shutdown waits for the prune under way to end.
        while (Path(fast.ARTIFACTS_DIR) / jobs["old_canceled"] / "artifacts").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pruner.shutdown()
        db.dispose()
    after = _state(fast)
    assert set(after["events"]) == {jobs[k] for k in ("new_ok", "running", "queued", "running_unfinished", "new_scan")}
    assert after["counts"]["scans"] == 2  # never scans automatically
    assert not (Path(fast.ARTIFACTS_DIR) / jobs["old_ok"]).exists()
    assert _sql(Path(fast.DATABASE_URL.removeprefix("sqlite:///")), "PRAGMA auto_vacuum") == [(2,)]  # made incremental

    # `cloudx serve` runs one (start_executor), unless CLOUDX_RETENTION_DAYS is 0.
    for days, expected in ((30, True), (0, False)):
        app = create_app(make_config(tmp_path / f"serve{days}", RETENTION_DAYS=days, SCHEDULER_ENABLED=False))
        start_executor(app)
        try:
            assert any(isinstance(s, retention.Pruner) for s in app.extensions["cloudx.background"]) is expected
        finally:
            stop_executor(app)
            app.extensions["cloudx.db"].dispose()


def _made_before(path: Path) -> None:
    """The database as versions before incremental vacuum made it: auto_vacuum NONE (a new one starts INCREMENTAL)."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript("PRAGMA auto_vacuum = NONE; VACUUM;")
    finally:
        connection.close()


def _pages(path: Path) -> tuple[int, ...]:
    return tuple(_sql(path, f"PRAGMA {name}")[0][0] for name in ("auto_vacuum", "page_count", "freelist_count"))


def test_incremental_vacuum_gives_the_space_back(runner, config):
    database = Path(config.DATABASE_URL.removeprefix("sqlite:///"))
    db = _db(config)
    kept = _job(db, config, "successful", NEW, events=100)
    first = _job(db, config, "successful", OLD, events=1)
    _events(db, first, 20000, start=2, stdout="y" * 400)
    db.dispose()
    _made_before(database)
    auto_vacuum, pages, _ = _pages(database)
    assert auto_vacuum == 0  # every database made before: NONE

    # A prune does not VACUUM unless asked (it holds the write lock): it says how.
    result = runner.invoke(cli, ["prune", "--older-than", "30d", "--dry-run"])
    assert result.exit_code == 0 and _pages(database)[0] == 0
    # Asked: the prune converts it (a one-time VACUUM, said so) and the file shrinks.
    result = runner.invoke(cli, ["prune", "--older-than", "30d", "--vacuum"])
    assert result.exit_code == 0, result.output
    assert "converted to incremental vacuum (a one-time VACUUM)" in result.stderr
    assert result.stdout.splitlines()[0].startswith("events: 20001 removed")
    auto_vacuum, after, freelist = _pages(database)
    assert auto_vacuum == 2 and freelist == 0 and after < pages / 4
    assert database.stat().st_size < after * 4096 * 1.5

    # Later prunes give the free pages back with PRAGMA incremental_vacuum.
    db = _db(config)
    second = _job(db, config, "failed", OLD, events=1)
    _events(db, second, 20000, start=2, stdout="z" * 400)
    db.dispose()
    _, grown, _ = _pages(database)
    report = _prune(runner, "--older-than", "30d")
    assert report["events"] == 20001 and report["vacuum"]["mode"] == "incremental" and not report["vacuum"]["converted"]
    _, shrunk, freelist = _pages(database)
    assert freelist == 0 and shrunk < grown / 4 and report["vacuum"]["freed_bytes"] >= (grown - shrunk) * 4096 * 0.9
    db = _db(config)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(JobEvent)) == 100
        assert session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == kept)) == 100
    db.dispose()


def test_no_conversion_while_jobs_are_active_or_beyond_the_size_limit(config):
    _made_before(Path(config.DATABASE_URL.removeprefix("sqlite:///")))
    db = _db(config)
    queued = _job(db, config, "queued", NEW)
    vacuum = retention.give_space_back(db)
    assert vacuum.mode == "none" and not vacuum.converted and "1 job(s) are queued or running" in vacuum.note
    with db.session() as session:
        session.get(Job, queued).status = "canceled"
    vacuum = retention.give_space_back(db, convert_max_bytes=1024)
    assert not vacuum.converted and "run `cloudx prune --vacuum` once while no job runs" in vacuum.note
    assert retention.give_space_back(db, convert_max_bytes=0).note  # 0: never
    assert retention.give_space_back(db, convert_max_bytes=retention.AUTO_CONVERT_MAX_BYTES).converted
    db.dispose()


# --- backups --------------------------------------------------------------------------------------------------------


class EventWriter(threading.Thread):
    """A running job's worker, as far as the database sees it: batches of events, each batch one transaction."""

    def __init__(self, config, job_id: str) -> None:
        super().__init__(daemon=True)
        self.db = _db(config)
        self.job_id = job_id
        self.stored = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                _events(self.db, self.job_id, 200, start=self.stored + 1, stdout="e" * 1000)
                self.stored += 200
                time.sleep(0.002)
        except BaseException as exc:
            self.error = exc
        finally:
            self.db.dispose()


def _stored(database: Path, job_id: str) -> int:
    return _sql(database, "SELECT count(*) FROM job_events WHERE job_id = ?", job_id)[0][0]


def test_a_backup_taken_while_a_job_writes_holds_every_event_stored_before_it_and_restores(runner, config, tmp_path):
    database = Path(config.DATABASE_URL.removeprefix("sqlite:///"))
    db = _db(config)
    job_id = _job(db, config, "running", 0, events=0, finished=False)
    db.dispose()
    writer = EventWriter(config, job_id)
    writer.start()
    try:
        while writer.stored < 10000 and writer.is_alive():
            time.sleep(0.01)
        observed = _stored(database, job_id)
        backup = tmp_path / "backups" / "cloudx.db"
        backup.parent.mkdir()
        result = runner.invoke(cli, ["db", "backup", str(backup)])
        assert result.exit_code == 0, result.output
        copied = _stored(backup, job_id)
        # The job went on writing while and after the copy was made.
        deadline = time.monotonic() + 10
        while _stored(database, job_id) <= copied and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None
    total = _stored(database, job_id)
    assert observed <= copied < total, (observed, copied, total)
    assert result.stdout.startswith(f"{backup}: ") and f"{copied} events, integrity ok" in result.stdout

    # A consistent prefix: every event up to the count seen before the backup, no gap, whole batches only.
    assert _sql(backup, "PRAGMA integrity_check") == [("ok",)]
    assert _sql(backup, "PRAGMA journal_mode") == [("delete",)]  # a file that stands alone
    counters = [row[0] for row in _sql(backup, "SELECT counter FROM job_events WHERE job_id = ? ORDER BY counter", job_id)]
    assert _sql(backup, "SELECT status FROM jobs WHERE id = ?", job_id) == [("running",)]
    assert counters == list(range(1, copied + 1)) and copied % 200 == 0

    # Restore: the copy into place of a stopped controller's database (its -wal and -shm removed), the app opens it.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copyfile(backup, restored / "scans.db")
    app = prepare_app(create_app(make_config(restored)))
    try:
        client = app.test_client()
        assert client.get(f"/api/jobs/{job_id}").get_json()["status"] == "running"
        seen, after = [], 0
        while after is not None:
            page = client.get(f"/api/jobs/{job_id}/events", query_string={"after": after, "limit": 500}).get_json()
            seen += [event["counter"] for event in page["events"]]
            after = page["next_after"]
        assert seen == counters
    finally:
        app.extensions["cloudx.db"].dispose()


def test_backup_refusals_are_one_line(runner, config, tmp_path, monkeypatch):
    target = tmp_path / "copy.db"
    assert runner.invoke(cli, ["db", "backup", str(target)]).exit_code == 0
    result = runner.invoke(cli, ["db", "backup", str(target)])
    assert result.exit_code == 1 and result.output == f"Error: {target} exists: give --force to replace it\n"
    assert runner.invoke(cli, ["db", "backup", "--force", str(target)]).exit_code == 0
    result = runner.invoke(cli, ["db", "backup", config.DATABASE_URL.removeprefix("sqlite:///")])
    assert result.exit_code == 1 and "another file than the database" in result.output
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://cloudx@db.example/cloudx")
    result = runner.invoke(cli, ["db", "backup", str(tmp_path / "pg.db")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "back it up with pg_dump" in result.output
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'missing.db'}")
    result = runner.invoke(cli, ["db", "backup", str(tmp_path / "m.db")])
    assert result.exit_code == 1 and "no SQLite database at" in result.output and not (tmp_path / "missing.db").exists()
    assert not list(tmp_path.glob(".*.partial-*"))


def test_a_prune_while_a_job_writes_its_events_leaves_them_all(runner, config):
    database = Path(config.DATABASE_URL.removeprefix("sqlite:///"))
    db = _db(config)
    old = _job(db, config, "successful", OLD, events=1)
    _events(db, old, 30000, start=2)
    live = _job(db, config, "running", 0, events=0, finished=False)
    db.dispose()
    writer = EventWriter(config, live)
    writer.start()
    try:
        report = _prune(runner, "--older-than", "30d")
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None and report["events"] == 30001
    counters = [row[0] for row in _sql(database, "SELECT counter FROM job_events WHERE job_id = ? ORDER BY counter", live)]
    assert counters == list(range(1, writer.stored + 1)) and writer.stored > 0
    assert _sql(database, "SELECT count(*) FROM job_events WHERE job_id = ?", old) == [(0,)]


def test_delivered_webhook_events_go_with_the_retention_and_pending_ones_stay(runner, config):
    from controller.store.models import Webhook, WebhookDelivery, WebhookOutbox

    db = _db(config)
    old_time = utcnow() - timedelta(days=OLD)
    with db.session() as session:
        hook = Webhook(url="https://hooks.example/x", events=["job.failed"], created_by="tests")
        session.add(hook)
        session.flush()
        for status, finished in (("delivered", old_time), ("failed", old_time), ("pending", None), ("delivered", utcnow())):
            row = WebhookOutbox(
                webhook_id=hook.id, event="job.failed", job_id=f"job-{status}-{finished}", body="{}", status=status, finished_at=finished
            )
            session.add(row)
            session.flush()
            session.add(
                WebhookDelivery(
                    webhook_id=hook.id, outbox_id=row.id, event="job.failed", job_id=row.job_id, attempt=1, outcome="retry", body="{}"
                )
            )
    report = _prune(runner, "--older-than", "30d")
    assert report["webhook_events"] == 2
    with db.session() as session:
        assert sorted(session.scalars(select(WebhookOutbox.status))) == ["delivered", "pending"]
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 2
    db.dispose()
