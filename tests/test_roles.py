"""The roles as Ansible sees them: lint at the production profile, syntax, argument specs, check mode."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.ansible import ansible

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ansible_lint_production(tmp_path):
    result = ansible("ansible-lint", "--offline", "--profile", "production", "roles", "playbooks", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("playbook", ["scan.yml", "scanner_setup.yml"])
def test_syntax(playbook, tmp_path):
    result = ansible("ansible-playbook", "--syntax-check", "-i", "inventory", f"playbooks/{playbook}", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def scan_vars(**overrides: str) -> list[str]:
    values = {"scanner_tool": "nmap", "scanner_scan_type": "default", "scanner_target": "192.0.2.1", **overrides}
    return [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]


@pytest.mark.parametrize(
    "overrides",
    [{"scanner_tool": "curl"}, {"scanner_scan_type": "stealth"}, {"scanner_target": "-iL /etc/passwd"}, {"scanner_timeout": "soon"}],
)
def test_bad_variables_fail_before_any_scan(overrides, tmp_path):
    result = ansible("ansible-playbook", "-i", "inventory", "playbooks/scan.yml", *scan_vars(**overrides), tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Start the scan" not in result.stdout
    assert not (tmp_path / "scan-results").exists()


def test_check_mode_plans_without_scanning(tmp_path):
    argv = ["--check", "-v", "-i", "inventory", "playbooks/scan.yml", *scan_vars(scanner_ports="22,80")]
    result = ansible("ansible-playbook", *argv, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "state: planned" in result.stdout and "- --\n    - 192.0.2.1" in result.stdout
    assert not (tmp_path / "scan-results").exists()


@pytest.mark.skipif(shutil.which("nmap") is None or os.geteuid() != 0, reason="needs nmap and root")
def test_local_scan_is_final_at_its_first_poll_and_copies_its_results_in_place(tmp_path):
    """A scan of 127.0.0.1 from this machine (connection local): the task that starts the scan (no async) returns
    as soon as the scan ends, with its summary, copies the result files in place (no fetch) and removes the work
    directory: no poll and no cleanup task runs after it."""
    results, work = tmp_path / "results", tmp_path / "work"
    argv = ["-i", "inventory", "playbooks/scan.yml", *scan_vars(scanner_target="127.0.0.1", scanner_ports="22")]
    argv += ["-e", "scanner_scan_id=roles-local", "-e", f"scanner_results_dir={results}", "-e", "scanner_poll_interval=20"]
    argv += ["-e", f"scanner_work_dir={work}"]
    result = ansible("ansible-playbook", *argv, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RETRYING" not in result.stdout and "async_status" not in result.stdout
    tasks = result.stdout.split("TASK [scanner : ")
    reports = [t for t in tasks if t.startswith("Report scan progress]")]
    assert len(reports) == 2 and "changed: [localhost]" in reports[0] and "skipping: [localhost]" in reports[1]
    (removal,) = [t for t in tasks if t.startswith("Remove the scan's work directory]")]
    assert "skipping: [localhost]" in removal
    assert list(work.iterdir()) == []
    assert "TASK [scanner : Fetch the results]" in result.stdout and "changed: [localhost] => (item=" not in result.stdout
    files = results / "roles-local" / "localhost"
    assert sorted(p.name for p in files.iterdir()) == ["hosts.jsonl", "raw.xml", "stderr.txt", "stdout.txt", "summary.json"]
    assert json.loads((files / "summary.json").read_text())["state"] == "completed"


def test_the_readme_sharded_play_gives_each_scanner_host_its_shard(tmp_path):
    """roles/scanner/README.md's sharded play, in check mode: shard and shard count from the play's hosts, one seed."""
    inventory = tmp_path / "hosts.yml"
    local = f"ansible_connection: local, ansible_python_interpreter: {sys.executable}"
    inventory.write_text("all:\n  children:\n    scanners:\n      hosts:\n" + "".join(f"        s{i}: {{{local}}}\n" for i in range(2)))
    play = tmp_path / "sharded.yml"
    example = (ROOT / "roles" / "scanner" / "README.md").read_text().split("## Sharded scans", 1)[1].split("```yaml\n", 1)[1]
    # This checkout's role, not a copy of the collection installed here earlier.
    play.write_text(example.split("```", 1)[0].replace("cloudx.security.scanner", "scanner"))
    result = ansible("ansible-playbook", "--check", "-v", "-i", str(inventory), str(play), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    plans = result.stdout.split("TASK [scanner : Plan the scan (check mode)]")[1].split("TASK [")[0]
    for index, host in enumerate(("s0", "s1")):
        planned = plans.split(f"ok: [{host}] => ")[1].split("\nok: [")[0]
        assert f"--shard\n    - {index + 1}/2\n    - --seed\n    - '20261202'" in planned, planned
        assert f"--source-port\n    - '{61000 + index}'" in planned, planned
