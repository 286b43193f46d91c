"""The dashboard's pages with 100,000 scans and 1,000,000 events stored, against a real `cloudx serve`, and its live updates.

The database is api_latency's (built once into bench/.cache/ and reused), served from a copy to which 50 running scans
are added (what the overview and the scans list show live). `cloudx serve` runs with its default settings (one process,
eight request threads), executor off. A requests session signs in as a browser does (GET /signin, its csrf_token and
pre-session cookie, POST /signin), then every page is fetched N times: one client, the pages alternating in rounds, then
four client processes on the same page at once. Each request's server time is its line of the access log ("cloudx.api",
matched by the X-Request-ID the response carries); the wall time is the client's, over loopback.

Then, in-process (Flask's test client on the same database copy), where each page's time goes: its SQL statements and
its template; a page over the target is profiled with pyinstrument.

Live updates: which EventSources each page opens (a design check of the pages and static/live.js), then one GET
/api/stream with the session cookie while the 50 running jobs' progress changes (UPDATE jobs SET progress, one
transaction per change, as the job workers' event writer does): each change's commit against its arrival.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.api_latency import CACHE, FULL, QUICK, Served, cached_database
from bench.common import PYTHON, ROOT, Section, percentile

TARGET_MS = 50.0
REQUESTS = 200  # per page, client setting
QUICK_REQUESTS = 40
ROUNDS = 4  # the single client's requests per page, split into rounds with the pages alternating
WARMUP = 5
CLIENTS = 4
RUNNING = 50  # scans running at once
STEPS = 20  # progress changes per running job
QUICK_STEPS = 5
CHANGES_PER_SECOND = 50  # each job's progress changes about once a second
IN_PROCESS = 30  # in-process requests per page for the breakdown
PROFILED = 20  # requests per profiled page
PAGES: tuple[tuple[str, str], ...] = (
    ("overview", "/"),
    ("scans", "/scans"),
    ("scan", "/scans/{scan}"),
    ("jobs", "/jobs"),
    ("job", "/jobs/{job}"),
    ("fleet", "/fleet"),
    ("schedules", "/schedules"),
    ("webhooks", "/webhooks"),
    ("tokens", "/admin/tokens"),
    ("policy", "/admin/policy"),
    ("audit", "/admin/audit"),
)
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
# "... INFO cloudx.api: <request id>[ (<client's id>)] <who> GET '/path' 200 12.3ms"
ACCESS = re.compile(r"cloudx\.api: ([0-9a-f]{32})(?: \([^)]*\))? .* (\d{3}) ([0-9.]+)ms$")


@dataclass
class Sample:
    page: str
    wall_ms: float
    request_id: str
    status: int


@dataclass
class Timings:
    wall: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)


# --- the dataset: api_latency's, plus 50 running scans -----------------------------------------------------------


def prepare(copy: Path) -> tuple[dict[str, Any], list[str]]:
    """Add the running scans to the copy; the scan and the job whose detail pages are measured."""
    from sqlalchemy import text

    from controller.store.database import Database
    from controller.store.models import Job, Scan, utcnow

    db = Database(f"sqlite:///{copy}")
    running = []
    try:
        with db.session() as s:
            for i in range(RUNNING):
                target = f"10.200.{i}.0/24"
                extra = {"scanner_tool": "nmap", "scanner_scan_type": "default", "scanner_target": target, "scanner_ports": "1-1024"}
                job = Job(
                    kind="scan",
                    playbook="playbooks/scan.yml",
                    inventory=str(ROOT / "inventory"),
                    extra_vars=extra,
                    timeout=2100,
                    status="running",
                    progress=0,
                    started_at=utcnow(),
                    heartbeat_at=utcnow(),
                    created_by="bench",
                )
                s.add(job)
                s.flush()
                s.add(Scan(job_id=job.id, tool="nmap", target=target, scan_type="default", ports="1-1024"))
                running.append(job.id)
        with db.session() as s:
            # A scan with results (among the most hosts and ports of the dataset) whose target was scanned before, so
            # that its page computes a diff; the job with the most events.
            scan = s.execute(
                text(
                    "SELECT s.job_id, count(DISTINCT h.id) AS hosts, count(p.id) AS ports, EXISTS (SELECT 1 FROM scans o "
                    "JOIN jobs oj ON oj.id = o.job_id WHERE o.target = s.target AND o.tool = s.tool AND o.scan_type = s.scan_type "
                    "AND o.id < s.id AND oj.status = 'successful') AS previous FROM scans s JOIN jobs j ON j.id = s.job_id "
                    "JOIN scan_hosts h ON h.scan_id = s.id LEFT JOIN scan_ports p ON p.host_id = h.id WHERE j.status = 'successful' "
                    "GROUP BY s.id ORDER BY previous DESC, ports DESC, s.id DESC LIMIT 1"
                )
            ).one()
            job = s.execute(text("SELECT id, final_counter FROM jobs ORDER BY final_counter DESC LIMIT 1")).one()
            events = s.execute(text("SELECT count(*) FROM job_events WHERE job_id = :id"), {"id": job.id}).scalar_one()
    finally:
        db.dispose()
    chosen = {"scan": scan.job_id, "scan_hosts": scan.hosts, "scan_ports": scan.ports, "previous": bool(scan.previous)}
    chosen.update(job=job.id, job_events=events)
    return chosen, running


# --- signing in and fetching -------------------------------------------------------------------------------------


def sign_in(base: str, token: str) -> requests.Session:
    """GET /signin (its form's csrf_token and the pre-session cookie), POST /signin: the cloudx_session cookie."""
    session = requests.Session()
    form = session.get(f"{base}/signin", timeout=30)
    found = CSRF.search(form.text)
    if form.status_code != 200 or found is None:
        raise RuntimeError(f"GET /signin: {form.status_code}, no csrf_token: {form.text[:300]!r}")
    answer = session.post(
        f"{base}/signin", data={"token": token, "csrf_token": found.group(1), "next": "/"}, allow_redirects=False, timeout=30
    )
    if answer.status_code != 303 or "cloudx_session" not in session.cookies:
        raise RuntimeError(f"POST /signin: {answer.status_code} {answer.headers.get('Location')}, cookies {list(session.cookies.keys())}")
    return session


def fetch(session: requests.Session, url: str, page: str) -> Sample:
    started = time.perf_counter()
    response = session.get(url, timeout=60, allow_redirects=False)
    wall = (time.perf_counter() - started) * 1000
    return Sample(page, wall, response.headers.get("X-Request-ID", ""), response.status_code)


def _client(base: str, cookies: dict[str, str], paths: list[tuple[str, str]], count: int, barrier: Any, out: Any) -> None:
    """One of the concurrent clients (a process of its own): `count` GETs of each page, starting with the others."""
    session = requests.Session()
    session.cookies.update(cookies)
    samples = []
    for page, path in paths:
        barrier.wait(120)
        samples += [fetch(session, base + path, page) for _ in range(count)]
    out.put([(s.page, s.wall_ms, s.request_id, s.status) for s in samples])


def access_times(log_path: Path) -> dict[str, tuple[int, float]]:
    """request id -> (status, elapsed ms) from the server's access log."""
    found = {}
    for line in log_path.read_text(errors="replace").splitlines():
        match = ACCESS.search(line)
        if match:
            found[match.group(1)] = (int(match.group(2)), float(match.group(3)))
    return found


def collect(samples: list[Sample], log_path: Path) -> dict[str, Timings]:
    time.sleep(0.5)  # the log's last lines
    logged = access_times(log_path)
    result: dict[str, Timings] = {}
    for sample in samples:
        timings = result.setdefault(sample.page, Timings())
        timings.wall.append(sample.wall_ms)
        timings.statuses.add(sample.status)
        if sample.request_id in logged:
            timings.server.append(logged[sample.request_id][1])
    return result


def sequential(session: requests.Session, base: str, paths: list[tuple[str, str]], count: int, log: Callable[[str], None]) -> list[Sample]:
    samples = []
    per_round = count // ROUNDS
    for number in range(1, ROUNDS + 1):
        for page, path in paths:
            got = [fetch(session, base + path, page) for _ in range(per_round)]
            samples += got
            log(f"  1 client, round {number}/{ROUNDS} {page}: p95 wall {percentile([s.wall_ms for s in got], 95):.1f} ms")
    return samples


def concurrent(session: requests.Session, base: str, paths: list[tuple[str, str]], count: int) -> list[Sample]:
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(CLIENTS), context.Queue()
    cookies = requests.utils.dict_from_cookiejar(session.cookies)
    workers = [context.Process(target=_client, args=(base, cookies, paths, count // CLIENTS, barrier, out)) for _ in range(CLIENTS)]
    for worker in workers:
        worker.start()
    got = [out.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join()
    return [Sample(*row) for rows in got for row in rows]


# --- where the time goes, in-process ------------------------------------------------------------------------------


@dataclass
class Breakdown:
    total: list[float] = field(default_factory=list)
    sql: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)
    template: list[float] = field(default_factory=list)  # rendering, SQL run while rendering excluded
    slowest: dict[str, list[float]] = field(default_factory=dict)  # statement -> ms per request
    plan: str = ""  # EXPLAIN QUERY PLAN of the slowest statement (profiled pages)


class Instrument:
    """SQL and template time of each request in an app: SQLAlchemy's cursor events and Flask's template signals."""

    def __init__(self, app: Any) -> None:
        from flask import before_render_template, template_rendered
        from sqlalchemy import event

        self.engine = app.extensions["cloudx.db"].engine
        self.sql = self.template = self.template_sql = self.template_started = 0.0
        self.count = 0
        self.in_template = False
        self.statements: dict[str, float] = {}
        self.full: dict[str, tuple[str, Any]] = {}  # shown -> (statement, parameters), for EXPLAIN QUERY PLAN
        event.listen(self.engine, "before_cursor_execute", self.before)
        event.listen(self.engine, "after_cursor_execute", self.after)
        before_render_template.connect(self.rendering, app)
        template_rendered.connect(self.rendered, app)

    def reset(self) -> None:
        self.sql = self.template = 0.0
        self.count = 0
        self.statements = {}

    def before(self, conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(self, conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        spent = (time.perf_counter() - conn.info["bench_started"].pop()) * 1000
        self.sql += spent
        self.count += 1
        if self.in_template:
            self.template_sql += spent
        shown = re.sub(r"^SELECT .+? FROM ", "SELECT \u2026 FROM ", " ".join(statement.split()), count=1)[:160]
        self.statements[shown] = self.statements.get(shown, 0.0) + spent
        self.full[shown] = (statement, params)

    def rendering(self, _app: Any, **_extra: Any) -> None:
        self.in_template, self.template_started, self.template_sql = True, time.perf_counter(), 0.0

    def rendered(self, _app: Any, **_extra: Any) -> None:
        self.in_template = False
        self.template += (time.perf_counter() - self.template_started) * 1000 - self.template_sql

    def measure(self, client: Any, path: str) -> Breakdown:
        for _ in range(WARMUP):
            client.get(path)
        breakdown = Breakdown()
        for _ in range(IN_PROCESS):
            self.reset()
            started = time.perf_counter()
            client.get(path)
            breakdown.total.append((time.perf_counter() - started) * 1000)
            breakdown.sql.append(self.sql)
            breakdown.statements.append(self.count)
            breakdown.template.append(self.template)
            for statement, spent in self.statements.items():
                breakdown.slowest.setdefault(statement, []).append(spent)
        return breakdown

    def remove(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self.before)
        event.remove(self.engine, "after_cursor_execute", self.after)


def in_process(
    copy: Path, workdir: Path, token: str, paths: list[tuple[str, str]], profile: set[str]
) -> tuple[dict[str, Breakdown], dict[str, str]]:
    """Flask's test client on the database copy: per page its SQL time and statements, its template time; pyinstrument
    for the pages in `profile` (the controller's and the templates' frames, ms per request)."""
    from controller.app import create_app

    app = create_app(
        ENV_FILE="",
        DATABASE_URL=f"sqlite:///{copy}",
        ARTIFACTS_DIR=str(workdir / "artifacts"),
        SYNC_HEARTBEAT_FILE=str(workdir / "sync_heartbeat.json"),
    )
    instrument = Instrument(app)
    client = app.test_client()
    found = CSRF.search(client.get("/signin").text)
    if found is None:
        raise RuntimeError("in-process GET /signin: no csrf_token")
    client.post("/signin", data={"token": token, "csrf_token": found.group(1), "next": "/"})
    results: dict[str, Breakdown] = {}
    profiles: dict[str, str] = {}
    try:
        for page, path in paths:
            results[page] = instrument.measure(client, path)
            if page in profile:
                profiles[page] = profiled(client, path, workdir.parent / f"dashboard-profile-{page}.txt")
                results[page].plan = explain_slowest(app, instrument, results[page])
    finally:
        instrument.remove()
        app.extensions["cloudx.db"].dispose()
    return results, profiles


def explain_slowest(app: Any, instrument: Instrument, breakdown: Breakdown) -> str:
    """The query plan of the statement that took the most time per request."""
    shown = max(breakdown.slowest, key=lambda key: statistics.median(breakdown.slowest[key]))
    statement, params = instrument.full[shown]
    raw = app.extensions["cloudx.db"].engine.raw_connection()
    try:
        started = time.perf_counter()
        raw.cursor().execute(statement, params).fetchall()
        alone = (time.perf_counter() - started) * 1000
        plan = raw.cursor().execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
    finally:
        raw.close()
    return f"`{shown}` with {params!r}: {alone:.1f} ms alone; plan: " + "; ".join(str(row[-1]) for row in plan)


def profiled(client: Any, path: str, keep: Path) -> str:
    """pyinstrument over PROFILED requests: the controller's and the templates' frames with the most time, as shares of
    the profiled time (the full text is kept in `keep`, bench/.cache/)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    for _ in range(PROFILED):
        client.get(path)
    session = profiler.stop()
    keep.write_text(profiler.output_text(unicode=True, color=False))
    root = session.root_frame()
    whole = root.time if root is not None and root.time else 1.0
    totals: dict[tuple[str, str], float] = {}

    def walk(frame: Any, above: frozenset[tuple[str, str]]) -> None:
        file_path = str(getattr(frame, "file_path", "") or "")
        key = (str(frame.function), file_path.replace(str(ROOT) + os.sep, ""))
        mine = above
        if str(ROOT / "controller") in file_path and key not in above:
            totals[key] = totals.get(key, 0.0) + frame.time
            mine = above | {key}
        for child in frame.children:
            walk(child, mine)

    if root is not None:
        walk(root, frozenset())
    top = sorted(totals.items(), key=lambda item: -item[1])[:10]
    return "; ".join(f"{function} ({where}) {seconds / whole:.0%}" for (function, where), seconds in top)


# --- live updates ------------------------------------------------------------------------------------------------


def streams_opened(html: str, live_js: str) -> int:
    """The EventSources static/live.js opens on a page: followAll() one for /api/stream when the page has any
    [data-jobs-stream] element (querySelector: one whatever their number), followJob() one for a job page's own stream
    ([data-job-stream] and [data-reload-on-end], the job not ended)."""
    if "live.js" not in html:
        return 0
    opened = 0
    if "data-jobs-stream" in html:
        opened += 1
    if "data-job-stream" in html and "data-reload-on-end" in html and "following\u2026" in html:
        opened += 1
    return opened


def design_check(
    session: requests.Session, base: str, paths: list[tuple[str, str]], running: list[str]
) -> tuple[dict[str, int], list[str]]:
    live_js = (ROOT / "controller" / "web" / "static" / "live.js").read_text()
    opened = {}
    for page, path in [*paths, ("running scan", f"/scans/{running[0]}")]:
        html = session.get(base + path, timeout=60).text
        opened[page] = streams_opened(html, live_js)
    scans = session.get(base + "/scans", timeout=60).text
    all_jobs = 'new EventSource("/api/stream")'
    facts = [
        f"live.js constructs `new EventSource(` {live_js.count('new EventSource(')} times: `{all_jobs}` {live_js.count(all_jobs)} "
        "time(s), in followAll(), which runs once per page load (DOMContentLoaded) and returns unless "
        '`document.querySelector("[data-jobs-stream]")` finds an element; the other is followJob()\'s, for a job page whose job '
        "has not ended.",
        f"GET /scans: {scans.count('live.js')} script tag(s) for live.js, {scans.count('data-jobs-stream')} [data-jobs-stream] element(s), "
        f"{scans.count('data-job-id=')} rows with data-job-id (every row is redrawn from the one stream), "
        f"{scans.count('data-job-stream')} [data-job-stream].",
    ]
    return opened, facts


def follow_all(url: str, cookies: dict[str, str], arrived: dict[tuple[str, int], float], seen: list[str], ready: threading.Event) -> None:
    import json

    try:
        with requests.get(url, cookies=cookies, stream=True, timeout=(10, 120)) as response:
            if response.status_code != 200:
                seen.append(f"status {response.status_code}")
                ready.set()
                return
            ready.set()
            kind = None
            for line in response.iter_lines():
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: ") and kind == "job":
                    view = json.loads(line[6:])
                    key = (view["job_id"], int(view["progress"] or 0))
                    arrived.setdefault(key, time.time())
                    seen.append(view["job_id"])
                elif line == b"":
                    kind = None
    except requests.RequestException:
        pass  # the server stopped (its streams end at shutdown)


def live_updates(served: Served, session: requests.Session, base: str, copy: Path, running: list[str], steps: int) -> dict[str, Any]:
    """One /api/stream client; the running jobs' progress changing, each change its own transaction."""
    from sqlalchemy import update

    from controller.store.database import Database
    from controller.store.models import Job

    arrived: dict[tuple[str, int], float] = {}
    seen: list[str] = []
    ready = threading.Event()
    cookies = requests.utils.dict_from_cookiejar(session.cookies)
    reader = threading.Thread(target=follow_all, args=(f"{base}/api/stream", cookies, arrived, seen, ready), daemon=True)
    reader.start()
    ready.wait(30)
    deadline = time.monotonic() + 10
    while len(set(seen) & set(running)) < len(running) and time.monotonic() < deadline:
        time.sleep(0.05)
    snapshot = len(set(seen) & set(running))
    db = Database(f"sqlite:///{copy}")
    committed: dict[tuple[str, int], float] = {}
    during: list[Sample] = []
    flowing = threading.Event()
    flowing.set()

    def sample_pages() -> None:  # GET /scans while the updates flow
        other = requests.Session()
        other.cookies.update(cookies)
        while flowing.is_set():
            during.append(fetch(other, f"{base}/scans", "scans during"))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample_pages)
    sampler.start()
    interval = 1 / CHANGES_PER_SECOND
    started = time.monotonic()
    try:
        for step in range(1, steps + 1):
            progress = min(99, step * (99 // steps))
            for job_id in running:
                due = started + len(committed) * interval
                time.sleep(max(0.0, due - time.monotonic()))
                with db.session() as s:
                    s.execute(update(Job).where(Job.id == job_id).values(progress=progress))
                committed[job_id, progress] = time.time()
        rate = len(committed) / (time.monotonic() - started)
        time.sleep(2)
    finally:
        flowing.clear()
        sampler.join()
        db.dispose()
    delays = [(arrived[key] - stamp) * 1000 for key, stamp in committed.items() if key in arrived]
    server = collect(during, served.log_path).get("scans during", Timings())
    return {
        "snapshot": snapshot,
        "committed": len(committed),
        "received": len(delays),
        "rate": rate,
        "delays": delays,
        "scans_during": server,
        "reader": reader,
        "steps": steps,
    }


# --- the benchmark ------------------------------------------------------------------------------------------------


def admin_token(served: Served) -> str:
    made = subprocess.run(
        [PYTHON, "-m", "controller.cli", "token", "create", "--name", "bench-dashboard-admin", "--role", "admin"],
        env=served.env,
        cwd=served.cwd,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise RuntimeError(f"token create failed: {made.stderr.strip()[-2000:]}")
    return made.stdout.strip()


def figures(values: list[float]) -> tuple[str, str, str]:
    if not values:
        return ("\u2013", "\u2013", "\u2013")
    return (f"{statistics.median(values):.1f}", f"{percentile(values, 95):.1f}", f"{max(values):.1f}")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def run(quick: bool, log: Callable[[str], None]) -> Section:
    size = QUICK if quick else FULL
    count = QUICK_REQUESTS if quick else REQUESTS
    steps = QUICK_STEPS if quick else STEPS
    loads = [f"start {load_average()}"]
    database, meta = cached_database(size, log)
    workdir = Path(tempfile.mkdtemp(prefix="dashboard-", dir=CACHE))
    try:
        return measure_all(workdir, database, meta, size.scans, count, steps, loads, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure_all(
    workdir: Path, database: Path, meta: dict[str, Any], scans: int, count: int, steps: int, loads: list[str], log: Callable[[str], None]
) -> Section:
    copy = workdir / "dashboard.sqlite"
    shutil.copyfile(database, copy)
    chosen, running = prepare(copy)
    log(f"  detail pages: scan {chosen['scan']} ({chosen['scan_hosts']} hosts, {chosen['scan_ports']} ports)")
    log(f"  detail pages: job {chosen['job']} ({chosen['job_events']:,} events)")
    paths = [(page, path.format(scan=chosen["scan"], job=chosen["job"])) for page, path in PAGES]
    served = Served(copy, workdir)
    try:
        base = served.url.removesuffix("/api")
        token = admin_token(served)
        session = sign_in(base, token)
        for page, path in paths:
            answer = session.get(base + path, timeout=60, allow_redirects=False)
            if answer.status_code not in (200, 501):
                raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:1000]!r}")
            for _ in range(WARMUP):
                fetch(session, base + path, page)
        one = collect(sequential(session, base, paths, count, log), served.log_path)
        loads.append(f"after 1 client {load_average()}")
        log(f"  {CLIENTS} clients, {count} requests per page")
        four = collect(concurrent(session, base, paths, count), served.log_path)
        loads.append(f"after {CLIENTS} clients {load_average()}")
        opened, facts = design_check(session, base, paths, running)
        log(f"  EventSources per page: {opened}")
        live = live_updates(served, session, base, copy, running, steps)
        loads.append(f"after the stream {load_average()}")
        log(f"  stream: {live['received']}/{live['committed']} changes, p95 {percentile(live['delays'] or [0.0], 95):.0f} ms")
    finally:
        served.stop()
    live["reader"].join(10)
    missed = {page for page, t in one.items() if 200 in t.statuses and percentile(t.server, 95) > TARGET_MS}
    log(f"  in-process breakdown (profiling: {sorted(missed) or 'none'})")
    breakdown, profiles = in_process(copy, workdir, token, paths, missed)
    return report(one, four, breakdown, profiles, opened, facts, live, chosen, meta, count, loads)


def report(
    one: dict[str, Timings],
    four: dict[str, Timings],
    breakdown: dict[str, Breakdown],
    profiles: dict[str, str],
    opened: dict[str, int],
    facts: list[str],
    live: dict[str, Any],
    chosen: dict[str, Any],
    meta: dict[str, Any],
    count: int,
    loads: list[str],
) -> Section:
    rows = []
    verdicts: dict[int, list[tuple[str, float]]] = {1: [], CLIENTS: []}
    stubs = []
    for page, path in PAGES:
        for clients, timings in ((1, one[page]), (CLIENTS, four[page])):
            status = ", ".join(str(s) for s in sorted(timings.statuses))
            server_p95 = percentile(timings.server, 95) if timings.server else float("nan")
            is_stub = timings.statuses == {501}
            if is_stub:
                mark = "n/a (page not written yet: 501)"
                if clients == 1:
                    stubs.append(page)
            else:
                mark = "met" if server_p95 <= TARGET_MS else "MISSED"
                verdicts[clients].append((page, server_p95))
            rows.append((f"`{path}`", status, str(clients), str(len(timings.wall)), *figures(timings.server), *figures(timings.wall), mark))
    judged = {clients: all(value <= TARGET_MS for _, value in pages) for clients, pages in verdicts.items()}
    worst = {clients: max(pages, key=lambda item: item[1]) for clients, pages in verdicts.items()}
    delays = live["delays"] or [float("nan")]
    stream_ok = live["received"] == live["committed"] and opened.get("scans") == 1
    verdict = (
        f"Pages rendered in \u2264 {TARGET_MS:.0f} ms p95 (server time, access log): 1 client "
        f"{'met' if judged[1] else 'MISSED'} (slowest {worst[1][0]} {worst[1][1]:.1f} ms); {CLIENTS} clients "
        f"{'met' if judged[CLIENTS] else 'MISSED'} (slowest {worst[CLIENTS][0]} {worst[CLIENTS][1]:.1f} ms)"
        + (f"; not judged, not written yet (501): {', '.join(stubs)}" if stubs else "")
        + f". {RUNNING} scans running: the scans list opens {opened.get('scans')} stream per tab; "
        f"{live['received']} of {live['committed']} progress changes arrived over it, commit \u2192 arrival p95 "
        f"{percentile(delays, 95):.0f} ms (one stream per tab, every change delivered: {'met' if stream_ok else 'MISSED'})."
    )
    counts = meta["rows"]
    breakdown_rows = []
    for page, path in PAGES:
        b = breakdown[page]
        total, sql, template = (statistics.median(v) for v in (b.total, b.sql, b.template))
        slowest = sorted(((statistics.median(v), s) for s, v in b.slowest.items()), reverse=True)[:2]
        breakdown_rows.append(
            (
                f"`{path}`",
                f"{total:.1f}",
                f"{sql:.1f}",
                f"{statistics.median(b.statements):.0f}",
                f"{template:.1f}",
                f"{max(total - sql - template, 0.0):.1f}",
                "; ".join(f"{ms:.1f} ms `{statement}`" for ms, statement in slowest),
            )
        )
    breakdown_section = Section(
        title="Dashboard pages in-process: where the time goes",
        setup=(
            f"Flask's test client on the same database copy, signed in the same way, one thread; median of {IN_PROCESS} requests per "
            f"page after {WARMUP} of warm-up. SQL: the cursor's execute time of every statement (SQLAlchemy before/after_cursor_execute); "
            "template: render_template's time (Flask's before_render_template to template_rendered), SQL run while rendering excluded; "
            "other: the rest (gate and session lookup in Python, view code, Flask)."
        ),
        header=("page", "total ms", "SQL ms", "statements", "template ms", "other ms", "slowest statements (median ms per request)"),
        rows=breakdown_rows,
        verdict=(
            "Profiled (pyinstrument, over the target; share of the profiled time): "
            + "; ".join(f"{page}: {text}" for page, text in profiles.items())
            if profiles
            else "No page over the target: none profiled."
        ),
        notes=[
            f"pyinstrument: {PROFILED} requests per profiled page through the test client, interval 1 ms; the controller's and the "
            "templates' frames with the most time (a frame's time includes what it calls; recursion counted once), as shares of the "
            "profiled time (the profiler's own cost weighs on code with many small calls, such as templates: the ms figures are the "
            "table's). Full profiles: bench/.cache/dashboard-profile-<page>.txt.",
            *(f"Slowest statement of {page}: {breakdown[page].plan}" for page in profiles),
        ]
        if profiles
        else [],
    )
    scans_during = live["scans_during"]
    stream_rows = [
        ("EventSources opened per tab, by page", ", ".join(f"{page} {n}" for page, n in opened.items())),
        ("streams per tab on the scans list", str(opened.get("scans"))),
        ("running jobs in the stream's first snapshot", f"{live['snapshot']} of {RUNNING}"),
        ("progress changes committed (per second)", f"{live['committed']} ({live['rate']:.0f}/s)"),
        ("progress changes received over the one stream", f"{live['received']} of {live['committed']}"),
        ("commit \u2192 arrival p50 ms", f"{statistics.median(delays):.0f}"),
        ("commit \u2192 arrival p95 ms", f"{percentile(delays, 95):.0f}"),
        ("commit \u2192 arrival max ms", f"{max(delays):.0f}"),
        (
            f"GET /scans while the changes flow ({len(scans_during.wall)} requests): server p50 / p95 / max ms",
            " / ".join(figures(scans_during.server)),
        ),
        ("GET /scans while the changes flow: wall p50 / p95 / max ms", " / ".join(figures(scans_during.wall))),
    ]
    stream_section = Section(
        title=f"Dashboard live updates: {RUNNING} scans running, one stream per tab",
        setup=(
            f"{RUNNING} running scan jobs; one `GET /api/stream` client (requests, the session cookie, a thread of this process) while "
            f"each job's progress changes {live['steps']} times, {CHANGES_PER_SECOND} changes a second "
            "over all jobs, each `UPDATE jobs SET progress` its own transaction (as the job workers' event writer stores progress); "
            "each change's commit against its arrival as `event: job` with that job id and progress. GET /scans sampled every 0.1 s "
            "meanwhile."
        ),
        header=("figure", "value"),
        rows=stream_rows,
        verdict=(
            f"One stream per tab on the scans list: {'yes' if opened.get('scans') == 1 else 'NO'}; every change arrived: "
            f"{'yes' if live['received'] == live['committed'] else 'NO'}; p95 commit \u2192 arrival {percentile(delays, 95):.0f} ms."
        ),
        notes=[
            *facts,
            "Per page, the EventSources live.js opens follow from the rendered HTML: one /api/stream for a page with [data-jobs-stream] "
            "(the overview, the scans and jobs lists), plus a job's own stream on the page of a job that has not ended "
            "('running scan' is a running scan's page). A list page never opens one stream per row: rows are matched by data-job-id.",
            "The streams' hub looks at the jobs changed since its last look every CLOUDX_STREAM_POLL_SECONDS (0.1 s), once for all "
            "/api/stream followers, so a change waits up to that long before it is sent. Client and server share the machine's CPUs.",
        ],
    )
    notes = [
        f"Database: api_latency's (SQLite, {counts['job_events']:,} job_events, {counts['jobs']:,} jobs, {counts['scans']:,} scans, "
        f"{counts['scan_hosts']:,} scan_hosts, {counts['scan_ports']:,} scan_ports; cached in bench/.cache/), served from a copy "
        f"with {RUNNING} running scans added (the overview lists them, they are the newest rows of the scans list).",
        f"Detail pages: `/scans/{{scan}}` is scan {chosen['scan']} ({chosen['scan_hosts']} hosts, {chosen['scan_ports']} ports, among "
        "the most results a scan has in the dataset, successful, "
        + ("its target scanned before, so the page computes the diff" if chosen["previous"] else "no earlier scan of its target")
        + "); "
        f"`/jobs/{{job}}` is job {chosen['job']}, the one with the most events ({chosen['job_events']:,}).",
        "Server: `cloudx serve` with its default settings (1 process \u00d7 8 request threads), executor off, request log at INFO "
        "to a file. Signed in with an admin token (the admin pages need it) as a browser does: GET /signin, its csrf_token and "
        "pre-session cookie, POST /signin \u2192 303 with the cloudx_session cookie; every request carries that cookie only.",
        f"1 client: one requests session, {count} GETs per page in {ROUNDS} rounds of {count // ROUNDS}, the pages alternating, after "
        f"{WARMUP} warm-up GETs per page. {CLIENTS} clients: {CLIENTS} processes, each {count // CLIENTS} GETs of a page, all starting "
        "a page together (a barrier), the pages in turn.",
        "Server ms: the request's access-log line (cloudx.api; from before the first before_request handler to after_request: gate, "
        "session lookup, view, template; not the socket write), matched by X-Request-ID. Wall ms: the client's time for the whole "
        "answer over loopback. The target is judged on the server time.",
        f"Load average (1 / 5 / 15 min; the machine is shared, other work may run): {'; '.join(loads)}.",
    ]
    return Section(
        title="Dashboard pages with 1M events and 100k scans",
        setup=(
            f"p50/p95/max per page of the server-rendered dashboard against `cloudx serve`, {counts['job_events']:,} events and "
            f"{counts['scans']:,} scans stored; target: p95 \u2264 {TARGET_MS:.0f} ms."
        ),
        header=(
            "page",
            "status",
            "clients",
            "requests",
            "server p50 ms",
            "server p95 ms",
            "server max ms",
            "wall p50 ms",
            "wall p95 ms",
            "wall max ms",
            f"p95 \u2264 {TARGET_MS:.0f} ms",
        ),
        rows=rows,
        verdict=verdict,
        notes=notes,
        appendix=[breakdown_section, stream_section],
    )
