"""Exports: a scan's stored results as JSON, JSON lines and CSV, exactly, safely for spreadsheets, and streamed."""

from __future__ import annotations

import copy
import csv
import io
import json
import tracemalloc

import pytest

from controller.config import ROOT
from controller.services.export import export_chunks, open_export
from tests.support.app import make_token
from tests.support.stored import nmap_hosts, store_scan

FIXTURE = (ROOT / "tests" / "fixtures" / "scans" / "nmap_ports.xml").read_text()
TARGET = "198.18.0.0/24"
HEADER = ["address", "hostnames", "mac", "status", "host_reason", "protocol", "port", "state", "reason", "service", "product", "version"]


def _port(port, state="open", reason="syn-ack", service=None, product=None, version=None, protocol="tcp"):
    return {
        "protocol": protocol,
        "port": port,
        "state": state,
        "reason": reason,
        "service": service,
        "product": product,
        "version": version,
    }


@pytest.fixture
def hosts():
    """The real capture (198.18.0.2, five ports), a host whose fields a spreadsheet would run or that need quoting, and
    a host without ports."""
    captured, _ = nmap_hosts(FIXTURE)
    hostile = {
        "address": "198.18.0.9",
        "status": "up",
        "reason": "@reason",
        "hostnames": ["=cmd|' /C calc'!A0", 'comma,"quote"\nline'],
        "mac": "02:00:00:00:00:09",
        "ports": [
            _port(443, service="+SUM(1+1)", product="-2+3", version="@version", reason="\tsyn-ack"),
            _port(8443, service="a,b", product='say "hi"', version="\rcr", reason="x=1"),
        ],
        "extra_state": None,
    }
    portless = {"address": "198.18.0.10", "status": "down", "reason": "no-response", "hostnames": [], "mac": None, "ports": []}
    return [*captured, hostile, portless]


def _shown(host):
    """A host as the API shows it (schemas.scans.ScanHost)."""
    return {k: host[k] for k in ("address", "status", "reason", "hostnames", "mac")} | {"ports": host["ports"]}


def _export(client, job_id, fmt):
    response = client.get(f"/api/scans/{job_id}/export?format={fmt}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_json_is_the_scan_and_its_hosts_as_the_api_shows_them(app, client, hosts):
    job_id = store_scan(app, client, hosts, TARGET)
    response = _export(client, job_id, "json")
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Disposition"] == f"attachment; filename=scan-{job_id}.json"
    document = json.loads(response.get_data())
    detail = client.get(f"/api/scans/{job_id}").get_json()
    results = detail.pop("results")
    assert document == {"scan": detail, "hosts": results["hosts"]}
    assert document["hosts"] == [_shown(h) for h in hosts]
    assert document["scan"]["status"] == "successful"
    # The default format is json.
    assert client.get(f"/api/scans/{job_id}/export").get_data() == response.get_data()


def test_jsonl_is_one_host_with_its_ports_per_line(app, client, hosts):
    job_id = store_scan(app, client, hosts, TARGET)
    response = _export(client, job_id, "jsonl")
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert response.headers["Content-Disposition"] == f"attachment; filename=scan-{job_id}.jsonl"
    text = response.get_data(as_text=True)
    assert text.endswith("\n") and text.count("\n") == len(hosts)
    assert [json.loads(line) for line in text.splitlines()] == [_shown(h) for h in hosts]


def test_csv_has_a_row_per_port_quoted_and_neutralised(app, client, hosts):
    job_id = store_scan(app, client, hosts, TARGET)
    response = _export(client, job_id, "csv")
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == f"attachment; filename=scan-{job_id}.csv"
    text = response.get_data().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    captured = [
        ["198.18.0.2", "", "2a:a7:c7:05:5d:24", "up", "arp-response", "tcp", str(p["port"]), p["state"], p["reason"], p["service"], "", ""]
        for p in hosts[0]["ports"]
    ]
    hostile = ["198.18.0.9", "'=cmd|' /C calc'!A0 comma,\"quote\"\nline", "02:00:00:00:00:09", "up", "'@reason"]
    assert rows == [
        HEADER,
        *captured,
        [*hostile, "tcp", "443", "open", "'\tsyn-ack", "'+SUM(1+1)", "'-2+3", "'@version"],
        [*hostile, "tcp", "8443", "open", "x=1", "a,b", 'say "hi"', "'\rcr"],
        ["198.18.0.10", "", "", "down", "no-response", "", "", "", "", "", "", ""],
    ]
    assert [p["service"] for p in hosts[0]["ports"]] == ["ssh", "http", "EtherNetIP-1", "http-proxy", "abyss"]
    # RFC 4180: CRLF after every record, fields with commas, quotes or line breaks quoted, quotes doubled.
    assert text.startswith(",".join(HEADER) + "\r\n") and text.endswith("\r\n")
    assert text.count("\r\n") == len(rows) and '"\'\rcr"\r\n' in text  # a CR inside a quoted cell is no line end
    assert '"\'=cmd|\' /C calc\'!A0 comma,""quote""\nline"' in text
    assert ',"a,b","say ""hi""",' in text
    # Nothing a spreadsheet would run starts a cell.
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row


def test_batches_keep_each_scan_and_host_with_its_own_ports(app, client, hosts):
    other = copy.deepcopy(hosts)
    for host in other:
        host["ports"] = [_port(1, service="other")]
    first = store_scan(app, client, hosts, TARGET)
    second = store_scan(app, client, other, TARGET)
    database = app.extensions["cloudx.db"]
    for job_id, expected in ((first, hosts), (second, other)):
        with database.session() as session:
            export = open_export(session, job_id, "jsonl")
        chunks = list(export_chunks(database, export, batch=1))
        assert len(chunks) == len(expected)
        assert [json.loads(line) for line in b"".join(chunks).splitlines()] == [_shown(h) for h in expected]


def test_a_scan_not_finished_exports_what_is_stored(client):
    job_id = client.post("/api/scans", json={"target": "192.0.2.1", "tool": "nmap", "scan_type": "default"}).get_json()["job_id"]
    document = json.loads(_export(client, job_id, "json").get_data())
    assert document["hosts"] == [] and document["scan"]["status"] == "queued" and document["scan"]["job_id"] == job_id
    assert _export(client, job_id, "jsonl").get_data() == b""
    assert _export(client, job_id, "csv").get_data() == (",".join(HEADER) + "\r\n").encode()


def test_unknown_format_and_unknown_scan(app, client, hosts):
    job_id = store_scan(app, client, hosts, TARGET)
    for fmt in ("xml", "JSON", ""):
        response = client.get(f"/api/scans/{job_id}/export?format={fmt}")
        assert response.status_code == 400 and response.is_json
        assert response.get_json() == {"error": "format must be one of: json, jsonl, csv", "field": "format"}
    for fmt in ("json", "csv"):
        response = client.get(f"/api/scans/no-such-scan/export?format={fmt}")
        assert response.status_code == 404 and response.get_json()["error"] == "no scan with job_id no-such-scan"


def test_a_viewer_may_export_and_nobody_without_a_token(app, client, hosts):
    job_id = store_scan(app, client, hosts, TARGET)
    viewer = app.test_client()
    viewer.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_token(app, 'viewer')}"
    assert viewer.get(f"/api/scans/{job_id}/export?format=csv").status_code == 200
    anonymous = app.test_client()
    anonymous.environ_base.pop("HTTP_AUTHORIZATION")
    assert anonymous.get(f"/api/scans/{job_id}/export").status_code == 401


