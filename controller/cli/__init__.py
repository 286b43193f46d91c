"""The `cloudx` command line: serve, scan, jobs, events, heartbeat, db."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import ApiError
from controller.principal import ROLES
from controller.services.auth import cli_principal
from controller.store.database import Database
from controller.store.models import AuditEntry


class Context:
    def __init__(self) -> None:
        self.config = Config.from_env()
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.config.DATABASE_URL, self.config.DB_BUSY_TIMEOUT)
            self._db.upgrade()
        return self._db


pass_ctx = click.make_pass_decorator(Context, ensure=True)
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _audit(ctx: Context, command: str, status: int, detail: str | None = None, job_id: str | None = None) -> None:
    """Record a changing command in the audit log, as the API records its requests."""
    who = cli_principal()
    outcome = "ok" if status < 400 else "denied" if status in (401, 403) else "refused"
    with ctx.db.session() as session:
        session.add(
            AuditEntry(
                actor=who.name,
                role=who.role,
                method="CLI",
                path=f"cloudx {command}",
                action=command,
                status=status,
                outcome=outcome,
                job_id=job_id,
                detail=detail,
            )
        )


def _fail(ctx: Context, command: str, exc: ApiError) -> click.ClickException:
    _audit(ctx, command, exc.status, exc.message)
    return click.ClickException(exc.message)


T = TypeVar("T")


def _change(ctx: Context, command: str, change: Callable[[Session], T], status: int, detail: str) -> T:
    """Make a change in one transaction and audit it; a refused change is audited too and ends the command."""
    try:
        with ctx.db.session() as session:
            result = change(session)
    except ApiError as exc:
        raise _fail(ctx, command, exc) from None
    _audit(ctx, command, status, detail)
    return result


@click.group()
def cli() -> None:
    """Cloud-X playbooks controller."""


# `cloudx serve` (waitress): connections that never finish a request must not keep other clients out.
SERVE_USE_POLL = True  # poll(), not select(): select() cannot watch file descriptors above FD_SETSIZE (1024)
SERVE_CONNECTION_LIMIT = 4096  # open connections per process before waitress stops accepting (its 100 fell to 105 idle sockets)
SERVE_CHANNEL_TIMEOUT = 20  # seconds a connection without a running request may send nothing before it is closed (waitress: 120)
SERVE_CLEANUP_INTERVAL = 5  # seconds between waitress's sweeps for such connections (its 30 would let them stay 150 s)
SERVE_BACKLOG = 1024  # connections the kernel queues until waitress accepts them
SERVE_FD_RESERVE = 256  # file descriptors kept out of the connection limit: database, logs, job processes and their pipes


@cli.command()
@click.option("--host", help="Address to listen on (default CLOUDX_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port (default CLOUDX_PORT or 5001).")
@click.option("--threads", type=int, default=8, show_default=True, help="Request threads per process.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True, help="API processes sharing the port.")
def serve(host: str | None, port: int | None, threads: int, processes: int) -> None:
    """Run the API and the job executor."""
    import socket

    # One line per request (request id first) and per job event worth noting, on stderr (FLASK_DEBUG: and debug lines).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    host, port = host or config.HOST, port or config.PORT
    if config.FLASK_DEBUG:
        _serve_debug(config, host, port, processes)
        return
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=SERVE_BACKLOG)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(f"cloudx: serving on http://{host}:{port} (database {config.database_shown})", err=True)
    if processes == 1:
        _serve_process(config, listener, threads)
        return
    # Python spends the CPU of a request under one GIL: more processes on one port use more cores. Each runs
    # its own executor; claims are atomic across processes, and a job with credentials runs only in the
    # process that received them.
    database = Database(config.DATABASE_URL, config.DB_BUSY_TIMEOUT)
    database.upgrade()  # once, before the processes start (they would race to create the schema)
    database.dispose()
    children = []
    supervisor = os.getpid()
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                # A supervisor killed outright (SIGKILL, OOM) must not leave API processes holding the port.
                from controller.queue.launch import PR_SET_PDEATHSIG, prctl

                prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
                if os.getppid() != supervisor:  # it died before the line above
                    return
                _serve_process(config, listener, threads)
            except BaseException:
                logging.getLogger("cloudx").exception("API process failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    listener.close()
    _supervise(children)


def _not_served(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The application of the reloader's watching process, which never serves (its child does)."""
    raise RuntimeError("the reloader's parent process does not serve requests")


