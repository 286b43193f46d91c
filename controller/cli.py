"""The `cloudx` command line: serve, scan, jobs, events, heartbeat, db."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import click
from flask import Flask
from sqlalchemy import select

from controller.config import Config
from controller.db import Database
from controller.errors import ApiError


def register_app_commands(app: Flask) -> None:
    """Flask CLI commands (`flask --app controller ...`), mirroring the cloudx ones."""
    app.cli.add_command(db_group)


class Context:
    def __init__(self) -> None:
        self.config = Config.from_env()
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.config.DATABASE_URL)
            self._db.upgrade()
        return self._db


pass_ctx = click.make_pass_decorator(Context, ensure=True)


@click.group()
def cli() -> None:
    """Cloud-X playbooks controller."""


@cli.command()
@click.option("--host", help="Address to listen on (default CLOUDX_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port (default CLOUDX_PORT or 5001).")
@click.option("--threads", type=int, default=8, show_default=True)
def serve(host: str | None, port: int | None, threads: int) -> None:
    """Run the API and the job executor."""
    import waitress

    from controller import create_app, start_executor

    config = Config.from_env()
    app = create_app(config)
    executor = start_executor(app)
    stop = threading.Event()

    def shutdown(*_: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    host, port = host or config.HOST, port or config.PORT
    click.echo(f"cloudx: serving on http://{host}:{port} (database {config.DATABASE_URL})", err=True)
    try:
        waitress.serve(app, host=host, port=port, threads=threads, ident="cloudx")
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()


@cli.command()
@click.argument("target")
@click.option("--tool", type=click.Choice(["nmap", "masscan", "zmap"]), default="nmap", show_default=True)
@click.option("--type", "scan_type", default="default", show_default=True, help="Scan type (see README).")
@click.option("--ports", help="Ports, e.g. 22,80,8000-8100.")
@click.option("--timeout", type=int, help="Hard limit in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the scan record as JSON at the end.")
@pass_ctx
def scan(ctx: Context, target: str, tool: str, scan_type: str, ports: str | None, timeout: int | None, as_json: bool) -> None:
    """Scan TARGET through the controller, showing progress and then the results."""
    from controller.executor import LocalExecutor
    from controller.jobs import cancel_job
    from controller.scans import create_scan, get_scan, scan_view

    payload: dict[str, Any] = {"target": target, "tool": tool, "scan_type": scan_type}
    if ports:
        payload["ports"] = ports
    if timeout is not None:
        payload["timeout"] = timeout
    try:
        with ctx.db.session() as session:
            job_id = create_scan(session, ctx.config, payload).job_id
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    # Runs the job here unless a running `cloudx serve` on the same database takes it first.
    executor = LocalExecutor(ctx.config, ctx.db, only_job=job_id)
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
    manager_ip: str | None,
    agent_name: str | None,
    group: str | None,
    enrollment_password_file: str | None,
    known_hosts_file: str | None,
    state: str,
) -> None:
    """Deploy (or remove) the Cloud-X agent through the controller, showing each host's progress."""
    from pathlib import Path

    from controller.deployments import create_deployment, validate_agent_request, validate_deployment_request
    from controller.executor import LocalExecutor

    body: dict[str, Any] = {"os_type": os_type}
    optional = {"username": username, "manager_ip": manager_ip, "group": group}
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
            request, secrets = validate_agent_request({**body, "target": hosts[0], "agent_name": agent_name})
        else:
            body.update({"hosts": list(hosts)} if hosts else {"limit": pattern} if pattern else {})
            request, secrets = validate_deployment_request({**body, "state": state})
        executor = LocalExecutor(ctx.config, ctx.db)
        with ctx.db.session() as session:
            job_id = create_deployment(session, ctx.config, request, secrets, executor.holder_id).id
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    executor.only_job = job_id
    executor.submit(job_id, secrets)
    executor.start()
    click.echo(f"job {job_id}: {'deploying to' if state == 'present' else 'removing from'} {' '.join(hosts) or pattern}", err=True)
    try:
        status = _follow_hosts(ctx, job_id)
    except KeyboardInterrupt:
        from controller.jobs import cancel_job

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
    from controller.jobs import events_page, get_job, summary_view
    from controller.models import JobHostSummary

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
        summaries = [summary_view(s) for s in session.scalars(select(JobHostSummary).where(JobHostSummary.job_id == job_id))]
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
    from controller.jobs import job_view, jobs_page

    try:
        with ctx.db.session() as session:
            rows, _ = jobs_page(session, limit, None, status, None)
            views = [job_view(job) for job in rows]
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
    from controller.jobs import events_page, get_job

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
    from controller.heartbeat import write_heartbeat

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
    click.echo(f"database at {config.DATABASE_URL} is up to date", err=True)


@db_group.command("status")
def db_status() -> None:
    """Print the current migration revision."""
    from sqlalchemy import text

    config = Config.from_env()
    database = Database(config.DATABASE_URL)
    with database.session() as session:
        click.echo(session.scalar(text("SELECT version_num FROM alembic_version")) or "empty")


cli.add_command(db_group)


def main() -> None:
    cli(prog_name="cloudx")


if __name__ == "__main__":
    main()
