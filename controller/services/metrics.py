"""GET /metrics: Prometheus metrics (prometheus-client), from two sources.

- The database, for everything about jobs, events, scans, schedules and webhook deliveries: the same figures from whichever API process
  is scraped, counting work done anywhere (local workers, Celery workers on other machines). Job durations and
  latencies are histograms computed from the jobs' own timestamps; the event writers' batch times are counters the
  workers add to (controller.store.counters).
- Each API process, for its requests: with `cloudx serve --processes N` the processes share prometheus-client's
  multiprocess directory (PROMETHEUS_MULTIPROC_DIR, set by `cloudx serve`), and a scrape of any one reports them all.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, extract, func, literal_column, select
from sqlalchemy.orm import Session

from controller.store.counters import BATCH_BUCKETS
from controller.store.database import Database
from controller.store.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Job,
    JobEvent,
    MetricCounter,
    Scan,
    Schedule,
    ScheduleRun,
    WebhookDelivery,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # the *_created series double the text for what Prometheus derives itself
# A burst of scrapes (several Prometheus servers, a dashboard) reads the database once per this many seconds.
CACHE_SECONDS = 5.0
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Registered with no registry: exposed through the multiprocess collector, or added to each exposition's registry.
REQUESTS = Counter("cloudx_http_requests", "API requests by route and status", ["method", "route", "status"], registry=None)
REQUEST_SECONDS = Histogram(
    "cloudx_http_request_duration_seconds", "API request latency by route", ["method", "route"], buckets=REQUEST_BUCKETS, registry=None
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    REQUEST_SECONDS.labels(method, route).observe(seconds)


def _seconds(later: Any, earlier: Any, dialect: str) -> ColumnElement[float]:
    if dialect == "postgresql":
        return extract("epoch", later - earlier)  # EXTRACT(epoch FROM ...): every PostgreSQL version
    return (func.julianday(later) - func.julianday(earlier)) * literal_column("86400.0")


def _histograms(session: Session, name: str, text: str, later: Any, earlier: Any, buckets: Sequence[float]) -> Metric:
    """A histogram by job kind of the seconds from `earlier` to `later`, over every job that has both."""
    seconds = _seconds(later, earlier, session.get_bind().dialect.name)
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in buckets]
    query = select(Job.kind, func.count(), func.coalesce(func.sum(seconds), 0.0), *columns).where(later.is_not(None), earlier.is_not(None))
    family = HistogramMetricFamily(name, text, labels=["kind"])
    for kind, count, total, *counts in session.execute(query.group_by(Job.kind)):
        points = [(str(float(bound)), float(n or 0)) for bound, n in zip(buckets, counts, strict=True)]
        family.add_metric([kind], [*points, ("+Inf", float(count))], float(total))
    return family


def _jobs(session: Session) -> Iterator[Metric]:
    counts = {
        (kind, status): n for kind, status, n in session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))
    }
    jobs = GaugeMetricFamily("cloudx_jobs", "Jobs by kind and status (queued and running among them)", labels=["kind", "status"])
    for kind in sorted({kind for kind, _ in counts}):
        for status in ACTIVE_STATUSES + FINAL_STATUSES:
            jobs.add_metric([kind, status], counts.get((kind, status), 0))
    yield jobs
    yield _histograms(
        session, "cloudx_job_duration_seconds", "Seconds from a job's start to its end", Job.finished_at, Job.started_at, DURATION_BUCKETS
    )
    yield _histograms(
        session,
        "cloudx_job_start_latency_seconds",
        "Seconds from a job's submission to its start",
        Job.started_at,
        Job.created_at,
        LATENCY_BUCKETS,
    )
    yield _histograms(
        session,
        "cloudx_job_first_event_latency_seconds",
        "Seconds from a job's submission to its first stored event",
        Job.first_event_at,
        Job.created_at,
        LATENCY_BUCKETS,
    )


def _events(session: Session) -> Iterator[Metric]:
    stored = CounterMetricFamily("cloudx_events_stored", "Ansible events stored (the event table's highest id)")
    stored.add_metric([], float(session.scalar(select(func.max(JobEvent.id))) or 0))
    yield stored
    rows = dict(
        session.execute(select(MetricCounter.name, MetricCounter.value).where(MetricCounter.name.like("cloudx_event_ingest%"))).all()
    )
    buckets = {
        labels.removeprefix('le="').removesuffix('"'): value
        for labels, value in session.execute(
            select(MetricCounter.labels, MetricCounter.value).where(MetricCounter.name == "cloudx_event_ingest_batch_seconds_bucket")
        )
    }
    batches = HistogramMetricFamily("cloudx_event_ingest_batch_seconds", "Seconds to store one batch of a job's events (job workers)")
    points = [(str(float(bound)), buckets.get(str(bound), 0.0)) for bound in BATCH_BUCKETS]
    batches.add_metric(
        [],
        [*points, ("+Inf", rows.get("cloudx_event_ingest_batch_seconds_count", 0.0))],
        rows.get("cloudx_event_ingest_batch_seconds_sum", 0.0),
    )
    yield batches


def _scans_and_schedules(session: Session) -> Iterator[Metric]:
    scans = GaugeMetricFamily("cloudx_scans", "Scans by tool and status (imported ones have status successful)", labels=["tool", "status"])
    for tool, status, n in session.execute(
        select(Scan.tool, Job.status, func.count()).join(Job, Job.id == Scan.job_id).group_by(Scan.tool, Job.status)
    ):
        scans.add_metric([tool, status], n)
    yield scans
    runs = CounterMetricFamily("cloudx_schedule_runs", "Due times of schedules by outcome", labels=["outcome"])
    for outcome, n in session.execute(select(ScheduleRun.outcome, func.count()).group_by(ScheduleRun.outcome)):
        runs.add_metric([outcome], n)
    yield runs
    missed = CounterMetricFamily("cloudx_schedule_missed_runs", "Due times missed while no controller ran (every one counted)")
    missed.add_metric([], float(session.scalar(select(func.coalesce(func.sum(Schedule.missed_runs), 0))) or 0))
    yield missed
    deliveries = CounterMetricFamily(
        "cloudx_webhook_deliveries", "Webhook delivery attempts by outcome (delivered, retry, failed, refused)", labels=["outcome"]
    )
    for outcome, n in session.execute(select(WebhookDelivery.outcome, func.count()).group_by(WebhookDelivery.outcome)):
        deliveries.add_metric([outcome], n)
    yield deliveries


class DatabaseCollector(Collector):
    """The database's metrics, read at most every CACHE_SECONDS."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > CACHE_SECONDS:
                with self.db.session() as session:
                    families = [*_jobs(session), *_events(session), *_scans_and_schedules(session)]
                self._cached = (time.monotonic(), families)
            return iter(self._cached[1])


def exposition(collector: DatabaseCollector) -> bytes:
    """The text of GET /metrics."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(REQUEST_SECONDS)
    registry.register(collector)
    return generate_latest(registry)
