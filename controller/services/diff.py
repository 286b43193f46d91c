"""The diff of two stored scans: hosts new, gone, up or down; ports opened, closed, changed state or service.

It reads the stored rows, not the raw output: one query per scan (its hosts joined with their ports, ordered by
address, protocol and port), streamed and merge-joined by address, so memory holds one host of each scan at a time
and the differences found. What can be compared:

- A port is compared only where both scans probed it (`summary["probed"]`, or for older masscan and zmap scans the
  scan's ports; an older nmap scan without it: only the ports both list). Otherwise it is not comparable, never
  closed. A probed port a scan did not list has the state nmap gave the ports it did not list (`extra_state`), or
  is "not open" for masscan and zmap, which report open ports only. A host that is not up has no comparable ports.
- When either scan's tool reports open ports only, only open versus not open is compared (mode open_ports).
- A host outside the other scan's target is not comparable, never new or gone. masscan and zmap see a host only
  through an open port or an echo reply. Host discovery (masscan ping_scan, zmap icmp_echo): a host up that they
  covered and did not report is gone (or new). A port scan of theirs says only that the ports it probed are not
  open: a host it did not report is gone (or new) only if it had an open port among them; otherwise its ports both
  probed are not open on both sides (no change), and with none such the host is not comparable.
- A scan that did not run to its end (not successful, or its summary's state not completed: timed out, stopped,
  truncated) covers only the hosts it reported, and of them only the ports it listed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, groupby
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import Row, Text, cast, select
from sqlalchemy.orm import Session, selectinload

from controller.errors import Conflict, NotFound, ValidationError
from controller.scanlib import scanner
from controller.services.probed import PortSet, Probed, probed
from controller.services.scans import get_scan
from controller.store import jsontext
from controller.store.models import Job, Scan, ScanHost, ScanPort

# Tools that report open ports only (the scanner role's list, once it has one).
OPEN_ONLY_TOOLS: tuple[str, ...] = tuple(getattr(scanner, "OPEN_ONLY_TOOLS", ("masscan", "zmap")))
NOT_OPEN = "not open"
SERVICE_FIELDS = ("service", "product", "version")
PORT_CATEGORIES = ("opened", "closed", "state_changed", "service_changed")
HOST_COUNTS = ("hosts_compared", "hosts_new", "hosts_gone", "hosts_up", "hosts_down", "hosts_changed", "hosts_not_comparable")
BATCH = 2000
_port_fields = itemgetter(6, 7, 8, 9)  # state, service, product, version of a joined row

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PortKey = tuple[str, int]
PortRow = tuple[str, str | None, str | None, str | None]  # state, service, product, version


class Host(NamedTuple):
    address: str
    status: str
    hostnames: str | list[str] | None  # as stored: JSON text
    extra_state: str | None
    ports: dict[PortKey, PortRow]

    def names(self) -> list[str]:
        names = jsontext.loads(self.hostnames) if isinstance(self.hostnames, str | bytes) else self.hostnames
        return list(names or [])


@dataclass(frozen=True)
class Side:
    """One of the two scans, as the diff reads it."""

    scan: Scan
    network: Network
    probed: Probed | None  # None: not known (an nmap scan stored before probed ports were, or one cut short)
    open_only: bool
    complete: bool  # it ran to its end: a host it did not report was not up, a port it probed and did not list not open
    exact: bool = True  # its target is known exactly (an import whose file does not say: it covers only what it reported)

    def covers(self, address: str) -> bool:
        """Whether this scan ran to its end over the host's address: had the host been up, it would have reported it
        (an open-only port scan: had one of the ports it probed been open, see `probes_ports`)."""
        if not self.complete or not self.exact:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return ip.version == self.network.version and ip in self.network

    @property
    def probes_ports(self) -> bool:
        """An open-only port scan (not host discovery): a host it did not report has its probed ports not open, no
        more (it may be up with them closed, or with open ports elsewhere)."""
        return self.open_only and bool(self.probed)

    def state(self, host: Host, key: PortKey) -> str | None:
        """The port's state in this scan, or None when it is not comparable."""
        row = host.ports.get(key)
        if row is not None:
            return row[0]
        ports = None if self.probed is None else self.probed.get(key[0])
        if ports is None or key[1] not in ports:
            return None
        return NOT_OPEN if self.open_only else host.extra_state


