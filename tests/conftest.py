"""Fixtures: app, client and runner (flaskr style), plus test hosts and a running executor for integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from controller.app import create_app
from controller.config import Config
from tests.support import testhosts
from tests.support.agent import ENROLLMENT_PASSWORD
from tests.support.app import TEST_SCOPE, make_config, prepare_app, running_app


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def app(config: Config) -> Iterator[Flask]:
    """The app without an executor: jobs stay queued (validation and read tests)."""
    app = prepare_app(create_app(config))
    yield app
    app.extensions["cloudx.db"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, config: Config) -> CliRunner:
    """The CLI on the test configuration, with the test scope as policy."""
    from controller.services.policy import update_policy
    from controller.store.database import Database

    for key, value in config.as_env().items():
        monkeypatch.setenv(key, value)
    database = Database(config.DATABASE_URL)
    database.upgrade()
    with database.session() as session:
        update_policy(session, {"scope": TEST_SCOPE}, "tests")
    database.dispose()
    monkeypatch.setenv("CLOUDX_SYNC_HEARTBEAT_FILE", config.SYNC_HEARTBEAT_FILE)
    return CliRunner()


@pytest.fixture(scope="session")
def lab() -> Iterator[testhosts.Lab]:
    reason = testhosts.available()
    if reason:
        pytest.skip(reason)
    with testhosts.Lab() as lab:
        yield lab


@pytest.fixture(scope="session")
def target(lab: testhosts.Lab) -> testhosts.TestHost:
    """A host with known ports: TCP 22 and 8080 (HTTP) open, 80 closed, 9999 filtered;
    UDP 5353 answers, 5354 is silent, 5355 closed, 5356 filtered."""
    return lab.add_host(tcp=[22, 8080], http=[8080], drop_tcp=[9999], udp_echo=[5353], udp_silent=[5354], drop_udp=[5356])


@pytest.fixture(scope="session")
def slow_target(lab: testhosts.Lab) -> testhosts.TestHost:
    """A host that answers UDP probes only with rate-limited ICMP: a UDP scan of it takes minutes."""
    return lab.add_host(tcp=[22])


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """PostgreSQL and Redis servers of the tests' own (tools/setup.sh --test installs them)."""
    from tests.support.cluster import Cluster, available

    reason = available()
    if reason:
        pytest.fail(reason)
    servers = Cluster()
    yield servers
    servers.close()


@pytest.fixture(params=["local", "celery"])
def executor_kind(request: pytest.FixtureRequest) -> str:
    """Integration tests that run jobs run with each executor."""
    return str(request.param)


@pytest.fixture
def live_app(request: pytest.FixtureRequest, tmp_path: Path, executor_kind: str) -> Iterator[Flask]:
    """The app with its executor running: jobs really execute, with each executor in turn."""
    with running_app(request, tmp_path, executor_kind) as app:
        yield app


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway key pair the booted test hosts trust for root."""
    import subprocess

    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cloudx-tests", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def booted_hosts(lab: testhosts.Lab, ssh_key: Path) -> list[testhosts.TestHost]:
    """Three Debian 12 hosts booted with systemd, reachable over SSH as root with ssh_key."""
    key = ssh_key.with_suffix(".pub").read_text()
    return [lab.add_booted_host(key) for _ in range(3)]


@pytest.fixture(scope="session")
def agent_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from tests.support.agent_fixture import build_package

    return build_package(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="session")
def manager(lab: testhosts.Lab) -> Iterator[Any]:
    """A fake Wazuh manager enrollment service that every test host can reach."""
    from tests.support.agent_fixture import FakeManager

    fake = FakeManager(lab.service_address(), password=ENROLLMENT_PASSWORD)
    yield fake
    fake.close()
