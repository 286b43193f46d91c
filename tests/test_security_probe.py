"""Findings of the hostile probe (issue 12) that the API decides before any job runs: quotas, the largest scan,
the audit log, what errors reveal, token expiry and revocation, who may stop a job."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.store.models import ApiToken, AuditEntry, Job, utcnow
from tests.support.app import make_token

SCAN = {"target": "192.0.2.10", "tool": "nmap", "scan_type": "default", "ports": "22"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jobs_of(app, name: str) -> list[Job]:
    with app.extensions["cloudx.db"].session() as session:
        rows = list(session.scalars(select(Job).where(Job.created_by == name).order_by(Job.created_at)))
        session.expunge_all()
        return rows


# --- finding 4: one operator cannot fill the queue for everyone ------------------------


def test_each_token_has_a_quota_of_waiting_jobs(app, client):
    assert client.put("/api/policy", json={"token_max_queued": 3}).status_code == 200
    greedy, other = make_token(app, "operator", "greedy"), make_token(app, "operator", "other")
    for _ in range(3):
        assert client.post("/api/scans", json=SCAN, headers=bearer(greedy)).status_code == 202
    refused = client.post("/api/scans", json=SCAN, headers=bearer(greedy))
    assert refused.status_code == 429 and "'greedy' already has 3 jobs waiting" in refused.get_json()["error"]
    assert refused.headers["Retry-After"]
    assert len(jobs_of(app, "greedy")) == 3  # the refused one left nothing behind
    # Everyone else still gets in; admins have no quota.
    assert client.post("/api/scans", json=SCAN, headers=bearer(other)).status_code == 202
    for _ in range(5):
        assert client.post("/api/scans", json=SCAN).status_code == 202
    # A token's own quota overrides the policy's.
    roomy = make_token(app, "operator", "roomy", max_queued=5)
    assert [client.post("/api/scans", json=SCAN, headers=bearer(roomy)).status_code for _ in range(6)] == [202] * 5 + [429]


def test_running_jobs_are_claimed_within_the_submitters_quota(app, client):
    from controller.queue.jobs import claim_next

    assert client.put("/api/policy", json={"token_max_running": 1}).status_code == 200
    busy = make_token(app, "operator", "busy")
    first, second = (client.post("/api/scans", json=SCAN, headers=bearer(busy)).get_json()["job_id"] for _ in range(2))
    admin_job = client.post("/api/scans", json=SCAN).get_json()["job_id"]
    db = app.extensions["cloudx.db"]
    with db.session() as session:
        assert claim_next(session, 10, "w", "n") == first
    with db.session() as session:  # busy runs one already: its second job waits, the admin's runs
        assert claim_next(session, 10, "w", "n") == admin_job
        assert claim_next(session, 10, "w", "n") is None
        assert claim_next(session, 10, "w", "n", only=second) is None  # a Celery worker's claim too
    with db.session() as session:
        session.get(Job, first).status = "successful"
    with db.session() as session:
        assert claim_next(session, 10, "w", "n") == second


def test_the_largest_scan_timeout_depends_on_the_role(app, client):
    operator = bearer(make_token(app, "operator"))
    long = client.post("/api/scans", json={**SCAN, "timeout": 86400}, headers=operator)
    assert long.status_code == 400
    assert long.get_json() == {"error": "timeout must be an integer number of seconds from 1 to 7200", "field": "timeout"}
    assert client.post("/api/scans", json={**SCAN, "timeout": 7200}, headers=operator).status_code == 202
    assert client.post("/api/scans", json={**SCAN, "timeout": 86400}).status_code == 202  # admin
    assert client.put("/api/policy", json={"max_scan_timeout": {"operator": 600}}).status_code == 200
    assert client.post("/api/scans", json={**SCAN, "timeout": 601}, headers=operator).status_code == 400
    assert client.put("/api/policy", json={"max_scan_timeout": {"viewer": 5}}).status_code == 400


# --- finding 6: a scan the scanner would refuse is refused before it starts ----------------


def test_a_network_larger_than_the_scanner_allows_is_refused_at_once(app, client):
    client.put("/api/policy", json={"scope": ["10.0.0.0/8"]})
    large = bearer(make_token(app, "operator", allow_large_targets=True))
    refused = client.post("/api/scans", json={**SCAN, "target": "10.0.0.0/8"}, headers=large)
    assert refused.status_code == 400 and refused.get_json()["field"] == "target"
    assert "16777216 addresses, more than the scanner's limit of 65536" in refused.get_json()["error"]
    accepted = client.post("/api/scans", json={**SCAN, "target": "10.1.0.0/16"}, headers=large)
    assert accepted.status_code == 202
    extra_vars = client.get(f"/api/jobs/{accepted.get_json()['job_id']}").get_json()["extra_vars"]
    assert extra_vars["scanner_max_addresses"] == 65536  # the scanner applies the same limit
    assert len(jobs_of(app, "tests")) == 0


# --- finding 7: the audit log ----------------------------------------------------


def audit_rows(app) -> list[AuditEntry]:
    with app.extensions["cloudx.db"].session() as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        session.expunge_all()
        return rows


def test_a_lone_surrogate_in_a_key_is_refused_and_still_audited(app, client):
    body = b'{"target": "192.0.2.1", "tool": "nmap", "scan_type": "default", "\\ud800": 1}'
    response = client.post("/api/scans", data=body, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["field"]
    [entry] = audit_rows(app)
    assert (entry.status, entry.outcome, entry.path) == (400, "refused", "/api/scans")
    assert "\\ud800" in entry.detail


def test_unauthenticated_denials_cannot_grow_the_audit_log(app, monkeypatch):
    from controller.api import audit

    monkeypatch.setattr(audit, "AGGREGATE_FLUSH_SECONDS", 0.0)
    anonymous = app.test_client()
    anonymous.environ_base.pop("HTTP_AUTHORIZATION", None)
    for _ in range(300):
        assert anonymous.post("/api/scans", json=SCAN).status_code == 401
    rows = audit_rows(app)
    assert len(rows) <= audit.ANONYMOUS_ROWS_PER_MINUTE + 2  # a minute may turn during the loop
    assert sum(r.count for r in rows) >= 299 and all(r.actor == "anonymous" for r in rows)
    # Authenticated requests are each recorded as before.
    app.test_client().post("/api/scans", json=SCAN)
    assert audit_rows(app)[-1].actor == "tests"


def test_stored_request_ids_are_unique_whatever_the_client_sends(app, client):
    for _ in range(3):
        client.post("/api/scans", json=SCAN, headers={"X-Request-ID": "same-id"})
    rows = audit_rows(app)
    assert len({r.request_id for r in rows}) == 3 and {r.client_request_id for r in rows} == {"same-id"}


# --- finding 8: errors say what is wrong, without paths or resolved addresses ---------------


@pytest.mark.slow  # ansible-inventory or a worker process
@pytest.mark.parametrize("limit", ["&", "!", "all:&", "linux[99999999999999999999]"])
def test_a_bad_inventory_pattern_reveals_no_paths(app, client, limit):
    response = client.post("/api/deployments", json={"limit": limit, "os_type": "linux"})
    assert response.status_code == 400 and response.get_json()["field"] == "limit"
    text = json.dumps(response.get_json())
    for leak in ("/", "ansible-inventory", "Traceback", "Error", "bug"):  # no path, command line or exception
        assert leak not in text, (leak, text)


def test_scope_refusals_do_not_say_what_a_name_resolves_to(app, client, monkeypatch):
    import socket

    real = socket.getaddrinfo
    internal = {"db.internal.test": "10.20.30.40"}

    def fake(host, *args, **kwargs):
        if host in internal:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (internal[host], 0))]
        if host == "nothing.internal.test":
            raise socket.gaierror(-2, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    exists = client.post("/api/scans", json={**SCAN, "target": "db.internal.test"}).get_json()["error"]
    missing = client.post("/api/scans", json={**SCAN, "target": "nothing.internal.test"}).get_json()["error"]
    assert "10.20.30.40" not in exists
    # A name that exists and one that does not get the same answer: no oracle for internal names.
    assert exists.replace("db", "X") == missing.replace("nothing", "X")


# --- finding 9 (inventory part): hosts named by a hostname connect to the checked address -----------


@pytest.mark.slow  # ansible-inventory or a worker process
def test_inventory_hosts_named_by_a_hostname_connect_to_the_checked_address(app, config, tmp_path):
    from controller.services import deployments

    (Path(config.INVENTORY) / "hosts.yml").write_text(
        "all:\n  children:\n    agents:\n      children:\n        linux:\n          hosts:\n            localhost: {}\n"
    )
    config.HOST_KEY_POLICY = "strict"  # no key scan: only the inventory is looked at here
    db = app.extensions["cloudx.db"]
    job = {"id": "j1", "inventory": config.INVENTORY, "limit": "localhost", "settings": {"os_type": "linux", "known_hosts": []}}
    job.update(extra_vars={}, created_by="cli:root")
    # The job inventory's own host_vars name the host again: the checked address still wins.
    (Path(config.INVENTORY) / "host_vars").mkdir()
    (Path(config.INVENTORY) / "host_vars" / "localhost.yml").write_text("ansible_host: localhost\nansible_ssh_host: localhost\n")
    plan = deployments.prepare(db, config, job, tmp_path)
    assert plan["inventory"][0] == config.INVENTORY
    overrides = json.loads((Path(plan["inventory"][1]) / "host_vars" / "localhost.json").read_text())
    assert overrides == {"ansible_host": "127.0.0.1", "ansible_ssh_host": "127.0.0.1"}
    [host] = deployments.inventory_hosts(plan["inventory"], "localhost")
    assert host.address == "127.0.0.1"
    # Its own ssh master connections, never another job's.
    assert Path(plan["envvars"]["ANSIBLE_SSH_CONTROL_PATH_DIR"]).is_dir()
    deployments.finish(db, job, plan, "successful", None)
    assert not Path(plan["envvars"]["ANSIBLE_SSH_CONTROL_PATH_DIR"]).exists()


# --- tokens: expiry and revocation; who may stop a job ------------------------------------


def test_tokens_expire(app, client, runner):
    from controller.cli import cli

    created = client.post("/api/tokens", json={"name": "ci", "role": "viewer", "expires_in": "30d"}).get_json()
    assert created["expires_at"] and client.get("/api/jobs", headers=bearer(created["token"])).status_code == 200
    with app.extensions["cloudx.db"].session() as session:
        session.scalar(select(ApiToken).where(ApiToken.name == "ci")).expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/api/jobs", headers=bearer(created["token"])).status_code == 401
    assert client.post("/api/tokens", json={"name": "bad", "role": "viewer", "expires_in": "soon"}).status_code == 400
    result = runner.invoke(cli, ["token", "create", "--name", "nightly", "--role", "operator", "--expires-in", "12h"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["token", "list"]).output
    assert "nightly" in listed and "expires" in listed


def test_jobs_of_an_expired_token_do_not_run(app, client, tmp_path):
    from controller.errors import Forbidden
    from controller.runner.jobkind import JobSpec
    from controller.runner.kinds import kind_for

    token = make_token(app, "operator", "expiring", expires_in=3600)
    job_id = client.post("/api/scans", json=SCAN, headers=bearer(token)).get_json()["job_id"]
    db, config = app.extensions["cloudx.db"], app.extensions["cloudx.config"]
    with db.session() as session:
        session.scalar(select(ApiToken).where(ApiToken.name == "expiring")).expires_at = utcnow() - timedelta(seconds=1)
        job = session.get(Job, job_id)
        info = JobSpec.of(job)
    with pytest.raises(Forbidden, match="has expired"):
        kind_for("scan").prepare(db, config, info, tmp_path)


def test_revoking_a_token_stops_its_jobs(app, client):
    token = make_token(app, "operator", "stolen")
    queued = client.post("/api/scans", json=SCAN, headers=bearer(token)).get_json()["job_id"]
    running = client.post("/api/scans", json=SCAN, headers=bearer(token)).get_json()["job_id"]
    mine = client.post("/api/scans", json=SCAN).get_json()["job_id"]
    with app.extensions["cloudx.db"].session() as session:
        session.get(Job, running).status = "running"
    revoked = client.delete("/api/tokens/stolen").get_json()
    assert sorted(revoked["stopped_jobs"]) == sorted([queued, running])
    view = client.get(f"/api/jobs/{queued}").get_json()
    assert view["status"] == "canceled" and "was revoked" in view["status_reason"]
    assert client.get(f"/api/jobs/{running}").get_json()["cancel_requested"] is True
    assert client.get(f"/api/jobs/{mine}").get_json()["status"] == "queued"


def test_only_a_jobs_creator_or_an_admin_may_stop_or_delete_it(app, client):
    alice, bob = (bearer(make_token(app, "operator", name)) for name in ("alice", "bob"))
    scan = client.post("/api/scans", json=SCAN, headers=alice).get_json()["job_id"]
    for method, path in (("POST", f"/api/scans/{scan}/stop"), ("POST", f"/api/jobs/{scan}/cancel"), ("DELETE", f"/api/scans/{scan}")):
        refused = client.open(path, method=method, headers=bob)
        assert refused.status_code == 403 and "only its creator or an admin" in refused.get_json()["error"]
    assert client.get(f"/api/jobs/{scan}").get_json()["status"] == "queued"
    assert client.post(f"/api/scans/{scan}/stop", headers=alice).status_code == 202
    other = client.post("/api/scans", json=SCAN, headers=alice).get_json()["job_id"]
    assert client.delete(f"/api/scans/{other}").status_code == 200  # an admin
    with app.extensions["cloudx.db"].session() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.id == other)) == 0


# --- stored credentials over WinRM, and trusted keys from the CLI -------------------------------


@pytest.mark.slow  # ansible-inventory or a worker process
def test_a_stored_credential_is_never_sent_where_certificates_are_not_checked(tmp_path):
    from controller.app import create_app
    from controller.store.sealing import keygen
    from tests.support.app import make_config, prepare_app

    app = prepare_app(create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen())))
    client = app.test_client()
    body = {"name": "win-admin", "kind": "password", "username": "Administrator", "secret": "Win-Pa55-3c"}
    assert client.post("/api/credentials", json=body).status_code == 201
    inventory = Path(app.extensions["cloudx.config"].INVENTORY) / "hosts.yml"
    inventory.write_text(
        inventory.read_text() + "    windows:\n      hosts:\n        w1: {ansible_host: 198.18.0.50, ansible_connection: winrm,"
        " ansible_winrm_server_cert_validation: ignore}\n        w2: {ansible_host: 198.18.0.51, ansible_connection: winrm}\n"
        "        w3: {ansible_host: 198.18.0.52, ansible_connection: winrm, ansible_port: 5985}\n"
    )
    ignored = client.post("/api/deployments", json={"limit": "w1", "os_type": "windows", "credential": "win-admin"})
    assert ignored.status_code == 403 and "certificate validation" in ignored.get_json()["error"]
    plain_http = client.post("/api/deployments", json={"limit": "w3", "os_type": "windows", "credential": "win-admin"})
    assert plain_http.status_code == 403 and "only be used on port 5986" in plain_http.get_json()["error"]
    # WinRM over HTTPS with validation on (the server's certificate is its identity): accepted.
    assert client.post("/api/deployments", json={"limit": "w2", "os_type": "windows", "credential": "win-admin"}).status_code == 202
    app.extensions["cloudx.db"].dispose()


def test_admins_trust_host_keys_with_the_cli(runner, tmp_path):
    from controller.cli import cli

    keys = tmp_path / "known_hosts"
    keys.write_text("# fleet\n198.18.0.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFleetHostKey7\n[198.18.0.8]:2222 ssh-rsa AAAAB3NzaC1yc2E8\n")
    added = runner.invoke(cli, ["host-key", "add", str(keys)])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["host-key", "list"]).output
    assert "198.18.0.7" in listed and "[198.18.0.8]:2222" in listed and "admin" in listed
    keys.write_text("198.18.0.9 not-a-key-type AAAA\n")
    bad = runner.invoke(cli, ["host-key", "add", str(keys)])
    assert bad.exit_code == 1 and "known_hosts line is not" in bad.output
    assert runner.invoke(cli, ["host-key", "delete", "198.18.0.7"]).exit_code == 0
    gone = runner.invoke(cli, ["host-key", "delete", "198.18.0.7"])
    assert gone.exit_code == 1 and "no trusted key for 198.18.0.7" in gone.output
    audit = runner.invoke(cli, ["audit"]).output
    assert "host-key add" in audit and "host-key delete" in audit


# --- found by review: what else could lead a stored credential astray ------------------------------


def credential_app(tmp_path):
    from controller.app import create_app
    from controller.store.sealing import keygen
    from tests.support.app import make_config, prepare_app

    app = prepare_app(create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen())))
    body = {"name": "fleet-pw", "kind": "password", "username": "deploy", "secret": "Fleet-Pa55-x"}
    assert app.test_client().post("/api/credentials", json=body).status_code == 201
    return app


def test_an_operators_own_pin_does_not_establish_a_host_for_stored_credentials(tmp_path):
    """An operator's successful login to a server of theirs pins its key: that proves nothing to a stored credential."""
    from controller.store.models import HostKey

    app = credential_app(tmp_path)
    client = app.test_client()
    operator = bearer(make_token(app, "operator", "mallory"))
    deploy = {"hosts": ["198.18.0.70"], "os_type": "linux", "credential": "fleet-pw"}
    with app.extensions["cloudx.db"].session() as session:
        session.add(HostKey(host="198.18.0.70", key_type="ssh-ed25519", public_key="AAAAmallory", source="pinned", added_by="mallory"))
    refused = client.post("/api/deployments", json=deploy, headers=operator)
    assert refused.status_code == 403 and "198.18.0.70" in refused.get_json()["error"]
    # The same pin made by an admin's deployment counts.
    with app.extensions["cloudx.db"].session() as session:
        session.scalar(select(HostKey)).added_by = "tests"
    assert client.post("/api/deployments", json=deploy, headers=operator).status_code == 202
    app.extensions["cloudx.db"].dispose()


