"""Imports: the output file of a scan run elsewhere (nmap XML, masscan JSON or stdout, zmap CSV) becomes a scan record.

An imported scan is a job of kind `import`, created already final (no worker ever claims it), and a scan whose
results are the scanner role's own parsers' reading of the file, stored the way a real scan's are: the file, its
summary.json and hosts.jsonl are written into the scan's results directory (`import/`, where a real scan has one
per scanner host) and `controller.services.scans.store_results_in` reads them, updating the assets, in the one
transaction that also creates the job and the scan and sets its final status: an import is stored whole or not at all.
Every host read is checked against what the store takes (an IP address, stored canonically; ports 0-65535 of tcp,
udp, sctp or ip with a state; texts within their columns), and a file with one that is not is refused. The file
is written to disk as it arrives (never held in memory) under its own size limit (CLOUDX_IMPORT_MAX_BYTES). Nothing
is stored of a file that is refused: entity declarations and external entities, a format that is not the tool's, a
malformed document, one too large. A truncated file is stored, with `truncated: true` in its summary.

An import claims only what the file shows it scanned: the network nmap's arguments name exactly (see
`_nmap_targets`), else only the hosts it reported. Then its summary says `targets_exact: false`, and its job's
`scanner_target` (what a diff or the assets take as the network it covered) is unset, or its one host's address; the
scan's `target` is then the smallest network covering the hosts, a description, not a claim.

The API (`POST /api/imports`) and the CLI (`cloudx import`) both call `import_scan`.
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

from controller.config import Config
from controller.errors import ApiError, ValidationError
from controller.scanlib import scanner
from controller.services.scans import results_root, store_results_in
from controller.store.database import Database
from controller.store.models import Job, Scan, ScanHost, ScanPort, utcnow

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
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")  # an IPv4 address as ipaddress writes it
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
        "--scanflags",
        "--script-help",
        "--nsock-engine",
    }
)
# nmap options that make its targets other than the ones its arguments name: read from a file, random, or excluded.
NMAP_TARGET_OPTIONS = frozenset({"-iL", "-iR", "--exclude", "--excludefile", "--resolve-all"})
PROTOCOLS = ("tcp", "udp", "sctp", "ip")  # what a port's protocol may be
# The texts of a host and of a port, and their columns' lengths (the store refuses longer ones).
HOST_LIMITS = tuple((c, ScanHost.__table__.c[c].type.length) for c in ("status", "reason", "mac", "extra_state"))
PORT_LIMITS = tuple((c, ScanPort.__table__.c[c].type.length) for c in ("state", "reason", "service", "product", "version"))
ADDRESS_LIMIT = ScanHost.__table__.c.address.type.length


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

    def single(self) -> str | None:
        """The one address the hosts have, if they have one."""
        if len(self.spans) != 1:
            return None
        version, (_, low, high) = next(iter(self.spans.items()))
        kind = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address  # an int alone would be read as IPv4
        return str(kind(low)) if low == high else None

    def within(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """Whether every host's address is in `network` (a network is one range: the lowest and highest are)."""
        spans = [span for version, span in self.spans.items() if version != network.version]
        if spans:
            return False
        span = self.spans.get(network.version)
        return span is None or int(network.network_address) <= span[1] <= span[2] <= int(network.broadcast_address)

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
    # The address or network it covered, for comparisons (a real scan's scanner_target): only what it is known to
    # have covered entirely (the network its arguments name, or its one host); None when that is not known.
    scanned: str | None
    exact: bool = False  # the file says exactly which addresses were scanned (summary["targets_exact"])


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
            hosts = map(_checked, enumerate(_hosts(found, stream, parsed.info), 1))
            scanner.write_jsonl(hosts, str(staging / "hosts.jsonl"), parsed.tally.add)
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
        return _nmap_hosts(stream, info)
    if found == "masscan-json":
        return scanner.parse_masscan(stream, None, info)
    if found == "masscan-stdout":
        return scanner.parse_masscan(None, stream, info)
    return scanner.parse_zmap_csv(stream, info)


