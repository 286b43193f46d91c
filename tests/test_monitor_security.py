"""The system monitor and the sync status: no second DNS answer, no long wait on a silent host, no paths told."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import ping3
import pytest

from controller.services import monitor, policy

NAME = "rebind.example.test"


@pytest.fixture
def fake_ping(monkeypatch):
    """Replaces ping3.ping (no packet is sent); tests set .answer to what each ping does. Records each call."""

    class FakePing:
        def __init__(self) -> None:
            self.calls: list[tuple[str, float]] = []
            self.answer = lambda timeout: 0.25

        def __call__(self, dest_addr, timeout=4, **kwargs):
            self.calls.append((dest_addr, timeout))
            return self.answer(timeout)

    fake = FakePing()
    monkeypatch.setattr(ping3, "ping", fake)
    monkeypatch.setattr(ping3, "EXCEPTIONS", ping3.EXCEPTIONS)  # ping_latency sets it: put it back after
    return fake


def test_the_monitor_pings_the_address_it_checked_not_the_name_again(client, monkeypatch, fake_ping):
    # The name resolves inside the scope when checked, then (a rebinding DNS server) outside it.
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host != NAME:
            return real_getaddrinfo(host, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "203.0.113.7"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 0))]

    monkeypatch.setattr(policy.socket, "getaddrinfo", getaddrinfo)
    response = client.get(f"/api/system-monitor?target={NAME}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert {address for address, _ in fake_ping.calls} == {"127.0.0.1"}, fake_ping.calls
    assert len(fake_ping.calls) == monitor.PING_COUNT
    assert body["target"] == NAME and body["address"] == "127.0.0.1"
    assert body["status"] == "reachable" and body["loss_percent"] == 0.0
    assert lookups == [NAME]  # resolved once, by the scope check


def test_an_address_target_is_pinged_as_given(client, fake_ping):
    body = client.get("/api/system-monitor?target=127.0.0.2").get_json()
    assert body["target"] == body["address"] == "127.0.0.2"
    assert {address for address, _ in fake_ping.calls} == {"127.0.0.2"}


def test_ping_latency_takes_only_an_address(fake_ping):
    with pytest.raises(ValueError):
        monitor.ping_latency(NAME)
    assert fake_ping.calls == []


def _timeout_raised(timeout: float) -> None:
    time.sleep(timeout)
    raise ping3.errors.Timeout(timeout=timeout)


def _timeout_returned(timeout: float) -> None:
    time.sleep(timeout)  # ping3 with EXCEPTIONS false: None after the timeout
    return None


@pytest.mark.parametrize("silence", [_timeout_raised, _timeout_returned], ids=["raises", "returns-none"])
def test_a_silent_host_holds_the_request_under_a_second(client, fake_ping, silence):
    fake_ping.answer = silence
    response = client.get("/api/system-monitor?target=127.0.0.3")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "unreachable" and body["loss_percent"] == 100.0
    assert all(p["value"] is None and p["error"] == "Timeout" for p in body["latency_ms"])
    timeouts = [timeout for _, timeout in fake_ping.calls]
    # The budget, not the wall clock: the time the pings were allowed to wait, in all.
    assert 0 < sum(timeouts) < 1.0, timeouts


def test_a_ping_that_cannot_wait_for_its_reply_is_lost_not_a_server_error(client, fake_ping):
    # ping3 waits with select(), which refuses descriptors above 1024 (possible with many connections open).
    def out_of_range(timeout: float) -> None:
        raise ValueError("filedescriptor out of range in select()")

    fake_ping.answer = out_of_range
    response = client.get("/api/system-monitor?target=127.0.0.4")
    assert response.status_code == 200
    assert response.get_json()["status"] == "unreachable"


def _missing(path: Path, monkeypatch) -> None:
    pass


def _directory(path: Path, monkeypatch) -> None:
    path.mkdir()


def _unreadable(path: Path, monkeypatch) -> None:
    # The tests may run as root, which chmod cannot keep out: the read fails as it would for another user.
    path.write_text(json.dumps({"timestamp": "2026-01-01T00:00:00Z"}))
    read_bytes = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)


def _bad_json(path: Path, monkeypatch) -> None:
    path.write_text("{not json")


def _not_an_object(path: Path, monkeypatch) -> None:
    path.write_text("[]")


def _bad_timestamp(path: Path, monkeypatch) -> None:
    path.write_text(json.dumps({"timestamp": f"yesterday, see {path}"}))  # the value is not echoed back either


@pytest.mark.parametrize(
    ("make", "status", "message"),
    [
        (_missing, 200, "no heartbeat file"),
        (_directory, 500, "the heartbeat file cannot be read (is a directory)"),
        (_unreadable, 500, "the heartbeat file cannot be read (permission denied)"),
        (_bad_json, 500, "the heartbeat file is not valid JSON"),
        (_not_an_object, 500, "the heartbeat file must hold a JSON object"),
        (_bad_timestamp, 500, "timestamp is not ISO-8601"),
    ],
    ids=["missing", "directory", "unreadable", "bad-json", "not-an-object", "bad-timestamp"],
)
def test_sync_status_tells_what_is_wrong_but_not_where(config, client, tmp_path, monkeypatch, caplog, make, status, message):
    path = Path(config.SYNC_HEARTBEAT_FILE)
    assert path.parent == tmp_path
    make(path, monkeypatch)
    with caplog.at_level(logging.INFO, logger="cloudx.heartbeat"):
        response = client.get("/api/sync-status")
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    body = response.get_json()
    if status == 200:
        assert body == {"status": "inactive", "reason": message}
    else:
        assert body["status"] == "error" and body["error"] == message, body
    for secret in (str(tmp_path), tmp_path.name, path.name):
        assert secret not in text, f"{secret!r} in {text}"
    assert "line 1" not in text and "char " not in text  # nothing from the JSON parser's message
    # The operator still learns which file, from the server's log.
    assert any(str(path) in record.getMessage() for record in caplog.records if record.name == "cloudx.heartbeat")


def test_sync_status_inactive_keeps_its_shape(config, client):
    path = Path(config.SYNC_HEARTBEAT_FILE)
    path.write_text(json.dumps({"timestamp": "2020-01-01T00:00:00Z"}))
    body = client.get("/api/sync-status").get_json()
    assert set(body) == {"status", "reason", "last_heartbeat", "age_seconds", "max_age_seconds"}
    assert body["status"] == "inactive" and body["last_heartbeat"] == "2020-01-01T00:00:00Z"
