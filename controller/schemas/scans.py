"""Scans: the request, its query string and the responses."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic.json_schema import JsonDict

from controller.errors import ValidationError
from controller.scanlib import ScanInputError, scanner
from controller.schemas.base import Query, Request, Response
from controller.schemas.jobs import JobStatus
from controller.schemas.types import JOB_STATUSES, MAX_PAGE, SCAN_TOOLS, PageSize, QueryInt, Target, Timestamp

Ports = int | str | list[int | str] | None
PORTS_TEXT = (
    "A port number, a list of them, or a string like 22,80,1000-2000 (the scanner role's parse_ports). "
    "zmap tcp_syn needs exactly one port, masscan tcp_scan/udp_scan need ports, icmp_echo and ping_scan take none."
)


def _port_choices(single: bool) -> list[JsonDict]:
    port: JsonDict = {"type": "integer", "minimum": 1, "maximum": 65535}
    spec: JsonDict = {"type": "string", "format": "cloudx-port" if single else "cloudx-ports", "minLength": 1, "maxLength": 1024}
    one: JsonDict = {"type": "string", "format": "cloudx-port" if single else "cloudx-port-range", "minLength": 1, "maxLength": 11}
    items: JsonDict = {"anyOf": [port, one]}
    return [port, spec, {"type": "array", "items": items, "minItems": 1, "maxItems": 1 if single else scanner.MAX_PORT_LIST_ITEMS}]


def _variants(schema: JsonDict) -> None:
    """One alternative per tool and scan type of the scanner's catalogue: what each needs and takes."""
    variants: list[JsonDict] = []
    for tool, types in scanner.SCAN_TYPES.items():
        for scan_type, (text, needed, allowed) in types.items():
            none: JsonDict = {"enum": [None, ""]}
            ports: JsonDict = {"anyOf": _port_choices(tool == "zmap") if needed else [none, *_port_choices(False)]} if allowed else none
            target: JsonDict = {
                "nmap": {"format": "cloudx-target"},
                "zmap": {"format": "cloudx-target-ipv4", "description": "zmap scans IPv4 targets only."},
                "masscan": {"format": "cloudx-network", "description": "masscan needs an address or a network, not a hostname."},
            }[tool]
            variant: JsonDict = {
                "title": f"{tool} {scan_type}",
                "description": text,
                "properties": {"tool": {"const": tool}, "scan_type": {"const": scan_type}, "target": target, "ports": ports, "port": ports},
            }
            if needed:
                variant["anyOf"] = [{"required": ["ports"]}, {"required": ["port"]}]
            variants.append(variant)
    schema["oneOf"] = variants
    schema["not"] = {"required": ["port", "ports"]}


class ScanRequest(Request):
    """POST /api/scans."""

    model_config = {"json_schema_extra": _variants}  # type: ignore[typeddict-unknown-key]
    messages = {
        "tool": f"tool must be one of: {', '.join(sorted(SCAN_TOOLS))}",
        "scan_type": "scan_type must be a string",
        "target": "target is required: an IP address, a CIDR network or a hostname",
        "ports": "ports must be a port number, a list or a string like 22,80,1000-2000",
        "port": "port must be a port number, a list or a string like 22,80,1000-2000",
        "timeout": "timeout must be an integer number of seconds",
    }

    target: Target
    tool: str = Field(json_schema_extra={"enum": list(SCAN_TOOLS)})
    scan_type: str = Field(description="Depends on tool.")
    ports: Ports = Field(default=None, description=PORTS_TEXT)
    port: Ports = Field(default=None, description="Another name for ports; give one of them.")
    timeout: int | None = Field(default=None, ge=1, description="Seconds (at most CLOUDX_SCAN_MAX_TIMEOUT, and the policy's per role).")

    @model_validator(mode="before")
    @classmethod
    def _one_of_ports(cls, data: Any) -> Any:
        """Checked in the order the API has always named a bad field: port and ports together, then tool,
        scan type, target and ports (the scanner role's own check, on the values as given), then timeout."""
        if isinstance(data, dict):
            if "port" in data and "ports" in data:
                raise ValidationError("give either port or ports, not both", field="ports")
            try:
                scanner.validate_request(data.get("tool"), data.get("scan_type"), data.get("target"), data.get("ports", data.get("port")))
            except ScanInputError as exc:
                raise ValidationError(exc.message, field=exc.field) from None
        return data

    @model_validator(mode="after")
    def _catalogue(self, info: Any) -> Self:
        """The scanner role's own check of tool, scan type, target and ports together (canonical values kept)."""
        try:
            checked = scanner.validate_request(self.tool, self.scan_type, self.target, self.ports if self.port is None else self.port)
        except ScanInputError as exc:
            raise ValidationError(exc.message, field=exc.field) from None
        top = getattr((info.context or {}).get("config"), "SCAN_MAX_TIMEOUT", None)
        if self.timeout is not None and top is not None and self.timeout > top:
            raise ValidationError(f"timeout must be an integer number of seconds from 1 to {top}", field="timeout")
        self.tool, self.scan_type, self.target, self.ports, self.port = (
            *(checked[k] for k in ("tool", "scan_type", "target", "ports")),
            None,
        )
        return self


class ScanListQuery(Query):
    messages = {
        "before": "before must be a scan id",
        "tool": "tool must be one of: nmap, masscan, zmap",
        "status": f"status must be one of: {', '.join(JOB_STATUSES)}",
        "target": "target must be at most 255 characters",
    }

    limit: PageSize = Field(default=50, description=f"Page size, 1 to {MAX_PAGE}.")
    before: QueryInt | None = Field(default=None, description="List scans with a smaller id (next_before).")
    tool: Literal["", "nmap", "masscan", "zmap"] | None = Field(default=None, description="Only scans with this tool (empty: any).")
    status: Literal["", JobStatus] | None = Field(default=None, description="Only scans whose job has this status (empty: any).")
    target: str | None = Field(default=None, max_length=255, description="Only scans of exactly this target, as it was given.")


class Submitted(Response):
    job_id: str
    status: JobStatus


class StopRequested(Response):
    job_id: str
    status: JobStatus
    cancel_requested: Literal[True]


class Deleted(Response):
    job_id: str
    deleted: Literal[True]


class Scan(Response):
    """A scan as lists show it (services.scans.listed builds it fast: tests/test_schemas.py checks the two agree)."""

    id: int
    job_id: str
    tool: str
    target: str
    scan_type: str
    ports: str | None
    source: str | None = Field(description="An imported scan's file name (POST /api/imports); null for the controller's own.")
    status: JobStatus
    status_reason: str | None
    progress: int = Field(ge=0, le=100)
    created_at: Timestamp
    updated_at: Timestamp


class ScanPort(Response):
    protocol: str
    port: int
    state: str
    reason: str | None
    service: str | None
    product: str | None
    version: str | None


class ScanHost(Response):
    address: str
    status: str
    reason: str | None
    hostnames: list[str]
    mac: str | None
    ports: list[ScanPort]


class ScanResults(Response):
    summary: dict[str, Any] | None = Field(description="The scanner's summary.json.")
    hosts: list[ScanHost]


class ScanDetail(Scan):
    results: ScanResults


class ScanPage(Response):
    scans: list[Scan]
    next_before: int | None
