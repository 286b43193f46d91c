"""Executors decide where queued jobs run; every one of them runs controller.runner.worker.

The local executor runs jobs in worker processes on this machine, at most
MAX_CONCURRENT_JOBS at a time, taking them from the jobs table (the queue).
The Celery executor (controller.queue.celery_executor) sends them to `cloudx worker` processes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
from typing import Any, Protocol

from controller.config import Config
from controller.queue.jobs import claim_next, reconcile, worker_id
from controller.queue.launch import kill_job_processes, launch, reap
from controller.store.database import Database

log = logging.getLogger("cloudx.executor")


class Executor(Protocol):
    def start(self) -> None:
        """Reconcile jobs left over from a previous run and begin taking queued jobs."""

    @property
    def holder_id(self) -> str:
        """Names this executor as the holder of a job's in-memory credentials."""
        ...

    def submit(self, job_id: str, secrets: dict[str, Any] | None = None) -> None:
        """A job was queued (it is already stored with status "queued"); `secrets` never reach the database.

        Raises controller.errors.Unavailable, after ending the job as "error", when it cannot be handed on.
        """

    def cancel(self, job_id: str) -> None:
        """A cancel was requested (already recorded on the job); deliver it quickly."""

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; stop running ones and record why."""


class LocalExecutor:
    """Worker processes on this machine, fed by a dispatcher thread."""

    POLL_SECONDS = 0.5

    def __init__(self, config: Config, db: Database, only_job: str | None = None) -> None:
        self.config = config
        self.db = db
        self.only_job = only_job
        self.me = worker_id()
        self.node = f"local@{socket.gethostname()}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._reconcile()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def _reconcile(self) -> None:
        with self.db.session() as session:
            ended = reconcile(session, self.config.WORKER_LOST_AFTER)
        for job_id in ended:
            killed = kill_job_processes(job_id)
            log.warning("job %s was running when its worker stopped: marked failed, %d leftover process(es) killed", job_id, killed)

    @property
    def holder_id(self) -> str:
        return self.me

    def submit(self, job_id: str, secrets: dict[str, Any] | None = None) -> None:
        if secrets:
            self.secrets[job_id] = secrets
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        self._wake.set()  # the worker polls the job's cancel flag itself

    def idle(self) -> bool:
        return not self.processes

    def shutdown(self, wait: bool = True) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        for proc in self.processes.values():
            proc.send_signal(signal.SIGTERM)  # the worker records why it stopped
        if wait:
            for job_id, proc in list(self.processes.items()):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                self._reap(job_id, proc)
            self.processes.clear()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._tick()
            except Exception:  # keep dispatching: a locked database is retried on the next tick
                log.exception("dispatcher tick failed")
            self._wake.wait(self.POLL_SECONDS)
            self._wake.clear()

    def _tick(self) -> None:
        for job_id, proc in list(self.processes.items()):
            if proc.poll() is not None:
                self._reap(job_id, proc)
                del self.processes[job_id]
        self._reconcile()
        while len(self.processes) < self.config.MAX_CONCURRENT_JOBS and not self._stopping.is_set():
            if self.only_job in self.processes:
                return
            with self.db.session() as session:
                job_id = claim_next(session, self.config.MAX_CONCURRENT_JOBS, self.me, self.node, only=self.only_job)
            if job_id is None:
                return
            self._spawn(job_id)

    def _spawn(self, job_id: str) -> None:
        proc = launch(self.db, self.config, job_id, self.secrets.pop(job_id, None))
        if proc is not None:
            self.processes[job_id] = proc

    def _reap(self, job_id: str, proc: subprocess.Popen[bytes]) -> None:
        reap(self.db, job_id, proc.returncode)


def make_executor(config: Config, db: Database, only_job: str | None = None) -> Executor:
    """The executor CLOUDX_EXECUTOR names. `only_job`: a CLI run that waits for one job."""
    if config.EXECUTOR == "local":
        return LocalExecutor(config, db, only_job=only_job)
    if config.EXECUTOR == "celery":
        from controller.queue.celery_executor import CeleryExecutor

        return CeleryExecutor(config, db)
    raise SystemExit(f"CLOUDX_EXECUTOR must be 'local' or 'celery', not {config.EXECUTOR!r}")
