"""Exports: a scan's stored hosts and ports as one JSON document, JSON lines or CSV, written batch by batch.

The rows are read with SQLAlchemy Core in keyset batches (the id of a batch's last host, then that range of hosts
joined with their ports), each batch in a short session of its own and encoded host by host as its rows arrive: memory
stays that of one batch's encoded bytes whatever the size of the scan (65,536 hosts or more), and no read transaction
stays open while a slow client downloads. A scan's results are stored in one
transaction when its job ends, so a scan still queued or running exports what is stored: its hosts list is empty
until then (the scan's `status` in the JSON document says which).
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Select, bindparam, select
from sqlalchemy.orm import Session

from controller.services.scans import get_scan, scan_view
from controller.store import jsontext
from controller.store.database import Database
from controller.store.models import ScanHost, ScanPort

BATCH = 256  # hosts per query, and per chunk of the response: memory is about three times a chunk
# format -> (Content-Type, file name extension)
FORMATS: dict[str, tuple[str, str]] = {
    "json": ("application/json", "json"),
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
}
HOST_FIELDS = ("address", "hostnames", "mac", "status", "host_reason")
PORT_FIELDS = ("protocol", "port", "state", "reason", "service", "product", "version")
CSV_COLUMNS = HOST_FIELDS + PORT_FIELDS
# A cell a spreadsheet would run as a formula (OWASP, CSV injection): these first characters get a leading '.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NO_PORT = (None,) * len(PORT_FIELDS)
LAST_ID = 2**63 - 1  # no upper bound


@dataclass(frozen=True)
class Export:
    """What an export needs once the request is checked: the scan (as GET /api/scans/<id> shows it) and the format."""

    scan_id: int
    job_id: str
    scan: dict[str, Any]
    format: str

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][0]

    @property
    def filename(self) -> str:
        return f"scan-{re.sub(r'[^A-Za-z0-9._-]', '_', self.job_id)}.{FORMATS[self.format][1]}"


def open_export(session: Session, job_id: str, format: str) -> Export:
    """The export of a scan (NotFound for an unknown one): checked before the response starts."""
    scan = get_scan(session, job_id)
    return Export(scan.id, scan.job_id, scan_view(scan), format)


def export_chunks(db: Database, export: Export, batch: int = BATCH) -> Iterator[bytes]:
    """The export's body (UTF-8): a chunk per batch of hosts, and the head and tail of the format."""
    writer = {"json": _json, "jsonl": _jsonl, "csv": _csv}[export.format]
    return writer(db, export, batch)


@functools.cache
def _last_query() -> Select[Any]:
    """The id of the last host of the next batch (None: the rest of the scan is a batch)."""
    after = ScanHost.id > bindparam("after", type_=Integer)
    query = select(ScanHost.id).where(ScanHost.scan_id == bindparam("scan_id"), after).order_by(ScanHost.id)
    return query.offset(bindparam("skip", type_=Integer)).limit(1)


@functools.cache
def _rows_query() -> Select[Any]:
    """The hosts of a batch with their ports, a row per port (a host without ports: one row of nulls), in order."""
    host_columns = (ScanHost.id, ScanHost.address, ScanHost.status, ScanHost.reason, ScanHost.hostnames, ScanHost.mac)
    port_columns = (ScanPort.id.label("port_id"), *(getattr(ScanPort, name).label(f"port_{name}") for name in PORT_FIELDS))
    span = (ScanHost.id > bindparam("after", type_=Integer), ScanHost.id <= bindparam("last", type_=Integer))
    return (
        select(*host_columns, *port_columns)
        .outerjoin(ScanPort, ScanPort.host_id == ScanHost.id)
        .where(ScanHost.scan_id == bindparam("scan_id"), *span)
        .order_by(ScanHost.id, ScanPort.id)
    )


def hosts_of(rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Hosts with their ports (schemas.scans.ScanHost, built by hand) from rows of _rows_query, one host at a time."""
    host: dict[str, Any] | None = None
    host_id: int | None = None
    ports: list[dict[str, Any]] = []
    for row in rows:
        if row.id != host_id:
            if host is not None:
                yield host
            host_id, ports = row.id, []
            host = {"address": row.address, "status": row.status, "reason": row.reason, "hostnames": row.hostnames or [], "mac": row.mac}
            host["ports"] = ports
        if row.port_id is not None:
            ports.append(dict(zip(PORT_FIELDS, row[-len(PORT_FIELDS) :], strict=True)))
    if host is not None:
        yield host


def host_chunks(db: Database, scan_id: int, encode: Callable[[Iterator[dict[str, Any]]], bytes], batch: int = BATCH) -> Iterator[bytes]:
    """The scan's hosts in id order, `batch` at a time, each batch read in a session of its own and encoded host by host:
    what stays in memory is one batch's encoded bytes."""
    after = 0
    while True:
        with db.session() as session:
            connection = session.connection()
            last = connection.execute(_last_query(), {"scan_id": scan_id, "after": after, "skip": batch - 1}).scalar()
            span = {"scan_id": scan_id, "after": after, "last": LAST_ID if last is None else last}
            chunk = encode(hosts_of(connection.execute(_rows_query(), span)))
        if chunk:
            yield chunk
        if last is None:
            return
        after = last


def _json(db: Database, export: Export, batch: int) -> Iterator[bytes]:
    """{"scan": {...}, "hosts": [...]}, host by host."""
    separator = b""

    def encode(hosts: Iterator[dict[str, Any]]) -> bytes:
        nonlocal separator
        parts = []
        for host in hosts:
            parts.append(separator + jsontext.dumps(host))  # a copy of orjson's bytes, which keep their spare capacity
            separator = b","
        return b"".join(parts)

    yield b'{"scan":' + jsontext.dumps(export.scan) + b',"hosts":['
    yield from host_chunks(db, export.scan_id, encode, batch)
    yield b"]}\n"


def _jsonl(db: Database, export: Export, batch: int) -> Iterator[bytes]:
    """One host with its ports per line."""
    return host_chunks(db, export.scan_id, lambda hosts: b"".join([jsontext.dumps(h) + b"\n" for h in hosts]), batch)


def neutralise(value: Any) -> Any:
    """A cell as a spreadsheet may open it: text that it would run as a formula gets a leading '."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_rows(hosts: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    """One row per port (CSV_COLUMNS); a host without ports has one row with empty port columns."""
    for h in hosts:
        head = [neutralise(v) for v in (h["address"], " ".join(h["hostnames"]), h["mac"], h["status"], h["reason"])]
        if not h["ports"]:
            yield [*head, *NO_PORT]
        for p in h["ports"]:
            yield [*head, *(neutralise(p[name]) for name in PORT_FIELDS)]


class _Lines:
    """Where the csv module writes: each line as UTF-8 bytes, taken a batch at a time (a StringIO keeps 4 bytes a
    character, and its capacity after a truncate)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, line: str) -> None:
        self.lines.append(line.encode("utf-8", "replace"))  # a lone surrogate (from JSON text) is no UTF-8

    def take(self) -> bytes:
        text = b"".join(self.lines)
        self.lines.clear()
        return text


def _csv(db: Database, export: Export, batch: int) -> Iterator[bytes]:
    """RFC 4180: a header row, quoted where needed, CRLF line ends."""
    lines = _Lines()
    writer = csv.writer(lines, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield lines.take()

    def encode(hosts: Iterator[dict[str, Any]]) -> bytes:
        writer.writerows(csv_rows(hosts))
        return lines.take()

    yield from host_chunks(db, export.scan_id, encode, batch)
