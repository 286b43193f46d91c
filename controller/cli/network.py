"""Commands about the network the scans see: `diff`, `assets`, `coverage`."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from controller.cli.context import Context, cli, pass_ctx
from controller.config import SettingsError
from controller.errors import ApiError

# As ndiff: 0 no differences, 1 differences, 2 an error.
SAME, DIFFERENT, ERROR = 0, 1, 2
MARKS = {"opened": "+", "closed": "-", "state_changed": "~", "service_changed": "~"}


def _database_errors() -> tuple[type[BaseException], ...]:
    """What reading the database can raise besides an ApiError: its driver's errors, the file system's, and a
    migration Alembic cannot make (a database at a revision this version does not know). A function, used as
    `except _database_errors()`: evaluated only when something is raised, so the CLI does not import Alembic to start."""
    from alembic.util import CommandError

    return (SQLAlchemyError, OSError, CommandError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@cli.command()
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON (as GET /api/scans/NEW/diff?against=OLD).")
@click.pass_context
def diff(click_ctx: click.Context, old: str, new: str, as_json: bool) -> None:
    """What changed from scan OLD to scan NEW (job ids). Exit status as ndiff's: 0 no differences, 1 differences, 2 error."""
    # Everything that can fail, the settings and the database's migration too, inside this try: any failure is exit 2
    # (one line), never 1, which says "differences" to the cron job watching it.
    try:
        differences = _diff(click_ctx, old, new, as_json)
    except ApiError as exc:
        _fail(exc.message)
    except SettingsError as exc:
        _fail(str(exc.code).removeprefix("cloudx: "))
    except _database_errors() as exc:
        _fail(f"cannot read the scans: {_first_line(exc)}")
    except Exception as exc:  # a bug: still not "differences"
        _fail(f"{type(exc).__name__}: {_first_line(exc)}")
    sys.exit(DIFFERENT if differences else SAME)


def _diff(click_ctx: click.Context, old: str, new: str, as_json: bool) -> bool:
    from controller.schemas.diff import ScanDiff
    from controller.services.diff import scan_diff

    ctx = click_ctx.ensure_object(Context)  # reads the settings: a bad one raises SettingsError
    with ctx.db.session() as session:  # migrates the database first
        view = ScanDiff.dump(scan_diff(session, new, old))
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        _print_diff(view)
    return bool(view["differences"])


def _fail(message: str) -> NoReturn:
    click.echo(f"cloudx diff: {message}", err=True)
    sys.exit(ERROR)


def _scan_line(mark: str, scan: dict[str, Any]) -> str:
    ports = f" ports {scan['ports']}" if scan["ports"] else ""
    what = f"{scan['tool']} {scan['scan_type']} {scan['target']}{ports}"
    return f"{mark} scan {scan['job_id']}: {what}, {scan['created_at'][:19]} ({scan['status']})"


def _port_line(mark: str, port: dict[str, Any]) -> str:
    name = " ".join(v for v in (port["service"], port["product"], port["version"]) if v)
    old, new = port["old_state"], port["new_state"]
    states = f"{old} -> {new}" if old and new else old or new
    changed = ", ".join(f"{field} {c['old']} -> {c['new']}" for field, c in port["changed"].items())
    label = f"{port['port']}/{port['protocol']}"
    return f"    {mark}{label:<11} {states:<24} {changed or name}".rstrip()


def _print_diff(view: dict[str, Any]) -> None:
    click.echo(_scan_line("-", view["against"]))
    click.echo(_scan_line("+", view["scan"]))
    if view["note"]:
        click.echo(f"note: {view['note']}")
    for host in view["hosts"]:
        names = f" ({', '.join(host['hostnames'])})" if host["hostnames"] else ""
        status = f"{host['old_status'] or '-'} -> {host['new_status'] or '-'}"
        click.echo(f"{host['address']}{names}: {host['change']} ({status})")
        for port in host["open_ports"]:
            click.echo(_port_line(" ", port))
        for category, mark in MARKS.items():
            for port in host[category]:
                click.echo(_port_line(mark, port))
        if host["unlisted"]:
            click.echo(f"    ~ports not listed: {host['unlisted']['old']} -> {host['unlisted']['new']}")
    s = view["summary"]
    click.echo(
        f"hosts: {s['hosts_new']} new, {s['hosts_gone']} gone, {s['hosts_up']} up, {s['hosts_down']} down, {s['hosts_changed']} changed, "
        f"{s['hosts_not_comparable']} not comparable; ports: {s['ports_opened']} opened, {s['ports_closed']} closed, "
        f"{s['ports_state_changed']} changed state, {s['ports_service_changed']} changed service, "
        f"{s['ports_not_comparable']} not comparable"
    )
    if not view["differences"]:
        click.echo("no differences")


def _query(model: Any, **given: Any) -> Any:
    """The command's options through the API's own query model (the same checks and messages)."""
    try:
        return model.parse({k: v for k, v in given.items() if v is not None})
    except ApiError as exc:
        raise click.ClickException(exc.message) from None


