"""When things go wrong: a locked database, a full disk, a failing run. Jobs end with a reason; the API answers."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.app import create_app
from controller.queue.jobs import create_job
from controller.store.database import Database
from controller.store.models import Job, JobEvent
from tests.support.app import make_config, prepare_app
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

SCAN = {"target": "198.18.0.10", "tool": "nmap", "scan_type": "default", "ports": "22"}


def local_inventory(path: Path, hosts: int) -> Path:
    names = "".join(f"        h{i}:\n" for i in range(hosts))
    path.write_text(
        f"all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {sys.executable}\n"
        f"  children:\n    g:\n      hosts:\n{names}"
    )
    return path


def queue_job(db: Database, inventory: Path, playbook: str = "tests/playbooks/events.yml", **extra_vars: object) -> str:
    with db.session() as session:
        return create_job(session, kind="playbook", playbook=playbook, inventory=str(inventory), extra_vars=extra_vars, timeout=300).id


def start_worker(config, job_id: str) -> subprocess.Popen[str]:
    env = {**config.as_env(), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(
        [sys.executable, "-m", "controller.runner", job_id], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )


def event_count(db: Database, job_id: str) -> int:
    with db.session() as session:
        return len(list(session.scalars(select(JobEvent.id).where(JobEvent.job_id == job_id))))


@contextlib.contextmanager
def locked(database_file: Path) -> Iterator[None]:
    """Hold SQLite's write lock, as a stuck writer in another process would."""
    connection = sqlite3.connect(database_file, isolation_level=None, timeout=30)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_locked_database_jobs_wait_and_api_answers(tmp_path):
    config = make_config(tmp_path, DB_BUSY_TIMEOUT=1, DB_RETRY_SECONDS=60)
    app = prepare_app(create_app(config))
    client = app.test_client()
    db = app.extensions["cloudx.db"]
    job_id = queue_job(db, local_inventory(tmp_path / "hosts.yml", 8))
    worker = start_worker(config, job_id)
    assert wait_for(lambda: event_count(db, job_id) > 0, timeout=60)
    with locked(tmp_path / "scans.db"):
        time.sleep(3)
        # Reads go on (WAL); a write fails cleanly after the busy timeout and changes nothing.
        assert client.get(f"/api/jobs/{job_id}").status_code == 200
        refused = client.post("/api/scans", json=SCAN)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert "database is locked" in refused.get_json()["error"]
        time.sleep(2)
    _, stderr = worker.communicate(timeout=300)
    assert "database is locked; retrying" in stderr
    job = client.get(f"/api/jobs/{job_id}").get_json()
    assert job["status"] == "successful", job
    with db.session() as session:
        counters = list(session.scalars(select(JobEvent.counter).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
    assert counters == list(range(1, job["final_counter"] + 1))
    assert client.post("/api/scans", json=SCAN).status_code == 202
    with db.session() as session:
        assert [j.kind for j in session.scalars(select(Job).order_by(Job.created_at))] == ["playbook", "scan"]
    db.dispose()


def test_database_locked_too_long_ends_the_job_as_error(tmp_path):
    config = make_config(tmp_path, DB_BUSY_TIMEOUT=1, DB_RETRY_SECONDS=2)
    db = Database(config.DATABASE_URL)
    db.upgrade()
    job_id = queue_job(db, local_inventory(tmp_path / "hosts.yml", 2), playbook="tests/playbooks/sleep.yml", sleep_seconds=173)
    worker = start_worker(config, job_id)
    assert wait_for(lambda: event_count(db, job_id) > 0, timeout=60)
    with locked(tmp_path / "scans.db"):
        time.sleep(8)
    worker.communicate(timeout=120)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job.status == "error", (job.status, job.status_reason)
        assert job.status_reason == "storing events failed: database is locked"
        assert job.finished_at is not None
    assert subprocess.run(["pgrep", "-f", "sleep 173"], capture_output=True).returncode == 1
    db.dispose()


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real file system that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_artifacts_disk_ends_the_job_as_error(tmp_path, small_disk):
    config = make_config(tmp_path, ARTIFACTS_DIR=str(small_disk / "artifacts"))
    app = prepare_app(create_app(config))
    db = app.extensions["cloudx.db"]
    fill(small_disk)
    job_id = queue_job(db, local_inventory(tmp_path / "hosts.yml", 2))
    worker = start_worker(config, job_id)
    worker.communicate(timeout=120)
    job = app.test_client().get(f"/api/jobs/{job_id}").get_json()
    assert job["status"] == "error", job
    assert "No space left on device" in job["status_reason"]
    db.dispose()


def test_full_database_disk_answers_503_and_changes_nothing(tmp_path, small_disk):
    config = make_config(tmp_path, DATABASE_URL=f"sqlite:///{small_disk / 'scans.db'}", DB_BUSY_TIMEOUT=1)
    app = prepare_app(create_app(config))
    client = app.test_client()
    assert client.post("/api/scans", json=SCAN).status_code == 202
    filler = fill(small_disk)
    statuses = [client.post("/api/scans", json={**SCAN, "target": f"198.18.1.{i}"}).status_code for i in range(1, 60)]
    assert 503 in statuses and 500 not in statuses, statuses
    full = client.post("/api/scans", json=SCAN)
    assert full.status_code == 503 and "full" in full.get_json()["error"]
    listed = client.get("/api/scans?limit=500")
    assert listed.status_code == 200
    accepted = statuses.count(202) + 1
    assert len(listed.get_json()["scans"]) == accepted
    filler.unlink()
    assert client.post("/api/scans", json=SCAN).status_code == 202
    assert len(client.get("/api/scans?limit=500").get_json()["scans"]) == accepted + 1
    with app.extensions["cloudx.db"].session() as session:
        assert session.connection().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    app.extensions["cloudx.db"].dispose()


def test_missing_playbook_fails_with_a_reason(config, tmp_path):
    db = Database(config.DATABASE_URL)
    db.upgrade()
    job_id = queue_job(db, local_inventory(tmp_path / "hosts.yml", 1), playbook="playbooks/does-not-exist.yml")
    start_worker(config, job_id).communicate(timeout=120)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job.status in ("failed", "error") and job.status_reason, (job.status, job.status_reason)
        assert job.finished_at is not None
    db.dispose()


def test_api_answers_while_a_writer_holds_the_lock(tmp_path):
    """Many readers during a long write: all answered (WAL), none waits for the writer."""
    config = make_config(tmp_path, DB_BUSY_TIMEOUT=1)
    app = prepare_app(create_app(config))
    client = app.test_client()
    answers: list[int] = []
    with locked(tmp_path / "scans.db"):
        threads = [threading.Thread(target=lambda: answers.append(client.get("/api/scans").status_code)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers == [200] * 10
    app.extensions["cloudx.db"].dispose()