def _serve_debug(config: Config, host: str, port: int, processes: int) -> None:
    """FLASK_DEBUG, for development: Werkzeug's server in one process, restarted when a source file changes.
    Its interactive debugger runs code for whoever reaches it, so it runs on a loopback address only."""
    from werkzeug.serving import is_running_from_reloader, run_simple

    from controller.app import create_app, debugger_allowed, start_executor

    debugger = debugger_allowed(config, host)
    options: dict[str, Any] = {"use_reloader": True, "use_debugger": debugger, "threaded": True}
    if not is_running_from_reloader():  # the watching process: it says how it serves, then starts the child
        if processes > 1:
            click.echo("cloudx: FLASK_DEBUG serves in one process: --processes is ignored", err=True)
        if not debugger:
            click.echo(
                f"cloudx: FLASK_DEBUG: {host} is not a loopback address, so the interactive debugger is off "
                "(debug logging and the reloader are on)",
                err=True,
            )
        click.echo(f"cloudx: FLASK_DEBUG: development server on http://{host}:{port} (database {config.database_shown})", err=True)
        try:
            run_simple(host, port, _not_served, **options)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        return
    app = create_app(config)
    executor = start_executor(app)
    try:
        run_simple(host, port, app, **options)
    finally:  # the reloader ends this process (SystemExit) when a file changes; Ctrl-C too
        executor.shutdown()


