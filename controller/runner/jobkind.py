"""What a kind of job is to the worker: the phases it may add to every job's path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from controller.config import Config
from controller.store.database import Database
from controller.store.models import Job


@dataclass(frozen=True)
class JobSpec:
    """What the worker read of a job when it claimed it: everything a kind needs, no database session."""

    id: str
    kind: str
    playbook: str
    inventory: Any
    limit: str | None
    timeout: int | None
    settings: dict[str, Any]
    extra_vars: dict[str, Any]
    created_by: str | None

    @classmethod
    def of(cls, job: Job) -> JobSpec:
        return cls(
            id=job.id,
            kind=job.kind,
            playbook=job.playbook,
            inventory=job.inventory,
            limit=job.limit,
            timeout=job.timeout,
            settings=dict(job.settings),
            extra_vars=dict(job.extra_vars),
            created_by=job.created_by,
        )

    def as_dict(self) -> dict[str, Any]:
        """The job as the services' preparation functions read it."""
        return {
            "id": self.id,
            "inventory": self.inventory,
            "limit": self.limit,
            "settings": self.settings,
            "extra_vars": self.extra_vars,
            "created_by": self.created_by,
        }


@dataclass
class Plan:
    """What preparing a job gave ansible-runner, and what its kind needs again when the job ends."""

    inventory: Any = None  # None: the job's own
    envvars: dict[str, str] = field(default_factory=dict)
    cmdline_files: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


class JobKind:
    """The defaults: a job that needs no variables, preparation, progress, results or clean-up of its own."""

    name: ClassVar[str]

    def variables(self, config: Config, spec: JobSpec) -> dict[str, Any]:
        """Extra variables known only where the job runs (paths on the worker's machine)."""
        return {}

    def prepare(
        self, db: Database, config: Config, spec: JobSpec, private_dir: Path, should_stop: Callable[[], bool] = lambda: False
    ) -> Plan:
        """Check the job again where it runs and set up its inventory and environment, under the job's heartbeat
        and cancel watch (should_stop() tells when to give up). Raises to refuse the job."""
        return Plan()

    def progress(self, event: dict[str, Any]) -> float | None:
        """The percentage an event reports, if it reports one."""
        return None

    def finish(self, db: Database, config: Config, spec: JobSpec, plan: Plan, status: str, reason: str | None) -> tuple[str, str | None]:
        """Store the job's results and drop what prepare made; returns the final status and reason."""
        return status, reason

    def cleanup(self, spec: JobSpec, status: str) -> tuple[str, dict[str, Any]] | None:
        """A playbook, and its variables, that removes what a job that did not end normally left on its hosts."""
        return None
