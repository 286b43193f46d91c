"""Webhooks: endpoints told of job and scan events, through an outbox in the database.

Nothing is sent from a request, nor from the job runners: the sender thread of every `cloudx serve` process
(controller.services.webhook_sender) finds the jobs that ended since the cursor (jobs.finished_at), queues one outbox
row per webhook and event (a unique key makes a second process's insert a no-op), then claims due rows with one UPDATE
each (with a lease, as jobs are claimed) and delivers them. Events:

- job.succeeded: the job ended `successful`; job.failed: `failed`, `timeout` or `error`. A `canceled` job sends
  nothing: someone stopped it (a revoked token's jobs too), it did not fail.
- job.fixed: a successful job whose previous run, of the same schedule (schedule_runs) or else of the same request
  (kind, playbook, limit, extra vars), ended failed, timeout or error (canceled runs are passed over).
- scan.changed: a successful scan whose diff (services.diff) against the previous successful scan of the same target,
  tool and type has differences.

The signing secret is sealed like stored credentials (AES-256-GCM under CLOUDX_CREDENTIALS_KEY, bound to the webhook's
id and URL) and never shown, logged or sent: deliveries and the audit log hold the body, never the secret.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import ApiError, Conflict, NotFound, ValidationError
from controller.schemas.webhooks import URL, WEBHOOK_ID, WebhookPatch, WebhookRequest
from controller.services.diff import scan_diff
from controller.store import jsontext
from controller.store.database import Database
from controller.store.models import (
    Job,
    JobEvent,
    JobHostSummary,
    Scan,
    ScheduleRun,
    Webhook,
    WebhookCursor,
    WebhookDelivery,
    WebhookOutbox,
    WebhookSeenJob,
    aware,
    utcnow,
)
from controller.store.sealing import decode_key, seal, unseal

log = logging.getLogger("cloudx.webhooks")

NO_KEY = (
    "a webhook's signing secret is stored sealed with CLOUDX_CREDENTIALS_KEY, which is not set: set it (cloudx credential keygen) "
    "and restart, or create the webhook without a secret"
)
FAILED = ("failed", "timeout", "error")
# A job whose end is recorded this long after its finished_at (a worker's clock behind, a commit retried) is still found.
LOOKBACK = timedelta(minutes=30)  # longer than a worker retries its final write (10 x CLOUDX_DB_RETRY_SECONDS)
JOBS_PER_TICK = 200
# Bounds of one body: hosts listed with their error, recap rows, changed hosts of a diff.
MAX_HOSTS = 100
MAX_RECAP = 1000
MAX_MESSAGE = 1000
# Earlier jobs of the same kind, playbook and limit read to find the previous run of the same request.
SAME_REQUEST_SCAN = 50
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- the URL rules (no server-side request forgery) -----------------------------------------------------------------


@dataclass(frozen=True)
class Allow:
    """CLOUDX_WEBHOOK_ALLOW: host names (as the URL writes them) and networks that webhooks may reach besides public https
    addresses. A name listed is trusted with whatever it resolves to; a network allows the addresses inside it."""

    names: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str) -> Allow:
        names, networks = set(), []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def host(self, host: str) -> bool:
        """The URL's host is listed: by name, or an address inside a listed network."""
        address = literal(host)
        return host.lower() in self.names or (address is not None and self.address(address))

    def address(self, address: Address) -> bool:
        candidates = [address, *([embedded] if (embedded := _embedded(address)) else [])]
        return any(a.version == n.version and a in n for a in candidates for n in self.networks)


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to say there."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class Refused(ValidationError):
    """A URL (or the address it resolves to) that webhooks may not reach."""

    def __init__(self, why: str) -> None:
        super().__init__(f"url refused: {why}", field="url")


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo's client): it is where the packets end up."""
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
    return None


def address_refusal(address: Address) -> str | None:
    """Why an address is not a public one webhooks may reach by default (None: it is)."""
    embedded = _embedded(address)
    if embedded is not None and (why := address_refusal(embedded)):
        return why
    for test, why in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local (where cloud metadata services answer)"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
        ("is_site_local", "site-local (fec0::/10, deprecated but still routed by some networks)"),
    ):
        if getattr(address, test, False):  # is_site_local: IPv6 only
            return why
    return None if address.is_global else "non-public (shared or special-purpose)"


