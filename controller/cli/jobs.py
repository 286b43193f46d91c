"""Commands that submit a job and follow it (`scan`, `deploy`), and those that read jobs (`jobs`, `events`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.cli.context import Context, cli, pass_ctx, record_audit, refused
from controller.errors import ApiError
from controller.services.auth import cli_principal


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
    from controller.schemas.scans import ScanRequest
    from controller.services.scans import create_scan, get_scan, scan_view

    payload: dict[str, Any] = {"target": target, "tool": tool, "scan_type": scan_type}
    payload.update({k: v for k, v in (("ports", ports), ("timeout", timeout)) if v})

    def create(session: Session, holder: str) -> tuple[str, dict[str, Any] | None]:
        request = ScanRequest.parse(payload, config=ctx.config)
        return create_scan(session, ctx.config, cli_principal(allow_large_targets), request).job_id, None

    job_id, _, interrupted = submit_and_follow(ctx, "scan", create, f"scan {{}}: {tool} {scan_type} {target}", _follow_progress)
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


def submit_and_follow(
    ctx: Context,
    command: str,
    create: Callable[[Session, str], tuple[str, dict[str, Any] | None]],
    announce: str,
    follow: Callable[[Context, str], str],
) -> tuple[str, str, bool]:
    """What `scan` and `deploy` share: create the job (audited as the API audits its requests), run it here
    with the local executor (unless a `cloudx serve` on the same database takes it first) or send it to the
    Celery workers, and follow it to its end; Ctrl-C cancels it and follows it until it has stopped.
    Returns the job id, its final status and whether it was interrupted."""
    from controller.queue.jobs import cancel_job
    from controller.queue.local import LocalExecutor, make_executor

    executor = make_executor(ctx.config, ctx.db)
    try:
        with ctx.db.session() as session:
            job_id, secrets = create(session, executor.holder_id)
    except ApiError as exc:
        raise refused(ctx, command, exc) from None
    record_audit(ctx, command, 202, job_id=job_id)
    if isinstance(executor, LocalExecutor):
        executor.only_job = job_id
    try:
        executor.submit(job_id, secrets)
        executor.start()
        click.echo(announce.format(job_id), err=True)
        try:
            return job_id, follow(ctx, job_id), False
        except KeyboardInterrupt:
            with ctx.db.session() as session:
                cancel_job(session, job_id)
            click.echo("  stopping...", err=True)
            return job_id, follow(ctx, job_id), True
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        executor.shutdown()


# How often `cloudx scan` and `cloudx deploy` look at their job: one indexed read, and a small scan's end is seen
# within 0.1 s rather than half a second later.
FOLLOW_SECONDS = 0.1


def _follow_progress(ctx: Context, job_id: str) -> str:
    """One line each time the job's status or progress changes, until it ends."""
    from controller.queue.jobs import get_job

    last = None
    while True:
        with ctx.db.session() as session:
            job = get_job(session, job_id)
            status, progress = job.status, job.progress
        line = f"  {status:<10} {progress:>3}%"
        if line != last:
            click.echo(line, err=True)
            last = line
        if status not in ("queued", "running"):
            return status
        time.sleep(FOLLOW_SECONDS)


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
@click.option("--uncovered", is_flag=True, help="Deploy to the assets of --network seen up without the agent (cloudx coverage).")
@click.option("--network", help="With --uncovered: the network (CIDR) whose uncovered assets get the agent.")
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
    uncovered: bool,
    network: str | None,
) -> None:
    """Deploy (or remove) the Cloud-X agent through the controller, showing each host's progress."""
    from pathlib import Path

    from controller.schemas.deployments import AgentRequest, DeploymentRequest
    from controller.services.deployments import create_deployment

    body: dict[str, Any] = {"os_type": os_type}
    optional = {"username": username, "manager_ip": manager_ip, "group": group, "credential": credential}
    body.update({k: v for k, v in optional.items() if v is not None})
    body.update(pasted_secrets(ssh_key_file, ask_password, enrollment_password_file))
    if known_hosts_file:
        body["known_hosts"] = Path(known_hosts_file).read_text()
    if agent_name is not None and (len(hosts) != 1 or pattern or state != "present"):
        raise refused(ctx, "deploy", ApiError("--name needs exactly one host", field="name"))
    if uncovered != bool(network):
        raise refused(ctx, "deploy", ApiError("--uncovered and --network go together", field="coverage"))

    def create(session: Session, holder: str) -> tuple[str, dict[str, Any] | None]:
        if agent_name is not None:
            request: Any = AgentRequest.parse({**body, "target": hosts[0], "agent_name": agent_name})
        else:
            targets = {"hosts": list(hosts) or None, "limit": pattern, "coverage": {"network": network} if uncovered else None}
            request = DeploymentRequest.parse({**body, **{k: v for k, v in targets.items() if v}, "state": state})
        job, secrets = create_deployment(session, ctx.config, cli_principal(), request, holder)
        return job.id, secrets

    doing = "deploying to" if state == "present" else "removing from"
    where = " ".join(hosts) or pattern or f"the uncovered hosts of {network}"
    job_id, status, _ = submit_and_follow(ctx, "deploy", create, f"job {{}}: {doing} {where}", _follow_hosts)
    if status != "successful":
        raise click.ClickException(f"deployment {status}: see `cloudx events {job_id}`")


