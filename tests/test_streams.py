"""Live streams (SSE): a job's events as stored, resumed after a reconnect with nothing lost or repeated, every job's
changes, real jobs with both executors, and 50 open streams that leave the API answering."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import requests

from controller.store.models import Job, JobEvent, utcnow
from tests.support.app import make_config
from tests.support.service import Service
from tests.support.waiting import wait_for


@pytest.fixture
def config(tmp_path):
    """The app's settings with streams that look at the database often (the tests wait less)."""
    return make_config(tmp_path, STREAM_POLL_SECONDS=0.05)


def parse(lines: Iterator[str]) -> Iterator[dict]:
    """Server-Sent Events as a browser's EventSource reads them: id, event (default message), data; comments skipped."""
    event: dict = {}
    for line in lines:
        if line == "":
            if "data" in event:
                yield {"id": event.get("id"), "event": event.get("event", "message"), "data": json.loads(event["data"])}
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value


def _stored(app, job_id, counters, status=None, final=None):
    with app.extensions["cloudx.db"].session() as session:
        for c in counters:
            session.add(JobEvent(job_id=job_id, counter=c, event="runner_on_ok", host="h1", stdout=f"line {c}\n<b>", event_data={"n": c}))
        if status:
            job = session.get(Job, job_id)
            job.status, job.final_counter, job.progress, job.finished_at = status, final, 100, utcnow()


def _queued(client) -> str:
    return client.post("/api/scans", json={"tool": "nmap", "scan_type": "tcp", "target": "192.0.2.1", "ports": "22"}).get_json()["job_id"]