def check_url(url: str, allow: Allow) -> Target:
    """What can be checked without a DNS lookup: the form, the scheme, a literal address, the names of this machine. The
    addresses a name resolves to are checked at every delivery (check_addresses), where the connection is made to them."""
    if not URL.fullmatch(url):
        raise Refused("not an http(s) URL the webhooks take")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    scheme = parts.scheme
    address = literal(host)
    if address is not None:
        check_addresses(host, [address], allow)
    elif (host == "localhost" or host.endswith(".localhost")) and not allow.host(host):
        raise Refused(f"{host} is this machine (loopback); allow it with CLOUDX_WEBHOOK_ALLOW")
    if scheme != "https" and not allow.host(host):
        raise Refused(f"plain http only for hosts in CLOUDX_WEBHOOK_ALLOW: use https://{host}")
    path = parts.path or "/"
    return Target(scheme, host, parts.port or (443 if scheme == "https" else 80), path + (f"?{parts.query}" if parts.query else ""))


def check_addresses(host: str, addresses: Iterable[Address], allow: Allow) -> None:
    """Every address the host stands for must be public, or allowed (a listed name allows what it resolves to)."""
    if host.lower() in allow.names:
        return
    for address in addresses:
        why = address_refusal(address)
        if why is not None and not allow.address(address):
            shown = "" if literal(host) is not None else f" ({address})"
            raise Refused(f"{host} is a {why} address{shown}; allow it with CLOUDX_WEBHOOK_ALLOW")


# --- the signing secret ---------------------------------------------------------------------------------------------


def _key(config: Config) -> tuple[bytes, str]:
    key = decode_key(config.CREDENTIALS_KEY) if config.CREDENTIALS_KEY else None
    if key is None:
        raise Conflict(
            NO_KEY if not config.CREDENTIALS_KEY else "CLOUDX_CREDENTIALS_KEY is not 32 bytes in URL-safe base64", field="secret"
        )
    return key, hashlib.sha256(b"cloudx-credentials" + key).hexdigest()[:16]


def _bound(webhook: Webhook) -> bytes:
    # A sealed secret copied to another row, or a URL changed in the database, does not decrypt: nothing is signed for it.
    return json.dumps(["webhook", webhook.id, webhook.url]).encode()


def _seal(config: Config, webhook: Webhook, secret: str) -> None:
    key, key_id = _key(config)
    webhook.key_id, webhook.ciphertext = key_id, seal(key, _bound(webhook), {"secret": secret})


def signing_secret(config: Config, webhook: Webhook) -> str | None:
    """The webhook's secret (None: it signs nothing); ApiError when it cannot be opened here."""
    if webhook.ciphertext is None:
        return None
    key, key_id = _key(config)
    if webhook.key_id != key_id:
        raise Conflict("its secret was sealed with another CLOUDX_CREDENTIALS_KEY", field="secret")
    try:
        return str(unseal(key, _bound(webhook), webhook.ciphertext)["secret"])
    except ValueError:
        raise Conflict("its secret does not decrypt: the row was altered", field="secret") from None


# --- create, read, change, delete -----------------------------------------------------------------------------------


def get_webhook(session: Session, ident: str) -> Webhook:
    webhook = session.get(Webhook, ident) if WEBHOOK_ID.fullmatch(ident) else None
    if webhook is None:
        raise NotFound(f"no webhook {ident}")
    return webhook


def create_webhook(session: Session, config: Config, body: WebhookRequest, created_by: str) -> Webhook:
    check_url(body.url, Allow.parse(config.WEBHOOK_ALLOW))
    if body.secret is not None:
        _key(config)  # before anything is stored
    webhook = Webhook(url=body.url, events=list(body.events), enabled=body.enabled, created_by=created_by, created_at=utcnow())
    session.add(webhook)
    session.flush()  # its id, which the secret is bound to
    if body.secret is not None:
        _seal(config, webhook, body.secret)
    return webhook


def update_webhook(session: Session, config: Config, ident: str, patch: WebhookPatch) -> Webhook:
    webhook = get_webhook(session, ident)
    if patch.events is not None:
        webhook.events = list(patch.events)
    if patch.secret is not None:
        _seal(config, webhook, patch.secret)
    if patch.enabled is not None:
        webhook.enabled = patch.enabled
    webhook.updated_at = utcnow()
    session.flush()
    return webhook


