"""Authentication, roles, audit log, headers and CORS, scope policy, stored credentials, queue limit."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.app import create_app
from controller.cli import cli
from controller.errors import ValidationError
from controller.store.models import ApiToken, AuditEntry, Credential, Job
from controller.store.sealing import keygen
from tests.support.app import make_config, make_token, prepare_app

SCAN = {"target": "198.18.0.10", "tool": "nmap", "scan_type": "default", "ports": "22"}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheTestHostA"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbC0xYjdkOWU=\n-----END OPENSSH PRIVATE KEY-----\n"


def job_count(app) -> int:
    with app.extensions["cloudx.db"].session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def database_bytes(app, config) -> bytes:
    app.extensions["cloudx.db"].dispose()
    path = Path(config.DATABASE_URL.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def protected_routes(app) -> list[tuple[str, str]]:
    """The API's routes that need a token (the dashboard's pages have their own gate: tests/test_web.py)."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("web."):
            continue
        view = app.view_functions[rule.endpoint]
        if getattr(view, "_cloudx_role", "admin") == "public":
            continue
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        routes += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


# --- authentication and roles ---------------------------------------------------


def test_every_route_but_health_ping_and_openapi_needs_a_token(app):
    anonymous = app.test_client()
    anonymous.environ_base.pop("HTTP_AUTHORIZATION", None)
    routes = protected_routes(app)
    assert len(routes) > 25
    for method, path in routes:
        response = anonymous.open(path, method=method, json={})
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="cloudx"'
        assert "Bearer" in response.get_json()["error"]
    for path in ("/api/health", "/api/ping", "/api/openapi.json"):
        assert anonymous.get(path).status_code == 200
    # Unknown paths do not tell an anonymous caller whether they exist.
    assert anonymous.get("/api/no-such-thing").status_code == 401


@pytest.mark.parametrize(
    "header",
    ["Bearer cx_000000000000_" + "A" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer ", "bearer"],
)
def test_bad_tokens_get_401_invalid_token(app, header):
    client = app.test_client()
    response = client.get("/api/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="cloudx"')
    assert job_count(app) == 0


def test_roles_viewer_operator_admin(app):
    client = app.test_client()
    viewer, operator = make_token(app, "viewer"), make_token(app, "operator")
    assert client.get("/api/scans", headers=bearer(viewer)).status_code == 200
    denied = client.post("/api/scans", json=SCAN, headers=bearer(viewer))
    assert denied.status_code == 403
    assert "operator role" in denied.get_json()["error"]
    assert job_count(app) == 0
    assert client.post("/api/scans", json=SCAN, headers=bearer(operator)).status_code == 202
    assert client.get("/api/tokens", headers=bearer(operator)).status_code == 403
    assert client.put("/api/policy", json={"scope": ["0.0.0.0/0"]}, headers=bearer(operator)).status_code == 403
    assert client.get("/api/audit", headers=bearer(operator)).status_code == 403
    assert client.get("/api/policy", headers=bearer(operator)).status_code == 200
    assert client.get("/api/tokens").status_code == 200  # the admin test token


def test_tokens_are_shown_once_stored_as_hashes_and_revocable(app, config):
    client = app.test_client()
    created = client.post("/api/tokens", json={"name": "dashboard", "role": "viewer"})
    assert created.status_code == 201
    token = created.get_json()["token"]
    assert re.fullmatch(r"cx_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    listed = client.get("/api/tokens").get_json()["tokens"]
    assert "token" not in json.dumps(listed).replace('"tokens"', "")
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    assert client.get("/api/tokens").get_json()["tokens"][-1]["last_used_at"] is not None
    assert client.post("/api/tokens", json={"name": "dashboard", "role": "viewer"}).status_code == 409
    assert client.delete("/api/tokens/dashboard").status_code == 200
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 401
    secret = token.split("_", 2)[2]
    stored = database_bytes(app, config)
    assert secret.encode() not in stored and token.encode() not in stored
    with app.extensions["cloudx.db"].session() as session:
        assert session.scalar(select(ApiToken.token_hash).where(ApiToken.name == "dashboard")) != secret


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "role": "root"},
        {"name": "-x", "role": "viewer"},
        {"name": "x y", "role": "viewer"},
        {"name": "x", "role": "viewer", "scope": "10.0.0.0/8"},
        {"name": "x", "role": "viewer", "allow_large_targets": "yes"},
        {"name": "x", "role": "viewer", "expires": 1},
    ],
)
def test_bad_token_requests_are_refused(client, body):
    response = client.post("/api/tokens", json=body)
    assert response.status_code == 400, response.get_json()
    assert len(client.get("/api/tokens").get_json()["tokens"]) == 1


