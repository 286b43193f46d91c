"""From ansible-runner events to stored rows: trimming, batching, ordering, and the progress a job kind reads."""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import Insert, update
from sqlalchemy.orm import Session

from controller.store import counters
from controller.store.database import Database, insert_rows, retrying
from controller.store.jsontext import dumps
from controller.store.models import Job, JobHostSummary, utcnow
from controller.store.redact import may_hold_secrets, redact

MAX_EVENT_DATA = 32 * 1024
MAX_STDOUT = 64 * 1024
# Rows per transaction: each commit costs a few milliseconds (WAL checkpoints), so batches are large.
BATCH_SIZE = 2000
FLUSH_INTERVAL = 0.25
_STATS_KEYS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
_SUMMARY_COLUMNS = dict(zip(_STATS_KEYS, ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored"), strict=True))
# Event-data keys kept as columns or not worth storing.
_DROPPED_KEYS = ("host", "task", "play", "playbook_uuid", "play_uuid", "task_uuid", "uuid")


def trim_event_data(data: dict[str, Any]) -> str:
    """Event data as JSON text, without duplicated keys or secrets, and `res` cut short when it is huge."""
    kept = dict(data)  # a copy and a few pops: several times faster than a filtering comprehension
    for key in _DROPPED_KEYS:
        kept.pop(key, None)
    encoded = dumps(kept).decode()
    # Most events hold no secret-looking key: one scan of the text spares walking every value.
    if may_hold_secrets(encoded):
        kept = redact(kept)
        encoded = dumps(kept).decode()
    if len(encoded) > MAX_EVENT_DATA and "res" in kept:
        kept["res"] = {"_truncated": True, "_size": len(encoded), **_small_fields(kept["res"])}
        encoded = dumps(kept).decode()
    return encoded


def _small_fields(res: Any) -> dict[str, Any]:
    if not isinstance(res, dict):
        return {}
    return {k: v for k, v in res.items() if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) < 512)}


def event_row(job_id: str, event: dict[str, Any]) -> tuple[Any, ...]:
    """The job_events row of an event, in EVENT_COLUMNS order."""
    data = event.get("event_data") or {}
    stdout = event.get("stdout") or ""
    return (
        job_id,
        int(event["counter"]),
        event.get("uuid"),
        event.get("parent_uuid"),
        event.get("event", "verbose"),
        data.get("host") or data.get("remote_addr"),
        data.get("task"),
        data.get("play"),
        stdout[:MAX_STDOUT],
        event.get("created"),
        trim_event_data(data),
    )


EVENT_COLUMNS = ("job_id", "counter", "uuid", "parent_uuid", "event", "host", "task", "play", "stdout", "created", "event_data")


