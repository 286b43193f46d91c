"""API latency with 1,000,000 events and 100,000 scans stored, against a real `cloudx serve` over HTTP.

The database is built once into bench/.cache/ (a fresh SQLite file migrated by the controller, then bulk
loaded with sqlite3 executemany) and reused; each run serves a copy of it. wrk (a load generator in C, so that the clients take little
of the CPU the server needs) keeps concurrent keep-alive connections busy, round by round and alternating
between server settings: `GET /api/ping` (no database: the reference), `GET /api/scans`, and
`GET /api/jobs/<id>/events` at the first page and at a deep page of the largest job.

With `--baseline GIT_REF` (`python -m bench --only api_latency --baseline 50c5d30`) that commit is extracted once
(`git archive | tar -x`) into bench/.cache/baseline-<sha> and served next to the current tree, from the same venv with
PYTHONPATH set to it, on the same database copy per server setting, the two alternating in every round; the section then
ends with the ratios current / baseline per endpoint. `--rounds N` changes the number of rounds (a short check of the
mechanism: `--quick --rounds 1`).
"""

from __future__ import annotations

import compileall
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.common import PYTHON, ROOT, Section, env_with

CACHE = Path(__file__).resolve().parent / ".cache"
# Bump when the generated rows change, so an old cached database is not reused.
BUILD_VERSION = 1
# The load the target is judged on, then one client alone (service time without queueing).
CLIENTS = 4
CONCURRENCY = (CLIENTS, 1)
# `cloudx serve --processes N --threads T`, side by side: the settings before this benchmark (one process, eight
# threads), and one thread per process in as many processes as this machine has cores.
SERVERS = ((1, 8), (2, 1))
LIMIT_EVENTS = 100
SCANS_DEFAULT_LIMIT = 50
TARGET_P95_MS = 20.0
# The deep page counts as "as fast as the first" when its server CPU per request and its median latency with one
# client are within this factor of the first page's (p95 ratios are reported too).
DEEP_TOLERANCE = 1.2
# With --baseline: the current tree may cost at most this factor of the baseline's (the redesign's "no worse than 10 %").
COMPARE_TOLERANCE = 1.1
SCAN_EVENTS = 3
DEPLOY_EVENTS = 5000
BIG_HOSTS = 200
EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
WORDS_TEXT = (
    "changed ok item agent package repository wazuh key signed apt cache updated service enabled started config "
    "ossec manager enrollment group authd pass rules decoders active response quarantine checksum sha256 version "
    "held mark installed present absent restart handler template dest mode owner root 0640 0750 result stdout"
)


@dataclass(frozen=True)
class Size:
    scans: int
    events: int
    big: int  # events of the largest job, whose deep page is measured
    seconds: int  # of load per endpoint, concurrency and server in each round
    rounds: int
    warmup: int  # seconds of load per endpoint and server before the rounds

    @property
    def deep_after(self) -> int:
        return self.big - 10_000 if self.big > 20_000 else self.big - 5_000


FULL = Size(scans=100_000, events=1_000_000, big=250_000, seconds=3, rounds=5, warmup=1)
QUICK = Size(scans=10_000, events=100_000, big=25_000, seconds=1, rounds=2, warmup=1)