def test_no_key_can_be_planted_beside_a_trusted_one(app, client, tmp_path):
    from controller.schemas.deployments import DeploySettings
    from controller.services.hostkeys import Target, write_job_known_hosts

    assert client.put("/api/host-keys", json={"known_hosts": "198.18.0.21 ssh-ed25519 AAAAadmin"}).status_code == 200
    db, config = app.extensions["cloudx.db"], app.extensions["cloudx.config"]
    planted = DeploySettings(os_type="linux", known_hosts=["198.18.0.21 ecdsa-sha2-nistp256 AAAAplanted"])
    keys = write_job_known_hosts(db, config, planted, [Target("h", "198.18.0.21", 22)], tmp_path)
    assert "AAAAplanted" not in keys.known_hosts.read_text() and keys.pending == {}
    assert "198.18.0.21 ssh-ed25519 AAAAadmin" in keys.known_hosts.read_text()


@pytest.mark.slow  # ansible-inventory or a worker process
@pytest.mark.parametrize(
    ("host_vars", "expected"),
    [
        ("ansible_ssh_common_args: -o StrictHostKeyChecking=no", "ansible_ssh_common_args"),
        ("ansible_ssh_args: -o UserKnownHostsFile=/dev/null", "ansible_ssh_args"),
        ("ansible_ssh_port: 2222", "reached on port 2222"),
        ("ansible_connection: winrm, ansible_winrm_scheme: http, ansible_port: 5986", "plain HTTP"),
        ("ansible_connection: winrm, ansible_winrm_port: 5985", "reached on port 5985"),
        ("ansible_connection: winrm, ansible_winrm_host: 203.0.113.9", "outside the policy scope"),
    ],
)
def test_inventory_settings_that_defeat_the_checks_refuse_a_stored_credential(tmp_path, host_vars, expected):
    from controller.store.models import HostKey

    app = credential_app(tmp_path)
    inventory = Path(app.extensions["cloudx.config"].INVENTORY) / "hosts.yml"
    inventory.write_text(inventory.read_text() + f"    fleet:\n      hosts:\n        f1: {{ansible_host: 198.18.0.80, {host_vars}}}\n")
    with app.extensions["cloudx.db"].session() as session:
        session.add(HostKey(host="198.18.0.80", key_type="ssh-ed25519", public_key="AAAAk", source="admin"))
    os_type = "windows" if "winrm" in host_vars else "linux"
    refused = app.test_client().post("/api/deployments", json={"limit": "f1", "os_type": os_type, "credential": "fleet-pw"})
    assert refused.status_code == 403 and expected in refused.get_json()["error"], refused.get_json()
    app.extensions["cloudx.db"].dispose()