def test_cli_token_create_list_revoke(app, runner, config):
    result = runner.invoke(cli, ["token", "create", "--name", "ci", "--role", "operator"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("cx_") and "shown only now" in result.stderr
    client = app.test_client()
    assert client.post("/api/scans", json=SCAN, headers=bearer(token)).status_code == 202
    listing = runner.invoke(cli, ["token", "list"])
    assert "ci" in listing.stdout and token not in listing.stdout and "operator" in listing.stdout
    assert runner.invoke(cli, ["token", "revoke", "ci"]).exit_code == 0
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 401
    bad = runner.invoke(cli, ["token", "create", "--name", "bad name", "--role", "viewer"])
    assert bad.exit_code == 1 and bad.stderr.count("\n") == 1 and "name must match" in bad.stderr
    assert runner.invoke(cli, ["token", "revoke", "nobody"]).exit_code == 1


# --- audit log ------------------------------------------------------------------


def test_mutating_requests_are_audited(app, runner):
    client = app.test_client()
    viewer = make_token(app, "viewer", "auditee")
    accepted = client.post("/api/scans", json=SCAN, headers={"X-Request-ID": "req-42"})
    client.post("/api/scans", json=SCAN, headers=bearer(viewer))
    client.post("/api/scans", json={**SCAN, "target": "8.8.8.8"})
    client.post("/api/scans", json=SCAN, headers={"Authorization": "Bearer wrong"})
    client.get("/api/scans")
    runner.invoke(cli, ["policy", "set", "--max-prefix-v4", "20"])
    entries = client.get("/api/audit?limit=10").get_json()["entries"]
    assert [(e["actor"], e["status"], e["outcome"]) for e in entries] == [
        ("cli:root", 200, "ok"),
        ("anonymous", 401, "denied"),
        ("tests", 403, "denied"),
        ("auditee", 403, "denied"),
        ("tests", 202, "ok"),
    ]
    assert entries[-1]["job_id"] == accepted.get_json()["job_id"]
    # The stored request id is the server's own (unique); the client's is kept beside it.
    assert entries[-1]["client_request_id"] == "req-42" and entries[-1]["path"] == "/api/scans"
    assert entries[-1]["request_id"] == accepted.headers["X-Request-ID"] != "req-42"
    assert "outside the policy scope" in entries[2]["detail"]
    assert entries[0]["path"] == "cloudx policy set"
    page = client.get(f"/api/audit?limit=2&before={entries[1]['id']}").get_json()
    assert [e["id"] for e in page["entries"]] == [entries[2]["id"], entries[3]["id"]]
    assert "auditee" in runner.invoke(cli, ["audit"]).stdout


# --- headers, request ids, CORS, size -------------------------------------------


def test_security_headers_and_request_ids(client):
    for response in (client.get("/api/scans"), client.get("/api/jobs/nope"), client.get("/api/ping")):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    echoed = client.get("/api/ping", headers={"X-Request-ID": "abc-123"})
    assert re.fullmatch(r"[0-9a-f]{32}", echoed.headers["X-Request-ID"]) and echoed.headers["X-Client-Request-ID"] == "abc-123"
    refused = client.get("/api/ping", headers={"X-Request-ID": "a b;<x>"})
    assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["X-Request-ID"]) and "X-Client-Request-ID" not in refused.headers


def test_cors_only_for_configured_origins(tmp_path):
    app = prepare_app(create_app(make_config(tmp_path, CORS_ORIGINS="https://dash.example.test, http://localhost:3000")))
    client = app.test_client()
    preflight = {"Origin": "https://dash.example.test", "Access-Control-Request-Method": "POST"}
    allowed = client.options("/api/scans", headers=preflight)
    assert allowed.status_code == 204
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://dash.example.test"
    refused = client.options("/api/scans", headers={**preflight, "Origin": "https://evil.example.test"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    simple = client.get("/api/scans", headers={"Origin": "http://localhost:3000"})
    assert simple.headers["Access-Control-Allow-Origin"] == "http://localhost:3000" and "Origin" in simple.headers["Vary"]
    assert "Access-Control-Allow-Origin" not in client.get("/api/scans", headers={"Origin": "https://evil.example.test"}).headers
    app.extensions["cloudx.db"].dispose()
    default = prepare_app(create_app(make_config(tmp_path / "default")))
    assert default.test_client().options("/api/scans", headers=preflight).status_code == 403
    default.extensions["cloudx.db"].dispose()


def test_request_size_cap(app, client):
    response = client.post("/api/scans", data=b"{" + b" " * 70_000 + b"}", content_type="application/json")
    assert response.status_code == 413 and "larger than" in response.get_json()["error"]
    assert job_count(app) == 0


# --- scope policy ---------------------------------------------------------------


def test_no_scope_refuses_scans_and_deployments_and_says_how(app, client):
    client.put("/api/policy", json={"scope": []})
    response = client.post("/api/scans", json=SCAN)
    assert response.status_code == 403
    assert "no scope policy" in response.get_json()["error"] and "cloudx policy set" in response.get_json()["error"]
    deploy = {"hosts": ["198.18.0.10"], "username": "root", "password": "pw", "os_type": "linux"}
    assert client.post("/api/deployments", json=deploy).status_code == 403
    assert job_count(app) == 0


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("198.18.0.10", True),
        ("198.19.255.0/24", True),
        ("127.0.0.1", True),
        ("localhost", True),
        ("198.20.0.1", False),
        ("10.0.0.0/8", False),
        ("198.16.0.0/13", False),
        ("::ffff:198.18.0.10", False),  # an IPv4-mapped address is IPv6, outside an IPv4 scope
        ("::1", True),
        ("2001:db8::1", False),
        ("0.0.0.0/0", False),
    ],
)
def test_scope_decides_scan_targets(app, client, target, allowed):
    response = client.post("/api/scans", json={**SCAN, "target": target})
    assert response.status_code == (202 if allowed else 403), response.get_json()
    assert job_count(app) == (1 if allowed else 0)


def test_hostnames_are_resolved_and_every_address_checked(app, client):
    client.put("/api/policy", json={"scope": ["198.18.0.0/15"]})
    refused = client.post("/api/scans", json={**SCAN, "target": "localhost"})
    # Refused without saying what the name resolved to (no DNS oracle for internal names).
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "target 'localhost' does not resolve to addresses inside the policy scope"
    # A hostname in the scope stands for its addresses.
    client.put("/api/policy", json={"scope": ["198.18.0.0/15", "localhost"]})
    assert client.post("/api/scans", json={**SCAN, "target": "127.0.0.1"}).status_code == 202
    assert client.post("/api/scans", json={**SCAN, "target": "127.0.0.2"}).status_code == 403


def test_large_networks_need_permission(app, client):
    client.put("/api/policy", json={"scope": ["198.18.0.0/15"], "max_prefix_v4": 24})
    response = client.post("/api/scans", json={**SCAN, "target": "198.18.0.0/20"})
    assert response.status_code == 403 and "allow-large-targets" in response.get_json()["error"]
    assert client.post("/api/scans", json={**SCAN, "target": "198.18.0.0/24"}).status_code == 202
    large = make_token(app, "operator", allow_large_targets=True)
    assert client.post("/api/scans", json={**SCAN, "target": "198.18.0.0/20"}, headers=bearer(large)).status_code == 202
    # Permission to go large is not permission to leave the scope.
    assert client.post("/api/scans", json={**SCAN, "target": "198.0.0.0/8"}, headers=bearer(large)).status_code == 403


def test_token_scope_narrows_the_policy(app, client):
    narrow = make_token(app, "operator", scope=["198.18.5.0/24", "203.0.113.0/24"])
    assert client.post("/api/scans", json={**SCAN, "target": "198.18.5.7"}, headers=bearer(narrow)).status_code == 202
    outside = client.post("/api/scans", json={**SCAN, "target": "198.18.6.7"}, headers=bearer(narrow))
    assert outside.status_code == 403 and "scope of token" in outside.get_json()["error"]
    # The token's scope cannot widen the policy's.
    assert client.post("/api/scans", json={**SCAN, "target": "203.0.113.9"}, headers=bearer(narrow)).status_code == 403


@pytest.mark.slow  # ansible-inventory or a worker process
def test_deployment_scope_windows_switch_and_inventory_patterns(app, client, config):
    deploy = {"target": "198.18.0.20", "os_type": "windows", "username": "Administrator", "password": "pw"}
    assert client.post("/api/deploy/agent", json=deploy).status_code == 202
    client.put("/api/policy", json={"windows_deployments": False})
    refused = client.post("/api/deploy/agent", json=deploy)
    assert refused.status_code == 403 and "Windows deployments are switched off" in refused.get_json()["error"]
    assert client.post("/api/deploy/agent", json={**deploy, "os_type": "linux", "username": "root"}).status_code == 202
    assert client.post("/api/deploy/agent", json={**deploy, "os_type": "linux", "target": "203.0.113.4"}).status_code == 403
    # Inventory patterns: every matched host's address is checked, and Windows hosts by group.
    inventory = Path(config.INVENTORY) / "hosts.yml"
    inventory.write_text(
        inventory.read_text()
        + "    agents:\n      children:\n        linux:\n          hosts:\n            web1: {ansible_host: 198.18.0.31}\n"
        "            web2: {ansible_host: 203.0.113.32}\n"
        "        windows:\n          hosts:\n            win1: {ansible_host: 198.18.0.33}\n"
    )
    assert client.post("/api/deployments", json={"limit": "web1"}).status_code == 202
    outside = client.post("/api/deployments", json={"limit": "linux"})
    assert outside.status_code == 403 and "203.0.113.32" in outside.get_json()["error"]
    assert "switched off" in client.post("/api/deployments", json={"limit": "win1"}).get_json()["error"]
    assert client.post("/api/deployments", json={"limit": "nomatch"}).status_code == 400
    assert job_count(app) == 3


def test_system_monitor_pings_only_in_scope(client):
    response = client.get("/api/system-monitor?target=203.0.113.1")
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"scope": "10.0.0.0/8"}, "scope"),
        ({"scope": ["10.0.0.0/33"]}, "scope"),
        ({"scope": ["-iL x"]}, "scope"),
        ({"max_prefix_v4": 40}, "max_prefix_v4"),
        ({"max_prefix_v6": True}, "max_prefix_v6"),
        ({"windows_deployments": "no"}, "windows_deployments"),
        ({"owner": "me"}, "owner"),
        ({}, "body"),
    ],
)
def test_bad_policy_changes_are_refused(client, changes, field):
    before = client.get("/api/policy").get_json()
    response = client.put("/api/policy", json=changes)
    assert response.status_code == 400 and response.get_json()["field"] == field
    assert client.get("/api/policy").get_json() == before