def _serve_process(config: Config, listener: Any, threads: int) -> None:
    import resource

    import waitress

    from controller.app import create_app, start_executor

    # Every open connection is a file descriptor: take the soft limit up to the hard one, and keep the
    # connection limit below it (accept() failing with EMFILE would leave waitress spinning on the listener).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else SERVE_CONNECTION_LIMIT + SERVE_FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            logging.getLogger("cloudx").warning("cannot raise the open files limit from %d to %d: %s", soft, wanted, exc)
    connection_limit = SERVE_CONNECTION_LIMIT
    if soft != resource.RLIM_INFINITY and soft - SERVE_FD_RESERVE < connection_limit:
        connection_limit = max(16, soft - SERVE_FD_RESERVE)
        logging.getLogger("cloudx").warning(
            "open files limit %d: at most %d connections per process (raise `ulimit -n` for %d)",
            soft,
            connection_limit,
            SERVE_CONNECTION_LIMIT,
        )
    app = create_app(config)
    executor = start_executor(app)

    def shutdown(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        waitress.serve(
            app,
            sockets=[listener],
            threads=threads,
            ident="cloudx",
            asyncore_use_poll=SERVE_USE_POLL,
            connection_limit=connection_limit,
            channel_timeout=SERVE_CHANNEL_TIMEOUT,
            cleanup_interval=SERVE_CLEANUP_INTERVAL,
            backlog=SERVE_BACKLOG,
        )
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()


def _supervise(children: list[int]) -> None:
    """Wait for the API processes; SIGTERM or SIGINT, or one of them ending, stops them all."""
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        stopping.set()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    remaining = set(children)
    while remaining:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        if not stopping.is_set():
            failed = True
            logging.getLogger("cloudx").error("API process %d ended (status %d): stopping the others", pid, status)
            stop()
    if failed:
        sys.exit(1)


@cli.command()
@click.option("--name", default="cloudx@%h", show_default=True, help="Worker name, unique in the cluster (%h: this host's name).")
@click.option("--queues", "-Q", help="Comma-separated queues (default: CLOUDX_CELERY_QUEUE and CLOUDX_CELERY_SCAN_QUEUE).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 256), help="Jobs run at once (default CLOUDX_MAX_CONCURRENT_JOBS).")
@click.option("--loglevel", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO", show_default=True)
@pass_ctx
def worker(ctx: Context, name: str, queues: str | None, concurrency: int | None, loglevel: str) -> None:
    """Run jobs sent through Celery (CLOUDX_EXECUTOR=celery on the API; CELERY_BROKER_URL, DATABASE_URL here)."""
    from controller.queue.celery_executor import QUEUE_NAME, Worker

    config = ctx.config
    names = (queues or f"{config.CELERY_QUEUE},{config.CELERY_SCAN_QUEUE}").split(",")
    bad = [q for q in names if not QUEUE_NAME.fullmatch(q)]
    if bad:
        raise click.ClickException(f"queue name {bad[0]!r} is not valid: letters, digits, _ . - (at most 64)")
    if not re.fullmatch(r"[A-Za-z0-9_.%-]{1,64}@[A-Za-z0-9_.%-]{1,253}", name):
        raise click.ClickException(f"worker name {name!r} is not valid: NAME@HOST (letters, digits, _ . -; %h for this host)")
    from sqlalchemy.exc import OperationalError

    worker = Worker(config)
    try:
        worker.db.upgrade()
    except OperationalError as exc:
        raise click.ClickException(f"cannot reach the database at {config.database_shown}: {exc.orig}") from None
    worker.main(name, sorted(set(names), key=names.index), concurrency or config.MAX_CONCURRENT_JOBS, loglevel.upper())


@cli.command()
@click.argument("target")
@click.option("--tool", type=click.Choice(["nmap", "masscan", "zmap"]), default="nmap", show_default=True)
@click.option("--type", "scan_type", default="default", show_default=True, help="Scan type (see README).")
@click.option("--ports", help="Ports, e.g. 22,80,8000-8100.")
@click.option("--timeout", type=int, help="Hard limit in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the scan record as JSON at the end.")
@click.option("--allow-large-targets", is_flag=True, help="Allow a network larger than the policy's size limit.")
@pass_ctx
def scan(
    ctx: Context, target: str, tool: str, scan_type: str, ports: str | None, timeout: int | None, as_json: bool, allow_large_targets: bool
) -> None:
    """Scan TARGET through the controller, showing progress and then the results."""
    from controller.queue.jobs import cancel_job
    from controller.queue.local import make_executor
    from controller.schemas.scans import ScanRequest
    from controller.services.scans import create_scan, get_scan, scan_view

    payload: dict[str, Any] = {"target": target, "tool": tool, "scan_type": scan_type}
    if ports:
        payload["ports"] = ports
    if timeout is not None:
        payload["timeout"] = timeout
    try:
        with ctx.db.session() as session:
            job_id = create_scan(
                session, ctx.config, cli_principal(allow_large_targets), ScanRequest.parse(payload, config=ctx.config)
            ).job_id
    except ApiError as exc:
        _audit(ctx, "scan", exc.status, exc.message)
        raise click.ClickException(exc.message) from None
    _audit(ctx, "scan", 202, job_id=job_id)
    # The local executor runs the job here unless a running `cloudx serve` on the same database takes it
    # first; the Celery executor sends it to the workers.
    executor = make_executor(ctx.config, ctx.db, only_job=job_id)
    try:
        executor.submit(job_id)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    executor.start()
    click.echo(f"scan {job_id}: {tool} {scan_type} {target}", err=True)
    interrupted = False
    last = None
    try:
        while True:
            with ctx.db.session() as session:
                view = scan_view(get_scan(session, job_id))
            line = f"  {view['status']:<10} {view['progress']:>3}%"
            if line != last:
                click.echo(line, err=True)
                last = line
            if view["status"] not in ("queued", "running"):
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        with ctx.db.session() as session:
            cancel_job(session, job_id)
        click.echo("  stopping...", err=True)
        while True:
            with ctx.db.session() as session:
                if get_scan(session, job_id).job.status not in ("queued", "running"):
                    break
            time.sleep(0.5)
    finally:
        executor.shutdown()
    with ctx.db.session() as session:
        view = scan_view(get_scan(session, job_id, with_results=True), with_results=True)
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        _print_results(view)
    if view["status"] != "successful":
        reason = view.get("status_reason") or "see `cloudx events " + job_id + "`"
        raise click.ClickException(f"scan {view['status']}: {reason}")
    if interrupted:
        sys.exit(130)


def _print_results(view: dict[str, Any]) -> None:
    hosts = view["results"]["hosts"]
    if not hosts:
        click.echo("no hosts found")
        return
    click.echo(f"{'HOST':<40} {'STATUS':<8} {'PORT':<11} {'STATE':<14} {'REASON':<12} SERVICE")
    for host in hosts:
        name = host["address"] + (f" ({host['hostnames'][0]})" if host["hostnames"] else "")
        if not host["ports"]:
            click.echo(f"{name:<40} {host['status']:<8}")
        for port in host["ports"]:
            service = " ".join(filter(None, (port["service"], port["product"], port["version"])))
            click.echo(
                f"{name:<40} {host['status']:<8} {str(port['port']) + '/' + port['protocol']:<11} "
                f"{port['state']:<14} {port['reason'] or '':<12} {service}"
            )


@cli.command()
@click.argument("hosts", nargs=-1)
@click.option("--limit", "pattern", help="Deploy to this inventory group or pattern (CLOUDX_INVENTORY) instead of HOSTS.")
@click.option("--os", "os_type", type=click.Choice(["linux", "windows", "mac"]), default="linux", show_default=True)
@click.option("--user", "username", help="Login user (root, or a user with sudo: become is used).")
@click.option("--ssh-key", "ssh_key_file", type=click.Path(exists=True, dir_okay=False), help="Private key file.")
@click.option("--ask-password", is_flag=True, help="Prompt for the login password.")
@click.option("--credential", help="Log in with this stored credential (cloudx credential add).")
@click.option("--manager", "manager_ip", help="Wazuh manager address.")
@click.option("--name", "agent_name", help="Agent name (one host only; default: the host).")
@click.option("--group", help="Agent group.")
@click.option("--enrollment-password-file", type=click.Path(exists=True, dir_okay=False), help="File holding the enrollment password.")
@click.option("--known-hosts", "known_hosts_file", type=click.Path(exists=True, dir_okay=False), help="Trusted host keys.")
@click.option("--state", type=click.Choice(["present", "absent"]), default="present", show_default=True)
@pass_ctx
def deploy(
    ctx: Context,
    hosts: tuple[str, ...],
    pattern: str | None,
    os_type: str,
    username: str | None,
    ssh_key_file: str | None,
    ask_password: bool,
    credential: str | None,
    manager_ip: str | None,
    agent_name: str | None,
    group: str | None,
    enrollment_password_file: str | None,
    known_hosts_file: str | None,
    state: str,
) -> None:
    """Deploy (or remove) the Cloud-X agent through the controller, showing each host's progress."""
    from pathlib import Path

    from controller.queue.local import LocalExecutor, make_executor
    from controller.schemas.deployments import AgentRequest, DeploymentRequest
    from controller.services.deployments import create_deployment

    body: dict[str, Any] = {"os_type": os_type}
    optional = {"username": username, "manager_ip": manager_ip, "group": group, "credential": credential}
    body.update({k: v for k, v in optional.items() if v is not None})
    if ssh_key_file:
        body["ssh_key"] = Path(ssh_key_file).read_text()
    if ask_password:
        body["password"] = click.prompt("Password", hide_input=True)
    if enrollment_password_file:
        body["enrollment_password"] = Path(enrollment_password_file).read_text().strip()
    if known_hosts_file:
        body["known_hosts"] = Path(known_hosts_file).read_text()
    try:
        if agent_name is not None:
            if len(hosts) != 1 or pattern or state != "present":
                raise ApiError("--name needs exactly one host", field="name")
            request = AgentRequest.parse({**body, "target": hosts[0], "agent_name": agent_name})
        else:
            body.update({"hosts": list(hosts)} if hosts else {"limit": pattern} if pattern else {})
            request = DeploymentRequest.parse({**body, "state": state})
        executor = make_executor(ctx.config, ctx.db)
        with ctx.db.session() as session:
            job, secrets = create_deployment(session, ctx.config, cli_principal(), request, executor.holder_id)
            job_id = job.id
    except ApiError as exc:
        _audit(ctx, "deploy", exc.status, exc.message)
        raise click.ClickException(exc.message) from None
    _audit(ctx, "deploy", 202, job_id=job_id)
    if isinstance(executor, LocalExecutor):
        executor.only_job = job_id
    try:
        executor.submit(job_id, secrets)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    executor.start()
    click.echo(f"job {job_id}: {'deploying to' if state == 'present' else 'removing from'} {' '.join(hosts) or pattern}", err=True)
    try:
        status = _follow_hosts(ctx, job_id)
    except KeyboardInterrupt:
        from controller.queue.jobs import cancel_job

        with ctx.db.session() as session:
            cancel_job(session, job_id)
        click.echo("  stopping...", err=True)
        status = _follow_hosts(ctx, job_id)
    finally:
        executor.shutdown()
    if status != "successful":
        raise click.ClickException(f"deployment {status}: see `cloudx events {job_id}`")


_RESULTS = {"runner_on_ok": "ok", "runner_on_failed": "FAILED", "runner_on_unreachable": "UNREACHABLE", "runner_on_skipped": "skipped"}


def _follow_hosts(ctx: Context, job_id: str) -> str:
    """Print one line per host and task result as events arrive, then the per-host recap."""
    from controller.queue.jobs import events_page, get_job
    from controller.schemas.jobs import HostSummary
    from controller.store.models import JobHostSummary

    after = 0
    while True:
        with ctx.db.session() as session:
            job = get_job(session, job_id)
            rows, _ = events_page(session, job_id, 500, after, None, None)
            lines = [(e.counter, e.event, e.host, e.task, (e.event_data.get("res") or {}).get("changed")) for e in rows]
            finished = not job.active and (job.final_counter or 0) <= (lines[-1][0] if lines else after)
        for counter, event, host, task, changed in lines:
            after = counter
            if event in _RESULTS and event != "runner_on_skipped":
                result = "changed" if event == "runner_on_ok" and changed else _RESULTS[event]
                click.echo(f"  {host:<32} {result:<11} {task}", err=True)
        if finished:
            break
        time.sleep(0.5)
    with ctx.db.session() as session:
        job = get_job(session, job_id)
        summaries = [HostSummary.dump(s) for s in session.scalars(select(JobHostSummary).where(JobHostSummary.job_id == job_id))]
        status = job.status
    click.echo(f"{'HOST':<32} {'OK':>4} {'CHANGED':>8} {'FAILED':>7} {'UNREACHABLE':>12}")
    for s in sorted(summaries, key=lambda s: s["host"]):
        click.echo(f"{s['host']:<32} {s['ok']:>4} {s['changed']:>8} {s['failed']:>7} {s['unreachable']:>12}")
    return status


@cli.command()
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--status", help="Only jobs with this status.")
@pass_ctx
def jobs(ctx: Context, limit: int, status: str | None) -> None:
    """List the newest jobs."""
    from controller.queue.jobs import jobs_page
    from controller.schemas.jobs import Job as JobView

    try:
        with ctx.db.session() as session:
            rows, _ = jobs_page(session, limit, None, status, None)
            views = [JobView.dump(job) for job in rows]
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{'ID':<36}  {'KIND':<6} {'STATUS':<10} {'PROG':>4}  {'CREATED':<20}  PLAYBOOK")
    for v in views:
        click.echo(f"{v['id']:<36}  {v['kind']:<6} {v['status']:<10} {v['progress']:>3}%  {v['created_at'][:19]:<20}  {v['playbook']}")


@cli.command()
@click.argument("job_id")
@click.option("--type", "event_type", help="Only events of this type, e.g. runner_on_failed.")
@click.option("--host", help="Only events of this host.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the job ends.")
@pass_ctx
def events(ctx: Context, job_id: str, event_type: str | None, host: str | None, follow: bool) -> None:
    """Print a job's Ansible output, event by event."""
    from controller.queue.jobs import events_page, get_job

    after = 0
    while True:
        try:
            with ctx.db.session() as session:
                job = get_job(session, job_id)
                rows, _ = events_page(session, job_id, 500, after, event_type, host)
                done = not job.active and (job.final_counter is None or after >= (job.final_counter or 0) or not rows)
                lines = [(e.counter, e.event, e.stdout) for e in rows]
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
        for counter, event, stdout in lines:
            after = counter
            if stdout:
                click.echo(stdout)
            elif event_type:
                click.echo(f"[{counter}] {event}")
        if not follow or (done and not lines):
            return
        if not lines:
            time.sleep(0.5)


@cli.command()
@click.option("--file", "path", help="Heartbeat file (default CLOUDX_SYNC_HEARTBEAT_FILE or sync_heartbeat.json).")
@click.option("--interval", type=click.IntRange(min=1), help="Keep writing every N seconds.")
@click.option("--source", default="cloudx heartbeat", show_default=True, help="Recorded as 'source'.")
def heartbeat(path: str | None, interval: int | None, source: str) -> None:
    """Write the sync heartbeat that /api/sync-status reads."""
    from controller.services.heartbeat import write_heartbeat

    target = path or Config.from_env().SYNC_HEARTBEAT_FILE
    while True:
        try:
            data = write_heartbeat(target, source=source)
        except OSError as exc:
            raise click.ClickException(f"cannot write {target}: {exc.strerror}") from None
        click.echo(f"{target}: {data['timestamp']}", err=True)
        if interval is None:
            return
        time.sleep(interval)


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (done automatically by serve and scan too)."""
    config = Config.from_env()
    Database(config.DATABASE_URL).upgrade()
    click.echo(f"database at {config.database_shown} is up to date", err=True)


@db_group.command("status")
def db_status() -> None:
    """Print the current migration revision."""
    from sqlalchemy import text

    config = Config.from_env()
    database = Database(config.DATABASE_URL)
    with database.session() as session:
        click.echo(session.scalar(text("SELECT version_num FROM alembic_version")) or "empty")


cli.add_command(db_group)


@cli.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke."""


@token.command("create")
@click.option("--name", required=True, help="Who or what uses it, e.g. dashboard or ci-nightly.")
@click.option("--role", type=click.Choice(ROLES), required=True, help="viewer reads; operator scans and deploys; admin also manages.")
@click.option("--scope", "scope", multiple=True, help="Narrow this token to a CIDR or hostname inside the policy scope (repeatable).")
@click.option("--allow-large-targets", is_flag=True, help="May target networks larger than the policy's size limit.")
@click.option("--expires-in", help="Lifetime, e.g. 30d, 12h, 90m (default: no expiry).")
@click.option("--max-queued", type=int, help="Jobs it may have waiting (default: the policy's token_max_queued).")
@click.option("--max-running", type=int, help="Jobs it may have running at once (default: the policy's token_max_running).")
@pass_ctx
def token_create(
    ctx: Context,
    name: str,
    role: str,
    scope: tuple[str, ...],
    allow_large_targets: bool,
    expires_in: str | None,
    max_queued: int | None,
    max_running: int | None,
) -> None:
    """Create a token and print it once: it is stored only as a hash."""
    from controller.services.auth import create_token

    try:
        with ctx.db.session() as session:
            created, text = create_token(
                session,
                name,
                role,
                cli_principal().name,
                scope=list(scope) or None,
                allow_large_targets=allow_large_targets,
                expires_in=expires_in,
                max_queued=max_queued,
                max_running=max_running,
            )
    except ApiError as exc:
        raise _fail(ctx, "token create", exc) from None
    click.echo(f"token {created.name} ({created.role}) created; it is shown only now:", err=True)
    click.echo(text)
    _audit(ctx, "token create", 201, f"token {created.name} ({created.role})")


@token.command("list")
@pass_ctx
def token_list(ctx: Context) -> None:
    """List tokens (never their text)."""
    from controller.services.auth import list_tokens, token_view

    with ctx.db.session() as session:
        rows = [token_view(t) for t in list_tokens(session)]
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else f"last used {row['last_used_at'] or 'never'}"
        state += f", expires {row['expires_at']}" if row["expires_at"] and not row["revoked_at"] else ""
        scope = ",".join(row["scope"]) if row["scope"] else "policy scope"
        click.echo(f"{row['name']:<24} {row['role']:<9} {row['id']}  {scope}  {state}")


@token.command("revoke")
@click.argument("name")
@pass_ctx
def token_revoke(ctx: Context, name: str) -> None:
    """Revoke the token NAME at once: its queued jobs are canceled, its running jobs stopped."""
    from controller.services.auth import revoke_token

    _, stopped = _change(ctx, "token revoke", lambda session: revoke_token(session, name), 200, f"token {name}")
    click.echo(f"token {name} revoked{f'; {len(stopped)} of its jobs stopped' if stopped else ''}", err=True)


@cli.group()
def policy() -> None:
    """The scope policy: what may be scanned and deployed to."""


@policy.command("show")
@pass_ctx
def policy_show(ctx: Context) -> None:
    from controller.services.policy import get_policy, policy_view

    with ctx.db.session() as session:
        click.echo(json.dumps(policy_view(get_policy(session)), indent=2))


@policy.command("set")
@click.option("--scope", "scope", multiple=True, help="A CIDR, address or hostname (repeatable); replaces the scope.")
@click.option("--clear-scope", is_flag=True, help="Empty the scope: refuse every scan and deployment.")
@click.option("--max-prefix-v4", type=int, help="IPv4 networks larger than this prefix need a large-targets token.")
@click.option("--max-prefix-v6", type=int, help="The same for IPv6.")
@click.option("--windows/--no-windows", default=None, help="Allow or forbid Windows deployments.")
@click.option("--token-max-queued", type=int, help="Jobs a non-admin token may have waiting.")
@click.option("--token-max-running", type=int, help="Jobs a non-admin token may have running at once.")
@click.option("--max-scan-timeout", "scan_timeouts", multiple=True, help="ROLE=SECONDS, the largest scan timeout of a role (repeatable).")
@pass_ctx
def policy_set(
    ctx: Context,
    scope: tuple[str, ...],
    clear_scope: bool,
    max_prefix_v4: int | None,
    max_prefix_v6: int | None,
    windows: bool | None,
    token_max_queued: int | None,
    token_max_running: int | None,
    scan_timeouts: tuple[str, ...],
) -> None:
    """Change the policy; options not given keep their values."""
    from controller.services.policy import get_policy, policy_view, update_policy

    changes: dict[str, Any] = {}
    if scope or clear_scope:
        changes["scope"] = [] if clear_scope else list(scope)
    if scan_timeouts:
        with ctx.db.session() as session:
            limits = dict(get_policy(session).max_scan_timeout or {})
        for item in scan_timeouts:
            role, _, seconds = item.partition("=")
            if not seconds.isdigit():
                raise click.ClickException(f"--max-scan-timeout takes ROLE=SECONDS, not {item!r}")
            limits[role] = int(seconds)
        changes["max_scan_timeout"] = limits
    optional = {
        "max_prefix_v4": max_prefix_v4,
        "max_prefix_v6": max_prefix_v6,
        "windows_deployments": windows,
        "token_max_queued": token_max_queued,
        "token_max_running": token_max_running,
    }
    changes.update({k: v for k, v in optional.items() if v is not None})
    view = _change(
        ctx, "policy set", lambda session: policy_view(update_policy(session, changes, cli_principal().name)), 200, json.dumps(changes)
    )
    click.echo(json.dumps(view, indent=2))


@cli.group()
def credential() -> None:
    """Stored credentials (encrypted with CLOUDX_CREDENTIALS_KEY)."""


@credential.command("keygen")
def credential_keygen() -> None:
    """Print a new key for CLOUDX_CREDENTIALS_KEY."""
    from controller.store.sealing import keygen

    click.echo(keygen())


@credential.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["ssh_key", "password"]), required=True)
@click.option("--username", help="The login user deployments with this credential use by default.")
@click.option("--scope", "scope", multiple=True, help="Only for hosts in this CIDR or hostname (repeatable).")
@click.option("--port", "ports", type=int, multiple=True, help="Only on this port (repeatable; default 22 for SSH, 5986 for WinRM).")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), help="Read the key or password from this file.")
@pass_ctx
def credential_add(
    ctx: Context, name: str, kind: str, username: str | None, scope: tuple[str, ...], ports: tuple[int, ...], secret_file: str | None
) -> None:
    """Store a credential; without --secret-file the password is prompted for."""
    from pathlib import Path

    from controller.services.credentials import store_credential

    if secret_file:
        secret = Path(secret_file).read_text()
        secret = secret if kind == "ssh_key" else secret.rstrip("\n")
    else:
        secret = click.prompt("Secret", hide_input=True)
    body = {
        "name": name,
        "kind": kind,
        "secret": secret,
        **({"username": username} if username else {}),
        **({"scope": list(scope)} if scope else {}),
        **({"ports": list(ports)} if ports else {}),
    }
    who = cli_principal().name
    _change(ctx, "credential add", lambda session: store_credential(session, ctx.config, body, who), 201, f"credential {name} ({kind})")
    click.echo(f"credential {name} stored", err=True)


