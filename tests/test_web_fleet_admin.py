"""The dashboard's fleet and admin pages: the same services as the API, role-aware, their forms checked by the API's models."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from controller.app import create_app
from controller.services.auth import create_token
from controller.services.policy import get_policy, policy_view
from controller.store.sealing import keygen
from tests.support.app import FIXTURES, TEST_SCOPE, make_config, prepare_app

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheTestHostA"
HOSTILE = "198.18.251.2"  # the host of tests/fixtures/hostile-nmap.xml


def _token(app: Flask, role: str, name: str | None = None) -> str:
    with app.extensions["cloudx.db"].session() as s:
        return create_token(s, name or f"web-{role}", role, "tests")[1]


def _browser(app: Flask, role: str) -> FlaskClient:
    """A browser signed in with a new token of `role` (no Authorization header: the session cookie only)."""
    browser = FlaskClient(app, use_cookies=True)
    form = browser.get("/signin")
    signed = browser.post("/signin", data={"token": _token(app, role), "csrf_token": _csrf(form.text), "next": "/"})
    assert signed.status_code == 303, signed.text
    return browser


def _csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def _errors(html: str) -> list[str]:
    return re.findall(r'class="field-error" id="([^"]+)-error" role="alert">([^<]*)<', html)


def _assets(html: str) -> str:
    """The assets section of /fleet."""
    return html[html.index('id="assets-h"') :]


def _import_hostile(client: FlaskClient) -> None:
    data = (FIXTURES / "hostile-nmap.xml").read_bytes()
    response = client.post("/api/imports", data=data, headers={"Content-Type": "application/xml"})
    assert response.status_code == 201, response.get_json()


def test_every_page_renders_for_an_admin_and_admin_pages_refuse_a_viewer(app: Flask) -> None:
    admin = _browser(app, "admin")
    for path in (
        "/fleet",
        "/admin/tokens",
        "/admin/policy",
        "/admin/audit",
        "/admin/audit?limit=1",
        "/fleet?network=198.18.0.0/16&port=22",
    ):
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text[:2000])
        assert "no-store" in response.headers["Cache-Control"]
    bad = admin.get("/fleet?network=nope&unseen_days=-1")
    assert bad.status_code == 400 and 'class="error"' in bad.text

    viewer = _browser(app, "viewer")
    for path in ("/admin/tokens", "/admin/policy", "/admin/audit", "/admin/tokens/web-admin/revoke"):
        assert viewer.get(path).status_code == 403, path
    page = viewer.get("/fleet")
    assert page.status_code == 200 and "/fleet/deploy" not in page.text and "Deploy to uncovered hosts" not in page.text
    assert 'href="/admin/tokens"' not in page.text  # the admin sections are not offered
    refused = viewer.post("/fleet/deploy", data={"csrf_token": _csrf(page.text), "network": "198.18.0.0/24", "os_type": "linux"})
    assert refused.status_code == 403
    made = viewer.post("/admin/tokens", data={"csrf_token": _csrf(page.text), "name": "sneaky", "role": "admin"})
    assert made.status_code == 403
    assert "sneaky" not in [t["name"] for t in app.test_client().get("/api/tokens").get_json()["tokens"]]


def test_a_token_made_on_the_page_is_shown_once_works_and_is_revoked(app: Flask) -> None:
    admin = _browser(app, "admin")
    form = admin.get("/admin/tokens")
    data = {
        "csrf_token": _csrf(form.text),
        "name": "ci-bot",
        "role": "operator",
        "scope": "198.18.0.0/24\n\n127.0.0.1\n",
        "max_queued": "3",
    }
    created = admin.post("/admin/tokens", data={**data, "expires_in": "30d"})
    assert created.status_code == 201, _errors(created.text)
    assert "Copy it now" in created.text and "no-store" in created.headers["Cache-Control"]
    secret = re.search(r'id="new-token" value="(cx_[^"]+)"', created.text).group(1)
    assert admin.get("/admin/tokens").text.count(secret) == 0  # once: never again
    api = FlaskClient(app)
    me = api.get("/api/policy", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    listed = {t["name"]: t for t in app.test_client().get("/api/tokens").get_json()["tokens"]}
    assert listed["ci-bot"]["scope"] == ["198.18.0.0/24", "127.0.0.1/32"] and listed["ci-bot"]["max_queued"] == 3

    again = admin.post("/admin/tokens", data=data)
    assert again.status_code == 409 and "exists" in again.text and "cx_" not in again.text
    bad = admin.post("/admin/tokens", data={**data, "name": "other", "max_running": "0"})
    assert bad.status_code == 400 and [f for f, _ in _errors(bad.text)] == ["max_running"]

    confirm = admin.get("/admin/tokens/ci-bot/revoke")
    assert confirm.status_code == 200 and "ci-bot" in confirm.text
    assert admin.get("/admin/tokens/nobody/revoke").status_code == 404
    revoked = admin.post("/admin/tokens/ci-bot/revoke", data={"csrf_token": _csrf(confirm.text)})
    assert revoked.status_code == 303 and revoked.headers["Location"].endswith("/admin/tokens?notice=token-revoked")
    assert api.get("/api/policy", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    after = admin.get(revoked.headers["Location"])
    assert "Token revoked" in after.text and "/admin/tokens/ci-bot/revoke" not in after.text
    assert admin.post("/admin/tokens/ci-bot/revoke", data={}).status_code == 403  # no CSRF token


def test_the_policy_form_changes_the_policy_and_a_bad_scope_changes_nothing(app: Flask) -> None:
    admin = _browser(app, "admin")
    form = admin.get("/admin/policy")
    assert form.status_code == 200 and "198.18.0.0/15" in form.text
    fields = {"csrf_token": _csrf(form.text), "scope": "\n".join([*TEST_SCOPE, "10.9.0.0/16"]), "max_prefix_v4": "20", "max_prefix_v6": ""}
    fields |= {"windows_deployments": "no", "token_max_queued": "7", "token_max_running": "", "max_scan_timeout_operator": "600"}
    fields |= {"max_scan_timeout_admin": ""}
    saved = admin.post("/admin/policy", data=fields)
    assert saved.status_code == 303 and saved.headers["Location"].endswith("notice=policy-saved")
    with app.extensions["cloudx.db"].session() as s:
        policy = policy_view(get_policy(s))
    assert "10.9.0.0/16" in policy["scope"] and policy["max_prefix_v4"] == 20 and policy["max_prefix_v6"] == 112
    assert policy["windows_deployments"] is False and policy["token_max_queued"] == 7 and policy["max_scan_timeout"]["operator"] == 600
    assert policy["updated_by"] == "web-admin"

    bad = admin.post("/admin/policy", data={**fields, "scope": "198.18.0.0/15\nrm -rf /;", "max_prefix_v4": "8"})
    assert bad.status_code == 400
    api_message = app.test_client().put("/api/policy", json={"scope": ["198.18.0.0/15", "rm -rf /;"]}).get_json()
    assert _errors(bad.text) == [("scope", api_message["error"])]
    assert 'aria-describedby="scope-error"' in bad.text and "rm -rf /;" in bad.text  # the form keeps what was sent
    with app.extensions["cloudx.db"].session() as s:
        assert policy_view(get_policy(s)) == policy

    timeout = admin.post("/admin/policy", data={**fields, "max_scan_timeout_admin": "0"})
    assert timeout.status_code == 400 and [f for f, _ in _errors(timeout.text)] == ["max_scan_timeout"]


def test_the_audit_log_pages_and_names_the_web_changes(app: Flask) -> None:
    admin = _browser(app, "admin")
    for _ in range(3):
        admin.post("/admin/policy", data={"csrf_token": _csrf(admin.get("/admin/policy").text), "scope": "198.18.0.0/15"})
    first = admin.get("/admin/audit?limit=2")
    assert first.status_code == 200 and first.text.count("POST /admin/policy") == 2
    older = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    assert "before=" in older and admin.get(older).status_code == 200
    refused = admin.get("/admin/audit?before=x")
    assert refused.status_code == 400 and "before must be an audit entry id" in refused.text


def test_fleet_shows_hostile_host_names_escaped_and_coverage(app: Flask, client: FlaskClient) -> None:
    _import_hostile(client)
    viewer = _browser(app, "viewer")
    page = viewer.get("/fleet")
    assert page.status_code == 200
    assert HOSTILE in page.text
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;xss-host&#34;)&lt;/script&gt;" in page.text
    assert "Uncovered</dt><dd>1<" in page.text
    filtered = viewer.get("/fleet?network=10.0.0.0/8")
    assert HOSTILE not in filtered.text and "No assets match these filters" in filtered.text

    # Keyset pages: the link carries the cursor and the filters.
    data = (FIXTURES / "scans" / "nmap_ports.xml").read_bytes()
    assert client.post("/api/imports", data=data, headers={"Content-Type": "application/xml"}).status_code == 201
    page = viewer.get("/fleet?limit=1&network=198.18.0.0/16")
    assert "Uncovered</dt><dd>2<" in page.text and page.text.count(f"<td>{HOSTILE}</td>") == 1  # the coverage lists keep their size
    first = _assets(page.text)
    assert "<td>198.18.0.2</td>" in first and f"<td>{HOSTILE}</td>" not in first
    link = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "cursor=" in link and "network=198.18.0.0/16" in link and "limit=1" in link
    second = _assets(viewer.get(link).text)
    assert f"<td>{HOSTILE}</td>" in second and "<td>198.18.0.2</td>" not in second and 'rel="next"' not in second


def test_an_operator_deploys_to_the_uncovered_hosts_with_a_stored_credential(tmp_path: Path) -> None:
    app = prepare_app(create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen())))
    client = app.test_client()
    body = {"name": "fleet-pw", "kind": "password", "username": "deploy", "secret": "Stored-Pa55-7f3e91c0"}
    assert client.post("/api/credentials", json=body).status_code == 201
    assert client.put("/api/host-keys", json={"known_hosts": f"{HOSTILE} {HOST_KEY}"}).status_code == 200
    _import_hostile(client)
    try:
        operator = _browser(app, "operator")
        page = operator.get("/fleet?network=198.18.251.0/24")
        assert "Deploy to uncovered hosts" in page.text and '<option value="fleet-pw">' in page.text
        assert 'id="network" name="network" value="198.18.251.0/24"' in page.text
        assert "Stored-Pa55" not in page.text
        form = {"csrf_token": _csrf(page.text), "network": "198.18.252.0/24", "os_type": "linux", "credential": "fleet-pw"}

        nothing = operator.post("/fleet/deploy", data={**form, "become_password": "pasted-secret"})
        assert nothing.status_code == 409 and [f for f, _ in _errors(nothing.text)] == ["network"]
        assert "pasted-secret" not in nothing.text
        bad = operator.post("/fleet/deploy", data={**form, "network": "not a network"})
        assert bad.status_code == 400 and [f for f, _ in _errors(bad.text)] == ["network"]
        windows = operator.post("/fleet/deploy", data={**form, "os_type": "beos"})
        assert windows.status_code == 400 and [f for f, _ in _errors(windows.text)] == ["os_type"]

        sent = operator.post("/fleet/deploy", data={**form, "network": "198.18.251.0/24"})
        assert sent.status_code == 303, _errors(sent.text) or sent.text[:2000]
        location = sent.headers["Location"]
        assert re.fullmatch(r"/jobs/[0-9a-f-]+\?notice=deploy-submitted", location)
        job_id = location.split("/")[2].split("?")[0]
        job = client.get(f"/api/jobs/{job_id}").get_json()
        assert job["kind"] == "deploy" and job["created_by"] == "web-operator"
        shown = operator.get(location)
        assert shown.status_code == 200 and "Deployment submitted." in shown.text
    finally:
        app.extensions["cloudx.db"].dispose()
