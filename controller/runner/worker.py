"""The one place jobs execute: run a queued job's playbook through ansible-runner and store what happens.

Executors (controller.queue.local) decide where and when; this module is what
they run, in a process of its own, as `python -m controller.runner JOB_ID`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import ansible_runner
import psutil
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from controller.config import Config
from controller.errors import ApiError
from controller.queue.jobs import fail_job, worker_id
from controller.queue.launch import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, kill_descendants, prctl
from controller.runner.jobkind import JobKind, JobSpec, Plan
from controller.runner.kinds import kind_for
from controller.store.database import Database, retrying
from controller.store.events import EventWriter
from controller.store.models import FINAL_STATUSES, Job, utcnow

log = logging.getLogger("cloudx.worker")
ENV_KEPT = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TMPDIR", "TERM"}
CANCEL_POLL_SECONDS = 0.5


def job_dir(config: Config, job_id: str) -> Path:
    return Path(config.ARTIFACTS_DIR).resolve() / job_id


class RunOutcome(NamedTuple):
    """How ansible-runner ended a job's playbook (or why it could not run it)."""

    writer: EventWriter
    status: str  # ansible-runner's: successful, failed, canceled, timeout; or error
    rc: int | None
    error: str | None = None


def final_status(outcome: RunOutcome, cancel_requested: bool, stop_reason: str | None) -> tuple[str, str | None]:
    """The job's status and reason from how its playbook ended, a cancel request, and a worker's stop."""
    status = outcome.status
    if status == "error":
        return status, outcome.error
    if status == "failed" and cancel_requested:
        status = "canceled"  # the tree was ended (see JobRun._watch) before ansible-runner asked for the cancel
    if status == "canceled" and stop_reason:
        return "error", stop_reason
    reasons = {
        "timeout": "the job ran longer than its timeout or produced no output for IDLE_TIMEOUT",
        "canceled": "canceled on request",
        "failed": f"ansible-playbook ended with rc {outcome.rc}: see the job's failed events",
    }
    return status, reasons.get(status)


