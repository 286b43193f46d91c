"""Slow clients: connections that never finish their headers must not stop `cloudx serve` answering others."""

from __future__ import annotations

import contextlib
import resource
import socket
import time

import pytest
import requests

from tests.support.service import Service

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 1000
# A request line and one header, without the blank line that ends the headers: the request never completes.
PARTIAL_REQUEST = b"GET /api/ping HTTP/1.1\r\nHost: x\r\n"


def test_a_thousand_slow_clients_do_not_stop_the_api(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SLOW_CLIENTS + 256  # the slow sockets, and room for pytest, requests and the service's pipes
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"RLIMIT_NOFILE hard limit {hard} is below {needed}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    service = Service(tmp_path)
    slow: list[socket.socket] = []
    try:
        service.start()
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=5)
            slow.append(sock)
            sock.sendall(PARTIAL_REQUEST)
        started = time.monotonic()
        try:
            response = requests.get(f"{service.url}/health", timeout=5)
        except requests.RequestException as exc:
            raise AssertionError(
                f"/api/health did not answer with {SLOW_CLIENTS} slow connections open (after {time.monotonic() - started:.3f} s): {exc}"
            ) from None
        latency = time.monotonic() - started
        assert response.status_code == 200, f"/api/health answered {response.status_code} in {latency:.3f} s"
        assert response.json()["status"] == "ok", f"/api/health answered {response.text!r} in {latency:.3f} s"
        # The slow connections are still there, not refused: the server kept them and answered anyway.
        assert sum(_still_open(sock) for sock in slow) == SLOW_CLIENTS, f"/api/health answered in {latency:.3f} s"
        print(f"/api/health answered in {latency:.3f} s with {SLOW_CLIENTS} slow connections open")
    finally:
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.close()
        service.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _still_open(sock: socket.socket) -> bool:
    """True when the peer has neither closed nor reset the connection (nothing is waiting to be read)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