@cli.command()
@click.argument("job_id")
@click.option("--failed", "which", flag_value="failed", help="Its hosts that failed.")
@click.option("--unreachable", "which", flag_value="unreachable", help="Its hosts that were unreachable.")
@click.option("--all", "which", flag_value="all", help="All its hosts.")
@click.option("--ssh-key", "ssh_key_file", type=click.Path(exists=True, dir_okay=False), help="The private key the job was given.")
@click.option("--ask-password", is_flag=True, help="Prompt for the login password the job was given.")
@click.option("--enrollment-password-file", type=click.Path(exists=True, dir_okay=False), help="File holding the enrollment password.")
@pass_ctx
def relaunch(
    ctx: Context, job_id: str, which: str | None, ssh_key_file: str | None, ask_password: bool, enrollment_password_file: str | None
) -> None:
    """Run ended job JOB_ID again on its failed or unreachable hosts (default: both), following it as `deploy` does."""

    from controller.schemas.jobs import RelaunchRequest
    from controller.services.relaunch import relaunch as relaunch_job

    body: dict[str, Any] = {
        "hosts": which or "failed_or_unreachable",
        **pasted_secrets(ssh_key_file, ask_password, enrollment_password_file),
    }
    kind: list[str] = []

    def create(session: Session, holder: str) -> tuple[str, dict[str, Any] | None]:
        done = relaunch_job(session, ctx.config, cli_principal(), job_id, RelaunchRequest.parse(body), holder)
        kind.append(done.job.kind)
        click.echo(f"relaunching {job_id} on {', '.join(done.hosts)}", err=True)
        return done.job.id, done.secrets

    def follow(ctx: Context, new_job: str) -> str:
        return (_follow_hosts if kind == ["deploy"] else _follow_progress)(ctx, new_job)

    new_id, status, _ = submit_and_follow(ctx, "relaunch", create, "job {}: relaunched from " + job_id, follow)
    if status != "successful":
        raise click.ClickException(f"relaunched job {status}: see `cloudx events {new_id}`")


def pasted_secrets(ssh_key_file: str | None, ask_password: bool, enrollment_password_file: str | None) -> dict[str, str]:
    """The secrets `deploy` and `relaunch` take from files or a prompt (in memory only)."""
    from pathlib import Path

    secrets = {}
    if ssh_key_file:
        secrets["ssh_key"] = Path(ssh_key_file).read_text()
    if ask_password:
        secrets["password"] = click.prompt("Password", hide_input=True)
    if enrollment_password_file:
        secrets["enrollment_password"] = Path(enrollment_password_file).read_text().strip()
    return secrets


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
