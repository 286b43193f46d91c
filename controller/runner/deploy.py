"""Deploy jobs: a generated or checked inventory, trusted host keys only, and pins recorded at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controller.config import Config
from controller.runner.jobkind import JobKind, JobSpec, Plan
from controller.services import deployments
from controller.store.database import Database


class DeployKind(JobKind):
    name = "deploy"

    def prepare(
        self, db: Database, config: Config, spec: JobSpec, private_dir: Path, should_stop: Callable[[], bool] = lambda: False
    ) -> Plan:
        prepared = deployments.prepare(db, config, spec.as_dict(), private_dir, should_stop)
        return Plan(
            inventory=prepared["inventory"],
            envvars=prepared["envvars"],
            cmdline_files=prepared["cmdline_files"],
            state={"pending_pins": prepared["pending_pins"], "control_dir": prepared["control_dir"]},
        )

    def finish(self, db: Database, config: Config, spec: JobSpec, plan: Plan, status: str, reason: str | None) -> tuple[str, str | None]:
        return deployments.finish(db, spec.as_dict(), plan.state, status, reason)
