# Cloud-X scanner library: scan catalogue, input validation, argument lists and
# streaming parsers for nmap XML, masscan JSON/stdout and zmap CSV.
#
# It runs on scanner hosts inside Ansible modules, so it uses the standard
# library only and stays compatible with Python 3.8. The controller imports the
# same file (controller/scanlib.py), so validation and parsing exist once.
from __future__ import annotations

import csv
import ipaddress
import json
import os
import re
import shutil
import time
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Tuple
from xml.parsers import expat

# --- catalogue -----------------------------------------------------------------

# tool -> scan type -> (description, whether a port list is required, whether one is allowed)
SCAN_TYPES: Dict[str, Dict[str, Tuple[str, bool, bool]]] = {
    "nmap": {
        "default": ("nmap -T4 -F: SYN scan of the 100 most common TCP ports (or the given ports)", False, True),
        "quick": ("nmap -T4 --top-ports 20 --max-retries 1: the 20 most common TCP ports (or the given ports)", False, True),
        "intense": ("nmap -T4 -A: SYN scan, service/version and OS detection, default scripts, traceroute", False, True),
        "tcp": ("nmap -T4 -p-: SYN scan of all 65535 TCP ports (or the given ports)", False, True),
        "udp": ("nmap -T4 -sU: UDP scan of the 100 most common UDP ports (or the given ports)", False, True),
    },
    "zmap": {
        "tcp_syn": ("zmap -M tcp_synscan -p PORT: one TCP SYN probe per address; reports open ports (SYN-ACK)", True, True),
        "icmp_echo": ("zmap -M icmp_echoscan: ICMP echo request per address; echo reply = host up", False, False),
    },
    "masscan": {
        "tcp_scan": ("masscan -p PORTS: asynchronous TCP SYN scan; reports open ports", True, True),
        "udp_scan": ("masscan -pU:PORTS: asynchronous UDP scan with protocol payloads; reports open ports", True, True),
        "ping_scan": ("masscan --ping: ICMP echo request per address; echo reply = host up", False, False),
    },
}

