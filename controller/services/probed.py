"""What a scan probed: per protocol, the ports it can say something about (a port it did not probe, it says
nothing of). The diff and the assets both ask this."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

from controller.scanlib import scanner


class PortSet:
    """Membership in a port spec like "22,80,1000-2000": its ranges sorted and merged, and a bisect."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, spec: str) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for low, high in sorted(r for r in map(_port_range, spec.split(",")) if r is not None):
            if self._ends and low <= self._ends[-1] + 1:
                self._ends[-1] = max(self._ends[-1], high)
            else:
                self._starts.append(low)
                self._ends.append(high)

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int):
            return False
        i = bisect_right(self._starts, port) - 1
        return i >= 0 and port <= self._ends[i]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))


def _port_range(item: str) -> tuple[int, int] | None:
    low, _, high = item.strip().partition("-")
    try:
        first = int(low)
        last = int(high) if high else first
    except ValueError:
        return None
    return (first, last) if 0 <= first <= last <= 65535 else None


class Probed:
    """The ports a scan probed, a PortSet per protocol; `(protocol, port) in probed`."""

    __slots__ = ("by_protocol",)

    def __init__(self, specs: Mapping[str, str]) -> None:
        self.by_protocol = {str(protocol): PortSet(str(spec)) for protocol, spec in specs.items()}

    def get(self, protocol: str) -> PortSet | None:
        return self.by_protocol.get(protocol)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        ports = self.by_protocol.get(key[0])
        return ports is not None and key[1] in ports

    def __bool__(self) -> bool:
        return any(self.by_protocol.values())


def probed(tool: str, scan_type: str, ports: str | None, summary: Mapping[str, Any] | None) -> Probed | None:
    """What a scan probed: the scanner's own word (summary.probed), or for one stored before it was kept, the ports
    masscan and zmap were given. None: not known (an nmap scan stored before)."""
    given = (summary or {}).get("probed")
    if isinstance(given, dict):
        return Probed(given)
    if tool in scanner.OPEN_ONLY_TOOLS:
        return Probed(scanner.probed_ports(tool, scan_type, ports, {}))
    return None
