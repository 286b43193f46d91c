"""Relaunch: an ended job run again on its failed or unreachable hosts, from the stored summaries and events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.store.models import Job, JobEvent, JobHostSummary, utcnow
from tests.support.app import make_token, running_app
from tests.support.waiting import wait_job

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
HOSTS = ["192.0.2.11", "192.0.2.12", "192.0.2.13"]


def _ended(app, job_id, status="failed", summaries=None, events=()):
    """A job as the runner leaves it: final, with its per-host summaries and some events."""
    with app.extensions["cloudx.db"].session() as session:
        job = session.get(Job, job_id)
        job.status, job.finished_at = status, utcnow()
        for host, counts in (summaries or {}).items():
            session.add(JobHostSummary(job_id=job_id, host=host, **counts))
        for counter, (event, host, data) in enumerate(events, 1):
            session.add(JobEvent(job_id=job_id, counter=counter, event=event, host=host, event_data=data))


def _deploy(client, **extra):
    body = {
        "hosts": HOSTS,
        "os_type": "linux",
        "username": "root",
        "ssh_key": KEY,
        "group": "web",
        "enrollment_password": "Enr0ll",
        **extra,
    }
    response = client.post("/api/deployments", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def _relaunch(client, job_id, **body):
    return client.post(f"/api/jobs/{job_id}/relaunch", json=body)


def test_the_failed_hosts_of_a_deployment_are_relaunched_with_its_settings(app, client):
    job_id = _deploy(client)
    _ended(app, job_id, summaries={HOSTS[0]: {"ok": 5}, HOSTS[1]: {"ok": 2, "failed": 1}, HOSTS[2]: {"unreachable": 1}})

    # The key and the enrollment password were pasted, never stored: they must be given again.
    missing = _relaunch(client, job_id, hosts="failed")
    assert missing.status_code == 400 and missing.get_json()["field"] == "enrollment_password", missing.get_json()
    assert _relaunch(client, job_id, hosts="failed", enrollment_password="Enr0ll").get_json()["field"] == "ssh_key"

    secrets = {"ssh_key": KEY, "enrollment_password": "Enr0ll"}
    for which, expected in (("failed", [HOSTS[1]]), ("unreachable", [HOSTS[2]]), ("failed_or_unreachable", HOSTS[1:]), ("all", HOSTS)):
        response = _relaunch(client, job_id, hosts=which, **secrets)
        assert response.status_code == 202, response.get_json()
        view = response.get_json()
        assert view["relaunched_from"] == job_id and view["hosts"] == expected and view["status"] == "queued"
        with app.extensions["cloudx.db"].session() as session:
            new = session.get(Job, view["job_id"])
            old = session.get(Job, job_id)
            assert new.relaunched_from == job_id and new.playbook == old.playbook and new.extra_vars == old.extra_vars
            assert new.settings["hosts"] == expected and new.settings["os_type"] == "linux" and new.settings["auth"] == "key"
            assert sorted(new.settings["pasted"]) == ["enrollment_password", "ssh_key"]
            assert "Enr0ll" not in json.dumps([new.extra_vars, new.settings]) and "PRIVATE KEY" not in json.dumps(new.settings)
    shown = client.get(f"/api/jobs/{view['job_id']}").get_json()
    assert shown["relaunched_from"] == job_id


def test_a_job_that_never_reached_its_recap_is_relaunched_from_its_events(app, client):
    """AWX answers 400 when a job has no stats (#11519): a canceled job or a lost worker leaves only events."""
    job_id = _deploy(client, enrollment_password=None)
    events = [
        ("runner_on_ok", HOSTS[0], {}),
        ("runner_on_failed", HOSTS[1], {"ignore_errors": True}),  # ignored: not a failure
        ("runner_on_failed", HOSTS[2], {"res": {"msg": "boom"}}),
    ]
    _ended(app, job_id, status="canceled", events=events)
    response = _relaunch(client, job_id, hosts="failed", ssh_key=KEY)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["hosts"] == [HOSTS[2]]
    none = _relaunch(client, job_id, hosts="unreachable", ssh_key=KEY)
    assert none.status_code == 409 and none.get_json()["field"] == "hosts" and "unreachable" in none.get_json()["error"]


def test_what_cannot_be_relaunched_is_refused_and_queues_nothing(app, client):
    job_id = _deploy(client)
    running = _relaunch(client, job_id, ssh_key=KEY, enrollment_password="x")
    assert running.status_code == 409 and "still queued" in running.get_json()["error"]
    _ended(app, job_id, status="successful", summaries={h: {"ok": 3} for h in HOSTS})
    nothing = _relaunch(client, job_id, ssh_key=KEY, enrollment_password="x")
    assert nothing.status_code == 409 and "nothing to relaunch" in nothing.get_json()["error"]
    assert _relaunch(client, job_id, hosts="some").status_code == 400
    assert client.post("/api/jobs/no-such-job/relaunch", json={}).status_code == 404

    operator = {"Authorization": f"Bearer {make_token(app, 'operator', 'op1')}"}
    other = client.post(f"/api/jobs/{job_id}/relaunch", headers=operator, json={"hosts": "all", "ssh_key": KEY, "enrollment_password": "x"})
    assert other.status_code == 403 and "only its creator or an admin" in other.get_json()["error"]
    with app.extensions["cloudx.db"].session() as session:
        assert session.query(Job).count() == 1


def test_a_relaunch_is_checked_as_a_new_request(app, client):
    from controller.services.policy import update_policy

    job_id = _deploy(client)
    _ended(app, job_id, summaries={HOSTS[1]: {"failed": 1}})
    with app.extensions["cloudx.db"].session() as session:
        update_policy(session, {"scope": ["198.18.0.0/15"]}, "tests")
    refused = _relaunch(client, job_id, ssh_key=KEY, enrollment_password="x")
    assert refused.status_code == 403 and "outside the policy scope" in refused.get_json()["error"]


def test_a_failed_scan_is_run_again_whole(app, client):
    submitted = client.post(
        "/api/scans", json={"tool": "nmap", "scan_type": "tcp", "target": "192.0.2.20", "ports": "22,443", "timeout": 90}
    )
    job_id = submitted.get_json()["job_id"]
    _ended(app, job_id, summaries={"localhost": {"ok": 2, "failed": 1}})
    response = _relaunch(client, job_id, hosts="failed")
    assert response.status_code == 202, response.get_json()
    again = client.get(f"/api/scans/{response.get_json()['job_id']}").get_json()
    assert (again["tool"], again["target"], again["ports"], again["scan_type"]) == ("nmap", "192.0.2.20", "22,443", "tcp")
    with app.extensions["cloudx.db"].session() as session:
        assert session.get(Job, again["job_id"]).extra_vars["scanner_timeout"] == 90


@pytest.mark.integration
def test_the_failed_host_of_a_real_deployment_is_relaunched(request, tmp_path, agent_package, booted_hosts, ssh_key, manager):
    """Two booted hosts; one made to fail (its Python made unrunnable), fixed, then only it is relaunched."""
    from tests.support.agent import ENROLLMENT_PASSWORD, write_agent_vars

    agent_vars = write_agent_vars(tmp_path / "agent-vars.json", *agent_package)
    good, bad = booted_hosts[:2]
    with running_app(request, tmp_path, "local", AGENT_VARS_FILE=str(agent_vars)) as app:
        client = app.test_client()
        secrets = {"ssh_key": ssh_key.read_text(), "enrollment_password": ENROLLMENT_PASSWORD}
        body = {
            "hosts": [good.address, bad.address],
            "os_type": "linux",
            "username": "root",
            "manager_ip": manager.sock.getsockname()[0],
            **secrets,
        }
        removal = wait_job(client, client.post("/api/deployments", json={**body, "state": "absent"}).get_json()["job_id"])
        assert removal["status"] == "successful", removal
        # Its Python cannot be run: every module fails there (a failed host, not an unreachable one).
        python = bad.shell("readlink -f /usr/bin/python3").stdout.strip()
        bad.shell(f"chmod 000 {python}")
        try:
            first = wait_job(client, client.post("/api/deployments", json=body).get_json()["job_id"])
            summaries = {s["host"]: s for s in client.get(f"/api/jobs/{first['id']}/hosts").get_json()["hosts"]}
            assert first["status"] == "failed" and summaries[bad.address]["failed"] and not summaries[good.address]["failed"], summaries
        finally:
            bad.shell(f"chmod 755 {python}")
        response = _relaunch(client, first["id"], hosts="failed", **secrets)
        assert response.status_code == 202 and response.get_json()["hosts"] == [bad.address], response.get_json()
        second = wait_job(client, response.get_json()["job_id"])
        assert second["status"] == "successful" and second["relaunched_from"] == first["id"]
        assert [s["host"] for s in client.get(f"/api/jobs/{second['id']}/hosts").get_json()["hosts"]] == [bad.address]
        assert bad.shell("systemctl is-active wazuh-agent").stdout.strip() == "active"
        stored = b"".join(p.read_bytes() for p in Path(app.extensions["cloudx.config"].ARTIFACTS_DIR).rglob("*") if p.is_file())
        assert ENROLLMENT_PASSWORD.encode() not in stored


def test_a_relaunch_keeps_only_the_known_hosts_lines_of_its_hosts_and_trusts_the_recap(app, client):
    lines = [f"{host} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" for i, host in enumerate(HOSTS)]
    job_id = _deploy(client, enrollment_password=None, known_hosts=lines)
    # The recap says HOSTS[0] rescued its failure: its runner_on_failed event does not make it failed.
    _ended(
        app,
        job_id,
        summaries={HOSTS[0]: {"ok": 3, "rescued": 1}, HOSTS[1]: {"failed": 1}},
        events=[("runner_on_failed", HOSTS[0], {}), ("runner_on_failed", HOSTS[1], {})],
    )
    response = _relaunch(client, job_id, hosts="failed", ssh_key=KEY)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["hosts"] == [HOSTS[1]]
    with app.extensions["cloudx.db"].session() as session:
        assert session.get(Job, response.get_json()["job_id"]).settings["known_hosts"] == [lines[1]]
