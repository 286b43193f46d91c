"""A deployment's set-up (inventory, host key scans) runs under the job's heartbeat and cancel watch
(security probe finding 5): 20 in-scope hosts that accept TCP but never send an SSH banner."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import write_agent_vars
from tests.support.app import running_app
from tests.support.waiting import wait_job

pytestmark = pytest.mark.integration
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 22)]


class SilentHosts:
    """Listeners on 20 loopback addresses that accept connections and never say a word."""

    def __init__(self) -> None:
        probe = socket.create_server((ADDRESSES[0], 0))
        self.port = probe.getsockname()[1]
        self.socks = [probe] + [socket.create_server((a, self.port), backlog=64) for a in ADDRESSES[1:]]
        self.held: list[socket.socket] = []
        for sock in self.socks:
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                self.held.append(sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for sock in self.socks + self.held:
            sock.close()


@pytest.fixture
def silent() -> Iterator[SilentHosts]:
    hosts = SilentHosts()
    yield hosts
    hosts.close()


@pytest.fixture
def setup_app(request, tmp_path: Path, silent: SilentHosts):
    package = tmp_path / "agent.deb"
    package.write_bytes(b"never installed: no host answers")
    agent_vars = write_agent_vars(tmp_path / "agent-vars.json", package, hashlib.sha256(package.read_bytes()).hexdigest())
    # A short lost-worker bound: set-up that beats no heartbeat would end the job as "worker lost".
    with running_app(request, tmp_path, "local", AGENT_VARS_FILE=str(agent_vars), WORKER_LOST_AFTER=6) as app:
        inventory = Path(app.extensions["cloudx.config"].INVENTORY) / "hosts.yml"
        lines = [f"            silent{i}: {{ansible_host: {a}, ansible_port: {silent.port}}}" for i, a in enumerate(ADDRESSES)]
        inventory.write_text(
            inventory.read_text()
            + "    agents:\n      children:\n        linux:\n          hosts:\n"
            + "\n".join(lines)
            + "\n          vars: {ansible_user: root, ansible_python_interpreter: /usr/bin/python3}\n"
        )
        yield app


def test_cancel_takes_effect_during_set_up(setup_app):
    client = setup_app.test_client()
    job_id = client.post("/api/deployments", json={"limit": "linux", "os_type": "linux", "manager_ip": "127.0.0.1"}).get_json()["job_id"]
    wait_job(client, job_id, until=("running",))
    time.sleep(1.0)  # inside the host key scans
    assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
    asked = time.monotonic()
    job = wait_job(client, job_id)
    took = time.monotonic() - asked
    assert job["status"] == "canceled", (job, f"{took:.1f} s after the cancel")
    assert "prepared" in job["status_reason"] or "request" in job["status_reason"]


def test_unresponsive_hosts_end_unreachable_each_with_a_reason(setup_app):
    client = setup_app.test_client()
    job_id = client.post("/api/deployments", json={"limit": "linux", "os_type": "linux", "manager_ip": "127.0.0.1"}).get_json()["job_id"]
    job = wait_job(client, job_id)
    assert job["status"] == "failed", job  # not "worker lost": the heartbeat went on during set-up
    hosts = client.get(f"/api/jobs/{job_id}/hosts").get_json()["hosts"]
    assert len(hosts) == 20 and all(h["unreachable"] == 1 for h in hosts), hosts
    events = client.get(f"/api/jobs/{job_id}/events?event=runner_on_unreachable&limit=100").get_json()["events"]
    reasons = {e["host"]: e["event_data"]["res"]["msg"] for e in events}
    assert len(reasons) == 20 and all(reasons.values()), reasons
