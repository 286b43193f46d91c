"""Scan results: the controller's nmap XML parse + store against python-libnmap's `NmapParser.parse_fromfile`.

The input is one nmap XML document of 65,536 hosts (4,096 with --quick), built once into bench/.cache from the
real nmap output captured from the test hosts (tests/fixtures/scans/nmap_ports.xml and nmap_intense.xml): their
header, `<hosthint>`/`<host>` elements and trailer, with the addresses, MACs, ports and port states varied per host.

Each variant runs in a fresh Python process of its own, so its peak resident memory (ru_maxrss from wait4) is its
alone. The child times its own work (after its imports) and writes the figure to a small JSON file:

- controller: `parse_nmap_xml` (streaming expat) + `write_jsonl` into hosts.jsonl, as the scanner role does on the
  scanner host, then `controller.services.scans._store_hosts` of that file into a fresh SQLite database (schema from
  `Database.upgrade()`, a Job and a Scan row created first, untimed), committed; the stored hosts and ports are
  counted and must match the document.
- libnmap: `NmapParser.parse_fromfile(path)`; `len(report.hosts)` must match the document.
- baselines: a process that imports the same modules and does nothing else, for the memory notes.

Child side: `python -m bench.scanparse --variant NAME XML WORKDIR RESULT_JSON`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, Measurement, Section, Variant, alternate, ratio, run_measured

FIXTURES = ROOT / "tests" / "fixtures" / "scans"
CACHE = Path(__file__).resolve().parent / ".cache"
FORMAT = 1  # bump when the generated document changes, so cached copies are rebuilt
HOSTS_FULL, ROUNDS_FULL = 65_536, 5
HOSTS_QUICK, ROUNDS_QUICK = 4_096, 2
INTENSE_EVERY = 32  # one host in 32 carries the -A detail (probed service with scripts, OS detection, traceroute)
PTR_EVERY = 4  # one host in 4 has a reverse-DNS name
TIME_TARGET = 2.0  # at least 2x faster than libnmap
MEMORY_TARGET = 0.2  # at most a fifth of libnmap's peak memory

# The real captures' address, MAC and timestamps, replaced per host.
REAL_ADDRESS = "198.18.0.2"
REAL_MAC = "2A:A7:C7:05:5D:24"
# nmap's table service names (nmap-services) for the ports the generated hosts carry; the first five are the captures'.
SERVICES = {
    22: "ssh",
    80: "http",
    2222: "EtherNetIP-1",
    8080: "http-proxy",
    9999: "abyss",
    21: "ftp",
    23: "telnet",
    25: "smtp",
    53: "domain",
    110: "pop3",
    111: "rpcbind",
    139: "netbios-ssn",
    143: "imap",
    443: "https",
    445: "microsoft-ds",
    993: "imaps",
    1433: "ms-sql-s",
    3306: "mysql",
    3389: "ms-wbt-server",
    5432: "postgresql",
    5900: "vnc",
    6379: "redis",
    8443: "https-alt",
    9200: "wap-wsp",
}
# (state, reason, reason_ttl) as nmap writes them in the captures; weights for the generated ports.
STATES = [("open", "syn-ack", "64"), ("closed", "reset", "64"), ("filtered", "no-response", "0")]
STATE_WEIGHTS = [4, 4, 2]
# A table-named port exactly as in nmap_ports.xml (checked against the capture when the document is built).
TABLE_PORT = (
    '<port protocol="tcp" portid="{port}"><state state="{state}" reason="{reason}" reason_ttl="{ttl}"/>'
    '<service name="{service}" method="table" conf="3"/></port>'
)

# --- the document ----------------------------------------------------------------------------------------------


def _between(text: str, start: str, end: str) -> str:
    """The first part of text from start up to and including end."""
    i = text.index(start)
    j = text.index(end, i) + len(end)
    return text[i:j]


def _real_parts() -> dict[str, str]:
    ports_xml = (FIXTURES / "nmap_ports.xml").read_text(encoding="utf-8")
    intense_xml = (FIXTURES / "nmap_intense.xml").read_text(encoding="utf-8")
    header = ports_xml[: ports_xml.index("<hosthint>")]
    hosthint = _between(ports_xml, "<hosthint>", "</hosthint>\n")
    taskprogress = _between(ports_xml, "<taskprogress ", "/>\n")
    simple_host = _between(ports_xml, "<host ", "</host>\n")
    intense_host = _between(intense_xml, "<host ", "</host>\n")
    trailer = ports_xml[ports_xml.index("<runstats>") :]
    # The probed, scripted port of the -A capture, kept whole (service product/version, cpe, NSE script output).
    probed_port = next(p for p in re.findall(r'<port protocol="tcp" portid="\d+">.*?</port>\n', intense_xml, re.S) if "<script" in p)
    # Every port of the captures must have the structure the generator writes for table-named ports.
    for port, (state, reason, ttl), service in ((22, STATES[1], "ssh"), (2222, STATES[0], "EtherNetIP-1"), (9999, STATES[2], "abyss")):
        element = TABLE_PORT.format(port=port, state=state, reason=reason, ttl=ttl, service=service)
        if element not in ports_xml:
            raise RuntimeError(f"the capture no longer holds {element}; update TABLE_PORT")
    return {
        "header": header,
        "hosthint": hosthint,
        "taskprogress": taskprogress,
        "simple_head": simple_host[: simple_host.index("<ports>")],
        "simple_tail": simple_host[simple_host.index("</ports>\n") + len("</ports>\n") :],
        "intense_head": intense_host[: intense_host.index("<ports>")],
        "intense_tail": intense_host[intense_host.index("</ports>\n") + len("</ports>\n") :],
        "probed_port": probed_port,
        "trailer": trailer,
    }


def _address(i: int) -> str:
    """Host i of a sparse sweep of 10.0.0.0/8 (one address in 97 up): every octet varies, in scan order."""
    n = (10 << 24) + i * 97 + 1
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _mac(i: int) -> str:
    return f"2A:A7:C7:{(i >> 16) & 255:02X}:{(i >> 8) & 255:02X}:{i & 255:02X}"


def _hostnames(block: str, name: str | None) -> str:
    """The host's <hostnames> element, as nmap writes it with and without a PTR name."""
    empty = "<hostnames>\n</hostnames>\n"
    if name is None:
        return block
    return block.replace(empty, f'<hostnames>\n<hostname name="{name}" type="PTR"/>\n</hostnames>\n')


