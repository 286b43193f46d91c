"""Live streams (Server-Sent Events) read from the event store, so they follow jobs run by any executor and stored
by any process.

One StreamHub per API process looks at the database for every open stream at once (the followed jobs' newest event
counters, and the jobs changed since its last look) and wakes the streams that have news; each stream then reads its
own new rows. Streams hold a request thread each, so a process serves at most CLOUDX_STREAM_MAX of them, on threads
of their own (`cloudx serve` adds that many to its request threads): open streams never take the threads of other
requests.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from controller.errors import NotFound, TooBusy
from controller.queue.jobs import EVENT_VIEW_COLUMNS
from controller.store import jsontext
from controller.store.database import Database
from controller.store.jsontext import iso
from controller.store.models import ACTIVE_STATUSES, Job, JobEvent, utcnow

PAGE = 500  # events read per query while a stream catches up
CHANGES_KEPT = 10_000  # job changes the hub keeps for /api/stream followers that fall behind
# Jobs changed up to this long before the hub's last look are read again: a change committed late (its updated_at
# set before another's commit) is not missed; what did not change is not sent twice.
LOOK_BACK = timedelta(seconds=5)
JOB_VIEW = (Job.id, Job.kind, Job.status, Job.status_reason, Job.progress, Job.created_at, Job.started_at, Job.finished_at)


def sse(data: bytes | str, event: str | None = None, event_id: int | None = None) -> bytes:
    """One Server-Sent Event. The data is JSON: one line, so one `data:` field."""
    head = (f"id: {event_id}\n" if event_id is not None else "") + (f"event: {event}\n" if event else "")
    return head.encode() + b"data: " + (data.encode() if isinstance(data, str) else data) + b"\n\n"


def job_view(row: Any) -> dict[str, Any]:
    return {
        "job_id": row.id,
        "kind": row.kind,
        "status": row.status,
        "status_reason": row.status_reason,
        "progress": row.progress,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at) if row.started_at else None,
        "finished_at": iso(row.finished_at) if row.finished_at else None,
    }


class StreamHub:
    def __init__(self, db: Database, poll_seconds: float, max_streams: int) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self._slots = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams
        self._cond = threading.Condition()
        self.generation = 0
        self._followers: collections.Counter[str] = collections.Counter()
        self._watchers = 0  # /api/stream followers
        self._counters: dict[str, int] = {}
        self._states: dict[str, tuple[Any, ...]] = {}
        self.changes: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=CHANGES_KEPT)
        self._sequence = 0
        self._since: datetime | None = None
        self._thread: threading.Thread | None = None

    # --- slots and followers -------------------------------------------------------------------------------------

    def open(self, job_id: str | None) -> None:
        """Take a stream slot (TooBusy when none is free) and follow a job (None: every job's changes)."""
        if not self._slots.acquire(blocking=False):
            raise TooBusy(f"{self.max_streams} streams are open in this process (CLOUDX_STREAM_MAX); try again later", retry_after=5)
        with self._cond:
            if job_id is None:
                self._watchers += 1
            else:
                self._followers[job_id] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="streams", daemon=True)
                self._thread.start()

    def close(self, job_id: str | None) -> None:
        with self._cond:
            if job_id is None:
                self._watchers -= 1
            else:
                self._followers[job_id] -= 1
                if self._followers[job_id] <= 0:
                    del self._followers[job_id]
                    self._counters.pop(job_id, None)
        self._slots.release()

    def changes_after(self, seen: int) -> list[tuple[int, dict[str, Any]]]:
        """The job changes after sequence number `seen` (copied under the lock: the hub appends meanwhile)."""
        with self._cond:
            return [change for change in self.changes if change[0] > seen]

    def last_change(self) -> int:
        with self._cond:
            return self.changes[-1][0] if self.changes else 0

    def wait(self, generation: int, timeout: float) -> int:
        """The generation after `generation`, or the same one when `timeout` passed first."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != generation, timeout)
            return self.generation

    # --- the look at the database ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._followers and not self._watchers:
                    self._thread = None  # started again by the next stream
                    return
            try:
                if self.tick():
                    with self._cond:
                        self.generation += 1
                        self._cond.notify_all()
            except Exception:  # a locked database: looked at again at the next tick
                time.sleep(self.poll_seconds)
            time.sleep(self.poll_seconds)

    def tick(self) -> bool:
        """Whether anything a stream follows changed since the last tick."""
        with self._cond:
            followed, watched = list(self._followers), self._watchers > 0
        changed = False
        with self.db.session() as session:
            if followed:
                newest = session.execute(
                    select(JobEvent.job_id, func.max(JobEvent.counter)).where(JobEvent.job_id.in_(followed)).group_by(JobEvent.job_id)
                )
                for job_id, counter in newest:
                    if self._counters.get(job_id) != counter:
                        self._counters[job_id] = counter
                        changed = True
            changed |= self._job_changes(session, followed if not watched else None)
        return changed

    def _job_changes(self, session: Session, only: list[str] | None) -> bool:
        now = utcnow()
        since = self._since or now - LOOK_BACK
        query = select(*JOB_VIEW).where(Job.updated_at > since - LOOK_BACK)
        if only is not None:
            if not only:
                self._since = now
                return False
            query = query.where(Job.id.in_(only))
        changed = False
        for row in session.execute(query.order_by(Job.updated_at)):
            state = (row.status, row.progress, row.status_reason)
            if self._states.get(row.id) != state:
                self._states[row.id] = state
                with self._cond:
                    self._sequence += 1
                    self.changes.append((self._sequence, job_view(row)))
                changed = True
        self._since = now
        if len(self._states) > 2 * CHANGES_KEPT:  # forget ended jobs' states (a late repeat is harmless)
            self._states = {k: v for k, v in self._states.items() if v[0] in ACTIVE_STATUSES}
        return changed


# --- the streams ------------------------------------------------------------------------------------------------

_EVENTS = None


def _events_query() -> Any:
    global _EVENTS
    if _EVENTS is None:
        columns: list[Any] = [JobEvent.__table__.c[name] for name in EVENT_VIEW_COLUMNS]
        columns[-1] = cast(JobEvent.__table__.c.event_data, Text).label("event_data")
        _EVENTS = columns
    return _EVENTS


def _event_json(row: Any) -> bytes:
    """An event as JSON with its data spliced in as stored (queue.jobs.event_page_json does the same for pages)."""
    head = jsontext.dumps(dict(zip(EVENT_VIEW_COLUMNS[:-1], row[:-1], strict=True)))
    return head[:-1] + b',"event_data":' + (row[-1] or "{}").encode() + b"}"


def job_stream(hub: StreamHub, job_id: str, after: int, heartbeat: float, gone: Callable[[], bool]) -> Stream:
    """The job's events after counter `after` as they are stored (`id:` their counter), `progress` events when its
    progress changes, and a final `end` event with its status. NotFound (before anything is sent) for no such job."""
    with hub.db.session() as session:
        if session.get(Job, job_id) is None:
            raise NotFound(f"no job {job_id}")
    hub.open(job_id)
    return Stream(hub, job_id, _follow_job(hub, job_id, after, heartbeat, gone))


class Stream:
    """A stream's body: its slot is given back when the server closes it, even if it never started."""

    def __init__(self, hub: StreamHub, key: str | None, body: Iterator[bytes]) -> None:
        self.hub, self.key, self.body = hub, key, body
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self.body)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.body.close()  # type: ignore[attr-defined]
            self.hub.close(self.key)


