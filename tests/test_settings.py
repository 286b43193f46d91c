"""Settings: the README's table is the settings object's, the .env file and the environment, bad values, FLASK_DEBUG."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from controller.config import ROOT, Config, SettingsError, env_names, settings_table, shown_default
from tests.support.app import make_config

README = ROOT / "README.md"
VARIABLES = {env for name in Config.model_fields for env in env_names(name)} | {"CLOUDX_ENV_FILE"}


def readme_section() -> str:
    text = README.read_text()
    start = text.index("## Configuration (environment)\n")
    return text[start : text.index("\n## ", start + 1)]


def readme_rows() -> list[tuple[list[str], str]]:
    """(variables, default) of each row of the README's configuration table."""
    rows = []
    for line in readme_section().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("variable", "---"):
            continue
        rows.append((re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]), cells[1]))
    return rows


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No setting in the environment, and a working directory of the test's own (where .env is looked for)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# The README's table


def test_every_setting_is_in_the_readme_with_its_default():
    rows = {tuple(names): default for names, default in readme_rows()}
    for name, field in Config.model_fields.items():
        names = tuple(env_names(name))
        assert names in rows, f"{name} ({', '.join(names)}) is not in the README's configuration table"
        assert rows[names] == shown_default(field), f"the README's default of {names[0]} is {rows[names]}, not {shown_default(field)}"


def test_every_readme_row_is_a_setting():
    rows = readme_rows()
    assert len(rows) == len(Config.model_fields)
    for names, _ in rows:
        assert names, "a row of the README's configuration table names no variable"
        assert set(names) <= VARIABLES, f"{names} in the README's configuration table is not a setting"


def test_the_readme_table_is_generated_from_the_settings():
    assert settings_table() in readme_section(), "regenerate it: CLOUDX_ENV_FILE= python -m controller.config"


# Sources: the environment, the .env file, overrides


def test_defaults_without_environment_or_env_file(clean_env: Path):
    config = Config.from_env()
    assert (config.DATABASE_URL, config.PORT, config.EXECUTOR_ENABLED, config.FLASK_DEBUG) == ("sqlite:///scans.db", 5001, True, False)
    assert Path(config.INVENTORY) == ROOT / "inventory"


def test_env_file_is_read_from_the_working_directory(clean_env: Path):
    (clean_env / ".env").write_text(
        "# a comment\nDATABASE_URL=sqlite:///from-dotenv.db\nCLOUDX_MAX_CONCURRENT_JOBS=7\nFLASK_DEBUG=1\n"
        "CLOUDX_CORS_ORIGINS='https://a.example, https://b.example'\nSOMEONE_ELSES=1\n"
    )
    config = Config.from_env()
    assert config.DATABASE_URL == "sqlite:///from-dotenv.db"
    assert config.MAX_CONCURRENT_JOBS == 7
    assert config.FLASK_DEBUG is True
    assert config.CORS_ORIGINS == "https://a.example, https://b.example"
    assert "SOMEONE_ELSES" not in os.environ  # the file is read, not exported