class EventWriter:
    """Stores a job's events in order, in batches, from a thread of its own.

    ansible-runner calls `put` from its output loop; writing there would slow
    the playbook down, so rows are queued and written every FLUSH_INTERVAL or
    BATCH_SIZE events. `close` returns the counter of the last event stored.
    """

    def __init__(
        self,
        db: Database,
        job_id: str,
        heartbeat_every: float = 5.0,
        retry_seconds: float = 120,
        progress: Callable[[dict[str, Any]], float | None] | None = None,
    ) -> None:
        self.db = db
        # The job kind's reading of an event's percentage (JobKind.progress); None: the job reports none.
        self._progress_of = progress
        self.retry_seconds = retry_seconds
        self.job_id = job_id
        # A deque: appending is atomic and cheap, which matters at tens of thousands of events a second.
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        # Two stages, so that turning events into rows (Python) overlaps with writing rows (SQLite, which
        # runs without the GIL while it executes a statement): the encoder hands batches to the writer.
        self._batches: queue.Queue[_Batch | None] = queue.Queue(maxsize=4)
        self.last_counter = 0
        self.stored = 0
        self.progress: float | None = None
        self.error: BaseException | None = None
        self.heartbeat_every = heartbeat_every
        # How long each batch took to store, added to the database's counters when the writer closes (GET /metrics).
        self.batch_seconds = counters.Histogram("cloudx_event_ingest_batch_seconds", counters.BATCH_BUCKETS)
        self._first_stored = False
        self._encoder = threading.Thread(target=self._encode_loop, name=f"events-{job_id}", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"events-db-{job_id}", daemon=True)
        self._encoder.start()
        self._writer.start()

    def put(self, event: dict[str, Any]) -> None:
        if "counter" in event:
            self._pending.append(event)
            if len(self._pending) >= BATCH_SIZE:
                self._wake.set()

    def close(self) -> int:
        self._closing = True
        self._wake.set()
        self._encoder.join()
        self._writer.join()
        if self.error is not None:
            raise self.error
        self._add_counters()
        return self.last_counter

    def _add_counters(self) -> None:
        def add() -> None:
            with self.db.session() as session:
                counters.add(session.connection(), self.batch_seconds.rows())

        try:
            retrying(add, self.retry_seconds, f"adding the event counters of job {self.job_id}")
        except Exception as exc:  # a metric is not worth failing a job whose events are all stored
            logging.getLogger("cloudx.events").warning("job %s: the event batch counters were not stored: %s", self.job_id, exc)

    def _encode_loop(self) -> None:
        last_beat = 0.0
        try:
            while self.error is None:
                self._wake.wait(FLUSH_INTERVAL)
                self._wake.clear()
                closing = self._closing  # read before draining: whatever was put before close() is drained
                while self.error is None:
                    events = [self._pending.popleft() for _ in range(min(BATCH_SIZE, len(self._pending)))]
                    now = time.monotonic()
                    beat = now - last_beat >= self.heartbeat_every
                    if events or beat:
                        self._batches.put(self._prepare(events, beat))
                        last_beat = now if beat else last_beat
                    if not self._pending:
                        break
                if closing:
                    return
        except BaseException as exc:  # reported by close(); the job then ends as "error"
            self.error = self.error or exc
        finally:
            self._batches.put(None)

    def _write_loop(self) -> None:
        while (batch := self._batches.get()) is not None:
            if self.error is not None:
                continue  # drain, so that the encoder never blocks on a full queue
            try:
                self._write(batch)
            except BaseException as exc:  # reported by close(); the job then ends as "error"
                self.error = exc

    def _prepare(self, events: list[dict[str, Any]], heartbeat: bool) -> _Batch:
        events.sort(key=lambda e: int(e["counter"]))
        rows = [event_row(self.job_id, e) for e in events]
        summaries: list[dict[str, Any]] = []
        for event in events:
            percent = self._progress_of(event) if self._progress_of is not None else None
            if percent is not None:
                self.progress = max(self.progress or 0.0, percent)
            if event.get("event") == "playbook_on_stats":
                summaries = host_summaries(self.job_id, event.get("event_data") or {})
        values: dict[str, Any] = {}
        if heartbeat:
            values["heartbeat_at"] = utcnow()
        if self.progress is not None:
            values["progress"] = min(99, int(self.progress))
        if rows and not self._first_stored:
            values["first_event_at"] = utcnow()
            self._first_stored = True
        return _Batch(rows, summaries, values)

    def _write(self, batch: _Batch) -> None:
        def write() -> None:
            with self.db.session() as session:
                insert_rows(session.connection(), "job_events", EVENT_COLUMNS, batch.rows, json=["event_data"])
                if batch.summaries:
                    session.execute(insert_ignoring_duplicates(session, JobHostSummary), batch.summaries)
                if batch.values:
                    session.execute(update(Job).where(Job.id == self.job_id).values(**batch.values))

        # A locked or full database holds the batch here (the playbook goes on) until it can be written.
        started = time.monotonic()
        retrying(write, self.retry_seconds, f"storing events of job {self.job_id}")
        if batch.rows:
            self.batch_seconds.observe(time.monotonic() - started)
            self.last_counter = max(self.last_counter, batch.rows[-1][1])
            self.stored += len(batch.rows)


def insert_ignoring_duplicates(session: Session, model: Any) -> Insert:
    """An INSERT that skips rows already there (a batch retried after a commit that went through)."""
    # Imported here: a job worker on SQLite need not load the PostgreSQL dialect at every start.
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model).on_conflict_do_nothing()


class _Batch(NamedTuple):
    rows: list[tuple[Any, ...]]
    summaries: list[dict[str, Any]]
    values: dict[str, Any]


def host_summaries(job_id: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    hosts: set[str] = set()
    for key in _STATS_KEYS:
        hosts.update((data.get(key) or {}).keys())
    return [
        {"job_id": job_id, "host": host, **{_SUMMARY_COLUMNS[k]: int((data.get(k) or {}).get(host, 0)) for k in _STATS_KEYS}}
        for host in sorted(hosts)
    ]
