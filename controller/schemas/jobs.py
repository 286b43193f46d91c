"""Jobs, their events and per-host summaries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from controller.schemas.base import Query, Request, Response
from controller.schemas.types import JOB_STATUSES, MAX_PAGE, MaybeTimestamp, PageSize, PrivateKey, QueryInt, Secret, Timestamp

JobStatus = Literal["queued", "running", "successful", "failed", "canceled", "timeout", "error"]
assert JobStatus.__args__ == JOB_STATUSES  # type: ignore[attr-defined]


class JobListQuery(Query):
    messages = {"status": f"status must be one of: {', '.join(JOB_STATUSES)}"}

    limit: PageSize = Field(default=50, description=f"Page size, 1 to {MAX_PAGE}.")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page (opaque).")
    status: Literal["", JobStatus] | None = Field(default=None, description="Only jobs with this status (empty: any).")
    kind: str | None = Field(default=None, description="Only jobs of this kind (scan, deploy).")


class EventQuery(Query):
    messages = {"after": "after must be an event counter (an integer)"}

    limit: PageSize = Field(default=100, description=f"Page size, 1 to {MAX_PAGE}.")
    after: QueryInt = Field(default=0, description="Events with a larger counter (next_after).")
    event: str | None = Field(default=None, description="Only events of this type (e.g. runner_on_ok).")
    host: str | None = Field(default=None, description="Only events of this host.")


class Job(Response):
    id: str
    kind: str = Field(description="scan, deploy or import (a scan stored from a file: never run).")
    playbook: str
    limit: str | None
    status: JobStatus
    status_reason: str | None
    rc: int | None
    progress: int = Field(ge=0, le=100)
    cancel_requested: bool
    extra_vars: dict[str, Any] = Field(description="Secrets are redacted.")
    timeout: int
    final_counter: int | None
    node: str | None = Field(description="The executor node that took the job: local@HOST, or a Celery worker's name.")
    created_by: str | None
    relaunched_from: str | None = Field(description="The job this one runs again, for some of its hosts.")
    created_at: Timestamp
    started_at: MaybeTimestamp
    finished_at: MaybeTimestamp
    updated_at: Timestamp


class JobPage(Response):
    jobs: list[Job]
    next_cursor: str | None


class Event(Response):
    """One event (queue.jobs.event_page_json encodes pages of them fast: tests/test_schemas.py checks the two agree)."""

    counter: int
    uuid: str | None
    parent_uuid: str | None
    event: str
    host: str | None
    task: str | None
    play: str | None
    stdout: str | None
    created: str | None
    event_data: dict[str, Any]


class EventPage(Response):
    job_id: str
    job_status: JobStatus
    final_counter: int | None
    events: list[Event]
    next_after: int | None


class HostSummary(Response):
    host: str
    ok: int
    changed: int
    failed: int
    unreachable: int
    skipped: int
    rescued: int
    ignored: int


class HostSummaries(Response):
    job_id: str
    hosts: list[HostSummary]


class RelaunchRequest(Request):
    """POST /api/jobs/<id>/relaunch: which of the job's hosts to run it again on, and the secrets it pasted (never
    stored), given again."""

    messages = {
        "hosts": "hosts must be one of: failed, unreachable, failed_or_unreachable, all",
        **{f: f"{f} must be a non-empty string" for f in ("password", "ssh_key", "become_password", "enrollment_password")},
    }

    hosts: Literal["failed", "unreachable", "failed_or_unreachable", "all"] = Field(
        default="failed_or_unreachable",
        description="From the job's per-host summaries and its events (also after a cancel or a lost worker).",
    )
    password: Secret | None = None
    ssh_key: PrivateKey | None = None
    become_password: Secret | None = None
    enrollment_password: Secret | None = None


class Relaunched(Response):
    """The new job, queued, and the hosts it runs on."""

    job_id: str
    status: JobStatus
    relaunched_from: str
    hosts: list[str]


class StreamQuery(Query):
    messages = {"after": "after must be an event counter (an integer)"}

    after: QueryInt | None = Field(default=None, description="Send the events after this counter (a reconnect sends Last-Event-ID).")
