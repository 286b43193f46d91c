"""Imports: the output file of a scan run elsewhere (nmap XML, masscan JSON or stdout, zmap CSV) becomes a scan record.

An imported scan is a job of kind `import`, created already final (no worker ever claims it), and a scan whose
results are the scanner role's own parsers' reading of the file, stored the way a real scan's are: the file, its
summary.json and hosts.jsonl are written into the scan's results directory (`import/`, where a real scan has one
per scanner host) and `controller.services.scans.store_results` reads them, updating the assets in the same
transaction. The file is written to disk as it arrives (never held in memory) under its own size limit
(CLOUDX_IMPORT_MAX_BYTES). Nothing is stored of a file that is refused: entity declarations and external
entities, a format that is not the tool's, a malformed document, one too large. A truncated file is stored, with
`truncated: true` in its summary. The API (`POST /api/imports`) and the CLI (`cloudx import`) both call
`import_scan`.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import re
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from sqlalchemy import delete, update

from controller.config import Config
from controller.errors import ApiError, ValidationError
from controller.scanlib import scanner
from controller.services.scans import results_root, store_results
from controller.store.database import Database
from controller.store.models import Job, Scan, utcnow

KIND = "import"
IMPORT_DIR = "import"  # the scan's results directory: a real scan has one per scanner host
CHUNK = 1 << 20
HEAD = 64 * 1024  # what format detection reads of the file
TOOLS = ("nmap", "masscan", "zmap")
FORMATS = {
    "nmap-xml": "nmap XML (-oX)",
    "masscan-json": "masscan JSON (-oJ)",
    "masscan-stdout": 'masscan output ("Discovered open port" lines)',
    "zmap-csv": "zmap CSV",
}
TOOL_FORMATS = {"nmap": "nmap XML (-oX)", "masscan": "masscan JSON (-oJ) or output", "zmap": "zmap CSV (a header naming saddr)"}
RAW_FILES = {"nmap": "raw.xml", "masscan": "raw.json", "zmap": "raw.csv"}
UPLOAD = "upload"
NAME_CHARS = re.compile(r"[^A-Za-z0-9._+@()-]+")
_DISCOVERED = re.compile(rb"^Discovered open port [0-9]+/[a-z]+ on ", re.MULTILINE)
# nmap options that take the next argument as their value: what is left are the targets.
NMAP_VALUE_OPTIONS = frozenset(
    {
        "-p",
        "-oX",
        "-oN",
        "-oG",
        "-oA",
        "-oS",
        "-oM",
        "-iL",
        "-iR",
        "-e",
        "-S",
        "-D",
        "-g",
        "-b",
        "-sI",
        "--top-ports",
        "--port-ratio",
        "--max-retries",
        "--stats-every",
        "--script",
        "--script-args",
        "--script-args-file",
        "--min-rate",
        "--max-rate",
        "--host-timeout",
        "--exclude",
        "--excludefile",
        "--source-port",
        "--data",
        "--data-string",
        "--data-length",
        "--ip-options",
        "--ttl",
        "--dns-servers",
        "--version-intensity",
        "--scan-delay",
        "--max-scan-delay",
        "--min-hostgroup",
        "--max-hostgroup",
        "--min-parallelism",
        "--max-parallelism",
        "--min-rtt-timeout",
        "--max-rtt-timeout",
        "--initial-rtt-timeout",
        "--mtu",
        "--spoof-mac",
        "--datadir",
        "--servicedb",
        "--versiondb",
        "--stylesheet",
        "--resume",
        "--proxies",
        "--exclude-ports",
        "--script-timeout",
        "--max-os-tries",
        "--defeat-icmp-ratelimit",
    }
)


class TooLarge(ApiError):
    status = 413


def too_large(config: Config) -> TooLarge:
    return TooLarge(f"the file is larger than {config.IMPORT_MAX_BYTES} bytes (CLOUDX_IMPORT_MAX_BYTES); nothing was stored")


def check_length(config: Config, length: int | None) -> None:
    """Refuse at once a body whose declared length is over the limit."""
    if length is not None and length > config.IMPORT_MAX_BYTES:
        raise too_large(config)


def source_name(name: str | None, default: str) -> str:
    """The file's name as a scan's source: its last path component, only plain characters, at most 255."""
    base = re.split(r"[/\\]", name or "")[-1]
    cleaned = NAME_CHARS.sub("_", base).strip("._ ")[:255]
    return cleaned or default


@dataclass
class Imported:
    """What import_scan stored (schemas.imports.Imported)."""

    job_id: str
    tool: str
    scan_type: str
    target: str
    ports: str | None
    source: str
    status: str
    hosts: int
    truncated: bool


@dataclass
class Tally:
    """What the hosts of a file add up to, read as they stream past (constant memory)."""

    hosts: int = 0
    hosts_up: int = 0
    open_ports: int = 0
    # per address family: [count, lowest, highest] as integers
    spans: dict[int, list[int]] = field(default_factory=dict)
    protocols: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)  # at most two: whether one port was seen, and which

    def add(self, host: dict[str, Any]) -> None:
        self.hosts += 1
        self.hosts_up += host["status"] == "up"
        self.open_ports += sum(1 for port in host["ports"] if port["state"] == "open")
        for port in host["ports"]:
            self.protocols.add(port["protocol"])
            if len(self.ports) < 2:
                self.ports.add(port["port"])
        try:
            ip = ipaddress.ip_address(host["address"])
        except (TypeError, ValueError):
            return
        span = self.spans.get(ip.version)
        if span is None:
            self.spans[ip.version] = [1, int(ip), int(ip)]
        else:
            span[0] += 1
            span[1], span[2] = min(span[1], int(ip)), max(span[2], int(ip))

    def covering(self) -> str | None:
        """The smallest network covering the hosts' addresses (of the family most of them have); one address as itself."""
        if not self.spans:
            return None
        version, (_, low, high) = max(self.spans.items(), key=lambda item: item[1][0])
        bits = 32 if version == 4 else 128
        kind = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network  # an int alone would be read as IPv4
        network = kind((low, bits - (low ^ high).bit_length()), strict=False)
        return str(network.network_address) if network.prefixlen == bits else network.with_prefixlen


