"""Cumulative counters in the database (metric_counters): what processes on any machine, such as the job workers
of a Celery cluster, add to and GET /metrics reports. A histogram is kept as Prometheus keeps one: a counter per
bucket (le), its sum and its count."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from controller.store.models import MetricCounter

# Seconds to write one batch of events (a commit each).
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Observations kept in memory, added to the database's counters at once (add_to)."""

    def __init__(self, name: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def rows(self) -> dict[tuple[str, str], float]:
        total = sum(self.counts)
        if not total:
            return {}
        rows: dict[tuple[str, str], float] = {}
        running = 0
        for le, count in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            running += count
            rows[(f"{self.name}_bucket", f'le="{le}"')] = running
        rows[(f"{self.name}_sum", "")] = self.sum
        rows[(f"{self.name}_count", "")] = total
        return rows


def add(connection: Connection, values: dict[tuple[str, str], float]) -> None:
    """Add each value to its counter, creating it at 0: one statement, atomic on SQLite and PostgreSQL."""
    if not values:
        return
    rows = [{"name": name, "labels": labels, "value": value} for (name, labels), value in values.items()]
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = insert(MetricCounter).values(rows)
    connection.execute(
        statement.on_conflict_do_update(index_elements=["name", "labels"], set_={"value": MetricCounter.value + statement.excluded.value})
    )
