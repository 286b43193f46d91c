"""Throwaway servers for the Celery executor's tests: PostgreSQL (a cluster made with initdb), Redis, and
`cloudx worker` processes. Everything listens on loopback, on free ports, and is removed afterwards."""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from controller.config import Config
from tests.support.waiting import wait_for

PG_USER = "cloudx"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def available() -> str | None:
    """Why these tests cannot run here, or None."""
    if not pg_bin():
        return "PostgreSQL server binaries not found (apt-get install postgresql; tools/setup.sh --test)"
    if not shutil.which("redis-server"):
        return "redis-server not found (apt-get install redis-server; tools/setup.sh --test)"
    return None


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A cluster of its own: initdb as the unprivileged `postgres` user (initdb refuses root), scram passwords."""

    def __init__(self, durable: bool = False) -> None:
        """durable: keep fsync and synchronous commits on (benchmarks); tests turn them off."""
        bindir = pg_bin()
        assert bindir is not None
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cloudx-pg-"))
        owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", owner.pw_name, "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*as_owner, str(bindir / "initdb"), "-D", str(self.dir / "data"), "-U", PG_USER, "--auth=scram-sha-256", f"--pwfile={pwfile}"],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "max_connections": "300",
        }
        if not durable:  # a test cluster: durability is not what is tested
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        self.log = (self.dir / "postgres.log").open("ab")
        args = [str(bindir / "postgres"), "-D", str(self.dir / "data"), *(a for k, v in settings.items() for a in ("-c", f"{k}={v}"))]
        self.proc = subprocess.Popen([*as_owner, *args], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        assert wait_for(self._ready, timeout=60), f"PostgreSQL did not start: {(self.dir / 'postgres.log').read_text()[-2000:]}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url().replace("+psycopg", ""), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return self.proc.poll() is None and False

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cloudx-redis-"))
        self.proc = subprocess.Popen(
            ["redis-server", "-"],
            stdin=subprocess.PIPE,
            stdout=(self.dir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # The configuration on stdin, so that the password is not on a command line.
        config = f'bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\nsave ""\nappendonly no\ndir {self.dir}\n'
        assert self.proc.stdin is not None
        self.proc.stdin.write(config.encode())
        self.proc.stdin.close()
        assert wait_for(self._ready, timeout=30), "redis-server did not start"

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url())

    def _ready(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def flush(self) -> None:
        self.client().flushall()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Workers:
    """`cloudx worker` processes started as an operator would, each with its own name and log."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
        log = self.log_path(name)
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "worker", "--name", f"{name}@%h", *args],
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        if wait:
            self.wait_ready(name)
        return proc

    def wait_ready(self, name: str) -> None:
        log, proc = self.log_path(name), self.procs[name]
        assert wait_for(lambda: proc.poll() is not None or " ready." in log.read_text(errors="replace"), timeout=60)
        assert proc.poll() is None, f"worker {name} exited: {log.read_text(errors='replace')[-3000:]}"

    def log_path(self, name: str) -> Path:
        return self.directory / f"worker-{name}.log"

    def kill9(self, name: str) -> None:
        """The worker's machine dies: the worker, its job processes and their playbooks, all at once
        (frozen first, so that none of them sees another die and records anything)."""
        import psutil

        proc = self.procs.pop(name)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.suspend()
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.kill()
        proc.wait()
        psutil.wait_procs(tree, timeout=10)

    def tree(self, name: str) -> list[Any]:
        import psutil

        proc = psutil.Process(self.procs[name].pid)
        return [proc, *proc.children(recursive=True)]

    def freeze(self, name: str) -> list[Any]:
        """The worker's machine stops answering (paused, or cut off): every process of it stopped."""
        tree = self.tree(name)
        for member in tree:
            with contextlib.suppress(Exception):
                member.suspend()
        return tree

    @staticmethod
    def thaw(tree: list[Any]) -> None:
        for member in tree:
            with contextlib.suppress(Exception):
                member.resume()

    def stop(self, name: str, timeout: float = 60) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"worker {name} did not stop within {timeout} s") from None

    def start_many(self, names: list[str], *args: str) -> None:
        """Start workers side by side, then wait until each is ready."""
        for name in names:
            self.start(name, *args, wait=False)
        for name in names:
            self.wait_ready(name)

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(AssertionError):
                self.stop(name)


class Cluster:
    """One PostgreSQL and one Redis for the session; each test gets a database of its own and an empty Redis."""

    def __init__(self) -> None:
        self.pg = Postgres()
        try:
            self.redis = Redis()
        except BaseException:
            self.pg.close()
            raise
        self.key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.databases: list[str] = []

    def settings(self, **overrides: object) -> dict[str, object]:
        """Config overrides for a test: its own database, the shared broker (emptied), the shared secrets key."""
        name = f"t_{secrets.token_hex(6)}"
        self.databases.append(name)
        self.redis.flush()
        return {
            "DATABASE_URL": self.pg.create_database(name),
            "EXECUTOR": "celery",
            "CELERY_BROKER_URL": self.redis.url(),
            "JOB_SECRETS_KEY": self.key,
            **overrides,
        }

    @staticmethod
    def worker_env(config: Config) -> dict[str, str]:
        """What an operator sets on a worker machine: the database, the broker, the key, the paths."""
        return {
            **os.environ,
            **config.as_env(),
            "CLOUDX_EXECUTOR": "celery",
            "CELERY_BROKER_URL": config.CELERY_BROKER_URL,
            "CLOUDX_JOB_SECRETS_KEY": config.JOB_SECRETS_KEY,
            "CLOUDX_CELERY_VISIBILITY_TIMEOUT": str(config.CELERY_VISIBILITY_TIMEOUT),
            "CLOUDX_CELERY_PREFETCH_MULTIPLIER": str(config.CELERY_PREFETCH_MULTIPLIER),
        }

    def close(self) -> None:
        self.redis.close()
        self.pg.close()


def stored_bytes(config: Config, directory: Path) -> bytes:
    """Every byte the controller and its workers keep: the database (a pg_dump of it, or the SQLite files
    with their WAL), the artifacts, the service and worker logs under directory, and the broker's contents."""
    blobs = []
    for path in directory.rglob("*"):
        if path.is_file() and (path.name.startswith(("scans.db", "serve.log", "worker-")) or "artifacts" in path.parts):
            blobs.append(path.read_bytes())
    if config.DATABASE_URL.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        url = make_url(config.DATABASE_URL)
        bindir = pg_bin()
        assert bindir is not None
        dump = subprocess.run(
            [str(bindir / "pg_dump"), "-h", str(url.host), "-p", str(url.port), "-U", str(url.username), "--data-only", str(url.database)],
            env={**os.environ, "PGPASSWORD": str(url.password)},
            capture_output=True,
            check=True,
        )
        blobs.append(dump.stdout)
    if config.EXECUTOR == "celery":
        import redis

        client = redis.Redis.from_url(config.CELERY_BROKER_URL)
        readers = {
            b"list": lambda k: client.lrange(k, 0, -1),
            b"hash": lambda k: [*client.hgetall(k).items()],
            b"string": lambda k: [client.get(k)],
            b"zset": lambda k: client.zrange(k, 0, -1),
            b"set": lambda k: [*client.smembers(k)],
        }
        for key in client.scan_iter():
            for value in readers.get(client.type(key), lambda k: [])(key):
                blobs.append(b"|".join(value) if isinstance(value, tuple) else value or b"")
    return b"\n".join(blobs)