def build_document(path: Path, hosts: int) -> dict[str, int]:
    """Write the n-host nmap XML document to path; return its counts (hosts, ports, bytes)."""
    parts = _real_parts()
    rng = random.Random(20_260_101 + hosts)
    pool = sorted(SERVICES)
    header = parts["header"].replace(REAL_ADDRESS, "10.0.0.0/8").replace("-p 22,80,8080,2222,9999", f"-p {','.join(map(str, pool))}")
    header = re.sub(r'numservices="\d+" services="[^"]*"', f'numservices="{len(pool)}" services="{",".join(map(str, pool))}"', header)
    start = 1_795_834_543
    total_ports = 0
    up = 0
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(header)
        for i in range(hosts):
            address, mac = _address(i), _mac(i)
            name = f"host-{address.replace('.', '-')}.lab.example" if i % PTR_EVERY == 1 else None
            intense = i % INTENSE_EVERY == INTENSE_EVERY - 1
            if i % 1024 == 0:
                stamp = start + i // 64
                task = parts["taskprogress"]
                percent = f"{100 * i / hosts:.2f}"
                task = re.sub(r'percent="[^"]*"', f'percent="{percent}"', task)
                out.write(re.sub(r'(time|etc)="\d+"', lambda m, s=stamp: f'{m.group(1)}="{s}"', task))
            out.write(parts["hosthint"].replace(REAL_ADDRESS, address).replace(REAL_MAC, mac))
            head = parts["intense_head"] if intense else parts["simple_head"]
            tail = parts["intense_tail"] if intense else parts["simple_tail"]
            stamp = start + i // 64
            head = re.sub(r'starttime="\d+" endtime="\d+"', f'starttime="{stamp}" endtime="{stamp + 1}"', head, count=1)
            out.write(_hostnames(head.replace(REAL_ADDRESS, address).replace(REAL_MAC, mac), name))
            count = rng.randint(1, 8)
            chosen = sorted(rng.sample(pool, count))
            out.write("<ports>")
            for n, port in enumerate(chosen):
                state, reason, ttl = rng.choices(STATES, STATE_WEIGHTS)[0]
                if intense and n == 0:
                    # The -A host's probed service with its scripts, on this host's first port.
                    element = parts["probed_port"].replace(f"{REAL_ADDRESS}:8080", f"{address}:{port}")
                    element = element.replace('portid="8080"', f'portid="{port}"', 1)
                    out.write(element)
                else:
                    out.write(TABLE_PORT.format(port=port, state=state, reason=reason, ttl=ttl, service=SERVICES[port]) + "\n")
            out.write("</ports>\n")
            total_ports += count
            up += 1
            out.write(tail.replace(REAL_ADDRESS, address).replace(REAL_MAC, mac))
        elapsed = hosts // 64 + 1
        trailer = parts["trailer"].replace("1 IP address (1 host up)", f"{hosts} IP addresses ({up} hosts up)")
        trailer = trailer.replace('up="1" down="0" total="1"', f'up="{up}" down="0" total="{hosts}"')
        trailer = re.sub(r'elapsed="[^"]*"', f'elapsed="{elapsed}.00"', trailer)
        trailer = re.sub(r"scanned in [0-9.]+ seconds", f"scanned in {elapsed}.00 seconds", trailer)
        out.write(trailer)
    tmp.replace(path)
    return {"hosts": hosts, "ports": total_ports, "bytes": path.stat().st_size}