# --- the database -------------------------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    """A datetime as SQLAlchemy stores DateTime in SQLite (naive text, microseconds)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class Rows:
    """Deterministic, realistic rows: ids, stdout text, event data."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        words = WORDS_TEXT.split()
        self.text = " ".join(self.rng.choice(words) for _ in range(20_000))

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"

    def words(self, low: int, high: int) -> str:
        start = self.rng.randrange(0, len(self.text) - high)
        return self.text[start : start + self.rng.randint(low, high)].strip()


def job_row(rows: Rows, job_id: str, kind: str, created: datetime, events: int, extra_vars: dict[str, Any]) -> dict[str, Any]:
    finished = created + timedelta(seconds=30 + events * 0.02)
    playbook = "playbooks/scan.yml" if kind == "scan" else "playbooks/deploy_agent.yml"
    status = rows.rng.choices(("successful", "failed", "canceled", "timeout"), weights=(90, 6, 3, 1))[0]
    return {
        "id": job_id,
        "kind": kind,
        "playbook": playbook,
        "inventory": str(ROOT / "inventory") if kind == "scan" else "generated",
        "limit": None,
        "extra_vars": json.dumps(extra_vars),
        "status": status,
        "status_reason": None if status == "successful" else f"the playbook ended {status}",
        "rc": 0 if status == "successful" else 2,
        "progress": 100,
        "timeout": 2100 if kind == "scan" else 3600,
        "cancel_requested": int(status == "canceled"),
        "worker": f"controller-1:{rows.rng.randint(1000, 60000)}",
        "final_counter": events,
        "created_at": stamp(created),
        "started_at": stamp(created + timedelta(seconds=1)),
        "finished_at": stamp(finished),
        "heartbeat_at": stamp(finished),
        "updated_at": stamp(finished),
        "settings": json.dumps({} if kind == "scan" else {"known_hosts": [], "host_key_policy": "pin-on-first-use"}),
        "secrets_holder": None,
        "created_by": rows.rng.choice(("ops", "dashboard", "cli:root")),
    }


def playbook_events(rows: Rows, job_id: str, count: int, hosts: list[str], started: datetime, role: str) -> Iterator[tuple[Any, ...]]:
    """`count` events as ansible-runner emits them: start, play, then per task a start and a result per host, stats."""
    playbook = "playbooks/scan.yml" if role == "scanner" else "playbooks/deploy_agent.yml"
    playbook_uuid, play_uuid = rows.uuid(), rows.uuid()
    play = "Scan" if role == "scanner" else "Deploy the Wazuh agent"
    base_data = {"playbook": playbook, "playbook_uuid": playbook_uuid}
    counter = 0
    task_number = 0
    task = task_uuid = ""
    pending: list[tuple[str, str | None]] = []  # (event, host) still to emit for the current task

    def row(event: str, host: str | None, task_name: str | None, parent: str | None, stdout: str, data: dict[str, Any]) -> tuple[Any, ...]:
        created = (started + timedelta(milliseconds=counter * 40)).isoformat().replace("+00:00", "")
        return (job_id, counter, rows.uuid(), parent, event, host, task_name, play, stdout, created, json.dumps(data))

    while counter < count:
        counter += 1
        if counter == 1:
            yield row("playbook_on_start", None, None, None, "", base_data)
        elif counter == count:
            stats = {h: rows.rng.randint(5, 60) for h in hosts[:20]}
            data = {**base_data, "changed": stats, "ok": stats, "failures": {}, "dark": {}, "skipped": {}, "processed": stats}
            yield row("playbook_on_stats", None, None, None, "\r\nPLAY RECAP " + "*" * 69 + "\r\n" + rows.words(100, 250), data)
        elif counter == 2:
            yield row("playbook_on_play_start", None, None, playbook_uuid, f"\r\nPLAY [{play}] " + "*" * 60, {**base_data, "name": play})
        elif not pending:
            task_number += 1
            task, task_uuid = f"{role} : {rows.words(20, 50).capitalize()} ({task_number})", rows.uuid()
            pending = [(e, h) for h in hosts for e in ("runner_on_start", "result")]
            pending.reverse()
            data = {**base_data, "task_action": "ansible.builtin.apt", "task_path": f"{ROOT}/roles/{role}/tasks/main.yml:{task_number}"}
            yield row("playbook_on_task_start", None, task, play_uuid, f"\r\nTASK [{task}] " + "*" * 40, data)
        else:
            event, host = pending.pop()
            if event == "runner_on_start":
                yield row(event, host, task, task_uuid, "", {**base_data, "task_action": "ansible.builtin.apt", "remote_addr": host})
                continue
            event = rows.rng.choices(("runner_on_ok", "runner_on_skipped", "runner_on_failed", "verbose"), weights=(82, 12, 3, 3))[0]
            changed = rows.rng.random() < 0.3
            message = rows.words(60, 220)
            verb = {"runner_on_ok": "changed" if changed else "ok", "runner_on_skipped": "skipping", "runner_on_failed": "fatal"}
            stdout = f'{verb.get(event, "<" + host + ">")}: [{host}] => {{"changed": {str(changed).lower()}, "msg": "{message}"}}'
            data = {
                **base_data,
                "task_action": "ansible.builtin.apt",
                "resolved_action": "ansible.builtin.apt",
                "remote_addr": host,
                "role": role,
                "duration": round(rows.rng.uniform(0.05, 4.0), 3),
                "res": {"changed": changed, "msg": message, "_ansible_no_log": False},
            }
            yield row(event, host, task, task_uuid, stdout, data)


def scan_rows(rows: Rows, scan_id: int, job_id: str, created: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    tool = rows.rng.choices(("nmap", "masscan", "zmap"), weights=(70, 20, 10))[0]
    scan_type = {"nmap": rows.rng.choice(("default", "quick", "intense", "tcp")), "masscan": "tcp_scan", "zmap": "tcp_syn"}[tool]
    network = rows.rng.random() < 0.2
    target = f"10.{rows.rng.randint(0, 255)}.{rows.rng.randint(0, 255)}." + ("0/24" if network else str(rows.rng.randint(1, 254)))
    ports = {"masscan": "22,80,443,8080", "zmap": "443"}.get(tool, rows.rng.choice((None, "22,80,443", "1-1024")))
    elapsed = round(rows.rng.uniform(2, 300), 2)
    summary = {
        "state": "completed",
        "argv": [tool, "-T4", "--", target],
        "rc": 0,
        "elapsed": elapsed,
        "counts": {"hosts_up": rows.rng.randint(0, 40), "open_ports": rows.rng.randint(0, 90)},
        "error": None,
        "scanner": "scanner-1",
    }
    scan = {
        "id": scan_id,
        "job_id": job_id,
        "tool": tool,
        "target": target,
        "scan_type": scan_type,
        "ports": ports,
        "summary": json.dumps(summary),
        "created_at": stamp(created),
        "updated_at": stamp(created + timedelta(seconds=elapsed + 5)),
    }
    extra_vars = {
        "scanner_hosts": "scanners[0]",
        "scanner_tool": tool,
        "scanner_scan_type": scan_type,
        "scanner_target": target,
        "scanner_ports": ports or "",
        "scanner_timeout": 1800,
    }
    return scan, extra_vars


def check_columns(conn: sqlite3.Connection, table: str, given: list[str]) -> None:
    """Every NOT NULL column without a default is given: the migrations have not moved under the generator."""
    missing = [
        name for _, name, _, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})") if notnull and default is None and not pk
    ]
    absent = sorted(set(missing) - set(given))
    if absent:
        raise RuntimeError(f"bench/api_latency.py: {table} has NOT NULL columns the generator does not fill: {absent}")


def insert(conn: sqlite3.Connection, table: str, columns: list[str], values: list[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" for _ in columns)
    quoted = ", ".join(f'"{c}"' for c in columns)
    conn.executemany(f"INSERT INTO {table} ({quoted}) VALUES ({marks})", values)


def migrations_dir(tree: Path = ROOT) -> Path:
    """The controller's Alembic scripts in a source tree: controller/store/migrations, or controller/migrations before
    the layered packages."""
    for candidate in (tree / "controller" / "store" / "migrations", tree / "controller" / "migrations"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"no controller migrations in {tree}")


def schema_head(tree: Path = ROOT) -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory(str(migrations_dir(tree))).get_current_head())


def downgrade(path: Path, revision: str, log: Callable[[str], None]) -> None:
    """A database taken back to an older schema head with the current tree's own downgrade steps: the tables and
    columns added since go (they are empty here), every row the benchmark reads stays."""
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import create_engine

    started = time.monotonic()
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir(ROOT)))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()
    log(f"  {path.name}: downgraded to {revision} in {time.monotonic() - started:.1f} s")


# Columns written per table, in the order the tables are checked.
EVENT_COLUMNS = ["job_id", "counter", "uuid", "parent_uuid", "event", "host", "task", "play", "stdout", "created", "event_data"]
SCAN_COLUMNS = ["id", "job_id", "tool", "target", "scan_type", "ports", "summary", "created_at", "updated_at"]
HOST_COLUMNS = ["id", "scan_id", "address", "status", "reason", "hostnames", "mac"]
PORT_COLUMNS = ["host_id", "protocol", "port", "state", "reason", "service", "product", "version"]
# The order of the inserts in each batch: rows before the rows that point at them.
INSERT_ORDER = ("jobs", "scans", "scan_hosts", "scan_ports", "job_events")


class Loader:
    """Rows in batches, each batch inserted with executemany in one transaction; the counts of rows written."""

    def __init__(self, conn: sqlite3.Connection, columns: dict[str, list[str]]) -> None:
        self.conn = conn
        self.columns = columns
        self.batches: dict[str, list[tuple[Any, ...]]] = {table: [] for table in INSERT_ORDER}
        self.counts = dict.fromkeys(columns, 0)

    def add_event(self, row: tuple[Any, ...]) -> None:
        self.batches["job_events"].append(row)
        if len(self.batches["job_events"]) >= 50_000:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if not final and len(self.batches["job_events"]) < 50_000 and len(self.batches["jobs"]) < 20_000:
            return
        self.conn.execute("BEGIN")
        for table in INSERT_ORDER:
            insert(self.conn, table, self.columns[table], self.batches[table])
        self.conn.execute("COMMIT")
        for table in INSERT_ORDER:
            self.counts[table] += len(self.batches[table])
            self.batches[table].clear()


class Generator:
    """The jobs in order of creation: scans spread over a year, deployments and the big job among them."""

    def __init__(self, rows: Rows, loader: Loader, size: Size) -> None:
        self.rows, self.loader, self.size = rows, loader, size
        self.scan_id = self.host_id = 0
        self.events_left = size.events - size.scans * SCAN_EVENTS
        self.big_job = ""

    def run(self, log: Callable[[str], None], started: float) -> None:
        size = self.size
        deploy_jobs = max(1, (size.events - size.scans * SCAN_EVENTS - size.big) // DEPLOY_EVENTS)
        total_jobs = size.scans + deploy_jobs + 1
        step = timedelta(seconds=365 * 86400 / total_jobs)
        deploy_at = {int((i + 0.5) * total_jobs / (deploy_jobs + 1)) for i in range(deploy_jobs + 1)}
        big_at = max(deploy_at)
        for position in range(total_jobs):
            created = EPOCH + step * position
            job_id = self.rows.uuid()
            if position not in deploy_at:
                self.add_scan(job_id, created)
            elif not self.add_deploy(job_id, created, position == big_at):
                continue
            self.loader.flush()
            if position % 20_000 == 0 and position:
                written = self.loader.counts["job_events"] + len(self.loader.batches["job_events"])
                log(f"  built {position}/{total_jobs} jobs, {written} events ({time.perf_counter() - started:.0f} s)")

    def add_deploy(self, job_id: str, created: datetime, is_big: bool) -> bool:
        """A deployment and its events; False when no events are left for it (nothing added)."""
        size = self.size
        count = size.big if is_big else min(DEPLOY_EVENTS, self.events_left - size.big)
        if count <= 0:
            return False
        host_names = [f"web-{i:03d}.example.internal" for i in range(1, (BIG_HOSTS if is_big else 25) + 1)]
        extra = {"cloudx_agent_manager_address": "10.0.0.5", "cloudx_agent_group": "web", "cloudx_deploy_hosts": "web"}
        self.loader.batches["jobs"].append(tuple(job_row(self.rows, job_id, "deploy", created, count, extra).values()))
        for event_row in playbook_events(self.rows, job_id, count, host_names, created, "cloudx_agent_linux"):
            self.loader.add_event(event_row)
        self.events_left -= count
        if is_big:
            self.big_job = job_id
        return True

    def add_scan(self, job_id: str, created: datetime) -> None:
        """A scan job with its events, and for one scan in ten a few hosts with open ports."""
        rows, batches = self.rows, self.loader.batches
        self.scan_id += 1
        scan, extra_vars = scan_rows(rows, self.scan_id, job_id, created)
        job = job_row(rows, job_id, "scan", created, SCAN_EVENTS, extra_vars)
        batches["jobs"].append(tuple(job.values()))
        batches["scans"].append(tuple(scan.values()))
        target = scan["target"].split("/")[0]
        batches["job_events"].extend(playbook_events(rows, job_id, SCAN_EVENTS, ["scanner-1"], created, "scanner"))
        if rows.rng.random() < 0.1:
            for _ in range(rows.rng.randint(1, 3)):
                self.host_id += 1
                address = target.rsplit(".", 1)[0] + f".{rows.rng.randint(1, 254)}"
                batches["scan_hosts"].append(
                    (self.host_id, self.scan_id, address, "up", "syn-ack", json.dumps([f"h{self.host_id}.example.internal"]), None)
                )
                for port in rows.rng.sample((22, 53, 80, 443, 3306, 8080), rows.rng.randint(1, 4)):
                    batches["scan_ports"].append(
                        (self.host_id, "tcp", port, "open", "syn-ack", "http" if port in (80, 8080) else None, None, None)
                    )


def build(path: Path, size: Size, log: Callable[[str], None]) -> dict[str, Any]:
    """Migrate a fresh SQLite file with the controller, then bulk load it with sqlite3 executemany."""
    from controller.store.database import Database

    started = time.perf_counter()
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # a partial file is never renamed into place
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    rows = Rows(seed=20260105)
    columns = {
        "jobs": list(job_row(rows, "x", "scan", EPOCH, 0, {})),
        "job_events": EVENT_COLUMNS,
        "scans": SCAN_COLUMNS,
        "scan_hosts": HOST_COLUMNS,
        "scan_ports": PORT_COLUMNS,
    }
    for table, given in columns.items():
        check_columns(conn, table, given)
    loader = Loader(conn, columns)
    generator = Generator(rows, loader, size)
    generator.run(log, started)
    loader.flush(final=True)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return {
        "rows": loader.counts,
        "big_job": generator.big_job,
        "big_events": size.big,
        "build_seconds": round(time.perf_counter() - started, 1),
        "schema": schema_head(),
    }


def cached_database(size: Size, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """The database of this size, built once into bench/.cache/ and reused while the schema and generator match."""
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# build products of python -m bench\n*\n")
    name = f"api-{size.scans}s-{size.events}e-v{BUILD_VERSION}-{schema_head()}"
    path, meta_path = CACHE / f"{name}.sqlite", CACHE / f"{name}.json"
    if path.is_file() and meta_path.is_file():
        log(f"  reusing {path.relative_to(ROOT)}")
        return path, json.loads(meta_path.read_text())
    partial = path.with_suffix(".sqlite.part")
    partial.unlink(missing_ok=True)
    log(f"  building {path.relative_to(ROOT)} ({size.scans} scans, {size.events} events)")
    meta = build(partial, size, log)
    partial.rename(path)
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"  built in {meta['build_seconds']} s: {meta['rows']}")
    return path, meta


# --- the service and the load --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Tree:
    """A source tree whose controller is served: this checkout, or a baseline commit extracted into bench/.cache."""

    name: str  # "current" or "baseline"
    path: Path  # put first on PYTHONPATH
    label: str  # for the report: "current" or "baseline <sha>"
    commit: str = ""  # a baseline's full sha


CURRENT = Tree("current", ROOT, "current")


def baseline_tree(ref: str, log: Callable[[str], None]) -> Tree:
    """The commit `ref` of this repository as a tree of its own: `git archive | tar -x` into bench/.cache/baseline-<sha>,
    once; compiled like the checkout (`python -m bench` compiles controller/ before it runs)."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True, text=True)
    if found.returncode != 0:
        raise RuntimeError(f"--baseline {ref}: not a commit of {ROOT}: {found.stderr.strip()}")
    sha = found.stdout.strip()
    path = CACHE / f"baseline-{sha[:12]}"
    if not path.is_dir():
        log(f"  extracting {ref} ({sha[:12]}) into {path.relative_to(ROOT)}")
        CACHE.mkdir(exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"baseline-{sha[:12]}-", dir=CACHE))
        archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", sha], stdout=subprocess.PIPE)
        extracted = subprocess.run(["tar", "-x", "-C", str(partial)], stdin=archive.stdout, check=False)
        if archive.stdout is not None:
            archive.stdout.close()
        if archive.wait() != 0 or extracted.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"git archive {sha} | tar -x failed")
        compileall.compile_dir(partial / "controller", quiet=1)
        partial.rename(path)
    else:
        log(f"  reusing {path.relative_to(ROOT)} ({ref})")
    return Tree("baseline", path, f"baseline {sha[:7]}", sha)