class JobRun:
    """One execution of one job."""

    def __init__(self, config: Config, db: Database, job_id: str, secrets: dict[str, Any] | None = None) -> None:
        self.secrets = secrets or {}
        self.secret_file: Path | None = None
        self.config = config
        self.db = db
        self.job_id = job_id
        self.stop_reason: str | None = None
        # A plain attribute, not a threading.Event: request_stop runs in signal handlers, which must take no lock
        # (a handler run again inside Event.set, for the next signal of a burst, would wait for itself forever).
        self._stopping = False
        self._done = threading.Event()

    def stopping(self) -> bool:
        """Whether the job is to stop: canceled, or its worker going away."""
        return self._stopping

    def request_stop(self, reason: str) -> None:
        """Stop the job because this worker is going away (not a user's cancel); the first reason stands.

        Safe in a signal handler, nested in itself too: a worker whose parent is killed gets a SIGTERM for each
        of the parent's threads as they exit (PR_SET_PDEATHSIG follows the thread), within milliseconds.
        """
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping = True

    def _watch(self) -> None:
        """Read the job's cancel flag and status twice a second (ansible-runner asks cancel_callback far more
        often), and beat its heartbeat every sixth of WORKER_LOST_AFTER, so that a worker on a machine that
        died is noticed even while a playbook is quiet. A job ended elsewhere meanwhile (its worker taken for
        lost) is stopped here."""
        beat_every = max(1.0, self.config.WORKER_LOST_AFTER / 6)
        next_beat = time.monotonic() + beat_every
        while not self._done.wait(CANCEL_POLL_SECONDS):
            if self._stopping:  # a signal's stop (a cancel seen here returns below)
                self._end_tree()
                return
            try:
                with self.db.session() as session:
                    if time.monotonic() >= next_beat:
                        next_beat = time.monotonic() + beat_every
                        beat = update(Job).where(Job.id == self.job_id, Job.status == "running").values(heartbeat_at=utcnow())
                        session.execute(beat)
                    row = session.execute(select(Job.cancel_requested, Job.status).where(Job.id == self.job_id)).one_or_none()
                if self._done.is_set():  # the playbook ended meanwhile: what follows (the clean-up playbook) stays
                    return
                if row is None or row.status != "running":
                    self.request_stop("the job was ended while it ran")
                elif row.cancel_requested:
                    self._stopping = True
                else:
                    continue
                self._end_tree()
                return
            except Exception:  # a locked or briefly unavailable database must not kill the job
                log.exception("cancel check failed for job %s", self.job_id)

    @staticmethod
    def _end_tree() -> None:
        """ansible-runner kills ansible-playbook's process group, but its forks run in sessions of their own: they
        hold its terminal open for seconds and go on with their task (an `until` loop polls a scan, renewing its
        lease, for as long as its retries last). End the whole tree now, so that a stop takes effect at once.
        Signals only: ansible-runner reaps its own child (waiting here would take it from under pexpect), and
        run() reaps the rest."""
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()

    def run(self) -> str:
        """Claim, prepare, execute, record: the path of every job, whatever its kind."""
        spec, status = self._claim()
        if spec is None:
            return status
        # Set-up (inventory, host key scans) already runs under the heartbeat and the cancel watch.
        watcher = threading.Thread(target=self._watch, name="cancel-watch", daemon=True)
        watcher.start()
        try:
            kind = kind_for(spec.kind)
            plan = self._prepare(kind, spec)
        except Exception as exc:
            return self._end_before_start(self._preparation_failure(exc))
        if self._stopping:
            kind.finish(self.db, self.config, spec, plan, "canceled", None)  # drops what prepare made
            return self._end_before_start(None)
        outcome = self._execute(kind, spec, plan)
        watcher.join()  # it sees _done at its next look: nothing of it runs beside the clean-up playbook
        status, reason = final_status(outcome, self._stopping, self.stop_reason)
        status, reason, final_counter = self._close_events(outcome.writer, status, reason)
        try:
            status, reason = kind.finish(self.db, self.config, spec, plan, status, reason)
        except Exception as exc:
            log.exception("finishing job %s failed", self.job_id)
            status, reason = "error", f"storing results failed: {exc}"
        self._record(status, outcome.rc, reason, final_counter)
        cleanup = kind.cleanup(spec, status)
        if cleanup is not None:  # after the end is recorded: a cancel takes effect as fast as before
            run_cleanup(self.config, self.job_id, plan.inventory or spec.inventory, *cleanup)
        return status

    def _claim(self) -> tuple[JobSpec | None, str]:
        """Mark the job running on this worker; (None, its status) when it already ended."""
        with self.db.session() as session:
            job = session.get(Job, self.job_id)
            if job is None:
                raise LookupError(f"no job {self.job_id}")
            if job.status in FINAL_STATUSES:
                return None, job.status
            job.status = "running"
            job.worker = worker_id()
            job.started_at = job.started_at or utcnow()
            job.heartbeat_at = utcnow()
            return JobSpec.of(job), job.status

    def _prepare(self, kind: JobKind, spec: JobSpec) -> Plan:
        private_dir = job_dir(self.config, self.job_id)
        private_dir.mkdir(parents=True, exist_ok=True)
        return kind.prepare(self.db, self.config, spec, private_dir, self.stopping)

    def _preparation_failure(self, exc: Exception) -> tuple[str, str] | None:
        if self._stopping:  # its processes were ended by the cancel: not a failure
            return None
        log.exception("preparing job %s failed", self.job_id)
        return ("error", f"refused where it runs: {exc}" if isinstance(exc, ApiError) else f"preparing the job failed: {exc}")

    def _execute(self, kind: JobKind, spec: JobSpec, plan: Plan) -> RunOutcome:
        """The playbook through ansible-runner, its events to the event store as they come."""
        files = list(plan.cmdline_files)
        if self.secrets.get("extra_vars"):
            self.secret_file = write_secret_vars(self.secrets["extra_vars"])
            files.append(str(self.secret_file))
        writer = EventWriter(self.db, self.job_id, retry_seconds=self.config.DB_RETRY_SECONDS, progress=kind.progress)
        try:
            # pexpect_timeout: how often ansible-runner asks cancel_callback (its default, 5 s, would delay a stop).
            settings = {"idle_timeout": self.config.IDLE_TIMEOUT, "pexpect_timeout": 0.5, "suppress_ansible_output": True}
            base = runner_arguments(self.config, job_dir(self.config, self.job_id), spec.playbook, settings)
            envvars = base.pop("envvars")
            result = ansible_runner.run(
                **base,
                inventory=plan.inventory or spec.inventory,
                limit=spec.limit,
                extravars={**spec.extra_vars, **kind.variables(self.config, spec)},
                ident="run",
                timeout=spec.timeout,
                envvars={**envvars, "PYTHONUNBUFFERED": "1", **plan.envvars},
                cmdline=" ".join(f"-e @{shlex.quote(f)}" for f in files) or None,
                ssh_key=self.secrets.get("ssh_key"),
                event_handler=self._on_event(writer),
                # Stop the playbook when its events can no longer be stored: nobody could follow it.
                cancel_callback=lambda: self._stopping or writer.error is not None,
            )
            return RunOutcome(writer, result.status, result.rc)
        except Exception as exc:
            log.exception("job %s could not run", self.job_id)
            return RunOutcome(writer, "error", None, f"ansible-runner failed: {exc}")
        finally:
            self._done.set()
            self._drop_secret_file()
            # ansible-core's forks call setsid() and async tasks daemonize, so killing ansible-playbook's
            # process group leaves them running; as subreaper this process inherits them and ends them here.
            kill_descendants()

    def _close_events(self, writer: EventWriter, status: str, reason: str | None) -> tuple[str, str | None, int]:
        """Wait for every event to be stored; a job whose events could not all be stored ends as "error"."""
        try:
            return status, reason, writer.close()
        except Exception as exc:
            log.exception("storing events of job %s failed", self.job_id)
            cause = exc.orig if isinstance(exc, OperationalError) else exc
            return "error", f"storing events failed: {cause}", writer.last_counter

    def _record(self, status: str, rc: int | None, reason: str | None, final_counter: int) -> None:
        values: dict[str, Any] = {
            "status": status,
            "rc": rc,
            "status_reason": reason,
            "finished_at": utcnow(),
            "final_counter": final_counter,
        }
        if status == "successful":
            values["progress"] = 100

        def record() -> None:
            # Only a job still running: one ended elsewhere meanwhile (taken for lost) keeps that end.
            with self.db.session() as session:
                session.execute(update(Job).where(Job.id == self.job_id, Job.status == "running").values(**values))

        # The end of a job is worth waiting for longer than one batch of events.
        retrying(record, 10 * self.config.DB_RETRY_SECONDS, f"recording the end of job {self.job_id}")

    def _end_before_start(self, failure: tuple[str, str] | None) -> str:
        """Record the end of a job that never reached its playbook: a failure, or a cancel or stop meanwhile."""
        self._done.set()
        if failure is None and self.stop_reason:
            failure = ("error", self.stop_reason)
        failure = failure or ("canceled", "canceled on request while the job was being prepared")
        with self.db.session() as session:
            fail_job(session, self.job_id, *failure)
        return failure[0]

    def _drop_secret_file(self) -> None:
        if self.secret_file is not None:
            shutil.rmtree(self.secret_file.parent, ignore_errors=True)
            self.secret_file = None

    def _on_event(self, writer: EventWriter) -> Any:
        def handler(event: dict[str, Any]) -> bool:
            if event.get("event") == "playbook_on_start":
                self._drop_secret_file()  # ansible-playbook has read its extra variables by now
            writer.put(event)
            return False  # stored in the database; no job_events/*.json files

        return handler


