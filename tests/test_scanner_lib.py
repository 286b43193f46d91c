"""The scanner role's library: validation, argument lists, parsers on real captured output."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from controller.scanlib import ScanInputError, scanner
from tests.support.app import FIXTURES

SCANS = FIXTURES / "scans"

HOSTILE_TARGETS = [
    "-iL /etc/passwd",
    "-iL",
    "--script=x",
    "-oN x",
    "10.0.0.1;rm -rf /",
    "10.0.0.1 && id",
    "$(id)",
    "`id`",
    "10.0.0.1\n10.0.0.2",
    "10.0.0.1\x00",
    "a b",
    "",
    "fe80::1%eth0",
    "10.0.0.0/33",
    "256.1.1.1/24",
    "\u0435\u0445ample.com",
    "exa\u200bmple.com",
    "../../etc/passwd",
    "host_name.example",
    "x" * 300,
    "1.2.3.4/24/1",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_targets_are_refused(target):
    with pytest.raises(ScanInputError) as error:
        scanner.validate_target(target)
    assert error.value.field == "target"


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.7/24", "192.0.2.0/24"),
        ("2001:DB8::1", "2001:db8::1"),
        ("Scanme.Example.org.", "scanme.example.org"),
    ],
)
def test_valid_targets_are_canonical(target, canonical):
    assert scanner.validate_target(target) == canonical


@pytest.mark.parametrize("ports", ["0", "65536", "80-22", "22,", "22;80", "-p 22", "a", [], [True], True, 22.5, "1" * 2000])
def test_bad_ports(ports):
    with pytest.raises(ScanInputError):
        scanner.parse_ports(ports)


def test_port_forms():
    assert scanner.parse_ports(22) == "22"
    assert scanner.parse_ports([22, "80-90"]) == "22,80-90"
    assert scanner.parse_ports(" 22, 443 ") == "22,443"


@pytest.mark.parametrize(
    ("tool", "scan_type", "target", "ports", "field"),
    [
        ("zmap", "tcp_syn", "192.0.2.1", None, "ports"),
        ("zmap", "tcp_syn", "192.0.2.1", "22,80", "ports"),
        ("zmap", "icmp_echo", "2001:db8::1", None, "target"),
        ("masscan", "tcp_scan", "192.0.2.1", None, "ports"),
        ("masscan", "tcp_scan", "example.org", "22", "target"),
        ("masscan", "ping_scan", "192.0.2.1", "22", "ports"),
        ("nmap", "stealth", "192.0.2.1", None, "scan_type"),
        ("curl", "default", "192.0.2.1", None, "tool"),
    ],
)
def test_request_rules(tool, scan_type, target, ports, field):
    with pytest.raises(ScanInputError) as error:
        scanner.validate_request(tool, scan_type, target, ports)
    assert error.value.field == field


def test_argv_puts_the_target_last():
    for tool, types in scanner.SCAN_TYPES.items():
        for scan_type, (_, needs_ports, _) in types.items():
            request = scanner.validate_request(tool, scan_type, "192.0.2.0/30", "22" if needs_ports else None)
            argv = scanner.build_argv(request, "/tmp/raw", interface="veth0", gateway_mac="02:00:00:00:00:01", exclude_file="/tmp/x")
            assert argv[0] == tool and argv[-1] == "192.0.2.0/30"
            if tool != "masscan":
                assert argv[-2] == "--"
    nmap = scanner.build_argv(scanner.validate_request("nmap", "default", "192.0.2.1", "22"), "/tmp/raw")
    assert "-F" not in nmap and nmap[nmap.index("-p") + 1] == "22"


def test_nmap_xml():
    info: dict = {}
    with (SCANS / "nmap_ports.xml").open("rb") as stream:
        hosts = list(scanner.parse_nmap_xml(stream, info))
    assert info["exit"] == "success" and info["truncated"] is False
    (host,) = hosts
    assert host["address"] == "198.18.0.2" and host["status"] == "up" and host["mac"] == "2a:a7:c7:05:5d:24"
    assert {(p["port"], p["state"], p["reason"]) for p in host["ports"]} == {
        (22, "closed", "reset"),
        (80, "closed", "reset"),
        (2222, "open", "syn-ack"),
        (8080, "open", "syn-ack"),
        (9999, "filtered", "no-response"),
    }


def test_nmap_service_versions():
    with (SCANS / "nmap_intense.xml").open("rb") as stream:
        (host,) = scanner.parse_nmap_xml(stream)
    port = next(p for p in host["ports"] if p["port"] == 8080)
    assert (port["service"], port["product"], port["version"]) == ("http", "SimpleHTTPServer", "0.6")


def test_nmap_truncated_output_keeps_complete_hosts():
    data = (SCANS / "nmap_ports.xml").read_bytes()
    cut = data.index(b"</host>") + len(b"</host>") + 20
    info: dict = {}
    hosts = list(scanner.parse_nmap_xml(io.BytesIO(data[:cut]), info, chunk_size=64))
    assert len(hosts) == 1 and info["truncated"] is True and "error" not in info
    info = {}
    assert list(scanner.parse_nmap_xml(io.BytesIO(data[: data.index(b"<host ")]), info)) == [] and info["truncated"]
    # A host counts once its end tag is read, wherever the document stops around it.
    end = data.index(b"</host>") + len(b"</host>")
    for cut in range(end - 12, end + 40):
        hosts = list(scanner.parse_nmap_xml(io.BytesIO(data[:cut]), {}, chunk_size=7))
        assert len(hosts) == (cut >= end), cut


def test_nmap_hosts_with_other_elements_between_them():
    """nmap writes <taskbegin>, <taskend>, <postscript> and <output> between hosts and before <runstats>."""
    data = (SCANS / "nmap_ports.xml").read_bytes()
    start, end = data.index(b"<host "), data.index(b"</host>") + len(b"</host>")
    host = data[start:end]
    second = host.replace(b'addr="198.18.0.2"', b'addr="198.18.0.3"')
    between = b'\n<taskbegin task="SYN Stealth Scan" time="1"/>\n<taskend task="SYN Stealth Scan" time="2"/>\n'
    after = b'\n<postscript><script id="ssh-hostkey" output="x"/></postscript>\n<output type="interactive">x</output>'
    document = data[:start] + host + between + second + after + data[end:]
    info: dict = {}
    hosts = list(scanner.parse_nmap_xml(io.BytesIO(document), info, chunk_size=64))
    assert [h["address"] for h in hosts] == ["198.18.0.2", "198.18.0.3"] and info["truncated"] is False
    cut = document.index(b"</taskend>") if b"</taskend>" in document else document.index(b"<taskend") + 60
    assert [h["address"] for h in scanner.parse_nmap_xml(io.BytesIO(document[:cut]), {})] == ["198.18.0.2"]


def test_nmap_entities_are_refused():
    bomb = b'<?xml version="1.0"?><!DOCTYPE nmaprun [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]><nmaprun>&b;</nmaprun>'
    with pytest.raises(scanner.UnsafeXMLError):
        list(scanner.parse_nmap_xml(io.BytesIO(bomb)))
    external = b'<?xml version="1.0"?><!DOCTYPE nmaprun SYSTEM "file:///etc/passwd"><nmaprun>&x;</nmaprun>'
    with pytest.raises(scanner.UnsafeXMLError):
        list(scanner.parse_nmap_xml(io.BytesIO(external)))


def test_masscan_json_and_stdout_merge():
    with (SCANS / "masscan.json").open() as js, (SCANS / "masscan_interactive.stdout").open() as out:
        info: dict = {}
        (host,) = scanner.parse_masscan(js, out, info)
    assert [(p["protocol"], p["port"], p["state"]) for p in host["ports"]] == [("tcp", 2222, "open"), ("tcp", 8080, "open")]
    assert info["truncated"] is False


def test_masscan_killed_before_writing_json():
    text = (SCANS / "masscan.json").read_text()
    info: dict = {}
    hosts = list(
        scanner.parse_masscan(io.StringIO(text[: len(text) // 2]), io.StringIO("Discovered open port 8080/tcp on 198.18.0.2\n"), info)
    )
    assert info["truncated"] is True
    assert [p["port"] for p in hosts[0]["ports"]] == [2222, 8080]


def test_zmap_csv_and_truncation():
    with (SCANS / "zmap_syn.csv").open() as stream:
        (host,) = scanner.parse_zmap_csv(stream)
    assert host["ports"][0]["port"] == 8080 and host["ports"][0]["state"] == "open"
    with (SCANS / "zmap_icmp.csv").open() as stream:
        (host,) = scanner.parse_zmap_csv(stream)
    assert host["status"] == "up" and host["ports"] == []
    info: dict = {}
    truncated = "saddr,sport,classification,success,repeat,ttl\n198.18.0.2,8080,synack,1,0,64\n198.18.0.3,80"
    assert [h["address"] for h in scanner.parse_zmap_csv(io.StringIO(truncated), info)] == ["198.18.0.2"] and info["truncated"]


def test_progress_parsers():
    assert scanner.masscan_progress((SCANS / "masscan_status.stderr").read_text())["percent"] == 100.0
    assert scanner.zmap_progress(" 0:01 50%; send: 8 done\n 0:02 101%; send: 8 done\n") == 100.0
    assert scanner.nmap_progress(b'<taskprogress task="UDP Scan" time="1" percent="12.50" remaining="3"/>\n') == ("UDP Scan", 12.5)
    assert scanner.nmap_overall_percent("Ping Scan", 100) < scanner.nmap_overall_percent("SYN Stealth Scan", 1)


# The scanner role's modules run as scripts (python module.py args.json), as Ansible runs them, with the role's
# module_utils as ansible.module_utils.cloudx_scanner (what AnsiballZ packs).
STATUS_MODULE = Path(__file__).resolve().parents[1] / "roles" / "scanner" / "library" / "cloudx_scan_status.py"
SCAN_MODULE = STATUS_MODULE.with_name("cloudx_scan.py")
CLEANUP_MODULE = STATUS_MODULE.with_name("cloudx_scan_cleanup.py")
MODULE_UTILS = STATUS_MODULE.parents[1] / "module_utils" / "cloudx_scanner.py"
RUN_MODULE = """
import importlib.util, runpy, sys
spec = importlib.util.spec_from_file_location("ansible.module_utils.cloudx_scanner", sys.argv[1])
utils = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = utils
spec.loader.exec_module(utils)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_module(module: Path, tmp_path: Path, env: dict[str, str] | None = None, **args: object) -> tuple[dict, float]:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    began = time.monotonic()
    argv = [sys.executable, "-c", RUN_MODULE, str(MODULE_UTILS), str(module), str(args_file)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert out.stdout, out.stderr
    return json.loads(out.stdout), time.monotonic() - began


def run_status(tmp_path: Path, **args: object) -> tuple[dict, float]:
    return run_module(STATUS_MODULE, tmp_path, **args)


def ended_scan(work: Path, jid: str = "1.1", **status: object) -> None:
    """A work dir as cloudx_scan leaves it when its scan has ended, with the async job's final record."""
    (work / "async").mkdir(parents=True)
    summary = {"state": "completed", "hosts": 1, "error": None}
    (work / "status.json").write_text(json.dumps({"state": "finished", "result": "completed", "percent": 100, "pid": 1, **status}))
    (work / "summary.json").write_text(json.dumps(summary))
    (work / "hosts.jsonl").write_text('{"address": "127.0.0.1"}\n')
    (work / "raw.xml").write_text("<nmaprun/>")
    (work / "async" / jid).write_text(json.dumps({"changed": False, "summary": summary, "ansible_job_id": jid}))


def test_status_poll_of_an_ended_scan_is_final_at_once(tmp_path):
    work = tmp_path / "work"
    ended_scan(work)
    result, elapsed = run_status(tmp_path, work_dir=str(work), async_jid="1.1", async_dir=str(work / "async"), wait=30)
    assert result["finished"] is True and not result.get("failed")
    assert result["summary"]["state"] == "completed" and "msg" not in result
    assert elapsed < 10, elapsed  # not the 30 s of wait


def test_status_poll_returns_when_the_scan_ends(tmp_path):
    """A poll of a running scan waits (renewing the lease) and returns as soon as the scan's last status is written."""
    work = tmp_path / "work"
    work.mkdir()
    scanner = subprocess.Popen(["sleep", "30"])
    try:
        (work / "status.json").write_text(json.dumps({"state": "running", "percent": 10, "pid": scanner.pid}))
        (work / "lease").write_text("")
        os.utime(work / "lease", (0, 0))

        def end() -> None:
            time.sleep(1.5)
            (work / "summary.json").write_text(json.dumps({"state": "completed"}))
            (work / "status.json").write_text(json.dumps({"state": "finished", "result": "completed", "pid": scanner.pid}))

        threading.Thread(target=end).start()
        result, elapsed = run_status(tmp_path, work_dir=str(work), wait=20)
    finally:
        scanner.kill()
        scanner.wait()
    assert result["finished"] is True and result["summary"] == {"state": "completed"}
    assert 1.4 < elapsed < 10, elapsed
    assert (work / "lease").stat().st_mtime > time.time() - 60


def test_status_poll_of_a_running_scan_reports_progress_after_wait(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "status.json").write_text(json.dumps({"state": "running", "percent": 42.5, "pid": os.getpid()}))
    result, elapsed = run_status(tmp_path, work_dir=str(work), wait=1)
    assert result["finished"] is False and result["cloudx_scan_progress"]["percent"] == 42.5
    assert "summary" not in result
    assert 0.9 < elapsed < 10, elapsed


def test_status_poll_copies_the_results_in_one_step(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results" / "scan-1" / "localhost"
    ended_scan(work)
    files = ["summary.json", "hosts.jsonl", "stdout.txt", "stderr.txt", "raw.xml"]
    result, _ = run_status(tmp_path, work_dir=str(work), results_dir=str(results), result_files=files)
    assert result["finished"] is True and result["changed"] is True
    assert result["copied"] == ["summary.json", "hosts.jsonl", "raw.xml"]  # the missing ones are skipped
    assert sorted(p.name for p in results.iterdir()) == ["hosts.jsonl", "raw.xml", "summary.json"]
    assert (results / "hosts.jsonl").read_text() == (work / "hosts.jsonl").read_text()


def test_status_poll_of_a_scan_that_failed_to_start_returns_its_error(tmp_path):
    """cloudx_scan failed after its first status (no route, say): the summary is the async job's message."""
    work = tmp_path / "work"
    ended_scan(work, result="failed", error="no route")
    (work / "summary.json").unlink()
    (work / "async" / "1.1").write_text(json.dumps({"failed": True, "msg": "no route to 192.0.2.1", "ansible_job_id": "1.1"}))
    result, _ = run_status(tmp_path, work_dir=str(work), async_jid="1.1", async_dir=str(work / "async"))
    assert result["finished"] is True and not result.get("failed")
    assert result["summary"] == {"state": "failed", "error": "no route to 192.0.2.1"}
    assert result["msg"] == "no route to 192.0.2.1"


def test_scan_sees_its_scanners_end_at_once(tmp_path, monkeypatch):
    """cloudx_scan waits on the scanner process: a scanner that ends at once is not reported running for 0.5 s."""
    module_utils = Path(__file__).resolve().parents[1] / "roles" / "scanner" / "module_utils" / "cloudx_scanner.py"
    spec = importlib.util.spec_from_file_location("ansible.module_utils.cloudx_scanner", module_utils)
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    monkeypatch.setitem(sys.modules, "ansible.module_utils.cloudx_scanner", utils)
    spec = importlib.util.spec_from_file_location("cloudx_scan_module", STATUS_MODULE.with_name("cloudx_scan.py"))
    scan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scan)
    params = {"work_dir": str(tmp_path), "timeout": 60, "lease_seconds": 15, "wait": 5, "rate": 1000}
    request = {"tool": "nmap", "scan_type": "default", "target": "127.0.0.1", "ports": "22"}
    run = scan.ScanRun(type("Module", (), {"params": params})(), request, utils.Shard(0, 1, None))
    (tmp_path / "lease").write_text("")
    began = time.monotonic()
    proc = subprocess.Popen(["true"])
    assert run._watch(proc) == "completed"
    assert time.monotonic() - began < 0.4


# --- cloudx_scan with detach: no async, the scan in a process of its own -----------------------------------

FAKE_NMAP = """#!/bin/sh
# nmap -T4 -oX FILE ...: sleeps FAKE_NMAP_SLEEP seconds, then writes a one-host result.
sleep "${FAKE_NMAP_SLEEP:-0}"
cat > "$3" <<'XML'
<?xml version="1.0"?>
<nmaprun args="nmap" version="7.94"><scaninfo type="syn" protocol="tcp" numservices="1" services="22"/>
<host><status state="up" reason="localhost-response"/><address addr="127.0.0.1" addrtype="ipv4"/>
<ports><port protocol="tcp" portid="22"><state state="open" reason="syn-ack"/><service name="ssh"/></port></ports></host>
<runstats><finished exit="success" elapsed="0.1"/><hosts up="1" down="0" total="1"/></runstats></nmaprun>
XML
"""
RESULT_FILES = ["summary.json", "hosts.jsonl", "stdout.txt", "stderr.txt", "raw.xml"]


def fake_nmap_env(tmp_path: Path, sleep: float) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nmap").write_text(FAKE_NMAP)
    (bin_dir / "nmap").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_NMAP_SLEEP": str(sleep)}


def detached_scan(tmp_path: Path, sleep: float, **args: object) -> tuple[dict, float]:
    request = {"tool": "nmap", "scan_type": "default", "target": "127.0.0.1", "ports": "22", "work_dir": str(tmp_path / "work")}
    return run_module(SCAN_MODULE, tmp_path, fake_nmap_env(tmp_path, sleep), **request, detach=True, **args)


def test_detached_scan_that_ends_within_the_wait_is_final_with_its_results_in_place(tmp_path):
    results = tmp_path / "results"
    result, elapsed = detached_scan(tmp_path, 0, detach_wait=20, results_dir=str(results), result_files=RESULT_FILES, remove_work_dir=True)
    assert result["finished"] is True and not result.get("failed"), result
    assert result["summary"]["state"] == "completed" and result["summary"]["open_ports"] == 1
    assert result["cloudx_scan_progress"]["state"] == "finished" and result["cloudx_scan_progress"]["percent"] == 100
    assert sorted(result["copied"]) == sorted(RESULT_FILES) and result["removed"] is True
    assert sorted(p.name for p in results.iterdir()) == sorted(RESULT_FILES)
    assert not (tmp_path / "work").exists()
    assert elapsed < 10, elapsed  # not the 20 s of the wait


def test_detached_scan_returns_its_progress_after_the_wait_and_a_poll_sees_its_end(tmp_path):
    results = tmp_path / "results"
    work = tmp_path / "work"
    result, elapsed = detached_scan(tmp_path, 2, detach_wait=0, lease_seconds=30)
    assert result["finished"] is False and "summary" not in result, result
    status = result["cloudx_scan_progress"]
    assert status["state"] in ("starting", "running") and status["pid"] != os.getpid()
    assert elapsed < 2, elapsed  # the task returned while the scan runs
    assert (work / "status.json").is_file() and (work / "lease").is_file()
    polled, _ = run_status(tmp_path, work_dir=str(work), wait=20, results_dir=str(results), result_files=RESULT_FILES, remove_work_dir=True)
    assert polled["finished"] is True and polled["summary"]["state"] == "completed", polled
    assert polled["removed"] is True and not work.exists()
    assert (results / "hosts.jsonl").is_file()


def test_detached_scan_nobody_polls_stops_itself_and_removes_its_work_dir(tmp_path):
    work = tmp_path / "work"
    result, _ = detached_scan(tmp_path, 60, detach_wait=0, lease_seconds=3)
    assert result["finished"] is False, result
    pid = result["cloudx_scan_progress"]["pid"]
    deadline = time.monotonic() + 30
    while work.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not work.exists()
    assert scanner.process_gone(pid)


def test_cleanup_stops_a_detached_scan_by_its_status_pid(tmp_path):
    work = tmp_path / "work"
    result, _ = detached_scan(tmp_path, 60, detach_wait=0, lease_seconds=60)
    status = json.loads((work / "status.json").read_text())
    deadline = time.monotonic() + 10
    while not status.get("scanner_pid") and time.monotonic() < deadline:
        time.sleep(0.05)
        status = json.loads((work / "status.json").read_text())
    assert status["pid"] == result["cloudx_scan_progress"]["pid"] and status.get("scanner_pid"), status
    out, _ = run_module(CLEANUP_MODULE, tmp_path, work_dir=str(work), wait=10)
    assert out["changed"] is True and out["removed"] is True, out
    assert status["pid"] in out["stopped"] and "still_running" not in out
    assert not work.exists()
    assert scanner.process_gone(status["pid"]) and scanner.process_gone(status["scanner_pid"])


def test_detached_scan_that_cannot_start_its_scanner_reports_why(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "nowhere")}
    request = {"tool": "nmap", "scan_type": "default", "target": "127.0.0.1", "ports": "22", "work_dir": str(tmp_path / "work")}
    result, _ = run_module(SCAN_MODULE, tmp_path, env, **request, detach=True, detach_wait=20)
    assert result["finished"] is True and not result.get("failed"), result
    assert result["summary"]["state"] == "failed" and "nmap" in result["summary"]["error"], result
    assert result["msg"] == result["summary"]["error"]


def test_refused_detached_scan_fails_at_once(tmp_path):
    request = {"tool": "nmap", "scan_type": "default", "target": "-oX", "ports": "22", "work_dir": str(tmp_path / "work")}
    result, _ = run_module(SCAN_MODULE, tmp_path, **request, detach=True, detach_wait=20)
    assert result["failed"] is True and result["field"] == "target"
    assert not (tmp_path / "work").exists()


def test_status_poll_of_a_scan_whose_process_died_fails_at_once(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (work / "status.json").write_text(json.dumps({"state": "starting", "percent": 0, "phase": "starting", "pid": gone.pid}))
    result, elapsed = run_status(tmp_path, work_dir=str(work), wait=20)
    assert result["failed"] is True and result["finished"] is True and "ended without a result" in result["msg"]
    assert elapsed < 10, elapsed


def test_status_poll_of_a_work_dir_that_is_gone_fails_at_once(tmp_path):
    """A poll after the cleanup (or the lease) removed the scan's work dir: failed, not starting for ever."""
    result, elapsed = run_status(tmp_path, work_dir=str(tmp_path / "gone"), wait=20)
    assert result["failed"] is True and result["finished"] is True and "is gone" in result["msg"]
    assert elapsed < 10, elapsed
