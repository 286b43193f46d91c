"""`cloudx serve` as a real process over HTTP: scans, heartbeat, and a kill -9 with a job in flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import make_config
from tests.test_scan_integration import scanner_processes
from tests.testhosts import wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    def __init__(self, tmp_path: Path) -> None:
        self.config = make_config(tmp_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            **self.config.as_env(),
            "CLOUDX_PORT": str(self.port),
            "CLOUDX_SYNC_HEARTBEAT_FILE": self.config.SYNC_HEARTBEAT_FILE,
        }
        self.log = (tmp_path / "serve.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "serve"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert wait_for(self.up, timeout=30), "service did not start"

    def up(self) -> bool:
        try:
            return requests.get(f"{self.url}/ping", timeout=1).json() == {"status": "pong"}
        except requests.RequestException:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def service(tmp_path):
    service = Service(tmp_path)
    service.start()
    yield service
    service.stop()


def test_scan_over_http_and_heartbeat(service, target):
    api = service.url
    assert requests.get(f"{api}/health").json()["status"] == "ok"
    assert requests.get(f"{api}/sync-status").json()["status"] == "inactive"
    subprocess.run([sys.executable, "-m", "controller.cli", "heartbeat"], env=service.env, check=True)
    assert requests.get(f"{api}/sync-status").json()["status"] == "active"

    response = requests.post(f"{api}/scans", json={"target": target.address, "tool": "nmap", "scan_type": "default", "ports": "22,80"})
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert wait_for(lambda: requests.get(f"{api}/scans/{job_id}").json()["status"] == "successful", timeout=120)
    view = requests.get(f"{api}/scans/{job_id}").json()
    assert {(p["port"], p["state"]) for p in view["results"]["hosts"][0]["ports"]} == {(22, "open"), (80, "closed")}
    assert requests.get(f"{api}/scans").json()["scans"][0]["job_id"] == job_id
    hosts = requests.get(f"{api}/jobs/{job_id}/hosts").json()["hosts"]
    assert [(h["host"], h["failed"], h["unreachable"]) for h in hosts] == [("localhost", 0, 0)]
    assert requests.get(f"{api}/nope").status_code == 404
    assert requests.get(f"{api}/nope").json() == {
        "error": "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."
    }


@pytest.mark.parametrize("kill_workers", [False, True], ids=["controller-only", "controller-and-workers"])
def test_kill9_with_job_in_flight(tmp_path, slow_target, kill_workers):
    service = Service(tmp_path)
    service.start()
    api = service.url
    try:
        job_id = requests.post(
            f"{api}/scans", json={"target": slow_target.address, "tool": "nmap", "scan_type": "udp", "ports": "1-1000"}
        ).json()["job_id"]
        assert wait_for(lambda: requests.get(f"{api}/scans/{job_id}").json()["progress"] > 0, timeout=90)
        events_before = requests.get(f"{api}/jobs/{job_id}/events?limit=500").json()["events"]
        assert service.proc is not None
        if kill_workers:  # the whole machine "crashes": service and job workers die at once
            for child in __import__("psutil").Process(service.proc.pid).children():
                child.kill()
        service.kill9()
        service.start()
        # The orphaned worker stops its job itself (it gets SIGTERM when the service dies); a worker that
        # died too is found by the restarted service.
        assert wait_for(lambda: requests.get(f"{api}/jobs/{job_id}").json()["status"] != "running", timeout=30)
        job = requests.get(f"{api}/jobs/{job_id}").json()
        assert job["status"] == "failed" and "stopped" in job["status_reason"], job
        assert wait_for(lambda: not scanner_processes(slow_target.address), timeout=40), scanner_processes(slow_target.address)
        leftovers = subprocess.run(["pgrep", "-f", job_id], capture_output=True, text=True).stdout.split()
        assert leftovers == []
        events_after = requests.get(f"{api}/jobs/{job_id}/events?limit=500").json()["events"]
        counters = [e["counter"] for e in events_after]
        assert counters == sorted(counters) and len(set(counters)) == len(counters)
        assert {e["counter"] for e in events_before} <= set(counters)
    finally:
        service.stop()