CLEANUP_TIMEOUT = 120


def runner_arguments(config: Config, private_dir: Path, playbook: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What every playbook run of the controller passes ansible-runner: the project, its ansible.cfg, its
    `settings` (written to env/settings), and no other env/ files or output of ansible-runner's own (events go
    to the event store)."""
    # ansible-runner 2.4 reads its settings only from env/settings: without that file it drops those passed
    # as settings= (RunnerConfig.prepare_env), and IDLE_TIMEOUT would never apply. They hold no secret.
    env = private_dir / "env"
    env.mkdir(parents=True, exist_ok=True)
    (env / "settings").write_text(json.dumps(settings), encoding="utf-8")
    project = Path(config.PROJECT_DIR)
    return {
        "private_data_dir": str(private_dir),
        "project_dir": str(project),
        "playbook": str(project / playbook),
        "quiet": True,
        "suppress_env_files": True,
        "envvars": {"ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    }


def run_cleanup(config: Config, job_id: str, inventory: Any, playbook: str, extra_vars: dict[str, Any]) -> None:
    """Run a clean-up playbook for a job that ended, outside the job's own files (it may be deleted meanwhile).
    Best effort: a failure is logged, the job's recorded end stands."""
    private_dir = Path(config.ARTIFACTS_DIR).resolve() / ".cleanup" / job_id
    try:
        private_dir.mkdir(parents=True, exist_ok=True)
        result = ansible_runner.run(
            **runner_arguments(config, private_dir, playbook, {"suppress_ansible_output": True}),
            inventory=inventory,
            extravars=extra_vars,
            ident="cleanup",
            timeout=CLEANUP_TIMEOUT,
            # Without a cancel_callback ansible-runner installs SIGTERM and SIGINT handlers of its own (calling
            # Event.set, unsafe in a burst of signals) in place of the worker's: the clean-up runs to its timeout.
            cancel_callback=lambda: False,
        )
        if result.status != "successful":
            log.warning("cleaning up after job %s ended %s (rc %s): %s", job_id, result.status, result.rc, result.stdout.read()[-2000:])
    except Exception:
        log.exception("cleaning up after job %s failed", job_id)
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
        kill_descendants()