class Served:
    """`python -m controller.cli serve` of a source tree on a database file, with a viewer token made by its own CLI.

    The caller makes the database copy: the current and the baseline servers of one setting share theirs.
    """

    def __init__(self, database: Path, workdir: Path, processes: int = 1, threads: int = 8, tree: Tree = CURRENT) -> None:
        self.processes, self.threads, self.tree = processes, threads, tree
        self.database = database
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.label = server_label((processes, threads)) + ("" if tree is CURRENT else f", {tree.label}")
        name = f"{tree.name}-{processes}x{threads}"
        self.env = env_with(
            DATABASE_URL=f"sqlite:///{self.database}",
            CLOUDX_PORT=str(self.port),
            CLOUDX_EXECUTOR_ENABLED="0",
            CLOUDX_ARTIFACTS_DIR=str(workdir / "artifacts"),
            CLOUDX_SYNC_HEARTBEAT_FILE=str(workdir / "sync_heartbeat.json"),
            # The tree's own controller package: PYTHONPATH comes before the checkout's editable install.
            PYTHONPATH=os.pathsep.join(p for p in (str(tree.path), os.environ.get("PYTHONPATH", "")) if p),
        )
        # Run from the work directory: `python -m` puts the current directory first on sys.path, and the controller
        # reads a .env file there.
        self.cwd = workdir
        self._check_tree()
        made = subprocess.run(
            [PYTHON, "-m", "controller.cli", "token", "create", "--name", f"bench-{name}", "--role", "viewer"],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise RuntimeError(f"token create ({tree.label}) failed: {made.stderr.strip()[-2000:]}")
        self.token = made.stdout.strip()
        self.log_path = workdir / f"serve-{name}.log"
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "controller.cli", "serve", "--processes", str(processes), "--threads", str(threads)],
            env=self.env,
            cwd=self.cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_until_up()
        self.process = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        """User and system CPU of the serving processes (the supervisor and its API processes)."""
        total = 0.0
        for proc in [self.process, *self.process.children()]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{self.url}/ping", timeout=1).json() == {"status": "pong"}:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cloudx serve ({self.tree.label}) did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def _check_tree(self) -> None:
        """The server runs the tree's controller package, not the checkout's."""
        argv = [PYTHON, "-c", "import controller, sys; sys.stdout.write(controller.__file__)"]
        found = subprocess.run(argv, env=self.env, cwd=self.cwd, capture_output=True, text=True, check=True).stdout
        if Path(found).resolve().parent != (self.tree.path / "controller").resolve():
            raise RuntimeError(f"{self.tree.label}: python imports controller from {found}, not from {self.tree.path}")