def document(hosts: int, log: Callable[[str], None]) -> tuple[Path, dict[str, int]]:
    """The cached document of that many hosts (built on first use) and its counts."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"nmap_{hosts}_v{FORMAT}.xml"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        counts = json.loads(meta.read_text())
        if counts.get("bytes") == path.stat().st_size:
            log(f"  reusing {path.relative_to(ROOT)}")
            return path, counts
    log(f"  building {path.relative_to(ROOT)} ({hosts} hosts) from the real captures in {FIXTURES.relative_to(ROOT)}")
    counts = build_document(path, hosts)
    meta.write_text(json.dumps(counts))
    return path, counts


# --- the child processes ---------------------------------------------------------------------------------------


def _child_controller(xml: Path, workdir: Path, expected: dict[str, int]) -> dict[str, Any]:
    from sqlalchemy import func, select

    from controller.queue.jobs import create_job
    from controller.scanlib import scanner
    from controller.services.scans import _store_hosts
    from controller.store.database import Database
    from controller.store.models import Scan, ScanHost, ScanPort

    db_path = workdir / "scans.db"
    db = Database(f"sqlite:///{db_path}")
    db.upgrade()
    with db.session() as session:
        job = create_job(
            session,
            kind="scan",
            playbook="playbooks/scan.yml",
            inventory="inventory",
            extra_vars={"scanner_tool": "nmap", "scanner_scan_type": "default", "scanner_target": "10.0.0.0/8"},
            timeout=3600,
        )
        scan = Scan(job=job, tool="nmap", target="10.0.0.0/8", scan_type="default", ports=None)
        session.add(scan)
        session.flush()
        scan_id = scan.id
    hosts_file = workdir / "hosts.jsonl"

    started, cpu = time.perf_counter(), time.process_time()
    info: dict[str, Any] = {}
    with xml.open("rb") as stream:
        scanner.write_jsonl(scanner.parse_nmap_xml(stream, info), str(hosts_file))
    parsed = time.perf_counter()
    with db.session() as session:
        _store_hosts(session, scan_id, hosts_file)
    finished, cpu = time.perf_counter(), time.process_time() - cpu

    with db.session() as session:
        hosts = session.scalar(select(func.count()).select_from(ScanHost).where(ScanHost.scan_id == scan_id))
        ports = session.scalar(select(func.count()).select_from(ScanPort).join(ScanHost).where(ScanHost.scan_id == scan_id))
    db.dispose()
    if (hosts, ports) != (expected["hosts"], expected["ports"]):
        raise SystemExit(f"controller stored {hosts} hosts and {ports} ports; the document has {expected['hosts']} and {expected['ports']}")
    if info.get("truncated") or info.get("error"):
        raise SystemExit(f"parse_nmap_xml reported {info}")
    return {
        "work_s": finished - started,
        "cpu_s": cpu,
        "parse_s": parsed - started,
        "store_s": finished - parsed,
        "hosts": hosts,
        "ports": ports,
    }


def _child_libnmap(xml: Path, expected: dict[str, int]) -> dict[str, Any]:
    from libnmap.parser import NmapParser

    started, cpu = time.perf_counter(), time.process_time()
    report = NmapParser.parse_fromfile(str(xml))
    finished, cpu = time.perf_counter(), time.process_time() - cpu
    hosts = len(report.hosts)
    if hosts != expected["hosts"]:
        raise SystemExit(f"libnmap reported {hosts} hosts; the document has {expected['hosts']}")
    ports = sum(len(h.services) for h in report.hosts)
    if ports != expected["ports"]:
        raise SystemExit(f"libnmap reported {ports} ports; the document has {expected['ports']}")
    return {"work_s": finished - started, "cpu_s": cpu, "hosts": hosts, "ports": ports}


def _child_baseline(variant: str) -> dict[str, Any]:
    if variant == "controller-baseline":
        import alembic.command  # noqa: F401  (Database.upgrade imports it)
        import sqlalchemy  # noqa: F401

    else:
        import libnmap.parser  # noqa: F401
    return {"work_s": 0.0, "cpu_s": 0.0}


def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scanparse")
    parser.add_argument("--variant", required=True, choices=["controller", "libnmap", "controller-baseline", "libnmap-baseline"])
    parser.add_argument("xml", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("result", type=Path)
    args = parser.parse_args(argv)
    expected = json.loads(args.xml.with_suffix(".json").read_text())
    if args.variant == "controller":
        result = _child_controller(args.xml, args.workdir, expected)
    elif args.variant == "libnmap":
        result = _child_libnmap(args.xml, expected)
    else:
        result = _child_baseline(args.variant)
    args.result.write_text(json.dumps(result))
    return 0


# --- the parent ------------------------------------------------------------------------------------------------


def _variant(name: str, xml: Path, workdir: Path) -> Variant:
    result = workdir / f"{name}.json"

    def setup() -> None:
        # A fresh database (and no hosts.jsonl) every round.
        shutil.rmtree(workdir / name, ignore_errors=True)
        (workdir / name).mkdir(parents=True)
        result.unlink(missing_ok=True)

    def run() -> dict[str, float]:
        measured = run_measured([PYTHON, "-m", "bench.scanparse", "--variant", name, str(xml), str(workdir / name), str(result)], cwd=ROOT)
        figures = json.loads(result.read_text())
        out = {"peak_mib": round(measured["peak_mib"], 1), "work_s": round(figures["work_s"], 3), "cpu_s": round(figures["cpu_s"], 3)}
        out.update({k: round(figures[k], 3) for k in ("parse_s", "store_s") if k in figures})
        return out

    return Variant(name, run, setup)


def _median(m: Measurement, key: str) -> float:
    return statistics.median(m.extra[key])


def run(quick: bool, log: Callable[[str], None]) -> Section:
    hosts, rounds = (HOSTS_QUICK, ROUNDS_QUICK) if quick else (HOSTS_FULL, ROUNDS_FULL)
    xml, counts = document(hosts, log)
    workdir = CACHE / "scanparse-run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    names = ["libnmap", "controller", "libnmap-baseline", "controller-baseline"]
    try:
        results = alternate([_variant(name, xml, workdir) for name in names], rounds, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ref, ctl = results["libnmap"], results["controller"]
    ref_work, ctl_work = _median(ref, "work_s"), _median(ctl, "work_s")
    ref_mib, ctl_mib = _median(ref, "peak_mib"), _median(ctl, "peak_mib")
    base = {name: _median(results[f"{name}-baseline"], "peak_mib") for name in ("libnmap", "controller")}

    ref_cpu, ctl_cpu = _median(ref, "cpu_s"), _median(ctl, "cpu_s")
    header = (
        "variant",
        "median work s",
        "time vs libnmap",
        "median work CPU s",
        "median process s",
        "median peak MiB",
        "memory vs libnmap",
    )
    dash = "\u2013"
    rows = [
        (
            "python-libnmap `NmapParser.parse_fromfile` (reference)",
            f"{ref_work:.2f}",
            ratio(ref_work, ref_work),
            f"{ref_cpu:.2f}",
            f"{ref.median:.2f}",
            f"{ref_mib:.0f}",
            ratio(ref_mib, ref_mib),
        ),
        (
            "controller: `parse_nmap_xml` + `write_jsonl` + `_store_hosts` (SQLite)",
            f"{ctl_work:.2f}",
            ratio(ctl_work, ref_work),
            f"{ctl_cpu:.2f}",
            f"{ctl.median:.2f}",
            f"{ctl_mib:.0f}",
            ratio(ctl_mib, ref_mib),
        ),
    ]
    for name, what in (("libnmap", "libnmap.parser"), ("controller", "the controller modules")):
        baseline = results[f"{name}-baseline"]
        rows.append(
            (
                f"baseline: python importing {what}",
                dash,
                dash,
                dash,
                f"{baseline.median:.2f}",
                f"{base[name]:.0f}",
                ratio(base[name], ref_mib),
            )
        )
    speedup = ref_work / ctl_work
    memory = ctl_mib / ref_mib
    time_met = speedup >= TIME_TARGET
    memory_met = memory <= MEMORY_TARGET
    verdict = (
        f"Speed target (\u2265 {TIME_TARGET:g}\u00d7 faster) {'met' if time_met else 'MISSED'}: {speedup:.2f}\u00d7 "
        f"({ctl_work:.2f} s against {ref_work:.2f} s; CPU {ctl_cpu:.2f} s against {ref_cpu:.2f} s, {ref_cpu / ctl_cpu:.2f}\u00d7). "
        f"Memory target (\u2264 1/5 of libnmap's peak) {'met' if memory_met else 'MISSED'}: {memory:.2f}\u00d7 "
        f"({ctl_mib:.0f} MiB against {ref_mib:.0f} MiB)."
    )
    parse_s, store_s = _median(ctl, "parse_s"), _median(ctl, "store_s")
    notes = [
        f"Document: {counts['bytes'] / 1e6:.1f} MB of nmap XML, {counts['hosts']:,} hosts, {counts['ports']:,} ports "
        f"(cached as {xml.relative_to(ROOT)}). Built from the real captures in tests/fixtures/scans: their header (nmaprun, scaninfo, "
        f"verbose, debugging), `<hosthint>` before every host, `<taskprogress>` every 1,024 hosts and `<runstats>` trailer; "
        f"addresses sweep 10.0.0.0/8 sparsely (every octet varies), MACs vary, each host has 1\u20138 ports from {len(SERVICES)} "
        f"with open/closed/filtered states as nmap writes them; one host in {INTENSE_EVERY} is the -A capture (probed service with "
        f"NSE scripts, OS detection, uptime, sequences, traceroute), one in {PTR_EVERY} has a PTR name.",
        f"{rounds} rounds, variants alternating (libnmap, controller, then the two baselines), each run a fresh Python process; "
        f"medians reported. Time ratios use the work timed inside the child (after imports; the controller's database schema, "
        f"Job and Scan rows are created before the clock starts); work CPU = the child's process time over the same span; "
        f"process = the whole child process's wall time, interpreter start and imports included.",
        f"controller = `scanner.parse_nmap_xml` streaming the file with expat into `scanner.write_jsonl` (hosts.jsonl, as the scanner "
        f"role does on the scanner host; median {parse_s:.2f} s) then `controller.services.scans._store_hosts` reading hosts.jsonl into a "
        f"fresh SQLite database (`Database.upgrade()`; WAL) and committing (median {store_s:.2f} s). Verified each round: "
        f"COUNT of stored hosts and ports equals the document's.",
        "libnmap = `NmapParser.parse_fromfile` alone (reads the whole file into a string, parses it with ElementTree, through "
        "defusedxml since this venv has it, then builds NmapReport/NmapHost/NmapService objects); verified each round: "
        "`len(report.hosts)` and the services equal the document's.",
        f"Peak memory is the full peak RSS of each child process (wait4 ru_maxrss) and the memory ratio is of those full figures. "
        f"For fairness, a Python process that only imports the same modules peaks at {base['controller']:.0f} MiB (controller: "
        f"sqlalchemy, alembic, controller.*) and {base['libnmap']:.0f} MiB (libnmap.parser); above those baselines the controller "
        f"uses {ctl_mib - base['controller']:.0f} MiB and libnmap {ref_mib - base['libnmap']:.0f} MiB.",
    ]
    setup = (
        "Each variant in a fresh Python process; work timed inside it after its imports. "
        f"Targets: the controller's parse + store at least {TIME_TARGET:g}\u00d7 faster than libnmap's parse alone, "
        f"with at most a fifth of its peak memory (streaming; never the whole document)."
    )
    return Section(
        title="Scan results: nmap XML parse + store against python-libnmap",
        setup=setup,
        rows=rows,
        header=header,
        verdict=verdict,
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
