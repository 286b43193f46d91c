"""`cloudx serve` as a real process, set up with the CLI as an operator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from tests.support.app import make_config
from tests.support.cluster import Cluster, Workers
from tests.support.waiting import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """The API (`cloudx serve`); with executor "celery" (cluster: tests.support.cluster.Cluster) also two workers,
    w1 and w2, that outlive the API's restarts as they would on machines of their own."""

    def __init__(
        self,
        tmp_path: Path,
        scope: tuple[str, ...] = ("198.18.0.0/15", "127.0.0.0/8"),
        executor: str = "local",
        cluster: Cluster | None = None,
        **env: str,
    ) -> None:
        overrides = cluster.settings() if executor == "celery" and cluster is not None else {}
        self.config = make_config(tmp_path, **overrides)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            **self.config.as_env(),
            "CLOUDX_PORT": str(self.port),
            "CLOUDX_SYNC_HEARTBEAT_FILE": self.config.SYNC_HEARTBEAT_FILE,
            **(Cluster.worker_env(self.config) if overrides else {}),
            **env,
        }
        self.tmp_path = tmp_path
        self.log = (tmp_path / "serve.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        # Set up as an operator would: a scope policy and an API token, with the CLI.
        if scope:
            self.cloudx("policy", "set", *(arg for entry in scope for arg in ("--scope", entry)))
        self.token = self.cloudx("token", "create", "--name", "service-tests", "--role", "admin").strip()
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self.workers = Workers(self.env, tmp_path) if overrides else None
        if self.workers is not None:
            self.workers.start_many(["w1", "w2"], "--concurrency", "2")

    def cloudx(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "controller.cli", *args], env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def start(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "serve", *args],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert wait_for(self.up, timeout=30), "service did not start"

    def up(self) -> bool:
        try:
            return self.http.get(f"{self.url}/ping", timeout=1).json() == {"status": "pong"}
        except requests.RequestException:
            return False

    def diagnostics(self, job_id: str) -> str:
        """For an assertion's message: the end of the service's log and the processes of one job on this machine."""
        self.log.flush()
        log = (self.tmp_path / "serve.log").read_text(errors="replace")[-3000:]
        ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,args"], capture_output=True, text=True).stdout.splitlines()
        return "serve.log ends:\n" + log + "\nprocesses of the job:\n" + "\n".join(line for line in ps if job_id in line)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.workers is not None:
            self.workers.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
