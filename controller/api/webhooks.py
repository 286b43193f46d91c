"""Webhooks: endpoints told of job and scan events, and the log of every delivery attempt (admin only: URLs can carry
tokens of their own)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from controller.api.auth import requires
from controller.api.body import body, doc, query, reply
from controller.api.context import config, principal, session
from controller.schemas.webhooks import (
    WEBHOOK_ID,
    Deliveries,
    DeliveriesQuery,
    Webhook,
    WebhookDeleted,
    WebhookPatch,
    WebhookRequest,
    Webhooks,
)
from controller.services import webhooks

bp = Blueprint("webhooks", __name__)
WEBHOOK_PATH = {"webhook_id": {"type": "string", "pattern": WEBHOOK_ID.pattern}}
NO_WEBHOOK = {404: "No webhook with this id."}
NO_KEY = "A secret was given but CLOUDX_CREDENTIALS_KEY, which seals it, is not set (or not a key)."


@bp.post("/webhooks")
@requires("admin")
@body(WebhookRequest)
@doc(
    "create_webhook",
    "webhooks",
    "Tell an HTTP endpoint of job and scan events",
    {201: Webhook},
    errors={
        400: "The input is not valid, or the URL is refused (`url refused: ...`): plain http or a non-public address that "
        "CLOUDX_WEBHOOK_ALLOW does not allow.",
        409: NO_KEY,
    },
    description="Events of jobs that end from now on are POSTed from an outbox by a background sender, signed with the secret "
    "(X-Cloudx-Signature), retried with backoff; every attempt is logged (GET /api/webhooks/<id>/deliveries). The secret is "
    "never shown again.",
)
def create_webhook(body: WebhookRequest) -> Any:
    with session() as s:
        webhook = webhooks.create_webhook(s, config(), body, principal().name)
        return reply(Webhook, webhooks.webhook_views(s, [webhook])[0], 201)


@bp.get("/webhooks")
@requires("admin")
@doc("list_webhooks", "webhooks", "Every webhook (never its secret)", {200: Webhooks})
def list_webhooks() -> Any:
    with session() as s:
        return reply(Webhooks, {"webhooks": webhooks.list_webhooks(s)})


@bp.get("/webhooks/<webhook_id>")
@requires("admin")
@doc("get_webhook", "webhooks", "One webhook", {200: Webhook}, errors=NO_WEBHOOK, path=WEBHOOK_PATH)
def get_webhook(webhook_id: str) -> Any:
    with session() as s:
        return reply(Webhook, webhooks.webhook_views(s, [webhooks.get_webhook(s, webhook_id)])[0])


@bp.patch("/webhooks/<webhook_id>")
@requires("admin")
@body(WebhookPatch)
@doc(
    "update_webhook",
    "webhooks",
    "Change a webhook's events or secret, pause or resume it",
    {200: Webhook},
    errors={**NO_WEBHOOK, 409: NO_KEY},
    path=WEBHOOK_PATH,
    description="enabled: false pauses it: its queued events wait, and jobs that end while it is paused send it nothing.",
)
def update_webhook(webhook_id: str, body: WebhookPatch) -> Any:
    with session() as s:
        webhook = webhooks.update_webhook(s, config(), webhook_id, body)
        return reply(Webhook, webhooks.webhook_views(s, [webhook])[0])


@bp.delete("/webhooks/<webhook_id>")
@requires("admin")
@doc(
    "delete_webhook",
    "webhooks",
    "Delete a webhook, its queued events and its delivery log",
    {200: WebhookDeleted},
    errors=NO_WEBHOOK,
    path=WEBHOOK_PATH,
)
def delete_webhook(webhook_id: str) -> Any:
    with session() as s:
        return reply(WebhookDeleted, {"deleted": webhooks.delete_webhook(s, webhook_id)})


@bp.get("/webhooks/<webhook_id>/deliveries")
@requires("admin")
@query(DeliveriesQuery)
@doc(
    "webhook_deliveries",
    "webhooks",
    "Every attempt to deliver the webhook's events, newest first",
    {200: Deliveries},
    errors={**NO_WEBHOOK, 400: "limit or before is not valid."},
    path=WEBHOOK_PATH,
    description="Each attempt: the attempt number, outcome, the receiver's status code, latency, error and the body sent.",
)
def webhook_deliveries(webhook_id: str, query: DeliveriesQuery) -> Any:
    with session() as s:
        return reply(Deliveries, webhooks.deliveries_page(s, webhook_id, query.limit, query.before))
