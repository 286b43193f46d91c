"""Small-scan latency (issue 18, target 1): submit → results stored, through `cloudx scan` and through the API, against
a one-task ansible-playbook (connection local) running the same scanner command, and the bare command.

Loopback (always): nmap `default` of 127.0.0.1 ports 18080 (a listener of this process), 18081 (closed) and 22. Four
variants, whole processes, alternating, N rounds (5; 2 with --quick), medians: bare nmap; a one-task playbook running
that nmap command (the venv's ansible-playbook, the project's ansible.cfg, the controller's inventory: localhost,
connection local); `cloudx scan 127.0.0.1 --tool nmap --type default --ports 18080,18081,22` (the CLI runs the job with
its local executor); `POST /api/scans` to a `cloudx serve` started once, then `GET /api/jobs/<id>` every 50 ms until
the job ended. The controller's settings are those of tests/support/app.py make_config (a temporary SQLite file,
artifacts directory and inventory), its scope set with `cloudx policy set`, the API's token made with `cloudx token
create`. Then the timeline of one job: the median CLI run from its jobs and job_events rows, and one worker run of
its own, instrumented from outside the controller (wrappers timing its phases), to show where the time goes.

Test hosts (`python -m bench.scan_latency --with-testhost`; not through `python -m bench`): the same variants for
masscan `tcp_scan` and zmap `tcp_syn` against a test host (tests/support/testhosts.py: a network namespace with
listeners). It creates network namespaces, so it runs only when asked; the section says so when it did not.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.common import BIN, PYTHON, ROOT, Measurement, Section, Variant, alternate, env_with, ratio, run_measured

TARGET = "127.0.0.1"
LISTEN_PORT = 18080
PORTS = "18080,18081,22"
TARGET_RATIO = 2.0
API_POLL_SECONDS = 0.05
ROUNDS, QUICK_ROUNDS = 5, 2
# The test-host scans: (tool, scan type, ports) and the host's services.
TESTHOST_SCANS = (("masscan", "tcp_scan", "22,8080"), ("zmap", "tcp_syn", "8080"))
TESTHOST_TCP = [22, 8080]
CLI = [str(BIN / "cloudx")] if (BIN / "cloudx").exists() else [PYTHON, "-m", "controller.cli"]


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the pieces -----------------------------------------------------------------------------------------------------


class _Close(socketserver.BaseRequestHandler):
    def handle(self) -> None:  # accept, then close: an open port for nmap
        self.request.close()


class Listener(socketserver.ThreadingTCPServer):
    """A throwaway TCP listener on 127.0.0.1 only."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Close)
        self.thread = threading.Thread(target=self.serve_forever, name="listener", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def epoch(moment: datetime | str | None) -> float | None:
    """A database timestamp (naive means UTC, as SQLite returns them) or an event's `created` as seconds."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds of a process and of the children it has reaped."""
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def scanner_argv(tool: str, scan_type: str, target: str, ports: str, raw: str, link: dict[str, str], exclude_file: str = "") -> list[str]:
    """The command the scanner role runs for this request (its own build_argv), writing to `raw`."""
    from controller import scanlib

    request = scanlib.scanner.validate_request(tool, scan_type, target, ports)
    # The test inventory (tests/support/app.py) sets scanner_wait 2; the rate is the role's default.
    return scanlib.scanner.build_argv(request, raw, exclude_file=exclude_file, rate=1000, wait=2, **link)


@dataclass
class JobTimes:
    """One controller job's moments (epoch seconds): the client's, then the jobs row's."""

    job_id: str
    submit: float
    end: float  # the CLI exited / the API client saw the end
    created: float
    running: float
    first_event: float
    finished: float
    results_stored: float | None
    status: str
    nmap_elapsed: float | None
    open_ports: int | None


@dataclass
class Controller:
    """A controller's settings in a directory of its own (as tests/support/app.py makes them), set up with the CLI."""

    work: Path
    scope: tuple[str, ...]
    config: Any = None
    env: dict[str, str] = field(default_factory=dict)
    db: Any = None

    def __post_init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        from controller.store.database import Database
        from tests.support.app import make_config

        self.config = make_config(self.work)
        self.env = env_with(**self.config.as_env(), CLOUDX_SYNC_HEARTBEAT_FILE=self.config.SYNC_HEARTBEAT_FILE)
        self.cloudx("policy", "set", *(arg for entry in self.scope for arg in ("--scope", entry)))
        self.db = Database(self.config.DATABASE_URL)

    def cloudx(self, *args: str) -> str:
        done = subprocess.run([*CLI, *args], env=self.env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"cloudx {' '.join(args[:2])} failed: {done.stderr[-2000:]}")
        return done.stdout

    def newest_job(self) -> str:
        from sqlalchemy import select

        from controller.store.models import Job

        with self.db.session() as session:
            job_id = session.scalar(select(Job.id).order_by(Job.created_at.desc()).limit(1))
        assert job_id is not None
        return job_id

    def times(self, job_id: str, submit: float, end: float) -> JobTimes:
        from sqlalchemy import select

        from controller.store.models import Job, Scan

        with self.db.session() as session:
            job = session.get(Job, job_id)
            scan = session.scalar(select(Scan).where(Scan.job_id == job_id))
            assert job is not None and scan is not None
            summary = scan.summary or {}
            values = [epoch(m) for m in (job.created_at, job.started_at, job.first_event_at, job.finished_at)]
            if None in values:
                raise RuntimeError(f"job {job_id} ended {job.status} without every timestamp: {values} ({job.status_reason})")
            created, running, first, finished = (float(v) for v in values if v is not None)
            return JobTimes(
                job_id,
                submit,
                end,
                created,
                running,
                first,
                finished,
                epoch(scan.updated_at),
                job.status,
                summary.get("elapsed"),
                (summary.get("counts") or {}).get("open_ports"),
            )

    def events(self, job_id: str) -> list[tuple[int, str, str | None, float]]:
        """(counter, event, task, created) of every stored event, in order."""
        from sqlalchemy import select

        from controller.store.models import JobEvent

        with self.db.session() as session:
            rows = session.execute(
                select(JobEvent.counter, JobEvent.event, JobEvent.task, JobEvent.created, JobEvent.event_data)
                .where(JobEvent.job_id == job_id)
                .order_by(JobEvent.counter)
            ).all()
        found = []
        for counter, event, task, created, data in rows:
            name = task or (data or {}).get("task")
            found.append((counter, event, name, float(epoch(created) or 0.0)))
        return found


class Api:
    """`cloudx serve` started once on a controller of its own (tests/support/service.py), an admin token from the CLI."""

    def __init__(self, work: Path, scope: tuple[str, ...]) -> None:
        sys.path.insert(0, str(ROOT))
        from controller.store.database import Database
        from tests.support.service import Service

        self.service = Service(work, scope=scope)
        self.service.start()
        assert self.service.proc is not None
        self.process = psutil.Process(self.service.proc.pid)
        self.resident = {child.pid for child in self.process.children(recursive=True)}
        self.db = Database(self.service.config.DATABASE_URL)
        self.controller = Controller.__new__(Controller)  # its reading methods, on the service's database
        self.controller.db = self.db

    def scan(self, tool: str, scan_type: str, target: str, ports: str) -> tuple[JobTimes, float]:
        """Submit, follow to the end; the job's moments and the server's CPU seconds (its reaped worker included)."""
        from controller.store.models import FINAL_STATUSES

        http = self.service.http
        cpu = tree_cpu(self.process)
        submit = time.time()
        response = http.post(f"{self.service.url}/scans", json={"target": target, "tool": tool, "scan_type": scan_type, "ports": ports})
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/scans: {response.status_code} {response.text[:500]}")
        job_id = response.json()["job_id"]
        while http.get(f"{self.service.url}/jobs/{job_id}", timeout=30).json()["status"] not in FINAL_STATUSES:
            time.sleep(API_POLL_SECONDS)
        end = time.time()
        # The worker's CPU reaches the server's figures once its executor has reaped it (a tick at most 0.5 s later).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and {c.pid for c in self.process.children(recursive=True)} - self.resident:
            time.sleep(0.02)
        return self.controller.times(job_id, submit, end), tree_cpu(self.process) - cpu

    def stop(self) -> None:
        self.db.dispose()
        self.service.stop()


# --- the variants ---------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One scan request, measured every way."""

    label: str
    tool: str
    scan_type: str
    target: str
    ports: str
    link: dict[str, str] = field(default_factory=dict)
    controller_runs: dict[str, list[JobTimes]] = field(default_factory=dict)


def variants(scenario: Scenario, work: Path, cli: Controller, api: Api) -> list[Variant]:
    raw = work / f"raw-{scenario.tool}"
    exclude = ""
    if scenario.tool == "zmap":  # the role writes an exclude file for zmap; the test inventory leaves out the system list
        (work / "exclude.txt").write_text("\n")
        exclude = str(work / "exclude.txt")
    argv = scanner_argv(scenario.tool, scenario.scan_type, scenario.target, scenario.ports, str(raw), scenario.link, exclude)
    playbook = work / f"one-task-{scenario.tool}.yml"
    playbook.write_text(
        "- name: One task\n  hosts: scanners\n  gather_facts: false\n  tasks:\n    - name: Run the scanner\n"
        f"      ansible.builtin.command:\n        argv: {json.dumps(argv)}\n"
    )
    ansible_env = env_with(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    )
    inventory = cli.config.INVENTORY
    scenario.controller_runs = {"cli": [], "api": []}

    def timed(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
        started = time.time()
        figures = run_measured(argv, env=env, cwd=work)
        return {"wall_s": time.time() - started, "cpu_s": figures["cpu_s"]}

    def controller_figures(times: JobTimes) -> dict[str, float]:
        if times.status != "successful":
            raise RuntimeError(f"job {times.job_id} ended {times.status}")
        return {
            "to_running_s": times.running - times.submit,
            "to_first_event_s": times.first_event - times.submit,
            "to_stored_s": times.finished - times.submit,
        }

    def by_cli() -> dict[str, float]:
        command = [*CLI, "scan", scenario.target, "--tool", scenario.tool, "--type", scenario.scan_type, "--ports", scenario.ports]
        started = time.time()
        figures = run_measured(command, env=cli.env, cwd=ROOT)
        ended = time.time()
        times = cli.times(cli.newest_job(), started, ended)
        scenario.controller_runs["cli"].append(times)
        return {"wall_s": ended - started, "cpu_s": figures["cpu_s"], **controller_figures(times)}

    def by_api() -> dict[str, float]:
        times, cpu = api.scan(scenario.tool, scenario.scan_type, scenario.target, scenario.ports)
        scenario.controller_runs["api"].append(times)
        return {"wall_s": times.end - times.submit, "cpu_s": cpu, **controller_figures(times)}

    return [
        Variant(f"bare {scenario.tool}", lambda: timed(argv)),
        Variant("one-task ansible-playbook", lambda: timed([str(BIN / "ansible-playbook"), "-i", inventory, str(playbook)], ansible_env)),
        Variant("`cloudx scan`", by_cli),
        Variant("API: POST /api/scans, poll GET /api/jobs/<id>", by_api),
    ]


def figures_section(scenario: Scenario, results: dict[str, Measurement], rounds: int, title: str, setup: str) -> Section:
    reference = results["one-task ansible-playbook"]
    wall_ref, cpu_ref = reference.extra_median("wall_s"), reference.extra_median("cpu_s")
    rows = []
    verdicts = []
    for name, m in results.items():
        wall, cpu = m.extra_median("wall_s"), m.extra_median("cpu_s")
        latencies = [f"{m.extra_median(k):.2f}" if k in m.extra else "-" for k in ("to_running_s", "to_first_event_s", "to_stored_s")]
        rows.append((name, f"{wall:.2f}", ratio(wall, wall_ref), f"{cpu:.2f}", ratio(cpu, cpu_ref), *latencies))
        if "to_stored_s" in m.extra:
            measured = wall / wall_ref
            verdicts.append(f"{name} {measured:.2f}\u00d7 ({'met' if measured <= TARGET_RATIO else 'missed'})")
    bare = results[f"bare {scenario.tool}"].extra_median("wall_s")
    elapsed = [t.nmap_elapsed for runs in scenario.controller_runs.values() for t in runs if t.nmap_elapsed is not None]
    notes = [
        f"Walls are whole processes (the API: the client's POST to its first GET that saw the job ended, polling every "
        f"{API_POLL_SECONDS * 1000:.0f} ms); CPU is the process with the children it reaped (wait4; for the API the "
        "`cloudx serve` process's own and its reaped job worker's, read once the worker was reaped). submit → running, "
        "→ first event, → results stored are the jobs row's started_at, first_event_at and finished_at (set after the "
        "results are stored) against the client's submit (the CLI: its process start).",
        f"The bare {scenario.tool} takes {bare:.2f} s; the scanner's own elapsed time as the role recorded it (the scan "
        f"summary), median over the controller runs: {statistics.median(elapsed):.2f} s."
        if elapsed
        else f"The bare {scenario.tool} takes {bare:.2f} s.",
    ]
    return Section(
        title=title,
        setup=setup + f" {rounds} rounds, the four variants alternating; medians.",
        header=(
            "variant",
            "median wall s",
            "vs one-task playbook",
            "median CPU s",
            "CPU vs playbook",
            "submit → running s",
            "submit → first event s",
            "submit → results stored s",
        ),
        rows=rows,
        verdict=f"Target: submit → results stored at most {TARGET_RATIO:.0f}\u00d7 the one-task playbook. Measured: "
        + "; ".join(verdicts)
        + ".",
        notes=notes,
    )


# --- where the time goes --------------------------------------------------------------------------------------------


def task_spans(events: list[tuple[int, str, str | None, float]]) -> list[tuple[str, float, float]]:
    """(task, first event, last event) per task, in order: from its playbook_on_task_start to its last result."""
    spans: dict[str, list[float]] = {}
    for _counter, event, task, created in events:
        if task is None or event.startswith("playbook_on_stats"):
            continue
        span = spans.setdefault(task, [created, created])
        span[1] = max(span[1], created)
        if event == "playbook_on_task_start":
            span[0] = min(span[0], created)
    return [(task, start, end) for task, (start, end) in spans.items()]


def phase_rows(moments: list[tuple[str, float]], zero: float) -> list[tuple[str, ...]]:
    """A row per step: what, when it ended (s after submit), and how long it took since the step before."""
    rows = []
    last = zero
    for what, moment in moments:
        rows.append((what, f"{moment - zero:.3f}", f"{moment - last:+.3f}"))
        last = moment
    return rows


def job_timeline(controller: Controller, times: JobTimes, how: str) -> Section:
    """The median controller run, from its jobs and job_events rows."""
    events = controller.events(times.job_id)
    first, last = events[0][3], events[-1][3]
    moments: list[tuple[str, float]] = [
        ("job row created (" + ("the CLI's start-up, " if how == "CLI" else "the request: ") + "the checks, the insert)", times.created),
        ("claimed: status running (started_at)", times.running),
        (
            f"first event created by ansible-playbook ({events[0][1]}): worker start, imports, ansible-runner and ansible-playbook start",
            first,
        ),
        ("first event stored (first_event_at)", times.first_event),
    ]
    for task, start, end in task_spans(events):
        moments.append((f"task start: {task}", start))
        moments.append((f"task end: {task} ({end - start:.3f} s)", end))
    moments.append((f"last event created ({events[-1][1]})", last))
    if times.results_stored is not None:
        moments.append(
            ("scan results stored (the scans row's updated_at): events closed, ansible-runner ended, results read", times.results_stored)
        )
    moments.append(("job ended (finished_at)", times.finished))
    moments.append(
        (
            "the client saw the end" if how == "API" else "`cloudx scan` exited (its follow loop saw the end, then printed the results)",
            times.end,
        )
    )
    moments.sort(key=lambda m: m[1])
    return Section(
        title=f"Timeline of the median {how} job ({times.job_id[:8]}, {len(events)} events)",
        setup=(
            "From the jobs row (created_at, started_at, first_event_at, finished_at), the scans row (updated_at) and the "
            "job_events rows (each event's `created`, stamped by ansible-playbook's callback, and its task). Seconds after "
            "the submit (the CLI's process start / the API client's POST)."
        ),
        header=("step", "at s", "since the step before s"),
        rows=phase_rows(moments, times.submit),
        verdict=f"Submit → results stored {times.finished - times.submit:.2f} s, of which ansible-playbook's events span "
        f"{last - first:.2f} s.",
    )


# The worker as an executor starts it (`python -m controller.runner JOB_ID`), with timing wrappers put around its
# phases from outside: the controller's code is unchanged.
INSTRUMENTED = r"""
import time
T = {"interpreter": time.time()}
import json, sys
out = sys.argv.pop()
import controller.runner.worker as w
T["imports"] = time.time()
import ansible_runner, pexpect
from controller.runner.scan import ScanKind

def wrap(owner, name, before=None, after=None, once=False):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if before and not (once and before in T):
            T[before] = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            if after and not (once and after in T):
                T[after] = time.time()
    setattr(owner, name, wrapper)

wrap(w.JobRun, "_claim", after="claimed")
wrap(w.JobRun, "_prepare", after="prepared")
wrap(ansible_runner, "run", before="runner_called", after="runner_returned")
wrap(pexpect, "spawn", before="playbook_spawned", once=True)
wrap(w.JobRun, "_close_events", after="events_closed")
wrap(ScanKind, "finish", before="results_start", after="results_stored")
wrap(w.JobRun, "_record", after="recorded")
code = w.main(sys.argv)
T["main_returned"] = time.time()
with open(out, "w") as f:
    json.dump(T, f)
sys.exit(code)
"""


def instrumented_run(controller: Controller, scenario: Scenario, work: Path) -> Section:
    """One scan job queued in the CLI's database and run by a worker process of this benchmark, its phases timed."""
    from controller.schemas.scans import ScanRequest
    from controller.services.auth import cli_principal
    from controller.services.scans import create_scan

    payload = {"target": scenario.target, "tool": scenario.tool, "scan_type": scenario.scan_type, "ports": scenario.ports}
    submit = time.time()
    with controller.db.session() as session:
        job_id = create_scan(session, controller.config, cli_principal(False), ScanRequest.parse(payload, config=controller.config)).job_id
    out = work / "instrumented.json"
    env = {**controller.env, "PYTHONPATH": str(ROOT)}
    spawned = time.time()
    proc = subprocess.run(
        [PYTHON, "-c", INSTRUMENTED, job_id, str(out)], env=env, cwd=controller.config.PROJECT_DIR, capture_output=True, text=True
    )
    exited = time.time()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"instrumented worker exited {proc.returncode}: {proc.stderr[-2000:]}")
    marks: dict[str, float] = json.loads(out.read_text())
    times = controller.times(job_id, submit, exited)
    events = controller.events(job_id)
    labels = {
        "interpreter": "worker process: interpreter up (python start-up)",
        "imports": "worker imports done (controller.runner.worker: ansible_runner, SQLAlchemy, the controller)",
        "claimed": "job claimed (running)",
        "prepared": "job prepared (scan kind: scope check where it runs, the job's directory)",
        "runner_called": "ansible_runner.run() called",
        "playbook_spawned": "ansible-playbook spawned by ansible-runner (pexpect)",
        "runner_returned": "ansible_runner.run() returned (ansible-playbook exited)",
        "events_closed": "every event stored (EventWriter closed)",
        "results_start": "results: reading the role's files",
        "results_stored": "results stored (hosts and ports, in one transaction)",
        "recorded": "job ended (finished_at recorded)",
        "main_returned": "worker main() returned (database disposed)",
    }
    moments = [("job created (create_scan in this process)", times.created), ("worker process started (Popen)", spawned)]
    moments += [(labels[key], value) for key, value in marks.items() if key in labels]
    moments.append((f"first event created by ansible-playbook ({events[0][1]})", events[0][3]))
    moments.append(("first event stored (first_event_at)", times.first_event))
    for task, start, end in task_spans(events):
        moments.append((f"task start: {task}", start))
        moments.append((f"task end: {task} ({end - start:.3f} s)", end))
    moments.append((f"last event created ({events[-1][1]})", events[-1][3]))
    moments.append(("worker process exited", exited))
    moments.sort(key=lambda m: m[1])
    spans = task_spans(events)
    tasks_total = sum(end - start for _t, start, end in spans)
    gaps = events[-1][3] - events[0][3] - tasks_total
    elapsed = times.nmap_elapsed
    scanning = [(t, e - s) for t, s, e in spans if t in ("Start the scan", "Report scan progress")]
    return Section(
        title=f"Timeline of one instrumented worker run ({job_id[:8]}, {len(events)} events)",
        setup=(
            "A scan job queued in the CLI's database and run by `python -c` of the worker's module with timing wrappers "
            "around its phases (claim, prepare, ansible_runner.run, pexpect.spawn, closing the events, storing the results, "
            "recording the end), put in from outside: the controller's code is unchanged. No executor: the worker claims "
            "the job itself. Seconds after the job's submit."
        ),
        header=("step", "at s", "since the step before s"),
        rows=phase_rows(moments, submit),
        verdict=(
            f"Worker start → first event {events[0][3] - spawned:.2f} s (of which python start-up "
            f"{marks['interpreter'] - spawned:.2f} s, imports {marks['imports'] - marks['interpreter']:.2f} s, ansible-runner "
            f"→ ansible-playbook's first event {events[0][3] - marks.get('playbook_spawned', marks['runner_called']):.2f} s); tasks "
            f"{tasks_total:.2f} s plus {gaps:.2f} s between them; last event → finished_at {times.finished - events[-1][3]:.2f} s."
        ),
        notes=[
            f"The scan itself: {elapsed:.2f} s as the role recorded it; its two tasks (start, poll until it ended) took "
            + ", ".join(f"{t} {d:.2f} s" for t, d in scanning)
            + ". A poll returns within 0.1 s of the scan's end (cloudx_scan_status checks every 0.1 s)."
            if elapsed is not None
            else "The scan's elapsed time was not recorded.",
        ],
    )


# --- the run --------------------------------------------------------------------------------------------------------


def measure(scenario: Scenario, work: Path, cli: Controller, api: Api, rounds: int, log: Callable[[str], None]) -> dict[str, Measurement]:
    results = alternate(variants(scenario, work, cli, api), rounds, log)
    for runs in scenario.controller_runs.values():
        for times in runs:
            if times.open_ports is not None and times.open_ports < 1:
                raise RuntimeError(f"job {times.job_id} found no open port: the listener was not seen")
    return results


def median_run(runs: list[JobTimes]) -> JobTimes:
    ordered = sorted(runs, key=lambda t: t.finished - t.submit)
    return ordered[(len(ordered) - 1) // 2]


@contextlib.contextmanager
def controllers(work: Path, scope: tuple[str, ...]) -> Iterator[tuple[Controller, Api]]:
    (work / "cli").mkdir(parents=True)
    (work / "api").mkdir()
    cli = Controller(work / "cli", scope)
    api = Api(work / "api", scope)
    try:
        yield cli, api
    finally:
        api.stop()
        cli.db.dispose()


def testhost_sections(work: Path, rounds: int, log: Callable[[str], None]) -> list[Section]:
    """masscan and zmap against a test host (network namespaces: only with --with-testhost)."""
    sys.path.insert(0, str(ROOT))
    from tests.support import testhosts

    reason = testhosts.available()
    if reason:
        return [not_run_section(f"test hosts cannot run here: {reason}")]
    sections = []
    with testhosts.Lab() as lab, controllers(work / "testhost", ("198.18.0.0/15",)) as (cli, api):
        host = lab.add_host(tcp=TESTHOST_TCP)
        # What the role discovers for a target on the host's own /24: the outer veth, the host's MAC, the machine's address.
        link = {"interface": host.outer_if, "gateway_mac": host.mac, "source_ip": host.gateway}
        for tool, scan_type, ports in TESTHOST_SCANS:
            log(f"  {tool} {scan_type} {host.address} ports {ports}")
            scenario = Scenario(f"{tool} {scan_type}", tool, scan_type, host.address, ports, link)
            results = measure(scenario, work / "testhost", cli, api, rounds, log)
            setup = (
                f"`{tool}` `{scan_type}` of a test host ({host.address}, TCP {', '.join(map(str, TESTHOST_TCP))} listening) "
                f"ports {ports}, the role's command (rate 1000, wait 2 s as the test inventory sets) in every variant."
            )
            sections.append(figures_section(scenario, results, rounds, f"{tool} {scan_type} against a test host", setup))
    return sections


def not_run_section(why: str) -> Section:
    return Section(
        title="masscan and zmap against a test host",
        setup="masscan `tcp_scan` and zmap `tcp_syn` of a test host (tests/support/testhosts.py), the same four variants.",
        header=("variant", "median wall s"),
        rows=[("-", "not run")],
        verdict=f"Not run: {why}.",
    )


def run(quick: bool, log: Callable[[str], None], with_testhost: bool = False, rounds: int | None = None) -> Section:
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cloudx-bench-scan-latency-") as tmp:
        work = Path(tmp)
        listener = Listener(LISTEN_PORT)
        try:
            with controllers(work, ("127.0.0.0/8",)) as (cli, api):
                scenario = Scenario("nmap default", "nmap", "default", TARGET, PORTS)
                results = measure(scenario, work, cli, api, rounds, log)
                cli_median = median_run(scenario.controller_runs["cli"])
                api_median = median_run(scenario.controller_runs["api"])
                appendix = [job_timeline(cli, cli_median, "CLI"), job_timeline(api.controller, api_median, "API")]
                log("  instrumented worker run")
                appendix.append(instrumented_run(cli, scenario, work))
        finally:
            listener.close()
        if with_testhost:
            appendix += testhost_sections(work, rounds, log)
        else:
            appendix.append(
                not_run_section(
                    "it creates network namespaces and a test host; run `python -m bench.scan_latency --with-testhost` "
                    "(through `python -m bench` it is always skipped)"
                )
            )
    setup = (
        f"nmap `default` of {TARGET} ports {PORTS} (18080 a listener of this benchmark, 18081 closed), the role's nmap "
        "command (`nmap -T4 -oX RAW --stats-every 2s -p PORTS -- 127.0.0.1`) in every variant; the controller's settings "
        "as tests/support/app.py makes them (SQLite, local executor), the CLI and the API each on a database of its own. "
        f"Load average at the start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} on {os.cpu_count()} CPUs."
    )
    section = figures_section(scenario, results, rounds, "9. Small-scan latency", setup)
    section.appendix = appendix
    return section


def main() -> int:
    """`python -m bench.scan_latency [--quick] [--rounds N] [--with-testhost]`: this benchmark alone, written as `python -m bench` does."""
    from bench.__main__ import PARTS, write_report

    parser = argparse.ArgumentParser(prog="python -m bench.scan_latency", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--rounds", type=int, metavar="N", help="rounds (default 5, 2 with --quick)")
    parser.add_argument("--with-testhost", action="store_true", help="also masscan and zmap against a test host (network namespaces)")
    args = parser.parse_args()
    PARTS.mkdir(exist_ok=True)
    compileall.compile_dir(ROOT / "controller", quiet=1)
    started = time.monotonic()
    log_stderr("== scan_latency: small-scan latency")
    section = run(quick=args.quick, log=log_stderr, with_testhost=args.with_testhost, rounds=args.rounds)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    quick = " (quick run: reduced sizes)" if args.quick else ""
    (PARTS / "scan_latency.md").write_text(section.markdown() + f"\n_Measured {stamp}{quick} in {time.monotonic() - started:.0f} s._\n")
    log_stderr(f"== scan_latency done: {section.verdicts}")
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
