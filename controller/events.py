"""From ansible-runner events to stored rows: trimming, batching, ordering, progress."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

from sqlalchemy import insert, update

from controller.db import Database, retrying
from controller.models import Job, JobEvent, JobHostSummary, utcnow
from controller.redact import redact

MAX_EVENT_DATA = 32 * 1024
MAX_STDOUT = 64 * 1024
BATCH_SIZE = 500
FLUSH_INTERVAL = 0.25
_STATS_KEYS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
_SUMMARY_COLUMNS = dict(zip(_STATS_KEYS, ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored"), strict=True))
# Event-data keys kept as columns or not worth storing.
_DROPPED_KEYS = ("host", "task", "play", "playbook_uuid", "play_uuid", "task_uuid", "uuid")


def trim_event_data(data: dict[str, Any]) -> dict[str, Any]:
    """Event data without duplicated keys or secrets, and `res` cut short when it is huge."""
    kept = {k: v for k, v in data.items() if k not in _DROPPED_KEYS}
    kept = redact(kept)
    encoded = json.dumps(kept, default=str)
    if len(encoded) > MAX_EVENT_DATA and "res" in kept:
        kept["res"] = {"_truncated": True, "_size": len(encoded), **_small_fields(kept["res"])}
    return kept


def _small_fields(res: Any) -> dict[str, Any]:
    if not isinstance(res, dict):
        return {}
    return {k: v for k, v in res.items() if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) < 512)}


def event_row(job_id: str, event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("event_data") or {}
    stdout = event.get("stdout") or ""
    return {
        "job_id": job_id,
        "counter": int(event["counter"]),
        "uuid": event.get("uuid"),
        "parent_uuid": event.get("parent_uuid"),
        "event": event.get("event", "verbose"),
        "host": data.get("host") or data.get("remote_addr"),
        "task": data.get("task"),
        "play": data.get("play"),
        "stdout": stdout[:MAX_STDOUT],
        "created": event.get("created"),
        "event_data": trim_event_data(data),
    }


def scan_progress(event: dict[str, Any]) -> float | None:
    """The percentage a scanner progress poll (cloudx_scan_status) reported, if this event is one."""
    res = (event.get("event_data") or {}).get("res")
    if isinstance(res, dict):
        progress = res.get("cloudx_scan_progress")
        if isinstance(progress, dict) and isinstance(progress.get("percent"), (int, float)):
            return float(progress["percent"])
    return None


class EventWriter:
    """Stores a job's events in order, in batches, from a thread of its own.

    ansible-runner calls `put` from its output loop; writing there would slow
    the playbook down, so rows are queued and written every FLUSH_INTERVAL or
    BATCH_SIZE events. `close` returns the counter of the last event stored.
    """

    def __init__(self, db: Database, job_id: str, heartbeat_every: float = 5.0, retry_seconds: float = 120) -> None:
        self.db = db
        self.retry_seconds = retry_seconds
        self.job_id = job_id
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.last_counter = 0
        self.stored = 0
        self.progress: float | None = None
        self.error: BaseException | None = None
        self.heartbeat_every = heartbeat_every
        self._thread = threading.Thread(target=self._run, name=f"events-{job_id}", daemon=True)
        self._thread.start()

    def put(self, event: dict[str, Any]) -> None:
        if "counter" in event:
            self.queue.put(event)

    def close(self) -> int:
        self.queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.last_counter

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        deadline = time.monotonic() + FLUSH_INTERVAL
        last_beat = 0.0
        closing = False
        while not closing:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = self.queue.get(timeout=timeout)
                if item is None:
                    closing = True
                else:
                    pending.append(item)
            except queue.Empty:
                pass
            now = time.monotonic()
            if closing or len(pending) >= BATCH_SIZE or now >= deadline:
                beat = now - last_beat >= self.heartbeat_every
                if pending or beat:
                    try:
                        self._flush(pending, beat)
                    except BaseException as exc:  # reported by close(); the job then ends as "error"
                        self.error = exc
                        return
                    last_beat = now if beat else last_beat
                pending = []
                deadline = now + FLUSH_INTERVAL

    def _flush(self, events: list[dict[str, Any]], heartbeat: bool) -> None:
        events.sort(key=lambda e: int(e["counter"]))
        rows = [event_row(self.job_id, e) for e in events]
        summaries: list[dict[str, Any]] = []
        for event in events:
            percent = scan_progress(event)
            if percent is not None:
                self.progress = max(self.progress or 0.0, percent)
            if event.get("event") == "playbook_on_stats":
                summaries = host_summaries(self.job_id, event.get("event_data") or {})
        values: dict[str, Any] = {}
        if heartbeat:
            values["heartbeat_at"] = utcnow()
        if self.progress is not None:
            values["progress"] = min(99, int(self.progress))

        def write() -> None:
            with self.db.session() as session:
                if rows:
                    session.execute(insert(JobEvent), rows)
                if summaries:
                    session.execute(insert(JobHostSummary), summaries)
                if values:
                    session.execute(update(Job).where(Job.id == self.job_id).values(**values))

        # A locked or full database holds the batch here (the playbook goes on) until it can be written.
        retrying(write, self.retry_seconds, f"storing events of job {self.job_id}")
        if rows:
            self.last_counter = max(self.last_counter, rows[-1]["counter"])
            self.stored += len(rows)


def host_summaries(job_id: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    hosts: set[str] = set()
    for key in _STATS_KEYS:
        hosts.update((data.get(key) or {}).keys())
    return [
        {"job_id": job_id, "host": host, **{_SUMMARY_COLUMNS[k]: int((data.get(k) or {}).get(host, 0)) for k in _STATS_KEYS}}
        for host in sorted(hosts)
    ]
