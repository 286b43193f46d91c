"""The models are the one declaration: the fast encoders agree with them, and constants match the store's."""

from __future__ import annotations

import json

import pytest

from controller.schemas.jobs import EventPage
from controller.schemas.scans import ScanPage
from controller.schemas.types import JOB_STATUSES
from controller.store.models import ACTIVE_STATUSES, FINAL_STATUSES

VALID = {"target": "192.0.2.10", "tool": "nmap", "scan_type": "default"}


def test_statuses_are_the_stores():
    assert JOB_STATUSES == ACTIVE_STATUSES + FINAL_STATUSES


def test_fast_encoders_match_their_models(app, client):
    job_id = client.post("/api/scans", json=VALID).get_json()["job_id"]
    page = client.get("/api/scans").get_json()
    assert ScanPage.model_validate(page).model_dump(mode="json") == page
    events = json.loads(client.get(f"/api/jobs/{job_id}/events").data)
    assert EventPage.model_validate(events).model_dump(mode="json") == events


def test_the_openapi_target_is_the_validators(app, client):
    document = client.get("/api/openapi.json").get_json()
    target = document["components"]["schemas"]["ScanRequest"]["properties"]["target"]
    assert target["format"] == "cloudx-target" and "pattern" not in json.dumps(target)
    refused = client.post("/api/scans", json={**VALID, "target": "1-2.3-4"})
    assert refused.status_code == 400 and refused.get_json()["field"] == "target"


def test_readme_api_table_lists_every_route_and_field(app, client):
    from controller.config import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## API", 1)[1].split("\n## ", 1)[0]
    document = client.get("/api/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        shown = path.replace("{", "<").replace("}", ">")
        for method, op in item.items():
            assert f"{method.upper()} {shown}" in section, (method, path)
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            for reference in body.get("oneOf", [body]):
                name = reference.get("$ref", "").rsplit("/", 1)[-1]
                for field in schemas.get(name, {}).get("properties", {}):
                    assert field in section, (method, path, field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_scan_timeout": {"operator": None}}, "max_scan_timeout"),
        ({"max_scan_timeout": {"viewer": 5}}, "max_scan_timeout"),
        ({"scope": None, "max_prefix_v4": 24}, "scope"),
        ({"windows_deployments": None}, "windows_deployments"),
        ({"token_max_running": None}, "token_max_running"),
    ],
)
def test_a_null_in_a_policy_change_is_refused_and_changes_nothing(client, changes, field):
    before = client.get("/api/policy").get_json()
    response = client.put("/api/policy", json=changes)
    assert response.status_code == 400 and response.get_json()["field"] == field, response.get_json()
    assert client.get("/api/policy").get_json() == before


def test_cors_headers_only_for_an_allowed_origin_exactly(tmp_path):
    from controller.app import create_app
    from tests.support.app import make_config, prepare_app

    app = prepare_app(create_app(make_config(tmp_path, CORS_ORIGINS="https://a.example,https://b.example")))
    client = app.test_client()
    allow = "Access-Control-Allow-Origin"
    assert allow not in client.get("/api/ping").headers  # no Origin: the configured origins are not told
    assert client.get("/api/ping", headers={"Origin": "https://a.example"}).headers[allow] == "https://a.example"
    assert client.get("/api/ping", headers={"Origin": "https://a.example/"}).headers[allow] == "https://a.example/"
    for other in ("https://A.EXAMPLE", "https://a.example.evil", "https://evil.example"):
        assert allow not in client.get("/api/ping", headers={"Origin": other}).headers
        refused = client.options("/api/scans", headers={"Origin": other, "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 403 and "not allowed" in refused.get_json()["error"]
        assert not [name for name, _ in refused.headers if name.startswith("Access-Control-")]
    allowed = client.options("/api/scans", headers={"Origin": "https://b.example", "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 204 and allowed.headers[allow] == "https://b.example"


KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
LINE = "192.0.2.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA=="
DRIFT = [  # (method, path, body or query, accepted): what the fuzzer found documented otherwise than enforced
    ("post", "/api/tokens", {"name": "", "role": "viewer"}, False),
    ("post", "/api/deploy/agent", {"target": "192.0.2.10", "os_type": "linux", "username": "u", "password": "p", "ssh_key": KEY}, False),
    ("post", "/api/deploy/agent", {"target": "192.0.2.10", "os_type": "linux", "username": "u"}, False),
    ("post", "/api/deploy/agent", {"target": "192.0.2.10", "os_type": "linux", "password": "p"}, False),
    ("post", "/api/deploy/agent", {"target": "192.0.2.10", "os_type": "linux", "username": "ü", "password": "p"}, False),
    ("post", "/api/deployments", {"hosts": ["192.0.2.10"], "os_type": "windows", "username": "u", "ssh_key": KEY}, False),
    ("post", "/api/deployments", {"limit": "", "os_type": "linux"}, False),
    ("post", "/api/deployments", {"hosts": ["192.0.2.10"], "os_type": "linux", "group": "º"}, False),
    ("put", "/api/host-keys", {"known_hosts": []}, False),
    ("put", "/api/host-keys", {"known_hosts": ["# a comment only", ""]}, False),
    ("put", "/api/host-keys", {"known_hosts": ["not a key line"]}, False),
    ("post", "/api/scans", {**VALID, "ports": ["1"] * 86}, False),
    ("post", "/api/scans", {**VALID, "ports": ["22,80"]}, False),
    ("post", "/api/scans", {**VALID, "ports": ["22-80", 443, *range(1000, 1083)]}, True),
    ("post", "/api/tokens", {"name": "long", "role": "viewer", "expires_in": "87601h"}, False),
    ("get", "/api/scans", {"limit": "0"}, False),
    ("get", "/api/scans", {"limit": "501"}, False),
    ("get", "/api/scans", {"before": "-1"}, False),
    ("get", "/api/scans", {"limit": "500", "before": "7"}, True),
]


@pytest.mark.parametrize(("method", "path", "data", "accepted"), DRIFT)
def test_the_document_allows_what_the_api_accepts(app, client, method, path, data, accepted):
    """Each case of drift schemathesis found (tests/test_fuzz.py): the document and the API now agree on it."""
    from tests.support import fuzz_formats

    document = client.get("/api/openapi.json").get_json()
    op = document["paths"][path][method]
    if method == "get":
        response = client.get(path, query_string=data)
        params = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "query"}
        documented = all(
            fuzz_formats.validator_for(document, params[k]).is_valid(int(v) if v.lstrip("-").isdigit() else v) for k, v in data.items()
        )
    else:
        response = getattr(client, method)(path, json=data)
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        documented = fuzz_formats.validator_for(document, schema).is_valid(data)
    assert documented is accepted
    assert (response.status_code != 400) is accepted, response.get_json()