def test_cli_policy_set_and_scan_refusal(runner, config):
    shown = runner.invoke(cli, ["policy", "set", "--scope", "198.18.0.0/24", "--scope", "127.0.0.1", "--no-windows"])
    assert shown.exit_code == 0, shown.output
    policy = json.loads(runner.invoke(cli, ["policy", "show"]).stdout)
    assert policy["scope"] == ["198.18.0.0/24", "127.0.0.1/32"] and policy["windows_deployments"] is False
    result = runner.invoke(cli, ["scan", "203.0.113.7"])
    assert result.exit_code == 1 and "outside the policy scope" in result.stderr and result.stderr.count("\n") == 1
    assert runner.invoke(cli, ["policy", "set", "--max-prefix-v4", "99"]).exit_code == 1


# --- job queue limit ------------------------------------------------------------


def test_full_queue_answers_429_with_retry_after(tmp_path):
    app = prepare_app(create_app(make_config(tmp_path, MAX_QUEUED_JOBS=3)))
    client = app.test_client()
    assert [client.post("/api/scans", json=SCAN).status_code for _ in range(3)] == [202, 202, 202]
    full = client.post("/api/scans", json=SCAN)
    assert full.status_code == 429 and full.headers["Retry-After"] == "5"
    assert job_count(app) == 3
    job_id = client.get("/api/jobs").get_json()["jobs"][0]["id"]
    client.post(f"/api/jobs/{job_id}/cancel")
    assert client.post("/api/scans", json=SCAN).status_code == 202
    app.extensions["cloudx.db"].dispose()


