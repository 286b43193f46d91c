"""Assets: every host a stored scan reports, kept over time: its names, when it was first and last seen, the
scans that saw it, its ports now (first and last seen each) and every change of a port's state.

`AssetUpdate` is fed the hosts of a scan batch by batch while they are stored (controller.services.scans), in the
same transaction: a scan's results and what they change in the assets are stored together or not at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from controller.errors import NotFound, ValidationError
from controller.scanlib import scanner
from controller.services.probed import Probed, probed
from controller.store import jsontext
from controller.store.database import insert_rows
from controller.store.jsontext import iso
from controller.store.models import Asset, AssetPort, AssetPortChange, AssetScan, Scan

OPEN = "open"
NOT_OPEN = "closed"  # what an open-only tool (masscan, zmap) says of a probed port it did not list


def address_key(address: str) -> str:
    """The address as a key that sorts in address order: "4" and 8 hex digits, or "6" and 32. A network is a range
    of keys, of its own version only (as Python's ipaddress sees membership)."""
    ip = ipaddress.ip_address(address)
    return f"4{int(ip):08x}" if ip.version == 4 else f"6{int(ip):032x}"


def network_keys(network: str) -> tuple[str, str]:
    """The first and last key of a network (an address is a network of one)."""
    net = ipaddress.ip_network(network, strict=False)
    return address_key(str(net.network_address)), address_key(str(net.broadcast_address))


# What a stored scan changes in the assets, in SQL over the scan's rows (set-based: a 65,536-host scan is a few
# statements, not a round trip per host). :scan is the scan's id, :at the time it is stored.
UPDATE_ASSETS = """
UPDATE assets SET
    status = h.status,
    hostnames = CASE WHEN CAST(h.hostnames AS TEXT) <> '[]' THEN h.hostnames ELSE assets.hostnames END,
    mac = COALESCE(h.mac, assets.mac),
    last_seen = CASE WHEN h.status = 'up' THEN :at ELSE assets.last_seen END,
    last_scan_id = :scan
FROM scan_hosts AS h
WHERE h.scan_id = :scan AND h.address = assets.address
"""
LINK_SCANS = """
INSERT INTO asset_scans (asset_id, scan_id)
SELECT DISTINCT a.id, :scan FROM scan_hosts AS h JOIN assets AS a ON a.address = h.address WHERE h.scan_id = :scan
ON CONFLICT DO NOTHING
"""
# Ports the scan reported whose state is new to the asset: their change, before asset_ports is updated.
RECORD_CHANGES = """
INSERT INTO asset_port_changes (asset_id, protocol, port, change, state, previous, scan_id, at)
SELECT a.id, p.protocol, p.port,
    CASE
        WHEN COALESCE(p.state, 'unknown') = 'open' THEN CASE WHEN EXISTS (
            SELECT 1 FROM asset_port_changes AS c
            WHERE c.asset_id = a.id AND c.protocol = p.protocol AND c.port = p.port AND c.state = 'open'
        ) THEN 'reopened' ELSE 'opened' END
        WHEN ap.state = 'open' THEN 'closed'
        ELSE 'state'
    END,
    COALESCE(p.state, 'unknown'), ap.state, :scan, :at
FROM scan_ports AS p
JOIN scan_hosts AS h ON h.id = p.host_id
JOIN assets AS a ON a.address = h.address
LEFT JOIN asset_ports AS ap ON ap.asset_id = a.id AND ap.protocol = p.protocol AND ap.port = p.port
WHERE h.scan_id = :scan AND (ap.id IS NULL OR ap.state <> COALESCE(p.state, 'unknown'))
"""
# PostgreSQL refuses to upsert one row twice in a statement (a host two scanners both reported): one row per asset
# port there. SQLite applies them in turn, and the grouping would cost a third of the update.
UPSERT_PORTS = """
INSERT INTO asset_ports (asset_id, sort_key, protocol, port, state, service, product, version, first_seen, last_seen)
SELECT {columns}
FROM scan_ports AS p
JOIN scan_hosts AS h ON h.id = p.host_id
JOIN assets AS a ON a.address = h.address
WHERE h.scan_id = :scan
{group}
ON CONFLICT (asset_id, protocol, port) DO UPDATE SET
    state = excluded.state,
    service = COALESCE(excluded.service, asset_ports.service),
    product = COALESCE(excluded.product, asset_ports.product),
    version = COALESCE(excluded.version, asset_ports.version),
    last_seen = excluded.last_seen
"""
# The asset ports of hosts this scan saw up that it did not list: candidates for its unlisted state.
UNLISTED = """
SELECT ap.id, ap.asset_id, ap.protocol, ap.port, ap.state, h.extra_state
FROM asset_ports AS ap
JOIN assets AS a ON a.id = ap.asset_id
JOIN scan_hosts AS h ON h.address = a.address AND h.scan_id = :scan AND h.status = 'up'
WHERE (CASE WHEN :open_only THEN ap.state = 'open' ELSE h.extra_state IS NOT NULL AND ap.state <> h.extra_state END)
AND NOT EXISTS (SELECT 1 FROM scan_ports AS p WHERE p.host_id = h.id AND p.protocol = ap.protocol AND p.port = ap.port)
"""
UPSERT_PORTS_GROUPED = UPSERT_PORTS.format(
    columns="a.id, a.sort_key, p.protocol, p.port, MAX(COALESCE(p.state, 'unknown')), MAX(p.service), MAX(p.product), MAX(p.version), "
    ":at, :at",
    group="GROUP BY a.id, a.sort_key, p.protocol, p.port",
)
UPSERT_PORTS_EACH = UPSERT_PORTS.format(
    columns="a.id, a.sort_key, p.protocol, p.port, COALESCE(p.state, 'unknown'), p.service, p.product, p.version, :at, :at", group=""
)
# The open ports of assets inside an open-only scan's network that the scan did not report at all.
UNREPORTED = """
SELECT ap.id, ap.asset_id, ap.protocol, ap.port, ap.state, NULL AS extra_state
FROM asset_ports AS ap
JOIN assets AS a ON a.id = ap.asset_id
WHERE a.sort_key BETWEEN :low AND :high AND ap.state = 'open'
AND NOT EXISTS (SELECT 1 FROM scan_hosts AS h WHERE h.scan_id = :scan AND h.address = a.address)
"""
# SQLite: the upsert split by what it changes. Most reported ports are as they were: only their last sighting
# is written (no index touched); the few that changed get their state and service; the new ones are inserted.
REPORTED = """
SELECT a.id AS asset_id, p.protocol, p.port, COALESCE(p.state, 'unknown') AS state, p.service, p.product, p.version
FROM scan_ports AS p JOIN scan_hosts AS h ON h.id = p.host_id JOIN assets AS a ON a.address = h.address
WHERE h.scan_id = :scan
"""
CHANGED_PORTS = f"""
UPDATE asset_ports SET
    state = r.state,
    service = COALESCE(r.service, asset_ports.service),
    product = COALESCE(r.product, asset_ports.product),
    version = COALESCE(r.version, asset_ports.version)
FROM ({REPORTED}) AS r
WHERE asset_ports.asset_id = r.asset_id AND asset_ports.protocol = r.protocol AND asset_ports.port = r.port
AND (asset_ports.state <> r.state OR COALESCE(r.service, asset_ports.service) IS NOT asset_ports.service
     OR COALESCE(r.product, asset_ports.product) IS NOT asset_ports.product
     OR COALESCE(r.version, asset_ports.version) IS NOT asset_ports.version)
"""
SEEN_PORTS = f"""
UPDATE asset_ports SET last_seen = :at
FROM ({REPORTED}) AS r
WHERE asset_ports.asset_id = r.asset_id AND asset_ports.protocol = r.protocol AND asset_ports.port = r.port
"""
NEW_PORTS = f"""
INSERT INTO asset_ports (asset_id, sort_key, protocol, port, state, service, product, version, first_seen, last_seen)
SELECT r.asset_id, a.sort_key, r.protocol, r.port, r.state, r.service, r.product, r.version, :at, :at
FROM ({REPORTED}) AS r JOIN assets AS a ON a.id = r.asset_id
WHERE true
ON CONFLICT DO NOTHING
"""
OPENED_BEFORE = """
SELECT 1 FROM asset_port_changes WHERE asset_id = :asset AND protocol = :protocol AND port = :port AND state = 'open' LIMIT 1
"""
ASSET_COLUMNS = ("address", "sort_key", "hostnames", "mac", "status", "first_seen", "last_seen", "last_scan_id")


class AssetUpdate:
    """The assets' side of storing one scan's hosts (see the module's docstring): `add` each batch of hosts as it is
    stored (new addresses become assets), then `finish` once every host and port row of the scan is in."""

    def __init__(self, connection: Connection, scan: Scan, summary: Mapping[str, Any] | None, seen_at: datetime) -> None:
        self.connection = connection
        self.scan_id = scan.id
        # A scan that did not complete may not have probed every port of a host it lists: none is taken as closed.
        completed = (summary or {}).get("state") == "completed"
        self.probed = (probed(scan.tool, scan.scan_type, scan.ports, summary) if completed else None) or Probed({})
        self.open_only = scan.tool in scanner.OPEN_ONLY_TOOLS
        self.at = seen_at
        # The network the scan covered (the address it scanned, for a hostname); None: not known exactly (an import).
        self.target = (scan.job.extra_vars or {}).get("scanner_target") if scan.job is not None else None
        dialect = connection.dialect
        self._time = Asset.__table__.c.first_seen.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
        if dialect.name == "postgresql":
            # One asset update at a time: two scans of overlapping hosts would otherwise lock asset rows in different
            # orders, and the deadlock would roll one scan's results back. Held until this transaction ends.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7263)")

    def add(self, hosts: list[dict[str, Any]]) -> None:
        """Make an asset of every new address among `hosts` (the others are brought up to date by `finish`)."""
        at, scan_id, dumps = self._time(self.at), self.scan_id, jsontext.dumps
        rows = []
        for h in hosts:
            key = _key_or_none(h.get("address"))
            if key is not None:
                up = h.get("status") == "up"
                hostnames = dumps(h["hostnames"]).decode() if h.get("hostnames") else "[]"
                rows.append((h["address"], key, hostnames, h.get("mac"), h.get("status") or "unknown", at, at if up else None, scan_id))
        insert_rows(self.connection, "assets", ASSET_COLUMNS, rows, json=("hostnames",))  # an existing address is left

    def finish(self) -> None:
        params = {"scan": self.scan_id, "at": self._time(self.at)}  # as the column stores it (text() has no types)
        if self.connection.dialect.name == "postgresql":
            statements: tuple[str, ...] = (UPDATE_ASSETS, LINK_SCANS, RECORD_CHANGES, UPSERT_PORTS_GROUPED)
        else:
            statements = (UPDATE_ASSETS, LINK_SCANS, RECORD_CHANGES, CHANGED_PORTS, SEEN_PORTS, NEW_PORTS)
        for statement in statements:
            self.connection.execute(text(statement), params)
        if self.probed:
            # Only the rows that can change: open ones for an open-only tool, others than nmap's state for the rest.
            self._close(self.connection.execute(text(UNLISTED), {"scan": self.scan_id, "open_only": self.open_only}))
            if self.open_only and self.target:
                low, high = network_keys(self.target)
                self._close(self.connection.execute(text(UNREPORTED), {"scan": self.scan_id, "low": low, "high": high}))

    def _close(self, rows: Iterable[Any]) -> None:
        """Asset ports this scan probed and did not list (`rows`: id, asset_id, protocol, port, state, extra_state):
        nmap's <extraports> state for them; for an open-only tool (masscan, zmap), which lists open ports only and
        hosts only through them, closed where they were open."""
        changes: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for row in list(rows):  # read before the changes are looked up and written
            state = NOT_OPEN if self.open_only else row.extra_state
            if state is None or row.state == state or (row.protocol, row.port) not in self.probed:
                continue  # no one state for what nmap did not list, or nothing changed, or the scan did not probe it
            if self.open_only and row.state != OPEN:
                continue  # an open-only tool tells closed from filtered no better than the last scan did
            changes.append(self._change(row.asset_id, row.protocol, row.port, state, row.state))
            updates.append({"b_id": row.id, "b_state": state})
        if changes:
            self.connection.execute(insert(AssetPortChange), changes)
            statement = update(AssetPort).where(AssetPort.id == bindparam("b_id")).values(state=bindparam("b_state"), last_seen=self.at)
            self.connection.execute(statement, updates)

    def _change(self, asset_id: int, protocol: str, port: int, state: str, previous: str | None) -> dict[str, Any]:
        if state == OPEN:
            opened = self.connection.execute(text(OPENED_BEFORE), {"asset": asset_id, "protocol": protocol, "port": port}).first()
            change = "reopened" if opened else "opened"
        else:
            change = "closed" if previous == OPEN else "state"
        return {
            "asset_id": asset_id,
            "protocol": protocol,
            "port": port,
            "change": change,
            "state": state,
            "previous": previous,
            "scan_id": self.scan_id,
            "at": self.at,
        }


def _key_or_none(value: Any) -> str | None:
    try:
        return address_key(value)
    except ValueError:
        return None  # not an address (the role reports addresses only): no asset


# --- reading ------------------------------------------------------------------------------------------------


ASSET_VIEW = ("address", "hostnames", "mac", "status", "first_seen", "last_seen")  # schemas.assets.Asset, less open_ports
PORT_VIEW = ("protocol", "port", "state", "service", "product", "version", "first_seen", "last_seen")  # schemas.assets.AssetPort


def assets_page(
    session: Session,
    limit: int,
    cursor: str | None,
    network: str | None = None,
    port: int | None = None,
    service: str | None = None,
    seen_since: datetime | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of assets as lists show them (schemas.assets.Asset), in address order; the cursor is the last one's key
    (keyset paging). A port or service filter walks asset_ports' (port|service, state, sort_key) index: a page costs
    its rows, whatever the filter matches. Built by hand from the rows (the list's hot path: tests/test_assets.py
    checks the views against the model)."""
    low_high = _keys(network) if network else None
    table = Asset.__table__.c
    columns = (table.id, table.sort_key, *(table[name] for name in ASSET_VIEW))
    if port is None and not service:
        query = select(*columns)
        if low_high:
            query = query.where(table.sort_key.between(*low_high))
        if cursor:
            query = query.where(table.sort_key > cursor)
        if seen_since is not None:
            query = query.where(table.last_seen >= seen_since)
        rows = session.execute(query.order_by(table.sort_key).limit(limit + 1)).all()
    else:
        keys = select(AssetPort.sort_key).where(AssetPort.state == OPEN)
        keys = keys.where(AssetPort.port == port) if port is not None else keys
        keys = keys.where(AssetPort.service == service) if service else keys
        keys = keys.where(AssetPort.sort_key.between(*low_high)) if low_high else keys
        keys = keys.where(AssetPort.sort_key > cursor) if cursor else keys
        if seen_since is not None:
            keys = keys.join(Asset, Asset.id == AssetPort.asset_id).where(Asset.last_seen >= seen_since)
        found = list(session.scalars(keys.distinct().order_by(AssetPort.sort_key).limit(limit + 1)))
        rows = session.execute(select(*columns).where(table.sort_key.in_(found)).order_by(table.sort_key)).all() if found else []
    page = rows[:limit]
    ports = open_ports(session, [r.id for r in page])
    views = [
        {
            "address": r.address,
            "hostnames": r.hostnames,
            "mac": r.mac,
            "status": r.status,
            "first_seen": iso(r.first_seen),
            "last_seen": iso(r.last_seen),
            "open_ports": ports[r.id],
        }
        for r in page
    ]
    return views, (rows[limit - 1].sort_key if len(rows) > limit else None)


def _keys(network: str) -> tuple[str, str]:
    try:
        return network_keys(network)
    except ValueError:
        raise ValidationError("network must be an address or a CIDR network such as 192.0.2.0/24", field="network") from None


def open_ports(session: Session, asset_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The open ports of these assets, as lists show them (schemas.assets.AssetPort)."""
    ports: dict[int, list[dict[str, Any]]] = {i: [] for i in asset_ids}
    if not asset_ids:
        return ports
    table = AssetPort.__table__.c
    query = (
        select(table.asset_id, *(table[name] for name in PORT_VIEW))
        .where(table.asset_id.in_(asset_ids), table.state == OPEN)
        .order_by(table.asset_id, table.protocol, table.port)
    )
    for r in session.execute(query):
        ports[r.asset_id].append(
            {
                "protocol": r.protocol,
                "port": r.port,
                "state": r.state,
                "service": r.service,
                "product": r.product,
                "version": r.version,
                "first_seen": iso(r.first_seen),
                "last_seen": iso(r.last_seen),
            }
        )
    return ports


def get_asset(session: Session, address: str) -> dict[str, Any]:
    """One asset with its ports, their changes and the scans that saw it (schemas.assets.AssetDetail)."""
    try:
        canonical = str(ipaddress.ip_address(address))
    except ValueError:
        raise ValidationError("address must be an IPv4 or IPv6 address", field="address") from None
    asset = session.scalar(select(Asset).where(Asset.address == canonical))
    if asset is None:
        raise NotFound(f"no asset {canonical}")
    ports = list(session.scalars(select(AssetPort).where(AssetPort.asset_id == asset.id).order_by(AssetPort.protocol, AssetPort.port)))
    history = session.execute(
        select(AssetPortChange, Scan.job_id)
        .outerjoin(Scan, Scan.id == AssetPortChange.scan_id)
        .where(AssetPortChange.asset_id == asset.id)
        .order_by(AssetPortChange.id)
    ).all()
    scans = session.execute(
        select(Scan.job_id, Scan.tool, Scan.scan_type, Scan.created_at)
        .join(AssetScan, AssetScan.scan_id == Scan.id)
        .where(AssetScan.asset_id == asset.id)
        .order_by(Scan.id)
    ).all()
    changes = [
        {**{k: getattr(change, k) for k in ("protocol", "port", "change", "state", "previous", "at")}, "scan_job_id": job_id}
        for change, job_id in history
    ]
    fields = ("address", "hostnames", "mac", "status", "first_seen", "last_seen")
    return {**{k: getattr(asset, k) for k in fields}, "ports": ports, "history": changes, "scans": [r._asdict() for r in scans]}