def test_the_openapi_document_describes_the_export(client):
    document = client.get("/api/openapi.json").get_json()
    operation = document["paths"]["/api/scans/{job_id}/export"]["get"]
    assert operation["operationId"] == "export_scan" and operation["x-required-role"] == "viewer"
    (parameter,) = [p for p in operation["parameters"] if p["in"] == "query"]
    assert parameter["name"] == "format" and parameter["schema"]["enum"] == ["json", "jsonl", "csv"]
    assert parameter["schema"]["default"] == "json"
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "application/x-ndjson", "text/csv"}
    assert {"400", "401", "403", "404"} <= set(operation["responses"])
    hosts = operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["hosts"]["items"]["$ref"]
    assert hosts.rsplit("/", 1)[-1] in document["components"]["schemas"]


def _generated(count):
    return [
        {
            "address": f"198.18.{i >> 8}.{i & 255}",
            "status": "up",
            "reason": "syn-ack",
            "hostnames": [f"host-{i}.example"],
            "mac": None,
            "ports": [_port(22, service="ssh"), _port(80, state="closed", reason="reset", service="http")],
        }
        for i in range(count)
    ]


@pytest.mark.slow
def test_a_large_export_is_streamed_in_constant_memory(app, client):
    count = 20_000
    job_id = store_scan(app, client, _generated(count), "198.18.0.0/17", ports="22,80")
    for fmt, records in (("json", None), ("jsonl", count), ("csv", 2 * count + 1)):
        response = client.get(f"/api/scans/{job_id}/export?format={fmt}", buffered=False)
        assert response.status_code == 200
        size = chunks = lines = 0
        tracemalloc.start()
        try:
            for chunk in response.response:
                size += len(chunk)
                chunks += 1
                lines += chunk.count(b"\n")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            response.close()
        print(f"{fmt}: {size} bytes in {chunks} chunks, tracemalloc peak {peak} bytes ({peak / size:.3f} of the body)")
        assert chunks >= 20, (fmt, chunks)
        assert peak < size / 5, (fmt, peak, size)
        if records is not None:
            assert lines == records, fmt
