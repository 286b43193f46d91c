"""The Celery executor for real: PostgreSQL, Redis and `cloudx worker` processes, as on three machines.

The job tests that run with both executors (scans, deployments, cancel, restarts) are parametrized by
the `executor_kind` fixture; these are the ones only a cluster of workers has.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from controller.queue.celery_executor import celery_app
from controller.store.models import Job, JobEvent
from tests.support.app import running_app
from tests.support.cluster import stored_bytes
from tests.support.waiting import wait_for, wait_scan
from tests.test_scan_integration import scanner_processes

pytestmark = pytest.mark.integration
HOST = socket.gethostname()


def submit_scan(client, address: str, **payload) -> str:
    response = client.post("/api/scans", json={"target": address, "tool": "nmap", "scan_type": "default", "ports": "22,80", **payload})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def deploy_to_loopback(client, password: str):
    """A deployment to this machine's own loopback (no SSH server answers there, so it ends quickly)."""
    body = {"os_type": "linux", "hosts": ["127.0.0.1"], "username": "root", "password": password, "manager_ip": "127.0.0.1"}
    return client.post("/api/deployments", json=body)


def job(client, job_id: str) -> dict:
    return client.get(f"/api/jobs/{job_id}").get_json()


def assert_events_stored_once(app, job_ids: list[str]) -> None:
    """Every event of every job exactly once, counters 1..final_counter with no gap or duplicate."""
    with app.extensions["cloudx.db"].session() as session:
        duplicates = session.execute(
            select(JobEvent.job_id, JobEvent.counter, func.count()).group_by(JobEvent.job_id, JobEvent.counter).having(func.count() > 1)
        ).all()
        assert duplicates == []
        for job_id in job_ids:
            final = session.scalar(select(Job.final_counter).where(Job.id == job_id))
            counters = session.scalars(select(JobEvent.counter).where(JobEvent.job_id == job_id).order_by(JobEvent.counter)).all()
            assert final and list(counters) == list(range(1, final + 1)), job_id


def test_jobs_from_one_api_run_on_different_workers_and_events_are_stored_once(request, tmp_path, target):
    with running_app(request, tmp_path, "celery") as app:
        assert app.extensions["cloudx.db"].engine.dialect.name == "postgresql"
        client = app.test_client()
        job_ids = [submit_scan(client, target.address) for _ in range(8)]
        views = [wait_scan(client, job_id, timeout=300) for job_id in job_ids]
        assert {v["status"] for v in views} == {"successful"}, views
        nodes = Counter(job(client, job_id)["node"] for job_id in job_ids)
        # Two workers with two slots each took the eight jobs between them.
        assert set(nodes) == {f"w1@{HOST}", f"w2@{HOST}"}, nodes
        for view in views:
            ports = {(p["port"], p["state"]) for p in view["results"]["hosts"][0]["ports"]}
            assert ports == {(22, "open"), (80, "closed")}
        assert_events_stored_once(app, job_ids)
        with app.extensions["cloudx.db"].session() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 8
        # The workers ran every job from its own message, once: eight messages taken, none dropped
        # (a task logs its end just after its job recorded its own).
        workers = app.extensions["cloudx.test_workers"]

        def logs() -> str:
            return "".join(workers.log_path(name).read_text() for name in ("w1", "w2"))

        assert wait_for(lambda: logs().count("succeeded in") == 8, timeout=30), logs()
        assert logs().count("'ran'") == 8 and "'dropped'" not in logs()


def test_scans_go_to_the_scanner_queue_and_deployments_to_the_default_one(request, tmp_path, target):
    with running_app(request, tmp_path, "celery", workers_started=()) as app:
        workers = app.extensions["cloudx.test_workers"]
        workers.start_many(["scan-node"], "--queues", "scanners")
        workers.start_many(["deploy-node"], "--queues", "cloudx")
        client = app.test_client()
        scan_id = submit_scan(client, target.address)
        # A deployment to this machine's own loopback: no SSH server answers there, so it ends quickly;
        # what is tested is where it ran, and that its password travelled sealed to that worker.
        response = deploy_to_loopback(client, "Pa55-travels-sealed")
        assert response.status_code == 202, response.get_json()
        deploy_id = response.get_json()["job_id"]
        assert wait_scan(client, scan_id)["status"] == "successful"
        assert wait_for(lambda: job(client, deploy_id)["status"] not in ("queued", "running"), timeout=120)
        assert job(client, scan_id)["node"] == f"scan-node@{HOST}"
        assert job(client, deploy_id)["node"] == f"deploy-node@{HOST}"
        assert "do not open" not in (job(client, deploy_id)["status_reason"] or "")
        assert b"Pa55-travels-sealed" not in stored_bytes(app.extensions["cloudx.config"], tmp_path)


