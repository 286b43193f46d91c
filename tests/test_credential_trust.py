"""A stored secret never reaches a host whose identity was not established independently of the request
(security probe findings 1 and 2), checked against a real SSH server that records what it is offered."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.store.models import HostKey, Job
from controller.store.sealing import keygen
from tests.support.agent import write_agent_vars
from tests.support.app import make_token, running_app
from tests.support.recording_sshd import RecordingSshd
from tests.support.waiting import wait_job

pytestmark = pytest.mark.integration
FLEET_PASSWORD = "Fleet-Pa55-9d1e77c3"
PASTED_PASSWORD = "Pasted-Pa55-41aa0f"


@pytest.fixture
def sshd() -> Iterator[RecordingSshd]:
    server = RecordingSshd()
    yield server
    server.close()


@pytest.fixture
def trust_app(request, tmp_path: Path):
    package = tmp_path / "agent.deb"
    package.write_bytes(b"not installed: the login fails first")
    agent_vars = write_agent_vars(tmp_path / "agent-vars.json", package, hashlib.sha256(package.read_bytes()).hexdigest())
    with running_app(request, tmp_path, "local", CREDENTIALS_KEY=keygen(), AGENT_VARS_FILE=str(agent_vars)) as app:
        yield app


def job_count(app) -> int:
    with app.extensions["cloudx.db"].session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def store_fleet_password(client, ports: list[int] | None) -> None:
    body = {"name": "fleet-pw", "kind": "password", "username": "deploy", "secret": FLEET_PASSWORD}
    assert client.post("/api/credentials", json={**body, **({"ports": ports} if ports else {})}).status_code == 201


def deploy_body(server: RecordingSshd, **extra: object) -> dict:
    return {"target": server.address, "port": server.port, "os_type": "linux", "manager_ip": "127.0.0.1", **extra}


def test_an_operator_cannot_send_a_stored_password_to_a_host_of_theirs(trust_app, sshd):
    admin = trust_app.test_client()
    store_fleet_password(admin, ports=[sshd.port])
    operator = {"Authorization": f"Bearer {make_token(trust_app, 'operator', 'mallory')}"}
    # The host's key is first seen by this request: refused before a job exists, naming the host.
    refused = admin.post("/api/deploy/agent", json=deploy_body(sshd, credential="fleet-pw"), headers=operator)
    assert refused.status_code == 403, refused.get_json()
    assert f"[{sshd.address}]:{sshd.port}" in refused.get_json()["error"]
    # Keys given with the request establish nothing for a stored credential.
    planted = admin.post(
        "/api/deploy/agent", json=deploy_body(sshd, credential="fleet-pw", known_hosts=sshd.known_hosts_line), headers=operator
    )
    assert planted.status_code == 403, planted.get_json()
    # Nor does a pin made by a deployment that logged in with this very credential.
    with trust_app.extensions["cloudx.db"].session() as session:
        host, key_type, key = sshd.known_hosts_line.split()
        session.add(HostKey(host=host, key_type=key_type, public_key=key, source="pinned", job_id="j", credential="fleet-pw"))
    again = admin.post("/api/deploy/agent", json=deploy_body(sshd, credential="fleet-pw"), headers=operator)
    assert again.status_code == 403, again.get_json()
    assert job_count(trust_app) == 0
    assert sshd.passwords == [] and sshd.connections == 0


def test_a_stored_credential_is_used_only_on_its_ports(trust_app, sshd):
    client = trust_app.test_client()
    store_fleet_password(client, ports=None)  # the default: 22 for SSH
    assert client.put("/api/host-keys", json={"known_hosts": sshd.known_hosts_line}).status_code == 200
    refused = client.post("/api/deploy/agent", json=deploy_body(sshd, credential="fleet-pw"))
    assert refused.status_code == 403 and "only be used on port 22" in refused.get_json()["error"]
    assert job_count(trust_app) == 0 and sshd.connections == 0


def test_a_key_an_admin_trusted_lets_the_credential_through(trust_app, sshd):
    """The check is about identity, not a blanket refusal: with the server's key trusted, the job logs in."""
    client = trust_app.test_client()
    store_fleet_password(client, ports=[sshd.port])
    assert client.put("/api/host-keys", json={"known_hosts": sshd.known_hosts_line}).status_code == 200
    response = client.post("/api/deploy/agent", json=deploy_body(sshd, credential="fleet-pw"))
    assert response.status_code == 202, response.get_json()
    job = wait_job(client, response.get_json()["job_id"])
    assert job["status"] == "failed", job  # the server accepts no login
    assert ("deploy", FLEET_PASSWORD) in sshd.passwords


def test_the_worker_refuses_a_key_no_longer_trusted_before_any_login(trust_app, sshd, tmp_path):
    from controller.errors import ApiError
    from controller.runner.jobkind import JobSpec
    from controller.runner.kinds import kind_for

    client = trust_app.test_client()
    store_fleet_password(client, ports=[sshd.port])
    host = sshd.known_hosts_line.split()[0]
    assert client.put("/api/host-keys", json={"known_hosts": sshd.known_hosts_line}).status_code == 200
    trust_app.extensions["cloudx.config"].EXECUTOR_ENABLED = False
    job_id = client.post("/api/deploy/agent", json=deploy_body(sshd, credential="fleet-pw")).get_json()["job_id"]
    assert client.delete(f"/api/host-keys/{host}").status_code == 200
    db, config = trust_app.extensions["cloudx.db"], trust_app.extensions["cloudx.config"]
    with db.session() as session:
        job = session.get(Job, job_id)
        info = JobSpec.of(job)
    with pytest.raises(ApiError, match="established before"):
        kind_for("deploy").prepare(db, config, info, tmp_path)
    assert sshd.connections == 0


def test_a_pasted_password_pins_only_after_a_successful_connection(trust_app, sshd):
    client = trust_app.test_client()
    body = deploy_body(sshd, username="deploy", password=PASTED_PASSWORD)
    job = wait_job(client, client.post("/api/deploy/agent", json=body).get_json()["job_id"])
    # The key was scanned for this job only: the login failed, so nothing is trusted afterwards.
    assert job["status"] == "failed", job
    assert ("deploy", PASTED_PASSWORD) in sshd.passwords
    assert client.get("/api/host-keys").get_json()["host_keys"] == []
    hosts = client.get(f"/api/jobs/{job['id']}/hosts").get_json()["hosts"]
    assert [h["unreachable"] for h in hosts] == [1]
