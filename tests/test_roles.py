"""The roles as Ansible sees them: lint at the production profile, syntax, argument specs, check mode."""

from __future__ import annotations

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