def scan_diff(session: Session, job_id: str, against: str | None) -> dict[str, Any]:
    """What changed from `against` (the older scan; by default the previous successful one of the same target, tool
    and scan type) to the scan `job_id`: the view schemas.diff.ScanDiff describes."""
    new = get_scan(session, job_id)
    _check_ended(new)
    old = get_scan(session, against) if against is not None else _previous(session, new)
    _check_ended(old)
    old_side, new_side = _side(old, "against"), _side(new, "job_id")
    if old_side.network.version != new_side.network.version or not old_side.network.overlaps(new_side.network):
        covered = f"scan {old.job_id} covers {old_side.network}, scan {new.job_id} {new_side.network}"
        raise ValidationError(f"the targets do not overlap: {covered}", field="against")
    diff = _Diff(old_side, new_side)
    for old_host, new_host in _pairs(_hosts(session, old.id), _hosts(session, new.id)):
        diff.pair(old_host, new_host)
    return diff.view()


def _check_ended(scan: Scan) -> None:
    if scan.job.active:
        raise Conflict(f"scan {scan.job_id} is still {scan.job.status}: compare it once it has ended")


def _previous(session: Session, scan: Scan) -> Scan:
    query = (
        select(Scan)
        .join(Job, Job.id == Scan.job_id)
        .where(Scan.target == scan.target, Scan.tool == scan.tool, Scan.scan_type == scan.scan_type)
        .where(Scan.id < scan.id, Job.status == "successful")
        .order_by(Scan.id.desc())
        .limit(1)
        .options(selectinload(Scan.job))
    )
    previous = session.scalar(query)
    if previous is None:
        raise NotFound(
            f"no earlier successful {scan.tool} {scan.scan_type} scan of {scan.target} to compare scan {scan.job_id} with: "
            "name one with against"
        )
    return previous


def _side(scan: Scan, field: str) -> Side:
    """The scan as the diff reads it; `field` names it in an error (job_id: the path's scan, against: the other)."""
    network = _network(scan)
    if network is None:
        raise ValidationError(f"scan {scan.job_id}: its target {scan.target} is not an address or a network", field=field)
    complete = scan.job.status == "successful" and (scan.summary or {}).get("state") == "completed"
    exact = (scan.summary or {}).get("targets_exact") is not False
    return Side(scan, network, _probed(scan) if complete else None, scan.tool in OPEN_ONLY_TOOLS, complete, exact)


def _network(scan: Scan) -> Network | None:
    """What the scan covered: the address it scanned (a hostname's, as the job resolved it), else its target."""
    scanned = (scan.job.extra_vars or {}).get("scanner_target")
    for text in (scanned, scan.target):
        if isinstance(text, str) and text:
            try:
                return ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
    return None


def _probed(scan: Scan) -> Probed | None:
    return probed(scan.tool, scan.scan_type, scan.ports, scan.summary)


# --- reading the stored rows -----------------------------------------------------------------------------------


def _hosts(session: Session, scan_id: int) -> Iterator[Host]:
    """The scan's hosts in address order (bytewise, as Python compares), each with its ports: one streamed query."""
    h, p = ScanHost.__table__.c, ScanPort.__table__.c
    connection = session.connection()
    collation = "C" if connection.dialect.name == "postgresql" else "BINARY"
    # The hostnames as their JSON text, decoded only for a host the diff shows (decoding them for every row cost more
    # than the rest of reading them).
    hostnames = cast(h.hostnames, Text)
    columns = (h.address, h.status, hostnames, h.extra_state, p.protocol, p.port, p.state, p.service, p.product, p.version)
    query = (
        select(*columns)
        .select_from(ScanHost.__table__.outerjoin(ScanPort.__table__, p.host_id == h.id))
        .where(h.scan_id == scan_id)
        .order_by(h.address.collate(collation), p.protocol, p.port)
    )
    result = connection.execution_options(stream_results=True, yield_per=BATCH).execute(query)
    for address, group in groupby(chain.from_iterable(result.partitions()), key=itemgetter(0)):
        yield _host(address, group)


def _host(address: str, group: Iterator[Row[Any]]) -> Host:
    rows = list(group)
    first = rows[0]
    # A host stored twice (by two scanners) is up if either saw it up; a port listed twice is the first's.
    status = "up" if first[1] != "up" and any(r[1] == "up" for r in rows) else first[1]
    ports = {(r[4], r[5]): _port_fields(r) for r in reversed(rows) if r[4] is not None}
    return Host(address, status, first[2], first[3], ports)


