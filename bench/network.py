"""The network over time on 65,536 hosts: the scan diff against python-libnmap's NmapDiff, storing a scan with the
asset update against storing it without, and importing a scan file against the scanparse figure (parse + store).

Two documents: the scanparse document (bench/scanparse.py: 65,536 hosts built from the real captures) and a copy
with 1 % of the hosts' first port changed (open <-> closed), 0.5 % of the hosts removed and as many added. Every
variant runs in a fresh Python process of its own (peak resident memory from wait4 is its alone) and times its own
work after its imports:

- diff: `controller.services.diff.scan_diff` of the two scans as stored (imported, assets and all, once before the
  rounds) plus `ScanDiff.dump`, the API's whole answer; it reads the stored rows, not the XML.
- libnmap: `NmapParser.parse_fromfile` of both documents (timed apart), then `NmapDiff` down to every port: the
  reports' diff, each changed host's, each changed service's (what the controller's diff reports).
- store, store+assets: the copy's hosts.jsonl stored into a database that holds the first document's scan (with its
  assets), without and with `AssetUpdate` (the daily case: the second scan of the same network).
- import: `controller.services.imports.import_scan` of the first document into a fresh database (parse, store,
  assets); parse+store: the scanparse controller figure on the same machine in the same run (`parse_nmap_xml` +
  `write_jsonl` + `_store_hosts`, no assets).

Child side: `python -m bench.network --variant NAME WORKDIR RESULT_JSON`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import scanparse
from bench.common import PYTHON, ROOT, Measurement, Section, Variant, alternate, ratio, run_measured

CACHE = Path(__file__).resolve().parent / ".cache"
FORMAT = 1  # bump when the changed copy's recipe changes
CHANGED_EVERY, REMOVED_EVERY = 100, 200  # 1 % of the hosts' first port changed; 0.5 % removed and as many added
DIFF_TIME_TARGET, DIFF_MEMORY_TARGET = 3.0, 0.2
ASSETS_TARGET = 1.3
ROUNDS_FULL, ROUNDS_QUICK = 3, 1
ASSETS_FULL, ASSETS_QUICK = 100_000, 10_000
ASSETS_P95_TARGET = 0.020
LATENCY_ROUNDS, LATENCY_SECONDS = 5, 3
VARIANTS = ("libnmap", "diff", "store", "store+assets", "import", "parse+store")
HOST_BLOCK = re.compile(r"<host starttime=.*?</host>\n", re.S)


# --- the documents ---------------------------------------------------------------------------------------------


def changed_copy(original: Path, path: Path) -> dict[str, int]:
    """The copy: one host in CHANGED_EVERY with its first port's state swapped, one in REMOVED_EVERY removed and as
    many new ones (addresses after the sweep's) added."""
    text = original.read_text(encoding="utf-8")
    rng = random.Random(20_261_201)
    counts = {"changed": 0, "removed": 0, "added": 0}
    hosts = len(HOST_BLOCK.findall(text))

    def edit(match: re.Match[str]) -> str:
        block = match.group(0)
        i = rng.randrange(CHANGED_EVERY * REMOVED_EVERY)
        if i % REMOVED_EVERY == 0:
            counts["removed"] += 1
            address = scanparse._address(hosts + counts["removed"])
            counts["added"] += 1
            added = re.sub(r'addr="10\.[0-9.]+" addrtype="ipv4"', f'addr="{address}" addrtype="ipv4"', block, count=1)
            return added  # the host is gone, a new one is where it was
        if i % CHANGED_EVERY == 1:
            counts["changed"] += 1
            return re.sub(
                r'<state state="(open|closed)"', lambda m: '<state state="' + ("closed" if m[1] == "open" else "open") + '"', block, count=1
            )
        return block

    path.write_text(HOST_BLOCK.sub(edit, text), encoding="utf-8")
    return {**counts, "hosts": hosts}


def documents(quick: bool, log: Callable[[str], None]) -> tuple[Path, Path, dict[str, int]]:
    old, _ = scanparse.document(scanparse.HOSTS_QUICK if quick else scanparse.HOSTS_FULL, log)
    new = CACHE / f"{old.stem}_changed_v{FORMAT}.xml"
    meta = new.with_suffix(".json")
    if new.is_file() and meta.is_file() and json.loads(meta.read_text()).get("bytes") == new.stat().st_size:
        log(f"  reusing {new.relative_to(ROOT)}")
        return old, new, json.loads(meta.read_text())
    log(f"  building {new.relative_to(ROOT)}")
    # In a process of its own: the copy is made in memory, and a child's peak memory (wait4) counts its parent's
    # at the fork, so this parent must stay small.
    code = (
        "import json, sys; from pathlib import Path; from bench.network import changed_copy; "
        "print(json.dumps(changed_copy(Path(sys.argv[1]), Path(sys.argv[2]))))"
    )
    built = subprocess.run([PYTHON, "-c", code, str(old), str(new)], cwd=ROOT, check=True, capture_output=True, text=True)
    counts = json.loads(built.stdout)
    counts["bytes"] = new.stat().st_size
    meta.write_text(json.dumps(counts))
    return old, new, counts


# --- the child processes ---------------------------------------------------------------------------------------


def _config(workdir: Path, name: str) -> Any:
    from controller.config import Config

    return Config(DATABASE_URL=f"sqlite:///{workdir / name}", ARTIFACTS_DIR=str(workdir / f"{name}-artifacts"))  # type: ignore[call-arg]


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            yield chunk


def _import(workdir: Path, database: str, xml: Path) -> str:
    from controller.services.imports import import_scan
    from controller.store.database import Database

    config = _config(workdir, database)
    db = Database(config.DATABASE_URL)
    db.upgrade()
    try:
        return import_scan(db, config, "bench", _chunks(xml), xml.name, "nmap").job_id
    finally:
        db.dispose()


def _prepare(workdir: Path) -> dict[str, Any]:
    """Once before the rounds: the first document imported (old.db), then the copy too (both.db), and the copy's
    hosts.jsonl for the store variants."""
    from controller.scanlib import scanner

    paths = json.loads((workdir / "documents.json").read_text())
    old, new = Path(paths["old"]), Path(paths["new"])
    old_job = _import(workdir, "old.db", old)
    shutil.copyfile(workdir / "old.db", workdir / "both.db")
    shutil.copytree(workdir / "old.db-artifacts", workdir / "both.db-artifacts")
    new_job = _import(workdir, "both.db", new)
    info: dict[str, Any] = {}
    with new.open("rb") as stream:
        scanner.write_jsonl(scanner.parse_nmap_xml(stream, info), str(workdir / "new.jsonl"))
    return {"old_job": old_job, "new_job": new_job, "probed": info.get("probed")}


def _child_diff(workdir: Path, prepared: dict[str, Any]) -> dict[str, Any]:
    from controller.schemas.diff import ScanDiff
    from controller.services.diff import scan_diff
    from controller.store.database import Database

    db = Database(f"sqlite:///{workdir / 'both.db'}")
    started, cpu = time.perf_counter(), time.process_time()
    with db.session() as session:
        view = ScanDiff.dump(scan_diff(session, prepared["new_job"], prepared["old_job"]))
    finished, cpu = time.perf_counter(), time.process_time() - cpu
    db.dispose()
    s = view["summary"]
    return {"work_s": finished - started, "cpu_s": cpu, "new": s["hosts_new"], "gone": s["hosts_gone"], "changed": s["hosts_changed"]}


def _child_libnmap(workdir: Path) -> dict[str, Any]:
    from libnmap.parser import NmapParser

    paths = json.loads((workdir / "documents.json").read_text())
    started = time.perf_counter()
    old = NmapParser.parse_fromfile(paths["old"])
    new = NmapParser.parse_fromfile(paths["new"])
    parsed, cpu = time.perf_counter(), time.process_time()
    report = new.diff(old)
    by_id_old, by_id_new = {h.id: h for h in old.hosts}, {h.id: h for h in new.hosts}
    ports_changed = 0
    for key in report.changed():
        # report keys are "NmapHost::<address>": that host's own diff, then each of its services'
        address = key.split("::", 1)[1]
        if address not in by_id_old or address not in by_id_new:
            continue
        hold, hnew = by_id_old[address], by_id_new[address]
        hnew.diff(hold)
        services_old = {s.id: s for s in hold.services}
        services_new = {s.id: s for s in hnew.services}
        for sid in services_old.keys() & services_new.keys():
            ports_changed += bool(services_new[sid].diff(services_old[sid]).changed())
        ports_changed += len(services_old.keys() ^ services_new.keys())
    finished, cpu = time.perf_counter(), time.process_time() - cpu
    return {
        "work_s": finished - parsed,
        "cpu_s": cpu,
        "parse_s": parsed - started,
        "added": len(report.added()),
        "removed": len(report.removed()),
        "changed": len(report.changed()),
        "ports": ports_changed,
    }


def _child_store(workdir: Path, prepared: dict[str, Any], with_assets: bool) -> dict[str, Any]:
    from controller.queue.jobs import create_job
    from controller.services.assets import AssetUpdate
    from controller.services.scans import _store_hosts
    from controller.store.database import Database
    from controller.store.models import Scan, utcnow

    copy = workdir / ("store-assets.db" if with_assets else "store.db")
    shutil.copyfile(workdir / "old.db", copy)
    db = Database(f"sqlite:///{copy}")
    with db.session() as session:
        job = create_job(session, kind="scan", playbook="playbooks/scan.yml", inventory="inventory", extra_vars={}, timeout=3600)
        scan = Scan(job=job, tool="nmap", target="10.0.0.0/8", scan_type="default", ports=None)
        session.add(scan)
        session.flush()
        scan_id = scan.id
    summary = {"state": "completed", "probed": prepared["probed"]}
    started, cpu = time.perf_counter(), time.process_time()
    with db.session() as session:
        scan = session.get(Scan, scan_id)
        assets = AssetUpdate(session.connection(), scan, summary, utcnow()) if with_assets else None
        _store_hosts(session, scan_id, workdir / "new.jsonl", assets=assets)
    finished, cpu = time.perf_counter(), time.process_time() - cpu
    db.dispose()
    copy.unlink()
    return {"work_s": finished - started, "cpu_s": cpu}


def _child_import(workdir: Path) -> dict[str, Any]:
    paths = json.loads((workdir / "documents.json").read_text())
    for leftover in (workdir / "import.db", workdir / "import.db-artifacts"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    started, cpu = time.perf_counter(), time.process_time()
    _import(workdir, "import.db", Path(paths["old"]))
    finished, cpu = time.perf_counter(), time.process_time() - cpu
    return {"work_s": finished - started, "cpu_s": cpu}


def _child_parse_store(workdir: Path) -> dict[str, Any]:
    paths = json.loads((workdir / "documents.json").read_text())
    target = workdir / "parse-store"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    xml = Path(paths["old"])
    figures = scanparse._child_controller(xml, target, json.loads(xml.with_suffix(".json").read_text()))
    shutil.rmtree(target, ignore_errors=True)
    return figures


def _child_assets_database(workdir: Path, count: int) -> dict[str, Any]:
    """A database of `count` assets, stored the real way: one scan's hosts (1-4 open ports each) through AssetUpdate."""
    from controller.queue.jobs import create_job
    from controller.services.assets import AssetUpdate
    from controller.services.scans import _store_hosts
    from controller.store.database import Database
    from controller.store.models import Scan, utcnow

    rng = random.Random(count)
    pool = sorted(scanparse.SERVICES)
    hosts_file = workdir / "assets.jsonl"
    with hosts_file.open("w") as out:
        for i in range(count):
            ports = [
                {
                    "protocol": "tcp",
                    "port": p,
                    "state": "open",
                    "reason": "syn-ack",
                    "service": scanparse.SERVICES[p],
                    "product": None,
                    "version": None,
                }
                for p in sorted(rng.sample(pool, rng.randint(1, 4)))
            ]
            host = {"address": scanparse._address(i), "status": "up", "reason": "syn-ack", "hostnames": [], "mac": None, "ports": ports}
            out.write(json.dumps(host) + "\n")
    db = Database(f"sqlite:///{workdir / 'assets.db'}")
    db.upgrade()
    with db.session() as session:
        job = create_job(session, kind="scan", playbook="playbooks/scan.yml", inventory="inventory", extra_vars={}, timeout=3600)
        scan = Scan(job=job, tool="nmap", target="10.0.0.0/8", scan_type="default", ports=None)
        session.add(scan)
        session.flush()
        _store_hosts(session, scan.id, hosts_file, assets=AssetUpdate(session.connection(), scan, {"state": "completed"}, utcnow()))
    db.dispose()
    return {"assets": count}


def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.network")
    parser.add_argument("--variant", required=True, choices=["prepare", "assets-database", *VARIANTS])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("result", type=Path)
    args = parser.parse_args(argv)
    if args.variant == "prepare":
        result = _prepare(args.workdir)
    elif args.variant == "assets-database":
        result = _child_assets_database(args.workdir, int(json.loads((args.workdir / "documents.json").read_text())["assets"]))
    else:
        prepared = json.loads((args.workdir / "prepared.json").read_text())
        runs: dict[str, Callable[[], dict[str, Any]]] = {
            "diff": lambda: _child_diff(args.workdir, prepared),
            "libnmap": lambda: _child_libnmap(args.workdir),
            "store": lambda: _child_store(args.workdir, prepared, with_assets=False),
            "store+assets": lambda: _child_store(args.workdir, prepared, with_assets=True),
            "import": lambda: _child_import(args.workdir),
            "parse+store": lambda: _child_parse_store(args.workdir),
        }
        result = runs[args.variant]()
    args.result.write_text(json.dumps(result))
    return 0


# --- the parent ------------------------------------------------------------------------------------------------


def _run_child(name: str, workdir: Path) -> dict[str, float]:
    result = workdir / f"{name}.result.json"
    measured = run_measured([PYTHON, "-m", "bench.network", "--variant", name, str(workdir), str(result)], cwd=ROOT)
    figures = json.loads(result.read_text())
    return {"peak_mib": round(measured["peak_mib"], 1), **{k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}}


def _variant(name: str, workdir: Path) -> Variant:
    return Variant(name, lambda: _run_child(name, workdir))


def _median(m: Measurement, key: str) -> float:
    return statistics.median(m.extra[key])


def run(quick: bool, log: Callable[[str], None]) -> Section:
    old, new, counts = documents(quick, log)
    workdir = CACHE / "network-run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "documents.json").write_text(
        json.dumps({"old": str(old), "new": str(new), "assets": ASSETS_QUICK if quick else ASSETS_FULL})
    )
    try:
        started = time.monotonic()
        prepared = _run_child("prepare", workdir)
        (workdir / "prepared.json").write_text(json.dumps(prepared))
        log(f"  prepared (both documents imported) in {time.monotonic() - started:.0f} s")
        results = alternate([_variant(name, workdir) for name in VARIANTS], ROUNDS_QUICK if quick else ROUNDS_FULL, log)
        started = time.monotonic()
        _run_child("assets-database", workdir)
        log(f"  {ASSETS_QUICK if quick else ASSETS_FULL:,} assets stored in {time.monotonic() - started:.0f} s")
        latency = asset_latency(workdir, quick, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    section = _report(results, counts, quick)
    section.appendix.append(_latency_report(latency, quick))
    return section


def asset_endpoints(count: int) -> list[Any]:
    from bench.api_latency import Endpoint

    def page(body: Any) -> bool:
        return len(body.get("assets") or []) == 50

    middle = ipaddress.ip_network(f"{scanparse._address(count // 2)}/16", strict=False)

    return [
        Endpoint("ping", "/ping", "`GET /api/ping`", lambda body: body.get("status") == "pong"),
        Endpoint("first", "/assets?limit=50", "`GET /api/assets?limit=50`", page),
        Endpoint("deep", f"/assets?limit=50&cursor=4{(10 << 24) + count * 9 // 10 * 97:08x}", "`GET /api/assets?limit=50&cursor=`", page),
        Endpoint("port", "/assets?port=22&limit=50", "`GET /api/assets?port=22&limit=50`", page),
        Endpoint("service", "/assets?service=http&limit=50", "`GET /api/assets?service=http&limit=50`", page),
        Endpoint("network", f"/assets?network={middle}&limit=50", f"`GET /api/assets?network={middle}&limit=50`", page),
    ]


LATENCY_SERVERS = ((1, 8), (2, 1))  # the default; one process per core of one thread each (README: for several users)


def asset_latency(workdir: Path, quick: bool, log: Callable[[str], None]) -> dict[tuple[int, int], dict[str, list[Any]]]:
    """wrk with 4 clients against `cloudx serve` with each of LATENCY_SERVERS, the endpoints in turn, the servers
    alternating, LATENCY_ROUNDS rounds of LATENCY_SECONDS each."""
    from bench.api_latency import WRK_REPORT, Served, check_answers, wrk

    script = workdir / "report.lua"
    script.write_text(WRK_REPORT)
    points = asset_endpoints(ASSETS_QUICK if quick else ASSETS_FULL)
    servers = {}
    runs: dict[tuple[int, int], dict[str, list[Any]]] = {setting: {point.name: [] for point in points} for setting in LATENCY_SERVERS}
    try:
        for processes, threads in LATENCY_SERVERS:
            copy = workdir / f"assets-{processes}x{threads}.db"
            shutil.copyfile(workdir / "assets.db", copy)
            servers[processes, threads] = Served(copy, workdir, processes, threads)
        for served in servers.values():
            check_answers(served, points)
            for point in points:
                wrk(served, point, 4, 1, script)  # warm-up
        for number in range(1, (1 if quick else LATENCY_ROUNDS) + 1):
            for setting, served in servers.items():
                for point in points:
                    run = wrk(served, point, 4, LATENCY_SECONDS, script)
                    runs[setting][point.name].append(run)
                    log(f"  round {number} {setting[0]}x{setting[1]} {point.name}: {run.requests} requests, p95 {run.p95 * 1000:.1f} ms")
    finally:
        for served in servers.values():
            served.stop()
    return runs


def _latency_report(runs: dict[tuple[int, int], dict[str, list[Any]]], quick: bool) -> Section:
    from bench.api_latency import server_label

    points = asset_endpoints(ASSETS_QUICK if quick else ASSETS_FULL)
    rows = []
    worst: dict[tuple[int, int], tuple[float, str]] = {}
    for setting, found in runs.items():
        for point in points:
            p95 = statistics.median(r.p95 for r in found[point.name])
            if point.name != "ping":
                worst[setting] = max(worst.get(setting, (0.0, "")), (p95, point.name))
            rows.append(
                (
                    point.label,
                    server_label(setting),
                    f"{statistics.median(r.requests for r in found[point.name]) / LATENCY_SECONDS:,.0f}",
                    f"{statistics.median(r.p50 for r in found[point.name]) * 1000:.1f}",
                    f"{p95 * 1000:.1f}",
                    f"{statistics.median(r.cpu_ms for r in found[point.name]):.1f}",
                )
            )
    count = ASSETS_QUICK if quick else ASSETS_FULL
    verdict = f"GET /api/assets p95 < {ASSETS_P95_TARGET * 1000:.0f} ms with 4 clients and {count:,} assets: " + "; ".join(
        f"{server_label(setting)} {'met' if p95 < ASSETS_P95_TARGET else 'MISSED'} (worst {p95 * 1000:.1f} ms, {name})"
        for setting, (p95, name) in worst.items()
    )
    return Section(
        title="Asset lists: GET /api/assets latency",
        setup=f"`cloudx serve` with its default settings (1 process \u00d7 8 threads) and as 2 processes \u00d7 1 thread, each on "
        f"its copy of a database of {count:,} assets (1\u20134 open ports each, stored through AssetUpdate); wrk, one thread, 4 "
        f"keep-alive connections, a viewer's token; {1 if quick else LATENCY_ROUNDS} rounds of {LATENCY_SECONDS} s per endpoint "
        "and server after 1 s of warm-up, the servers alternating; medians of the rounds' figures. Every answer 2xx, each "
        "endpoint's body checked first.",
        header=("endpoint", "server", "requests/s", "p50 ms", "p95 ms", "server CPU ms/req"),
        rows=rows,
        verdict=verdict,
    )


def _report(results: dict[str, Measurement], counts: dict[str, int], quick: bool) -> Section:
    work = {name: _median(results[name], "work_s") for name in VARIANTS}
    peak = {name: _median(results[name], "peak_mib") for name in VARIANTS}
    parse = _median(results["libnmap"], "parse_s")
    rows = [
        ("python-libnmap `NmapDiff` down to every port, on the two parsed reports (reference)", work["libnmap"], "libnmap"),
        ("controller: `scan_diff` of the two stored scans + `ScanDiff.dump`", work["diff"], "libnmap"),
        ("store the copy's hosts and ports (reference)", work["store"], "store"),
        ("store the copy's hosts and ports + `AssetUpdate`", work["store+assets"], "store"),
        ("parse + store, the scanparse controller figure (reference)", work["parse+store"], "parse+store"),
        ("`import_scan` of the document (parse, store, assets)", work["import"], "parse+store"),
    ]
    table = [
        (what, f"{seconds:.2f}", ratio(seconds, work[reference]), f"{peak[name]:.0f}", ratio(peak[name], peak[reference]))
        for (what, seconds, reference), name in zip(
            rows, ("libnmap", "diff", "store", "store+assets", "parse+store", "import"), strict=True
        )
    ]
    # libnmap diffs parsed reports: diffing two files is its parse of both and NmapDiff; the controller's diff reads
    # the rows stored when the scans were (their parse is the store's, already measured by scanparse).
    whole = (parse + work["libnmap"]) / work["diff"]
    alone = work["libnmap"] / work["diff"]
    memory = peak["diff"] / peak["libnmap"]
    assets = work["store+assets"] / work["store"]
    imported = work["import"] / work["parse+store"]
    verdict = (
        f"Diff \u2265 {DIFF_TIME_TARGET:g}\u00d7 faster than libnmap's parse of the two files + NmapDiff: "
        f"{'met' if whole >= DIFF_TIME_TARGET else 'MISSED'} ({whole:.1f}\u00d7; against NmapDiff alone on reports already "
        f"parsed: {alone:.2f}\u00d7); memory \u2264 1/5: {'met' if memory <= DIFF_MEMORY_TARGET else 'MISSED'} ({memory:.2f}\u00d7). "
        f"Store with the asset update \u2264 {ASSETS_TARGET:g}\u00d7 without: {'met' if assets <= ASSETS_TARGET else 'MISSED'} "
        f"({assets:.2f}\u00d7). Import no slower than parse + store: {'met' if imported <= 1.0 else 'MISSED'} ({imported:.2f}\u00d7)."
    )
    rounds = ROUNDS_QUICK if quick else ROUNDS_FULL
    notes = [
        f"Documents: the scanparse document ({counts['hosts']:,} hosts) and its copy with {counts['changed']} hosts' first port "
        f"state swapped (open \u2194 closed) and {counts['removed']} hosts replaced by new addresses ({counts['removed']} gone, "
        f"{counts['added']} new).",
        f"Controller diff found: {results['diff'].extra['new'][0]} new, {results['diff'].extra['gone'][0]} gone, "
        f"{results['diff'].extra['changed'][0]} changed hosts; libnmap: {results['libnmap'].extra['added'][0]} added, "
        f"{results['libnmap'].extra['removed'][0]} removed, {results['libnmap'].extra['changed'][0]} changed (its parse of the two "
        f"documents: median {parse:.1f} s, not in its time above).",
        f"{rounds} rounds, the variants alternating, each a fresh Python process; medians. Peak memory is each process's "
        "peak RSS (wait4), imports included.",
        "The store variants store the copy into a database that already holds the first document's scan and its assets "
        "(imported before the rounds): the second scan of the same network, as a daily scan is.",
    ]
    return Section(
        title="The network over time: diff, asset update and import on 65,536 hosts",
        setup="Each variant in a fresh Python process, its work timed inside it after its imports; ratios against the reference "
        "row of its group, measured in the same run.",
        header=("variant", "median work s", "vs reference", "median peak MiB", "memory vs reference"),
        rows=table,
        verdict=verdict,
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