def test_a_dead_worker_ends_its_running_job_as_error_and_its_unstarted_job_runs_elsewhere(request, tmp_path, target, slow_target):
    # w1 runs one job at a time and reserves one more: the machine it is on then dies.
    with running_app(request, tmp_path, "celery", workers_started=(), CELERY_REDISPATCH_AFTER=3, CELERY_PREFETCH_MULTIPLIER=2) as app:
        workers = app.extensions["cloudx.test_workers"]
        workers.start("w1", "--concurrency", "1")
        client = app.test_client()
        running = submit_scan(client, slow_target.address, scan_type="udp", ports="1-1000")
        assert wait_for(lambda: job(client, running)["progress"] > 0, timeout=120)
        waiting = submit_scan(client, target.address)
        inspect = celery_app(app.extensions["cloudx.config"]).control.inspect(destination=[f"w1@{HOST}"], timeout=2)

        def reserved() -> list[str]:
            return [task["args"][0] for task in (inspect.reserved() or {}).get(f"w1@{HOST}", [])]

        assert wait_for(lambda: waiting in reserved(), timeout=30), reserved()
        assert job(client, waiting)["status"] == "queued"
        events_before = client.get(f"/api/jobs/{running}/events?limit=500").get_json()["events"]

        workers.kill9("w1")
        assert wait_for(lambda: job(client, running)["status"] != "running", timeout=60)
        lost = job(client, running)
        assert lost["status"] == "error" and "worker lost" in lost["status_reason"], lost
        assert not scanner_processes(slow_target.address)
        events_after = client.get(f"/api/jobs/{running}/events?limit=500").get_json()["events"]
        assert events_before == events_after[: len(events_before)]
        # The job w1 had taken but never started is still queued; the API sends it again, and w2 runs it.
        assert job(client, waiting)["status"] == "queued"
        workers.start("w2", "--concurrency", "1")
        assert wait_scan(client, waiting, timeout=120)["status"] == "successful"
        assert job(client, waiting)["node"] == f"w2@{HOST}"
        assert_events_stored_once(app, [waiting])

        # A worker shut down in order (SIGTERM) stops its job, which records why, and exits at once.
        stopped = submit_scan(client, slow_target.address, scan_type="udp", ports="1-1000")
        assert wait_for(lambda: job(client, stopped)["progress"] > 0, timeout=120)
        assert workers.stop("w2", timeout=60) == 0
        view = job(client, stopped)
        assert view["status"] == "error" and "shut down" in view["status_reason"], view
        assert wait_for(lambda: not scanner_processes(slow_target.address), timeout=40)


def test_a_worker_that_stops_answering_is_found_by_its_heartbeat_and_stops_its_job_when_back(request, tmp_path, slow_target):
    # Lost after 6 s without a heartbeat (workers beat every second): set alike on the API and the workers.
    with running_app(request, tmp_path, "celery", workers_started=("w1",), WORKER_LOST_AFTER=6) as app:
        client = app.test_client()
        job_id = submit_scan(client, slow_target.address, scan_type="udp", ports="1-1000")
        assert wait_for(lambda: job(client, job_id)["progress"] > 0, timeout=120)
        workers = app.extensions["cloudx.test_workers"]
        frozen = workers.freeze("w1")  # every process alive, none answering: only the heartbeat tells
        try:
            assert wait_for(lambda: job(client, job_id)["status"] != "running", timeout=60)
            lost = job(client, job_id)
            assert lost["status"] == "error" and "has not reported for 6 s" in lost["status_reason"], lost
        finally:
            workers.thaw(frozen)
        # Back again, the worker finds its job ended, stops the playbook and keeps the recorded end.
        assert wait_for(lambda: not scanner_processes(slow_target.address), timeout=60), scanner_processes(slow_target.address)
        assert wait_for(lambda: "succeeded in" in workers.log_path("w1").read_text(), timeout=60)
        assert job(client, job_id)["status"] == "error" and job(client, job_id)["status_reason"] == lost["status_reason"]
        # ... and takes new work.
        assert wait_scan(client, submit_scan(client, slow_target.address, ports="22"), timeout=120)["status"] == "successful"


def test_credentials_cross_the_broker_sealed(request, tmp_path):
    # No worker: the message stays in Redis, where the search must find the job and not the password.
    with running_app(request, tmp_path, "celery", workers_started=()) as app:
        client = app.test_client()
        response = deploy_to_loopback(client, "Pa55-in-the-queue")
        assert response.status_code == 202
        stored = stored_bytes(app.extensions["cloudx.config"], tmp_path)
        assert response.get_json()["job_id"].encode() in stored and b"cloudx.run_job" in stored
        assert b"Pa55-in-the-queue" not in stored