def delete_webhook(session: Session, ident: str) -> str:
    webhook = get_webhook(session, ident)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id))
    session.execute(delete(WebhookOutbox).where(WebhookOutbox.webhook_id == webhook.id))
    session.delete(webhook)
    return webhook.id


def webhook_views(session: Session, webhooks: list[Webhook]) -> list[dict[str, Any]]:
    """Webhooks as the API shows them: what is queued, given up, and how the last attempt went. Never the secret."""
    ids = [w.id for w in webhooks]
    counts: dict[tuple[str, str], int] = {}
    last: dict[str, tuple[datetime, str]] = {}
    if ids:
        rows = session.execute(
            select(WebhookOutbox.webhook_id, WebhookOutbox.status, func.count())
            .where(WebhookOutbox.webhook_id.in_(ids), WebhookOutbox.status.in_(("pending", "sending", "failed")))
            .group_by(WebhookOutbox.webhook_id, WebhookOutbox.status)
        )
        counts = {(w, s): n for w, s, n in rows}
        newest = select(func.max(WebhookDelivery.id)).where(WebhookDelivery.webhook_id.in_(ids)).group_by(WebhookDelivery.webhook_id)
        for webhook_id, at, outcome in session.execute(
            select(WebhookDelivery.webhook_id, WebhookDelivery.at, WebhookDelivery.outcome).where(WebhookDelivery.id.in_(newest))
        ):
            last[webhook_id] = (at, outcome)
    return [
        {
            "id": w.id,
            "url": w.url,
            "events": w.events,
            "enabled": w.enabled,
            "signed": w.ciphertext is not None,
            "created_by": w.created_by,
            "created_at": w.created_at,
            "pending": counts.get((w.id, "pending"), 0) + counts.get((w.id, "sending"), 0),
            "failed": counts.get((w.id, "failed"), 0),
            "last_delivery_at": last[w.id][0] if w.id in last else None,
            "last_outcome": last[w.id][1] if w.id in last else None,
        }
        for w in webhooks
    ]


def list_webhooks(session: Session) -> list[dict[str, Any]]:
    return webhook_views(session, list(session.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id))))


def deliveries_page(session: Session, ident: str, limit: int, before: int | None) -> dict[str, Any]:
    webhook = get_webhook(session, ident)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id).order_by(WebhookDelivery.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    rows = list(session.scalars(query))
    fields = ("id", "event", "job_id", "attempt", "outcome", "status_code", "latency_ms", "error", "body", "at")
    return {
        "webhook_id": webhook.id,
        "deliveries": [{"delivery": r.outbox_id, **{f: getattr(r, f) for f in fields}} for r in rows[:limit]],
        "next_before": rows[limit - 1].id if len(rows) > limit else None,
    }


# --- which events a job sends, and their bodies ---------------------------------------------------------------------


def base_event(status: str) -> str | None:
    return "job.succeeded" if status == "successful" else "job.failed" if status in FAILED else None


def previous_run(session: Session, job: Job) -> tuple[Job, str] | None:
    """The run before this one that ended other than canceled: of the same schedule if a schedule started it, else of the
    same request (kind, playbook, limit and extra vars)."""
    run = session.scalar(select(ScheduleRun).where(ScheduleRun.job_id == job.id).limit(1))
    if run is not None:
        earlier = (
            select(Job)
            .join(ScheduleRun, ScheduleRun.job_id == Job.id)
            .where(ScheduleRun.schedule_id == run.schedule_id, ScheduleRun.id < run.id, Job.status.in_(("successful", *FAILED)))
            .order_by(ScheduleRun.id.desc())
            .limit(1)
        )
        found = session.scalar(earlier)
        return (found, "schedule") if found is not None else None
    same = (
        select(Job)
        .where(Job.kind == job.kind, Job.playbook == job.playbook, Job.id != job.id, Job.status.in_(("successful", *FAILED)))
        .where(Job.limit.is_(None) if job.limit is None else Job.limit == job.limit, Job.inventory == job.inventory)
        .where(Job.created_at < job.created_at)
        .order_by(Job.created_at.desc())
        .limit(SAME_REQUEST_SCAN)
    )
    return next(((j, "request") for j in session.scalars(same) if _same_request(j, job)), None)


def _same_request(one: Job, other: Job) -> bool:
    """The same request: the same variables, inventory and settings (a host-list deployment's hosts, platform and
    login are in its settings), and for scans the same target, tool, type and ports."""
    if (one.extra_vars, one.inventory, one.settings) != (other.extra_vars, other.inventory, other.settings):
        return False
    if one.kind == "scan" and one.scan is not None and other.scan is not None:
        return (one.scan.tool, one.scan.target, one.scan.scan_type, one.scan.ports) == (
            other.scan.tool,
            other.scan.target,
            other.scan.scan_type,
            other.scan.ports,
        )
    return True


def _message(data: dict[str, Any]) -> str | None:
    result = data.get("res") if isinstance(data.get("res"), dict) else {}
    for key in ("msg", "stderr", "reason"):
        value = result.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_MESSAGE]
    return None


