"""The controller as the tests make it: settings in a temporary directory, an admin token, the test scope."""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controller.app import create_app, start_executor, stop_executor
from controller.config import Config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def write_inventory(directory: Path) -> Path:
    """The scanner is this machine; zmap may probe the test network (its default blocklist has 198.18/15)."""
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(
        "all:\n  children:\n    scanners:\n      hosts:\n        localhost:\n"
        f"          ansible_connection: local\n          ansible_python_interpreter: {sys.executable}\n"
    )
    (directory / "group_vars" / "scanners.yml").write_text("scanner_use_system_blocklist: false\nscanner_wait: 2\n")
    return directory


@functools.cache
def _migrated_template() -> Path:
    """An empty database at the newest migration, made once per test process: a test's database starts as a copy
    (migrating each one anew cost 0.2 s a test, a third of the fast tier)."""
    from controller.store.database import Database

    path = Path(tempfile.mkdtemp(prefix="cloudx-template-")) / "scans.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.dispose()
    return path


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    if "DATABASE_URL" not in overrides and not (tmp_path / "scans.db").exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_template(), tmp_path / "scans.db")
    inventory = write_inventory(tmp_path / "inventory")
    settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'scans.db'}",
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "INVENTORY": str(inventory),
        "SYNC_HEARTBEAT_FILE": str(tmp_path / "sync_heartbeat.json"),
    }
    # ENV_FILE "": a developer's .env in the working directory never reaches the tests.
    return Config.from_env(**{"ENV_FILE": "", **settings, **overrides})


# The scope tests run in: the test networks (198.18.0.0/15, RFC 2544), loopback, and TEST-NET-1
# (192.0.2.0/24) for jobs that are only queued, never run.
TEST_SCOPE = ["198.18.0.0/15", "127.0.0.0/8", "::1/128", "192.0.2.0/24"]


class TokenClient(FlaskClient):
    """A test client that sends the app's test token (admin unless a test asks otherwise)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        token = self.application.config.get("CLOUDX_TEST_TOKEN")
        if token:
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"


def make_token(app: Flask, role: str = "admin", name: str | None = None, **options: Any) -> str:
    from controller.services.auth import create_token

    with app.extensions["cloudx.db"].session() as session:
        return create_token(session, name or f"test-{role}-{time.monotonic_ns()}", role, "tests", **options)[1]


def prepare_app(app: Flask, scope: list[str] | None = None) -> Flask:
    """An admin test token for its clients, and the test scope as policy."""
    from controller.services.policy import update_policy

    app.config["TESTING"] = True
    app.config["CLOUDX_TEST_TOKEN"] = make_token(app, "admin", "tests")
    app.test_client_class = TokenClient
    with app.extensions["cloudx.db"].session() as session:
        update_policy(session, {"scope": TEST_SCOPE if scope is None else scope}, "tests")
    return app


@contextmanager
def running_app(
    request: pytest.FixtureRequest | None,
    tmp_path: Path,
    kind: str,
    workers_started: tuple[str, ...] = ("w1", "w2"),
    cluster: Any = None,
    **overrides: Any,
) -> Iterator[Flask]:
    """The app with its executor running: the local one, or the Celery one on PostgreSQL and Redis (the
    session's `cluster` fixture unless given) with `cloudx worker` processes (w1 and w2 unless told),
    reachable as app.extensions["cloudx.test_workers"]."""
    from tests.support.cluster import Workers

    workers = None
    if kind == "celery":
        if cluster is None:
            assert request is not None
            cluster = request.getfixturevalue("cluster")
        overrides = cluster.settings(**overrides)
    config = make_config(tmp_path, **overrides)
    app = prepare_app(create_app(config))
    if kind == "celery":
        workers = Workers(cluster.worker_env(config), tmp_path)
        app.extensions["cloudx.test_workers"] = workers
        workers.start_many(list(workers_started), "--concurrency", "2")
    start_executor(app)
    try:
        yield app
    finally:
        stop_executor(app)
        if workers is not None:
            workers.close()
        app.extensions["cloudx.db"].dispose()