# --- stored credentials ----------------------------------------------------------


def test_credentials_need_a_key(client):
    response = client.post("/api/credentials", json={"name": "fleet", "kind": "password", "secret": "pw"})
    assert response.status_code == 400 and "CLOUDX_CREDENTIALS_KEY" in response.get_json()["error"]


def test_credentials_are_encrypted_at_rest_and_used_by_deployments(tmp_path):
    key = keygen()
    config = make_config(tmp_path, CREDENTIALS_KEY=key)
    app = prepare_app(create_app(config))
    client = app.test_client()
    password = "Stored-Pa55-7f3e91c0"
    assert (
        client.post("/api/credentials", json={"name": "fleet-pw", "kind": "password", "username": "deploy", "secret": password}).status_code
        == 201
    )
    assert client.post("/api/credentials", json={"name": "fleet-key", "kind": "ssh_key", "secret": SSH_KEY}).status_code == 201
    assert client.post("/api/credentials", json={"name": "fleet-pw", "kind": "password", "secret": "x"}).status_code == 409
    assert client.put("/api/host-keys", json={"known_hosts": f"198.18.0.40 {HOST_KEY}"}).status_code == 200
    assert client.post("/api/credentials", json={"name": "bad", "kind": "ssh_key", "secret": "not a key"}).status_code == 400
    listed = client.get("/api/credentials").get_json()["credentials"]
    assert [(c["name"], c["kind"], c["username"]) for c in listed] == [("fleet-key", "ssh_key", None), ("fleet-pw", "password", "deploy")]
    assert password not in json.dumps(listed)
    response = client.post("/api/deployments", json={"hosts": ["198.18.0.40"], "os_type": "linux", "credential": "fleet-pw"})
    assert response.status_code == 202, response.get_json()
    job = client.get(f"/api/jobs/{response.get_json()['job_id']}").get_json()
    assert job["created_by"] == "tests"
    with app.extensions["cloudx.db"].session() as session:
        stored = session.get(Job, job["id"])
        assert stored.settings["username"] == "deploy" and stored.settings["credential"] == "fleet-pw"
        assert stored.extra_vars["cloudx_become"] is True and stored.secrets_holder
    no_user = client.post("/api/deployments", json={"hosts": ["198.18.0.40"], "os_type": "linux", "credential": "fleet-key"})
    assert no_user.status_code == 400 and no_user.get_json()["field"] == "username"
    assert client.post("/api/deployments", json={"hosts": ["198.18.0.40"], "os_type": "linux", "credential": "nope"}).status_code == 400
    stored_bytes = database_bytes(app, config)
    assert password.encode() not in stored_bytes
    assert b"c2VjcmV0LWtleS1tYXRlcmlhbC0xYjdkOWU" not in stored_bytes
    assert key.encode() not in stored_bytes and base64.urlsafe_b64decode(key) not in stored_bytes

    # Another key, or a ciphertext moved to another name, does not decrypt.
    other = create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen()))
    wrong = other.test_client().post(
        "/api/deployments",
        json={"hosts": ["198.18.0.40"], "os_type": "linux", "credential": "fleet-pw"},
        headers=bearer(app.config["CLOUDX_TEST_TOKEN"]),
    )
    assert wrong.status_code == 400 and "another CLOUDX_CREDENTIALS_KEY" in wrong.get_json()["error"]
    with app.extensions["cloudx.db"].session() as session:
        rows = {c.name: c for c in session.scalars(select(Credential))}
        rows["fleet-key"].ciphertext, rows["fleet-pw"].ciphertext = rows["fleet-pw"].ciphertext, rows["fleet-key"].ciphertext
    moved = client.post(
        "/api/deployments", json={"hosts": ["198.18.0.40"], "os_type": "linux", "username": "root", "credential": "fleet-key"}
    )
    assert moved.status_code == 400 and "altered" in moved.get_json()["error"]
    assert client.delete("/api/credentials/fleet-key").status_code == 200
    assert client.delete("/api/credentials/fleet-key").status_code == 404
    for a in (app, other):
        a.extensions["cloudx.db"].dispose()


