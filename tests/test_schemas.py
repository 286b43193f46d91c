"""The models are the one declaration: the fast encoders agree with them, and constants match the store's."""

from __future__ import annotations

import json

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
