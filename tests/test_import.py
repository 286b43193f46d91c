"""Imports: real captures in tests/fixtures/scans/ become scan records through POST /api/imports and `cloudx import`;
hostile, wrong, broken and oversize files are refused and store nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from controller.app import create_app
from controller.cli import cli
from controller.scanlib import scanner
from controller.store.database import Database
from controller.store.models import Job, Scan
from tests.support.app import FIXTURES, make_config, make_token, prepare_app

SCANS = FIXTURES / "scans"
ADDRESS = "198.18.0.2"
# file -> (tool, scan_type, target, ports)
CAPTURES = {
    "nmap_ports.xml": ("nmap", "default", ADDRESS, "22,80,8080,2222,9999"),
    "nmap_intense.xml": ("nmap", "intense", ADDRESS, "8080,9999,22"),
    "masscan.json": ("masscan", "tcp_scan", ADDRESS, None),
    "zmap_syn.csv": ("zmap", "tcp_syn", ADDRESS, "8080"),
    "zmap_icmp.csv": ("zmap", "icmp_echo", ADDRESS, None),
}
HOST_FIELDS = ("address", "status", "reason", "hostnames", "mac")
PORT_FIELDS = ("protocol", "port", "state", "reason", "service", "product", "version")
ENTITY = b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "b">]>\n<nmaprun args="nmap 198.18.0.2">&a;</nmaprun>\n'
EXTERNAL = b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<nmaprun args="nmap 198.18.0.2">&e;</nmaprun>\n'
EXTERNAL_DTD = b'<?xml version="1.0"?>\n<!DOCTYPE nmaprun SYSTEM "file:///etc/passwd">\n<nmaprun args="nmap 198.18.0.2"></nmaprun>\n'


def parsed(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What the scanner role's own parsers read of a capture: the hosts, and the parse's info."""
    info: dict[str, Any] = {}
    tool = CAPTURES[name][0]
    hosts = list(scanner.parse_output(tool, str(SCANS / name), None, info))
    return hosts, info


def normalized(hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**{k: h[k] for k in HOST_FIELDS}, "ports": sorted(({k: p[k] for k in PORT_FIELDS} for p in h["ports"]), key=str)}
        for h in sorted(hosts, key=lambda h: h["address"])
    ]


def upload(client: Any, data: bytes, **params: str) -> Any:
    headers = {"Content-Type": params.pop("content_type", "application/octet-stream")}
    return client.post("/api/imports", data=data, query_string=params, headers=headers)


def counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Job)), session.scalar(select(func.count()).select_from(Scan))


def check_stored(client: Any, job_id: str, name: str) -> dict[str, Any]:
    """The scan's stored hosts and ports are the parsers' reading of the file; the job is an ended import; the asset knows it."""
    tool, scan_type, target, ports = CAPTURES[name]
    scan = client.get(f"/api/scans/{job_id}").get_json()
    assert (scan["tool"], scan["scan_type"], scan["target"], scan["ports"], scan["status"]) == (
        tool,
        scan_type,
        target,
        ports,
        "successful",
    )
    hosts, info = parsed(name)
    assert normalized(scan["results"]["hosts"]) == normalized(hosts)
    summary = scan["results"]["summary"]
    assert summary["probed"] == scanner.probed_ports(tool, scan_type, ports, info)
    assert (summary["truncated"], summary["state"], summary["scanner"], summary["hosts"]) == (False, "completed", "import", len(hosts))
    job = client.get(f"/api/jobs/{job_id}").get_json()
    assert (job["kind"], job["status"], job["progress"]) == ("import", "successful", 100)
    raw = client.get(f"/api/scans/{job_id}/raw")
    assert raw.status_code == 200 and raw.data == (SCANS / name).read_bytes()
    asset = client.get(f"/api/assets/{ADDRESS}").get_json()
    assert job_id in [s["job_id"] for s in asset["scans"]]
    opened = {(p["protocol"], p["port"]) for h in hosts for p in h["ports"] if p["state"] == "open"}
    assert opened <= {(p["protocol"], p["port"]) for p in asset["ports"] if p["state"] == "open"}
    return scan


@pytest.fixture
def db(app: Any) -> Database:
    return app.extensions["cloudx.db"]