def _nmap_hosts(stream: IO[bytes], info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The role's parse (scanner.parse_nmap_xml), and a <host> without an address refused: the role skips one (a scan
    it ran itself never has one), a file sent in may. Raised once the file is read: nothing is stored either way."""
    yield from scanner.parse_nmap_xml(stream, info)
    if "host_without_address" in info:
        problem = "a <host> without an IP address (<address addr=...>)"
        raise ValidationError(f"host {info['host_without_address']}: {problem}; nothing was stored", field="body")


def _checked(numbered: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    """A parsed host as the store takes it, or ValidationError naming the host and what is wrong: an IP address
    (stored canonically), a status, each port a number 0-65535 of tcp, udp, sctp or ip with a state, and every
    text within its column (controller.store.models.ScanHost, ScanPort)."""
    number, host = numbered
    address = host.get("address")
    problem = _host_problem(host, canonical := _canonical(address))
    if problem is not None:
        shown = canonical or (repr(str(address)[:80]) if address else None)
        raise ValidationError(f"host {number}{f' ({shown})' if shown else ''}: {problem}; nothing was stored", field="body")
    host["address"] = canonical
    return host


def _canonical(address: Any) -> str | None:
    """The address as ipaddress writes it, or None; a dotted quad already so is taken as is (ip_address took most of
    the time the checks of a 65,536-host file cost)."""
    if type(address) is not str:
        return None
    if _IPV4.fullmatch(address):
        return address
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _host_problem(host: dict[str, Any], canonical: str | None) -> str | None:
    if canonical is None:
        return "its address is not an IP address" if host.get("address") else "it has no address"
    if len(canonical) > ADDRESS_LIMIT:  # an IPv6 address with a long zone (fe80::1%...)
        return f"its address is longer than {ADDRESS_LIMIT} characters"
    status = host.get("status")
    if type(status) is not str or not status:
        return "it has no status"
    return _text_problem(host, HOST_LIMITS, "its ") or _lists_problem(host)


def _lists_problem(host: dict[str, Any]) -> str | None:
    if host.get("hostnames") is None:
        host["hostnames"] = []
    hostnames = host["hostnames"]
    if type(hostnames) is not list or not all(type(h) is str and h for h in hostnames):
        return "its hostnames are not a list of names"
    if host.get("ports") is None:
        host["ports"] = []
    ports = host["ports"]
    if type(ports) is not list:
        return "its ports are not a list"
    for port in ports:
        if type(port) is not dict:
            return "a port is not a record"
        number, protocol, state = port.get("port"), port.get("protocol"), port.get("state")
        if type(number) is not int or not 0 <= number <= 65535 or protocol not in PROTOCOLS or type(state) is not str or not state:
            return _port_problem(number, protocol)
        problem = _text_problem(port, PORT_LIMITS, None)
        if problem is not None:
            return f"port {protocol}/{number}'s {problem}"
    return None


def _port_problem(number: Any, protocol: Any) -> str:
    if type(number) is not int or not 0 <= number <= 65535:
        return f"port {str(number)[:20]!r} is not a port number from 0 to 65535"
    if protocol not in PROTOCOLS:
        problem = "has no protocol" if protocol is None else f"has protocol {str(protocol)[:20]!r}"
        return f"port {number} {problem}, not one of {', '.join(PROTOCOLS)}"
    return f"port {protocol}/{number} has no state"


def _text_problem(record: dict[str, Any], limits: tuple[tuple[str, int], ...], what: str | None) -> str | None:
    get = record.get
    for column, limit in limits:
        value = get(column)
        if value is not None and (type(value) is not str or len(value) > limit):
            problem = f"{column} is not a text" if type(value) is not str else f"{column} is longer than {limit} characters"
            return f"{what or ''}{problem}"
    return None


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
    target, exact = _nmap_targets(options, targets, parsed.tally)
    scan_type = _nmap_scan_type(options, parsed.info)
    return Meta(scan_type, ports, target or parsed.tally.covering(), exact or parsed.tally.single(), exact is not None)


def _nmap_targets(options: dict[str, str], targets: list[str], tally: Tally) -> tuple[str | None, str | None]:
    """The target the arguments name (one address, network or hostname), and the network they name exactly: only
    when every target is an address or a network, together one network, holding every host reported, and no option
    adds or removes targets (-iL, -iR, --exclude, --excludefile, --resolve-all). A range (10.0.0.1-5), a wildcard
    or a name nmap reads otherwise is no exact target; nor is a hostname (the scan then covered its one host's address,
    the one the file reports, if it reports one)."""
    named = [_valid_target(t) for t in targets]
    if not named or not all(named) or NMAP_TARGET_OPTIONS & set(options):
        return None, None
    target = named[0] if len(named) == 1 else None
    try:
        networks = list(ipaddress.collapse_addresses(ipaddress.ip_network(t, strict=False) for t in named if t))
    except (TypeError, ValueError):  # a hostname, or IPv4 and IPv6 together
        networks = []
    if len(networks) != 1 or not tally.within(networks[0]):
        return target, None
    network = networks[0]
    exact = str(network.network_address) if network.prefixlen == network.max_prefixlen else network.with_prefixlen
    return target or exact, exact


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


def _masscan_meta(parsed: Parsed) -> Meta:
    protocols = parsed.tally.protocols
    scan_type = "ping_scan" if not protocols else "udp_scan" if protocols == {"udp"} else "tcp_scan"
    # masscan's file says neither which ports nor which addresses it probed: it covered only the hosts it reported.
    return Meta(scan_type, None, parsed.tally.covering(), parsed.tally.single())


def _zmap_meta(parsed: Parsed) -> Meta:
    tcp = "sport" in parsed.header
    # zmap probes one port: the one its replies came from.
    ports = str(next(iter(parsed.tally.ports))) if tcp and len(parsed.tally.ports) == 1 else None
    # Nor does zmap's say which addresses it probed.
    return Meta("tcp_syn" if tcp else "icmp_echo", ports, parsed.tally.covering(), parsed.tally.single())


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
        # false: the file does not say exactly which addresses were scanned (several targets, -iL, --exclude, a range;
        # masscan, zmap): the scan covered only the hosts it reported, and job.extra_vars.scanner_target is unset
        # (or its one host's address).
        "targets_exact": meta.exact,
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
    """The job (already final: never claimed), the scan, its results through the scans' own path, the assets and the
    final status: one transaction, so that an import is stored whole or not at all."""
    job_id = str(uuid.uuid4())
    directory = results_root(config, job_id) / job_id / IMPORT_DIR
    directory.parent.mkdir(parents=True)
    os.replace(staging, directory)
    reason = "imported from a truncated file: the hosts complete in it were stored" if summary["truncated"] else None
    source = summary["imported"]["source"]
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
                    "import_source": source,
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
            session.add(Scan(job=job, tool=parsed.tool, target=str(meta.target), scan_type=meta.scan_type, ports=meta.ports, source=source))
            session.flush()
            status, reason = store_results_in(session, config, job_id, "successful", reason)
            job.status, job.status_reason = status, reason
    except BaseException:
        shutil.rmtree(results_root(config, job_id).parent, ignore_errors=True)  # nothing of it was committed
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
