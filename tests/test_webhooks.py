"""Webhooks: the API, events queued from ended jobs, signed deliveries to a receiver on loopback, retries with backoff,
server-side request forgery refused before any connection, two senders on one database, and a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controller.app import create_app
from controller.services import webhook_sender, webhooks
from controller.services.webhook_sender import WebhookSender
from controller.store.database import Database
from controller.store.models import AuditEntry, Job, JobEvent, JobHostSummary, Webhook, WebhookDelivery, WebhookOutbox, utcnow
from controller.store.sealing import keygen
from tests.support.app import make_config, make_token, prepare_app
from tests.support.stored import store_scan

SECRET = "whsec-0123456789abcdefABCDEF"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
SETTINGS = {
    "WEBHOOK_ALLOW": "127.0.0.1",
    "WEBHOOK_BACKOFF_SECONDS": 0,
    "WEBHOOK_MAX_ATTEMPTS": 3,
    "WEBHOOK_CONNECT_TIMEOUT": 2,
    "WEBHOOK_READ_TIMEOUT": 2,
}


class Receiver:
    """An HTTP server on loopback that records every request and answers with the statuses it is given (then 200)."""

    def __init__(self, statuses: list[int] | None = None, location: str | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if location and 300 <= status < 400:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/cloudx?team=soc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooked(tmp_path):
    """The app with a key that seals secrets, loopback allowed, no backoff and three attempts."""
    app = prepare_app(create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen(), **SETTINGS)))
    yield app
    app.extensions["cloudx.db"].dispose()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _sender(app, **overrides) -> WebhookSender:
    config = app.extensions["cloudx.config"]
    if overrides:
        config = config.model_copy(update=overrides)
    return WebhookSender(config, app.extensions["cloudx.db"])


def _hook(client, url, events=("job.failed", "job.succeeded", "job.fixed", "scan.changed"), secret=SECRET):
    body = {"url": url, "events": list(events), **({"secret": secret} if secret else {})}
    response = client.post("/api/webhooks", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _deployment(app, client, hosts, status, failed=(), unreachable=()):
    """A deployment as the runner leaves it: final, with its recap and the events of its failures."""
    body = {"hosts": hosts, "os_type": "linux", "username": "root", "ssh_key": KEY}
    response = client.post("/api/deployments", json=body)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    with app.extensions["cloudx.db"].session() as session:
        job = session.get(Job, job_id)
        job.status, job.finished_at, job.status_reason = status, utcnow(), None if status == "successful" else "playbook failed"
        for host in hosts:
            session.add(JobHostSummary(job_id=job_id, host=host, ok=3, failed=int(host in failed), unreachable=int(host in unreachable)))
        for counter, host in enumerate([*failed, *unreachable], start=1):
            event = "runner_on_failed" if host in failed else "runner_on_unreachable"
            message = f"agent install failed on {host}" if host in failed else "Failed to connect to the host via ssh"
            session.add(JobEvent(job_id=job_id, counter=counter, event=event, host=host, event_data={"res": {"msg": message}}))
    return job_id


def _deliveries(client, webhook_id):
    response = client.get(f"/api/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["deliveries"]


def _verify(secret: str, headers: dict[str, str], body: bytes, window: int = 300) -> None:
    """What a receiver does: the timestamp within the replay window, then the signature in constant time."""
    timestamp = headers["X-Cloudx-Timestamp"]
    assert abs(time.time() - int(timestamp)) <= window
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["X-Cloudx-Signature"])


# --- the API --------------------------------------------------------------------------------------------------------


def test_a_webhook_is_created_listed_changed_and_deleted_and_its_secret_never_shown(hooked, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    client = hooked.test_client()
    made = _hook(client, receiver.url, events=["job.failed"])
    assert made["url"] == receiver.url and made["events"] == ["job.failed"] and made["signed"] and made["enabled"]
    assert made["created_by"] == "tests" and made["pending"] == 0 and made["last_outcome"] is None
    assert [w["id"] for w in client.get("/api/webhooks").get_json()["webhooks"]] == [made["id"]]
    assert client.get(f"/api/webhooks/{made['id']}").get_json()["id"] == made["id"]

    changed = client.patch(
        f"/api/webhooks/{made['id']}", json={"enabled": False, "events": ["job.failed", "job.fixed"], "secret": SECRET[::-1]}
    )
    assert changed.status_code == 200 and not changed.get_json()["enabled"] and changed.get_json()["events"] == ["job.failed", "job.fixed"]
    with hooked.extensions["cloudx.db"].session() as session:
        row = session.get(Webhook, made["id"])
        assert SECRET not in row.ciphertext and SECRET[::-1] not in row.ciphertext
        assert webhooks.signing_secret(hooked.extensions["cloudx.config"], row) == SECRET[::-1]
        audit = " ".join(f"{a.path} {a.detail}" for a in session.query(AuditEntry))
    everything = json.dumps([client.get("/api/webhooks").get_json(), client.get(f"/api/webhooks/{made['id']}").get_json()])
    for text in (everything, audit, caplog.text):
        assert SECRET not in text and SECRET[::-1] not in text

    assert client.delete(f"/api/webhooks/{made['id']}").get_json() == {"deleted": made["id"]}
    assert client.get(f"/api/webhooks/{made['id']}").status_code == 404
    assert client.get(f"/api/webhooks/{made['id']}/deliveries").status_code == 404


def test_only_admins_manage_or_read_webhooks(hooked, receiver):
    client = hooked.test_client()
    made = _hook(client, receiver.url)
    for role in ("viewer", "operator"):
        headers = {"Authorization": f"Bearer {make_token(hooked, role, f'{role}1')}"}
        assert client.get("/api/webhooks", headers=headers).status_code == 403
        assert client.get(f"/api/webhooks/{made['id']}/deliveries", headers=headers).status_code == 403
        assert client.post("/api/webhooks", headers=headers, json={"url": receiver.url, "events": ["job.failed"]}).status_code == 403


def test_a_secret_needs_the_credentials_key(app, client):
    response = client.post("/api/webhooks", json={"url": "https://hooks.example.org/x", "events": ["job.failed"], "secret": SECRET})
    assert response.status_code == 409 and response.get_json()["field"] == "secret"
    assert "CLOUDX_CREDENTIALS_KEY" in response.get_json()["error"] and SECRET not in response.get_json()["error"]
    unsigned = client.post("/api/webhooks", json={"url": "https://hooks.example.org/x", "events": ["job.failed"]})
    assert unsigned.status_code == 201 and not unsigned.get_json()["signed"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"url": "ftp://hooks.example.org/"}, "url", "http(s)://"),
        ({"url": "https://user:pw@hooks.example.org/"}, "url", "no user"),
        ({"url": "https://hooks.example.org/#x"}, "url", "no fragment"),
        ({"url": "https://[::1]/"}, "url", "http(s)://"),
        ({"url": "https://127.1/"}, "url", "http(s)://"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "url", "link-local"),
        ({"url": "https://169.254.169.254/"}, "url", "link-local"),
        ({"url": "http://127.0.0.2:8080/"}, "url", "loopback"),
        ({"url": "https://10.0.0.1/"}, "url", "private"),
        ({"url": "https://100.64.0.1/"}, "url", "non-public"),
        ({"url": "https://224.0.0.1/"}, "url", "multicast"),
        ({"url": "https://0.0.0.0/"}, "url", "unspecified"),
        ({"url": "https://localhost/"}, "url", "loopback"),
        ({"url": "https://api.localhost/"}, "url", "loopback"),
        ({"url": "http://hooks.example.org/"}, "url", "plain http only"),
        ({"events": []}, "events", "events"),
        ({"events": ["job.started"]}, "events", "events"),
        ({"events": ["job.failed", "job.failed"]}, "events", "twice"),
        ({"secret": "short"}, "secret", "16 to 256"),
        ({"secret": "has spaces in it, sixteen+"}, "secret", "16 to 256"),
        ({"extra": 1}, "extra", "unknown"),
    ],
)
def test_bad_webhooks_are_refused_and_nothing_is_stored(hooked, body, field, words):
    full = {"url": "https://hooks.example.org/cloudx", "events": ["job.failed"], "secret": SECRET, **body}
    response = hooked.test_client().post("/api/webhooks", json=full)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field and words in response.get_json()["error"], response.get_json()
    with hooked.extensions["cloudx.db"].session() as session:
        assert session.query(Webhook).count() == 0


# --- delivery -------------------------------------------------------------------------------------------------------


def test_a_failed_job_is_delivered_signed_with_its_failed_hosts_and_recap(hooked, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    client = hooked.test_client()
    made = _hook(client, receiver.url)
    job_id = _deployment(hooked, client, ["192.0.2.7", "192.0.2.8", "192.0.2.9"], "failed", failed=["192.0.2.8"], unreachable=["192.0.2.9"])
    assert _sender(hooked).tick() == 1

    [(path, headers, body)] = receiver.requests
    assert path == "/hooks/cloudx?team=soc" and headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert headers["Content-Type"] == "application/json" and headers["X-Cloudx-Event"] == "job.failed"
    _verify(SECRET, headers, body)
    with pytest.raises(AssertionError):
        _verify("another secret of sixteen", headers, body)
    payload = json.loads(body)
    assert payload["event"] == "job.failed"
    job = payload["job"]
    assert (job["id"], job["kind"], job["status"], job["reason"]) == (job_id, "deploy", "failed", "playbook failed")
    assert job["created_at"] and job["finished_at"]
    assert payload["hosts"]["failed"] == [{"host": "192.0.2.8", "message": "agent install failed on 192.0.2.8"}]
    assert payload["hosts"]["unreachable"] == [{"host": "192.0.2.9", "message": "Failed to connect to the host via ssh"}]
    assert [(r["host"], r["ok"], r["failed"], r["unreachable"]) for r in payload["recap"]] == [
        ("192.0.2.7", 3, 0, 0),
        ("192.0.2.8", 3, 1, 0),
        ("192.0.2.9", 3, 0, 1),
    ]

    [delivery] = _deliveries(client, made["id"])
    assert delivery["delivery"] == headers["X-Cloudx-Delivery"] and delivery["attempt"] == 1 and delivery["outcome"] == "delivered"
    assert delivery["status_code"] == 200 and delivery["latency_ms"] >= 0 and delivery["error"] is None
    assert delivery["body"].encode() == body and delivery["job_id"] == job_id
    view = client.get(f"/api/webhooks/{made['id']}").get_json()
    assert view["last_outcome"] == "delivered" and view["pending"] == 0
    # Once only: the next tick finds nothing new.
    assert _sender(hooked).tick() == 0 and len(receiver.requests) == 1
    assert SECRET not in caplog.text and SECRET not in json.dumps(_deliveries(client, made["id"]))


def test_a_receiver_that_fails_twice_gets_three_attempts_then_the_event(hooked, receiver):
    receiver.statuses = [500, 503]
    client = hooked.test_client()
    made = _hook(client, receiver.url, events=["job.succeeded"])
    _deployment(hooked, client, ["192.0.2.7"], "successful")
    sender = _sender(hooked)
    assert sender.tick() == 3  # no backoff in this configuration: each attempt due at once

    assert len(receiver.requests) == 3
    assert len({h["X-Cloudx-Delivery"] for _, h, _ in receiver.requests}) == 1  # one event, three attempts
    assert [h["X-Cloudx-Attempt"] for _, h, _ in receiver.requests] == ["1", "2", "3"]
    assert len({b for _, _, b in receiver.requests}) == 1
    for _, headers, body in receiver.requests:
        _verify(SECRET, headers, body)
    log = list(reversed(_deliveries(client, made["id"])))
    assert [(d["attempt"], d["outcome"], d["status_code"], d["error"]) for d in log] == [
        (1, "retry", 500, "HTTP 500"),
        (2, "retry", 503, "HTTP 503"),
        (3, "delivered", 200, None),
    ]
    with hooked.extensions["cloudx.db"].session() as session:
        assert [(o.status, o.attempts) for o in session.query(WebhookOutbox)] == [("delivered", 3)]


def test_backoff_grows_and_a_receiver_that_keeps_failing_is_given_up(hooked, receiver):
    config = hooked.extensions["cloudx.config"].model_copy(update={"WEBHOOK_BACKOFF_SECONDS": 10})
    assert [webhooks.backoff(config, n) for n in (1, 2, 3, 4, 9)] == [10, 30, 90, 270, 3600]
    receiver.statuses = [500] * 10
    client = hooked.test_client()
    made = _hook(client, receiver.url, events=["job.failed"])
    _deployment(hooked, client, ["192.0.2.7"], "failed", failed=["192.0.2.7"])
    slow = _sender(hooked, WEBHOOK_BACKOFF_SECONDS=10)
    assert slow.tick() == 1 and slow.tick() == 0  # the second attempt is due in 10 s
    with hooked.extensions["cloudx.db"].session() as session:
        row = session.query(WebhookOutbox).one()
        assert row.status == "pending" and 8 < (webhooks.aware(row.next_attempt_at) - utcnow()).total_seconds() <= 10
        row.next_attempt_at = utcnow()
    assert _sender(hooked).tick() == 2  # attempts 2 and 3 (no backoff), then given up
    assert [d["outcome"] for d in _deliveries(client, made["id"])] == ["failed", "retry", "retry"]
    assert client.get(f"/api/webhooks/{made['id']}").get_json()["failed"] == 1 and _sender(hooked).tick() == 0


def test_events_succeeded_fixed_and_scan_changed_and_none_for_canceled(hooked, receiver):
    client = hooked.test_client()
    _hook(client, receiver.url)
    _deployment(hooked, client, ["192.0.2.7"], "failed", failed=["192.0.2.7"])
    fixed = _deployment(hooked, client, ["192.0.2.7"], "successful")
    canceled = _deployment(hooked, client, ["192.0.2.20"], "canceled")
    port = {"protocol": "tcp", "port": 22, "state": "open", "reason": "syn-ack", "service": "ssh", "product": None, "version": None}
    host = {"address": "192.0.2.30", "status": "up", "reason": "syn-ack", "hostnames": [], "mac": None, "ports": [port]}
    scans = [
        store_scan(hooked, client, [host], "192.0.2.30", ports="22"),
        store_scan(hooked, client, [{**host, "ports": [{**port, "state": "closed"}]}], "192.0.2.30", ports="22"),
    ]
    with hooked.extensions["cloudx.db"].session() as session:
        for job_id in scans:  # ended as the runner records it
            session.get(Job, job_id).finished_at = utcnow()
    scan = scans[1]
    _sender(hooked).tick()

    got = {(json.loads(b)["event"], json.loads(b)["job"]["id"]): json.loads(b) for _, _, b in receiver.requests}
    assert canceled not in {job for _, job in got}
    assert ("job.fixed", fixed) in got and ("job.succeeded", fixed) in got
    assert got[("job.fixed", fixed)]["previous"]["status"] == "failed" and got[("job.fixed", fixed)]["previous"]["via"] == "request"
    changed = got[("scan.changed", scan)]
    assert changed["scan"]["target"] == "192.0.2.30" and changed["diff"]["summary"]["ports_closed"] == 1
    assert changed["diff"]["hosts"] == [{"address": "192.0.2.30", "change": "changed"}]
    assert sorted(e for e, _ in got) == ["job.failed", "job.fixed", "job.succeeded", "job.succeeded", "job.succeeded", "scan.changed"]


# --- no server-side request forgery ---------------------------------------------------------------------------------


@pytest.fixture
def no_connection(monkeypatch):
    """Any connection (or DNS lookup but the fake one) fails the test: refusals must come before them."""

    def connect(*args, **kwargs):
        raise AssertionError(f"a connection was made: {args}")

    monkeypatch.setattr(webhook_sender, "_connection", connect)
    names = {"hooks.example.test": ["127.0.0.1"], "localhost": ["127.0.0.1", "::1"], "dual.example.test": ["93.184.216.34", "10.1.2.3"]}
    monkeypatch.setattr(webhook_sender, "resolve", lambda host, port: [webhooks.literal(a) for a in names[host]])


def _stored_hook(app, url) -> str:
    """A webhook row as a wider CLOUDX_WEBHOOK_ALLOW (or another DNS answer) once let it be created."""
    with app.extensions["cloudx.db"].session() as session:
        webhook = Webhook(url=url, events=["job.failed"], enabled=True, created_by="tests", created_at=utcnow() - timedelta(seconds=5))
        session.add(webhook)
        session.flush()
        return webhook.id


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://169.254.169.254/", "link-local"),
        ("http://127.0.0.1:{port}/", "loopback"),
        ("https://10.0.0.1/", "private"),
        ("https://hooks.example.test/", "loopback address (127.0.0.1)"),
        ("https://localhost/", "loopback"),
        ("https://dual.example.test/", "private address (10.1.2.3)"),
    ],
)
def test_forbidden_addresses_are_refused_at_delivery_before_any_connection(hooked, receiver, no_connection, url, words):
    client = hooked.test_client()
    webhook_id = _stored_hook(hooked, url.format(port=receiver.port))
    _deployment(hooked, client, ["192.0.2.7"], "failed", failed=["192.0.2.7"])
    assert _sender(hooked, WEBHOOK_ALLOW="").tick() == 3
    log = _deliveries(client, webhook_id)
    assert [d["outcome"] for d in log] == ["failed", "refused", "refused"] and all(d["status_code"] is None for d in log)
    assert all(words in d["error"] for d in log), log
    assert receiver.requests == []


def test_a_listed_name_may_resolve_to_loopback_and_is_connected_to_at_the_checked_address(hooked, receiver, no_connection, monkeypatch):
    monkeypatch.undo()  # connections allowed again; the resolver stays fake
    monkeypatch.setattr(webhook_sender, "resolve", lambda host, port: [webhooks.literal("127.0.0.1")])
    client = hooked.test_client()
    webhook_id = _stored_hook(hooked, f"http://hooks.example.test:{receiver.port}/in")
    _deployment(hooked, client, ["192.0.2.7"], "failed", failed=["192.0.2.7"])
    assert _sender(hooked, WEBHOOK_ALLOW="hooks.example.test").tick() == 1
    [(path, headers, _)] = receiver.requests
    assert path == "/in" and headers["Host"] == f"hooks.example.test:{receiver.port}"
    assert "X-Cloudx-Signature" not in headers  # no secret: not signed
    assert [d["outcome"] for d in _deliveries(client, webhook_id)] == ["delivered"]


def test_a_redirect_is_not_followed(hooked):
    server = Receiver(statuses=[302] * 3, location="http://169.254.169.254/latest/meta-data/")
    try:
        client = hooked.test_client()
        made = _hook(client, server.url, events=["job.failed"])
        _deployment(hooked, client, ["192.0.2.7"], "failed", failed=["192.0.2.7"])
        _sender(hooked).tick()
        assert len(server.requests) == 3  # only the receiver's own URL, never the redirect's
        log = _deliveries(client, made["id"])
        assert {(d["status_code"], d["outcome"] != "delivered") for d in log} == {(302, True)}
        assert "not followed" in log[0]["error"]
    finally:
        server.close()


def test_connect_and_read_timeouts_bound_a_delivery(hooked):
    server = Receiver()
    hang = threading.Event()

    def slow_post(self):  # answers nothing until the test ends
        hang.wait(10)

    server.server.RequestHandlerClass.do_POST = slow_post
    try:
        client = hooked.test_client()
        made = _hook(client, server.url, events=["job.failed"])
        _deployment(hooked, client, ["192.0.2.7"], "failed", failed=["192.0.2.7"])
        _sender(hooked, WEBHOOK_MAX_ATTEMPTS=1, WEBHOOK_READ_TIMEOUT=0.5).tick()
        [delivery] = _deliveries(client, made["id"])
        assert delivery["outcome"] == "failed" and "no answer within 0.5 s" in delivery["error"]
    finally:
        hang.set()
        server.close()


def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_before_its_lease_ends(hooked):
    """The read timeout bounds each wait for a byte: a whole attempt is bounded too (webhook_sender.attempt_seconds),
    and the row's lease is longer, so no other sender takes the row while this one still sends it."""
    import socket as sockets

    listener = sockets.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 1000:
                if done.wait(0.2):
                    return
                try:
                    connection.send(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        client = hooked.test_client()
        made = _hook(client, f"http://127.0.0.1:{listener.getsockname()[1]}/hook", events=["job.failed"])
        _deployment(hooked, client, ["192.0.2.7"], "failed", failed=["192.0.2.7"])
        sender = _sender(hooked, WEBHOOK_MAX_ATTEMPTS=1, WEBHOOK_READ_TIMEOUT=0.5, WEBHOOK_CONNECT_TIMEOUT=0.5)
        sender.tick()
        [delivery] = _deliveries(client, made["id"])
        assert delivery["outcome"] == "failed" and "no complete answer within 2 s" in delivery["error"], delivery
        assert sender.lease > webhook_sender.attempt_seconds(sender.config)
    finally:
        done.set()
        listener.close()


# --- senders in several processes, and restarts ---------------------------------------------------------------------


def test_two_senders_on_one_database_deliver_each_event_once(hooked, receiver):
    client = hooked.test_client()
    _hook(client, receiver.url, events=["job.failed"])
    jobs = [_deployment(hooked, client, [f"192.0.2.{i}"], "failed", failed=[f"192.0.2.{i}"]) for i in range(1, 21)]
    config = hooked.extensions["cloudx.config"]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        db = Database(config.DATABASE_URL, config.DB_BUSY_TIMEOUT)
        try:
            barrier.wait()
            sender = WebhookSender(config, db)
            while sender.tick():
                pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    deliveries = [h["X-Cloudx-Delivery"] for _, h, _ in receiver.requests]
    assert len(deliveries) == 20 and len(set(deliveries)) == 20
    assert sorted(json.loads(b)["job"]["id"] for _, _, b in receiver.requests) == sorted(jobs)
    with hooked.extensions["cloudx.db"].session() as session:
        assert session.query(WebhookOutbox).filter_by(status="delivered").count() == 20
        assert session.query(WebhookDelivery).count() == 20


def test_queued_events_survive_a_restart_and_a_sender_that_died_holding_one(tmp_path, receiver):
    settings = make_config(tmp_path, CREDENTIALS_KEY=keygen(), **SETTINGS)
    first = prepare_app(create_app(settings))
    client = first.test_client()
    made = _hook(client, receiver.url, events=["job.failed"])
    for i in (1, 2):
        _deployment(first, client, [f"192.0.2.{i}"], "failed", failed=[f"192.0.2.{i}"])
    assert webhooks.queue_ended_jobs(first.extensions["cloudx.db"]) == 2
    # One is claimed by a sender that dies before it sends it; the process stops.
    assert webhooks.claim(first.extensions["cloudx.db"], "dead:1", lease=60) is not None
    first.extensions["cloudx.db"].dispose()

    again = create_app(settings)  # a new process on the same database
    try:
        sender = WebhookSender(settings, again.extensions["cloudx.db"])
        assert sender.tick() == 1 and len(receiver.requests) == 1  # the pending one; the claimed one waits for its lease
        with again.extensions["cloudx.db"].session() as session:
            session.query(WebhookOutbox).filter_by(status="sending").update({"lease_until": utcnow() - timedelta(seconds=1)})
        assert sender.tick() == 1
        assert len({h["X-Cloudx-Delivery"] for _, h, _ in receiver.requests}) == 2
        with again.extensions["cloudx.db"].session() as session:
            assert {(o.status, o.attempts) for o in session.query(WebhookOutbox)} == {("delivered", 1), ("delivered", 2)}
            assert session.query(WebhookDelivery).filter_by(webhook_id=made["id"], outcome="delivered").count() == 2
    finally:
        again.extensions["cloudx.db"].dispose()


def test_a_paused_webhook_holds_its_queued_events_and_gets_nothing_new(hooked, receiver):
    client = hooked.test_client()
    made = _hook(client, receiver.url, events=["job.failed"])
    _deployment(hooked, client, ["192.0.2.1"], "failed", failed=["192.0.2.1"])
    assert webhooks.queue_ended_jobs(hooked.extensions["cloudx.db"]) == 1
    client.patch(f"/api/webhooks/{made['id']}", json={"enabled": False})
    _deployment(hooked, client, ["192.0.2.2"], "failed", failed=["192.0.2.2"])
    assert _sender(hooked).tick() == 0 and receiver.requests == []
    assert client.get(f"/api/webhooks/{made['id']}").get_json()["pending"] == 1
    client.patch(f"/api/webhooks/{made['id']}", json={"enabled": True})
    assert _sender(hooked).tick() == 1 and len(receiver.requests) == 1


@pytest.mark.integration
def test_two_senders_deliver_each_event_once_on_postgresql(cluster, tmp_path, receiver):
    app = prepare_app(create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen(), **cluster.settings(), **SETTINGS)))
    try:
        test_two_senders_on_one_database_deliver_each_event_once(app, receiver)
    finally:
        app.extensions["cloudx.db"].dispose()


