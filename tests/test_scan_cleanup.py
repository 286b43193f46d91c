"""Scans leave nothing on the scanner: playbooks/scan.yml and playbooks/scan_cleanup.yml run with ansible-playbook
against this machine (local connection), with a HOME and a TMPDIR of the test's own, so ~/.ansible_async,
~/.ansible/tmp and the modules' unpacked payloads are the test's."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.app import write_inventory
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

needs_nmap = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")


class Runs:
    """ansible-playbook runs on one test's inventory, results dir, scanner work dir and HOME."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.inventory = write_inventory(tmp_path / "inventory")
        self.work_dir = tmp_path / "work"
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "PWD": str(tmp_path),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmpdir),
            # Ansible puts its remote temporary files under ~user (not $HOME) unless told.
            "ANSIBLE_REMOTE_TMP": str(self.home / ".ansible" / "tmp"),
        }
        self.started: list[subprocess.Popen[str]] = []
        self.logs: list[object] = []

    def argv(self, playbook: str, extra: dict[str, object], *options: str) -> list[str]:
        extra = {"scanner_work_dir": str(self.work_dir), "scanner_results_dir": str(self.tmp_path / "results"), **extra}
        return [str(BIN / "ansible-playbook"), "-i", str(self.inventory), f"playbooks/{playbook}", "-e", json.dumps(extra), *options]

    def run(self, playbook: str, extra: dict[str, object], *options: str) -> subprocess.CompletedProcess[str]:
        argv = self.argv(playbook, extra, *options)
        return subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300)

    def start(self, playbook: str, extra: dict[str, object]) -> subprocess.Popen[str]:
        log = (self.tmp_path / "playbook.log").open("w")
        self.logs.append(log)
        proc = subprocess.Popen(
            self.argv(playbook, extra), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.started.append(proc)
        return proc

    def cleanup(self, scan_id: str, *options: str) -> subprocess.CompletedProcess[str]:
        return self.run("scan_cleanup.yml", {"scanner_hosts": "scanners", "scanner_scan_id": scan_id}, *options)

    def async_files(self) -> list[Path]:
        directory = self.home / ".ansible_async"
        return sorted(directory.iterdir()) if directory.is_dir() else []

    def leftovers(self) -> list[Path]:
        """What a scan may leave outside its work dir: async status files in the default ~/.ansible_async, the
        async wrapper's copy of cloudx_scan (it embeds the scan's arguments) and the module's unpacked payload."""
        copies = sorted((self.home / ".ansible" / "tmp").glob("ansible-tmp-*/AnsiballZ_cloudx_scan.py"))
        return self.async_files() + copies + sorted(self.tmpdir.glob("ansible_cloudx_scan_payload_*"))

    def close(self) -> None:
        """Kill what the test started and may have left: its playbooks (with the workers ansible-core detaches
        from them by setsid) and the scans in its work dir."""
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in playbook_workers(str(self.tmp_path)) + [p for p, _ in scan_processes(self.work_dir)]:
            kill(pid)
        for log in self.logs:
            log.close()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def processes() -> list[tuple[int, list[str], list[str]]]:
    """(pid, argv, environment) of every process this test can read."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().decode(errors="replace").split("\0")
            environ = Path(f"/proc/{name}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv != [""]:
            found.append((int(name), argv, environ))
    return found


def scan_processes(work_dir: Path) -> list[tuple[int, str]]:
    """The processes of the scans in work_dir: started for their async jobs (cloudx_scan, its async wrapper,
    the scanner) or naming a file there."""
    root = str(work_dir) + "/"
    return [
        (pid, " ".join(argv))
        for pid, argv, environ in processes()
        if any(arg.startswith(root) for arg in argv[1:]) or any(e.startswith("ANSIBLE_ASYNC_DIR=" + root) for e in environ)
    ]


def playbook_workers(marker: str) -> list[int]:
    """ansible-playbook processes (the playbook or its detached workers) whose arguments contain marker."""
    return [pid for pid, argv, _ in processes() if any("ansible-playbook" in a for a in argv[:2]) and marker in " ".join(argv)]


def scan_vars(scan_id: str, target: str, **overrides: object) -> dict[str, object]:
    return {
        "scanner_hosts": "scanners",
        "scanner_tool": "nmap",
        "scanner_scan_type": "quick",
        "scanner_target": target,
        "scanner_ports": "22,80",
        "scanner_scan_id": scan_id,
        **overrides,
    }


def new_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def runs(tmp_path):
    runs = Runs(tmp_path)
    yield runs
    runs.close()


def test_refused_scan_fails_at_once_with_the_modules_message(runs):
    # 127.0.0.0/24 is 256 addresses, more than 16: cloudx_scan refuses it before anything runs. Before
    # cloudx_scan_status read the async job's result, the play polled until its retries ran out (with the
    # default scanner_timeout of 1800 s, 960 polls) and then failed with "Unknown error".
    scan_id = new_id("refused")
    began = time.monotonic()
    result = runs.run("scan.yml", scan_vars(scan_id, "127.0.0.0/24", scanner_max_addresses=16, scanner_ports=""))
    elapsed = time.monotonic() - began
    assert result.returncode != 0, result.stdout
    assert "target covers 256 addresses, more than max_addresses (16)" in result.stdout, result.stdout
    assert "Unknown error" not in result.stdout
    assert elapsed < 60, elapsed  # a hang check, not a speed test
    assert not (runs.work_dir / scan_id).exists()
    assert runs.leftovers() == []


@needs_nmap
def test_completed_scan_leaves_no_work_dir_and_no_async_file(runs):
    scan_id = new_id("done")
    result = runs.run("scan.yml", scan_vars(scan_id, "127.0.0.1"))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((runs.tmp_path / "results" / scan_id / "localhost" / "summary.json").read_text())
    assert summary["state"] == "completed"
    assert not (runs.work_dir / scan_id).exists()
    assert list(runs.work_dir.iterdir()) == []
    # At once: the async wrapper would remove its copy of the module up to 5 s later, if it is not killed.
    assert runs.leftovers() == []


@needs_nmap
def test_kept_work_dir_is_private_and_holds_the_scan(runs):
    scan_id = new_id("kept")
    result = runs.run("scan.yml", scan_vars(scan_id, "127.0.0.1", scanner_keep_work_dir=True))
    assert result.returncode == 0, result.stdout + result.stderr
    work = runs.work_dir / scan_id
    assert work.stat().st_mode & 0o777 == 0o700
    assert json.loads((work / "summary.json").read_text())["state"] == "completed"
    assert json.loads((work / "status.json").read_text())["state"] == "finished"
    # No async job: the scan ran in a process of its own, started by cloudx_scan (detach).
    assert not (work / "async").exists() and runs.async_files() == []


@needs_nmap
def test_cleanup_check_mode_removes_nothing_then_cleanup_removes_the_scan(runs):
    scan_id = new_id("check")
    assert runs.run("scan.yml", scan_vars(scan_id, "127.0.0.1", scanner_keep_work_dir=True)).returncode == 0
    work = runs.work_dir / scan_id
    files = sorted(p.relative_to(work) for p in work.rglob("*"))
    assert Path("summary.json") in files and Path("status.json") in files

    result = runs.cleanup(scan_id, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=1" in result.stdout
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == files

    result = runs.cleanup(scan_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=1" in result.stdout and not work.exists()
    # Idempotent: nothing left to clean is not an error.
    result = runs.cleanup(scan_id)
    assert result.returncode == 0 and "changed=0" in result.stdout, result.stdout


def test_cleanup_never_signals_processes_that_are_not_the_scans(runs):
    scan_id = new_id("foreign")
    work = runs.work_dir / scan_id
    work.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        status = {"state": "running", "percent": 10, "phase": "x", "pid": bystander.pid, "scanner_pid": bystander.pid}
        (work / "status.json").write_text(json.dumps(status))
        result = runs.cleanup(scan_id)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not work.exists()
        time.sleep(0.5)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_cleanup_refuses_an_empty_scan_id_and_passes_with_the_default_work_dir(runs):
    result = runs.run("scan_cleanup.yml", {"scanner_hosts": "scanners", "scanner_scan_id": ""})
    assert result.returncode != 0 and "Refusing cleanup request" in result.stdout, result.stdout
    result = runs.run("scan_cleanup.yml", {"scanner_hosts": "scanners", "scanner_scan_id": "../x"})
    assert result.returncode != 0 and "Refusing cleanup request" in result.stdout, result.stdout
    # The default work dir (/var/tmp/cloudx-scans) and a scan that left nothing there.
    argv = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(runs.inventory),
        "playbooks/scan_cleanup.yml",
        "-e",
        "scanner_scan_id=" + new_id("none"),
    ]
    result = subprocess.run(argv, cwd=ROOT, env=runs.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=0" in result.stdout and "failed=0" in result.stdout


def running_status(work: Path) -> dict[str, object] | None:
    try:
        status = json.loads((work / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return status if status.get("state") == "running" and status.get("scanner_pid") else None


def slow_scan(runs: Runs, scan_id: str, target: str, lease: int) -> tuple[subprocess.Popen[str], Path, int]:
    """Start a scan that takes minutes (UDP to a host that answers only with rate-limited ICMP); return the
    playbook, the scan's work dir and the pid of the scan's own process (cloudx_scan with detach) once the
    scanner runs."""
    proc = runs.start("scan.yml", scan_vars(scan_id, target, scanner_scan_type="udp", scanner_ports="1-1000", scanner_lease_seconds=lease))
    work = runs.work_dir / scan_id
    assert wait_for(lambda: running_status(work) is not None or proc.poll() is not None, timeout=90)
    assert proc.poll() is None, (runs.tmp_path / "playbook.log").read_text()
    status = running_status(work)
    assert status is not None and isinstance(status["pid"], int), status
    assert not (work / "async").exists() and runs.async_files() == []
    return proc, work, status["pid"]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.mark.integration
def test_killed_playbook_then_cleanup_leaves_nothing(runs, slow_target):
    scan_id = new_id("killed")
    # A long lease: what ends this scan is the cleanup playbook.
    proc, work, scan_pid = slow_scan(runs, scan_id, slow_target.address, lease=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any("nmap" in argv for _, argv in scan_processes(work))
    assert alive(scan_pid)  # the scan's own process, in a session of its own: the kill did not reach it

    result = runs.cleanup(scan_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=1" in result.stdout
    assert len(result.stdout) < 4000  # the controller stores every event
    assert not work.exists()
    assert wait_for(lambda: not scan_processes(work), timeout=15), scan_processes(work)
    assert wait_for(lambda: not alive(scan_pid), timeout=15)
    assert runs.leftovers() == []
    # ansible-core's worker that polled the scan outlives the killed playbook (it runs in a session of its
    # own); its next poll finds the scan gone and ends it instead of polling until its retries run out.
    assert wait_for(lambda: not playbook_workers(scan_id), timeout=30), playbook_workers(scan_id)

    result = runs.cleanup(scan_id)
    assert result.returncode == 0 and "changed=0" in result.stdout, result.stdout


@pytest.mark.integration
def test_scan_nobody_polls_removes_its_own_work_dir(runs, slow_target):
    scan_id = new_id("lease")
    proc, work, scan_pid = slow_scan(runs, scan_id, slow_target.address, lease=3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Also the detached worker polling the scan (the controller's worker, a subreaper, ends those).
    for pid in playbook_workers(scan_id):
        kill(pid)
    assert wait_for(lambda: not work.exists(), timeout=30), sorted(str(p) for p in work.rglob("*"))
    assert wait_for(lambda: not scan_processes(work) and not alive(scan_pid), timeout=15), scan_processes(work)
    # A poll killed while it ran may leave its copy of a module in the remote tmp dir: none of cloudx_scan.
    assert wait_for(lambda: runs.leftovers() == [], timeout=15), runs.leftovers()
    assert list(runs.work_dir.iterdir()) == []


@needs_nmap
@pytest.mark.integration
def test_a_scanner_host_that_is_not_this_machine_is_polled_fetched_and_cleaned(runs, slow_target):
    """The path of a remote scanner host (no results in place): progress polls, the five result files fetched, the
    work dir removed by the clean-up task. Run over the local connection with scanner__local_results forced off,
    since no booted test host has nmap; SSH itself is what every other remote task of the suite goes through."""
    scan_id = new_id("remote")
    extra = scan_vars(scan_id, slow_target.address, scanner_scan_type="udp", scanner_ports="1-40", scanner_poll_interval=1)
    result = runs.run("scan.yml", {**extra, "scanner__local_results": False})
    assert result.returncode == 0, result.stdout + result.stderr
    tasks = result.stdout.split("TASK [scanner : ")
    polls = [t for t in tasks if t.startswith("Report scan progress]")]
    assert len(polls) == 2 and "skipping" not in polls[1], result.stdout  # the scan outlived its first report
    (fetch,) = [t for t in tasks if t.startswith("Fetch the results]")]
    assert fetch.count("changed: [localhost] => (item=") == 5, fetch
    (removal,) = [t for t in tasks if t.startswith("Remove the scan's work directory]")]
    assert "changed: [localhost]" in removal, removal
    files = runs.tmp_path / "results" / scan_id / "localhost"
    assert sorted(p.name for p in files.iterdir()) == ["hosts.jsonl", "raw.xml", "stderr.txt", "stdout.txt", "summary.json"]
    summary = json.loads((files / "summary.json").read_text())
    assert summary["state"] == "completed" and summary["hosts_up"] == 1, summary
    assert not (runs.work_dir / scan_id).exists() and runs.leftovers() == []
