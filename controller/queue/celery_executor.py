"""The Celery executor: jobs run on `cloudx worker` processes, on any number of machines, through Redis.

The API stores the job as "queued" and sends one message, cloudx.run_job(job_id, sealed_secrets), to the
job's queue (scans to CLOUDX_CELERY_SCAN_QUEUE, everything else to CLOUDX_CELERY_QUEUE). A worker claims
the job with the same atomic UPDATE as the local executor, then runs `python -m controller.runner.worker JOB_ID`
exactly as the local executor does. The database stays the one record of a job:

- Messages are acknowledged when the job has ended (acks_late, one message per job slot), so a busy worker
  never holds messages that an idle one could run. A job whose message was lost (a worker that died holding
  it, a broker restarted without persistence, an API that stopped before sending it) is still queued in the
  database: the API sends it again after CLOUDX_CELERY_REDISPATCH_AFTER. A message delivered twice finds its
  job no longer queued and is dropped: no job runs twice.
- Cancel requests and heartbeats go through the job's row, which the worker reads twice a second; a job
  whose worker stopped beating is ended as "error" by the API's monitor and by every worker's.
- Credentials travel inside the message, sealed (AES-256-GCM, bound to the job id) with
  CLOUDX_JOB_SECRETS_KEY, which the API and the workers share; they never reach the database.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from sqlalchemy import select, update

from controller.config import Config
from controller.errors import Unavailable
from controller.queue.jobs import claim_next, fail_job, reconcile, undispatched, worker_id
from controller.queue.launch import kill_job_processes, launch, reap
from controller.store.database import Database, retrying
from controller.store.models import Job, utcnow
from controller.store.sealing import decode_key, seal, unseal

log = logging.getLogger("cloudx.celery")
TASK = "cloudx.run_job"
HOLDER = "celery"  # jobs sent to Celery carry their credentials in the message: any worker may run them
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MONITOR_SECONDS = 2.0
# A job held back by its submitter's quota of running jobs is tried again this much later.
QUOTA_RETRY_SECONDS = 5


def secrets_key(config: Config) -> bytes:
    key = decode_key(config.JOB_SECRETS_KEY) if config.JOB_SECRETS_KEY else None
    if key is None:
        raise SystemExit(
            "the Celery executor needs CLOUDX_JOB_SECRETS_KEY, the same on the API and every worker: "
            "32 random bytes in URL-safe base64 (`cloudx credential keygen`)"
        )
    return key


def _bound(job_id: str) -> bytes:
    return f"cloudx-job:{job_id}".encode()


def celery_app(config: Config) -> Celery:
    app = Celery("cloudx", broker=config.CELERY_BROKER_URL, set_as_current=False)
    visibility = max(1, config.CELERY_VISIBILITY_TIMEOUT)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=config.CELERY_QUEUE,
        # Acknowledged when the job has ended: with one message per slot, a busy worker reserves nothing more.
        task_acks_late=True,
        worker_prefetch_multiplier=config.CELERY_PREFETCH_MULTIPLIER,
        broker_transport_options={
            "visibility_timeout": visibility,
            # An unreachable or silent broker fails a submission in seconds instead of holding a request thread.
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "socket_keepalive": True,
            "health_check_interval": 30,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # A broker outage must not stop running playbooks: their messages are redelivered and dropped.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
    )
    return app


class CeleryExecutor:
    """The API side: sends jobs to the workers, sends again those whose message was lost, and watches for
    workers that were lost."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.key = secrets_key(config)
        self.app = celery_app(config)
        # Sealed credentials of jobs still queued, to send them again; kept in memory, never stored.
        self.sealed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def holder_id(self) -> str:
        return HOLDER

    def start(self) -> None:
        self._thread = threading.Thread(target=self._monitor, name="celery-monitor", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, secrets: dict[str, Any] | None = None) -> None:
        with self.db.session() as session:
            kind = session.scalar(select(Job.kind).where(Job.id == job_id))
        sealed = seal(self.key, _bound(job_id), secrets) if secrets else None
        if sealed:
            with self._lock:
                self.sealed[job_id] = sealed
        try:
            self._send(job_id, kind, sealed)
        except Exception as exc:  # kombu raises its own OperationalError, or OSError, for a broker it cannot reach
            log.error("job %s could not be sent to the Celery broker: %s", job_id, exc)
            with self.db.session() as session:
                fail_job(session, job_id, "error", f"could not be sent to the job queue (Celery broker): {exc}")
            raise Unavailable("the job queue (Celery broker) cannot be reached; the job was not run") from None

    def _send(self, job_id: str, kind: str | None, sealed: str | None) -> None:
        # Scans go to the scanner hosts' own queue; every other kind to the default one.
        queue = {"scan": self.config.CELERY_SCAN_QUEUE}.get(kind or "", self.config.CELERY_QUEUE)
        self.app.send_task(
            TASK,
            args=[job_id, sealed],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        )
        with self.db.session() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(dispatched_at=utcnow()))

    def redispatch(self) -> list[str]:
        """Send again the queued jobs that no worker took within CLOUDX_CELERY_REDISPATCH_AFTER."""
        with self._lock:
            held = list(self.sealed)
        with self.db.session() as session:
            waiting = undispatched(session, self.config.CELERY_REDISPATCH_AFTER)
            still_queued = set(session.scalars(select(Job.id).where(Job.id.in_(held), Job.status == "queued"))) if held else set()
        with self._lock:
            for job_id in set(held) - still_queued:  # taken or ended: the copy is no longer needed
                self.sealed.pop(job_id, None)
            sealed = dict(self.sealed)
        sent = []
        for job_id, kind, holder in waiting:
            if holder is not None and job_id not in sealed:
                continue  # its credentials were only in the message (and in an API process that stopped)
            self._send(job_id, kind, sealed.get(job_id))
            log.warning("job %s was not taken by any worker within %d s: sent again", job_id, self.config.CELERY_REDISPATCH_AFTER)
            sent.append(job_id)
        return sent

    def cancel(self, job_id: str) -> None:
        """The worker running the job reads its cancel flag twice a second; a queued job's message is dropped."""

    def shutdown(self, wait: bool = True) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _monitor(self) -> None:
        while not self._stopping.wait(MONITOR_SECONDS):
            end_lost_jobs(self.db, self.config)
            try:
                self.redispatch()
            except Exception:  # a broker or database that is briefly away: try again on the next round
                log.exception("sending waiting jobs again failed")


