"""Assets: every host a stored scan reports, kept over time: its names, when it was first and last seen, the
scans that saw it, its ports now (first and last seen each) and every change of a port's state.

`AssetUpdate` is fed the hosts of a scan batch by batch while they are stored (controller.services.scans), in the
same transaction: a scan's results and what they change in the assets are stored together or not at all.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, case, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from controller.errors import NotFound, ValidationError
from controller.scanlib import scanner
from controller.store.models import Asset, AssetPort, AssetPortChange, AssetScan, Scan

OPEN = "open"
NOT_OPEN = "closed"  # what an open-only tool (masscan, zmap) says of a probed port it did not list


def address_key(address: str) -> str:
    """The address as 32 hex digits in the IPv6 space (IPv4 mapped to ::ffff:0:0/96): networks are key ranges."""
    ip = ipaddress.ip_address(address)
    value = int(ip) + (0xFFFF << 32) if ip.version == 4 else int(ip)
    return f"{value:032x}"


def network_keys(network: str) -> tuple[str, str]:
    """The first and last key of a network (an address is a network of one)."""
    net = ipaddress.ip_network(network, strict=False)
    return address_key(str(net.network_address)), address_key(str(net.broadcast_address))


class PortSet:
    """The ports a scan probed, per protocol (port specs such as 22,80,1000-2000), for fast membership tests."""

    def __init__(self, probed: Mapping[str, str]) -> None:
        self._ranges: dict[str, tuple[list[int], list[int]]] = {}
        for protocol, spec in probed.items():
            lows: list[int] = []
            highs: list[int] = []
            for low, high in sorted(_ranges(spec)):
                if highs and low <= highs[-1] + 1:  # overlapping or adjacent: one range
                    highs[-1] = max(highs[-1], high)
                else:
                    lows.append(low)
                    highs.append(high)
            self._ranges[protocol] = (lows, highs)

    def __contains__(self, key: tuple[str, int]) -> bool:
        protocol, port = key
        found = self._ranges.get(protocol)
        if found is None:
            return False
        lows, highs = found
        i = bisect.bisect_right(lows, port) - 1
        return i >= 0 and port <= highs[i]

    def __bool__(self) -> bool:
        return bool(self._ranges)


def _ranges(spec: str) -> Iterable[tuple[int, int]]:
    for part in filter(None, spec.replace(" ", "").split(",")):
        low, _, high = part.partition("-")
        yield int(low), int(high or low)


def probed(tool: str, scan_type: str, ports: str | None, summary: Mapping[str, Any] | None) -> PortSet:
    """What a scan probed: the scanner's own word (summary.probed), or for scans stored before it was kept, the
    ports masscan and zmap were given (nmap's then unknown: nothing unlisted is taken as closed)."""
    given = (summary or {}).get("probed")
    if not isinstance(given, dict):
        given = scanner.probed_ports(tool, scan_type, ports, {})
    return PortSet(given)


@dataclass
class _Known:
    id: int
    state: str
    service: str | None
    product: str | None
    version: str | None


class AssetUpdate:
    """The assets' side of storing one scan's hosts (see the module's docstring)."""

    def __init__(self, connection: Connection, scan: Scan, summary: Mapping[str, Any] | None, seen_at: datetime) -> None:
        self.connection = connection
        self.scan_id = scan.id
        # A scan that did not complete may not have probed every port of a host it lists: none is taken as closed.
        completed = (summary or {}).get("state") == "completed"
        self.probed = probed(scan.tool, scan.scan_type, scan.ports, summary) if completed else PortSet({})
        self.open_only = scan.tool in scanner.OPEN_ONLY_TOOLS
        self.at = seen_at

    def add(self, hosts: list[dict[str, Any]]) -> None:
        by_address: dict[str, dict[str, Any]] = {}
        for host in hosts:
            if _is_address(host.get("address")):
                by_address[host["address"]] = host  # one scanner's report of a host twice: the last
        if not by_address:
            return
        ids = self._assets(by_address)
        self._insert_ignoring(AssetScan, [{"asset_id": ids[a], "scan_id": self.scan_id} for a in by_address])
        self._ports({ids[a]: h for a, h in by_address.items()})

    # --- assets ---------------------------------------------------------------------------------------------

    def _assets(self, hosts: dict[str, dict[str, Any]]) -> dict[str, int]:
        """Each host's asset id, the asset made or brought up to date."""
        at, scan_id = self.at, self.scan_id
        fresh = [
            {
                "address": a,
                "sort_key": address_key(a),
                "hostnames": h.get("hostnames") or [],
                "mac": h.get("mac"),
                "status": h.get("status") or "unknown",
                "first_seen": at,
                "last_seen": at if h.get("status") == "up" else None,
                "last_scan_id": scan_id,
            }
            for a, h in hosts.items()
        ]
        known = self._asset_rows(list(hosts))
        self._insert_ignoring(Asset, [row for row in fresh if row["address"] not in known])
        rows = self._asset_rows(list(hosts))
        changes = []
        for address, (asset_id, hostnames, mac) in rows.items():
            if address not in known:
                continue  # just made from this host
            host = hosts[address]
            changes.append(
                {
                    "b_id": asset_id,
                    "b_status": host.get("status") or "unknown",
                    "b_hostnames": host.get("hostnames") or hostnames,
                    "b_mac": host.get("mac") or mac,
                    "b_up": host.get("status") == "up",
                }
            )
        if changes:
            statement = (
                update(Asset)
                .where(Asset.id == bindparam("b_id"))
                .values(
                    status=bindparam("b_status"),
                    hostnames=bindparam("b_hostnames", type_=Asset.hostnames.type),
                    mac=bindparam("b_mac"),
                    last_seen=func.coalesce(_if_up(at), Asset.last_seen),
                    last_scan_id=scan_id,
                )
            )
            self.connection.execute(statement, changes)
        return {address: row[0] for address, row in rows.items()}

    def _asset_rows(self, addresses: list[str]) -> dict[str, tuple[int, list[Any], str | None]]:
        query = select(Asset.address, Asset.id, Asset.hostnames, Asset.mac).where(Asset.address.in_(addresses))
        return {r.address: (r.id, r.hostnames, r.mac) for r in self.connection.execute(query)}

    # --- ports ----------------------------------------------------------------------------------------------

    def _ports(self, hosts: dict[int, dict[str, Any]]) -> None:
        known = self._known_ports(list(hosts))
        opened_before = self._opened_before(list(hosts))
        new_ports: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for asset_id, host in hosts.items():
            reported: set[tuple[str, int]] = set()
            for port in host.get("ports") or ():
                key = (port["protocol"], port["port"])
                reported.add(key)
                state = port.get("state") or "unknown"
                was = known.get((asset_id, *key))
                if was is None:
                    new_ports.append(self._new_port(asset_id, port, state))
                    changes.append(self._change(asset_id, key, state, None, opened_before))
                    continue
                if was.state != state:
                    changes.append(self._change(asset_id, key, state, was.state, opened_before))
                updates.append(self._port_update(was, state, port))
            if host.get("status") == "up" and self.probed:
                self._unlisted(asset_id, host, reported, known, updates, changes, opened_before)
        self._insert_ignoring(AssetPort, new_ports)
        self._insert_ignoring(AssetPortChange, changes, ignore=False)
        if updates:
            statement = (
                update(AssetPort)
                .where(AssetPort.id == bindparam("b_id"))
                .values(
                    state=bindparam("b_state"),
                    service=bindparam("b_service"),
                    product=bindparam("b_product"),
                    version=bindparam("b_version"),
                    last_seen=self.at,
                )
            )
            self.connection.execute(statement, updates)

    def _unlisted(
        self,
        asset_id: int,
        host: dict[str, Any],
        reported: set[tuple[str, int]],
        known: dict[tuple[int, str, int], _Known],
        updates: list[dict[str, Any]],
        changes: list[dict[str, Any]],
        opened_before: set[tuple[int, str, int]],
    ) -> None:
        """Ports the asset has that this scan probed and did not list: nmap's <extraports> state, or not open."""
        state = NOT_OPEN if self.open_only else host.get("extra_state")
        if state is None:
            return  # nmap listed every port it probed on this host: nothing unlisted was probed
        for (owner, protocol, port), was in known.items():
            key = (protocol, port)
            if owner != asset_id or key in reported or key not in self.probed or was.state == state:
                continue
            if self.open_only and was.state != OPEN:
                continue  # an open-only tool tells closed from filtered no better than the last scan did
            changes.append(self._change(asset_id, key, state, was.state, opened_before))
            updates.append({"b_id": was.id, "b_state": state, "b_service": was.service, "b_product": was.product, "b_version": was.version})

    def _known_ports(self, asset_ids: list[int]) -> dict[tuple[int, str, int], _Known]:
        columns = (AssetPort.id, AssetPort.asset_id, AssetPort.protocol, AssetPort.port, AssetPort.state)
        query = select(*columns, AssetPort.service, AssetPort.product, AssetPort.version).where(AssetPort.asset_id.in_(asset_ids))
        return {
            (r.asset_id, r.protocol, r.port): _Known(r.id, r.state, r.service, r.product, r.version) for r in self.connection.execute(query)
        }

    def _opened_before(self, asset_ids: list[int]) -> set[tuple[int, str, int]]:
        query = (
            select(AssetPortChange.asset_id, AssetPortChange.protocol, AssetPortChange.port)
            .where(AssetPortChange.asset_id.in_(asset_ids), AssetPortChange.state == OPEN)
            .distinct()
        )
        return {tuple(r) for r in self.connection.execute(query)}  # type: ignore[misc]

    def _new_port(self, asset_id: int, port: dict[str, Any], state: str) -> dict[str, Any]:
        return {
            "asset_id": asset_id,
            "protocol": port["protocol"],
            "port": port["port"],
            "state": state,
            "service": port.get("service"),
            "product": port.get("product"),
            "version": port.get("version"),
            "first_seen": self.at,
            "last_seen": self.at,
        }

    @staticmethod
    def _port_update(was: _Known, state: str, port: dict[str, Any]) -> dict[str, Any]:
        # A scan that tells no service (masscan, nmap without -sV) keeps what an earlier one found.
        return {
            "b_id": was.id,
            "b_state": state,
            "b_service": port.get("service") or was.service,
            "b_product": port.get("product") or was.product,
            "b_version": port.get("version") or was.version,
        }

    def _change(
        self, asset_id: int, key: tuple[str, int], state: str, previous: str | None, opened_before: set[tuple[int, str, int]]
    ) -> dict[str, Any]:
        if state == OPEN:
            change = "reopened" if (asset_id, *key) in opened_before else "opened"
            opened_before.add((asset_id, *key))
        else:
            change = "closed" if previous == OPEN else "state"
        return {
            "asset_id": asset_id,
            "protocol": key[0],
            "port": key[1],
            "change": change,
            "state": state,
            "previous": previous,
            "scan_id": self.scan_id,
            "at": self.at,
        }

    def _insert_ignoring(self, model: Any, rows: list[dict[str, Any]], ignore: bool = True) -> None:
        """Insert rows; with `ignore`, one that another transaction stored first is left as that one stored it."""
        if not rows:
            return
        if not ignore:
            self.connection.execute(insert(model), rows)
            return
        dialect = postgresql if self.connection.dialect.name == "postgresql" else sqlite
        self.connection.execute(dialect.insert(model).on_conflict_do_nothing(), rows)


def _if_up(at: datetime) -> Any:
    return case((bindparam("b_up"), at), else_=None)


def _is_address(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# --- reading ------------------------------------------------------------------------------------------------


def assets_query(network: str | None, port: int | None, service: str | None, seen_since: datetime | None) -> Select[Any]:
    query = select(Asset)
    if network:
        try:
            low, high = network_keys(network)
        except ValueError:
            raise ValidationError("network must be an address or a CIDR network such as 192.0.2.0/24", field="network") from None
        query = query.where(Asset.sort_key.between(low, high))
    if port is not None or service:
        conditions = [AssetPort.asset_id == Asset.id, AssetPort.state == OPEN]
        if port is not None:
            conditions.append(AssetPort.port == port)
        if service:
            conditions.append(or_(AssetPort.service == service, AssetPort.product == service))
        query = query.where(exists().where(and_(*conditions)))
    if seen_since is not None:
        query = query.where(Asset.last_seen >= seen_since)
    return query


def assets_page(
    session: Session,
    limit: int,
    cursor: str | None,
    network: str | None = None,
    port: int | None = None,
    service: str | None = None,
    seen_since: datetime | None = None,
) -> tuple[list[Asset], str | None]:
    """A page of assets in address order; the cursor is the last one's key (keyset paging)."""
    query = assets_query(network, port, service, seen_since)
    if cursor:
        query = query.where(Asset.sort_key > cursor)
    rows = list(session.scalars(query.order_by(Asset.sort_key).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].sort_key if len(rows) > limit else None)


def open_ports(session: Session, asset_ids: list[int]) -> dict[int, list[AssetPort]]:
    ports: dict[int, list[AssetPort]] = {i: [] for i in asset_ids}
    query = select(AssetPort).where(AssetPort.asset_id.in_(asset_ids), AssetPort.state == OPEN).order_by(AssetPort.protocol, AssetPort.port)
    for port in session.scalars(query):
        ports[port.asset_id].append(port)
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


def asset_views(session: Session, assets: list[Asset]) -> list[dict[str, Any]]:
    """Assets as lists show them (schemas.assets.Asset): with their open ports."""
    ports = open_ports(session, [a.id for a in assets])
    fields = ("address", "hostnames", "mac", "status", "first_seen", "last_seen")
    return [{**{k: getattr(a, k) for k in fields}, "open_ports": ports[a.id]} for a in assets]