def test_cli_credentials(runner, monkeypatch, tmp_path, config):
    monkeypatch.setenv("CLOUDX_CREDENTIALS_KEY", keygen())
    key_file = tmp_path / "id"
    key_file.write_text(SSH_KEY)
    result = runner.invoke(cli, ["credential", "add", "lab", "--kind", "ssh_key", "--username", "root", "--secret-file", str(key_file)])
    assert result.exit_code == 0, result.output
    assert "lab" in runner.invoke(cli, ["credential", "list"]).stdout
    assert runner.invoke(cli, ["credential", "add", "pw", "--kind", "password"], input="hunter2-x\n").exit_code == 0
    assert runner.invoke(cli, ["credential", "delete", "lab"]).exit_code == 0
    assert runner.invoke(cli, ["credential", "delete", "lab"]).exit_code == 1
    assert len(runner.invoke(cli, ["credential", "keygen"]).stdout.strip()) == 44
    audit = runner.invoke(cli, ["audit"]).stdout
    assert "cloudx credential add" in audit and "hunter2" not in audit


def test_audit_entry_count_matches_mutations(app, client):
    for _ in range(3):
        client.post("/api/scans", json=SCAN)
    with app.extensions["cloudx.db"].session() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.path == "/api/scans")) == 3


# --- what jobs really reach -------------------------------------------------------


