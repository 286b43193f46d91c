"""Fixtures: app, client and runner (flaskr style), plus test hosts and a running executor for integration tests."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from controller.app import create_app, start_executor
from controller.config import Config
from tests import testhosts

FIXTURES = Path(__file__).with_name("fixtures")


def write_inventory(directory: Path) -> Path:
    """The scanner is this machine; zmap may probe the test network (its default blocklist has 198.18/15)."""
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(
        "all:\n  children:\n    scanners:\n      hosts:\n        localhost:\n"
        f"          ansible_connection: local\n          ansible_python_interpreter: {sys.executable}\n"
    )
    (directory / "group_vars" / "scanners.yml").write_text("scanner_use_system_blocklist: false\nscanner_wait: 2\n")
    return directory


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    inventory = write_inventory(tmp_path / "inventory")
    settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'scans.db'}",
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "INVENTORY": str(inventory),
        "SYNC_HEARTBEAT_FILE": str(tmp_path / "sync_heartbeat.json"),
    }
    return Config.from_env(**{**settings, **overrides})


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


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
    from tests.cluster import Cluster, available

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
    from tests.cluster import Workers

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
    executor = start_executor(app)
    try:
        yield app
    finally:
        executor.shutdown()
        if workers is not None:
            workers.close()
        app.extensions["cloudx.db"].dispose()


@pytest.fixture
def live_app(request: pytest.FixtureRequest, tmp_path: Path, executor_kind: str) -> Iterator[Flask]:
    """The app with its executor running: jobs really execute, with each executor in turn."""
    with running_app(request, tmp_path, executor_kind) as app:
        yield app


def wait_scan(client: FlaskClient, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/scans/{job_id}").get_json()
        if view["status"] not in ("queued", "running"):
            return view
        time.sleep(0.5)
    raise AssertionError(f"scan {job_id} still {view['status']} after {timeout} s")


def wait_job(client: FlaskClient, job_id: str, timeout: float = 300, until: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The job once its status is one of `until` (default: any final status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").get_json()
        if job["status"] in until if until else job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


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
    from tests.agent_fixture import build_package

    return build_package(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="session")
def manager(lab: testhosts.Lab) -> Iterator[Any]:
    """A fake Wazuh manager enrollment service that every test host can reach."""
    from tests.agent_fixture import FakeManager

    fake = FakeManager(lab.service_address(), password=ENROLLMENT_PASSWORD)
    yield fake
    fake.close()


ENROLLMENT_PASSWORD = "enroll-S3cret-7f1c9a"


def write_agent_vars(path: Path, package: Path, sha256: str, **more: str) -> Path:
    """Variables that make the Linux role install the TEST FIXTURE package from a file (and any others given)."""
    import json

    path.write_text(
        json.dumps(
            {
                "cloudx_agent_linux_package_source": "file",
                "cloudx_agent_linux_package_file": str(package),
                "cloudx_agent_linux_package_checksum": f"sha256:{sha256}",
                **more,
            }
        )
    )
    return path


def agent_inventory(directory: Path, hosts: list[testhosts.TestHost], ssh_key: Path) -> Path:
    """An inventory for booted hosts with their real host keys pinned in a known_hosts file."""
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("".join(f"{h.address} {key}\n" for h in hosts for key in h.host_keys()))
    lines = ["all:", "  children:", "    agents:", "      children:", "        linux:", "          hosts:"]
    for host in hosts:
        lines += [f"            {host.name}:", f"              ansible_host: {host.address}"]
    lines += [
        "          vars:",
        "            ansible_user: root",
        f"            ansible_ssh_private_key_file: {ssh_key}",
        f"            ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
        "            ansible_python_interpreter: /usr/bin/python3",
    ]
    path = directory / "hosts.yml"
    path.write_text("\n".join(lines) + "\n")
    return path