class Meta(NamedTuple):
    """What the file says of the scan besides its hosts."""

    scan_type: str
    ports: str | None
    target: str | None
    scanned: str | None  # the address or network it covered, for comparisons (a real scan's scanner_target)


@dataclass
class Parsed:
    tool: str
    format: str
    info: dict[str, Any]
    tally: Tally
    header: list[str] = field(default_factory=list)


# --- the one path --------------------------------------------------------------------------------------------


def import_scan(
    db: Database, config: Config, created_by: str, chunks: Iterable[bytes], filename: str | None, tool: str | None = None
) -> Imported:
    """Store a scanner's output file as a scan (see the module's docstring). ValidationError (400) for a wrong tool,
    an unknown format, a refused or malformed file; TooLarge (413) over CLOUDX_IMPORT_MAX_BYTES."""
    if tool is not None and tool not in TOOLS:
        raise ValidationError(f"tool must be one of: {', '.join(TOOLS)}", field="tool")
    staging = _staging(config)
    try:
        size = _receive(chunks, staging / UPLOAD, config)
        parsed = _parse(staging, tool)
        meta = _meta(parsed)
        source = source_name(filename, f"upload{Path(RAW_FILES[parsed.tool]).suffix}")
        summary = _summary(parsed, meta, source, size)
        (staging / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        return _record(db, config, created_by, staging, parsed, meta, summary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # moved away when stored


def _staging(config: Config) -> Path:
    root = Path(config.ARTIFACTS_DIR).resolve() / ".imports"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def _receive(chunks: Iterable[bytes], path: Path, config: Config) -> int:
    """Write the file as it arrives; TooLarge as soon as it passes the limit."""
    size, limit = 0, config.IMPORT_MAX_BYTES
    with path.open("wb") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large(config)
            out.write(chunk)
    return size


def file_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """A file's content, chunk by chunk (the CLI's source)."""
    while chunk := stream.read(CHUNK):
        yield chunk


# --- format -------------------------------------------------------------------------------------------------


def detect(head: bytes) -> str | None:
    """The format of a file from its first bytes: nmap-xml, masscan-json, masscan-stdout, zmap-csv, or None."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<"):
        return "nmap-xml"  # any XML: the parse refuses entities, and anything without <nmaprun>
    if text.startswith((b"[", b"{")):
        return "masscan-json"
    if _DISCOVERED.search(text):
        return "masscan-stdout"
    first = text.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    if "saddr" in [name.strip() for name in first.split(",")]:
        return "zmap-csv"
    return None


def _detected(path: Path, tool: str | None) -> str:
    with path.open("rb") as stream:
        head = stream.read(HEAD)
    if not head.strip():
        raise ValidationError("the file is empty: nothing to import", field="body")
    found = detect(head)
    expected = TOOL_FORMATS.get(tool or "", "nmap XML, masscan JSON or output, or zmap CSV")
    if found is None:
        raise ValidationError(f"unrecognised format: the file is not {expected}", field="body")
    if tool is not None and not found.startswith(f"{tool}-"):
        raise ValidationError(f"the file is {FORMATS[found]}, not {tool}'s output ({expected}); leave out tool to detect it", field="tool")
    return found


def _parse(staging: Path, tool: str | None) -> Parsed:
    """Detect the format, then write hosts.jsonl with the scanner role's parser of it; the file is kept as raw.*."""
    found = _detected(staging / UPLOAD, tool)
    parsed = Parsed(tool=found.split("-")[0], format=found, info={}, tally=Tally())
    raw = staging / RAW_FILES[parsed.tool]
    (staging / UPLOAD).rename(raw)
    try:
        with _open(raw, found) as stream:
            if found == "zmap-csv":
                parsed.header = [name.strip() for name in stream.readline().split(",")]
                stream.seek(0)
            scanner.write_jsonl(_hosts(found, stream, parsed.info), str(staging / "hosts.jsonl"), parsed.tally.add)
    except scanner.UnsafeXMLError as exc:
        raise ValidationError(f"{exc}; nothing was stored", field="body") from None
    except (ValueError, TypeError, AttributeError, KeyError, csv.Error) as exc:
        raise ValidationError(f"malformed {FORMATS[found]}: {str(exc)[:200]}; nothing was stored", field="body") from None
    _check_parsed(parsed)
    return parsed


def _open(path: Path, found: str) -> IO[Any]:
    if found == "nmap-xml":
        return path.open("rb")
    return path.open(encoding="utf-8", errors="replace", newline="")


def _hosts(found: str, stream: IO[Any], info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if found == "nmap-xml":
        return scanner.parse_nmap_xml(stream, info)
    if found == "masscan-json":
        return scanner.parse_masscan(stream, None, info)
    if found == "masscan-stdout":
        return scanner.parse_masscan(None, stream, info)
    return scanner.parse_zmap_csv(stream, info)


def _check_parsed(parsed: Parsed) -> None:
    """A document broken beyond a truncation is refused, as is an XML document that is not nmap's."""
    info = parsed.info
    if parsed.tool == "nmap":
        if "args" not in info:
            raise ValidationError("the XML is not nmap's (no <nmaprun> element); nothing was stored", field="body")
        if str(info.get("error") or "").startswith("malformed nmap XML"):
            raise ValidationError(f"{info['error'][:300]}; nothing was stored", field="body")
    elif not parsed.tally.hosts and info.get("truncated"):
        raise ValidationError(f"malformed {FORMATS[parsed.format]}: no record could be read; nothing was stored", field="body")


# --- what the file says of the scan ----------------------------------------------------------------------------


def _meta(parsed: Parsed) -> Meta:
    meta = {"nmap": _nmap_meta, "masscan": _masscan_meta, "zmap": _zmap_meta}[parsed.tool](parsed)
    if meta.target is None:
        raise ValidationError("the file names no target and reports no host: nothing to import", field="body")
    return meta


def _nmap_meta(parsed: Parsed) -> Meta:
    args = str(parsed.info.get("args") or "")
    try:
        tokens = shlex.split(args)
    except ValueError:
        tokens = args.split()
    options, targets = _nmap_split(tokens[1:])
    ports = _valid_ports(options.get("-p"))
    covering = parsed.tally.covering()
    valid = [t for t in map(_valid_target, targets) if t]
    target = valid[0] if len(valid) == 1 else covering
    scanned = target if target and _is_network(target) else covering
    return Meta(_nmap_scan_type(options, parsed.info), ports, target, scanned)


def _nmap_split(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """nmap's arguments as options (value or "") and targets."""
    options: dict[str, str] = {}
    targets: list[str] = []
    rest = iter(tokens)
    for token in rest:
        if token == "--":
            targets += list(rest)
        elif token in NMAP_VALUE_OPTIONS:
            options[token] = next(rest, "")
        elif token.startswith("--") and "=" in token:
            name, _, value = token.partition("=")
            options[name] = value
        elif token.startswith("-p") and len(token) > 2 and not token.startswith("-P"):
            options["-p"] = token[2:]
        elif token.startswith("-"):
            options[token] = ""
        else:
            targets.append(token)
    return options, targets


def _nmap_scan_type(options: dict[str, str], info: dict[str, Any]) -> str:
    """The catalogue's scan type the arguments are (scanner.SCAN_TYPES["nmap"]), as well as they tell; else default."""
    protocols = set(info.get("probed") or {})
    rules: list[tuple[str, Callable[[], bool]]] = [
        ("intense", lambda: "-A" in options),
        ("udp", lambda: protocols == {"udp"} or ("-sU" in options and "tcp" not in protocols)),
        ("quick", lambda: "--top-ports" in options),
        ("tcp", lambda: options.get("-p") in ("-", "1-65535", "0-65535")),
    ]
    return next((name for name, applies in rules if applies()), "default")


def _valid_ports(ports: str | None) -> str | None:
    try:
        return scanner.parse_ports(ports)
    except scanner.ScanInputError:
        return None


def _valid_target(target: str) -> str | None:
    try:
        return str(scanner.validate_target(target))
    except scanner.ScanInputError:
        return None


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _masscan_meta(parsed: Parsed) -> Meta:
    protocols = parsed.tally.protocols
    scan_type = "ping_scan" if not protocols else "udp_scan" if protocols == {"udp"} else "tcp_scan"
    covering = parsed.tally.covering()
    return Meta(scan_type, None, covering, covering)  # masscan's file does not say which ports it probed


def _zmap_meta(parsed: Parsed) -> Meta:
    tcp = "sport" in parsed.header
    # zmap probes one port: the one its replies came from.
    ports = str(next(iter(parsed.tally.ports))) if tcp and len(parsed.tally.ports) == 1 else None
    covering = parsed.tally.covering()
    return Meta("tcp_syn" if tcp else "icmp_echo", ports, covering, covering)


def _summary(parsed: Parsed, meta: Meta, source: str, size: int) -> dict[str, Any]:
    """summary.json as the scanner role writes it (plugins/modules/cloudx_scan.py), with what was imported."""
    info, tally = parsed.info, parsed.tally
    truncated = bool(info.get("truncated"))
    failed = parsed.tool == "nmap" and info.get("exit") == "error"
    elapsed = info.get("elapsed")
    return {
        "state": "failed" if failed else "truncated" if truncated else "completed",
        "tool": parsed.tool,
        "scan_type": meta.scan_type,
        "target": meta.target,
        "ports": meta.ports,
        "argv": info.get("args"),
        "rc": None,
        "elapsed": float(elapsed) if isinstance(elapsed, str) and elapsed.replace(".", "", 1).isdigit() else None,
        "truncated": truncated,
        "error": info.get("error"),
        "files": {"raw": RAW_FILES[parsed.tool], "hosts": "hosts.jsonl", "summary": "summary.json"},
        "probed": scanner.probed_ports(parsed.tool, meta.scan_type, meta.ports, info),
        "hosts": tally.hosts,
        "hosts_up": tally.hosts_up,
        "open_ports": tally.open_ports,
        "imported": {"source": source, "format": FORMATS[parsed.format], "bytes": size, "version": info.get("version")},
    }


# --- the records ----------------------------------------------------------------------------------------------


def _record(db: Database, config: Config, created_by: str, staging: Path, parsed: Parsed, meta: Meta, summary: dict[str, Any]) -> Imported:
    """The job (already final: never claimed), the scan, and its results stored through the scans' own path."""
    job_id = str(uuid.uuid4())
    directory = results_root(config, job_id) / job_id / IMPORT_DIR
    directory.parent.mkdir(parents=True)
    os.replace(staging, directory)
    reason = "imported from a truncated file: the hosts complete in it were stored" if summary["truncated"] else None
    try:
        with db.session() as session:
            now = utcnow()
            job = Job(
                id=job_id,
                kind=KIND,
                playbook="",
                inventory="",
                extra_vars={
                    "scanner_tool": parsed.tool,
                    "scanner_scan_type": meta.scan_type,
                    "scanner_target": meta.scanned,
                    "scanner_ports": meta.ports or "",
                    "import_source": summary["imported"]["source"],
                },
                status="successful",
                status_reason=reason,
                progress=100,
                timeout=0,
                created_by=created_by,
                started_at=now,
                finished_at=now,
                final_counter=0,
            )
            session.add(job)
            source = summary["imported"]["source"]
            session.add(Scan(job=job, tool=parsed.tool, target=str(meta.target), scan_type=meta.scan_type, ports=meta.ports, source=source))
        status, reason = store_results(db, config, job_id, "successful", reason)
        if status != "successful":
            with db.session() as session:
                session.execute(update(Job).where(Job.id == job_id).values(status=status, status_reason=reason))
    except BaseException:
        with db.session() as session:
            session.execute(delete(Job).where(Job.id == job_id))
        shutil.rmtree(results_root(config, job_id).parent, ignore_errors=True)
        raise
    return Imported(
        job_id=job_id,
        tool=parsed.tool,
        scan_type=meta.scan_type,
        target=str(meta.target),
        ports=meta.ports,
        source=summary["imported"]["source"],
        status=status,
        hosts=parsed.tally.hosts,
        truncated=summary["truncated"],
    )