def test_a_finished_job_is_replayed_from_any_counter_and_ends(app, client):
    job_id = _queued(client)
    _stored(app, job_id, range(1, 6), status="failed", final=5)
    whole = list(parse(client.get(f"/api/jobs/{job_id}/stream").get_data(as_text=True).split("\n")))
    assert [e["id"] for e in whole if e["event"] == "ansible"] == ["1", "2", "3", "4", "5"]
    assert whole[0]["data"]["stdout"] == "line 1\n<b>" and whole[0]["data"]["event_data"] == {"n": 1}
    assert whole[-1]["event"] == "end" and whole[-1]["data"]["status"] == "failed" and whole[-1]["data"]["final_counter"] == 5
    assert any(e["event"] == "progress" and e["data"]["progress"] == 100 for e in whole)
    # Resumed: Last-Event-ID (a browser's reconnect) or ?after=; the larger wins.
    resumed = list(parse(client.get(f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": "3"}).get_data(as_text=True).split("\n")))
    assert [e["id"] for e in resumed if e["event"] == "ansible"] == ["4", "5"]
    after = list(parse(client.get(f"/api/jobs/{job_id}/stream?after=4").get_data(as_text=True).split("\n")))
    assert [e["id"] for e in after if e["event"] == "ansible"] == ["5"]


def test_bad_streams_are_refused(app, client):
    job_id = _queued(client)
    assert client.get("/api/jobs/no-such-job/stream").status_code == 404
    bad = client.get(f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": "x1"})
    assert bad.status_code == 400 and bad.get_json()["field"] == "Last-Event-ID"
    assert client.get(f"/api/jobs/{job_id}/stream?after=-1").status_code == 400
    superscript = client.get(f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": "\u00b2"})  # a digit to str.isdigit
    assert superscript.status_code == 400 and superscript.get_json()["field"] == "Last-Event-ID"
    assert client.get(f"/api/jobs/{job_id}/stream", headers={"Authorization": ""}).status_code == 401


def test_a_live_job_is_followed_as_its_events_are_stored(app, client):
    """The stream waits for news (the hub's look at the database) and sends each event once, in order."""
    job_id = _queued(client)
    response = client.get(f"/api/jobs/{job_id}/stream", buffered=False)
    lines = (line for chunk in response.response for line in chunk.decode().split("\n"))
    received: list[dict] = []

    def follow() -> None:
        received.extend(parse(lines))

    reader = threading.Thread(target=follow)
    reader.start()
    _stored(app, job_id, range(1, 4))
    assert wait_for(lambda: len([e for e in received if e["event"] == "ansible"]) == 3, 10)
    _stored(app, job_id, range(4, 8), status="successful", final=7)
    reader.join(10)
    assert not reader.is_alive()
    response.close()
    assert [int(e["id"]) for e in received if e["event"] == "ansible"] == list(range(1, 8))
    assert received[-1]["event"] == "end" and received[-1]["data"]["status"] == "successful"


def _follow(url: str, headers: dict, into: list, stop_after: int | None = None, **params) -> None:
    with requests.get(url, headers=headers, stream=True, timeout=60, params=params) as response:
        assert response.status_code == 200, response.text
        for event in parse(line.decode() for line in response.iter_lines()):
            into.append(event)
            if event["event"] == "end" or (stop_after is not None and len([e for e in into if e["event"] == "ansible"]) >= stop_after):
                return


@pytest.mark.integration
def test_a_real_job_is_followed_through_a_reconnect_with_nothing_lost_or_repeated(tmp_path):
    service = Service(tmp_path, CLOUDX_STREAM_POLL_SECONDS="0.1")
    try:
        service.start()
        headers = dict(service.http.headers)
        job_id = service.http.post(
            f"{service.url}/scans", json={"tool": "nmap", "scan_type": "tcp", "target": "127.0.0.1", "ports": str(service.port)}, timeout=10
        ).json()["job_id"]
        first: list[dict] = []
        _follow(f"{service.url}/jobs/{job_id}/stream", headers, first, stop_after=5)  # then the client goes away
        last_id = [e["id"] for e in first if e["id"]][-1]
        rest: list[dict] = []
        _follow(f"{service.url}/jobs/{job_id}/stream", {**headers, "Last-Event-ID": last_id}, rest)
        counters = [int(e["id"]) for e in first + rest if e["event"] == "ansible"]
        assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "successful", rest[-1]
        assert counters == list(range(1, rest[-1]["data"]["final_counter"] + 1)), counters  # every event once, in order
        stored = service.http.get(f"{service.url}/jobs/{job_id}/events?limit=500", timeout=10).json()["events"]
        assert [e["stdout"] for e in stored] == [e["data"]["stdout"] for e in first + rest if e["event"] == "ansible"]
        assert any(e["event"] == "progress" for e in first + rest)
    finally:
        service.stop()


@pytest.mark.integration
def test_a_stream_follows_a_job_run_by_each_executor(live_app, target):
    client = live_app.test_client()
    job_id = client.post("/api/scans", json={"tool": "nmap", "scan_type": "tcp", "target": target.address, "ports": "22"}).get_json()[
        "job_id"
    ]
    response = client.get(f"/api/jobs/{job_id}/stream", buffered=False)
    text = b"".join(response.response).decode()  # ends with the job
    events = list(parse(text.split("\n")))
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "successful"
    stored = client.get(f"/api/jobs/{job_id}/events?limit=500").get_json()["events"]
    assert [int(e["id"]) for e in events if e["event"] == "ansible"] == [e["counter"] for e in stored]


@pytest.mark.integration
def test_fifty_open_streams_leave_the_api_answering(tmp_path):
    service = Service(tmp_path, CLOUDX_STREAM_MAX="50", CLOUDX_STREAM_POLL_SECONDS="0.1", CLOUDX_STREAM_HEARTBEAT="1")
    opened: list[requests.Response] = []
    readers = []
    try:
        service.start()
        headers = dict(service.http.headers)
        for _ in range(50):
            response = requests.get(f"{service.url}/stream", headers=headers, stream=True, timeout=30)
            assert response.status_code == 200
            lines = response.iter_lines()  # one reader per response: a second one would lose what the first buffered
            assert next(lines) == b"retry: 2000"  # the stream is open and being served
            opened.append(response)
            readers.append(parse(line.decode() for line in lines))
        # Every stream slot is taken: the 51st is refused, and the API still answers on its own threads.
        refused = requests.get(f"{service.url}/stream", headers=headers, timeout=10)
        assert refused.status_code == 429 and refused.headers["Retry-After"] and "CLOUDX_STREAM_MAX" in refused.json()["error"]
        for _ in range(20):
            assert requests.get(f"{service.url}/health", timeout=5).json()["status"] == "ok"
        # A job created now reaches every one of the 50 streams.
        job_id = service.http.post(
            f"{service.url}/scans", json={"tool": "nmap", "scan_type": "tcp", "target": "127.0.0.1", "ports": "1"}
        ).json()["job_id"]
        for response, events in zip(opened, readers, strict=True):
            first = next(e for e in events if e["data"].get("job_id") == job_id)
            assert first["event"] == "job" and first["data"]["kind"] == "scan"
            response.close()
        # The slots come back when the clients go (noticed within a heartbeat): a new stream opens.
        assert wait_for(lambda: _opens(f"{service.url}/stream", headers), 20)
    finally:
        for response in opened:
            response.close()
        service.stop()


def _opens(url: str, headers: dict) -> bool:
    with requests.get(url, headers=headers, stream=True, timeout=10) as response:
        return response.status_code == 200


def test_a_followed_job_that_ends_with_an_old_updated_at_still_ends_its_stream(app, client):
    """A worker whose clock is behind, or whose update waited for the database's lock, records an updated_at older than
    the hub's last look: a followed job's state is read by its id, so its end is seen all the same."""
    from datetime import timedelta

    job_id = _queued(client)
    response = client.get(f"/api/jobs/{job_id}/stream", buffered=False)
    lines = (line for chunk in response.response for line in chunk.decode().split("\n"))
    received: list[dict] = []
    reader = threading.Thread(target=lambda: received.extend(parse(lines)))
    reader.start()
    assert wait_for(lambda: any(e["event"] == "progress" for e in received), 10)
    with app.extensions["cloudx.db"].session() as session:
        session.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(status="failed", final_counter=None, finished_at=utcnow(), updated_at=utcnow() - timedelta(minutes=10))
        )
    reader.join(10)
    assert not reader.is_alive(), received
    response.close()
    assert received[-1]["event"] == "end" and received[-1]["data"]["status"] == "failed"
