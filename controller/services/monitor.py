"""System monitor: this machine's CPU, memory, disk and network; other hosts' ping latency."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from typing import Any

import psutil

from controller.schemas.system import METRICS

HISTORY = 60
# A point is a spike when it exceeds the mean of the previous points by this factor (and a floor).
SPIKE_FACTOR = 1.5
SPIKE_FLOOR = dict(zip(METRICS, (20.0, 20.0, 20.0, 64 * 1024, 64 * 1024), strict=True))
PING_COUNT = 3
PING_BUDGET = 0.9  # seconds one ping_latency call may wait in all: a silent host holds a request thread under a second


class _Unavailable(Exception):
    """This process may not send ICMP."""


def _ping_once(ping3: Any, address: str, version: int, timeout: float, stamp: str) -> dict[str, Any]:
    """One echo round trip as a point (its error when it was lost)."""
    lost = {"value": None, "timestamp": stamp, "spike": False}
    try:
        delay = ping3.ping(address, timeout=timeout, unit="ms", version=version)
    except PermissionError:
        raise _Unavailable("ICMP needs raw sockets (root or CAP_NET_RAW) or net.ipv4.ping_group_range; latency not measured") from None
    except ping3.errors.PingError as exc:
        return {**lost, "error": type(exc).__name__}
    except OSError as exc:
        if exc.errno in (1, 13):
            raise _Unavailable(f"ICMP not permitted: {exc.strerror}") from None
        return {**lost, "error": exc.strerror}
    except ValueError as exc:
        # ping3 waits with select(), which cannot watch a descriptor above FD_SETSIZE (1024): with that many
        # connections open, this ping goes unmeasured rather than the request failing.
        return {**lost, "error": str(exc)}
    if delay is None or delay is False:  # ping3 without exceptions: None is a timeout, False an error
        return {**lost, "error": "Timeout" if delay is None else "PingError"}
    return {"value": round(float(delay), 3), "timestamp": stamp, "spike": False, "error": None}


class LocalMonitor:
    """Samples kept across requests, so each response carries a short history."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.series: dict[str, deque[dict[str, Any]]] = {name: deque(maxlen=HISTORY) for name in SPIKE_FLOOR}
        self._last_net: tuple[float, Any] | None = None

    def sample(self) -> dict[str, Any]:
        now = time.time()
        net = psutil.net_io_counters()
        with self._lock:
            if self._last_net is None:
                self._last_net = (now, net)
                time.sleep(0.2)
                now, net = time.time(), psutil.net_io_counters()
            then, previous = self._last_net
            elapsed = max(now - then, 1e-3)
            values = {
                "cpu_percent": psutil.cpu_percent(interval=None),
                "memory_percent": psutil.virtual_memory().percent,
                "disk_percent": psutil.disk_usage("/").percent,
                "net_sent_bytes_per_s": max(0.0, (net.bytes_sent - previous.bytes_sent) / elapsed),
                "net_recv_bytes_per_s": max(0.0, (net.bytes_recv - previous.bytes_recv) / elapsed),
            }
            self._last_net = (now, net)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            for name, value in values.items():
                points = self.series[name]
                mean = sum(p["value"] for p in points) / len(points) if points else None
                spike = mean is not None and value > max(mean * SPIKE_FACTOR, mean + SPIKE_FLOOR[name])
                points.append({"value": round(value, 2), "timestamp": stamp, "spike": spike})
            return {"target": "local", "kind": "local", "metrics": {name: list(points) for name, points in self.series.items()}}


def ping_latency(address: str, target: str | None = None, count: int = PING_COUNT, budget: float = PING_BUDGET) -> dict[str, Any]:
    """ICMP echo round trips to address with ping3; says so when this process may not send ICMP.

    address must be an IP address (ValueError otherwise): the caller passes the address it checked against
    the scope, so nothing here resolves a name again (a second DNS answer could point elsewhere). The result
    names target (the name asked; the address when not given) and the address pinged.

    The whole call waits at most budget seconds (0.9 s), so a silent host does not hold a request thread for
    long: each ping waits for the time left divided by the pings left, 0.3 s each when none answers, more for
    the later ones when the earlier ones answer quickly. A ping that gets no answer in its share is lost.
    """
    import ping3

    version = ipaddress.ip_address(address).version
    ping3.EXCEPTIONS = True
    shown = {"target": target or address, "address": address, "kind": "ping"}
    points: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget
    for sent in range(count):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        timeout = (deadline - time.monotonic()) / (count - sent)
        if timeout <= 0:  # the budget is spent: the rest count as lost, unsent
            points.append({"value": None, "timestamp": stamp, "spike": False, "error": "Timeout"})
            continue
        try:
            points.append(_ping_once(ping3, address, version, timeout, stamp))
        except _Unavailable as exc:
            return {**shown, "status": "unavailable", "error": str(exc)}
    answered = [p["value"] for p in points if p["value"] is not None]
    if answered:
        mean = sum(answered) / len(answered)
        for p in points:
            p["spike"] = p["value"] is not None and p["value"] > mean * 2 and p["value"] > 1.0
    return {
        **shown,
        "status": "reachable" if answered else "unreachable",
        "latency_ms": points,
        "loss_percent": round(100 * (1 - len(answered) / count), 1),
    }