@dataclass
class Endpoint:
    name: str
    path: str
    label: str
    check: Callable[[Any], bool]


# wrk reports its own figures: requests, failures and latency percentiles (microseconds), on one line.
WRK_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("wrk-report %d %d %d %.0f %.0f\\n", summary.requests, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout, latency:percentile(50), latency:percentile(95)))
end
"""


@dataclass
class Run:
    requests: int
    p50: float  # seconds
    p95: float
    cpu_ms: float  # server CPU per request


def wrk(served: Served, endpoint: Endpoint, clients: int, seconds: int, script: Path) -> Run:
    """`clients` keep-alive connections, each sending its next request when the last is answered, for `seconds`."""
    argv = ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
    argv += ["-H", f"Authorization: Bearer {served.token}", served.url + endpoint.path]
    cpu = served.cpu_seconds()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    cpu = served.cpu_seconds() - cpu
    found = re.search(r"^wrk-report (\d+) (\d+) (\d+) (\d+) (\d+)$", done.stdout, re.M)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    requests_done, bad_status, failed, p50, p95 = (int(x) for x in found.groups())
    if bad_status or failed or not requests_done:
        raise RuntimeError(f"GET {endpoint.path}: {bad_status} answers not 2xx, {failed} socket errors, {requests_done} requests")
    return Run(requests_done, p50 / 1e6, p95 / 1e6, cpu * 1000 / requests_done)


def check_answers(served: Served, points: list[Endpoint]) -> None:
    """Each endpoint answers 200 with a full page (wrk counts statuses only)."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {served.token}"
        for point in points:
            response = session.get(served.url + point.path, timeout=30)
            if response.status_code != 200 or not point.check(response.json()):
                raise RuntimeError(f"GET {point.path}: {response.status_code} {response.content[:300]!r}")