@pytest.mark.slow  # ansible-inventory or a worker process
def test_inventory_names_are_matched_as_checked(tmp_path):
    """ansible_host: LocalHost is checked as localhost: no 500, and the stored credential's scope applies."""
    from controller.store.models import Credential, HostKey

    app = credential_app(tmp_path)
    with app.extensions["cloudx.db"].session() as session:
        session.add(HostKey(host="127.0.0.1", key_type="ssh-ed25519", public_key="AAAAk", source="admin"))
    inventory = Path(app.extensions["cloudx.config"].INVENTORY) / "hosts.yml"
    inventory.write_text(inventory.read_text() + "    fleet:\n      hosts:\n        f1: {ansible_host: LocalHost}\n")
    client = app.test_client()
    assert client.post("/api/deployments", json={"limit": "f1", "os_type": "linux", "credential": "fleet-pw"}).status_code == 202
    assert client.delete("/api/credentials/fleet-pw").status_code == 200
    body = {"name": "fleet-pw", "kind": "password", "username": "deploy", "secret": "x", "scope": ["198.18.0.0/16"]}
    assert client.post("/api/credentials", json=body).status_code == 201
    outside = client.post("/api/deployments", json={"limit": "f1", "os_type": "linux", "credential": "fleet-pw"})
    assert outside.status_code == 403 and "its scope" in outside.get_json()["error"]
    with app.extensions["cloudx.db"].session() as session:
        assert session.scalar(select(Credential.scope)) == ["198.18.0.0/16"]
    app.extensions["cloudx.db"].dispose()


def test_policies_from_before_per_role_timeouts_get_the_default(app, client):
    from controller.store.models import Policy

    with app.extensions["cloudx.db"].session() as session:
        session.get(Policy, 1).max_scan_timeout = None  # as migration 0005 leaves an existing policy
    assert client.get("/api/policy").get_json()["max_scan_timeout"] == {"operator": 7200}
    operator = bearer(make_token(app, "operator"))
    assert client.post("/api/scans", json={**SCAN, "timeout": 86400}, headers=operator).status_code == 400


def test_quotas_of_zero_are_refused(app, client):
    assert client.put("/api/policy", json={"token_max_running": 0}).status_code == 400
    assert client.post("/api/tokens", json={"name": "z", "role": "operator", "max_queued": 0}).status_code == 400


def test_audit_text_holds_no_nul_or_surrogate():
    from controller.api.audit import text

    assert text("a\x00b\ud800c", 100) == "a\\x00b\\ud800c"