def test_the_webhook_commands(runner, tmp_path, monkeypatch):
    from controller.cli import cli
    from controller.store.sealing import keygen

    monkeypatch.setenv("CLOUDX_CREDENTIALS_KEY", keygen())
    monkeypatch.setenv("CLOUDX_WEBHOOK_ALLOW", "127.0.0.1")
    secret = tmp_path / "secret"
    secret.write_text("a-signing-secret-of-some-length\n")
    added = runner.invoke(cli, ["webhook", "add", "http://127.0.0.1:9/hook", "--event", "job.failed", "--secret-file", str(secret)])
    assert added.exit_code == 0, added.output
    webhook_id = added.output.split()[1].rstrip(":")
    listed = runner.invoke(cli, ["webhook", "list", "--json"])
    assert listed.exit_code == 0 and '"signed": true' in listed.output and "a-signing-secret" not in listed.output
    assert "paused" in runner.invoke(cli, ["webhook", "pause", webhook_id]).output
    assert runner.invoke(cli, ["webhook", "deliveries", webhook_id]).exit_code == 0
    assert runner.invoke(cli, ["webhook", "delete", webhook_id]).exit_code == 0
    refused = runner.invoke(cli, ["webhook", "add", "http://10.1.2.3/hook", "--event", "job.failed"])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    gone = runner.invoke(cli, ["webhook", "deliveries", webhook_id])
    assert gone.exit_code == 1 and "no webhook" in gone.output