# Tools that report open ports only: a port they probed and did not list is not open (closed or filtered).
OPEN_ONLY_TOOLS = ("masscan", "zmap")
MAX_PORT_SPEC_LENGTH = 1024
# A list holds ports or ranges, one each: at most 85, so that any list of them ("65535-65535" at the longest)
# fits MAX_PORT_SPEC_LENGTH joined (85 * 12 - 1 = 1019), and the list's rule is its length alone. A string takes more.
MAX_PORT_LIST_ITEMS = 85
_PORT_ITEM = re.compile(r"^[0-9]{1,5}(-[0-9]{1,5})?$")
_TARGET_CHARS = re.compile(r"^[A-Za-z0-9.:/-]+$")
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PORT_SPEC = re.compile(r"^[0-9]{1,5}(-[0-9]{1,5})?(,[0-9]{1,5}(-[0-9]{1,5})?)*$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class ScanInputError(ValueError):
    """A scan request that must be refused; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def validate_tool_and_type(tool: Any, scan_type: Any) -> Tuple[str, str]:
    if not isinstance(tool, str) or tool not in SCAN_TYPES:
        raise ScanInputError("tool", "tool must be one of: {}".format(", ".join(sorted(SCAN_TYPES))))
    types = SCAN_TYPES[tool]
    if not isinstance(scan_type, str) or scan_type not in types:
        raise ScanInputError("scan_type", "scan_type for {} must be one of: {}".format(tool, ", ".join(types)))
    return tool, scan_type


def validate_target(target: Any) -> str:
    """Return the canonical target (IPv4/IPv6 address, CIDR network or hostname) or raise."""
    if not isinstance(target, str) or not target:
        raise ScanInputError("target", "target is required: an IP address, a CIDR network or a hostname")
    if len(target) > 253:
        raise ScanInputError("target", "target is too long")
    if target.startswith("-"):
        raise ScanInputError("target", "target must not start with '-'")
    if not _TARGET_CHARS.fullmatch(target):
        raise ScanInputError("target", "target may hold only letters, digits and . : / - (no whitespace or shell characters)")
    if "/" in target:
        try:
            network = ipaddress.ip_network(target, strict=False)
        except ValueError:
            raise ScanInputError("target", f"target {target!r} is not a valid CIDR network") from None
        return network.with_prefixlen
    try:
        return str(ipaddress.ip_address(target))
    except ValueError:
        pass
    name = target[:-1] if target.endswith(".") else target
    labels = name.split(".")
    if not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ScanInputError("target", f"target {target!r} is not an IP address, a CIDR network or a hostname")
    # nmap reads names made of digits and dashes ("10.0.0.0-255") as address ranges.
    if all(set(label) <= set("0123456789-") for label in labels):
        raise ScanInputError("target", f"target {target!r} looks like an address range; give a CIDR network")
    return name.lower()


def target_size(target: str) -> int:
    """Number of addresses a validated target covers (1 for an address or a hostname)."""
    if "/" in target:
        return ipaddress.ip_network(target, strict=False).num_addresses
    return 1


def parse_ports(ports: Any) -> str | None:
    """Validate a port list such as "22,80,8000-8100"; None or "" means none given."""
    if ports is None or ports == "":
        return None
    ports = _port_text(ports).replace(" ", "")
    if len(ports) > MAX_PORT_SPEC_LENGTH or not _PORT_SPEC.fullmatch(ports):
        raise ScanInputError("ports", "ports must look like 22,80,1000-2000")
    for part in ports.split(","):
        _check_port_range(part)
    return ports


def _port_text(ports: Any) -> str:
    """A port number, a list of numbers and ranges or a string, as one string (not yet checked)."""
    if isinstance(ports, bool):
        raise ScanInputError("ports", "ports must be a port number, a list or a string like 22,80,1000-2000")
    if isinstance(ports, int):
        return str(ports)
    if isinstance(ports, (list, tuple)):
        if not ports or not all(_port_item(p) for p in ports):
            raise ScanInputError("ports", "ports list must hold port numbers or ranges such as 1000-2000, one each")
        if len(ports) > MAX_PORT_LIST_ITEMS:
            raise ScanInputError("ports", f"ports list may hold at most {MAX_PORT_LIST_ITEMS} ports or ranges (a string takes more)")
        return ",".join(str(p) for p in ports)
    if not isinstance(ports, str):
        raise ScanInputError("ports", "ports must be a port number, a list or a string like 22,80,1000-2000")
    return ports


def _port_item(item: Any) -> bool:
    if isinstance(item, bool):
        return False
    return isinstance(item, int) or (isinstance(item, str) and _PORT_ITEM.fullmatch(item) is not None)


def _check_port_range(part: str) -> None:
    """One element of a port list: a port or a range low-high, within 1-65535."""
    bounds = [int(b) for b in part.split("-")]
    if not all(1 <= b <= 65535 for b in bounds):
        raise ScanInputError("ports", "ports must be between 1 and 65535")
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        raise ScanInputError("ports", f"port range {part} is reversed")


def validate_request(tool: Any, scan_type: Any, target: Any, ports: Any) -> Dict[str, Any]:
    """Validate one scan request the same way in the role and in the controller."""
    tool, scan_type = validate_tool_and_type(tool, scan_type)
    target = validate_target(target)
    ports = parse_ports(ports)
    _, needs_ports, takes_ports = SCAN_TYPES[tool][scan_type]
    if needs_ports and not ports:
        raise ScanInputError("ports", f"{tool} {scan_type} needs ports")
    if ports and not takes_ports:
        raise ScanInputError("ports", f"{tool} {scan_type} does not take ports")
    if tool == "zmap":
        if ":" in target:
            raise ScanInputError("target", "zmap scans IPv4 targets only")
        if ports and not re.fullmatch(r"[0-9]{1,5}", ports):
            raise ScanInputError("ports", "zmap tcp_syn scans exactly one port")
    if tool == "masscan" and not re.fullmatch(r"[0-9.:a-fA-F/]+", target):
        raise ScanInputError("target", "masscan needs an IP address or a CIDR network, not a hostname")
    return {"tool": tool, "scan_type": scan_type, "target": target, "ports": ports}


MAX_SHARDS = 64
MAX_RETRIES = 10
MASSCAN_SHARD_PORT = 61000  # shard i of a sharded masscan scan sends from port 61000 + i


class Shard(NamedTuple):
    """One part of a scan split across scanners: `index` (0-based) of `count`; zmap and masscan permute the
    addresses with `seed`, which every shard of a scan shares (each tool's own sharding needs that)."""

    index: int
    count: int
    seed: int | None


UNSHARDED = Shard(0, 1, None)


def validate_retries(retries: Any) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ScanInputError("retries", f"retries must be a whole number from 0 to {MAX_RETRIES}")
    return retries


def validate_shard(request: Dict[str, Any], index: Any, count: Any, seed: Any) -> Shard:
    """The shard of a validated request that scan `index` of `count` covers, or ScanInputError."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SHARDS:
        raise ScanInputError("shards", f"shards must be a whole number from 1 to {MAX_SHARDS}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ScanInputError("shard", f"shard must be a whole number from 0 to {count - 1} (shards is {count})")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise ScanInputError("seed", "seed must be a whole number from 0 to 4294967295")
    if count > 1:
        tool, target = request["tool"], request["target"]
        if tool == "nmap":
            if not _is_address_or_network(target):
                raise ScanInputError("target", "a sharded nmap scan needs an IP address or a CIDR network, not a hostname")
            if target_size(target) < count:
                raise ScanInputError("shards", f"{target} has {target_size(target)} address(es): fewer than {count} shards")
        elif seed is None:
            raise ScanInputError("seed", f"every shard of a sharded {tool} scan needs the same seed")
    return Shard(index, count, seed if count > 1 else None)


def _is_address_or_network(target: str) -> bool:
    try:
        ipaddress.ip_network(target, strict=False)
    except ValueError:
        return False
    return True


def shard_blocks(target: str, index: int, count: int) -> List[str]:
    """nmap's part of a sharded scan: the target's addresses cut into `count` contiguous blocks as even as
    they can be (sizes differ by one at most), block `index` as the fewest CIDR networks that cover it."""
    if count == 1:
        return [target]
    network = ipaddress.ip_network(target, strict=False)
    size = network.num_addresses
    first = int(network.network_address)
    start, end = first + size * index // count, first + size * (index + 1) // count - 1
    version = type(network.network_address)  # ip_address(int) would make an IPv4 address of a small IPv6 one
    return [block.with_prefixlen for block in ipaddress.summarize_address_range(version(start), version(end))]  # type: ignore[arg-type]


def probed_ports(tool: str, scan_type: str, ports: str | None, info: Dict[str, Any]) -> Dict[str, str]:
    """The ports a scan probed, per protocol, as port specs: what nmap's XML says it probed (its <scaninfo>), or the
    ports masscan and zmap were given. Empty for host discovery."""
    if tool == "nmap":
        return dict(info.get("probed") or {})
    if not ports:
        return {}
    return {"udp" if scan_type == "udp_scan" else "tcp": ports}


def validate_mac(value: str, field: str) -> str:
    if not _MAC.fullmatch(value):
        raise ScanInputError(field, f"{field} must be a MAC address like 02:00:00:00:00:01")
    return value.lower()


def validate_interface(value: str, field: str) -> str:
    if not _IFNAME.fullmatch(value) or value.startswith("-"):
        raise ScanInputError(field, f"{field} is not a valid interface name")
    return value


# --- argument lists ------------------------------------------------------------


def build_argv(
    request: Dict[str, Any],
    raw_output: str,
    interface: str = "",
    gateway_mac: str = "",
    source_ip: str = "",
    exclude_file: str = "",
    rate: int = 1000,
    wait: int = 5,
    stats_every: int = 2,
    shard: Shard = UNSHARDED,
    retries: int = 0,
) -> List[str]:
    """The scanner's argument list; it is executed without a shell.

    The target always comes last, after "--" where the tool accepts it, so it can
    never be read as an option. `shard` (validate_shard's) splits the scan with the tool's own mechanism.
    """
    tool, scan_type, target, ports = request["tool"], request["scan_type"], request["target"], request["ports"]
    builder = _ARGV_BUILDERS.get(tool)
    if builder is None:
        raise ScanInputError("tool", f"unknown tool {tool!r}")
    validate_retries(retries)
    options = _ArgvOptions(raw_output, interface, gateway_mac, source_ip, exclude_file, rate, wait, stats_every, shard, retries)
    return builder(scan_type, target, ports, options)


class _ArgvOptions(NamedTuple):
    """What build_argv was given besides the request."""

    raw_output: str
    interface: str
    gateway_mac: str
    source_ip: str
    exclude_file: str
    rate: int
    wait: int
    stats_every: int
    shard: Shard
    retries: int


def _nmap_argv(scan_type: str, target: str, ports: str | None, options: _ArgvOptions) -> List[str]:
    # --noninteractive would silence --stats-every
    argv = ["nmap", "-T4", "-oX", options.raw_output, "--stats-every", f"{options.stats_every}s"]
    if ":" in target:
        argv.append("-6")
    argv += _nmap_scan_type_args(scan_type, ports)
    if options.exclude_file:
        argv += ["--excludefile", options.exclude_file]
    # nmap has no sharding of its own: each shard scans its own block of the target's addresses.
    return [*argv, "--", *shard_blocks(target, options.shard.index, options.shard.count)]


def _nmap_scan_type_args(scan_type: str, ports: str | None) -> List[str]:
    given = ["-p", ports] if ports else []
    if scan_type == "default":
        return given or ["-F"]
    if scan_type == "quick":
        return (given or ["--top-ports", "20"]) + ["--max-retries", "1"]
    if scan_type == "intense":
        return ["-A", *given]
    if scan_type == "tcp":
        return ["-p", ports or "1-65535"]
    if scan_type == "udp":
        return ["-sU", *given]
    return []


def _zmap_argv(scan_type: str, target: str, ports: str | None, options: _ArgvOptions) -> List[str]:
    if not target:  # without a target zmap scans the whole IPv4 space
        raise ScanInputError("target", "zmap needs a target")
    argv = ["zmap", "-o", options.raw_output, "-r", str(options.rate), "-c", str(options.wait)]
    if scan_type == "tcp_syn":
        argv += ["-M", "tcp_synscan", "-p", ports, "-f", "saddr,sport,classification,success,repeat,ttl"]
        # zmap 2.1 reports successful (SYN-ACK) replies only, whatever the filter says.
        argv += ["--output-filter", "success = 1 && repeat = 0"]
    else:
        argv += ["-M", "icmp_echoscan", "-f", "saddr,type,code,classification,success,repeat,ttl"]
        argv += ["--output-filter", "success = 1 && repeat = 0"]
    argv += _link_args(options, "-i", "-G", "-S")
    argv += ["-b", options.exclude_file] if options.exclude_file else []
    argv += ["-P", str(options.retries + 1)] if options.retries else []  # probes per address
    if options.shard.count > 1:  # zmap numbers its shards from 0
        argv += ["--shards", str(options.shard.count), "--shard", str(options.shard.index), "--seed", str(options.shard.seed)]
    return [*argv, "--", target]


def _masscan_argv(scan_type: str, target: str, ports: str | None, options: _ArgvOptions) -> List[str]:
    argv = ["masscan", "-oJ", options.raw_output, "--interactive", "--rate", str(options.rate), "--wait", str(options.wait)]
    if scan_type == "tcp_scan":
        argv += ["-p", ports]
    elif scan_type == "udp_scan":
        argv += ["-p", ",".join("U:" + p for p in ports.split(","))]
    else:
        argv += ["--ping"]
    argv += _link_args(options, "-e", "--router-mac", "--adapter-ip")
    argv += ["--excludefile", options.exclude_file] if options.exclude_file else []
    argv += ["--retries", str(options.retries)] if options.retries else []
    if options.shard.count > 1:  # masscan numbers its shards from 1: --shard 1/2 is the first half
        argv += ["--shard", f"{options.shard.index + 1}/{options.shard.count}", "--seed", str(options.shard.seed)]
        # masscan takes any reply that carries its SYN cookie, which the seed keys, and picks its source port from
        # the seed too: two shards on one host (or one network tap) would each report the other's finds. A port of
        # its own per shard (above Linux's ephemeral range, so no connection of the host uses it) keeps them apart.
        argv += ["--source-port", str(MASSCAN_SHARD_PORT + options.shard.index)]
    # masscan reads "--" as an unknown option; a validated target cannot start with "-".
    return [*argv, target]


_ARGV_BUILDERS: Dict[str, Callable[[str, str, Any, _ArgvOptions], List[str]]] = {
    "nmap": _nmap_argv,
    "zmap": _zmap_argv,
    "masscan": _masscan_argv,
}


def _link_args(options: _ArgvOptions, i_opt: str, mac_opt: str, src_opt: str) -> List[str]:
    argv: List[str] = []
    if options.interface:
        argv += [i_opt, validate_interface(options.interface, "interface")]
    if options.gateway_mac:
        argv += [mac_opt, validate_mac(options.gateway_mac, "gateway_mac")]
    if options.source_ip:
        argv += [src_opt, str(ipaddress.ip_address(options.source_ip))]
    return argv


# --- progress ------------------------------------------------------------------

# nmap runs several phases; each maps onto a band of the overall percentage so that
# the reported figure only rises.
_NMAP_BANDS = (
    ("ping scan", 0, 10),
    ("arp ping scan", 0, 10),
    ("parallel dns", 10, 12),
    ("service scan", 80, 90),
    ("os detection", 90, 93),
    ("nse", 93, 98),
    ("script scan", 93, 98),
    ("traceroute", 98, 99),
)
_TASKPROGRESS = re.compile(rb'<taskprogress task="([^"]*)"[^>]*percent="([0-9.]+)"')
_MASSCAN_DONE = re.compile(r"([0-9]+(?:\.[0-9]+)?)% done(?:, waiting (-?[0-9]+)-secs)?(?:.*found=([0-9]+))?")


def nmap_overall_percent(task: str, percent: float) -> float:
    name = task.lower()
    for prefix, low, high in _NMAP_BANDS:
        if name.startswith(prefix):
            return low + (high - low) * percent / 100.0
    return 12 + 68 * percent / 100.0  # the port scan itself


def nmap_progress(chunk: bytes) -> Tuple[str, float] | None:
    """Last (task, percent) of the <taskprogress> lines in a chunk of nmap XML."""
    found = _TASKPROGRESS.findall(chunk)
    if not found:
        return None
    task, percent = found[-1]
    return task.decode("utf-8", "replace"), float(percent)


def masscan_progress(text: str) -> Dict[str, Any] | None:
    """Last status line of masscan's stderr: percent done, seconds still waiting, ports found."""
    found = _MASSCAN_DONE.findall(text)
    if not found:
        return None
    percent, waiting, count = found[-1]
    return {
        "percent": min(float(percent), 100.0),
        "waiting": int(waiting) if waiting else None,
        "found": int(count) if count else None,
    }


_ZMAP_STATUS = re.compile(r"^\s*[0-9]+:[0-9]+(?::[0-9]+)? ([0-9]+)%", re.MULTILINE)


def zmap_progress(text: str) -> float | None:
    """Percent complete from the last status line zmap writes to stderr."""
    found = _ZMAP_STATUS.findall(text)
    return min(float(found[-1]), 100.0) if found else None


# --- parsers ---------------------------------------------------------------------
# Each parser yields normalized hosts:
#   {"address", "status", "reason", "hostnames": [...], "mac", "ports": [
#       {"protocol", "port", "state", "reason", "service", "product", "version"}]}
# and fills `info` (a dict) with what it learned about the run, including
# "truncated" when the output ended early (a stopped scan).


# What expat says when a document simply stops (a stopped scan) rather than being malformed.
_END_OF_INPUT_ERRORS = frozenset(
    expat.ErrorString(code)
    for code in (
        expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS],
        expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_TOKEN],
        expat.errors.codes[expat.errors.XML_ERROR_PARTIAL_CHAR],
    )
)


class UnsafeXMLError(ValueError):
    pass


def _refuse(*_args: Any) -> None:
    raise UnsafeXMLError("nmap XML with entity declarations or external references is refused")


def parse_nmap_xml(stream: IO[bytes], info: Dict[str, Any] | None = None, chunk_size: int = 1 << 16) -> Iterator[Dict[str, Any]]:
    """Stream hosts out of nmap XML with expat; entity declarations are refused.

    Only the host being read is held in memory. A document that stops early
    (a stopped or timed-out scan) yields every host that was complete.
    """
    info = {} if info is None else info
    info.setdefault("truncated", False)
    reader = _NmapReader(info)
    parser = _nmap_parser(reader)
    done = reader.done
    try:
        while True:
            chunk = stream.read(chunk_size)
            if not chunk:
                break
            parser.Parse(chunk, False)
            if done:
                yield from done
                del done[:]
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        info["truncated"] = True
        if expat.ErrorString(exc.code) not in _END_OF_INPUT_ERRORS:
            info["error"] = f"malformed nmap XML: {exc}"
    reader.close_host()
    yield from done
    if "exit" not in info:
        info["truncated"] = True


def _refuse_doctype(_name: str, sysid: Any, pubid: Any, has_internal_subset: int) -> None:
    # nmap writes a bare <!DOCTYPE nmaprun>; anything more is not nmap's and is refused.
    if has_internal_subset or sysid or pubid:
        _refuse()


def _nmap_parser(reader: _NmapReader) -> Any:
    """An expat parser that refuses entities and feeds `reader`: start tags to its handlers, end tags to `ends`."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.StartElementHandler = _dispatch(reader.starts)
    # Only start tags call Python: a 65,536-host document has 1.8 million elements, and a Python call per end
    # tag doubled the parse time. `ends` (appended to by a C method, no Python frame) holds the end tags read
    # since a host was last closed.
    parser.EndElementHandler = reader.ends.append
    return parser


def _dispatch(starts: Dict[str, Callable[[Dict[str, str]], None]]) -> Callable[[str, Dict[str, str]], None]:
    """expat's start handler: the element's own handler, if it has one."""
    handler_of = starts.get

    def start(name: str, attrs: Dict[str, str]) -> None:
        handler = handler_of(name)
        if handler is not None:
            handler(attrs)

    return start


class _NmapReader:
    """The state of one nmap XML parse: the host and port being read, the hosts complete, the run's `info`.

    A port is complete when the next one starts; a host when the next host, hint, progress report or the run's
    statistics start, or when the document stops, and only if its end tag was read.
    """

    __slots__ = ("closed", "done", "ends", "host", "info", "mixed", "port", "starts")

    def __init__(self, info: Dict[str, Any]) -> None:
        self.info = info
        self.done: List[Dict[str, Any]] = []
        self.ends: List[str] = []
        self.host: Dict[str, Any] | None = None
        self.port: Dict[str, Any] | None = None
        self.mixed = False  # the host being read has <extraports> groups that no one state describes
        self.closed = 0  # complete <host> elements read
        self.starts: Dict[str, Callable[[Dict[str, str]], None]] = {
            "host": self.on_host,
            "status": self.on_status,
            "address": self.on_address,
            "hostname": self.on_hostname,
            "port": self.on_port,
            "state": self.on_state,
            "service": self.on_service,
            "nmaprun": self.on_nmaprun,
            "runstats": self.between_hosts,
            "taskprogress": self.between_hosts,
            "finished": self.on_finished,
            "hosts": self.on_hosts,
            "hosthint": self.between_hosts,
            "scaninfo": self.on_scaninfo,
            "extraports": self.on_extraports,
        }

    def close_host(self) -> None:
        host = self.host
        if host is not None and "host" in self.ends:
            self.closed += 1
            if host["address"]:
                self.done.append(host)
            else:  # never in nmap's own output; a file from elsewhere may have one (an import refuses it)
                self.info.setdefault("host_without_address", self.closed)
        self.host = self.port = None
        del self.ends[:]

    def between_hosts(self, _attrs: Dict[str, str]) -> None:
        # What nmap writes after a host (a <hosthint> repeats the next one's address: nothing in it is read).
        self.close_host()

    def on_host(self, _attrs: Dict[str, str]) -> None:
        self.close_host()
        self.mixed = False
        self.host = {"address": None, "status": "unknown", "reason": None, "hostnames": [], "mac": None, "ports": [], "extra_state": None}

    def on_status(self, attrs: Dict[str, str]) -> None:
        host = self.host
        if host is not None and self.port is None:
            host["status"] = attrs.get("state", "unknown")
            host["reason"] = attrs.get("reason")

    def on_address(self, attrs: Dict[str, str]) -> None:
        host = self.host
        if host is None:
            return
        if attrs.get("addrtype") == "mac":
            host["mac"] = attrs.get("addr", "").lower() or None
        elif host["address"] is None:
            host["address"] = attrs.get("addr")

    def on_hostname(self, attrs: Dict[str, str]) -> None:
        host, hostname = self.host, attrs.get("name")
        if host is not None and hostname and hostname not in host["hostnames"]:
            host["hostnames"].append(hostname)

    def on_port(self, attrs: Dict[str, str]) -> None:
        host = self.host
        if host is not None:
            port = self.port = {
                "protocol": attrs.get("protocol"),
                "port": int(attrs.get("portid", 0)),
                "state": None,
                "reason": None,
                "service": None,
                "product": None,
                "version": None,
            }
            host["ports"].append(port)

    def on_state(self, attrs: Dict[str, str]) -> None:
        port = self.port
        if port is not None:
            port["state"] = attrs.get("state")
            port["reason"] = attrs.get("reason")

    def on_service(self, attrs: Dict[str, str]) -> None:
        port = self.port
        if port is not None:
            port["service"] = attrs.get("name")
            port["product"] = attrs.get("product")
            port["version"] = attrs.get("version")

    def on_extraports(self, attrs: Dict[str, str]) -> None:
        # The probed ports nmap did not list, grouped by state; under several groups, which is which is unknown.
        host, state = self.host, attrs.get("state")
        if host is not None and state:
            known = host["extra_state"]
            if self.mixed or (known is not None and {known, state} - {"closed", "filtered", "closed|filtered"}):
                # Groups of other kinds (-sSU: TCP closed, UDP open|filtered): no one state says what an unlisted port is.
                self.mixed = True
                host["extra_state"] = None
            elif known in (None, state):
                host["extra_state"] = state
            else:
                host["extra_state"] = "closed|filtered"

    def on_scaninfo(self, attrs: Dict[str, str]) -> None:
        # The ports nmap probed, per protocol: what a later scan can be compared on.
        protocol, services = attrs.get("protocol"), attrs.get("services")
        if protocol and services is not None:
            probed = self.info.setdefault("probed", {})
            probed[protocol] = ",".join(filter(None, (probed.get(protocol), services)))

    def on_nmaprun(self, attrs: Dict[str, str]) -> None:
        self.info["args"] = attrs.get("args")
        self.info["version"] = attrs.get("version")

    def on_finished(self, attrs: Dict[str, str]) -> None:
        info = self.info
        info["exit"] = attrs.get("exit")
        if attrs.get("errormsg"):
            info["error"] = attrs["errormsg"]
        info["elapsed"] = attrs.get("elapsed")

    def on_hosts(self, attrs: Dict[str, str]) -> None:
        self.info["hosts_up"] = int(attrs.get("up", 0))
        self.info["hosts_total"] = int(attrs.get("total", 0))


_DISCOVERED = re.compile(r"Discovered open port ([0-9]+)/(tcp|udp|icmp|sctp) on ([0-9A-Fa-f.:]+)")


def _masscan_port(entry: Dict[str, Any]) -> Dict[str, Any] | None:
    proto = entry.get("proto")
    if proto == "icmp":
        return None
    service = entry.get("service") if isinstance(entry.get("service"), dict) else {}
    return {
        "protocol": proto,
        "port": int(entry.get("port", 0)),
        "state": entry.get("status", "open"),
        "reason": entry.get("reason"),
        "service": service.get("name"),
        "product": None,
        "version": None,
    }


class _HostMerger:
    """masscan and zmap print one line per finding; hosts are merged by address."""

    def __init__(self) -> None:
        self.hosts: Dict[str, Dict[str, Any]] = {}

    def add(self, address: str, port: Dict[str, Any] | None, reason: str | None) -> None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            return
        host = self.hosts.get(address)
        if host is None:
            host = self.hosts[address] = {
                "address": address,
                "status": "up",
                "reason": reason,
                "hostnames": [],
                "mac": None,
                "ports": [],
            }
        if port is not None:
            key = (port["protocol"], port["port"])
            if all((p["protocol"], p["port"]) != key for p in host["ports"]):
                host["ports"].append(port)

    def result(self) -> Iterator[Dict[str, Any]]:
        for host in self.hosts.values():
            host["ports"].sort(key=lambda p: (p["protocol"], p["port"]))
            yield host


def parse_masscan(
    json_stream: IO[str] | None, stdout_stream: IO[str] | None, info: Dict[str, Any] | None = None
) -> Iterator[Dict[str, Any]]:
    """Merge masscan's -oJ file with the "Discovered open port" lines of its stdout.

    masscan writes its JSON file only when it exits cleanly; the stdout lines
    survive a SIGKILL, so both are read and merged.
    """
    info = {} if info is None else info
    info.setdefault("truncated", False)
    merger = _HostMerger()
    if json_stream is not None:
        _merge_masscan_json(merger, json_stream, info)
    if stdout_stream is not None:
        _merge_masscan_stdout(merger, stdout_stream)
    return merger.result()


def _merge_masscan_json(merger: _HostMerger, stream: IO[str], info: Dict[str, Any]) -> None:
    """Add the findings of masscan's -oJ file; "truncated" if it was not closed or a record could not be read."""
    closed = False
    for line in stream:
        line = line.strip().rstrip(",")
        if line == "]":
            closed = True
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            info["truncated"] = True
            continue
        for entry in record.get("ports", []):
            reason = "echo-reply" if entry.get("proto") == "icmp" else entry.get("reason")
            merger.add(str(record.get("ip", "")), _masscan_port(entry), reason)
    if not closed:
        info["truncated"] = True


def _merge_masscan_stdout(merger: _HostMerger, stream: IO[str]) -> None:
    """Add the "Discovered open port" lines of masscan's stdout."""
    for line in stream:
        match = _DISCOVERED.search(line)
        if match:
            port, proto, address = match.groups()
            entry = {"port": int(port), "proto": proto, "status": "open", "reason": "syn-ack" if proto == "tcp" else None}
            merger.add(address, _masscan_port(entry), "echo-reply" if proto == "icmp" else entry["reason"])


_ZMAP_TCP = {"synack": ("open", "syn-ack"), "rst": ("closed", "reset")}


def parse_zmap_csv(stream: IO[str], info: Dict[str, Any] | None = None) -> Iterator[Dict[str, Any]]:
    """Hosts from zmap's CSV (a header naming the fields, then one response per line)."""
    info = {} if info is None else info
    info.setdefault("truncated", False)
    merger = _HostMerger()
    reader = csv.reader(stream)
    header = next(reader, None)
    if not header:
        info["truncated"] = True
        return merger.result()
    for row in reader:
        if len(row) != len(header):
            info["truncated"] = True
            continue
        record = dict(zip(header, row))
        classification = record.get("classification", "")
        if "sport" in record:
            state = _ZMAP_TCP.get(classification)
            if state is None or not record["sport"].isdigit():
                continue
            port = {
                "protocol": "tcp",
                "port": int(record["sport"]),
                "state": state[0],
                "reason": state[1],
                "service": None,
                "product": None,
                "version": None,
            }
            merger.add(record.get("saddr", ""), port, "syn-ack" if state[0] == "open" else "reset")
        elif record.get("success") == "1":
            merger.add(record.get("saddr", ""), None, classification or "echo-reply")
    return merger.result()


def parse_output(tool: str, raw_output: str, stdout_file: str | None, info: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Hosts from a scan's raw output files, whichever tool produced them."""
    if tool == "nmap":
        with open(raw_output, "rb") as stream:
            yield from parse_nmap_xml(stream, info)
    elif tool == "masscan":
        json_stream = _open_text(raw_output)
        stdout_stream = _open_text(stdout_file) if stdout_file else None
        try:
            yield from parse_masscan(json_stream, stdout_stream, info)
        finally:
            for stream in (json_stream, stdout_stream):
                if stream is not None:
                    stream.close()
    elif tool == "zmap":
        stream = _open_text(raw_output)
        if stream is None:
            info["truncated"] = True
            return
        with stream:
            yield from parse_zmap_csv(stream, info)
    else:
        raise ScanInputError("tool", f"unknown tool {tool!r}")


def _open_text(path: str | None) -> IO[str] | None:
    try:
        return open(path, encoding="utf-8", errors="replace", newline="") if path else None
    except OSError:
        return None


_compact = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for every host, not one per call


def write_jsonl(hosts: Iterable[Dict[str, Any]], path: str, on_host: Callable[[Dict[str, Any]], None] | None = None) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for host in hosts:
            if on_host is not None:
                on_host(host)
            out.write(_compact(host))
            out.write("\n")


# --- a scan's end, as the modules return it ---------------------------------------------------------------
# (cloudx_scan, when it waits for the end of the scan it started, and cloudx_scan_status)


def renew_lease(work_dir: str) -> None:
    """Touch the scan's lease file (a scan whose lease is not renewed stops by itself)."""
    lease = os.path.join(work_dir, "lease")
    if os.path.isdir(work_dir):
        try:
            with open(lease, "a", encoding="utf-8"):
                os.utime(lease, None)
        except OSError:  # the scan removed its work directory meanwhile: the next look says so
            pass


def read_json(path: str) -> Dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_gone(pid: Any) -> bool:
    """Whether a process has ended (a zombie nobody reaped yet has)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read()
        return stat[stat.rfind(b")") + 2 :][:1] in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def copy_results(work_dir: str, results_dir: str, names: List[str]) -> List[str]:
    """Copy the named result files of an ended scan (the missing ones are skipped) into results_dir, created
    when missing. Run as root (become) into another user's tree, what it creates is that user's (as
    ansible-playbook's fetch would have written it)."""
    existing = results_dir
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    owner = os.stat(existing)
    chown = os.geteuid() == 0 and owner.st_uid != 0
    made = []
    path = results_dir
    while not os.path.isdir(path):
        made.append(path)
        path = os.path.dirname(path)
    os.makedirs(results_dir, exist_ok=True)
    copied = []
    for name in names:
        source = os.path.join(work_dir, name)
        if os.path.basename(name) != name or not os.path.isfile(source):
            continue
        target = os.path.join(results_dir, name)
        tmp = target + ".tmp"
        shutil.copyfile(source, tmp)
        if chown:
            os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, target)
        copied.append(name)
    if chown:
        for path in made:
            os.chown(path, owner.st_uid, owner.st_gid)
    return copied


def remove_ended_work_dir(work_dir: str, pid: Any, grace: float = 5.0) -> bool:
    """Remove an ended scan's work directory once the process that ran the scan (status.json's pid) is gone:
    nothing writes there any more. False when that process is still there after grace seconds."""
    deadline = time.monotonic() + grace
    while not process_gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    if os.path.islink(work_dir):
        os.unlink(work_dir)
        return True
    if not os.path.isdir(work_dir):
        return False
    shutil.rmtree(work_dir)
    return True