def _hosts(session: Session, job: Job, recap: list[dict[str, Any]]) -> dict[str, Any]:
    """Failed and unreachable hosts, each with the message of its last failure (its event's res.msg, redacted when stored)."""
    found: dict[str, list[str]] = {"failed": [], "unreachable": []}
    for row in recap:
        for kind in found:
            if row[kind]:
                found[kind].append(row["host"])
    if not recap:  # no playbook_on_stats (the job was stopped or lost): its events say which hosts failed
        for kind, event in (("failed", "runner_on_failed"), ("unreachable", "runner_on_unreachable")):
            rows = session.execute(select(JobEvent.host, JobEvent.event_data).where(JobEvent.job_id == job.id, JobEvent.event == event))
            found[kind] = sorted({h for h, data in rows if h and not (data or {}).get("ignore_errors")})
    view: dict[str, Any] = {}
    for kind, event in (("failed", "runner_on_failed"), ("unreachable", "runner_on_unreachable")):
        listed = []
        for host in found[kind][:MAX_HOSTS]:
            data = session.scalar(
                select(JobEvent.event_data)
                .where(JobEvent.job_id == job.id, JobEvent.host == host, JobEvent.event == event)
                .order_by(JobEvent.counter.desc())
                .limit(1)
            )
            listed.append({"host": host, "message": _message(data or {})})
        view[kind] = listed
        view[f"{kind}_count"] = len(found[kind])
    return view


def _job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "reason": job.status_reason,
        "rc": job.rc,
        "playbook": job.playbook,
        "limit": job.limit,
        "created_by": job.created_by,
        "created_at": jsontext.iso(job.created_at),
        "started_at": jsontext.iso(job.started_at),
        "finished_at": jsontext.iso(job.finished_at),
        "relaunched_from": job.relaunched_from,
    }


def _common(session: Session, job: Job) -> dict[str, Any]:
    """What every event of a job says: the job, its failed and unreachable hosts, the recap, the scan it is."""
    summaries = session.scalars(
        select(JobHostSummary).where(JobHostSummary.job_id == job.id).order_by(JobHostSummary.host).limit(MAX_RECAP)
    )
    counts = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
    recap = [{"host": s.host, **{c: getattr(s, c) for c in counts}} for s in summaries]
    run = session.scalar(select(ScheduleRun.schedule_id).where(ScheduleRun.job_id == job.id).limit(1))
    body: dict[str, Any] = {"job": {**_job_view(job), "schedule_id": run}, "hosts": _hosts(session, job, recap), "recap": recap}
    scan = session.scalar(select(Scan).where(Scan.job_id == job.id))
    if scan is not None:
        body["scan"] = {"tool": scan.tool, "scan_type": scan.scan_type, "target": scan.target, "ports": scan.ports, "source": scan.source}
    return body


def _changed(session: Session, job: Job) -> dict[str, Any] | None:
    """The diff summary of a successful scan against the previous one, when there are differences."""
    if job.status != "successful" or session.scalar(select(Scan.id).where(Scan.job_id == job.id)) is None:
        return None
    try:
        diff = scan_diff(session, job.id, None)
    except ApiError:  # no earlier scan, targets that are not networks: nothing to compare
        return None
    if not diff["differences"]:
        return None
    hosts = [{"address": h["address"], "change": h["change"]} for h in diff["hosts"][:MAX_HOSTS]]
    return {
        "against": diff["against"]["job_id"],
        "mode": diff["mode"],
        "note": diff["note"],
        "summary": diff["summary"],
        "hosts": hosts,
        "hosts_count": len(diff["hosts"]),
    }