def test_manager_must_be_in_scope(app, client):
    deploy = {"hosts": ["198.18.0.20"], "os_type": "linux", "username": "root", "password": "pw"}
    refused = client.post("/api/deployments", json={**deploy, "manager_ip": "203.0.113.66"})
    assert refused.status_code == 403 and "203.0.113.66" in refused.get_json()["error"]
    assert client.post("/api/deployments", json={**deploy, "manager_ip": "198.18.0.5"}).status_code == 202
    assert job_count(app) == 1


def test_hostnames_become_the_checked_addresses(app, client, tmp_path):
    scan = client.post("/api/scans", json={**SCAN, "target": "localhost"}).get_json()
    job = client.get(f"/api/jobs/{scan['job_id']}").get_json()
    assert job["extra_vars"]["scanner_target"] == "127.0.0.1"
    assert client.get(f"/api/scans/{scan['job_id']}").get_json()["target"] == "localhost"
    deploy = client.post("/api/deployments", json={"hosts": ["localhost"], "os_type": "linux", "username": "root", "password": "pw"})
    with app.extensions["cloudx.db"].session() as session:
        assert session.get(Job, deploy.get_json()["job_id"]).settings["addresses"] == {"localhost": "127.0.0.1"}
    from controller.schemas.deployments import DeploySettings
    from controller.services.deployments import write_inventory

    inventory = json.loads(
        write_inventory(DeploySettings(os_type="linux", hosts=["localhost"], addresses={"localhost": "127.0.0.1"}), tmp_path).read_text()
    )
    assert inventory["all"]["children"]["agents"]["children"]["linux"]["hosts"]["localhost"]["ansible_host"] == "127.0.0.1"


def test_known_hosts_only_for_the_jobs_hosts(client):
    deploy = {"hosts": ["198.18.0.20"], "os_type": "linux", "username": "root", "password": "pw"}
    other = client.post("/api/deployments", json={**deploy, "known_hosts": "198.18.0.99 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"})
    assert other.status_code == 400 and "does not reach" in other.get_json()["error"]
    mine = client.post("/api/deployments", json={**deploy, "known_hosts": "198.18.0.20 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"})
    assert mine.status_code == 202


def test_provided_keys_apply_to_their_job_only_and_never_replace_trusted_ones(app, client, tmp_path):
    from controller.schemas.deployments import DeploySettings
    from controller.services.hostkeys import Target, write_job_known_hosts

    def settings_with(lines: list[str]) -> DeploySettings:
        return DeploySettings(os_type="linux", known_hosts=lines)

    db, config = app.extensions["cloudx.db"], app.extensions["cloudx.config"]
    target = [Target("h", "198.18.0.20", 22)]
    given = write_job_known_hosts(db, config, settings_with(["198.18.0.20 ssh-ed25519 AAAAfirst"]), target, tmp_path)
    # In this job's known_hosts, pending a successful connection; trusted by nobody else.
    assert "198.18.0.20 ssh-ed25519 AAAAfirst" in given.known_hosts.read_text()
    assert given.pending == {"h": [("198.18.0.20", "ssh-ed25519", "AAAAfirst")]}
    assert client.get("/api/host-keys").get_json()["host_keys"] == []
    operator = bearer(make_token(app, "operator"))
    assert client.put("/api/host-keys", json={"known_hosts": "198.18.0.20 ssh-ed25519 AAAAfirst"}, headers=operator).status_code == 403
    assert client.put("/api/host-keys", json={"known_hosts": "198.18.0.20 ssh-ed25519 AAAAfirst"}).status_code == 200
    with pytest.raises(ValidationError, match="differs from the trusted one"):
        write_job_known_hosts(db, config, settings_with(["198.18.0.20 ssh-ed25519 AAAAsecond"]), target, tmp_path)
    keys = client.get("/api/host-keys").get_json()["host_keys"]
    assert [(k["public_key"], k["source"], k["added_by"]) for k in keys] == [("AAAAfirst", "admin", "tests")]
    assert client.delete("/api/host-keys/198.18.0.20", headers=operator).status_code == 403
    assert client.delete("/api/host-keys/198.18.0.20").get_json() == {"host": "198.18.0.20", "deleted": 1}
    assert client.delete("/api/host-keys/198.18.0.20").status_code == 404


