"""`cloudx webhook`: where job and scan events are POSTed (the API's /api/webhooks)."""

from __future__ import annotations

import json
from typing import Any

import click

from controller.cli.context import Context, audited_change, cli, pass_ctx, refused
from controller.errors import ApiError


@cli.group()
def webhook() -> None:
    """Webhooks: add, list, deliveries, pause, resume, delete. `cloudx serve` sends their events."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, required=True, help="job.failed, job.succeeded, job.fixed or scan.changed (repeatable).")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), help="File holding the signing secret (16-256 characters).")
@click.option("--paused", is_flag=True, help="Add it paused.")
@pass_ctx
def webhook_add(ctx: Context, url: str, events: tuple[str, ...], secret_file: str | None, paused: bool) -> None:
    """POST EVENTS to URL (https, unless its host is in CLOUDX_WEBHOOK_ALLOW)."""
    from pathlib import Path

    from controller.schemas.webhooks import WebhookRequest
    from controller.services.auth import cli_principal
    from controller.services.webhooks import create_webhook

    given: dict[str, Any] = {"url": url, "events": list(events), "enabled": not paused}
    try:
        if secret_file:
            given["secret"] = Path(secret_file).read_text(encoding="utf-8").strip()
        body = WebhookRequest.parse(given)
    except (OSError, UnicodeDecodeError) as exc:
        raise refused(ctx, "webhook add", ApiError(f"cannot read {secret_file}: {exc}", field="secret")) from None
    except ApiError as exc:
        raise refused(ctx, "webhook add", exc) from None
    made = audited_change(ctx, "webhook add", lambda s: create_webhook(s, ctx.config, body, cli_principal().name).id, 201, f"webhook {url}")
    click.echo(f"webhook {made}: {url} ({', '.join(events)})")


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print them as GET /api/webhooks does.")
@pass_ctx
def webhook_list(ctx: Context, as_json: bool) -> None:
    """Every webhook, with what waits to be sent and how the last attempt went."""
    from controller.schemas.webhooks import Webhook
    from controller.services.webhooks import list_webhooks

    with ctx.db.session() as session:
        views = [Webhook.dump(v) for v in list_webhooks(session)]
    if as_json:
        click.echo(json.dumps(views, indent=2))
        return
    for v in views:
        state = "enabled" if v["enabled"] else "paused"
        last = f"last {v['last_outcome']} at {v['last_delivery_at']}" if v["last_outcome"] else "nothing sent yet"
        click.echo(f"{v['id']}\t{v['url']}\t{','.join(v['events'])}\t{state}\tpending {v['pending']}, failed {v['failed']}\t{last}")


@webhook.command("deliveries")
@click.argument("webhook_id")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@pass_ctx
def webhook_deliveries(ctx: Context, webhook_id: str, limit: int) -> None:
    """A webhook's delivery attempts, newest first."""
    from controller.services.webhooks import deliveries_page

    try:
        with ctx.db.session() as session:
            page = deliveries_page(session, webhook_id, limit, None)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    for d in page["deliveries"]:
        status = d["status_code"] if d["status_code"] is not None else "-"
        when = d["at"].isoformat(timespec="seconds")
        click.echo(f"{when}\t{d['event']}\t{d['job_id']}\tattempt {d['attempt']}\t{d['outcome']}\t{status}\t{d['error'] or ''}")


def _set_enabled(ctx: Context, command: str, webhook_id: str, enabled: bool) -> None:
    from controller.schemas.webhooks import WebhookPatch
    from controller.services.webhooks import update_webhook

    patch = WebhookPatch.parse({"enabled": enabled})
    audited_change(ctx, command, lambda s: update_webhook(s, ctx.config, webhook_id, patch), 200, f"webhook {webhook_id}")
    click.echo(f"webhook {webhook_id}: {'enabled' if enabled else 'paused'}")


@webhook.command("pause")
@click.argument("webhook_id")
@pass_ctx
def webhook_pause(ctx: Context, webhook_id: str) -> None:
    """Stop telling WEBHOOK_ID of events (jobs that end meanwhile are not sent later)."""
    _set_enabled(ctx, "webhook pause", webhook_id, False)


@webhook.command("resume")
@click.argument("webhook_id")
@pass_ctx
def webhook_resume(ctx: Context, webhook_id: str) -> None:
    """Tell WEBHOOK_ID of events again."""
    _set_enabled(ctx, "webhook resume", webhook_id, True)


@webhook.command("delete")
@click.argument("webhook_id")
@pass_ctx
def webhook_delete(ctx: Context, webhook_id: str) -> None:
    """Delete WEBHOOK_ID with its queued events and its deliveries."""
    from controller.services.webhooks import delete_webhook

    audited_change(ctx, "webhook delete", lambda s: delete_webhook(s, webhook_id), 200, f"webhook {webhook_id}")
    click.echo(f"webhook {webhook_id} deleted")