# --- the API ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CAPTURES))
def test_each_capture_is_imported_through_the_api(client, name):
    tool, scan_type, target, _ = CAPTURES[name]
    response = upload(client, (SCANS / name).read_bytes(), filename=f"/some/dir/{name}", tool=tool)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["tool"], body["scan_type"], body["target"], body["source"]) == (tool, scan_type, target, name)
    assert (body["hosts"], body["truncated"], body["status"]) == (len(parsed(name)[0]), False, "successful")
    check_stored(client, body["job_id"], name)


@pytest.mark.parametrize("name", list(CAPTURES))
def test_the_tool_is_detected_when_not_given(client, name):
    response = upload(client, (SCANS / name).read_bytes())
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["tool"] == CAPTURES[name][0]
    assert response.get_json()["source"] == f"upload{Path(name).suffix}"


def test_masscan_stdout_and_content_disposition_name(client):
    data = (SCANS / "masscan_interactive.stdout").read_bytes()
    headers = {"Content-Type": "text/plain", "Content-Disposition": 'attachment; filename="../scan run;1.txt"'}
    response = client.post("/api/imports", data=data, headers=headers)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["tool"], body["scan_type"], body["target"], body["source"]) == ("masscan", "tcp_scan", ADDRESS, "scan_run_1.txt")
    ports = client.get(f"/api/scans/{body['job_id']}").get_json()["results"]["hosts"][0]["ports"]
    assert [(p["port"], p["state"]) for p in ports] == [(2222, "open"), (8080, "open")]


@pytest.mark.parametrize(("name", "tool"), [("nmap_ports.xml", "masscan"), ("masscan.json", "zmap"), ("zmap_syn.csv", "nmap")])
def test_a_wrong_tool_is_refused_and_named(client, db, name, tool):
    before = counts(db)
    response = upload(client, (SCANS / name).read_bytes(), tool=tool)
    assert response.status_code == 400
    error = response.get_json()
    assert error["field"] == "tool" and f"not {tool}'s output" in error["error"] and CAPTURES[name][0] in error["error"]
    assert counts(db) == before


def test_an_unknown_tool_and_an_unrecognised_format_are_refused(client, db):
    before = counts(db)
    unknown = upload(client, (SCANS / "nmap_ports.xml").read_bytes(), tool="nessus")
    assert unknown.status_code == 400 and unknown.get_json()["field"] == "tool"
    for data in (b"hello, world\n", b"", b"   \n", (SCANS / "zmap_status.csv").read_bytes()):
        response = upload(client, data)
        assert response.status_code == 400, data
        assert "unrecognised format" in response.get_json()["error"] or "empty" in response.get_json()["error"]
    not_nmap = upload(client, b'<?xml version="1.0"?><html><body/></html>')
    assert not_nmap.status_code == 400 and "<nmaprun>" in not_nmap.get_json()["error"]
    assert counts(db) == before


@pytest.mark.parametrize("data", [ENTITY, EXTERNAL, EXTERNAL_DTD], ids=["entity", "external-entity", "external-dtd"])
def test_entity_declarations_and_external_entities_are_refused(client, db, config, data):
    before = counts(db)
    for params in ({}, {"tool": "nmap"}):
        response = upload(client, data, **params)
        assert response.status_code == 400, response.get_json()
        assert "entity" in response.get_json()["error"]
    assert counts(db) == before
    assert not list((Path(config.ARTIFACTS_DIR) / ".imports").iterdir())  # nothing left behind either


def test_a_truncated_nmap_file_is_stored_as_truncated(client):
    data = (SCANS / "nmap_ports.xml").read_bytes()
    cut = data[: data.index(b"<runstats>")]  # the host is complete, the run never finished
    response = upload(client, cut, filename="cut.xml")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["truncated"] is True and body["hosts"] == 1
    scan = client.get(f"/api/scans/{body['job_id']}").get_json()
    assert scan["results"]["summary"]["truncated"] is True and scan["results"]["summary"]["state"] == "truncated"
    assert normalized(scan["results"]["hosts"]) == normalized(parsed("nmap_ports.xml")[0])
    assert "truncated" in scan["status_reason"]


