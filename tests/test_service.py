"""`cloudx serve` as a real process over HTTP: scans, heartbeat, and a kill -9 with a job in flight."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.agent import ENROLLMENT_PASSWORD, write_agent_vars
from tests.support.cluster import stored_bytes
from tests.support.service import Service
from tests.support.waiting import wait_for
from tests.test_scan_integration import scanner_processes

pytestmark = pytest.mark.integration


def make_service(request, tmp_path, executor_kind: str, **env: str) -> Service:
    cluster = request.getfixturevalue("cluster") if executor_kind == "celery" else None
    return Service(tmp_path, executor=executor_kind, cluster=cluster, **env)


@pytest.fixture
def service(request, tmp_path, executor_kind):
    service = make_service(request, tmp_path, executor_kind)
    service.start()
    yield service
    service.stop()


def test_scan_over_http_and_heartbeat(service, target):
    api, http = service.url, service.http
    assert requests.get(f"{api}/health").json()["status"] == "ok"
    assert requests.get(f"{api}/scans").status_code == 401
    assert http.get(f"{api}/sync-status").json()["status"] == "inactive"
    subprocess.run([sys.executable, "-m", "controller.cli", "heartbeat"], env=service.env, check=True)
    assert http.get(f"{api}/sync-status").json()["status"] == "active"

    response = http.post(f"{api}/scans", json={"target": target.address, "tool": "nmap", "scan_type": "default", "ports": "22,80"})
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert wait_for(lambda: http.get(f"{api}/scans/{job_id}").json()["status"] == "successful", timeout=120)
    view = http.get(f"{api}/scans/{job_id}").json()
    assert {(p["port"], p["state"]) for p in view["results"]["hosts"][0]["ports"]} == {(22, "open"), (80, "closed")}
    assert http.get(f"{api}/scans").json()["scans"][0]["job_id"] == job_id
    hosts = http.get(f"{api}/jobs/{job_id}/hosts").json()["hosts"]
    assert [(h["host"], h["failed"], h["unreachable"]) for h in hosts] == [("localhost", 0, 0)]
    assert http.get(f"{api}/nope").status_code == 404
    assert http.get(f"{api}/nope").json() == {
        "error": "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."
    }


@pytest.mark.parametrize("kill_workers", [False, True], ids=["controller-only", "controller-and-workers"])
def test_kill9_with_job_in_flight(request, tmp_path, slow_target, kill_workers, executor_kind):
    service = make_service(request, tmp_path, executor_kind)
    service.start()
    api, http = service.url, service.http
    try:
        job_id = http.post(
            f"{api}/scans", json={"target": slow_target.address, "tool": "nmap", "scan_type": "udp", "ports": "1-1000"}
        ).json()["job_id"]
        assert wait_for(lambda: http.get(f"{api}/scans/{job_id}").json()["progress"] > 0, timeout=90)
        events_before = http.get(f"{api}/jobs/{job_id}/events?limit=500").json()["events"]
        assert service.proc is not None
        if kill_workers and service.workers is None:  # the whole machine "crashes": service and job workers die at once
            for child in __import__("psutil").Process(service.proc.pid).children():
                child.kill()
        elif kill_workers:  # the API's machine and the worker machine that runs the job crash together
            assert service.workers is not None
            service.workers.kill9(http.get(f"{api}/jobs/{job_id}").json()["node"].split("@")[0])
        service.kill9()
        service.start()
        if service.workers is not None and not kill_workers:
            # The API is not where jobs run: the job goes on, and the restarted API can still stop it.
            assert http.get(f"{api}/jobs/{job_id}").json()["status"] == "running"
            assert http.post(f"{api}/jobs/{job_id}/cancel").status_code == 202
        # Without Celery, the orphaned worker stops its job itself (it gets SIGTERM when the service dies);
        # a worker that died too is found by the restarted service.
        assert wait_for(lambda: http.get(f"{api}/jobs/{job_id}").json()["status"] != "running", timeout=30), service.diagnostics(job_id)
        job = http.get(f"{api}/jobs/{job_id}").json()
        if service.workers is not None and not kill_workers:
            assert job["status"] == "canceled", job
        else:
            assert job["status"] == "error" and "stopped" in job["status_reason"], job
        assert wait_for(lambda: not scanner_processes(slow_target.address), timeout=40), service.diagnostics(job_id)

        # The worker records the job's end just before it exits.
        def leftovers() -> list[str]:
            return subprocess.run(["pgrep", "-f", job_id], capture_output=True, text=True).stdout.split()

        assert wait_for(lambda: not leftovers(), timeout=20), leftovers()
        events_after = http.get(f"{api}/jobs/{job_id}/events?limit=500").json()["events"]
        counters = [e["counter"] for e in events_after]
        assert counters == sorted(counters) and len(set(counters)) == len(counters)
        assert {e["counter"] for e in events_before} <= set(counters)
    finally:
        service.stop()


def test_200_concurrent_scan_submissions(tmp_path, target):
    """A burst against the queue limit: every request gets 202 or 429, no job is lost or duplicated."""
    service = Service(tmp_path, CLOUDX_MAX_QUEUED_JOBS="30", CLOUDX_MAX_CONCURRENT_JOBS="4")
    service.start()
    api, http = service.url, service.http
    body = {"target": target.address, "tool": "nmap", "scan_type": "default", "ports": "22,80"}
    start = threading.Barrier(50)

    def submit(_: int) -> tuple[int, str | None]:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {service.token}"
            with contextlib.suppress(threading.BrokenBarrierError):
                start.wait(timeout=10)
            response = session.post(f"{api}/scans", json=body, timeout=120)
            return response.status_code, response.json().get("job_id") if response.status_code == 202 else response.json()["error"]

    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(submit, range(200)))
        statuses = Counter(status for status, _ in answers)
        assert set(statuses) <= {202, 429}, statuses
        accepted = [job_id for status, job_id in answers if status == 202]
        assert len(accepted) >= 30 and len(set(accepted)) == len(accepted), statuses
        assert all("already waiting" in text for status, text in answers if status == 429)

        def all_done() -> bool:
            jobs = http.get(f"{api}/jobs?limit=500").json()["jobs"]
            return all(job["status"] not in ("queued", "running") for job in jobs)

        assert wait_for(all_done, timeout=900, interval=2)
        jobs = {job["id"]: job for job in http.get(f"{api}/jobs?limit=500").json()["jobs"]}
        assert sorted(jobs) == sorted(accepted)
        assert {job["status"] for job in jobs.values()} == {"successful"}
        for job_id in accepted[:5]:
            counters = [e["counter"] for e in http.get(f"{api}/jobs/{job_id}/events?limit=500").json()["events"]]
            assert counters == list(range(1, jobs[job_id]["final_counter"] + 1))
        audit = http.get(f"{api}/audit?limit=500").json()["entries"]
        assert Counter(e["status"] for e in audit if e["path"] == "/api/scans") == statuses
    finally:
        service.stop()
    with sqlite3.connect(service.config.DATABASE_URL.removeprefix("sqlite:///")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM scans").fetchone() == (len(accepted),)


def test_secrets_never_reach_database_artifacts_or_logs(
    request, tmp_path, target, booted_hosts, ssh_key, agent_package, manager, executor_kind
):
    """A scan and a deployment with known secrets: none is found in the database, the artifacts, the logs or the broker."""
    key = subprocess.run([sys.executable, "-m", "controller.cli", "credential", "keygen"], capture_output=True, text=True).stdout.strip()
    agent_vars = write_agent_vars(tmp_path / "agent-vars.json", *agent_package)
    service = make_service(request, tmp_path, executor_kind, CLOUDX_CREDENTIALS_KEY=key, CLOUDX_AGENT_VARS_FILE=str(agent_vars))
    service.start()
    api, http = service.url, service.http
    private_key = ssh_key.read_text()
    stored_password = "Vault-Pa55-d41f0c7e"
    try:
        assert http.post(f"{api}/credentials", json={"name": "lab-key", "kind": "ssh_key", "username": "root", "secret": private_key}).ok
        assert http.post(f"{api}/credentials", json={"name": "spare", "kind": "password", "secret": stored_password}).ok
        # A stored credential goes only to a host whose key was established before: an admin trusts it.
        host_keys = [f"{booted_hosts[0].address} {' '.join(key.split()[:2])}" for key in booted_hosts[0].host_keys()]
        assert http.put(f"{api}/host-keys", json={"known_hosts": host_keys}).ok
        scan = http.post(f"{api}/scans", json={"target": target.address, "tool": "nmap", "scan_type": "default", "ports": "22"})
        deploy = http.post(
            f"{api}/deployments",
            json={
                "hosts": [booted_hosts[0].address],
                "os_type": "linux",
                "credential": "lab-key",
                "manager_ip": manager.sock.getsockname()[0],
                "enrollment_password": ENROLLMENT_PASSWORD,
            },
        )
        assert scan.status_code == deploy.status_code == 202, (scan.text, deploy.text)
        for job_id in (scan.json()["job_id"], deploy.json()["job_id"]):
            assert wait_for(
                lambda job_id=job_id: http.get(f"{api}/jobs/{job_id}").json()["status"] not in ("queued", "running"), timeout=300
            )
            assert http.get(f"{api}/jobs/{job_id}").json()["status"] == "successful"
    finally:
        service.stop()
    service.log.close()
    everything = stored_bytes(service.config, tmp_path)
    assert b"TASK [" in everything or b"runner_on_ok" in everything  # the search covers real output
    key_lines = [line for line in private_key.splitlines() if not line.startswith("-----")]
    secrets = [service.token, service.token.split("_", 2)[2], key, stored_password, ENROLLMENT_PASSWORD, *key_lines]
    if executor_kind == "celery":  # the database and broker passwords, and the key that seals job credentials
        cluster = request.getfixturevalue("cluster")
        secrets += [cluster.pg.password, cluster.redis.password, cluster.key]
    found = {secret[:12]: everything.count(secret.encode()) for secret in secrets}
    assert set(found.values()) == {0}, found


def test_serve_in_two_processes_on_one_port(tmp_path, target):
    """`cloudx serve --processes 2`: both processes take connections, jobs run once, SIGTERM stops everything."""
    import psutil

    service = Service(tmp_path)
    service.start("--processes", "2")
    api = service.url
    try:
        assert service.proc is not None
        children = psutil.Process(service.proc.pid).children()
        assert len(children) == 2
        # Both processes accept on the one listening socket (which of them takes a connection is the kernel's choice).
        listening = {
            child.pid
            for child in children
            for c in child.net_connections(kind="tcp")
            if c.status == "LISTEN" and c.laddr.port == service.port
        }
        assert listening == {child.pid for child in children}
        sessions = []
        for _ in range(16):
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {service.token}"
            assert session.get(f"{api}/jobs").status_code == 200
            sessions.append(session)
        body = {"target": target.address, "tool": "nmap", "scan_type": "default", "ports": "22,80"}
        job_ids = [session.post(f"{api}/scans", json=body).json()["job_id"] for session in sessions[:4]]
        for job_id in job_ids:
            assert wait_for(lambda job_id=job_id: service.http.get(f"{api}/jobs/{job_id}").json()["status"] == "successful", timeout=180)
            counters = [e["counter"] for e in service.http.get(f"{api}/jobs/{job_id}/events?limit=500").json()["events"]]
            assert counters == list(range(1, len(counters) + 1))
        for session in sessions:
            session.close()
    finally:
        service.stop()
    assert service.proc.returncode == 0
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


def test_api_processes_end_with_their_supervisor(tmp_path):
    """A supervisor killed outright (SIGKILL) takes its API processes with it: none keeps the port."""
    import socket

    import psutil

    service = Service(tmp_path)
    service.start("--processes", "2", "--threads", "1")
    try:
        assert service.proc is not None and service.http.get(f"{service.url}/ping").json() == {"status": "pong"}
        children = psutil.Process(service.proc.pid).children()
        assert len(children) == 2
        service.kill9()

        def gone() -> bool:
            return not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

        assert wait_for(gone, timeout=30)
        with socket.create_server(("127.0.0.1", service.port)):
            pass  # the port is free again
    finally:
        service.stop()