def job_events(session: Session, job: Job, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The events of an ended job that some webhook wants, each with its body."""
    events: dict[str, dict[str, Any]] = {}
    base = base_event(job.status)
    if base is None:
        return events
    extra: dict[str, dict[str, Any]] = {}
    if "job.fixed" in wanted and job.status == "successful":
        previous = previous_run(session, job)
        if previous is not None and previous[0].status in FAILED:
            before, via = previous
            extra["job.fixed"] = {
                "previous": {"job_id": before.id, "status": before.status, "finished_at": jsontext.iso(before.finished_at), "via": via}
            }
    if "scan.changed" in wanted and (diff := _changed(session, job)) is not None:
        extra["scan.changed"] = {"diff": diff}
    names = [e for e in (base, *extra) if e in wanted]
    if not names:
        return events
    common = _common(session, job)
    for name in names:
        events[name] = {"event": name, **common, **extra.get(name, {})}
    return events


# --- finding ended jobs, and the outbox -----------------------------------------------------------------------------


def _insert(session: Session, model: Any) -> Any:
    return (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(model)


def _cursor(session: Session, now: datetime) -> datetime:
    """How far the senders have looked; made at now on the first look (the jobs that ended before webhooks were are not sent)."""
    session.execute(_insert(session, WebhookCursor).values(id=1, finished_at=now).on_conflict_do_nothing(index_elements=["id"]))
    return aware(session.scalar(select(WebhookCursor.finished_at).where(WebhookCursor.id == 1)))  # type: ignore[arg-type]


def _advance(session: Session, to: datetime) -> None:
    session.execute(update(WebhookCursor).where(WebhookCursor.id == 1, WebhookCursor.finished_at < to).values(finished_at=to))


def queue_ended_jobs(db: Database, now: datetime | None = None) -> int:
    """Queue the events of the jobs that ended since the cursor (and were not seen yet): how many outbox rows were added."""
    now = now or utcnow()
    with db.session() as session:
        cursor = _cursor(session, now)
        if session.scalar(select(Webhook.id).limit(1)) is None:  # none to tell (a new one is told of jobs that end after it)
            _advance(session, now)
            return 0
        seen = select(WebhookSeenJob.job_id).where(WebhookSeenJob.job_id == Job.id).exists()
        ended = list(
            session.execute(
                select(Job.id, Job.finished_at)
                .where(Job.finished_at > cursor - LOOKBACK, Job.status.in_(("successful", "canceled", *FAILED)), ~seen)
                .order_by(Job.finished_at, Job.id)
                .limit(JOBS_PER_TICK)
            )
        )
    added = 0
    for job_id, finished_at in ended:
        with db.session() as session:
            added += _queue_job(session, job_id, aware(finished_at))
    with db.session() as session:
        if ended:
            _advance(session, aware(ended[-1][1]))
        session.execute(delete(WebhookSeenJob).where(WebhookSeenJob.finished_at < cursor - 2 * LOOKBACK))
    return added


def _queue_job(session: Session, job_id: str, finished_at: datetime) -> int:
    """One job's events for the webhooks that existed when it ended, and the job marked seen, in one transaction."""
    # The seen row first: it takes SQLite's write lock (and on PostgreSQL a second sender waits here, then finds it done).
    marked = session.execute(
        _insert(session, WebhookSeenJob).values(job_id=job_id, finished_at=finished_at).on_conflict_do_nothing(index_elements=["job_id"])
    ).rowcount
    job = session.get(Job, job_id)
    if not marked or job is None:
        return 0
    webhooks = [
        w
        for w in session.scalars(select(Webhook).where(Webhook.enabled.is_(True)))
        if aware(w.created_at) <= finished_at + timedelta(seconds=1)
    ]
    wanted = {e for w in webhooks for e in w.events}
    try:
        events = job_events(session, job, wanted)
    except SQLAlchemyError:
        raise  # the transaction rolls back: the job is looked at again at the next tick, not passed over
    except Exception:  # one job's body must not stop the others' events: this one is logged and passed over
        log.exception("webhooks: the events of job %s could not be made", job_id)
        return 0
    added = 0
    for name, payload in events.items():
        for webhook in webhooks:
            if name in webhook.events:
                # The delivery's id is in the signed body: a receiver that keeps the ids it has seen (X-Cloudx-Delivery
                # is the same) cannot be fooled by a replay sent with a new header.
                row_id = _new_id()
                body = jsontext.dumps({"delivery": row_id, **payload}).decode()
                statement = _insert(session, WebhookOutbox).values(
                    id=row_id,
                    webhook_id=webhook.id,
                    event=name,
                    job_id=job_id,
                    body=body,
                    status="pending",
                    attempts=0,
                    next_attempt_at=utcnow(),
                    created_at=utcnow(),
                )
                added += session.execute(statement.on_conflict_do_nothing(index_elements=["webhook_id", "event", "job_id"])).rowcount
    return added


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Claimed:
    """An outbox row a sender holds until its lease ends."""

    id: str
    webhook_id: str
    event: str
    job_id: str
    body: str
    attempt: int


def _due(now: datetime) -> Any:
    pending = and_(WebhookOutbox.status == "pending", WebhookOutbox.next_attempt_at <= now)
    # A sender that died holding a row (its lease over) leaves it to be sent again: at least once, not at most once.
    abandoned = and_(WebhookOutbox.status == "sending", WebhookOutbox.lease_until < now)
    # A paused webhook's events wait for it to be resumed.
    enabled = WebhookOutbox.webhook_id.in_(select(Webhook.id).where(Webhook.enabled.is_(True)))
    return and_(or_(pending, abandoned), enabled)


def claim(db: Database, holder: str, lease: float, now: datetime | None = None) -> Claimed | None:
    """Claim the oldest due outbox row: one UPDATE, so two senders never hold the same row (as job claims)."""
    now = now or utcnow()
    with db.session() as session:
        oldest = (
            select(WebhookOutbox.id).where(_due(now)).order_by(WebhookOutbox.next_attempt_at, WebhookOutbox.id).limit(1).scalar_subquery()
        )
        row = session.execute(
            update(WebhookOutbox)
            .where(WebhookOutbox.id == oldest, _due(now))
            .values(status="sending", claimed_by=holder, lease_until=now + timedelta(seconds=lease), attempts=WebhookOutbox.attempts + 1)
            .returning(
                WebhookOutbox.id,
                WebhookOutbox.webhook_id,
                WebhookOutbox.event,
                WebhookOutbox.job_id,
                WebhookOutbox.body,
                WebhookOutbox.attempts,
            )
        ).first()
    return Claimed(*row) if row is not None else None


def backoff(config: Config, attempt: int) -> float:
    """Seconds before the attempt after `attempt`: the base, then three times longer each time, at most an hour."""
    return float(min(config.WEBHOOK_BACKOFF_SECONDS * 3 ** (attempt - 1), 3600.0))


@dataclass(frozen=True)
class Attempt:
    """How one attempt ended."""

    delivered: bool
    refused: bool = False
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None


def record(db: Database, config: Config, holder: str, claimed: Claimed, attempt: Attempt) -> str:
    """Log the attempt and move its outbox row on: delivered, due again after the backoff, or given up. The outcome logged."""
    last = claimed.attempt >= config.WEBHOOK_MAX_ATTEMPTS
    outcome = "delivered" if attempt.delivered else "refused" if attempt.refused and not last else "failed" if last else "retry"
    now = utcnow()
    values: dict[str, Any]
    if attempt.delivered or last:
        values = {"status": "delivered" if attempt.delivered else "failed", "finished_at": now, "lease_until": None}
    else:
        values = {"status": "pending", "next_attempt_at": now + timedelta(seconds=backoff(config, claimed.attempt)), "lease_until": None}
    with db.session() as session:
        if session.get(Webhook, claimed.webhook_id) is None:
            return outcome  # deleted meanwhile, with its outbox and log
        session.execute(
            update(WebhookOutbox)
            .where(WebhookOutbox.id == claimed.id, WebhookOutbox.claimed_by == holder, WebhookOutbox.status == "sending")
            .values(**values)
        )
        session.add(
            WebhookDelivery(
                webhook_id=claimed.webhook_id,
                outbox_id=claimed.id,
                event=claimed.event,
                job_id=claimed.job_id,
                attempt=claimed.attempt,
                outcome=outcome,
                status_code=attempt.status_code,
                latency_ms=attempt.latency_ms,
                error=attempt.error,
                body=claimed.body,
                at=now,
            )
        )
    return outcome
