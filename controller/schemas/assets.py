"""Assets: the hosts the stored scans have seen, their ports now and the ports' changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, Field

from controller.schemas.base import Query, Response
from controller.schemas.types import EXPIRES_IN, Cidr, MaybeTimestamp, PageSize, Timestamp, query_int

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since(value: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise) or an age such as 7d, 12h, 30m."""
    if match := EXPIRES_IN.fullmatch(value):
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])
        except OverflowError:  # before year 1: since ever
            return datetime.min.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("seen_since must be an ISO 8601 time such as 2026-12-01T00:00:00Z or an age such as 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _since(value: str) -> str:
    since(value)
    return value


class AssetQuery(Query):
    messages = {
        "port": "port must be an integer from 1 to 65535",
        "cursor": "cursor is not valid: give next_cursor of an earlier page",
        "service": "service must be a string",
        "seen_since": "seen_since must be an ISO 8601 time such as 2026-12-01T00:00:00Z or an age such as 7d",
    }

    network: Cidr | None = Field(default=None, description="Only assets inside this network (or this address).")
    port: query_int(1, 65535) | None = Field(default=None, description="Only assets with this port open.")  # type: ignore[valid-type]
    service: str | None = Field(
        default=None, max_length=255, description="Only assets with an open port of this service (nmap's name: ssh, http)."
    )
    seen_since: Annotated[str, AfterValidator(_since)] | None = Field(
        default=None,
        description="Only assets seen up since this time (ISO 8601) or within this age (7d, 12h, 30m).",
        json_schema_extra={"format": "cloudx-since"},
    )
    limit: PageSize = Field(default=50, description="Page size, 1 to 500.")
    cursor: str | None = Field(default=None, pattern=r"^(4[0-9a-f]{8}|6[0-9a-f]{32})$", description="next_cursor of the previous page.")

    @property
    def since(self) -> datetime | None:
        return since(self.seen_since) if self.seen_since else None


class AssetPort(Response):
    protocol: str
    port: int
    state: str
    service: str | None
    product: str | None
    version: str | None
    first_seen: Timestamp
    last_seen: Timestamp = Field(description="When a scan last reported this port.")


class Asset(Response):
    address: str
    hostnames: list[str]
    mac: str | None
    status: str = Field(description="up or down, as the last scan that reported it saw it.")
    first_seen: Timestamp
    last_seen: MaybeTimestamp = Field(description="When a scan last saw it up.")
    open_ports: list[AssetPort]


class AssetPage(Response):
    assets: list[Asset]
    next_cursor: str | None


class PortChange(Response):
    protocol: str
    port: int
    change: str = Field(description="opened (first seen open), reopened (open again after closed), closed, or state.")
    state: str
    previous: str | None
    scan_job_id: str | None = Field(description="The scan that saw the change (null once that scan is deleted).")
    at: Timestamp


class AssetScan(Response):
    job_id: str
    tool: str
    scan_type: str
    created_at: Timestamp


class AssetDetail(Response):
    address: str
    hostnames: list[str]
    mac: str | None
    status: str
    first_seen: Timestamp
    last_seen: MaybeTimestamp
    ports: list[AssetPort] = Field(description="Every port a scan reported, in its latest state.")
    history: list[PortChange]
    scans: list[AssetScan]
