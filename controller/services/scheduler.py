"""The scheduler: a thread of each `cloudx serve` process that starts the schedules' due runs (services.schedules
claims each once, whatever the number of processes) and hands their jobs to that process's executor."""

from __future__ import annotations

import logging

from controller.config import Config
from controller.errors import Unavailable
from controller.queue.jobs import fail_job
from controller.queue.local import Executor
from controller.services.background import Periodic
from controller.services.schedules import run_due
from controller.store.database import Database

log = logging.getLogger("cloudx.schedules")


class Scheduler(Periodic):
    name = "scheduler"

    def __init__(self, config: Config, db: Database, executor: Executor) -> None:
        super().__init__()
        self.config = config
        self.db = db
        self.executor = executor

    def interval(self) -> float:
        return self.config.SCHEDULE_POLL_SECONDS

    def tick(self) -> int:
        """Start what is due now; how many jobs were queued."""
        started = run_due(self.db, self.config, self.executor.holder_id)
        for run in started:
            try:
                self.executor.submit(run.job_id, run.secrets)
            except Unavailable as exc:  # the executor ended the job as "error" and says why on it
                log.error("schedule %s: job %s could not be handed to the executor: %s", run.schedule, run.job_id, exc.message)
            except Exception as exc:  # the next runs are still handed on; this job ends with why
                log.exception("schedule %s: job %s could not be handed to the executor", run.schedule, run.job_id)
                self._fail(run.job_id, f"the scheduler could not hand the job to the executor: {type(exc).__name__}")
        return len(started)

    def _fail(self, job_id: str, reason: str) -> None:
        try:
            with self.db.session() as session:
                fail_job(session, job_id, "error", reason)
        except Exception:
            log.exception("job %s could not be ended; the executor's reconcile will", job_id)