def _follow_job(hub: StreamHub, job_id: str, after: int, heartbeat: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    yield b"retry: 2000\n\n"
    last, progress, generation = after, None, hub.generation
    while True:
        with hub.db.session() as session:
            rows = session.execute(
                select(*_events_query()).where(JobEvent.job_id == job_id, JobEvent.counter > last).order_by(JobEvent.counter).limit(PAGE)
            ).all()
            job = session.execute(select(*JOB_VIEW, Job.final_counter).where(Job.id == job_id)).first()
        for row in rows:
            yield sse(_event_json(row), "ansible", row.counter)
            last = row.counter
        if job is None:  # deleted while followed
            yield sse(jsontext.dumps({"job_id": job_id, "status": "deleted"}), "end")
            return
        if job.progress != progress:
            progress = job.progress
            yield sse(jsontext.dumps({"job_id": job_id, "status": job.status, "progress": progress}), "progress")
        if len(rows) == PAGE:
            continue
        if job.status not in ACTIVE_STATUSES and (job.final_counter is None or last >= job.final_counter):
            yield sse(jsontext.dumps({**job_view(job), "final_counter": job.final_counter}), "end")
            return
        generation = yield from _quiet(hub, generation, heartbeat, gone)
        if generation is None:
            return


def _quiet(hub: StreamHub, generation: int, heartbeat: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    """Wait for news (the new generation; None when the client went away); a comment line every `heartbeat` seconds
    meanwhile (proxies close silent connections)."""
    deadline = time.monotonic() + heartbeat
    while not gone():
        news = hub.wait(generation, min(1.0, max(0.0, deadline - time.monotonic())))
        if news != generation:
            return news
        if time.monotonic() >= deadline:
            yield b": keep-alive\n\n"
            deadline = time.monotonic() + heartbeat
    return None


def all_jobs_stream(hub: StreamHub, heartbeat: float, gone: Callable[[], bool]) -> Stream:
    """`job` events: every queued and running job first, then each job created or changing status or progress."""
    hub.open(None)
    return Stream(hub, None, _follow_all(hub, heartbeat, gone))


def _follow_all(hub: StreamHub, heartbeat: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    yield b"retry: 2000\n\n"
    generation: int | None = hub.generation
    seen = hub.last_change()
    with hub.db.session() as session:
        active = session.execute(select(*JOB_VIEW).where(Job.status.in_(ACTIVE_STATUSES)).order_by(Job.created_at)).all()
    for row in active:
        yield sse(jsontext.dumps(job_view(row)), "job")
    while True:
        generation = yield from _quiet(hub, generation, heartbeat, gone)
        if generation is None:
            return
        for sequence, view in hub.changes_after(seen):
            yield sse(jsontext.dumps(view), "job")
            seen = sequence