@pytest.mark.slow  # ansible-inventory or a worker process
def test_inventory_groups_are_followed_to_their_parents(app, client, config):
    client.put("/api/policy", json={"windows_deployments": False})
    inventory = Path(config.INVENTORY) / "hosts.yml"
    inventory.write_text(
        inventory.read_text()
        + "    windows:\n      children:\n        win2019:\n          hosts:\n            w1: {ansible_host: 198.18.0.50}\n"
        "    linux:\n      hosts:\n        l1: {ansible_host: 198.18.0.51, ansible_ssh_host: 203.0.113.51}\n"
    )
    nested = client.post("/api/deployments", json={"limit": "win2019"})
    assert nested.status_code == 403 and "Windows deployments are switched off" in nested.get_json()["error"]
    ssh_host = client.post("/api/deployments", json={"limit": "l1"})
    assert ssh_host.status_code == 403 and "203.0.113.51" in ssh_host.get_json()["error"]
    assert job_count(app) == 0


def test_jobs_are_checked_again_where_they_run(app, client, tmp_path):
    from controller.errors import Forbidden
    from controller.runner.jobkind import JobSpec, Plan
    from controller.runner.kinds import kind_for

    token = make_token(app, "operator", "short-lived")
    job_id = client.post("/api/scans", json=SCAN, headers=bearer(token)).get_json()["job_id"]
    db, config = app.extensions["cloudx.db"], app.extensions["cloudx.config"]
    with db.session() as session:
        job = session.get(Job, job_id)
        info = JobSpec.of(job)
    assert kind_for("scan").prepare(db, config, info, tmp_path) == Plan()
    client.put("/api/policy", json={"scope": ["127.0.0.0/8"]})
    with pytest.raises(Forbidden, match="outside the policy scope"):
        kind_for("scan").prepare(db, config, info, Path(tmp_path))
    client.put("/api/policy", json={"scope": ["198.18.0.0/15"]})
    client.delete("/api/tokens/short-lived")
    with pytest.raises(Forbidden, match="was revoked"):
        kind_for("scan").prepare(db, config, info, Path(tmp_path))


def test_credential_scope_and_binding(tmp_path):
    app = prepare_app(create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen())))
    client = app.test_client()
    body = {"name": "dmz", "kind": "password", "username": "deploy", "secret": "Dmz-Pa55-1", "scope": ["198.18.7.0/24"]}
    assert client.post("/api/credentials", json=body).status_code == 201
    assert client.put("/api/host-keys", json={"known_hosts": [f"198.18.7.9 {HOST_KEY}", f"198.18.8.9 {HOST_KEY}"]}).status_code == 200
    deploy = {"hosts": ["198.18.7.9"], "os_type": "linux", "credential": "dmz"}
    assert client.post("/api/deployments", json=deploy).status_code == 202
    outside = client.post("/api/deployments", json={**deploy, "hosts": ["198.18.8.9"]})
    assert outside.status_code == 403 and "its scope" in outside.get_json()["error"]
    with app.extensions["cloudx.db"].session() as session:
        session.scalar(select(Credential)).scope = ["198.18.0.0/15"]  # widened behind the API's back
    widened = client.post("/api/deployments", json={**deploy, "hosts": ["198.18.8.9"]})
    assert widened.status_code == 400 and "altered" in widened.get_json()["error"]
    with app.extensions["cloudx.db"].session() as session:
        session.scalar(select(Credential)).ciphertext = "not base64!"
    assert "altered" in client.post("/api/deployments", json=deploy).get_json()["error"]
    app.extensions["cloudx.db"].dispose()


def test_log_lines_cannot_be_forged_and_downloads_are_not_cached(client, caplog):
    with caplog.at_level("INFO", logger="cloudx.api"):
        client.post("/api/scans%0aFORGED%20line")
    assert not any(line.startswith("FORGED") for record in caplog.records for line in record.getMessage().splitlines())
    download = client.get("/api/scripts/linux/remove-threat.py")
    assert download.status_code == 200 and download.headers["Cache-Control"] == "no-store"
