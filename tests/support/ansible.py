"""Ansible's commands as the tests run them: the venv's tools, the project's ansible.cfg unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ansible_env(tmp_path: Path | None = None, *, clean: bool = False, **extra: str) -> dict[str, str]:
    """The environment for an ansible command. clean: none of the caller's ANSIBLE_*/RUNNER_* settings and no
    project ansible.cfg (what a pipeline or a collection user has); tmp_path: the test's own PWD and local temp."""
    env = {k: v for k, v in os.environ.items() if not (clean and k.startswith(("ANSIBLE_", "RUNNER_")))}
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    if not clean:
        env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    if tmp_path is not None:
        env.update(PWD=str(tmp_path), ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    env.update(extra)
    return env


def ansible(
    tool: str,
    *argv: str,
    tmp_path: Path | None = None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """Run one of the venv's ansible tools (ansible-playbook, ansible-lint, ansible-inventory, ...) and keep its output."""
    environ = env if env is not None else ansible_env(tmp_path, **extra)
    return subprocess.run([str(BIN / tool), *argv], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout, check=False)