def _unreadable(what: str, exc: BaseException) -> click.ClickException:
    """One line (click's "Error: ...", exit 1) for a database that cannot be read, instead of a traceback."""
    return click.ClickException(f"cannot read {what}: {_first_line(exc)}")


def _ports(ports: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p['port']}/{p['protocol']}" + (f" {p['service']}" if p["service"] else "") for p in ports) or "-"


@cli.command()
@click.argument("address", required=False)
@click.option("--network", help="Only assets inside this network (CIDR) or address.")
@click.option("--port", type=int, help="Only assets with this port open.")
@click.option("--service", help="Only assets with an open port of this service (nmap's name: ssh, http).")
@click.option("--seen-since", help="Only assets seen up since this time (ISO 8601) or within this age (7d, 12h).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/assets, or /api/assets/ADDRESS).")
@pass_ctx
def assets(
    ctx: Context,
    address: str | None,
    network: str | None,
    port: int | None,
    service: str | None,
    seen_since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The hosts the scans have seen, with their open ports; with ADDRESS, that asset's ports, history and scans."""
    from controller.schemas.assets import AssetDetail, AssetPage, AssetQuery
    from controller.services.assets import assets_page, get_asset

    if address is not None:
        try:
            with ctx.db.session() as session:
                view = AssetDetail.dump(get_asset(session, address))
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
        except _database_errors() as exc:
            raise _unreadable("the assets", exc) from None
        click.echo(json.dumps(view, indent=2) if as_json else _asset_text(view))
        return
    query = _query(AssetQuery, network=network, port=port, service=service, seen_since=seen_since, limit=limit)
    try:
        with ctx.db.session() as session:
            rows, next_cursor = assets_page(session, query.limit, None, query.network, query.port, query.service, query.since)
            page = AssetPage.dump({"assets": rows, "next_cursor": next_cursor})
    except _database_errors() as exc:
        raise _unreadable("the assets", exc) from None
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(f"{'ADDRESS':<40} {'STATUS':<7} {'LAST SEEN UP':<20} OPEN PORTS")
    for a in page["assets"]:
        click.echo(f"{a['address']:<40} {a['status']:<7} {(a['last_seen'] or '-')[:19]:<20} {_ports(a['open_ports'])}")
    if next_cursor:
        click.echo(f"(more: the API pages on with cursor={next_cursor}, or raise --limit)")


def _asset_text(view: dict[str, Any]) -> str:
    names = f" ({', '.join(view['hostnames'])})" if view["hostnames"] else ""
    lines = [
        f"{view['address']}{names}: {view['status']}, mac {view['mac'] or '-'}",
        f"first seen {view['first_seen'][:19]}, last seen up {(view['last_seen'] or '-')[:19]}, by {len(view['scans'])} scan(s)",
    ]
    lines += [
        f"    {p['port']}/{p['protocol']:<4} {p['state']:<16} {p['service'] or ''} since {p['first_seen'][:19]}" for p in view["ports"]
    ]
    lines += [
        f"  {c['at'][:19]} {c['port']}/{c['protocol']} {c['change']} ({c['previous'] or '-'} -> {c['state']})" for c in view["history"]
    ]
    return "\n".join(lines)


@cli.command()
@click.option("--network", help="Only hosts inside this network (CIDR).")
@click.option("--unseen-days", type=int, default=7, show_default=True, help="Hosts with the agent no scan saw up for this long.")
@click.option("--limit", type=int, default=100, show_default=True, help="The longest each list gets.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/coverage).")
@pass_ctx
def coverage(ctx: Context, network: str | None, unseen_days: int, limit: int, as_json: bool) -> None:
    """Agent coverage: assets seen up without the agent, hosts with it no scan has seen lately, failed deployments."""
    from controller.schemas.coverage import CoverageQuery, CoverageReport
    from controller.services.coverage import coverage as coverage_report

    query = _query(CoverageQuery, network=network, unseen_days=unseen_days, limit=limit)
    try:
        with ctx.db.session() as session:
            report = CoverageReport.dump(coverage_report(session, query.network, query.unseen_days, query.limit))
    except _database_errors() as exc:
        raise _unreadable("the coverage", exc) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    c = report["counts"]
    click.echo(
        f"{c['assets']} assets seen up, {c['covered']} with the agent, {c['uncovered']} without; "
        f"{c['with_agent']} hosts have the agent, {c['unseen']} not seen for {report['unseen_days']} days, {c['failed']} failed"
    )
    for title, key, line in (
        ("without the agent", "uncovered", lambda e: f"  {e['address']}  last seen {e['last_seen'][:19]}"),
        (
            f"not seen for {report['unseen_days']} days",
            "unseen",
            lambda e: f"  {e['address']}  last seen {(e['last_seen'] or 'never')[:19]}",
        ),
        ("latest deployment failed", "failed", lambda e: f"  {e['address']}  job {e['job_id']}: {e['error'] or 'failed'}"),
    ):
        if report[key]:
            click.echo(f"{title}:")
            for entry in report[key]:
                click.echo(line(entry))
