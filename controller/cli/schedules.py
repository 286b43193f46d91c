"""`cloudx schedule`: scans and deployments started by a cron expression or an interval (the API's /api/schedules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from controller.cli.context import Context, audited_change, cli, pass_ctx, refused
from controller.errors import ApiError


@cli.group()
def schedule() -> None:
    """Schedules: add, list, runs, pause, resume, delete. `cloudx serve` starts their runs."""


def _request(value: str) -> Any:
    """A JSON object, or @FILE holding one; ApiError (field request) when it is neither."""
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiError(f"--request: cannot read {value[1:]}: {getattr(exc, 'strerror', None) or exc}", field="request") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError(f"--request is not JSON: {exc}", field="request") from None


@schedule.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["scan", "deployment"]), required=True, help="What it starts.")
@click.option(
    "--request",
    "request_text",
    required=True,
    help='The body of POST /api/scans or /api/deployments as JSON, or @FILE; e.g. \'{"tool": "nmap", "scan_type": "tcp", '
    '"target": "10.0.0.0/24"}\'. No pasted secret: name a stored credential.',
)
@click.option("--cron", help="When, in five cron fields (minute hour day month weekday), e.g. '0 3 * * 1-5', or @daily.")
@click.option("--every", "every_seconds", type=int, help="Or: every this many seconds.")
@click.option("--timezone", default="UTC", show_default=True, help="The cron expression's time zone (IANA name).")
@click.option("--catch-up", type=click.Choice(["none", "one"]), default="none", show_default=True, help="After missed runs: start one?")
@click.option("--paused", is_flag=True, help="Add it paused (cloudx schedule resume starts it).")
@pass_ctx
def schedule_add(
    ctx: Context,
    name: str,
    kind: str,
    request_text: str,
    cron: str | None,
    every_seconds: int | None,
    timezone: str,
    catch_up: str,
    paused: bool,
) -> None:
    """Add schedule NAME; it runs with the rights of the command line (an admin's), checked at every run."""
    from controller.schemas.schedules import ScheduleRequest
    from controller.services.auth import cli_principal
    from controller.services.schedules import create_schedule, schedule_views

    try:
        given = {"name": name, "kind": kind, "request": _request(request_text), "timezone": timezone, "catch_up": catch_up}
        given |= {"enabled": not paused, **{k: v for k, v in (("cron", cron), ("every_seconds", every_seconds)) if v is not None}}
        body = ScheduleRequest.parse(given, config=ctx.config)
    except ApiError as exc:
        raise refused(ctx, "schedule add", exc) from None

    def add(session: Any) -> dict[str, Any]:
        return schedule_views(session, [create_schedule(session, ctx.config, cli_principal(), body, "cli")])[0]

    view = audited_change(ctx, "schedule add", add, 201, f"schedule {name}")
    click.echo(f"schedule {view['name']} ({view['id']}): next run {_when(view['next_run_at'])}")


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "none (paused)"


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print them as GET /api/schedules does.")
@pass_ctx
def schedule_list(ctx: Context, as_json: bool) -> None:
    """Every schedule: when it runs next, its last run and what it missed."""
    from controller.schemas.schedules import Schedule
    from controller.services.schedules import schedules_page

    views: list[dict[str, Any]] = []
    after = None
    with ctx.db.session() as session:
        while True:
            page, after = schedules_page(session, 500, after)
            views += page
            if after is None:
                break
    if as_json:
        click.echo(json.dumps([Schedule.dump(v) for v in views], indent=2))
        return
    for v in views:
        when = v["cron"] + (f" ({v['timezone']})" if v["timezone"] != "UTC" else "") if v["cron"] else f"every {v['every_seconds']} s"
        state = "enabled" if v["enabled"] else f"paused{': ' + v['paused_reason'] if v['paused_reason'] else ''}"
        last = f"last job {v['last_job_id']} ({v['last_status']})" if v["last_job_id"] else "never run"
        click.echo(
            f"{v['name']}\t{v['kind']}\t{when}\t{state}\tnext {_when(v['next_run_at'])}\t{last}\t"
            f"missed {v['missed_runs']}, skipped {v['skipped_runs']}"
        )


@schedule.command("runs")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@pass_ctx
def schedule_runs(ctx: Context, name: str, limit: int) -> None:
    """What became of schedule NAME's due times, newest first."""
    from controller.services.schedules import runs_page

    try:
        with ctx.db.session() as session:
            page = runs_page(session, name, limit, None)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    for run in page["runs"]:
        click.echo(f"{_when(run['due_at'])}\t{run['outcome']}\t{run['job_id'] or '-'}\t{run['reason'] or ''}")


def _set_enabled(ctx: Context, command: str, name: str, enabled: bool) -> None:
    from controller.schemas.schedules import SchedulePatch
    from controller.services.auth import cli_principal
    from controller.services.schedules import update_schedule

    patch = SchedulePatch.parse({"enabled": enabled})
    found = audited_change(
        ctx, command, lambda s: update_schedule(s, ctx.config, cli_principal(), name, patch, "cli"), 200, f"schedule {name}"
    )
    click.echo(f"schedule {found.name}: {'next run ' + _when(found.next_run_at) if enabled else 'paused'}")


@schedule.command("pause")
@click.argument("name")
@pass_ctx
def schedule_pause(ctx: Context, name: str) -> None:
    """Stop starting runs of schedule NAME (it is kept)."""
    _set_enabled(ctx, "schedule pause", name, False)


@schedule.command("resume")
@click.argument("name")
@pass_ctx
def schedule_resume(ctx: Context, name: str) -> None:
    """Start runs of schedule NAME again, from now."""
    _set_enabled(ctx, "schedule resume", name, True)


@schedule.command("delete")
@click.argument("name")
@pass_ctx
def schedule_delete(ctx: Context, name: str) -> None:
    """Delete schedule NAME (the jobs it started are kept)."""
    from controller.services.auth import cli_principal
    from controller.services.schedules import delete_schedule

    audited_change(ctx, "schedule delete", lambda s: delete_schedule(s, cli_principal(), name), 200, f"schedule {name}")
    click.echo(f"schedule {name} deleted")
