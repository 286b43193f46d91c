"""GET /metrics: scraped and parsed as Prometheus does, from stored records, real event writers, real jobs with both
executors, and two API processes."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from controller.store.events import EventWriter
from controller.store.models import Job, Scan, Schedule, ScheduleRun, Webhook, WebhookDelivery, WebhookOutbox, utcnow
from tests.support.app import make_token
from tests.support.service import Service
from tests.support.waiting import wait_scan


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by name and sorted labels (the official parser: the format is right)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _scrape(client, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return _samples(response.get_data(as_text=True))


def _job(session, kind, status, created, started=None, finished=None, first_event=None):
    job = Job(kind=kind, playbook="p.yml", inventory="i", extra_vars={}, timeout=60, status=status, created_at=created, started_at=started)
    job.finished_at, job.first_event_at = finished, first_event
    session.add(job)
    session.flush()
    return job


def test_the_metrics_are_read_from_the_stored_records(app, client):
    now = utcnow()
    with app.extensions["cloudx.db"].session() as session:
        t0 = now - timedelta(hours=1)
        fast = _job(
            session, "scan", "successful", t0, t0 + timedelta(seconds=0.2), t0 + timedelta(seconds=3.2), t0 + timedelta(seconds=0.4)
        )
        _job(session, "scan", "failed", t0, t0 + timedelta(seconds=2), t0 + timedelta(seconds=42), t0 + timedelta(seconds=7))
        running = _job(session, "deploy", "running", t0, t0 + timedelta(seconds=20))
        _job(session, "deploy", "queued", now)
        session.add(Scan(job_id=fast.id, tool="nmap", target="192.0.2.1", scan_type="tcp"))
        schedule = Schedule(name="s", kind="scan", request={}, every_seconds=60, created_by="tests", missed_runs=7)
        session.add(schedule)
        session.flush()
        session.add_all(
            [
                ScheduleRun(schedule_id=schedule.id, due_at=now - timedelta(minutes=i), outcome=o)
                for i, o in enumerate(["started", "missed", "missed"])
            ]
        )
        hook = Webhook(url="https://hooks.example/x", events=["job.failed"], created_by="tests")
        session.add(hook)
        session.flush()
        box = WebhookOutbox(webhook_id=hook.id, event="job.failed", job_id=fast.id, body="{}")
        session.add(box)
        session.flush()
        for attempt, outcome in enumerate(["retry", "retry", "delivered"], 1):
            session.add(
                WebhookDelivery(
                    webhook_id=hook.id, outbox_id=box.id, event="job.failed", job_id=fast.id, attempt=attempt, outcome=outcome, body="{}"
                )
            )
    # A real event writer: 4,500 events in batches of at most 2,000, whose times it adds to the counters.
    writer = EventWriter(app.extensions["cloudx.db"], running.id)
    for counter in range(1, 4501):
        writer.put({"counter": counter, "event": "verbose", "stdout": "x", "event_data": {}})
    assert writer.close() == 4500

    viewer = make_token(app, "viewer", "grafana")
    samples = _scrape(client, viewer)
    assert samples[("cloudx_jobs", (("kind", "scan"), ("status", "successful")))] == 1
    assert samples[("cloudx_jobs", (("kind", "scan"), ("status", "failed")))] == 1
    assert samples[("cloudx_jobs", (("kind", "deploy"), ("status", "queued")))] == 1
    assert samples[("cloudx_jobs", (("kind", "deploy"), ("status", "running")))] == 1
    assert samples[("cloudx_jobs", (("kind", "deploy"), ("status", "canceled")))] == 0
    # Durations: 3 s and 40 s for the scans; the running job has none yet.
    duration = {labels: value for (name, labels), value in samples.items() if name == "cloudx_job_duration_seconds_bucket"}
    assert duration[(("kind", "scan"), ("le", "1.0"))] == 0 and duration[(("kind", "scan"), ("le", "5.0"))] == 1
    assert duration[(("kind", "scan"), ("le", "60.0"))] == 2 and duration[(("kind", "scan"), ("le", "+Inf"))] == 2
    assert samples[("cloudx_job_duration_seconds_sum", (("kind", "scan"),))] == pytest.approx(43, abs=0.01)
    assert samples[("cloudx_job_start_latency_seconds_count", (("kind", "deploy"),))] == 1
    assert samples[("cloudx_job_start_latency_seconds_sum", (("kind", "scan"),))] == pytest.approx(2.2, abs=0.01)
    assert samples[("cloudx_job_first_event_latency_seconds_bucket", (("kind", "scan"), ("le", "0.5")))] == 1
    assert samples[("cloudx_job_first_event_latency_seconds_bucket", (("kind", "scan"), ("le", "10.0")))] == 2
    assert samples[("cloudx_events_stored_total", ())] == 4500
    assert samples[("cloudx_event_ingest_batch_seconds_count", ())] >= 3  # at least ceil(4500 / 2000) batches
    assert (
        samples[("cloudx_event_ingest_batch_seconds_bucket", (("le", "+Inf"),))] == samples[("cloudx_event_ingest_batch_seconds_count", ())]
    )
    assert samples[("cloudx_event_ingest_batch_seconds_sum", ())] > 0
    assert samples[("cloudx_scans", (("status", "successful"), ("tool", "nmap")))] == 1
    assert samples[("cloudx_schedule_runs_total", (("outcome", "missed"),))] == 2
    assert samples[("cloudx_schedule_missed_runs_total", ())] == 7
    assert samples[("cloudx_webhook_deliveries_total", (("outcome", "retry"),))] == 2
    assert samples[("cloudx_webhook_deliveries_total", (("outcome", "delivered"),))] == 1
    with app.extensions["cloudx.db"].session() as session:
        assert session.get(Job, running.id).first_event_at is not None  # set by the writer's first batch
    # The API's own requests, by route (never by path: ids do not make new series) and status. (This process's
    # counters are shared by the apps of every test it runs: what is counted is the change.)
    route = ("cloudx_http_requests_total", (("method", "GET"), ("route", "/api/jobs/<job_id>"), ("status", "404")))
    before = samples.get(route, 0)
    client.get("/api/jobs/no-such-job")
    client.get("/api/jobs/another-one")
    samples = _scrape(client, viewer)
    assert samples[route] == before + 2
    assert samples[("cloudx_http_request_duration_seconds_count", (("method", "GET"), ("route", "/metrics")))] >= 1
    # A method HTTP does not define makes no series of its own.
    client.open("/api/health", method="FOO1")
    names = {labels for (name, labels) in _scrape(client, viewer) if name == "cloudx_http_requests_total"}
    assert not any(("method", "FOO1") in labels for labels in names) and any(("method", "other") in labels for labels in names)


def test_metrics_need_a_token(client):
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer not-a-token"}).status_code == 401


@pytest.mark.integration
def test_metrics_of_a_real_scan_with_each_executor(live_app, target):
    client = live_app.test_client()
    job_id = client.post("/api/scans", json={"tool": "nmap", "scan_type": "tcp", "target": target.address, "ports": "22"}).get_json()[
        "job_id"
    ]
    assert wait_scan(client, job_id, 300)["status"] == "successful"
    samples = _scrape(client)
    assert samples[("cloudx_jobs", (("kind", "scan"), ("status", "successful")))] == 1
    assert samples[("cloudx_job_first_event_latency_seconds_count", (("kind", "scan"),))] == 1
    assert samples[("cloudx_job_duration_seconds_count", (("kind", "scan"),))] == 1
    # Added by the job's worker process, wherever it ran (a Celery worker too).
    assert samples[("cloudx_event_ingest_batch_seconds_count", ())] >= 1
    assert samples[("cloudx_events_stored_total", ())] >= 10


@pytest.mark.integration
def test_two_api_processes_report_every_request(tmp_path):
    shared = tmp_path / "metrics"
    service = Service(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared))
    try:
        service.start("--processes", "2")
        route = (("method", "GET"), ("route", "/api/ping"), ("status", "200"))
        metrics = f"http://127.0.0.1:{service.port}/metrics"
        before = _samples(requests.get(metrics, headers=dict(service.http.headers), timeout=5).text)[("cloudx_http_requests_total", route)]
        # A new connection each: the two processes share the pings.
        for _ in range(30):
            assert requests.get(f"{service.url}/ping", timeout=5).status_code == 200
        # Whichever process answers the scrape reports the requests both served.
        for _ in range(6):
            text = requests.get(metrics, headers=dict(service.http.headers), timeout=5).text
            assert _samples(text)[("cloudx_http_requests_total", route)] == before + 30  # the start-up check pinged too
        # Both processes served and counted (each writes files of its own, named by its pid).
        assert len({path.stem.rsplit("_", 1)[-1] for path in shared.glob("counter_*.db")}) == 2
    finally:
        service.stop()
