"""The roles' molecule scenarios, as a role author runs them (`molecule test` in the role's folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.integration
@pytest.mark.parametrize(
    ("role", "scenario"),
    [
        ("cloudx_agent_linux", "default"),  # a booted Debian host over SSH: converge, idempotence, check, verify
        ("scanner", "default"),  # this machine scans a test host: install, scan, check mode, verify the ports
        ("cloudx_agent_windows", "static"),  # syntax, the argument spec, every template rendered and parsed
        ("cloudx_agent_mac", "static"),
    ],
)
def test_molecule_scenario(role: str, scenario: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        # Molecule's own state (ephemeral folders) of this run only.
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "molecule"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "NO_COLOR": "1",
    }
    env.pop("ANSIBLE_CONFIG", None)  # the scenario's own configuration, as for a role author
    run = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", scenario], cwd=ROOT / "roles" / role, env=env, capture_output=True, text=True, timeout=1200
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "Executed: Failed" not in output
    for step in ("converge", "verify"):
        assert f"{step}: Executed: Successful" in output, output[-3000:]
