"""Waiting: for a condition, and for a job's or a scan's status through the API."""

from __future__ import annotations

import time
from typing import Any

from flask.testing import FlaskClient

ACTIVE = ("queued", "running")


def wait_for(predicate: object, timeout: float, interval: float = 0.25) -> bool:
    """True as soon as predicate() is; False when timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


def wait_status(client: FlaskClient, url: str, timeout: float = 300, until: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The record at url (a job or a scan) once its status is one of `until` (default: any final status)."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(url).get_json()
        if record["status"] in until if until else record["status"] not in ACTIVE:
            return record
        if time.monotonic() >= deadline:
            raise AssertionError(f"{url} still {record['status']} after {timeout} s")
        time.sleep(0.3)


def wait_job(client: FlaskClient, job_id: str, timeout: float = 300, until: tuple[str, ...] | None = None) -> dict[str, Any]:
    return wait_status(client, f"/api/jobs/{job_id}", timeout, until)


def wait_scan(client: FlaskClient, job_id: str, timeout: float = 300) -> dict[str, Any]:
    return wait_status(client, f"/api/scans/{job_id}", timeout)