def write_secret_vars(values: dict[str, Any]) -> Path:
    """Secret extra variables in a private file in memory (tmpfs), removed as soon as ansible-playbook has read it.

    ansible-playbook reads extra variables only from its command line or a regular file; the command line
    is recorded in the job's artifacts, so a short-lived file outside them is the narrowest channel.
    """
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="cloudx-", dir=base))
    path = directory / "vars.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m controller.runner JOB_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.environ.get("CLOUDX_WORKER_DIE_WITH_PARENT") == "1":
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # ansible-playbook comes with this interpreter's environment (the venv), which may not be on PATH.
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH") or os.defpath])
    config = Config.from_env()
    # The executor hands credentials over on stdin (see spawn).
    secrets = json.loads(sys.stdin.read() or "{}") if os.environ.get("CLOUDX_WORKER_SECRETS_ON_STDIN") == "1" else {}
    # ansible-runner records its whole environment in the job's `command` artifact: pass on only what
    # Ansible needs, never the controller's own settings (a database URL may carry a password).
    for name in list(os.environ):
        if name not in ENV_KEPT and not name.startswith(("ANSIBLE_", "LC_")):
            del os.environ[name]
    db = Database(config.DATABASE_URL, config.DB_BUSY_TIMEOUT)
    run = JobRun(config, db, argv[1], secrets)
    signal.signal(signal.SIGTERM, lambda *_: run.request_stop("stopped: its worker was shut down while the job was running"))
    signal.signal(signal.SIGINT, lambda *_: run.request_stop("interrupted"))
    status = run.run()
    db.dispose()
    return 0 if status in FINAL_STATUSES else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
