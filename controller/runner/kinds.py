"""What differs between kinds of job: variables known only where the job runs, and how it ends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.config import Config
from controller.services import deployments, scans
from controller.store.database import Database


def private_vars(kind: str, config: Config, job_id: str) -> dict[str, Any]:
    """Extra variables computed by the worker that runs the job (paths on its machine)."""
    if kind == "scan":
        return scans.runtime_vars(config, job_id)
    return {}


def finish(
    kind: str, db: Database, config: Config, job: dict[str, Any], plan: dict[str, Any], status: str, reason: str | None
) -> tuple[str, str | None]:
    """Store the job's results; returns the final status and reason."""
    if kind == "scan":
        return scans.store_results(db, config, job["id"], status, reason)
    if kind == "deploy":
        return deployments.finish(db, job, plan, status, reason)
    return status, reason


def cleanup_playbook(kind: str, job: dict[str, Any], status: str) -> tuple[str, dict[str, Any]] | None:
    """A playbook (and its variables) that removes what a job that did not end normally left on its hosts."""
    if kind == "scan" and status != "successful":
        return scans.cleanup_playbook(job)
    return None


def prepare(
    kind: str, db: Database, config: Config, job: dict[str, Any], private_dir: Path, should_stop: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """Runner settings prepared where the job runs: inventory, environment, extra variable files.
    Preparing runs under the job's heartbeat and cancel watch; should_stop() tells when to give up."""
    if kind == "deploy":
        return deployments.prepare(db, config, job, private_dir, should_stop)
    if kind == "scan":
        return scans.prepare(db, job)
    return {}
