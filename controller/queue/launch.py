"""How executors start a job's worker process, and end what a dead one left: the one launch and reap path
that the local and the Celery executor share."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import subprocess
import sys
from typing import Any

import psutil

from controller.config import Config
from controller.queue.jobs import fail_job, machine, set_worker
from controller.store.database import Database

log = logging.getLogger("cloudx.executor")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# Keys and the broker address stay with the executor: never in a worker's environment.
PRIVATE_ENV = {"CLOUDX_CREDENTIALS_KEY", "CLOUDX_JOB_SECRETS_KEY", "CELERY_BROKER_URL", "CLOUDX_CELERY_BROKER_URL"}


def launch(db: Database, config: Config, job_id: str, secrets: dict[str, Any] | None) -> subprocess.Popen[bytes] | None:
    """Start the worker process of a claimed job and name it on the job; None (the job ended as "error") when
    no process could be started."""
    try:
        proc = spawn(config, job_id, secrets)
    except OSError as exc:
        with db.session() as session:
            fail_job(session, job_id, "error", f"could not start a worker process: {exc}")
        return None
    # The worker records its own pid; until it does, the job names this launcher's child.
    try:
        with db.session() as session:
            set_worker(session, job_id, f"{machine()}:{proc.pid}")
    except Exception:
        log.exception("recording the process of job %s failed", job_id)
    return proc


def reap(db: Database, job_id: str, returncode: int | None) -> None:
    """After a worker process exited: a job it left running ends as "error", with why."""
    reason = exit_reason(returncode)
    if reason:
        with db.session() as session:
            if fail_job(session, job_id, "error", reason):
                log.error("job %s: %s", job_id, reason)


def spawn(config: Config, job_id: str, secrets: dict[str, Any] | None) -> subprocess.Popen[bytes]:
    """Start `python -m controller.runner JOB_ID`, handing it the job's credentials on stdin.

    The worker dies with the thread that started it (PR_SET_PDEATHSIG) and records why.
    """
    # Keys and the broker address stay here: credentials reach the worker opened, through a pipe, never
    # as a file, an argument or the environment.
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env.update({**config.as_env(), "CLOUDX_WORKER_DIE_WITH_PARENT": "1", "CLOUDX_WORKER_SECRETS_ON_STDIN": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.runner", job_id],
        env=env,
        cwd=config.PROJECT_DIR,
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(secrets or {}).encode())
        proc.stdin.close()
    except OSError:
        proc.kill()
        proc.wait()
        raise
    return proc


def exit_reason(returncode: int | None) -> str | None:
    """Why a job ends as "error" when its worker process exited without recording the end itself."""
    if returncode in (0, None):
        return None
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    return f"the worker process {how}"


def kill_descendants(grace: float = 3.0) -> None:
    """End every process this one started, directly or not (SIGTERM, then SIGKILL)."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=grace)


def kill_job_processes(job_id: str) -> int:
    """Kill processes on this machine left by a job whose worker died (their command lines name the job)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and any(job_id in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(found, timeout=5)
    return len(found)


def prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)