def endpoints(big_job: str, deep_after: int) -> list[Endpoint]:
    def events_from(after: int) -> Callable[[Any], bool]:
        def check(body: Any) -> bool:
            events = body.get("events") or []
            return len(events) == LIMIT_EVENTS and events[0]["counter"] == after + 1 and body["next_after"] == after + LIMIT_EVENTS

        return check

    return [
        Endpoint("ping", "/ping", "/api/ping", lambda body: body == {"status": "pong"}),
        Endpoint(
            "scans",
            "/scans",
            "/api/scans",
            lambda body: len(body.get("scans") or []) == SCANS_DEFAULT_LIMIT and body["next_before"] is not None,
        ),
        Endpoint("events first", f"/jobs/{big_job}/events?limit={LIMIT_EVENTS}", "/api/jobs/<big>/events?limit=100", events_from(0)),
        Endpoint(
            "events deep",
            f"/jobs/{big_job}/events?limit={LIMIT_EVENTS}&after={deep_after}",
            f"/api/jobs/<big>/events?limit=100&after={deep_after}",
            events_from(deep_after),
        ),
    ]


# --- what the endpoints ask the database -----------------------------------------------------------------


def query_plans(database: Path, token: str, big_job: str, deep_after: int) -> tuple[list[str], dict[str, float]]:
    """The SQL the views run (captured from the controller's own functions), its query plans, and its in-process time."""
    from controller.store.database import Database

    db = Database(f"sqlite:///{database}")
    try:
        actions = view_actions(db, token, big_job, deep_after)
        captured = capture_sql(db, actions)
        timings = {name: median_ms(action, 30) for name, action in actions.items()}
        return explain(db, captured), timings
    finally:
        db.dispose()


def view_actions(db: Any, token: str, big_job: str, deep_after: int) -> dict[str, Callable[[], None]]:
    """What the views ask the database, through the controller functions they call: name -> one call."""
    from controller.queue.jobs import events_page_json
    from controller.services.auth import authenticate
    from controller.services.scans import scans_page

    def auth() -> None:
        with db.session() as s:
            principal = authenticate(s, token)
            if principal is None or principal.token_id is None:
                raise RuntimeError("the bench token does not authenticate")

    def scans() -> None:
        with db.session() as s:
            scans_page(s, SCANS_DEFAULT_LIMIT, None)  # returns the views

    def events(after: int) -> Callable[[], None]:
        def run() -> None:
            with db.session() as s:
                events_page_json(s, big_job, LIMIT_EVENTS, after, None, None)

        return run

    return {"auth": auth, "scans": scans, "events first": events(0), "events deep": events(deep_after)}