def _pairs(old: Iterator[Host], new: Iterator[Host]) -> Iterator[tuple[Host | None, Host | None]]:
    """Merge-join two address-ordered streams of hosts."""
    a, b = next(old, None), next(new, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.address < b.address):
            yield a, None
            a = next(old, None)
        elif a is None or b.address < a.address:
            yield None, b
            b = next(new, None)
        else:
            yield a, b
            a, b = next(old, None), next(new, None)


# --- comparing -------------------------------------------------------------------------------------------------


def _open_in(host: Host, side: Side) -> bool:
    """Whether one of the host's open ports is among the ports `side` probed."""
    assert side.probed is not None
    return any(row[0] == "open" and key in side.probed for key, row in host.ports.items())


def _comparable(host: Host, mine: Side, other: Side) -> bool:
    """Whether a port of a host only `mine` reported was probed by both scans and has a state in `mine`: a port it
    listed, or one it did not list but probed, where its unlisted ports have a state (masscan/zmap: not open; nmap:
    its extraports state)."""
    assert other.probed is not None
    if any(key in other.probed for key in host.ports):
        return True
    if mine.probed is None or not (mine.open_only or host.extra_state):
        return False
    return any(
        _overlap(ports, theirs) for protocol, ports in mine.probed.by_protocol.items() if (theirs := other.probed.get(protocol)) is not None
    )


def _overlap(a: PortSet, b: PortSet) -> bool:
    ranges, others = a.ranges(), b.ranges()
    i = j = 0
    while i < len(ranges) and j < len(others):
        (low, high), (other_low, other_high) = ranges[i], others[j]
        if low <= other_high and other_low <= high:
            return True
        if high < other_high:
            i += 1
        else:
            j += 1
    return False


def same_state(a: str, b: str) -> bool:
    """Whether two port states are the same: nmap's "closed|filtered" is either; open against anything else differs."""
    if a == b:
        return True
    if a == "open" or b == "open":
        return False
    return not set(a.split("|")).isdisjoint(b.split("|"))


def _open_or_not(state: str) -> str:
    return "open" if state == "open" else NOT_OPEN


def _service_changes(old: PortRow, new: PortRow) -> dict[str, dict[str, str]]:
    return {
        name: {"old": a, "new": b}
        for name, a, b in zip(SERVICE_FIELDS, old[1:], new[1:], strict=True)
        if a is not None and b is not None and a != b
    }


def _port_view(key: PortKey, old_state: str | None, new_state: str | None, rows: tuple[PortRow | None, PortRow | None]) -> dict[str, Any]:
    old_row, new_row = rows
    fields = [next((r[i] for r in (new_row, old_row) if r is not None and r[i] is not None), None) for i in (1, 2, 3)]
    view = {"protocol": key[0], "port": key[1], "old_state": old_state, "new_state": new_state, "changed": {}}
    view.update(zip(SERVICE_FIELDS, fields, strict=True))
    return view


def _entry(change: str, old: Host | None, new: Host | None) -> dict[str, Any]:
    host = new if new is not None else old
    assert host is not None
    return {
        "address": host.address,
        "change": change,
        "old_status": None if old is None else old.status,
        "new_status": None if new is None else new.status,
        "hostnames": host.names(),
        "open_ports": [],
        "opened": [],
        "closed": [],
        "state_changed": [],
        "service_changed": [],
        "unlisted": None,
        "not_comparable": 0,
    }


