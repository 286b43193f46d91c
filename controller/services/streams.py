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
RECENT_BYTES = 4 * 1024 * 1024  # a followed job's newest events the hub holds for its streams
CHANGES_KEPT = 10_000  # job changes the hub keeps for /api/stream followers that fall behind
# A stream ends after this long (the client resumes it with Last-Event-ID): none holds a slot for ever.
MAX_STREAM_SECONDS = 3600.0
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


class Recent:
    """A followed job's newest events as SSE bytes: every event with a counter above `floor` (up to `last`) is held,
    within RECENT_BYTES; `job` is its row (status, progress, final_counter) as the same tick read it."""

    def __init__(self, last: int) -> None:
        self.floor = self.last = last
        self.items: collections.deque[tuple[int, bytes]] = collections.deque()
        self.size = 0
        self.job: Any = None

    def add(self, events: list[tuple[int, bytes]]) -> None:
        for counter, data in events:
            self.items.append((counter, data))
            self.size += len(data)
            self.last = counter
        while self.size > RECENT_BYTES and self.items:
            counter, data = self.items.popleft()
            self.size -= len(data)
            self.floor = counter


class StreamHub:
    """Each stream waits on its own key (a job id, or WATCHERS for /api/stream): a tick wakes only those with news."""

    def __init__(self, db: Database, poll_seconds: float, max_streams: int, look_back: float = 60.0) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        # Jobs changed up to this long before the hub's last look are read again for /api/stream: an update whose
        # updated_at was taken before a wait for the database's lock, or on a machine whose clock is behind.
        self.look_back = timedelta(seconds=look_back)
        self._slots = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams
        self._cond = threading.Condition()
        self._generations: collections.Counter[str | None] = collections.Counter()
        self._followers: collections.Counter[str] = collections.Counter()
        self._watchers = 0  # /api/stream followers
        self._counters: dict[str, int | None] = {}
        self._followed_states: dict[str, tuple[Any, ...]] = {}
        self._recent: dict[str, Recent] = {}  # each followed job's newest events, read and encoded once for all its streams
        self._states: dict[str, tuple[Any, ...]] = {}
        self.changes: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=CHANGES_KEPT)
        self._sequence = 0
        self._since: datetime | None = None
        self._thread: threading.Thread | None = None
        self.closing = False

    # --- slots and followers -------------------------------------------------------------------------------------

    def open(self, job_id: str | None) -> int:
        """Take a stream slot (TooBusy when none is free) and follow a job (None: every job's changes); the current
        sequence number of job changes (what a new /api/stream follower has already seen)."""
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
            return self._sequence

    def close(self, job_id: str | None) -> None:
        try:
            with self._cond:
                if job_id is None:
                    self._watchers -= 1
                else:
                    self._followers[job_id] -= 1
                    if self._followers[job_id] <= 0:
                        del self._followers[job_id]
                        self._recent.pop(job_id, None)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        """The server stops: every stream ends at once (clients resume with Last-Event-ID from another process)."""
        with self._cond:
            self.closing = True
            self._cond.notify_all()

    def changes_after(self, seen: int) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """The job changes after sequence number `seen`, and whether some were already dropped from the buffer."""
        with self._cond:
            oldest = self.changes[0][0] if self.changes else self._sequence + 1
            return [change for change in self.changes if change[0] > seen], seen + 1 < oldest

    def open_sequence(self) -> int:
        with self._cond:
            return self._sequence

    def generation(self, key: str | None) -> int:
        with self._cond:
            return self._generations[key]

    def wait(self, key: str | None, generation: int, timeout: float) -> int | None:
        """The key's generation after `generation`, the same one when `timeout` passed first; None when closing."""
        with self._cond:
            self._cond.wait_for(lambda: self.closing or self._generations[key] != generation, timeout)
            return None if self.closing else self._generations[key]

    # --- the look at the database ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if (not self._followers and not self._watchers) or self.closing:
                    self._thread = None  # started again by the next stream, with nothing of this run's state
                    self._counters, self._followed_states, self._states, self._since = {}, {}, {}, None
                    self._recent = {}
                    return
            try:
                woken = self.tick()
                if woken:
                    with self._cond:
                        for key in woken:
                            self._generations[key] += 1
                        self._cond.notify_all()
            except Exception:  # a locked database: looked at again at the next tick
                time.sleep(self.poll_seconds)
            time.sleep(self.poll_seconds)

    def tick(self) -> set[str | None]:
        """The keys with news since the last tick: followed jobs with new events or a new state, and None (WATCHERS)
        when any job changed."""
        with self._cond:
            followed, watched = list(self._followers), self._watchers > 0
        woken: set[str | None] = set()
        with self.db.session() as session:
            if followed:
                newest = dict(
                    session.execute(
                        select(JobEvent.job_id, func.max(JobEvent.counter)).where(JobEvent.job_id.in_(followed)).group_by(JobEvent.job_id)
                    ).all()
                )
                for job_id in followed:
                    self._read_recent(session, job_id, newest.get(job_id))
                # A followed job's state is read by its id: its end is seen whatever its updated_at says.
                rows = {row.id: row for row in session.execute(select(*JOB_VIEW, Job.final_counter).where(Job.id.in_(followed)))}
                for job_id in followed:
                    row = rows.get(job_id)
                    recent = self._recent.get(job_id)
                    if recent is not None:
                        recent.job = row
                    seen = (newest.get(job_id), (row.status, row.progress, row.status_reason) if row else None)
                    if self._followed_states.get(job_id) != seen:
                        self._followed_states[job_id] = seen
                        woken.add(job_id)
            if watched and self._job_changes(session):
                woken.add(None)
        return woken

    def _read_recent(self, session: Session, job_id: str, newest: int | None) -> None:
        """Read a followed job's events stored since the last tick, once, encoded as their streams send them."""
        recent = self._recent.get(job_id)
        if recent is None:  # from now on: what came before, each stream reads itself (its own `after`)
            with self._cond:
                if job_id in self._followers:
                    self._recent[job_id] = Recent(newest or 0)
            return
        if newest is None or newest <= recent.last:
            return
        rows = session.execute(
            select(*_events_query()).where(JobEvent.job_id == job_id, JobEvent.counter > recent.last).order_by(JobEvent.counter).limit(PAGE)
        ).all()
        encoded = [(row.counter, sse(_event_json(row), "ansible", row.counter)) for row in rows]
        with self._cond:  # streams copy the items under the lock
            recent.add(encoded)

    def recent(self, job_id: str, after: int) -> tuple[list[tuple[int, bytes]], Any] | None:
        """The events after `after` and the job's row, as the last tick read them; None when they are not all held
        (the stream reads the database itself)."""
        with self._cond:
            recent = self._recent.get(job_id)
            if recent is None or recent.job is None or after < recent.floor:
                return None
            return [item for item in recent.items if item[0] > after], recent.job

    def _job_changes(self, session: Session) -> bool:
        now = utcnow()
        since = (self._since or now) - self.look_back
        changed = False
        for row in session.execute(select(*JOB_VIEW).where(Job.updated_at > since).order_by(Job.updated_at)):
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
            try:
                self.body.close()  # type: ignore[attr-defined]
            finally:
                self.hub.close(self.key)


