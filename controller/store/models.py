"""The stored records: jobs, their events and per-host summaries, and scans with their hosts and ports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Job lifecycle: queued -> running -> successful | failed | canceled | timeout | error
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("successful", "failed", "canceled", "timeout", "error")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A stored time in UTC: SQLite gives it back without its zone, PostgreSQL in the session's (adding seconds to a
    time in a zone with daylight saving would add wall-clock time)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Job(Base):
    """One ansible-runner run of a playbook."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_kind_status", "kind", "status"),  # coverage reads every deploy job: a few among 100,000 scans
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_updated", "updated_at"),  # the live streams read the jobs changed since their last look
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    kind: Mapped[str] = mapped_column(String(32))
    playbook: Mapped[str] = mapped_column(String(255))
    inventory: Mapped[str] = mapped_column(String(1024))
    limit: Mapped[str | None] = mapped_column(String(1024))
    # Secrets never reach this column: see controller.store.redact.
    extra_vars: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    status_reason: Mapped[str | None] = mapped_column(Text)
    rc: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    timeout: Mapped[int] = mapped_column(Integer)
    # Job settings that are not Ansible variables (a generated inventory, known host keys).
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Credentials never reach the database: the executor that accepted them holds them in memory, and
    # only it may run the job (worker id "host:pid").
    secrets_holder: Mapped[str | None] = mapped_column(String(255))
    # At most this many jobs of the same submitter run at once (its token's quota); None: no limit.
    quota_running: Mapped[int | None] = mapped_column(Integer)
    # Who asked for it: an API token's name, or "cli:<user>".
    created_by: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The process running the job ("host:pid"), and the executor node that took it ("local@host", or a
    # Celery worker's name such as "w1@host").
    worker: Mapped[str | None] = mapped_column(String(255))
    node: Mapped[str | None] = mapped_column(String(255))
    # Counter of the last event; set when the job ends, once every event is stored.
    final_counter: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # When the job was last sent to the Celery broker (a queued job whose message was lost is sent again).
    dispatched_at: Mapped[datetime | None]
    # The job this one runs again, for some of its hosts (POST /api/jobs/<id>/relaunch).
    relaunched_from: Mapped[str | None] = mapped_column(String(36), index=True)
    # When its first event was stored (the submit-to-first-event latency of GET /metrics).
    first_event_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    scan: Mapped[Scan | None] = relationship(back_populates="job", uselist=False)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class JobEvent(Base):
    """One ansible-runner event, in the order of its counter."""

    __tablename__ = "job_events"
    __table_args__ = (
        UniqueConstraint("job_id", "counter", name="uq_job_events_job_counter"),
        Index("ix_job_events_job_event", "job_id", "event", "counter"),
        Index("ix_job_events_job_host", "job_id", "host", "counter"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    counter: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(String(36))
    parent_uuid: Mapped[str | None] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    task: Mapped[str | None] = mapped_column(Text)
    play: Mapped[str | None] = mapped_column(Text)
    stdout: Mapped[str | None] = mapped_column(Text)
    created: Mapped[str | None] = mapped_column(String(40))
    event_data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class JobHostSummary(Base):
    """Per-host counts from the playbook_on_stats event."""

    __tablename__ = "job_host_summaries"
    __table_args__ = (UniqueConstraint("job_id", "host", name="uq_job_host_summaries_job_host"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(255))
    ok: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unreachable: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    rescued: Mapped[int] = mapped_column(Integer, default=0)
    ignored: Mapped[int] = mapped_column(Integer, default=0)


class HostKey(Base):
    """An SSH host key the controller trusts, and how that decision was made."""

    __tablename__ = "host_keys"
    __table_args__ = (UniqueConstraint("host", "key_type", name="uq_host_keys_host_type"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    key_type: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    # "admin" (PUT /api/host-keys, `cloudx host-key add`) or "pinned" (recorded after the job's own successful
    # connection). Rows of earlier versions say "pinned on first use" or "provided": recorded before any
    # connection, they are trusted for pasted credentials but never for stored ones.
    source: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(36))
    # The stored credential the pinning job logged in with: that credential may not rely on this pin.
    credential: Mapped[str | None] = mapped_column(String(128))
    added_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Scan(Base):
    """A scan request; its status and progress are its job's, its results its hosts and ports."""

    __tablename__ = "scans"
    __table_args__ = (Index("ix_scans_target_id", "target", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    tool: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(255))
    scan_type: Mapped[str] = mapped_column(String(32))
    ports: Mapped[str | None] = mapped_column(String(1024))
    # What the scanner reported about the run (state, argv, rc, elapsed, counts, error, the ports it probed).
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(255))  # an imported scan's file name
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    job: Mapped[Job] = relationship(back_populates="scan")
    hosts: Mapped[list[ScanHost]] = relationship(
        back_populates="scan", cascade="all, delete-orphan", passive_deletes=True, order_by="ScanHost.id"
    )


class ScanHost(Base):
    __tablename__ = "scan_hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    hostnames: Mapped[list[Any]] = mapped_column(default=list)
    mac: Mapped[str | None] = mapped_column(String(17))
    # The state nmap gave the probed ports it did not list (<extraports>): closed, filtered, or closed|filtered
    # when it grouped them under several; None when it listed every port it probed (or for masscan and zmap).
    extra_state: Mapped[str | None] = mapped_column(String(24))

    scan: Mapped[Scan] = relationship(back_populates="hosts")
    ports: Mapped[list[ScanPort]] = relationship(
        back_populates="host", cascade="all, delete-orphan", passive_deletes=True, order_by="ScanPort.id"
    )


class ScanPort(Base):
    __tablename__ = "scan_ports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("scan_hosts.id", ondelete="CASCADE"), index=True)
    protocol: Mapped[str] = mapped_column(String(8))
    port: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(String(64))
    service: Mapped[str | None] = mapped_column(String(128))
    product: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(255))

    host: Mapped[ScanHost] = relationship(back_populates="ports")


class Asset(Base):
    """A host as the stored scans have seen it over time (controller.services.assets keeps it)."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(64), unique=True)
    # The address as a key in address order (services.assets.address_key): a network is a range of keys.
    sort_key: Mapped[str] = mapped_column(String(33), index=True)
    hostnames: Mapped[list[Any]] = mapped_column(default=list)
    mac: Mapped[str | None] = mapped_column(String(17))
    status: Mapped[str] = mapped_column(String(16))  # as the last scan that reported it saw it
    first_seen: Mapped[datetime] = mapped_column()
    last_seen: Mapped[datetime | None] = mapped_column(index=True)  # last seen up
    last_scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))


class AssetScan(Base):
    """A scan that reported the asset."""

    __tablename__ = "asset_scans"

    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True, index=True)


class AssetPort(Base):
    """An asset's port as the latest scan that probed it found it."""

    __tablename__ = "asset_ports"
    # The asset's sort_key here too: "assets with port 22 open", in address order, is one walk of an index.
    __table_args__ = (
        UniqueConstraint("asset_id", "protocol", "port", name="uq_asset_ports"),
        Index("ix_asset_ports_port", "port", "state", "sort_key"),
        Index("ix_asset_ports_service", "service", "state", "sort_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    sort_key: Mapped[str] = mapped_column(String(33))
    protocol: Mapped[str] = mapped_column(String(8))
    port: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(24))
    service: Mapped[str | None] = mapped_column(String(128))
    product: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(255))
    first_seen: Mapped[datetime] = mapped_column()
    last_seen: Mapped[datetime] = mapped_column()


class AssetPortChange(Base):
    """A change of an asset's port state: opened, closed (or filtered), reopened, or another state."""

    __tablename__ = "asset_port_changes"
    __table_args__ = (Index("ix_asset_port_changes_asset", "asset_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    protocol: Mapped[str] = mapped_column(String(8))
    port: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24))
    previous: Mapped[str | None] = mapped_column(String(24))
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column()


class ApiToken(Base):
    """A bearer token of the API. Only its SHA-256 is stored; the token is shown once, when it is made."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64))
    # Narrows the policy scope for this token (CIDRs and hostnames); None: the policy scope.
    scope: Mapped[list[Any] | None] = mapped_column(JSON)
    # May scan or deploy to networks larger than the policy's size limit.
    allow_large_targets: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    # Job quotas of this token (None: the policy's token_max_queued / token_max_running); admins have none.
    max_queued: Mapped[int | None] = mapped_column(Integer)
    max_running: Mapped[int | None] = mapped_column(Integer)


class WebSession(Base):
    """A dashboard sign-in. The cookie holds a random id of which only the SHA-256 is stored; the session stands
    for the API token pasted at sign-in (its hash is kept to tell a token replaced under the same id)."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(16), ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditEntry(Base):
    """One mutating request (API or CLI): who, what, when and how it ended."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("uq_audit_log_request_id", "request_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    # The server's own id, unique; the client's X-Request-ID is kept beside it.
    request_id: Mapped[str | None] = mapped_column(String(64))
    client_request_id: Mapped[str | None] = mapped_column(String(64))
    # Unauthenticated denials are aggregated: one row stands for `count` requests (see controller.api.audit).
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str | None] = mapped_column(String(16))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(1024))
    action: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(Text)


class Policy(Base):
    """The scope policy (one row): where scans and deployments may go."""

    __tablename__ = "policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # CIDRs and hostnames; empty means nothing may be scanned or deployed to (fail closed).
    scope: Mapped[list[Any]] = mapped_column(default=list)
    # Networks with a shorter prefix than these need a token allowed large targets.
    max_prefix_v4: Mapped[int] = mapped_column(Integer, default=16)
    max_prefix_v6: Mapped[int] = mapped_column(Integer, default=112)
    windows_deployments: Mapped[bool] = mapped_column(Boolean, default=True)
    # Quotas of every non-admin token that sets none of its own: jobs waiting, and jobs running at once.
    token_max_queued: Mapped[int] = mapped_column(Integer, default=20, server_default="20")
    token_max_running: Mapped[int] = mapped_column(Integer, default=4, server_default="4")
    # Largest scan timeout per role, e.g. {"operator": 7200}; a role not named gets CLOUDX_SCAN_MAX_TIMEOUT.
    max_scan_timeout: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Credential(Base):
    """A stored login (SSH key or password), encrypted with CLOUDX_SECRET_KEY (AES-256-GCM)."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(64))
    # Where it may be used (CIDRs and hostnames); None: wherever the policy allows.
    scope: Mapped[list[Any] | None] = mapped_column(JSON)
    # Ports it may be used on; None: 22 for SSH, 5986 for WinRM.
    ports: Mapped[list[Any] | None] = mapped_column(JSON)
    # Fingerprint of the key that encrypted it, so a wrong key is reported as such.
    key_id: Mapped[str] = mapped_column(String(16))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricCounter(Base):
    """A cumulative counter that processes on any machine add to (a histogram's buckets, sum and count): what
    GET /metrics reports of work done outside the API processes, such as the job workers' event batches."""

    __tablename__ = "metric_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    value: Mapped[float] = mapped_column(Float, default=0.0)


class Schedule(Base):
    """A scan or deployment request run at times a cron expression or an interval gives (controller.services.schedules)."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "enabled", "next_run_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # scan | deployment
    # The body of POST /api/scans or /api/deployments, validated; it holds no secret (a stored credential's name at most).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    cron: Mapped[str | None] = mapped_column(String(128))
    every_seconds: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    catch_up: Mapped[str] = mapped_column(String(8), default="none")
    # Why the controller paused it (its creator's token revoked, ...); None when paused by a user or enabled.
    paused_reason: Mapped[str | None] = mapped_column(Text)
    # Runs with its creator's rights, checked at every run (services.policy.principal_for).
    created_by: Mapped[str] = mapped_column(String(128))
    # The next due time (UTC); a run is claimed by moving it on while `revision` is unchanged.
    next_run_at: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None]
    last_job_id: Mapped[str | None] = mapped_column(String(36))
    missed_runs: Mapped[int] = mapped_column(Integer, default=0)
    skipped_runs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    """What became of one due time of a schedule: started (its job), missed, skipped or refused (why)."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "due_at", name="uq_schedule_runs_due"),
        Index("ix_schedule_runs_schedule", "schedule_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    due_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # started | missed | skipped | refused | paused
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Base):
    """An HTTP endpoint told of job and scan events (controller.services.webhooks), its signing secret sealed."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The signing secret, sealed (AES-256-GCM under CLOUDX_CREDENTIALS_KEY, bound to the id and url); None: unsigned.
    key_id: Mapped[str | None] = mapped_column(String(16))
    ciphertext: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookOutbox(Base):
    """One event to deliver to one webhook: its body, fixed when queued, and where its delivery stands."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        # Senders in every process queue the events of a job: the second insert of the same one is a no-op.
        UniqueConstraint("webhook_id", "event", "job_id", name="uq_webhook_outbox_event"),
        Index("ix_webhook_outbox_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))  # X-Cloudx-Delivery
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(36))  # no foreign key: a deleted job's event is still delivered
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A sender claims a row until lease_until; a sender that died holding it leaves it to be claimed again then.
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One attempt to deliver an outbox row: what was sent and what came back."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    outbox_id: Mapped[str] = mapped_column(ForeignKey("webhook_outbox.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | retry | failed (the last attempt) | refused
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookCursor(Base):
    """How far the senders have looked for ended jobs (one row): jobs.finished_at of the newest seen."""

    __tablename__ = "webhook_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finished_at: Mapped[datetime]


class WebhookSeenJob(Base):
    """An ended job whose events were queued; kept for a while behind the cursor, so a late one is not missed."""

    __tablename__ = "webhook_seen_jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    finished_at: Mapped[datetime] = mapped_column(index=True)


# The webhook senders look for jobs by the time they ended.
Index("ix_jobs_finished", Job.finished_at)
