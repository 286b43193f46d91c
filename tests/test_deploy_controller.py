"""Agent deployment through the controller (API -> executor -> worker -> ansible-runner) to booted hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.store.models import Job
from tests.support.agent import ENROLLMENT_PASSWORD, write_agent_vars
from tests.support.app import running_app
from tests.support.cluster import stored_bytes
from tests.support.waiting import wait_job, wait_scan

pytestmark = pytest.mark.integration
SSH_PASSWORD = "Ssh-Pa55word-4e2d91"


@pytest.fixture
def deploy_app(request, tmp_path, agent_package, executor_kind):
    agent_vars = write_agent_vars(tmp_path / "agent-vars.json", *agent_package)
    with running_app(request, tmp_path, executor_kind, AGENT_VARS_FILE=str(agent_vars)) as app:
        yield app


def all_stored_bytes(app, tmp_path: Path) -> bytes:
    """Every byte the controller stored: the database, the artifacts, the worker logs and the broker's contents."""
    app.extensions["cloudx.db"].dispose()
    return stored_bytes(app.extensions["cloudx.config"], tmp_path)


def test_deploy_to_host_list_pins_keys_and_keeps_secrets_out(deploy_app, booted_hosts, ssh_key, manager, tmp_path, capfd):
    client = deploy_app.test_client()
    hosts = booted_hosts[:2]
    private_key = ssh_key.read_text()
    body = {
        "hosts": [h.address for h in hosts],
        "os_type": "linux",
        "username": "root",
        "ssh_key": private_key,
        "manager_ip": manager.sock.getsockname()[0],
        "group": "api-fleet",
        "enrollment_password": ENROLLMENT_PASSWORD,
    }
    # The hosts live for the session: start from hosts without the agent (the other executor's run installed it).
    removal = wait_job(client, client.post("/api/deployments", json={**body, "state": "absent"}).get_json()["job_id"])
    assert removal["status"] == "successful", removal
    response = client.post("/api/deployments", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_job(client, response.get_json()["job_id"])
    assert job["status"] == "successful", (
        job,
        [e["stdout"] for e in client.get(f"/api/jobs/{job['id']}/events?limit=500").get_json()["events"]][-8:],
    )
    summaries = client.get(f"/api/jobs/{job['id']}/hosts").get_json()["hosts"]
    assert sorted(s["host"] for s in summaries) == sorted(h.address for h in hosts)
    assert all(s["failed"] == 0 and s["unreachable"] == 0 and s["changed"] > 0 for s in summaries)
    for host in hosts:
        assert host.shell("systemctl is-active wazuh-agent").stdout.strip() == "active"
        assert "<groups>api-fleet</groups>" in host.shell("cat /var/ossec/etc/ossec.conf").stdout

    pinned = client.get("/api/host-keys").get_json()["host_keys"]
    for host in hosts:
        mine = {f"{k['key_type']} {k['public_key']}" for k in pinned if k["host"] == host.address}
        assert mine and mine <= {" ".join(line.split()[:2]) for line in host.host_keys()}
        # Pinned after the job's own successful connection, with no stored credential.
        assert {(k["source"], k["credential"]) for k in pinned if k["host"] == host.address} == {("pinned", None)}

    # The same deployment again changes nothing.
    again = wait_job(client, client.post("/api/deployments", json=body).get_json()["job_id"])
    assert again["status"] == "successful"
    assert all(s["changed"] == 0 for s in client.get(f"/api/jobs/{again['id']}/hosts").get_json()["hosts"])

    # Coverage from these real records: both hosts have the agent; a real scan sees the first, so it is covered and
    # the second (no scan saw it) is unseen.
    scan = client.post("/api/scans", json={"target": hosts[0].address, "tool": "nmap", "scan_type": "default", "ports": "22"})
    assert scan.status_code == 202, scan.get_json()
    scanned = wait_scan(client, scan.get_json()["job_id"], 300)
    assert scanned["status"] == "successful", (scanned["status_reason"], scanned["results"]["summary"])
    network = f"{hosts[0].address.rsplit('.', 2)[0]}.0.0/16"
    report = client.get("/api/coverage", query_string={"network": network}).get_json()
    assert report["counts"]["assets"] == 1 and report["counts"]["covered"] == 1 and report["counts"]["uncovered"] == 0, report
    assert {u["address"] for u in report["unseen"]} == {hosts[1].address}, report
    nothing = client.post("/api/deployments", json={**body, "coverage": {"network": network}, "hosts": None})
    assert nothing.status_code == 409 and nothing.get_json()["field"] == "coverage", nothing.get_json()

    out, err = capfd.readouterr()
    stored = all_stored_bytes(deploy_app, tmp_path) + out.encode() + err.encode()
    key_body = "".join(private_key.splitlines()[1:-1])[:60]
    for secret in (ENROLLMENT_PASSWORD, key_body):
        assert stored.count(secret.encode()) == 0, secret
    assert not list(Path("/dev/shm").glob("cloudx-*"))


def test_deploy_agent_with_password_and_changed_host_key(deploy_app, booted_hosts, manager, tmp_path, capfd):
    client = deploy_app.test_client()
    host = booted_hosts[2]
    host.shell(
        f"echo 'root:{SSH_PASSWORD}' | chpasswd && echo 'PermitRootLogin yes' > /etc/ssh/sshd_config.d/cloudx-tests.conf"
        " && systemctl restart ssh"
    )
    body = {
        "target": host.address,
        "os_type": "linux",
        "username": "root",
        "password": SSH_PASSWORD,
        "agent_name": "web-01",
        "group": "single",
        "manager_ip": manager.sock.getsockname()[0],
        "enrollment_password": ENROLLMENT_PASSWORD,
    }
    first = wait_job(client, client.post("/api/deploy/agent", json=body).get_json()["job_id"])
    assert first["status"] == "successful", first
    assert first["extra_vars"]["cloudx_agent_name"] == "web-01" and "password" not in json.dumps(first["extra_vars"]).lower()
    host.shell("rm /etc/ssh/ssh_host_* && ssh-keygen -A && systemctl restart ssh")
    second = wait_job(client, client.post("/api/deploy/agent", json=body).get_json()["job_id"])
    assert second["status"] == "failed"
    events = client.get(f"/api/jobs/{second['id']}/events?limit=500").get_json()["events"]
    failures = [e for e in events if e["event"] in ("runner_on_unreachable", "runner_on_failed")]
    assert failures and "host key" in json.dumps(failures[0]["event_data"]).lower(), [e["stdout"] for e in events][-6:]

    out, err = capfd.readouterr()
    stored = all_stored_bytes(deploy_app, tmp_path) + out.encode() + err.encode()
    for secret in (SSH_PASSWORD, ENROLLMENT_PASSWORD):
        assert stored.count(secret.encode()) == 0, secret
    with deploy_app.extensions["cloudx.db"].session() as session:
        assert all(job.secrets_holder for job in session.scalars(select(Job)))


def test_deployment_requests_are_validated(deploy_app):
    client = deploy_app.test_client()
    base = {"target": "198.18.0.2", "os_type": "linux", "username": "root", "password": "x"}
    for change, field in [
        ({"target": "-oProxyCommand=id"}, "target"),
        ({"os_type": "beos"}, "os_type"),
        ({"username": "root;id"}, "username"),
        ({"agent_name": "-x"}, "agent_name"),
        ({"group": "a b"}, "group"),
        ({"manager_ip": "10.0.0.1 && id"}, "manager_ip"),
        ({"password": None, "ssh_key": "not a key"}, "ssh_key"),
        ({"ssh_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----"}, "ssh_key"),
        ({"known_hosts": ["evil line"]}, "known_hosts"),
        ({"port": 70000}, "port"),
        ({"extra": 1}, "extra"),
    ]:
        body = {k: v for k, v in {**base, **change}.items() if v is not None}
        response = client.post("/api/deploy/agent", json=body)
        assert response.status_code == 400 and response.get_json()["field"] == field, (change, response.get_json())
    assert client.post("/api/deployments", json={"hosts": ["198.18.0.2"], "limit": "linux"}).status_code == 400
    assert client.post("/api/deployments", json={"limit": "--x"}).get_json()["field"] == "limit"
    assert client.post("/api/deployments", json={"limit": "linux", "state": "gone"}).get_json()["field"] == "state"
    assert client.get("/api/jobs").get_json()["jobs"] == []


def test_cli_deploy_and_remove(runner, monkeypatch, booted_hosts, ssh_key, manager, agent_package, tmp_path):
    from controller.cli import cli

    agent_vars = write_agent_vars(tmp_path / "agent-vars.json", *agent_package)
    monkeypatch.setenv("CLOUDX_AGENT_VARS_FILE", str(agent_vars))
    password_file = tmp_path / "enroll.pass"
    password_file.write_text(ENROLLMENT_PASSWORD + "\n")
    host = booted_hosts[1]
    common = [host.address, "--user", "root", "--ssh-key", str(ssh_key)]
    result = runner.invoke(
        cli,
        ["deploy", *common, "--manager", manager.sock.getsockname()[0], "--group", "cli", "--enrollment-password-file", str(password_file)],
    )
    assert result.exit_code == 0, result.output
    assert f"{host.address}" in result.output and "Start the agent and enable it at boot" in result.output
    recap = [line.split() for line in result.output.splitlines() if line.startswith(host.address) and len(line.split()) == 5]
    assert recap and recap[-1][3:] == ["0", "0"]
    removed = runner.invoke(cli, ["deploy", *common, "--state", "absent"])
    assert removed.exit_code == 0, removed.output
    assert host.shell("test -e /var/ossec || echo gone").stdout.strip() == "gone"
    bad = runner.invoke(cli, ["deploy", "--user", "root", "--ssh-key", str(ssh_key), "--", "-oProxyCommand=id"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "Error:" in bad.output
