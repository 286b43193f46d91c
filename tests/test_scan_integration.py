"""Real scans through the controller (API -> executor -> worker -> ansible-runner -> role) against test hosts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.waiting import wait_for, wait_scan

pytestmark = pytest.mark.integration


def ports_of(view: dict, address: str) -> dict[tuple[str, int], str]:
    hosts = {h["address"]: h for h in view["results"]["hosts"]}
    assert address in hosts, view["results"]
    return {(p["protocol"], p["port"]): p["state"] for p in hosts[address]["ports"]}


def scan(client, timeout: float = 300, **payload) -> dict:
    response = client.post("/api/scans", json=payload)
    assert response.status_code == 202, response.get_json()
    view = wait_scan(client, response.get_json()["job_id"], timeout)
    # The reason and the scanner's summary first: pytest cuts a long dict before them.
    assert view["status"] == "successful", (view["status"], view["status_reason"], (view.get("results") or {}).get("summary"))
    assert view["progress"] == 100
    return view


@pytest.mark.parametrize("scan_type", ["default", "quick", "tcp"])
def test_nmap_tcp_port_states(live_app, target, scan_type):
    client = live_app.test_client()
    view = scan(client, target=target.address, tool="nmap", scan_type=scan_type, ports="22,80,8080,9999")
    assert ports_of(view, target.address) == {("tcp", 22): "open", ("tcp", 80): "closed", ("tcp", 8080): "open", ("tcp", 9999): "filtered"}
    assert view["results"]["summary"]["state"] == "completed"
    raw = client.get(f"/api/scans/{view['job_id']}/raw")
    assert raw.status_code == 200 and raw.mimetype == "application/xml"
    assert b"<nmaprun" in raw.data and target.address.encode() in raw.data


def test_nmap_all_tcp_ports(live_app, target):
    view = scan(live_app.test_client(), target=target.address, tool="nmap", scan_type="tcp")
    states = ports_of(view, target.address)
    # Every other port is closed, so nmap lists only the exceptions.
    assert states == {("tcp", 22): "open", ("tcp", 8080): "open", ("tcp", 9999): "filtered"}


def test_nmap_intense_detects_service(live_app, target):
    view = scan(live_app.test_client(), target=f"{target.subnet.network_address + 2}", tool="nmap", scan_type="intense", ports="8080")
    host = view["results"]["hosts"][0]
    (port,) = host["ports"]
    assert (port["port"], port["state"], port["service"], port["product"]) == (8080, "open", "http", "SimpleHTTPServer")


def test_nmap_udp_port_states(live_app, target):
    view = scan(live_app.test_client(), target=target.address, tool="nmap", scan_type="udp", ports="5353,5354,5355,5356")
    assert ports_of(view, target.address) == {
        ("udp", 5353): "open",
        ("udp", 5354): "open|filtered",
        ("udp", 5355): "closed",
        ("udp", 5356): "open|filtered",
    }


def test_nmap_scans_a_network(live_app, target):
    network = f"{target.subnet.network_address}/30"
    view = scan(live_app.test_client(), target=network, tool="nmap", scan_type="default", ports="22,80")
    assert ports_of(view, target.address) == {("tcp", 22): "open", ("tcp", 80): "closed"}


def test_masscan_tcp(live_app, target):
    view = scan(live_app.test_client(), target=target.address, tool="masscan", scan_type="tcp_scan", ports="22,80,8080,9999")
    # masscan reports open ports only.
    assert ports_of(view, target.address) == {("tcp", 22): "open", ("tcp", 8080): "open"}


def test_masscan_udp(live_app, target):
    view = scan(live_app.test_client(), target=target.address, tool="masscan", scan_type="udp_scan", ports="5353,5355,5356")
    assert ports_of(view, target.address) == {("udp", 5353): "open"}


def test_masscan_ping(live_app, target):
    view = scan(live_app.test_client(), target=f"{target.subnet.network_address}/30", tool="masscan", scan_type="ping_scan")
    assert [(h["address"], h["status"]) for h in view["results"]["hosts"]] == [(target.address, "up")]


def test_zmap_tcp_syn(live_app, target):
    client = live_app.test_client()
    view = scan(client, target=f"{target.subnet.network_address}/29", tool="zmap", scan_type="tcp_syn", port=8080)
    assert ports_of(view, target.address) == {("tcp", 8080): "open"}
    # zmap reports SYN-ACKs only: a closed port (RST) and a filtered one find nothing.
    for port in (80, 9999):
        assert scan(client, target=target.address, tool="zmap", scan_type="tcp_syn", port=port)["results"]["hosts"] == []


def test_zmap_icmp_echo(live_app, target):
    view = scan(live_app.test_client(), target=f"{target.subnet.network_address}/30", tool="zmap", scan_type="icmp_echo")
    assert [(h["address"], h["status"]) for h in view["results"]["hosts"]] == [(target.address, "up")]


def scanner_processes(address: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"(nmap|masscan|zmap) .*{address}"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def scanner_leftovers(job_id: str) -> list[str]:
    """What a scan left on its scanner (this machine): its work tree, or an async status file naming it."""
    found = [str(p) for p in Path("/var/tmp/cloudx-scans").glob(f"{job_id}*")]
    async_dir = Path.home() / ".ansible_async"
    if async_dir.is_dir():
        found += [str(p) for p in async_dir.iterdir() if p.is_file() and job_id in p.read_text(errors="replace")]
    return found


def test_progress_rises_and_stop_leaves_no_scanner(live_app, slow_target):
    client = live_app.test_client()
    job_id = client.post(
        "/api/scans", json={"target": slow_target.address, "tool": "nmap", "scan_type": "udp", "ports": "1-1000"}
    ).get_json()["job_id"]
    seen: list[int] = []

    def progressed() -> bool:
        view = client.get(f"/api/scans/{job_id}").get_json()
        assert view["status"] in ("queued", "running"), view
        if view["progress"] not in seen:
            seen.append(view["progress"])
        return len([p for p in seen if p > 0]) >= 2

    assert wait_for(progressed, timeout=120, interval=0.5), seen
    assert seen == sorted(seen) and 0 < seen[-1] < 100
    assert scanner_processes(slow_target.address)
    events = client.get(f"/api/jobs/{job_id}/events?event=runner_retry").get_json()["events"]
    assert events and "cloudx_scan_progress" in events[-1]["event_data"]["res"]

    assert client.post(f"/api/scans/{job_id}/stop").status_code == 202
    view = wait_scan(client, job_id, timeout=60)
    assert view["status"] == "canceled"
    # The scanner stops itself when its lease runs out (SCAN_LEASE_SECONDS).
    assert wait_for(lambda: not scanner_processes(slow_target.address), timeout=40), scanner_processes(slow_target.address)
    # Nothing of the stopped scan stays on the scanner (the worker runs playbooks/scan_cleanup.yml).
    assert wait_for(lambda: not scanner_leftovers(job_id), timeout=40), scanner_leftovers(job_id)
    job = client.get(f"/api/jobs/{job_id}").get_json()
    events = client.get(f"/api/jobs/{job_id}/events?limit=500").get_json()["events"]
    assert [e["counter"] for e in events] == list(range(1, job["final_counter"] + 1))


def test_scan_timeout_keeps_partial_results(live_app, slow_target):
    client = live_app.test_client()
    job_id = client.post(
        "/api/scans", json={"target": slow_target.address, "tool": "nmap", "scan_type": "udp", "ports": "1-1000", "timeout": 8}
    ).get_json()["job_id"]
    view = wait_scan(client, job_id, timeout=120)
    assert view["status"] == "timeout", view
    assert view["results"]["summary"]["state"] == "timeout"
    assert view["results"]["summary"]["truncated"] is True
    assert not scanner_processes(slow_target.address)
    assert wait_for(lambda: not scanner_leftovers(job_id), timeout=40), scanner_leftovers(job_id)


def test_delete_running_scan_stops_it_first(live_app, slow_target):
    client = live_app.test_client()
    job_id = client.post(
        "/api/scans", json={"target": slow_target.address, "tool": "nmap", "scan_type": "udp", "ports": "1-1000"}
    ).get_json()["job_id"]
    assert wait_for(lambda: client.get(f"/api/scans/{job_id}").get_json()["progress"] > 0, timeout=90)
    response = client.delete(f"/api/scans/{job_id}")
    assert response.status_code == 200 and response.get_json() == {"job_id": job_id, "deleted": True}
    assert client.get(f"/api/scans/{job_id}").status_code == 404
    assert client.get(f"/api/jobs/{job_id}/events").status_code == 404
    assert not (Path(live_app.config["ARTIFACTS_DIR"]) / job_id).exists()
    assert wait_for(lambda: not scanner_processes(slow_target.address), timeout=40)
    assert wait_for(lambda: not scanner_leftovers(job_id), timeout=40), scanner_leftovers(job_id)


def test_system_monitor_pings_a_test_host(client, target, lab):
    body = client.get(f"/api/system-monitor?target={target.address}").get_json()
    assert body["status"] == "reachable" and body["loss_percent"] == 0.0
    assert all(p["value"] > 0 for p in body["latency_ms"])
    silent = f"{target.subnet.network_address + 3}"  # no host there
    body = client.get(f"/api/system-monitor?target={silent}").get_json()
    assert body["status"] == "unreachable" and body["loss_percent"] == 100.0


def test_cli_scan_shows_progress_and_results(runner, target):
    from controller.cli import cli

    result = runner.invoke(cli, ["scan", target.address, "--tool", "nmap", "--type", "default", "--ports", "22,80,9999"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith(target.address)]
    assert [(r[2], r[3]) for r in rows] == [("22/tcp", "open"), ("80/tcp", "closed"), ("9999/tcp", "filtered")]
    assert "successful 100%" in result.output