class _Diff:
    """The differences found so far, host pair by host pair."""

    def __init__(self, old: Side, new: Side) -> None:
        self.old, self.new = old, new
        self.open_only = old.open_only or new.open_only
        self.hosts: list[dict[str, Any]] = []
        self.counts = dict.fromkeys(HOST_COUNTS + tuple(f"ports_{c}" for c in (*PORT_CATEGORIES, "not_comparable")), 0)

    def pair(self, old: Host | None, new: Host | None) -> None:
        if old is None or new is None:
            self._one_side(old, new)
            return
        self.counts["hosts_compared"] += 1
        if old.status == "up" and new.status == "up":
            self._compare_ports(old, new)
        elif old.status == "up" or new.status == "up":
            self._record("down" if old.status == "up" else "up", old, new)

    def _one_side(self, old: Host | None, new: Host | None) -> None:
        """A host only one scan reported: new or gone if the other scan covered it and it is up; against an open-only
        port scan, only if one of its open ports was among the ports that scan probed."""
        host, mine, other = (old, self.old, self.new) if old is not None else (new, self.new, self.old)
        assert host is not None
        if not other.covers(host.address):
            self.counts["hosts_not_comparable"] += 1
            return
        if host.status == "up" and other.probes_ports and not _open_in(host, other):
            # Not reported: each port it probed is not open, as this host's were; the same where both probed a port.
            self.counts["hosts_compared" if _comparable(host, mine, other) else "hosts_not_comparable"] += 1
            return
        self.counts["hosts_compared"] += 1
        if host.status == "up":
            self._record("gone" if old is not None else "new", old, new)

    def _record(self, change: str, old: Host | None, new: Host | None) -> None:
        """A host that is new, gone, up or down, with the open ports of the scan that saw it up."""
        entry = _entry(change, old, new)
        up, is_old = (old, True) if old is not None and old.status == "up" else (new, False)
        assert up is not None
        for key, row in sorted(up.ports.items()):
            if row[0] == "open":
                rows = (row, None) if is_old else (None, row)
                entry["open_ports"].append(_port_view(key, "open" if is_old else None, None if is_old else "open", rows))
        self.counts[f"hosts_{change}"] += 1
        self.hosts.append(entry)

    def _compare_ports(self, old: Host, new: Host) -> None:
        if old.ports == new.ports and old.extra_state == new.extra_state:
            return  # the same ports listed with the same states and services: each comparable, none changed
        entry = _entry("changed", old, new)
        for key in sorted(old.ports.keys() | new.ports.keys()):
            self._compare_port(entry, key, old, new)
        if not self.open_only and old.extra_state and new.extra_state and not same_state(old.extra_state, new.extra_state):
            entry["unlisted"] = {"old": old.extra_state, "new": new.extra_state}
        self.counts["ports_not_comparable"] += entry["not_comparable"]
        if entry["unlisted"] or any(entry[c] for c in PORT_CATEGORIES):
            for category in PORT_CATEGORIES:
                self.counts[f"ports_{category}"] += len(entry[category])
            self.counts["hosts_changed"] += 1
            self.hosts.append(entry)

    def _compare_port(self, entry: dict[str, Any], key: PortKey, old: Host, new: Host) -> None:
        a, b = self.old.state(old, key), self.new.state(new, key)
        if a is None or b is None:
            entry["not_comparable"] += 1
            return
        rows = (old.ports.get(key), new.ports.get(key))
        compared = (_open_or_not(a), _open_or_not(b)) if self.open_only else (a, b)
        if not same_state(*compared):
            category = "opened" if compared[1] == "open" else "closed" if compared[0] == "open" else "state_changed"
            entry[category].append(_port_view(key, a, b, rows))
        elif not self.open_only and rows[0] is not None and rows[1] is not None and (changed := _service_changes(rows[0], rows[1])):
            view = _port_view(key, a, b, rows)
            view["changed"] = changed
            entry["service_changed"].append(view)

    def view(self) -> dict[str, Any]:
        tools = sorted({s.scan.tool for s in (self.old, self.new) if s.open_only})
        notes = (
            [
                f"{' and '.join(tools)} report{'s' if len(tools) == 1 else ''} open ports only: only open versus not open is compared "
                "(not closed against filtered, nor services)"
            ]
            if tools
            else []
        )
        notes += [
            f"scan {s.scan.job_id} did not run to its end ({_ending(s.scan)}): only the hosts and ports it listed are compared"
            for s in (self.old, self.new)
            if not s.complete
        ]
        return {
            "scan": _scan_view(self.new.scan),
            "against": _scan_view(self.old.scan),
            "mode": "open_ports" if tools else "full",
            "note": "; ".join(notes) or None,
            "differences": bool(self.hosts),
            "summary": self.counts,
            "hosts": self.hosts,
        }


def _ending(scan: Scan) -> str:
    if scan.job.status != "successful":
        return scan.job.status
    return str((scan.summary or {}).get("state") or "no summary")


def _scan_view(scan: Scan) -> dict[str, Any]:
    return {
        "id": scan.id,
        "job_id": scan.job_id,
        "tool": scan.tool,
        "scan_type": scan.scan_type,
        "target": scan.target,
        "ports": scan.ports,
        "status": scan.job.status,
        "created_at": scan.created_at,
    }