@credential.command("list")
@pass_ctx
def credential_list(ctx: Context) -> None:
    from controller.services.credentials import credential_view, list_credentials

    with ctx.db.session() as session:
        for row in (credential_view(c) for c in list_credentials(session)):
            click.echo(f"{row['name']:<24} {row['kind']:<8} {row['username'] or '-':<16} {row['created_by']}")


@credential.command("delete")
@click.argument("name")
@pass_ctx
def credential_delete(ctx: Context, name: str) -> None:
    from controller.services.credentials import delete_credential

    _change(ctx, "credential delete", lambda session: delete_credential(session, name), 200, f"credential {name}")
    click.echo(f"credential {name} deleted", err=True)


@cli.command()
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@pass_ctx
def audit(ctx: Context, limit: int) -> None:
    """The newest entries of the audit log."""
    from controller.queue.jobs import iso

    with ctx.db.session() as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))
    for e in rows:
        line = f"{iso(e.at)} {e.actor:<20} {e.method:<6} {e.path:<32} {e.status} {e.outcome} {e.job_id or ''} {e.detail or ''}"
        click.echo(line.rstrip())


def main() -> None:
    cli(prog_name="cloudx")


@cli.group("host-key")
def host_key() -> None:
    """SSH host keys the controller trusts for deployments."""


