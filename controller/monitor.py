"""System monitor: this machine's CPU, memory, disk and network; other hosts' ping latency."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import psutil

LOCAL_TARGETS = {"", "local", "localhost", "127.0.0.1", "::1"}
HISTORY = 60
# A point is a spike when it exceeds the mean of the previous points by this factor (and a floor).
SPIKE_FACTOR = 1.5
SPIKE_FLOOR = {
    "cpu_percent": 20.0,
    "memory_percent": 20.0,
    "disk_percent": 20.0,
    "net_sent_bytes_per_s": 64 * 1024,
    "net_recv_bytes_per_s": 64 * 1024,
}


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


def ping_latency(host: str, count: int = 3, timeout: float = 1.0) -> dict[str, Any]:
    """ICMP echo round trips to host with ping3; says so when this process may not send ICMP."""
    import ping3

    ping3.EXCEPTIONS = True
    points = []
    for _ in range(count):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            delay = ping3.ping(host, timeout=timeout, unit="ms")
            points.append({"value": round(float(delay), 3), "timestamp": stamp, "spike": False, "error": None})
        except PermissionError:
            return {
                "target": host,
                "kind": "ping",
                "status": "unavailable",
                "error": "ICMP needs raw sockets (root or CAP_NET_RAW) or net.ipv4.ping_group_range; latency not measured",
            }
        except ping3.errors.PingError as exc:
            points.append({"value": None, "timestamp": stamp, "spike": False, "error": type(exc).__name__})
        except OSError as exc:
            if exc.errno in (1, 13):
                return {"target": host, "kind": "ping", "status": "unavailable", "error": f"ICMP not permitted: {exc.strerror}"}
            points.append({"value": None, "timestamp": stamp, "spike": False, "error": exc.strerror})
    answered = [p["value"] for p in points if p["value"] is not None]
    if answered:
        mean = sum(answered) / len(answered)
        for p in points:
            p["spike"] = p["value"] is not None and p["value"] > mean * 2 and p["value"] > 1.0
    return {
        "target": host,
        "kind": "ping",
        "status": "reachable" if answered else "unreachable",
        "latency_ms": points,
        "loss_percent": round(100 * (1 - len(answered) / count), 1),
    }
