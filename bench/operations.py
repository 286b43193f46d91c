"""Day-to-day operations: live-stream fan-out and the scheduler's claims.

Streams: `cloudx serve` (its default settings) and 50 clients following one job while 2,000 events are stored into it
in small transactions (as job workers store them); each event's commit time against the time each client read it.
`GET /api/health` is timed with the 50 streams open and with none, alternating, side by side.

Scheduler: 1,000 schedules due at the same moment, claimed and started by one scheduler, and by two racing ones
(separate processes), on SQLite: the time until all 1,000 jobs are queued, and that each was started once.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench.common import ROOT, Section, percentile

CLIENTS = 50
EVENTS = 2000
PER_COMMIT = 10
COMMIT_EVERY = 0.05  # 200 events a second
SCHEDULES = 1000


# --- streams ------------------------------------------------------------------------------------------------------


def _client(url: str, headers: dict[str, str], received: dict[int, float], order: list[int], ready: threading.Event) -> None:
    with requests.get(url, headers=headers, stream=True, timeout=300) as response:
        ready.set()
        event_id = None
        for line in response.iter_lines():
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line == b"" and event_id is not None:
                received[event_id] = time.time()
                order.append(event_id)
                event_id = None
            elif line.startswith(b"event: end"):
                return


def _health(url: str, times: int) -> list[float]:
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        assert requests.get(url, timeout=10).status_code == 200
        taken.append((time.perf_counter() - started) * 1000)
    return taken


def streams(work: Path, quick: bool, log: Callable[[str], None]) -> tuple[list[tuple[str, ...]], dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    from controller.store.database import Database
    from controller.store.models import Job, JobEvent, utcnow
    from tests.support.service import Service

    events = 400 if quick else EVENTS
    service = Service(work)
    service.start()
    try:
        db = Database(service.config.DATABASE_URL)
        with db.session() as session:
            job = Job(
                kind="playbook", playbook="bench.yml", inventory="-", extra_vars={}, timeout=600, status="running", started_at=utcnow()
            )
            session.add(job)
            session.flush()
            job_id = job.id
        headers = dict(service.http.headers)
        health_url = f"{service.url}/health"
        idle = _health(health_url, 20)
        received: list[dict[int, float]] = [{} for _ in range(CLIENTS)]
        orders: list[list[int]] = [[] for _ in range(CLIENTS)]
        threads = []
        for i in range(CLIENTS):
            ready = threading.Event()
            thread = threading.Thread(target=_client, args=(f"{service.url}/jobs/{job_id}/stream", headers, received[i], orders[i], ready))
            thread.start()
            ready.wait(30)
            threads.append(thread)
        time.sleep(1)
        busy = _health(health_url, 20)
        committed: dict[int, float] = {}
        during: list[float] = []
        flowing = threading.Event()
        flowing.set()

        def sample_health() -> None:  # while the events flow to the 50 streams
            while flowing.is_set():
                during.extend(_health(health_url, 1))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample_health)
        sampler.start()
        started = time.monotonic()
        counter = 0
        while counter < events:
            with db.session() as session:
                for _ in range(PER_COMMIT):
                    counter += 1
                    session.add(
                        JobEvent(job_id=job_id, counter=counter, event="runner_on_ok", host="h", stdout=f"event {counter}", event_data={})
                    )
            stamp = time.time()
            for c in range(counter - PER_COMMIT + 1, counter + 1):
                committed[c] = stamp
            time.sleep(COMMIT_EVERY)
        rate = events / (time.monotonic() - started)
        flowing.clear()
        sampler.join()
        while_streaming = _health(health_url, 20)
        with db.session() as session:
            stored = session.get(Job, job_id)
            stored.status, stored.final_counter, stored.finished_at = "successful", events, utcnow()
        for thread in threads:
            thread.join(120)
        db.dispose()
    finally:
        service.stop()
    complete = sum(1 for order in orders if order == list(range(1, events + 1)))
    latencies = [(got[c] - committed[c]) * 1000 for got in received for c in committed if c in got]
    log(f"  {complete}/{CLIENTS} clients got all {events} events in order; p95 {percentile(latencies, 95):.0f} ms")
    rows = [
        ("events stored (per second)", f"{rate:.0f}"),
        ("clients that received every event, in order", f"{complete} of {CLIENTS}"),
        ("stored → received p50 ms", f"{statistics.median(latencies):.0f}"),
        ("stored → received p95 ms", f"{percentile(latencies, 95):.0f}"),
        ("stored → received max ms", f"{max(latencies):.0f}"),
        ("GET /api/health p95 ms, no stream open (reference)", f"{percentile(idle, 95):.1f}"),
        (
            "GET /api/health p95 ms, 50 streams open, idle",
            f"{percentile(busy, 95):.1f} ({percentile(busy, 95) / percentile(idle, 95):.2f}\u00d7)",
        ),
        (
            f"GET /api/health p95 ms, 50 streams open, while the events flow ({len(during)} requests)",
            f"{percentile(during, 95):.1f} ({percentile(during, 95) / percentile(idle, 95):.2f}\u00d7), max {max(during):.1f}",
        ),
        (
            "GET /api/health p95 ms, 50 streams open, after 2,000 events",
            f"{percentile(while_streaming, 95):.1f} ({percentile(while_streaming, 95) / percentile(idle, 95):.2f}\u00d7)",
        ),
    ]
    return rows, {"complete": complete, "p95": percentile(latencies, 95), "health_max": max(busy + during + while_streaming)}


# --- scheduler ----------------------------------------------------------------------------------------------------


def _scheduler(url: str, moment: float, out: Any) -> None:
    from datetime import UTC, datetime

    from controller.config import Config
    from controller.services.schedules import run_due
    from controller.store.database import Database

    config = Config.from_env(ENV_FILE="", DATABASE_URL=url, MAX_QUEUED_JOBS=0)
    db = Database(url, config.DB_BUSY_TIMEOUT)
    while time.time() < moment:
        time.sleep(0.001)
    started = time.perf_counter()
    count = 0
    while True:  # a tick takes at most DUE_PER_TICK schedules
        batch = run_due(db, config, f"bench:{multiprocessing.current_process().pid}", datetime.now(UTC))
        count += len(batch)
        if not batch:
            break
    out.put((count, time.perf_counter() - started))
    db.dispose()


def _prepare_schedules(work: Path) -> str:
    from datetime import timedelta

    from controller.services.policy import update_policy
    from controller.store.database import Database
    from controller.store.models import Schedule, utcnow

    url = f"sqlite:///{work / 'scans.db'}"
    db = Database(url)
    db.upgrade()
    with db.session() as session:
        update_policy(session, {"scope": ["192.0.2.0/24"]}, "bench")
        due = utcnow() - timedelta(seconds=1)
        for i in range(SCHEDULES):
            request = {"tool": "nmap", "scan_type": "tcp", "target": f"192.0.2.{i % 250 + 1}", "ports": "22"}
            session.add(
                Schedule(name=f"s{i:04d}", kind="scan", request=request, every_seconds=3600, created_by="cli:bench", next_run_at=due)
            )
    db.dispose()
    return url


def scheduler(work: Path, log: Callable[[str], None]) -> list[tuple[str, ...]]:
    from controller.store.database import Database
    from controller.store.models import Job, ScheduleRun

    rows = []
    context = multiprocessing.get_context("spawn")
    for racers in (1, 2):
        directory = work / f"sched-{racers}"
        directory.mkdir()
        url = _prepare_schedules(directory)
        out = context.Queue()
        moment = time.time() + 3
        processes = [context.Process(target=_scheduler, args=(url, moment, out)) for _ in range(racers)]
        for p in processes:
            p.start()
        results = [out.get(timeout=600) for _ in processes]
        for p in processes:
            p.join()
        db = Database(url)
        with db.session() as session:
            jobs = session.query(Job).count()
            started = session.query(ScheduleRun).filter_by(outcome="started").count()
            distinct = session.query(ScheduleRun.schedule_id).filter_by(outcome="started").distinct().count()
        db.dispose()
        seconds = max(r[1] for r in results)
        log(f"  {racers} scheduler(s): {jobs} jobs, {started} runs started ({distinct} schedules) in {seconds:.2f} s")
        rows.append((f"{racers} scheduler process(es)", f"{jobs}", f"{distinct}", f"{seconds:.2f}", f"{seconds / SCHEDULES * 1000:.2f}"))
    return rows


def run(quick: bool, log: Callable[[str], None]) -> Section:
    with tempfile.TemporaryDirectory(prefix="cloudx-bench-operations-") as tmp:
        work = Path(tmp)
        (work / "streams").mkdir()
        stream_rows, figures = streams(work / "streams", quick, log)
        schedule_rows = scheduler(work, log)
    one, two = float(schedule_rows[0][3]), float(schedule_rows[1][3])
    once = all(row[1] == row[2] == str(SCHEDULES) for row in schedule_rows)
    verdict = (
        f"Streams: {figures['complete']} of {CLIENTS} clients got every event in order, p95 stored → received {figures['p95']:.0f} ms; "
        f"/api/health slowest with 50 streams open {figures['health_max']:.0f} ms (target 100 ms: "
        f"{'met' if figures['health_max'] <= 100 else 'MISSED'}). Scheduler: 1,000 due schedules started once each: "
        f"{'met' if once else 'MISSED'}; claim time {one:.2f} s with one scheduler, {two:.2f} s with two racing ({two / one:.2f}\u00d7)."
    )
    appendix = Section(
        title="Scheduler: 1,000 schedules due at once (SQLite)",
        setup="Each scheduler a process of its own, started at the same moment, calling run_due until nothing is due.",
        header=("schedulers", "jobs queued", "schedules started", "seconds until all queued", "ms per schedule"),
        rows=schedule_rows,
        verdict=f"Each schedule started once: {'yes' if once else 'NO'}.",
        notes=[
            "A claim is one UPDATE conditioned on the schedule's revision, then the run's checks (scope, timeout, quotas) and "
            "the job's insert, in one transaction per schedule; SQLite serialises the writers, so a second scheduler adds "
            "contention, not throughput.",
        ],
    )
    return Section(
        title="8. Live streams and the scheduler",
        setup=(
            f"`cloudx serve` (1 process, 8 request threads + 64 stream threads); {CLIENTS} clients (threads of this process, "
            f"requests) follow one job while {EVENTS:,} events are stored into it, {PER_COMMIT} per transaction every "
            f"{COMMIT_EVERY * 1000:.0f} ms. Latency: each event's commit to each client's read of it. /api/health: 20 requests "
            "each with no stream, 50 idle streams, and after the events."
        ),
        header=("figure", "value"),
        rows=stream_rows,
        verdict=verdict,
        notes=[
            "The streams' hub looks at the database every CLOUDX_STREAM_POLL_SECONDS (0.1 s) for all open streams at once, so "
            "an event waits up to that long; it reads and encodes each job's new events once for all its streams. The clients "
            "share this machine's two cores with the server.",
        ],
        appendix=[appendix],
    )