@host_key.command("add")
@click.argument("known_hosts_file", type=click.File("r"))
@pass_ctx
def host_key_add(ctx: Context, known_hosts_file: Any) -> None:
    """Trust the keys of KNOWN_HOSTS_FILE ('host keytype key' lines; - for standard input), as an admin."""
    from controller.services.hostkeys import add_admin_keys

    text = known_hosts_file.read()
    who = cli_principal().name
    keys = _change(ctx, "host-key add", lambda session: [k.host for k in add_admin_keys(session, text, who)], 200, "host keys")
    click.echo(f"trusted {len(keys)} key(s) of {', '.join(sorted(set(keys)))}", err=True)


@host_key.command("list")
@pass_ctx
def host_key_list(ctx: Context) -> None:
    from controller.services.hostkeys import list_keys

    with ctx.db.session() as session:
        for key in list_keys(session):
            via = f" with {key.credential}" if key.credential else ""
            click.echo(f"{key.host:<32} {key.key_type:<20} {key.source}{via} {key.job_id or key.added_by or ''}")


@host_key.command("delete")
@click.argument("host")
@pass_ctx
def host_key_delete(ctx: Context, host: str) -> None:
    """Stop trusting HOST's keys (a rebuilt host)."""
    from controller.errors import NotFound
    from controller.services.hostkeys import forget_host

    def forget(session: Session) -> int:
        removed = forget_host(session, host)
        if not removed:
            raise NotFound(f"no trusted key for {host}")
        return removed

    _change(ctx, "host-key delete", forget, 200, f"host keys of {host}")
    click.echo(f"keys of {host} no longer trusted", err=True)


if __name__ == "__main__":
    main()
