"""The API with no executor running: validation, JSON errors, reads, heartbeat."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from controller.store.models import Job

VALID = {"target": "192.0.2.10", "tool": "nmap", "scan_type": "default"}


def job_count(app) -> int:
    with app.extensions["cloudx.db"].session() as session:
        return session.query(Job).count()


def test_ping_and_health(client):
    assert client.get("/api/ping").get_json() == {"status": "pong"}
    assert client.get("/api/health").get_json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**VALID, "target": "-iL /etc/passwd"}, "target"),
        ({**VALID, "target": "10.0.0.1;id"}, "target"),
        ({**VALID, "target": 12}, "target"),
        ({**VALID, "target": None}, "target"),
        ({k: v for k, v in VALID.items() if k != "target"}, "target"),
        ({**VALID, "tool": "curl"}, "tool"),
        ({**VALID, "scan_type": "stealth"}, "scan_type"),
        ({**VALID, "ports": "1-99999"}, "ports"),
        ({**VALID, "ports": {"a": 1}}, "ports"),
        ({"target": "192.0.2.1", "tool": "zmap", "scan_type": "tcp_syn"}, "ports"),
        ({**VALID, "timeout": "5"}, "timeout"),
        ({**VALID, "timeout": 0}, "timeout"),
        ({**VALID, "extra": 1}, "extra"),
        ({**VALID, "port": 22, "ports": "22"}, "ports"),
    ],
)
def test_invalid_scan_requests(app, client, body, field):
    response = client.post("/api/scans", json=body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field and response.get_json()["error"]
    assert job_count(app) == 0


@pytest.mark.parametrize("data", ["[1, 2]", '"text"', "{bad json", "null"])
def test_body_must_be_a_json_object(app, client, data):
    response = client.post("/api/scans", data=data, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["field"] == "body"
    assert job_count(app) == 0


def test_large_body_is_413(app, client):
    response = client.post("/api/scans", data=json.dumps({**VALID, "pad": "x" * 70000}), content_type="application/json")
    assert response.status_code == 413 and "error" in response.get_json()
    assert job_count(app) == 0


def test_json_errors_for_unknown_routes_and_methods(client):
    assert client.get("/api/nope").status_code == 404 and "error" in client.get("/api/nope").get_json()
    response = client.put("/api/ping")
    assert response.status_code == 405 and "error" in response.get_json() and "GET" in response.headers["Allow"]
    for path in ("/api/scans/x", "/api/jobs/x", "/api/jobs/x/events", "/api/jobs/x/hosts", "/api/scans/x/raw"):
        assert client.get(path).status_code == 404
    assert client.post("/api/scans/x/stop").status_code == 404
    assert client.delete("/api/scans/x").status_code == 404


def test_queued_scan_is_listed_stopped_and_deleted(app, client):
    job_ids = [client.post("/api/scans", json={**VALID, "target": f"192.0.2.{i}"}).get_json()["job_id"] for i in range(3)]
    page = client.get("/api/scans?limit=2").get_json()
    assert [s["job_id"] for s in page["scans"]] == job_ids[::-1][:2]
    rest = client.get(f"/api/scans?limit=2&before={page['next_before']}").get_json()
    assert [s["job_id"] for s in rest["scans"]] == job_ids[:1] and rest["next_before"] is None
    view = client.get(f"/api/scans/{job_ids[0]}").get_json()
    assert (view["status"], view["progress"], view["results"]["hosts"]) == ("queued", 0, [])
    assert client.post(f"/api/scans/{job_ids[0]}/stop").status_code == 202
    assert client.get(f"/api/scans/{job_ids[0]}").get_json()["status"] == "canceled"
    jobs = client.get("/api/jobs?status=canceled").get_json()["jobs"]
    assert [j["id"] for j in jobs] == [job_ids[0]] and jobs[0]["extra_vars"]["scanner_target"] == "192.0.2.0"
    assert client.delete(f"/api/scans/{job_ids[1]}").get_json()["deleted"] is True
    assert client.get(f"/api/scans/{job_ids[1]}").status_code == 404
    assert client.get("/api/jobs?limit=0").status_code == 400
    assert client.get("/api/jobs?cursor=zzz").status_code == 400


def write(path, text: str, bom: bool = False) -> None:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


def test_sync_status(app, client, config, tmp_path):
    path = tmp_path / "sync_heartbeat.json"
    body = client.get("/api/sync-status").get_json()
    assert body["status"] == "inactive" and "no heartbeat" in body["reason"]
    now = datetime.now(UTC)
    write(path, json.dumps({"timestamp": now.isoformat()}), bom=True)
    assert client.get("/api/sync-status").get_json()["status"] == "active"
    write(path, json.dumps({"timestamp": now.replace(tzinfo=None).isoformat()}))  # no zone: UTC
    assert client.get("/api/sync-status").get_json()["status"] == "active"
    write(path, json.dumps({"timestamp": (now - timedelta(seconds=90)).isoformat()}))
    body = client.get("/api/sync-status").get_json()
    assert body["status"] == "inactive" and body["age_seconds"] >= 90 and "old" in body["reason"]
    for bad in ("{not json", "[]", json.dumps({"timestamp": "yesterday"})):
        write(path, bad)
        response = client.get("/api/sync-status")
        assert response.status_code == 500 and response.get_json()["status"] == "error"


def test_heartbeat_command_keeps_status_active(client, runner, config):
    from controller.cli import cli

    result = runner.invoke(cli, ["heartbeat", "--file", config.SYNC_HEARTBEAT_FILE])
    assert result.exit_code == 0
    assert client.get("/api/sync-status").get_json()["status"] == "active"


def test_system_monitor(client):
    first = client.get("/api/system-monitor").get_json()
    second = client.get("/api/system-monitor?target=local").get_json()
    assert set(second["metrics"]) == {"cpu_percent", "memory_percent", "disk_percent", "net_sent_bytes_per_s", "net_recv_bytes_per_s"}
    assert len(second["metrics"]["cpu_percent"]) == len(first["metrics"]["cpu_percent"]) + 1
    assert {"value", "timestamp", "spike"} <= set(second["metrics"]["memory_percent"][-1])
    assert client.get("/api/system-monitor?target=-iL").status_code == 400
    assert client.get("/api/system-monitor?target=10.0.0.0/8").status_code == 400


def test_cli_errors_are_one_line(runner):
    from controller.cli import cli

    result = runner.invoke(cli, ["scan", "-iL", "--tool", "nmap"])
    assert result.exit_code != 0
    result = runner.invoke(cli, ["scan", "10.0.0.1;id"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0 and "target" in result.output
    result = runner.invoke(cli, ["jobs", "--status", "bogus"])
    assert result.exit_code == 1 and "status must be one of" in result.output


def test_scripts_are_served_read_only(client):
    listing = client.get("/api/scripts").get_json()
    assert {"cloudx-agent-install.sh", "cloudx-agent-setup.sh", "remove-threat.py", "requirements.txt"} <= set(listing["linux"])
    response = client.get("/api/scripts/linux/remove-threat.py")
    assert response.status_code == 200 and response.data.startswith(b"#!/usr/bin/env python3")
    assert response.headers["Content-Disposition"].startswith("attachment")
    for path, status in [
        ("/api/scripts/linux/..%2f..%2fcontroller%2fconfig.py", (400, 404)),
        ("/api/scripts/linux/../../controller/config.py", (400, 404)),
        ("/api/scripts/../controller/config.py", (400, 404)),
        ("/api/scripts/solaris/x.sh", (400,)),
        ("/api/scripts/linux/.hidden", (400,)),
        ("/api/scripts/linux/nothing-here.sh", (404,)),
        ("/api/scripts/linux/%00", (400, 404)),
    ]:
        assert client.get(path).status_code in status, path
    assert client.post("/api/scripts/linux/remove-threat.py").status_code == 405


def test_stored_scan_results_keep_each_port_with_its_host(app, client, tmp_path):
    """The bulk store (ids assigned in batches) puts every port under the right host, batch after batch."""
    from controller.services.scans import _store_hosts
    from controller.store.models import Scan

    hosts = [
        {
            "address": f"198.18.3.{i}",
            "status": "up",
            "reason": "syn-ack",
            "hostnames": [f"h{i}.test"] if i % 2 else [],
            "mac": None,
            "ports": [
                {
                    "protocol": "tcp",
                    "port": 1000 + i * 10 + k,
                    "state": "open",
                    "reason": "syn-ack",
                    "service": None,
                    "product": None,
                    "version": None,
                }
                for k in range(i % 4)
            ],
        }
        for i in range(1, 12)
    ]
    path = tmp_path / "hosts.jsonl"
    path.write_text("".join(json.dumps(h) + "\n" for h in hosts))
    job_id = client.post("/api/scans", json={**VALID, "target": "198.18.3.0/24"}).get_json()["job_id"]
    with app.extensions["cloudx.db"].session() as session:
        scan_id = session.query(Scan).filter_by(job_id=job_id).one().id
        _store_hosts(session, scan_id, path, batch=4)
    stored = client.get(f"/api/scans/{job_id}").get_json()["results"]["hosts"]
    assert [(h["address"], h["hostnames"], [p["port"] for p in h["ports"]]) for h in stored] == [
        (h["address"], h["hostnames"], [p["port"] for p in h["ports"]]) for h in hosts
    ]