def capture_sql(db: Any, actions: dict[str, Callable[[], None]]) -> list[tuple[str, str, Any]]:
    """(action, statement, parameters) of every statement each action runs once."""
    from sqlalchemy import event

    captured: list[tuple[str, str, Any]] = []
    label = [""]

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((label[0], statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        for name, action in actions.items():
            label[0] = name
            action()
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    return captured


def median_ms(action: Callable[[], None], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def explain(db: Any, captured: list[tuple[str, str, Any]]) -> list[str]:
    """EXPLAIN QUERY PLAN of each captured SELECT, one line each, with what the plan means for the order."""
    lines = []
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for name, statement, parameters in captured:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            plan = cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
            detail = "; ".join(str(row[-1]) for row in plan)
            if "TEMP B-TREE" in detail:
                detail += " (sorts: no index gives this order)"
            elif detail.startswith("SCAN") and "LIMIT" in statement.upper():
                detail += " (walks the rows in key order and stops at the LIMIT: no sort)"
            # The column list says nothing about the plan: keep FROM onwards.
            shown = re.sub(r"^SELECT .+? FROM ", "SELECT \u2026 FROM ", " ".join(statement.split()), count=1)
            shown = re.sub(r"\((?:\?, )+\?\)", "(?, \u2026)", shown)
            lines.append(f"{name}: `{shown}` \u2192 {detail}")
    finally:
        raw.close()
    return lines


# --- the benchmark ---------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def run(quick: bool, log: Callable[[str], None], baseline: str | None = None, rounds: int | None = None) -> Section:
    """The benchmark; with `baseline` (a git ref) that commit's controller is served too, next to the current one on
    the same database copy, the two alternating in every round, and the comparison is appended to the section."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (tools/setup.sh --test installs it)")
    size = QUICK if quick else FULL
    if rounds is not None:
        size = replace(size, rounds=rounds)
    trees = [CURRENT] if baseline is None else [CURRENT, baseline_tree(baseline, log)]
    database, meta = cached_database(size, log)
    workdir = Path(tempfile.mkdtemp(prefix="api_latency-", dir=CACHE))
    script = workdir / "report.lua"
    script.write_text(WRK_REPORT)
    servers: dict[ServerKey, Served] = {}
    try:
        for processes, threads in SERVERS:
            copy = workdir / f"api-{processes}x{threads}.sqlite"
            shutil.copyfile(database, copy)
            for tree in trees:
                served_copy = copy
                if tree is not CURRENT and schema_head(tree.path) != meta["schema"]:
                    served_copy = workdir / f"api-{processes}x{threads}-{tree.name}.sqlite"
                    shutil.copyfile(database, served_copy)
                    downgrade(served_copy, schema_head(tree.path), log)
                servers[tree.name, (processes, threads)] = Served(served_copy, workdir, processes, threads, tree)
        first = servers[CURRENT.name, SERVERS[0]]
        plans, in_process = query_plans(first.database, first.token, meta["big_job"], size.deep_after)
        points = endpoints(meta["big_job"], size.deep_after)
        for served in servers.values():
            check_answers(served, points)
        results = measure(servers, points, size, script, log)
    finally:
        for served in servers.values():
            served.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    current = {(server, clients, name): result for ((tree, server), clients, name), result in results.items() if tree == CURRENT.name}
    section = report(current, points, plans, in_process, meta, size, database.stat().st_size / 2**20)
    for tree in trees[1:]:
        section.appendix.append(compare(results, tree, points, size))
    return section


@dataclass
class Result:
    runs: list[Run] = field(default_factory=list)  # one per round

    def median(self, what: str) -> float:
        return statistics.median(getattr(run, what) for run in self.runs)

    def each(self, what: str) -> list[float]:
        return [getattr(run, what) for run in self.runs]


Setting = tuple[int, int]  # (processes, threads) of `cloudx serve`
ServerKey = tuple[str, Setting]  # (tree name, setting)
Key = tuple[Setting, int, str]  # (processes, threads), clients, endpoint


def measure(
    servers: dict[ServerKey, Served], points: list[Endpoint], size: Size, script: Path, log: Callable[[str], None]
) -> dict[tuple[ServerKey, int, str], Result]:
    """Rounds of every (concurrency, endpoint, server) in turn, the servers alternating; the same order in every round."""
    results = {(server, clients, p.name): Result() for server in servers for clients in CONCURRENCY for p in points}
    for served in servers.values():
        for point in points:
            wrk(served, point, CLIENTS, size.warmup, script)
    for number in range(1, size.rounds + 1):
        order = round_order(servers, number)
        for clients in CONCURRENCY:
            for point in points:
                for server, served in order:
                    run = wrk(served, point, clients, size.seconds, script)
                    results[server, clients, point.name].runs.append(run)
                    log(
                        f"  round {number}/{size.rounds} {served.label} {clients} client(s) {point.name}: "
                        f"{run.requests} requests, p50 {ms(run.p50)} ms, p95 {ms(run.p95)} ms, server CPU {run.cpu_ms:.1f} ms/request"
                    )
    return results


def round_order(servers: dict[ServerKey, Served], number: int) -> list[tuple[ServerKey, Served]]:
    """The servers in the order of round `number`: the settings always in the same order; the trees of one setting
    (current and baseline) swapped every other round, so that neither always runs first."""
    order = list(servers.items())
    if number % 2:
        return order
    settings = list(dict.fromkeys(setting for (_tree, setting) in servers))
    return [item for setting in settings for item in reversed([i for i in order if i[0][1] == setting])]


def server_label(server: tuple[int, int]) -> str:
    processes, threads = server
    return f"{processes} process{'es' if processes > 1 else ''} \u00d7 {threads} thread{'s' if threads > 1 else ''}"


def per_round_ratio(values: list[float], references: list[float]) -> float:
    return statistics.median(v / r for v, r in zip(values, references, strict=True))


def report(
    results: dict[Key, Result],
    points: list[Endpoint],
    plans: list[str],
    in_process: dict[str, float],
    meta: dict[str, Any],
    size: Size,
    file_mib: float,
) -> Section:
    rows = []
    deep: dict[tuple[tuple[int, int], int], tuple[float, float]] = {}
    for server in SERVERS:
        for clients in CONCURRENCY:
            ping = results[server, clients, "ping"].each("p95")
            first, deepest = results[server, clients, "events first"], results[server, clients, "events deep"]
            deep[server, clients] = (
                per_round_ratio(deepest.each("p50"), first.each("p50")),
                per_round_ratio(deepest.each("p95"), first.each("p95")),
            )
            for point in points:
                result = results[server, clients, point.name]
                ratios = deep[server, clients]
                rows.append(
                    (
                        f"`GET {point.label}`",
                        server_label(server),
                        str(clients),
                        f"{statistics.median(r.requests for r in result.runs) / size.seconds:,.0f}",
                        ms(result.median("p50")),
                        ms(result.median("p95")),
                        ratio_text(per_round_ratio(result.each("p95"), ping)),
                        f"{result.median('cpu_ms'):.1f}",
                        f"p50 {ratio_text(ratios[0])}, p95 {ratio_text(ratios[1])}" if point.name == "events deep" else "",
                    )
                )
    names = ("scans", "events first", "events deep")
    judged = {server: {name: results[server, CLIENTS, name].median("p95") for name in names} for server in SERVERS}
    within = {server: all(value <= TARGET_P95_MS / 1000 for value in judged[server].values()) for server in SERVERS}
    best = SERVERS[-1]
    alone = {name: results[best, 1, name].median("p95") for name in names}
    # Judged on what a page costs, free of queueing: the server's CPU per request, and the latency with one client.
    # With 4 connections on 2 processes the kernel gives each connection to whichever process accepts first, and
    # a 3 + 1 split in one wrk run against 2 + 2 in the next moves the latency more than the page does.
    cpu_ratio = {}
    for server in SERVERS:
        first_cpu, deep_cpu = (results[server, CLIENTS, name].each("cpu_ms") for name in ("events first", "events deep"))
        cpu_ratio[server] = per_round_ratio(deep_cpu, first_cpu)
    deep_ok = all(cpu_ratio[server] <= DEEP_TOLERANCE and deep[server, 1][0] <= DEEP_TOLERANCE for server in SERVERS)
    verdict = (
        f"p95 \u2264 {TARGET_P95_MS:.0f} ms with {CLIENTS} clients: "
        + "; ".join(
            f"{server_label(server)} {'met' if within[server] else 'MISSED'} ("
            + ", ".join(f"{name} {ms(value)} ms" for name, value in judged[server].items())
            + ")"
            for server in SERVERS
        )
        + f"; one client, {server_label(best)}: "
        + ", ".join(f"{ms(value)}" for value in alone.values())
        + f" ms. Deep page {'as fast as' if deep_ok else 'SLOWER than'} the first: server CPU per request "
        + ", ".join(f"{ratio_text(cpu_ratio[server])} ({server_label(server)})" for server in SERVERS)
        + ", p50 with one client "
        + ", ".join(f"{ratio_text(deep[server, 1][0])}" for server in SERVERS)
        + f" (judged: both \u2264 {DEEP_TOLERANCE}\u00d7)"
    )
    counts = meta["rows"]
    notes = [
        f"Database: SQLite, {counts['job_events']:,} job_events, {counts['jobs']:,} jobs, {counts['scans']:,} scans, "
        f"{counts['scan_hosts']:,} scan_hosts, {counts['scan_ports']:,} scan_ports; {file_mib:.0f} MiB; migrated by the controller, bulk "
        f"loaded with sqlite3 executemany (built once in {meta['build_seconds']} s, cached in bench/.cache/), served from a copy.",
        f"The events endpoints read the largest job ({meta['big_events']:,} events, {BIG_HOSTS} hosts); "
        f"the deep page starts after counter {size.deep_after:,}.",
        f"Load: wrk, one thread, {CLIENTS} keep-alive connections, then 1, each sending its next request as soon as the last is "
        f"answered, with a viewer's bearer token; {size.warmup} s of warm-up per endpoint and server, then {size.rounds} rounds of "
        f"{size.seconds} s per endpoint, concurrency and server, in the same order every round, the servers alternating. Every "
        "answer must be 2xx (wrk counts them); before the rounds each endpoint's body is checked (a full page: 100 events from "
        "after+1; 50 scans).",
        "p50 and p95 are wrk's percentiles of each round, and the table gives their medians over the rounds (judged against the "
        "target); ratios are medians of per-round ratios, against ping at the same concurrency and server (p95) or the first page "
        "(deep \u00f7 first).",
        "Servers: `cloudx serve --processes N --threads T` (run as `python -m controller.cli serve` with PYTHONPATH set to the "
        "tree it serves; waitress in each of N Python processes, on one port), executor off, "
        "request log at INFO to a file; they run side by side on copies of the database. 'server CPU' is the serving processes' "
        "user+system CPU time per request. Client and servers share the machine's CPUs.",
        "Threads: in one Python process, request threads take turns on one GIL, and a thread waiting for it may wait a whole "
        "switch interval (5 ms) each time it comes back from SQLite or the socket; with one thread per process a request runs "
        "from start to end on its own, and the processes use the cores.",
        "Per authenticated request the gate runs the token lookup (one SELECT; an UPDATE of its last use at most once a minute) "
        "before the view's own session. The views run statements built once with bound parameters.",
        "In-process, one thread, median of 30 (the controller functions the views call, without HTTP or Flask): "
        + ", ".join(f"{name} {value:.2f} ms" for name, value in in_process.items())
        + ".",
        "Query plans (EXPLAIN QUERY PLAN of the SQL the views run, captured from the controller's own functions):",
        *plans,
    ]
    return Section(
        title="API latency with 1M events and 100k scans",
        setup=(
            f"p50/p95 latency over HTTP against `cloudx serve` with {counts['job_events']:,} events and {counts['scans']:,} scans stored; "
            "reference: `GET /api/ping` (no database) in the same alternating rounds."
        ),
        header=(
            "endpoint",
            "server",
            "clients",
            "requests/s",
            "p50 ms",
            "p95 ms",
            "p95 \u00f7 ping",
            "server CPU ms/req",
            "deep \u00f7 first",
        ),
        rows=rows,
        verdict=verdict,
        notes=notes,
    )


def compare(results: dict[tuple[ServerKey, int, str], Result], baseline: Tree, points: list[Endpoint], size: Size) -> Section:
    """Current against baseline, endpoint by endpoint: medians of both and the medians of the per-round ratios."""
    rows = []
    judged: list[tuple[float, str]] = []  # (ratio, what it is of)
    p95_ratios = []
    for server in SERVERS:
        for clients in CONCURRENCY:
            for point in points:
                now, then = results[(CURRENT.name, server), clients, point.name], results[(baseline.name, server), clients, point.name]
                ratios = {what: per_round_ratio(now.each(what), then.each(what)) for what in ("p50", "p95", "cpu_ms")}
                rows.append(
                    (
                        f"`GET {point.label}`",
                        server_label(server),
                        str(clients),
                        *(ms(r.median("p50")) for r in (then, now)),
                        ratio_text(ratios["p50"]),
                        *(ms(r.median("p95")) for r in (then, now)),
                        ratio_text(ratios["p95"]),
                        *(f"{r.median('cpu_ms'):.1f}" for r in (then, now)),
                        ratio_text(ratios["cpu_ms"]),
                    )
                )
                where = f"{point.name}, {server_label(server)}"
                if clients == CLIENTS:
                    judged.append((ratios["cpu_ms"], f"server CPU per request with {CLIENTS} clients, {where}"))
                    p95_ratios.append(ratios["p95"])
                else:
                    judged.append((ratios["p50"], f"p50 with one client, {where}"))
    worst, what = max(judged)
    met = worst <= COMPARE_TOLERANCE
    verdict = (
        f"Current no more than {COMPARE_TOLERANCE - 1:.0%} slower than {baseline.label} "
        f"(judged: server CPU per request with {CLIENTS} clients and p50 with one client, every endpoint and server): "
        f"{'met' if met else 'MISSED'}; worst {ratio_text(worst)} ({what}). "
        f"p95 with {CLIENTS} clients, current \u00f7 baseline: {ratio_text(min(p95_ratios))} to {ratio_text(max(p95_ratios))}"
    )
    notes = [
        f"Baseline: `git archive {baseline.commit[:12]} | tar -x -C bench/.cache/{baseline.path.name}` (once, then compiled), "
        "served by `python -m controller.cli serve` with PYTHONPATH set to that tree, from this venv; the current "
        "tree the same way with PYTHONPATH set to the checkout. Each server imports its own tree's controller (checked before it starts).",
        "For each server setting the current and the baseline server serve copies of the same database (each migrates it to its "
        "own schema head, checked; where the baseline's migrations end earlier, its copy is taken back to its head by the current "
        "tree's downgrade steps, which drop only tables and columns that are empty here), each with a viewer token made by its "
        "own CLI; the database, load and wrk settings are the ones above.",
        f"{size.rounds} rounds; in each round, for every concurrency and endpoint, the current and the baseline server of the "
        f"same setting one after the other, {size.seconds} s each (which goes first swaps every round): the two alternate "
        "throughout. Ratios are the medians of the per-round ratios "
        "current \u00f7 baseline (below 1: the current tree is faster).",
        "Judged on what a request costs free of queueing (the server's CPU per request under load, the latency of one client "
        "alone); p95 with 4 clients on two cores depends on how the kernel spreads the connections and is reported only.",
    ]
    return Section(
        title=f"API latency: current against {baseline.label}",
        setup=f"The same endpoints and load as above, served by the current tree and by {baseline.label} side by side.",
        header=(
            "endpoint",
            "server",
            "clients",
            "baseline p50 ms",
            "current p50 ms",
            "p50 current \u00f7 baseline",
            "baseline p95 ms",
            "current p95 ms",
            "p95 current \u00f7 baseline",
            "baseline CPU ms/req",
            "current CPU ms/req",
            "CPU current \u00f7 baseline",
        ),
        rows=rows,
        verdict=verdict,
        notes=notes,
    )


def ratio_text(value: float) -> str:
    return f"{value:.2f}\u00d7"
