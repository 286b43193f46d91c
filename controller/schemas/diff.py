"""The diff of two scans: its query string and its response (controller.services.diff builds it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.schemas.base import Query, Response
from controller.schemas.jobs import JobStatus
from controller.schemas.types import Timestamp

DiffMode = Literal["full", "open_ports"]
HostChange = Literal["new", "gone", "up", "down", "changed"]


class DiffQuery(Query):
    against: str | None = Field(
        default=None,
        description="The job_id of the scan to compare with (the older one). Without it (or empty): the previous successful scan "
        "of the same target, tool and scan type.",
    )


class DiffScan(Response):
    """One of the two scans compared."""

    id: int
    job_id: str
    tool: str
    scan_type: str
    target: str
    ports: str | None
    status: JobStatus
    created_at: Timestamp


class FieldChange(Response):
    old: str
    new: str


class DiffPort(Response):
    protocol: str
    port: int
    old_state: str | None = Field(description="In the older scan; `not open` for a probed port an open-ports-only tool did not report.")
    new_state: str | None = Field(description="In the newer scan; null when the host was not up there.")
    service: str | None = Field(description="The newer scan's service name, else the older one's.")
    product: str | None
    version: str | None
    changed: dict[str, FieldChange] = Field(description="service, product or version: only where both scans name one.")


class Unlisted(Response):
    """The state nmap gave the probed ports it did not list (<extraports>), when it differs."""

    old: str
    new: str


class DiffHost(Response):
    address: str
    change: HostChange = Field(description="new or gone (inside both targets), up or down (status changed), or changed (ports).")
    old_status: str | None
    new_status: str | None
    hostnames: list[str]
    open_ports: list[DiffPort] = Field(description="For new, gone, up and down hosts: the open ports where the host was up.")
    opened: list[DiffPort]
    closed: list[DiffPort] = Field(description="Open before, not open now (closed, filtered, or not reported by masscan or zmap).")
    state_changed: list[DiffPort] = Field(description="Between states that are not open: closed, filtered, ...")
    service_changed: list[DiffPort]
    unlisted: Unlisted | None
    not_comparable: int = Field(description="Ports of this host that not both scans probed.")


class DiffSummary(Response):
    hosts_compared: int = Field(description="Hosts in both scans (or inside both targets).")
    hosts_new: int
    hosts_gone: int
    hosts_up: int = Field(description="Down (or not up) before, up now.")
    hosts_down: int
    hosts_changed: int
    hosts_not_comparable: int = Field(
        description="Hosts outside the other scan's target, or that an open-only port scan did not report when the two scans "
        "probed none of their ports in common."
    )
    ports_opened: int
    ports_closed: int
    ports_state_changed: int
    ports_service_changed: int
    ports_not_comparable: int = Field(description="Ports of hosts up in both scans that not both scans probed.")


class ScanDiff(Response):
    """GET /api/scans/<job_id>/diff: what changed from `against` (older) to `scan` (newer)."""

    scan: DiffScan
    against: DiffScan
    mode: DiffMode = Field(description="open_ports when either scan's tool reports open ports only (masscan, zmap).")
    note: str | None
    differences: bool
    summary: DiffSummary
    hosts: list[DiffHost] = Field(description="The hosts with a difference, in address order.")