def test_malformed_files_are_refused(client, db):
    before = counts(db)
    data = (SCANS / "nmap_ports.xml").read_bytes()
    broken = data.replace(b"<runstats>", b"<runstats><a></b>")
    for bad in (broken, b'[\n{"ip": ]\n', b'{"ip": "198.18.0.2", "ports": [{"port": "x", "proto": "tcp"}]}\n]\n'):
        response = upload(client, bad)
        assert response.status_code == 400, (bad, response.get_json())
        assert "malformed" in response.get_json()["error"]
    assert counts(db) == before


def test_a_file_over_the_limit_gets_413_and_stores_nothing(tmp_path):
    app = prepare_app(create_app(make_config(tmp_path, IMPORT_MAX_BYTES=1000)))
    try:
        client, db = app.test_client(), app.extensions["cloudx.db"]
        before = counts(db)
        data = (SCANS / "nmap_ports.xml").read_bytes()
        assert len(data) > 1000
        response = upload(client, data)
        assert response.status_code == 413
        assert "CLOUDX_IMPORT_MAX_BYTES" in response.get_json()["error"]
        # Without a Content-Length (chunked), the limit is met while reading.
        chunked = client.post(
            "/api/imports",
            input_stream=io.BytesIO(data),
            headers={"Content-Type": "application/xml", "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert chunked.status_code == 413 and "CLOUDX_IMPORT_MAX_BYTES" in chunked.get_json()["error"]
        assert counts(db) == before
        assert not list((tmp_path / "artifacts" / ".imports").iterdir())
        small = upload(client, (SCANS / "zmap_syn.csv").read_bytes())
        assert small.status_code == 201, small.get_json()
    finally:
        app.extensions["cloudx.db"].dispose()


def test_a_body_over_the_json_cap_is_accepted_here(client, config):
    data = (SCANS / "nmap_intense.xml").read_bytes()
    padded = data.replace(b"<verbose", b"<!-- " + b"x" * (config.MAX_CONTENT_LENGTH + 10) + b" -->\n<verbose", 1)
    assert len(padded) > config.MAX_CONTENT_LENGTH
    response = upload(client, padded, content_type="application/xml")
    assert response.status_code == 201, response.get_json()


def test_only_operators_and_admins_import_and_the_audit_log_has_it(app, client, db):
    before = counts(db)
    viewer = make_token(app, "viewer")
    data = (SCANS / "zmap_syn.csv").read_bytes()
    denied = client.post("/api/imports", data=data, headers={"Authorization": f"Bearer {viewer}", "Content-Type": "text/csv"})
    assert denied.status_code == 403
    assert counts(db) == before
    operator = make_token(app, "operator", "importer")
    allowed = client.post("/api/imports", data=data, headers={"Authorization": f"Bearer {operator}", "Content-Type": "text/csv"})
    assert allowed.status_code == 201
    job_id = allowed.get_json()["job_id"]
    assert client.get(f"/api/jobs/{job_id}").get_json()["created_by"] == "importer"
    entries = client.get("/api/audit").get_json()["entries"]
    assert any(e["job_id"] == job_id and e["path"] == "/api/imports" and e["status"] == 201 for e in entries)


def test_a_target_outside_the_scope_is_imported(client):
    data = (SCANS / "zmap_icmp.csv").read_bytes().replace(ADDRESS.encode(), b"203.0.113.7")
    response = upload(client, data)
    assert response.status_code == 201 and response.get_json()["target"] == "203.0.113.7"


def test_the_target_covers_the_hosts_when_the_file_names_none(client):
    data = b"saddr,type,code,classification,success,ttl\n198.18.0.2,0,0,echoreply,1,64\n198.18.0.200,0,0,echoreply,1,64\n"
    response = upload(client, data)
    assert response.status_code == 201 and response.get_json()["target"] == "198.18.0.0/24"
    job = client.get(f"/api/jobs/{response.get_json()['job_id']}").get_json()
    assert job["extra_vars"]["scanner_target"] is None  # the target describes where the hosts are; it claims none of the others


def test_a_content_type_that_is_not_a_file_is_refused(client, db):
    before = counts(db)
    response = client.post("/api/imports", data={"file": "x"})
    assert response.status_code == 415
    assert counts(db) == before


def test_an_imported_job_is_never_claimed(client, db):
    from controller.queue.jobs import claim_next

    job_id = upload(client, (SCANS / "masscan.json").read_bytes()).get_json()["job_id"]
    with db.session() as session:
        assert claim_next(session, 10, "w:1", "n") is None
        assert claim_next(session, 10, "w:1", "n", only=job_id) is None


def test_the_openapi_document_lists_the_import(client):
    document = client.get("/api/openapi.json").get_json()
    op = document["paths"]["/api/imports"]["post"]
    assert op["x-required-role"] == "operator" and op["operationId"] == "import_scan"
    assert {"application/octet-stream", "application/xml", "application/json", "text/csv"} <= set(op["requestBody"]["content"])
    assert {p["name"] for p in op["parameters"]} == {"tool", "filename"}
    assert {"201", "400", "403", "413", "415"} <= set(op["responses"])
    assert "Imported" in document["components"]["schemas"]


# --- the CLI ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CAPTURES))
def test_each_capture_is_imported_through_the_cli(runner, config, app, client, name):
    tool, scan_type, target, _ = CAPTURES[name]
    result = runner.invoke(cli, ["import", str(SCANS / name), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["tool"], body["scan_type"], body["target"], body["source"], body["truncated"]) == (tool, scan_type, target, name, False)
    check_stored(client, body["job_id"], name)
    assert client.get(f"/api/jobs/{body['job_id']}").get_json()["created_by"].startswith("cli:")
    with_tool = runner.invoke(cli, ["import", str(SCANS / name), "--tool", tool])
    assert with_tool.exit_code == 0, with_tool.output
    assert with_tool.stdout.startswith("imported scan ") and f"{tool} {scan_type} {target} from {name}, 1 host" in with_tool.stdout


def test_the_cli_refuses_in_one_line_with_exit_2(runner, config, tmp_path):
    database = Database(config.DATABASE_URL)
    try:
        before = counts(database)
        hostile = tmp_path / "hostile.xml"
        hostile.write_bytes(EXTERNAL)
        unknown = tmp_path / "notes.txt"
        unknown.write_text("hello\n")
        cases = [
            (["import", str(SCANS / "nmap_ports.xml"), "--tool", "zmap"], "not zmap's output"),
            (["import", str(SCANS / "nmap_ports.xml"), "--tool", "nessus"], "tool must be one of"),
            (["import", str(hostile)], "entity"),
            (["import", str(unknown)], "unrecognised format"),
            (["import", str(tmp_path / "missing.xml")], "cannot read"),
        ]
        for args, said in cases:
            result = runner.invoke(cli, args)
            assert result.exit_code == 2, (args, result.output)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("cloudx import: ") and said in lines[0], (args, result.stderr)
        assert counts(database) == before
    finally:
        database.dispose()


def test_an_imported_scan_is_diffable_and_deletable_like_any_scan(client):
    old = upload(client, (SCANS / "nmap_ports.xml").read_bytes()).get_json()["job_id"]
    new = upload(client, (SCANS / "nmap_ports.xml").read_bytes()).get_json()["job_id"]
    diff = client.get(f"/api/scans/{new}/diff")  # the previous successful scan of the same target, tool and type
    assert diff.status_code == 200, diff.get_json()
    assert diff.get_json()["against"]["job_id"] == old and diff.get_json()["differences"] is False
    masscan = upload(client, (SCANS / "masscan.json").read_bytes()).get_json()["job_id"]
    assert client.get(f"/api/scans/{masscan}/diff?against={old}").get_json()["mode"] == "open_ports"
    assert client.delete(f"/api/scans/{old}").status_code == 200
    assert client.get(f"/api/scans/{old}").status_code == 404
    assert client.get(f"/api/assets/{ADDRESS}").status_code == 200  # deleting a scan keeps the assets


def nmap_xml(args: str, protocol: str = "tcp", finished: str = 'exit="success"', hosts: tuple[str, ...] = (ADDRESS,)) -> bytes:
    host = (
        '<host><status state="up" reason="echo-reply"/><address addr="{}" addrtype="ipv4"/><ports><port protocol="tcp" '
        'portid="22"><state state="open" reason="syn-ack"/></port></ports></host>\n'
    )
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE nmaprun>\n<nmaprun scanner="nmap" args="{args}" version="7.93">\n'
        f'<scaninfo type="syn" protocol="{protocol}" numservices="1" services="22"/>\n'
        + "".join(host.format(a) for a in hosts)
        + f'<runstats><finished elapsed="1.00" {finished}/><hosts up="1" down="0" total="1"/></runstats>\n</nmaprun>\n'
    ).encode()


@pytest.mark.parametrize(
    ("args", "protocol", "hosts", "expected"),
    [
        ("nmap -T4 -F -oX /tmp/x.xml -- 198.18.0.0/30", "tcp", (ADDRESS,), ("default", "198.18.0.0/30", None)),
        ("nmap -T4 -sU -oX - 198.18.0.2", "udp", (ADDRESS,), ("udp", ADDRESS, None)),
        ("nmap -T4 -p- 198.18.0.2", "tcp", (ADDRESS,), ("tcp", ADDRESS, None)),
        ("nmap --top-ports=20 --max-retries 1 198.18.0.2", "tcp", (ADDRESS,), ("quick", ADDRESS, None)),
        ("nmap -A -p22 --stats-every 2s scanme.example.org", "tcp", (ADDRESS,), ("intense", "scanme.example.org", "22")),
        ("nmap -T4 198.18.0.2 198.18.0.3", "tcp", (ADDRESS, "198.18.0.3"), ("default", "198.18.0.2/31", None)),
        ("nmap -T4 -iL targets.txt", "tcp", (ADDRESS, "198.18.0.9"), ("default", "198.18.0.0/28", None)),
        # --defeat-icmp-ratelimit takes no value: the target after it is the target
        ("nmap --defeat-icmp-ratelimit 198.18.0.0/30", "tcp", (ADDRESS,), ("default", "198.18.0.0/30", None)),
    ],
)
def test_the_nmap_scan_type_target_and_ports_come_from_its_arguments(client, args, protocol, hosts, expected):
    response = upload(client, nmap_xml(args, protocol, hosts=hosts))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["scan_type"], body["target"], body["ports"]) == expected


# args, hosts reported -> the scan's target, its job's scanner_target (what it covered entirely), summary targets_exact
CLAIMS = {
    "one-network": ("nmap -oX - 198.18.0.0/30", (ADDRESS,), "198.18.0.0/30", "198.18.0.0/30", True),
    "one-address": ("nmap -oX - 198.18.0.2", (ADDRESS,), ADDRESS, ADDRESS, True),
    "adjacent-addresses": ("nmap 198.18.0.2 198.18.0.3", (ADDRESS, "198.18.0.3"), "198.18.0.2/31", "198.18.0.2/31", True),
    "networks-together-one": ("nmap 198.18.0.0/25 198.18.0.128/25", (ADDRESS,), "198.18.0.0/24", "198.18.0.0/24", True),
    "hostname": ("nmap scanme.example.org", (ADDRESS,), "scanme.example.org", ADDRESS, False),
    "scattered-addresses": ("nmap -oX - 10.0.0.1 10.0.3.1", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/22", None, False),
    "list-file": ("nmap -iL targets.txt", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/22", None, False),
    "list-file-one-host": ("nmap -iL targets.txt", ("10.0.0.1",), "10.0.0.1", "10.0.0.1", False),
    "random": ("nmap -iR 10", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/22", None, False),
    "exclude": ("nmap --exclude 10.0.1.0/24 10.0.0.0/22", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/22", None, False),
    "exclude-equals": ("nmap --exclude=10.0.1.0/24 10.0.0.0/22", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/22", None, False),
    "excludefile": ("nmap --excludefile skip.txt 10.0.0.0/22", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/22", None, False),
    "range": ("nmap 10.0.0.1-5", ("10.0.0.1", "10.0.0.5"), "10.0.0.0/29", None, False),
    "range-and-address": ("nmap 10.0.0.1-5 10.0.3.1", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/22", None, False),
    "wildcard": ("nmap 10.0.0.*", ("10.0.0.1", "10.0.0.9"), "10.0.0.0/28", None, False),
    "hosts-outside-the-target": ("nmap 10.0.0.0/30", ("10.0.0.1", "10.0.3.1"), "10.0.0.0/30", None, False),
}


@pytest.mark.parametrize("case", list(CLAIMS))
def test_an_nmap_import_claims_only_what_it_scanned(client, case):
    args, hosts, target, scanned, exact = CLAIMS[case]
    response = upload(client, nmap_xml(args, hosts=hosts))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["target"] == target
    job = client.get(f"/api/jobs/{body['job_id']}").get_json()
    assert job["extra_vars"]["scanner_target"] == scanned  # an address or a network, never a name: what a diff compares on
    summary = client.get(f"/api/scans/{body['job_id']}").get_json()["results"]["summary"]
    assert summary["targets_exact"] is exact


def masscan_json(*records: tuple[str, int]) -> bytes:
    lines = [
        f'{{"ip": "{ip}", "timestamp": "1", "ports": [{{"port": {port}, "proto": "tcp", "status": "open", "reason": "syn-ack"}}]}}'
        for ip, port in records
    ]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


def test_a_masscan_or_zmap_import_claims_only_the_hosts_it_reported(client):
    for data in (
        masscan_json(("10.0.0.1", 80), ("10.0.3.1", 80)),
        b"saddr,type,code,classification,success,ttl\n10.0.0.1,0,0,echoreply,1,64\n10.0.3.1,0,0,echoreply,1,64\n",
    ):
        body = upload(client, data).get_json()
        assert body["target"] == "10.0.0.0/22"  # where the hosts are, not what was scanned
        assert client.get(f"/api/jobs/{body['job_id']}").get_json()["extra_vars"]["scanner_target"] is None
        assert client.get(f"/api/scans/{body['job_id']}").get_json()["results"]["summary"]["targets_exact"] is False
    one = upload(client, masscan_json(("10.0.0.1", 80))).get_json()
    assert client.get(f"/api/jobs/{one['job_id']}").get_json()["extra_vars"]["scanner_target"] == "10.0.0.1"


def test_a_scattered_open_only_import_leaves_the_hosts_between_alone(client):
    """The assets: a zmap import that found port 22 open on 10.0.0.1 and 10.0.3.1 says nothing of 10.0.1.5's."""
    seen = upload(client, nmap_xml("nmap -p22 10.0.1.5", hosts=("10.0.1.5",)))
    assert seen.status_code == 201, seen.get_json()
    zmap = b"saddr,sport,classification,success,repeat,cooldown,ttl\n10.0.0.1,22,synack,1,0,1,64\n10.0.3.1,22,synack,1,0,1,64\n"
    scattered = upload(client, zmap)
    assert scattered.status_code == 201, scattered.get_json()
    assert scattered.get_json()["ports"] == "22"  # it probed port 22: on the hosts it reported
    asset = client.get("/api/assets/10.0.1.5").get_json()
    assert [(p["port"], p["state"]) for p in asset["ports"]] == [(22, "open")]


def test_hosts_between_an_inexact_imports_hosts_are_never_gone_or_new(client):
    old = upload(client, nmap_xml("nmap -iL a.txt", hosts=("10.0.0.1", "10.0.3.1"))).get_json()["job_id"]
    new = upload(client, nmap_xml("nmap -iL b.txt", hosts=("10.0.1.7", "10.0.3.1"))).get_json()["job_id"]
    diff = client.get(f"/api/scans/{new}/diff?against={old}")
    assert diff.status_code == 200, diff.get_json()
    body = diff.get_json()
    assert (body["summary"]["hosts_gone"], body["summary"]["hosts_new"], body["summary"]["hosts_not_comparable"]) == (0, 0, 2)
    assert body["differences"] is False


def test_an_nmap_run_that_failed_is_stored_as_failed(client):
    response = upload(client, nmap_xml("nmap 198.18.0.2", finished='exit="error" errormsg="pcap: no permission"'))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "failed"
    scan = client.get(f"/api/scans/{body['job_id']}").get_json()
    assert scan["status"] == "failed" and "no permission" in scan["status_reason"]


def test_the_covering_network_of_ipv6_hosts():
    from controller.services.imports import Tally

    for addresses, covering in ((["::1"], "::1"), (["2001:db8::1", "2001:db8::ff"], "2001:db8::/120"), (["198.18.0.2"], ADDRESS)):
        tally = Tally()
        for address in addresses:
            tally.add({"address": address, "status": "up", "ports": []})
        assert tally.covering() == covering


# --- what the store takes --------------------------------------------------------------------------------------


def nmap_host(*hosts: str) -> bytes:
    """An nmap document of hosts up, each given by what is in its <host> after its <status>."""
    body = "".join(f'<host><status state="up" reason="echo-reply"/>{host}</host>\n' for host in hosts)
    return (
        '<?xml version="1.0"?>\n<nmaprun scanner="nmap" args="nmap 198.18.0.2" version="7.93">\n'
        f'<scaninfo type="syn" protocol="tcp" numservices="1" services="22"/>\n{body}'
        '<runstats><finished elapsed="1.00" exit="success"/><hosts up="1" down="0" total="1"/></runstats>\n</nmaprun>\n'
    ).encode()


IPV4 = f'<address addr="{ADDRESS}" addrtype="ipv4"/>'
OPEN_22 = '<port protocol="tcp" portid="22"><state state="open" reason="syn-ack"/></port>'
BROKEN = {
    "port-without-protocol": (nmap_host(f'{IPV4}<ports><port portid="22"><state state="open"/></port></ports>'), "no protocol"),
    "port-without-state": (nmap_host(f'{IPV4}<ports><port protocol="tcp" portid="22"></port></ports>'), "no state"),
    "port-of-another-protocol": (
        nmap_host(f'{IPV4}<ports><port protocol="icmp" portid="22"><state state="open"/></port></ports>'),
        "'icmp'",
    ),
    "port-over-65535": (nmap_host(f'{IPV4}<ports><port protocol="tcp" portid="65536"><state state="open"/></port></ports>'), "0 to 65535"),
    "host-without-address": (nmap_host(f"<ports>{OPEN_22}</ports>"), "without an IP address"),
    "host-with-a-mac-only": (nmap_host(f'<address addr="00:11:22:33:44:55" addrtype="mac"/><ports>{OPEN_22}</ports>'), "without an IP"),
    "address-not-an-address": (nmap_host(f'<address addr="{"1" * 70}" addrtype="ipv4"/><ports>{OPEN_22}</ports>'), "not an IP address"),
    "address-with-a-long-zone": (nmap_host(f'<address addr="fe80::1%{"z" * 70}" addrtype="ipv6"/>'), "longer than 64"),
    "service-over-128": (
        nmap_host(f'{IPV4}<ports><port protocol="tcp" portid="22"><state state="open"/><service name="{"s" * 129}"/></port></ports>'),
        "service is longer than 128",
    ),
    "extraports-state-over-24": (nmap_host(f'{IPV4}<ports><extraports state="{"f" * 25}" count="3"/>{OPEN_22}</ports>'), "longer than 24"),
    "mac-over-17": (nmap_host(f'{IPV4}<address addr="{"a" * 18}" addrtype="mac"/>'), "mac is longer than 17"),
    "masscan-proto-null": (
        b'[\n{"ip": "198.18.0.2", "timestamp": "1", "ports": [{"port": 80, "proto": null, "status": "open"}]}\n]\n',
        "no protocol",
    ),
    "masscan-state-not-text": (
        b'[\n{"ip": "198.18.0.2", "timestamp": "1", "ports": [{"port": 80, "proto": "tcp", "status": 1}]}\n]\n',
        "no state",
    ),
    "masscan-reason-not-text": (
        b'[\n{"ip": "198.18.0.2", "timestamp": "1", "ports": [{"port": 80, "proto": "tcp", "status": "open", "reason": [1]}]}\n]\n',
        "reason is not a text",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_host_the_store_cannot_take_is_refused_and_named(client, db, config, case):
    data, said = BROKEN[case]
    before = counts(db)
    response = upload(client, data)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()
    assert error["field"] == "body" and error["error"].startswith("host 1") and said in error["error"], error
    assert "nothing was stored" in error["error"]
    assert counts(db) == before
    assert not list((Path(config.ARTIFACTS_DIR) / ".imports").iterdir())
    assert client.get("/api/assets").get_json()["assets"] == []


def test_the_refused_host_is_named_by_number_and_address(client):
    bad = '<address addr="198.18.0.3" addrtype="ipv4"/><ports><port portid="22"><state state="open"/></port></ports>'
    response = upload(client, nmap_host(f"{IPV4}<ports>{OPEN_22}</ports>", bad))
    assert response.status_code == 400 and response.get_json()["error"].startswith("host 2 (198.18.0.3): port 22 has no protocol")


def test_addresses_are_stored_canonically(client):
    response = upload(client, nmap_host(f'<address addr="2001:DB8:0:0::0001" addrtype="ipv6"/><ports>{OPEN_22}</ports>'))
    assert response.status_code == 201, response.get_json()
    hosts = client.get(f"/api/scans/{response.get_json()['job_id']}").get_json()["results"]["hosts"]
    assert [h["address"] for h in hosts] == ["2001:db8::1"]
    assert client.get("/api/assets/2001:db8::1").status_code == 200


# --- one transaction -------------------------------------------------------------------------------------------


def test_an_import_is_one_transaction(app, db, config, monkeypatch):
    """Nothing of an import is visible before all of it is, and a failure anywhere (here the asset update, the last
    step) leaves no job, scan or host behind, with no compensating delete needed."""
    from controller.services import assets
    from controller.services.imports import import_scan

    before = counts(db)
    seen: list[tuple[int, int]] = []

    def crash(self: Any) -> None:
        seen.append(counts(db))  # another connection: what others see while the import is being stored
        raise RuntimeError("crash in the middle of an import")

    monkeypatch.setattr(assets.AssetUpdate, "finish", crash)
    with pytest.raises(RuntimeError, match="crash"):
        import_scan(db, config, "tests", [(SCANS / "nmap_ports.xml").read_bytes()], "nmap_ports.xml")
    assert seen == [before]
    assert counts(db) == before
    assert not [p for p in Path(config.ARTIFACTS_DIR).iterdir() if p.name != ".imports"]
    assert not list((Path(config.ARTIFACTS_DIR) / ".imports").iterdir())


def test_store_results_keeps_its_behaviour_for_the_runner(app, db, config):
    """store_results (the runner's) is store_results_in in a transaction of its own."""
    from controller.services.scans import store_results

    assert store_results(db, config, "no-such-job", "successful", None) == ("successful", None)


# --- serving ---------------------------------------------------------------------------------------------------


def test_waitress_takes_bodies_as_large_as_the_import_limit(tmp_path):
    from waitress.adjustments import Adjustments

    from controller.cli.serve import waitress_options

    for limit in (2 * 1024**3 + 1, 1000):
        config = make_config(tmp_path, IMPORT_MAX_BYTES=limit)
        options = waitress_options(config, None, 4, 100)
        assert options["max_request_body_size"] == max(limit, config.MAX_CONTENT_LENGTH)
        listener = __import__("socket").socket()
        try:
            adjusted = Adjustments(**{**options, "sockets": [listener]})  # waitress reads every option given
        finally:
            listener.close()
        assert adjusted.max_request_body_size == options["max_request_body_size"]
        # The request threads asked for, and as many again as live streams may hold.
        assert (adjusted.threads, adjusted.connection_limit, adjusted.ident) == (4 + config.STREAM_MAX, 100, "cloudx")


# --- the CLI's errors ------------------------------------------------------------------------------------------


def test_the_cli_exits_2_in_one_line_on_a_bad_setting_or_database(runner, monkeypatch, tmp_path):
    cases = [
        ({"CLOUDX_IMPORT_MAX_BYTES": "lots"}, "CLOUDX_IMPORT_MAX_BYTES"),
        ({"DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir/cloudx.db"}, "cannot store the scan"),
        ({"DATABASE_URL": "nosuchdialect://x"}, "cannot store the scan"),
    ]
    for env, said in cases:
        with monkeypatch.context() as patched:
            for key, value in env.items():
                patched.setenv(key, value)
            result = runner.invoke(cli, ["import", str(SCANS / "zmap_syn.csv")])
        assert result.exit_code == 2, (env, result.output, result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cloudx import: ") and said in lines[0], (env, result.stderr)
