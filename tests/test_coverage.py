"""Agent coverage from the controller's own records: assets the scans saw against what the deployments did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.services.policy import update_policy
from controller.store.models import Job, JobHostSummary
from tests.support.stored import store_scan

TARGET = "198.18.5.0/24"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def _host(address: str) -> dict:
    port = {"protocol": "tcp", "port": 22, "state": "open", "reason": "syn-ack", "service": "ssh", "product": None, "version": None}
    return {"address": address, "status": "up", "reason": "syn-ack", "hostnames": [], "mac": None, "ports": [port]}


def _deployed(app, client, hosts: list[str], state: str = "present", failed: tuple[str, ...] = (), days_ago: float = 0) -> str:
    """A deployment as the runner leaves it: its job final and one result per host (the job's playbook_on_stats)."""
    body = {"hosts": hosts, "os_type": "linux", "username": "root", "ssh_key": KEY, "state": state}
    response = client.post("/api/deployments", json=body)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    with app.extensions["cloudx.db"].session() as session:
        job = session.get(Job, job_id)
        job.status = "failed" if failed else "successful"
        job.finished_at = datetime.now(UTC) - timedelta(days=days_ago)
        for host in hosts:
            session.add(JobHostSummary(job_id=job_id, host=host, ok=3, failed=int(host in failed)))
    return job_id


def _coverage(client, **query):
    response = client.get("/api/coverage", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_coverage_counts_what_the_scans_saw_against_what_the_deployments_did(app, client):
    store_scan(app, client, [_host(f"198.18.5.{i}") for i in range(1, 6)], TARGET, ports="22")
    report = _coverage(client)
    assert report["counts"] == {"assets": 5, "with_agent": 0, "covered": 0, "uncovered": 5, "unseen": 0, "failed": 0}

    _deployed(app, client, ["198.18.5.1", "198.18.5.2"])
    failed_job = _deployed(app, client, ["198.18.5.3"], failed=("198.18.5.3",))
    _deployed(app, client, ["198.18.5.9"], days_ago=1)  # never seen by a scan
    report = _coverage(client)
    assert report["counts"] == {"assets": 5, "with_agent": 3, "covered": 2, "uncovered": 3, "unseen": 1, "failed": 1}
    assert [u["address"] for u in report["uncovered"]] == ["198.18.5.3", "198.18.5.4", "198.18.5.5"]
    assert [(f["address"], f["job_id"]) for f in report["failed"]] == [("198.18.5.3", failed_job)]
    assert [u["address"] for u in report["unseen"]] == ["198.18.5.9"]

    # Removed since: uncovered again, with the removal's time.
    _deployed(app, client, ["198.18.5.2"], state="absent")
    report = _coverage(client, network="198.18.5.0/30")
    assert report["network"] == "198.18.5.0/30"
    assert [(u["address"], u["removed"] is not None) for u in report["uncovered"]] == [("198.18.5.2", True), ("198.18.5.3", False)]
    assert report["counts"]["assets"] == 3 and report["counts"]["with_agent"] == 1

    assert _coverage(client, unseen_days="0")["counts"]["unseen"] >= 1
    assert len(_coverage(client, limit="1")["uncovered"]) == 1
    for query, field in [({"network": "x"}, "network"), ({"unseen_days": "-1"}, "unseen_days"), ({"limit": "0"}, "limit")]:
        response = client.get("/api/coverage", query_string=query)
        assert response.status_code == 400 and response.get_json()["field"] == field


def test_a_deployment_to_what_is_uncovered_goes_to_those_hosts_through_the_same_checks(app, client):
    store_scan(app, client, [_host(f"198.18.5.{i}") for i in range(1, 4)], TARGET, ports="22")
    _deployed(app, client, ["198.18.5.1"])
    body = {"coverage": {"network": TARGET}, "os_type": "linux", "username": "root", "ssh_key": KEY}
    response = client.post("/api/deployments", json=body)
    assert response.status_code == 202, response.get_json()
    job = client.get(f"/api/jobs/{response.get_json()['job_id']}").get_json()
    with app.extensions["cloudx.db"].session() as session:
        assert session.get(Job, job["id"]).settings["hosts"] == ["198.18.5.2", "198.18.5.3"]

    # Nothing uncovered in a network: refused, nothing queued.
    store_scan(app, client, [_host("192.0.2.7")], "192.0.2.0/24", ports="22")
    before = len(client.get("/api/jobs").get_json()["jobs"])
    nothing = client.post("/api/deployments", json={**body, "coverage": {"network": "198.18.5.1/32"}})
    assert nothing.status_code == 409 and nothing.get_json()["field"] == "coverage"
    # Outside the scope policy: refused as any host list is.
    with app.extensions["cloudx.db"].session() as session:
        update_policy(session, {"scope": ["198.18.0.0/15"]}, "tests")
    outside = client.post("/api/deployments", json={**body, "coverage": {"network": "192.0.2.0/24"}})
    assert outside.status_code == 403, outside.get_json()
    assert len(client.get("/api/jobs").get_json()["jobs"]) == before
    both = client.post("/api/deployments", json={**body, "hosts": ["198.18.5.2"]})
    assert both.status_code == 400 and both.get_json()["field"] == "hosts"


def test_cloudx_coverage_and_deploy_uncovered_refusals(app, client, runner, tmp_path):
    """The CLI reads the same records; `deploy --uncovered` goes through the same request and refuses the same way
    (no job runs here: nothing is uncovered, or the options are incomplete)."""
    from controller.cli import cli

    store_scan(app, client, [_host("198.18.5.1")], TARGET, ports="22")
    _deployed(app, client, ["198.18.5.1"])
    shown = runner.invoke(cli, ["coverage", "--network", TARGET])
    assert shown.exit_code == 0 and "1 assets seen up, 1 with the agent, 0 without" in shown.output, shown.output
    as_json = runner.invoke(cli, ["coverage", "--json"])
    assert as_json.exit_code == 0 and '"uncovered": 0' in as_json.output
    key = tmp_path / "id_test"
    key.write_text(KEY)
    jobs = len(client.get("/api/jobs").get_json()["jobs"])
    for args, words in (
        (["--uncovered"], "--uncovered and --network go together"),
        (["--uncovered", "--network", TARGET], "no asset in 198.18.5.0/24 is without the agent"),
        (["198.18.5.1", "--uncovered", "--network", TARGET], "give one of hosts"),
    ):
        result = runner.invoke(cli, ["deploy", *args, "--user", "root", "--ssh-key", str(key)])
        assert result.exit_code != 0 and words in result.output, (args, result.output)
    assert len(client.get("/api/jobs").get_json()["jobs"]) == jobs