def test_environment_wins_over_env_file_and_overrides_win_over_both(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    (clean_env / ".env").write_text("CLOUDX_PORT=6000\nCLOUDX_HOST=10.0.0.1\nCLOUDX_JOB_TIMEOUT=10\n")
    monkeypatch.setenv("CLOUDX_PORT", "7000")
    monkeypatch.setenv("CLOUDX_JOB_TIMEOUT", "20")
    config = Config.from_env(JOB_TIMEOUT=30)
    assert (config.PORT, config.HOST, config.JOB_TIMEOUT) == (7000, "10.0.0.1", 30)


def test_env_file_variable_names_another_file_or_none(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    (clean_env / ".env").write_text("CLOUDX_PORT=6000\n")
    (clean_env / "other.env").write_text("CLOUDX_PORT=6001\n")
    monkeypatch.setenv("CLOUDX_ENV_FILE", str(clean_env / "other.env"))
    assert Config.from_env().PORT == 6001
    monkeypatch.setenv("CLOUDX_ENV_FILE", "")
    assert Config.from_env().PORT == 5001
    monkeypatch.delenv("CLOUDX_ENV_FILE")
    assert Config.from_env().PORT == 6000


def test_job_processes_read_no_env_file(clean_env: Path):
    """A .env file in a job's working directory must not hand it the keys the executor keeps from it."""
    config = Config.from_env(CREDENTIALS_KEY="api-only")
    assert config.as_env()["CLOUDX_ENV_FILE"] == ""
    (clean_env / ".env").write_text("CLOUDX_CREDENTIALS_KEY=leaked\nCLOUDX_JOB_SECRETS_KEY=leaked\n")
    script = "from controller.config import Config; c = Config.from_env(); print(repr(c.CREDENTIALS_KEY), repr(c.JOB_SECRETS_KEY))"
    env = {**config.as_env(), "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=clean_env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["''", "''"]


def test_original_backend_and_celery_names(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:p@db/cloudx")
    monkeypatch.setenv("FLASK_DEBUG", "true")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://plain")
    config = Config.from_env()
    assert (config.DATABASE_URL, config.FLASK_DEBUG, config.CELERY_BROKER_URL) == (
        "postgresql+psycopg://u:p@db/cloudx",
        True,
        "redis://plain",
    )
    monkeypatch.setenv("CLOUDX_CELERY_BROKER_URL", "redis://prefixed")
    assert Config.from_env().CELERY_BROKER_URL == "redis://prefixed"


@pytest.mark.parametrize(
    ("value", "expected"),
    # As before the settings were typed, an empty switch is off (EXECUTOR_ENABLED's default is on).
    [("1", True), ("YES", True), ("on", True), ("true", True), ("0", False), ("no", False), ("Off", False), ("false", False), ("", False)],
)
def test_switches(clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: bool):
    monkeypatch.setenv("CLOUDX_EXECUTOR_ENABLED", value)
    assert Config.from_env().EXECUTOR_ENABLED is expected


def test_empty_numbers_mean_their_default_and_spaces_are_ignored(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLOUDX_MAX_CONCURRENT_JOBS", "")
    monkeypatch.setenv("CLOUDX_JOB_TIMEOUT", " 42 ")
    monkeypatch.setenv("CLOUDX_KNOWN_HOSTS_FILE", "")
    config = Config.from_env()
    assert (config.MAX_CONCURRENT_JOBS, config.JOB_TIMEOUT, config.KNOWN_HOSTS_FILE) == (4, 42, "")


def test_settings_stay_assignable_and_secrets_stay_out_of_repr(clean_env: Path):
    config = Config.from_env(CREDENTIALS_KEY="k3y-value", DATABASE_URL="postgresql+psycopg://u:hunter2@db/x")
    config.HOST_KEY_POLICY = "strict"
    assert config.HOST_KEY_POLICY == "strict"
    assert "k3y-value" not in repr(config) and "hunter2" not in repr(config)
    assert config.database_shown == "postgresql+psycopg://u:***@db/x"


def test_unknown_override_is_refused(clean_env: Path):
    with pytest.raises(TypeError, match="unknown settings: NO_SUCH_SETTING"):
        Config.from_env(NO_SUCH_SETTING=1)


# Bad values: one line naming the variable


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("CLOUDX_MAX_CONCURRENT_JOBS", "x", "cloudx: CLOUDX_MAX_CONCURRENT_JOBS must be an integer, got 'x'"),
        ("CLOUDX_EXECUTOR", "kubernetes", "cloudx: CLOUDX_EXECUTOR must be 'local' or 'celery', got 'kubernetes'"),
        ("CLOUDX_HOST_KEY_POLICY", "trust-all", "cloudx: CLOUDX_HOST_KEY_POLICY must be 'pin-on-first-use' or 'strict', got 'trust-all'"),
        ("FLASK_DEBUG", "maybe", "cloudx: FLASK_DEBUG must be 1, true, yes or on, or 0, false, no or off, got 'maybe'"),
        ("CLOUDX_PORT", "70000", "cloudx: CLOUDX_PORT must be at most 65535, got '70000'"),
        # A scan reports once per poll interval: one past the idle timeout would end every long scan as idle.
        (
            "CLOUDX_SCAN_POLL_INTERVAL",
            "600",
            "cloudx: CLOUDX_SCAN_POLL_INTERVAL must be shorter than CLOUDX_IDLE_TIMEOUT (600 s), got '600'",
        ),
        (
            "CLOUDX_SCHEDULE_MISFIRE_GRACE",
            "1",
            "cloudx: CLOUDX_SCHEDULE_MISFIRE_GRACE must be longer than CLOUDX_SCHEDULE_POLL_SECONDS (5.0 s), got '1'",
        ),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, line: str):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        Config.from_env()
    assert raised.value.code == line


def test_bad_value_in_env_file_says_so(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    (clean_env / ".env").write_text("CLOUDX_SCAN_TIMEOUT=soon\nCLOUDX_PORT=http\n")
    with pytest.raises(SettingsError) as raised:
        Config.from_env()
    assert raised.value.code == "cloudx: CLOUDX_SCAN_TIMEOUT (in .env) must be an integer, got 'soon' (and 1 more bad setting)"


@pytest.mark.parametrize(
    "argv",
    [["controller.cli", "serve"], ["controller.cli", "worker"], ["controller.cli", "jobs"], ["controller.runner", "some-job-id"]],
    ids=["serve", "worker", "other-command", "job-worker"],
)
def test_bad_value_stops_start_up_with_one_line(tmp_path: Path, argv: list[str]):
    env = {
        "PATH": os.environ["PATH"],
        "CLOUDX_ENV_FILE": "",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}",
        "CLOUDX_MAX_CONCURRENT_JOBS": "x",
    }
    done = subprocess.run(
        [sys.executable, "-m", *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode != 0
    assert done.stderr == "cloudx: CLOUDX_MAX_CONCURRENT_JOBS must be an integer, got 'x'\n"
    assert not (tmp_path / "db").exists()  # stopped before anything started


# FLASK_DEBUG


def test_debug_logging(tmp_path: Path):
    from controller.app import create_app

    logger = logging.getLogger("cloudx")
    try:
        create_app(make_config(tmp_path, FLASK_DEBUG=True)).extensions["cloudx.db"].dispose()
        assert logger.level == logging.DEBUG
        create_app(make_config(tmp_path)).extensions["cloudx.db"].dispose()
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(logging.INFO)


@pytest.mark.parametrize(("host", "debugger"), [("0.0.0.0", False), ("10.1.2.3", False), ("::", False), ("127.0.0.1", True), ("::1", True)])
def test_serve_debugger_only_on_loopback(runner, monkeypatch: pytest.MonkeyPatch, host: str, debugger: bool):
    import werkzeug.serving

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(werkzeug.serving, "run_simple", lambda *args, **options: calls.append({"args": args, **options}))
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    monkeypatch.setenv("FLASK_DEBUG", "1")
    from controller.cli import cli

    result = runner.invoke(cli, ["serve", "--host", host, "--port", "5999"])
    assert result.exit_code == 0, result.output
    [call] = calls
    assert call["args"][:2] == (host, 5999)
    assert (call["use_debugger"], call["use_reloader"]) == (debugger, True)
    refused = f"cloudx: FLASK_DEBUG: {host} is not a loopback address, so the interactive debugger is off"
    assert (refused in result.output) is not debugger


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def console(tmp_path: Path, host: str) -> requests.Response:
    """GET /console of `cloudx serve` with FLASK_DEBUG on host (reached on 127.0.0.1: both listen there)."""
    port = free_port()
    env = {**make_config(tmp_path).as_env(), "PATH": os.environ["PATH"], "FLASK_DEBUG": "1", "CLOUDX_EXECUTOR_ENABLED": "0"}
    argv = [sys.executable, "-m", "controller.cli", "serve", "--host", host, "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                return requests.get(f"http://127.0.0.1:{port}/console", timeout=5)
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"cloudx serve did not start: {log.read_text()}") from None
                time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the reloader's process and the serving child
        proc.wait(timeout=30)


def test_serve_with_flask_debug_on_any_address_has_no_debugger(tmp_path: Path):
    response = console(tmp_path, "0.0.0.0")
    assert response.headers["Content-Type"] == "application/json"
    assert "debugger" not in response.text.lower() and "werkzeug" not in response.text.lower()


def test_serve_with_flask_debug_on_loopback_has_the_debugger(tmp_path: Path):
    """The probe above would see the debugger if it ran: on loopback it does."""
    response = console(tmp_path, "127.0.0.1")
    assert response.status_code == 200 and "Werkzeug" in response.text and "console" in response.text.lower()