def _follow_job(hub: StreamHub, job_id: str, after: int, heartbeat: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    yield b"retry: 2000\n\n"
    last, progress = after, None
    generation: int | None = hub.generation(job_id)
    ends = time.monotonic() + MAX_STREAM_SECONDS
    while generation is not None and time.monotonic() < ends:
        found = hub.recent(job_id, last)
        from_db = found is None  # replaying, or fallen behind what the hub holds
        events, job = _read_events(hub, job_id, last) if found is None else found
        for counter, data in events:
            yield data
            last = counter
        if job is None:  # deleted while followed
            yield sse(jsontext.dumps({"job_id": job_id, "status": "deleted"}), "end")
            return
        if job.progress != progress:
            progress = job.progress
            yield sse(jsontext.dumps({"job_id": job_id, "status": job.status, "progress": progress}), "progress")
        if from_db and len(events) == PAGE:
            if gone():  # catching up on a long backlog: its reader may have been signed out meanwhile
                return
            continue
        if job.status not in ACTIVE_STATUSES and (job.final_counter is None or last >= job.final_counter):
            yield sse(jsontext.dumps({**job_view(job), "final_counter": job.final_counter}), "end")
            return
        generation = yield from _quiet(hub, job_id, generation, heartbeat, gone)


def _read_events(hub: StreamHub, job_id: str, after: int) -> tuple[list[tuple[int, bytes]], Any]:
    with hub.db.session() as session:
        rows = session.execute(
            select(*_events_query()).where(JobEvent.job_id == job_id, JobEvent.counter > after).order_by(JobEvent.counter).limit(PAGE)
        ).all()
        job = session.execute(select(*JOB_VIEW, Job.final_counter).where(Job.id == job_id)).first()
    return [(row.counter, sse(_event_json(row), "ansible", row.counter)) for row in rows], job


def _quiet(hub: StreamHub, key: str | None, generation: int, heartbeat: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    """Wait for news of `key`: its new generation, or the same one after a heartbeat (a comment line is sent, and the
    stream looks at the database itself); None when the client went away or the server stops."""
    deadline = time.monotonic() + heartbeat
    while not gone():
        news = hub.wait(key, generation, min(1.0, max(0.0, deadline - time.monotonic())))
        if news != generation:
            return news
        if time.monotonic() >= deadline:
            yield b": keep-alive\n\n"
            return generation
    return None


def all_jobs_stream(hub: StreamHub, heartbeat: float, gone: Callable[[], bool]) -> Stream:
    """`job` events: every queued and running job first, then each job created or changing status or progress."""
    seen = hub.open(None)
    return Stream(hub, None, _follow_all(hub, seen, heartbeat, gone))


def _follow_all(hub: StreamHub, seen: int, heartbeat: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    yield b"retry: 2000\n\n"
    generation: int | None = hub.generation(None)
    ends = time.monotonic() + MAX_STREAM_SECONDS
    snapshot = True
    while generation is not None and time.monotonic() < ends:
        if snapshot:  # at the start, and after falling behind the hub's buffer: every active job as it is now
            with hub.db.session() as session:
                active = session.execute(select(*JOB_VIEW).where(Job.status.in_(ACTIVE_STATUSES)).order_by(Job.created_at)).all()
            for row in active:
                yield sse(jsontext.dumps(job_view(row)), "job")
            snapshot = False
        generation = yield from _quiet(hub, None, generation, heartbeat, gone)
        changes, dropped = hub.changes_after(seen)
        if dropped:
            seen, snapshot = hub.open_sequence(), True
            continue
        for sequence, view in changes:
            yield sse(jsontext.dumps(view), "job")
            seen = sequence
