"""Scan jobs: the scanner role's variables, a policy check where the job runs, progress and results."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.config import Config
from controller.runner.jobkind import JobKind, JobSpec, Plan
from controller.services import scans
from controller.store.database import Database


class ScanKind(JobKind):
    name = "scan"

    def variables(self, config: Config, spec: JobSpec) -> dict[str, Any]:
        return scans.runtime_vars(config, spec.id)

    def prepare(
        self, db: Database, config: Config, spec: JobSpec, private_dir: Path, should_stop: Callable[[], bool] = lambda: False
    ) -> Plan:
        scans.prepare(db, spec.as_dict())
        return Plan()

    def progress(self, event: dict[str, Any]) -> float | None:
        """The percentage a scanner progress poll (cloudx_scan_status) reported."""
        res = (event.get("event_data") or {}).get("res")
        if isinstance(res, dict):
            progress = res.get("cloudx_scan_progress")
            if isinstance(progress, dict) and isinstance(progress.get("percent"), (int, float)):
                return float(progress["percent"])
        return None

    def finish(self, db: Database, config: Config, spec: JobSpec, plan: Plan, status: str, reason: str | None) -> tuple[str, str | None]:
        return scans.store_results(db, config, spec.id, status, reason)

    def cleanup(self, spec: JobSpec, status: str) -> tuple[str, dict[str, Any]] | None:
        return scans.cleanup_playbook(spec.as_dict()) if status != "successful" else None