def end_lost_jobs(db: Database, config: Config) -> None:
    """End running jobs whose worker stopped beating (and kill what they left on this machine)."""
    try:
        with db.session() as session:
            ended = reconcile(session, config.WORKER_LOST_AFTER)
        for job_id in ended:
            log.warning("job %s: its worker was lost; ended as error", job_id)
            kill_job_processes(job_id)
    except Exception:  # a database that is briefly away: try again on the next round
        log.exception("checking for lost workers failed")


class Worker:
    """What `cloudx worker` runs: the task that claims and runs jobs, in a Celery worker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.key = secrets_key(config)
        self.db = Database(config.DATABASE_URL, config.DB_BUSY_TIMEOUT)
        self.app = celery_app(config)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

        @self.app.task(name=TASK, bind=True)
        def run_job(task: Any, job_id: str, sealed: str | None) -> str:
            node = task.request.hostname or f"celery@{socket.gethostname()}"
            return self.run_job(job_id, sealed, node, later=lambda: task.retry(countdown=QUOTA_RETRY_SECONDS, max_retries=None))

    def run_job(self, job_id: str, sealed: str | None, node: str, later: Callable[[], Any] | None = None) -> str:
        if self._stopping.is_set():
            raise Reject("this worker is shutting down", requeue=True)

        def claim() -> str | None:
            with self.db.session() as session:
                return claim_next(session, 0, worker_id(), node, only=job_id)

        try:
            claimed = retrying(claim, self.config.DB_RETRY_SECONDS, f"claiming job {job_id}")
        except Exception as exc:  # the database stayed away: back to the queue, for this worker or another
            log.error("job %s could not be claimed: %s", job_id, exc)
            raise Reject(str(exc), requeue=True) from None
        if claimed is None and later is not None and self._still_queued(job_id):
            # Its submitter runs as many jobs as its quota allows: sent back, to be claimed when one ends.
            raise later()
        if claimed is None:
            # Taken by another worker (this was a copy sent again), canceled, or ended.
            log.info("job %s is no longer queued: message dropped", job_id)
            return "dropped"
        try:
            secrets = unseal(self.key, _bound(job_id), sealed) if sealed else None
        except ValueError:
            with self.db.session() as session:
                reason = "its credentials do not open here: this worker's CLOUDX_JOB_SECRETS_KEY differs from the API's"
                fail_job(session, job_id, "error", reason)
            return "error"
        return self._run(job_id, secrets)

    def _run(self, job_id: str, secrets: dict[str, Any] | None) -> str:
        proc = launch(self.db, self.config, job_id, secrets)
        if proc is None:
            return "error"
        with self._lock:
            self.processes[job_id] = proc
        try:
            if self._stopping.is_set():
                proc.send_signal(signal.SIGTERM)
            proc.wait()
        finally:
            with self._lock:
                self.processes.pop(job_id, None)
        reap(self.db, job_id, proc.returncode)
        return "ran"

    def _still_queued(self, job_id: str) -> bool:
        with self.db.session() as session:
            return session.scalar(select(Job.status).where(Job.id == job_id)) == "queued"

    def stop_jobs(self, **_: Any) -> None:
        """A warm shutdown waits for running tasks: stop their jobs, which record why (as "error")."""
        self._stopping.set()
        with self._lock:
            for proc in self.processes.values():
                proc.send_signal(signal.SIGTERM)

    def main(self, name: str, queues: list[str], concurrency: int, loglevel: str) -> None:
        """Run the Celery worker until it is shut down (the database schema must be current: db.upgrade())."""
        from celery.signals import worker_shutting_down

        worker_shutting_down.connect(self.stop_jobs, weak=False)
        monitor_stop = threading.Event()

        def monitor() -> None:
            while not monitor_stop.wait(MONITOR_SECONDS):
                end_lost_jobs(self.db, self.config)

        threading.Thread(target=monitor, name="celery-monitor", daemon=True).start()
        # Threads, not forked children: each task only waits for its job's own worker process.
        self.app.worker_main(
            [
                "worker",
                f"--hostname={name}",
                f"--queues={','.join(queues)}",
                "--pool=threads",
                f"--concurrency={concurrency}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
        monitor_stop.set()