def test_cancel_reaches_the_worker_and_kills_the_playbook(request, tmp_path, slow_target):
    with running_app(request, tmp_path, "celery") as app:
        client = app.test_client()
        job_id = submit_scan(client, slow_target.address, scan_type="udp", ports="1-1000")
        assert wait_for(lambda: job(client, job_id)["progress"] > 0, timeout=120)
        worker_pid = _job_worker_pid(app, job_id)
        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
        asked = time.monotonic()
        # The job's worker process (on the worker "machine") and every process under it end.
        assert wait_for(lambda: not _alive(worker_pid), timeout=60)
        took = time.monotonic() - asked
        view = job(client, job_id)
        assert view["status"] == "canceled", view
        assert wait_for(lambda: not scanner_processes(slow_target.address), timeout=40)
        print(f"cancel to worker exit: {took:.1f} s")


def _job_worker_pid(app, job_id: str) -> int:
    with app.extensions["cloudx.db"].session() as session:
        return int(session.scalar(select(Job.worker).where(Job.id == job_id)).rpartition(":")[2])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_worker_with_another_secrets_key_refuses_the_job(request, tmp_path):
    from controller.store.sealing import keygen

    with running_app(request, tmp_path, "celery", workers_started=()) as app:
        workers = app.extensions["cloudx.test_workers"]
        workers.env = {**workers.env, "CLOUDX_JOB_SECRETS_KEY": keygen()}
        workers.start("w-other-key")
        client = app.test_client()
        response = deploy_to_loopback(client, "x-Pa55")
        job_id = response.get_json()["job_id"]
        assert wait_for(lambda: job(client, job_id)["status"] != "queued", timeout=60)
        assert wait_for(lambda: job(client, job_id)["status"] == "error", timeout=30)
        assert "CLOUDX_JOB_SECRETS_KEY differs" in job(client, job_id)["status_reason"]


def test_an_unreachable_broker_gives_503_and_the_job_says_why(request, tmp_path, cluster):
    from tests.support.cluster import free_port

    closed = f"redis://127.0.0.1:{free_port()}/0"
    with running_app(request, tmp_path, "celery", workers_started=(), CELERY_BROKER_URL=closed) as app:
        client = app.test_client()
        response = client.post("/api/scans", json={"target": "127.0.0.1", "tool": "nmap", "scan_type": "default", "ports": "22"})
        assert response.status_code == 503 and "job queue" in response.get_json()["error"]
        jobs = client.get("/api/jobs").get_json()["jobs"]
        assert len(jobs) == 1 and jobs[0]["status"] == "error" and "Celery broker" in jobs[0]["status_reason"]


def test_cli_scan_through_celery_workers(request, tmp_path, target, cluster):
    with running_app(request, tmp_path, "celery", workers_started=("w1",)) as app:
        config = app.extensions["cloudx.config"]
        env = cluster.worker_env(config)
        result = subprocess.run(
            [sys.executable, "-m", "controller.cli", "scan", target.address, "--ports", "22,80", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        view = json.loads(result.stdout)
        assert {(p["port"], p["state"]) for p in view["results"]["hosts"][0]["ports"]} == {(22, "open"), (80, "closed")}
        jobs = app.test_client().get("/api/jobs").get_json()["jobs"]
        assert [(j["id"], j["status"], j["node"]) for j in jobs] == [(view["job_id"], "successful", f"w1@{HOST}")]


def test_models_and_migrations_agree_on_postgresql_and_sqlite(tmp_path, cluster):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from controller.store.database import Database
    from controller.store.models import Base

    head = ScriptDirectory(str(Path(__file__).resolve().parent.parent / "controller" / "store" / "migrations")).get_current_head()
    assert head == "0010"  # the newest migration, applied
    for url in (cluster.pg.create_database(f"m_{os.getpid()}"), f"sqlite:///{tmp_path / 'm.db'}"):
        database = Database(url)
        database.upgrade()
        database.upgrade()  # a second start changes nothing
        with database.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == [], url
            if connection.dialect.name == "postgresql":
                assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        database.dispose()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--queues", "scanners,bad queue"], {}, "queue name 'bad queue' is not valid"),
        (["--name", "no-host-part"], {}, "worker name 'no-host-part' is not valid"),
        ([], {"CLOUDX_JOB_SECRETS_KEY": ""}, "needs CLOUDX_JOB_SECRETS_KEY"),
        ([], {"CLOUDX_JOB_SECRETS_KEY": "c2hvcnQ="}, "needs CLOUDX_JOB_SECRETS_KEY"),
        ([], {"DATABASE_URL": "postgresql+psycopg://cloudx:hunter2-db@127.0.0.1:1/x"}, "cannot reach the database at"),
    ],
)
def test_worker_refuses_bad_settings_in_one_line(tmp_path, args, env, message):
    from controller.store.sealing import keygen

    base = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "CLOUDX_JOB_SECRETS_KEY": keygen()}
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "worker", *args], env={**base, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "hunter2-db" not in result.stderr
