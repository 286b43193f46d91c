"""CI pipelines: a role run with `ansible-runner run <private data dir> -p <playbook>` and with `ansible-navigator run
--ee false`, their exit codes and where the results land; and the exit codes of `cloudx scan --json` and `cloudx
deploy` that a pipeline can gate on.

The private data dir is what a pipeline job writes: project/ (the repository's ansible.cfg, playbooks/ and
roles/, as a checkout has them), inventory/ (this machine as the scanner, connection local) and env/extravars.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible import ansible_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCAN = {"scanner_tool": "nmap", "scanner_scan_type": "default", "scanner_target": "127.0.0.1", "scanner_ports": "1-10"}


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env or ansible_env(clean=True, PWD=str(cwd)), capture_output=True, text=True, timeout=timeout, check=False
    )


def copy_project(dest: Path) -> Path:
    """What a pipeline checks out: ansible.cfg (roles_path = roles), playbooks/, roles/ and what their links
    point at (plugins/ where the scanner's modules live once they are the collection's, scripts/)."""
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "ansible.cfg", dest / "ansible.cfg")
    for name in ("playbooks", "roles", "plugins", "scripts"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=shutil.ignore_patterns("molecule", "__pycache__", ".*cache"))
    return dest


@pytest.fixture
def pdd(tmp_path: Path) -> Path:
    """An ansible-runner private data dir."""
    root = tmp_path / "pdd"
    copy_project(root / "project")
    (root / "inventory").mkdir()
    (root / "inventory" / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "scanners": {"hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}
                    }
                }
            }
        )
    )
    (root / "env").mkdir()
    return root


def extravars(pdd: Path, **values: Any) -> None:
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(values))


def runner_run(pdd: Path, ident: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "ansible-runner"), "run", str(pdd), "-p", "playbooks/scan.yml", "--ident", ident], cwd)


def job_events(artifacts: Path) -> list[dict[str, Any]]:
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    return sorted(events, key=lambda e: e["counter"])


def assert_scan_results(results: Path) -> dict[str, Any]:
    summary = json.loads((results / "summary.json").read_text())
    assert summary["state"] == "completed" and summary["rc"] == 0, summary
    hosts = [json.loads(line) for line in (results / "hosts.jsonl").read_text().splitlines()]
    assert [h["address"] for h in hosts] == ["127.0.0.1"]
    assert sorted(p["port"] for p in hosts[0]["ports"]) == list(range(1, 11))
    assert (results / "raw.xml").is_file()
    return summary


# --- ansible-runner -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_runner_scan_exits_0_and_leaves_artifacts_and_results(pdd: Path, tmp_path: Path):
    extravars(pdd, **SCAN, scanner_scan_id="ci-1", scanner_results_dir=str(pdd / "scan-results"))
    result = runner_run(pdd, "scan-ok", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PLAY RECAP" in result.stdout  # ansible-runner prints the playbook's output
    artifacts = pdd / "artifacts" / "scan-ok"
    assert (artifacts / "status").read_text() == "successful"
    assert (artifacts / "rc").read_text() == "0"
    assert "PLAY RECAP" in (artifacts / "stdout").read_text()
    command = json.loads((artifacts / "command").read_text())
    assert command["cwd"] == str(pdd / "project") and command["command"][:3] == ["ansible-playbook", "-i", str(pdd / "inventory")]
    events = job_events(artifacts)
    assert events[0]["event"] == "playbook_on_start" and events[-1]["event"] == "playbook_on_stats"
    # The role's set_stats: the scan's summary and where its results are, in the last event.
    published = events[-1]["event_data"]["artifact_data"]["cloudx_scan"]["localhost"]
    assert published["state"] == "completed" and published["id"] == "ci-1"
    assert published["results_dir"] == str(pdd / "scan-results" / "ci-1" / "localhost")
    progress = [
        e for e in events if e["event"] in ("runner_retry", "runner_on_ok") and e["event_data"].get("task") == "Report scan progress"
    ]
    assert progress  # one event per poll
    assert_scan_results(pdd / "scan-results" / "ci-1" / "localhost")
    assert not (pdd / "project" / "scan-results").exists()


@pytest.mark.integration
def test_runner_results_default_to_the_starting_directory(pdd: Path, tmp_path: Path):
    """scanner_results_dir defaults to $PWD/scan-results, and ansible-runner keeps the caller's PWD (the
    playbook itself runs in project/): without scanner_results_dir the results land where the job started."""
    extravars(pdd, **SCAN, scanner_scan_id="ci-2")
    caller = tmp_path / "workspace"
    caller.mkdir()
    result = runner_run(pdd, "scan-pwd", caller)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_scan_results(caller / "scan-results" / "ci-2" / "localhost")
    assert not (pdd / "project" / "scan-results").exists()


REFUSED = {
    "option-as-target": ({"scanner_target": "-oX"}, "Refusing scan request"),
    "too-large-network": ({"scanner_target": "127.0.0.0/24", "scanner_max_addresses": 16}, "more than max_addresses (16)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_runner_refused_scan_exits_2(pdd: Path, tmp_path: Path, case: str):
    overrides, message = REFUSED[case]
    extravars(pdd, **{**SCAN, **overrides}, scanner_results_dir=str(pdd / "scan-results"))
    result = runner_run(pdd, case, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout
    artifacts = pdd / "artifacts" / case
    assert (artifacts / "status").read_text() == "failed" and (artifacts / "rc").read_text() == "2"
    stats = job_events(artifacts)[-1]
    assert stats["event"] == "playbook_on_stats" and stats["event_data"]["failures"] == {"localhost": 1}
    assert not list(pdd.rglob("summary.json"))  # refused before any scan: no results


def test_runner_python_interface_reports_the_same(pdd: Path, monkeypatch: pytest.MonkeyPatch):
    """The same job from Python (a pipeline step written in Python): status and rc as the CLI gives them."""
    import ansible_runner

    for key in [k for k in os.environ if k.startswith("ANSIBLE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # ansible-playbook
    extravars(pdd, **{**SCAN, "scanner_target": "-oX"})
    job = ansible_runner.run(
        private_data_dir=str(pdd), playbook="playbooks/scan.yml", ident="py", quiet=True, envvars={"ANSIBLE_NOCOLOR": "1"}
    )
    assert (job.status, job.rc) == ("failed", 2)
    assert job.stats["failures"] == {"localhost": 1}
    assert (pdd / "artifacts" / "py" / "status").read_text() == "failed"


# --- ansible-navigator --------------------------------------------------------------------------------------


def navigator(project: Path, inventory: Path, varsfile: Path, logs: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            str(BIN / "ansible-navigator"),
            "run",
            "playbooks/scan.yml",
            "--ee",
            "false",
            "--mode",
            "stdout",
            "-i",
            str(inventory),
            "-e",
            f"@{varsfile}",
            "--log-file",
            str(logs / "ansible-navigator.log"),
            *options,
        ],
        project,
        ansible_env(clean=True, PWD=str(project), HOME=str(logs / "home")),
    )


@pytest.mark.integration
def test_navigator_scan_exits_0_and_writes_the_playbook_artifact(pdd: Path, tmp_path: Path):
    varsfile = tmp_path / "vars.yml"
    varsfile.write_text(yaml.safe_dump({**SCAN, "scanner_scan_id": "nav-1", "scanner_results_dir": str(tmp_path / "scan-results")}))
    artifact = tmp_path / "scan-artifact.json"
    project = pdd / "project"
    result = navigator(project, pdd / "inventory" / "hosts.yml", varsfile, tmp_path, "--pae", "true", "--pas", str(artifact))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PLAY RECAP" in result.stdout
    data = json.loads(artifact.read_text())
    assert data["status"] == "successful"
    tasks = [t["task"] for play in data["plays"] for t in play["tasks"]]
    assert "Fetch the results" in tasks and "Report the scan summary" in tasks
    assert_scan_results(tmp_path / "scan-results" / "nav-1" / "localhost")
    # Nothing written into the checkout: neither the log nor an artifact next to the playbook.
    assert sorted(p.name for p in project.iterdir()) == sorted(p.name for p in copy_project(tmp_path / "pristine").iterdir())
    assert not list(project.rglob("*artifact*.json")) and not list(project.rglob("ansible-navigator.log"))


def test_navigator_refused_scan_exits_2(pdd: Path, tmp_path: Path):
    varsfile = tmp_path / "vars.yml"
    varsfile.write_text(yaml.safe_dump({**SCAN, "scanner_target": "-oX"}))
    artifact = tmp_path / "refused-artifact.json"
    result = navigator(pdd / "project", pdd / "inventory" / "hosts.yml", varsfile, tmp_path, "--pae", "true", "--pas", str(artifact))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Refusing scan request" in result.stdout
    assert json.loads(artifact.read_text())["status"] == "failed"
    # --pae false: no playbook artifact at all.
    result = navigator(pdd / "project", pdd / "inventory" / "hosts.yml", varsfile, tmp_path, "--pae", "false")
    assert result.returncode == 2, result.stdout + result.stderr
    assert not list(pdd.rglob("*artifact*.json"))


# --- the cloudx CLI -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_cli_scan_json_exits_0_with_the_scan_record_on_stdout(runner):
    from controller.cli import cli

    result = runner.invoke(cli, ["scan", "127.0.0.1", "--tool", "nmap", "--type", "default", "--ports", "1-10", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)  # stdout is the JSON document only; progress goes to stderr
    assert view["status"] == "successful" and view["progress"] == 100
    assert view["results"]["summary"]["state"] == "completed"
    hosts = {h["address"]: h for h in view["results"]["hosts"]}
    assert sorted(p["port"] for p in hosts["127.0.0.1"]["ports"]) == list(range(1, 11))
    assert f"scan {view['job_id']}: nmap default 127.0.0.1" in result.stderr
    assert "successful 100%" in result.stderr


CLI_REFUSALS = {
    # `--` ends the options: "-oX" is the target, refused by validation (without it click refuses the
    # unknown option -o with exit code 2).
    "option-as-target": (["scan", "--json", "--", "-oX"], "target"),
    "outside-the-scope": (["scan", "--json", "203.0.113.7"], "scope"),
    "too-large": (["scan", "--json", "127.0.0.0/8"], "addresses"),
    "deploy-outside-the-scope": (["deploy", "203.0.113.7", "--manager", "192.0.2.5", "--user", "root"], "scope"),
    "deploy-bad-host": (["deploy", "--manager", "192.0.2.5", "--", "-oProxyCommand=x"], "hosts"),
}


@pytest.mark.parametrize("case", list(CLI_REFUSALS))
def test_cli_refusal_exits_1_with_one_error_line(runner, case: str):
    from controller.cli import cli

    args, word = CLI_REFUSALS[case]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stdout == ""  # nothing a pipeline could mistake for a result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and word in lines[0], lines


def test_cli_usage_error_exits_2(runner):
    from controller.cli import cli

    result = runner.invoke(cli, ["scan", "-oX"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "No such option" in result.stderr
