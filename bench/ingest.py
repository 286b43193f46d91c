"""Event ingest: a recorded stream of real ansible-runner events replayed through the controller's
ingest path (EventWriter) into SQLite (WAL) and PostgreSQL, each against the raw executemany ceiling of the
same database. PostgreSQL is CLOUDX_BENCH_POSTGRES_URL if set, else a throwaway cluster of the test harness's
(tests/support/cluster.py) when the server binaries are installed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy

from bench.common import ROOT, Measurement, Section, Variant, alternate
from bench.overhead import ansible_env, build
from controller.queue.jobs import create_job
from controller.store.database import Database
from controller.store.events import BATCH_SIZE, FLUSH_INTERVAL, EventWriter, event_row
from controller.store.events import EVENT_COLUMNS as COLUMNS

CACHE = ROOT / "bench" / ".cache"


def recorded_events() -> list[dict[str, Any]]:
    """The events of one real run of the 50 x 20 playbook, recorded once into bench/.cache."""
    path = CACHE / "events-50x20.json"
    if not path.is_file():
        import ansible_runner

        CACHE.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="cloudx-bench-record-"))
        (work / "runner").mkdir()
        inventory, playbook = build(work, 50, 20)
        events: list[dict[str, Any]] = []
        saved = dict(os.environ)
        os.environ.update(ansible_env())
        try:
            result = ansible_runner.run(
                private_data_dir=str(work / "runner"),
                playbook=str(playbook),
                inventory=str(inventory),
                quiet=True,
                event_handler=lambda event: events.append(event) or False,
            )
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if result.status != "successful":
            raise RuntimeError(f"recording run ended {result.status}")
        path.write_text(json.dumps(events))
        shutil.rmtree(work, ignore_errors=True)
    return json.loads(path.read_text())


def replay(events: list[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    """`total` events cycling through the recording, numbered 1..total like one long job (one stats event, last)."""
    body = [e for e in events if e.get("event") != "playbook_on_stats"]
    stats = [e for e in events if e.get("event") == "playbook_on_stats"]
    stream = []
    for i in range(total):
        source = stats[0] if i == total - 1 and stats else body[i % len(body)]
        event = copy.deepcopy(source)
        event["counter"] = i + 1
        stream.append(event)
    return stream


class _Ingest:
    """The variants' shared state: the replayed stream, the targets, the current database and job."""

    def __init__(self, stream: list[dict[str, Any]], work: Path, targets: dict[str, str]) -> None:
        self.stream = stream
        self.total = len(stream)
        self.work = work
        self.targets = targets
        self.db: Any = None
        self.job_id = ""
        self.rows_cache: list[tuple[Any, ...]] = []

    def fresh(self, backend: str) -> Callable[[], None]:
        """A setup: an empty database of that backend (SQLite: a new file) with one job."""

        def setup() -> None:
            if backend == "SQLite":
                for path in self.work.glob("ingest.db*"):
                    path.unlink()
                url = f"sqlite:///{self.work / 'ingest.db'}"
            else:
                url = self.targets[backend]
            db = Database(url)
            db.upgrade()
            with db.session() as session:
                session.execute(sqlalchemy.text("DELETE FROM job_events"))
                session.execute(sqlalchemy.text("DELETE FROM jobs"))
                self.job_id = create_job(session, kind="playbook", playbook="p.yml", inventory="i", extra_vars={}, timeout=1).id
            self.db = db

        return setup

    def controller(self) -> dict[str, float]:
        writer = EventWriter(self.db, self.job_id)
        for event in self.stream:
            writer.put(event)
        last = writer.close()
        assert last == self.total, last
        self.db.dispose()
        return {}

    def prepared_rows(self) -> list[tuple[Any, ...]]:
        """The stream's rows as the controller writes them (built once), for the current job."""
        if not self.rows_cache:
            for event in self.stream:
                self.rows_cache.append(event_row(self.job_id, event))
        return [(self.job_id, *r[1:]) for r in self.rows_cache]

    def raw_sqlite(self) -> dict[str, float]:
        """The ceiling: stdlib sqlite3, rows prepared beforehand, one executemany, same pragmas."""
        rows = self.prepared_rows()
        self.db.dispose()
        connection = sqlite3.connect(self.work / "ingest.db")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        start = time.perf_counter()
        with connection:
            connection.executemany(f"INSERT INTO job_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
        elapsed = time.perf_counter() - start
        count = connection.execute("SELECT count(*) FROM job_events").fetchone()[0]
        connection.close()
        assert count == self.total, count
        return {"insert_seconds": elapsed}

    def raw_postgres(self) -> dict[str, float]:
        """The ceiling: psycopg's executemany (pipelined) of rows prepared beforehand, one transaction."""
        import psycopg

        rows = self.prepared_rows()
        self.db.dispose()
        values = ", ".join("%s::json" if c == "event_data" else "%s" for c in COLUMNS)
        with psycopg.connect(self.targets["PostgreSQL"].replace("+psycopg", "")) as connection:
            start = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.executemany(f"INSERT INTO job_events ({', '.join(COLUMNS)}) VALUES ({values})", rows)
            connection.commit()
            elapsed = time.perf_counter() - start
            count = connection.execute("SELECT count(*) FROM job_events").fetchone()
        assert count is not None and count[0] == self.total, count
        return {"insert_seconds": elapsed}

    def variants(self) -> list[Variant]:
        variants = [
            Variant(f"{backend}: controller ingest (EventWriter)", self.controller, setup=self.fresh(backend)) for backend in self.targets
        ]
        variants.append(Variant("SQLite: raw executemany ceiling", self.raw_sqlite, setup=self.fresh("SQLite")))
        if "PostgreSQL" in self.targets:
            variants.append(Variant("PostgreSQL: raw executemany ceiling", self.raw_postgres, setup=self.fresh("PostgreSQL")))
        return variants


def _targets() -> tuple[dict[str, str], Any]:
    """SQLite, and PostgreSQL when there is one: CLOUDX_BENCH_POSTGRES_URL, else a throwaway cluster (also returned)."""
    targets: dict[str, str] = {"SQLite": ""}
    throwaway = None
    if os.environ.get("CLOUDX_BENCH_POSTGRES_URL"):
        targets["PostgreSQL"] = os.environ["CLOUDX_BENCH_POSTGRES_URL"]
    else:
        from tests.support.cluster import Postgres, available

        if available() is None:
            throwaway = Postgres(durable=True)
            targets["PostgreSQL"] = throwaway.create_database("ingest")
    return targets, throwaway


def run(quick: bool, log: Callable[[str], None]) -> Section:
    total, rounds = (20_000, 2) if quick else (100_000, 5)
    recording = recorded_events()
    stream = replay(recording, total)
    log(f"  {len(recording)} recorded events, replayed as {total}")
    work = Path(tempfile.mkdtemp(prefix="cloudx-bench-ingest-"))
    targets, throwaway = _targets()
    try:
        results = alternate(_Ingest(stream, work, targets).variants(), rounds, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if throwaway is not None:
            throwaway.close()
    return _section(results, total, rounds, len(recording), "PostgreSQL" in targets, throwaway is None)


def _section(results: dict[str, Measurement], total: int, rounds: int, recorded: int, postgres: bool, postgres_from_env: bool) -> Section:
    rows = []
    for name, m in results.items():
        seconds = m.extra_median("insert_seconds") if "insert_seconds" in m.extra else m.median
        rows.append((name, f"{seconds:.2f}", f"{total / seconds:,.0f}"))
    ceiling = total / results["SQLite: raw executemany ceiling"].extra_median("insert_seconds")
    ours = total / results["SQLite: controller ingest (EventWriter)"].median
    met = "met" if ours >= 50_000 else "missed"
    notes = [
        f"The controller ingest is timed from the first `put` to `close()` returning (every event committed), {ours / ceiling:.0%} "
        "of the raw ceiling. It includes what the controller does per event: trimming and redacting event data, host/task "
        f"columns, progress and host summaries, batching ({BATCH_SIZE} rows or {FLUSH_INTERVAL} s) and retries.",
        "The raw ceiling times only the executemany of rows prepared beforehand (JSON already encoded), in one transaction.",
    ]
    if not postgres:
        notes.append("PostgreSQL: not measured (install postgresql, or set CLOUDX_BENCH_POSTGRES_URL=postgresql+psycopg://...).")
    else:
        source = "CLOUDX_BENCH_POSTGRES_URL" if postgres_from_env else "a throwaway local cluster (initdb, loopback TCP, fsync on)"
        pg = total / results["PostgreSQL: controller ingest (EventWriter)"].median
        pg_ceiling = total / results["PostgreSQL: raw executemany ceiling"].extra_median("insert_seconds")
        notes.append(f"PostgreSQL ({source}): {pg:,.0f} events/s through the controller, {pg / pg_ceiling:.0%} of its raw ceiling.")
    return Section(
        title="2. Event ingest",
        setup=f"{total:,} events replayed from a real run ({recorded} events of the 50 x 20 playbook) into one job; {rounds} rounds.",
        header=("variant", "median s", "events/s"),
        rows=rows,
        verdict=f"Target: at least 50,000 events/s on SQLite. Measured {ours:,.0f} events/s: {met}.",
        notes=notes,
    )
