"""Webhooks: an endpoint told of job and scan events, and the log of every attempt to deliver one."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, ValidationInfo

from controller.schemas.base import Query, Request, Response
from controller.schemas.types import MAX_PAGE, Documented, FieldError, MaybeTimestamp, PageSize, QueryInt, Timestamp, matching

EVENTS = ("job.failed", "job.succeeded", "job.fixed", "scan.changed")
Event = Literal["job.failed", "job.succeeded", "job.fixed", "scan.changed"]
WEBHOOK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_URL = 2048

# What a webhook URL may be, as one regular expression (the document's pattern is this one): http or https, a host
# name whose last label starts with a letter (so "127.1" or "0x7f000001", which resolvers read as addresses, are not
# names) or a dotted IPv4 address, an optional port, a path and query of URL characters; no user, no fragment.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = rf"(?:{_LABEL}\.)*[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL = re.compile(rf"^(https?)://((?:{_OCTET}\.){{3}}{_OCTET}|{_NAME})(?::({_PORT}))?([/?][A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$")
SECRET = re.compile(r"^[!-~]{16,256}$")


def _url(value: str, info: ValidationInfo) -> str:
    if len(value) > MAX_URL or not URL.fullmatch(value):
        raise FieldError(
            "url",
            "url must be http(s)://host[:port][/path] with a host name or an IPv4 address (no user, no fragment, lowercase "
            f"scheme, at most {MAX_URL} characters)",
        )
    return value


def _unique(value: list[str], info: ValidationInfo) -> list[str]:
    if len(set(value)) != len(value):
        raise FieldError(info.field_name or "events", f"{info.field_name} must not name an event twice")
    return value


WebhookUrl = Annotated[str, AfterValidator(_url), Documented(pattern=URL.pattern, maxLength=MAX_URL)]
Events = Annotated[list[Event], Field(min_length=1, max_length=len(EVENTS)), AfterValidator(_unique), Documented(uniqueItems=True)]
SigningSecret = matching(SECRET, "{field} must be 16 to 256 printable ASCII characters, no spaces")
EVENTS_TEXT = (
    "job.succeeded (a job ended successful), job.failed (failed, timeout or error; a canceled job sends nothing), "
    "job.fixed (successful after the previous run of the same schedule or request was not), scan.changed (a successful "
    "scan that differs from the previous successful scan of the same target, tool and type)."
)


class WebhookRequest(Request):
    """POST /api/webhooks."""

    messages: ClassVar[dict[str, str]] = {
        "url": "url must be a string",
        "events": f"events must be a list of 1 to {len(EVENTS)} of: {', '.join(EVENTS)}",
        "secret": "secret must be 16 to 256 printable ASCII characters, no spaces",
        "enabled": "enabled must be true or false",
    }

    url: WebhookUrl = Field(
        description="Where events are POSTed. https, unless the host is in CLOUDX_WEBHOOK_ALLOW; loopback, private, link-local "
        "and other non-public addresses are refused unless allowed (checked now for addresses, and at every delivery for "
        "the addresses the name resolves to)."
    )
    events: Events = Field(description=EVENTS_TEXT)
    secret: SigningSecret | None = Field(
        default=None,
        description="Signs every delivery (X-Cloudx-Signature: sha256=HMAC of timestamp.body). Stored sealed with "
        "CLOUDX_CREDENTIALS_KEY, never shown again. Without it deliveries are not signed.",
    )
    enabled: bool = Field(default=True, description="false: kept, but told of nothing (jobs that end meanwhile are not sent later).")


class WebhookPatch(Request):
    """PATCH /api/webhooks/<id>: the fields to change."""

    messages: ClassVar[dict[str, str]] = WebhookRequest.messages

    events: Events | None = Field(default=None, description=EVENTS_TEXT)
    secret: SigningSecret | None = Field(default=None, description="A new signing secret (the old one is forgotten).")
    enabled: bool | None = None


class Webhook(Response):
    """A webhook (never its secret)."""

    id: str
    url: str
    events: list[str]
    enabled: bool
    signed: bool = Field(description="Whether it has a signing secret.")
    created_by: str
    created_at: Timestamp
    pending: int = Field(description="Events waiting to be delivered (or being delivered).")
    failed: int = Field(description="Events given up after CLOUDX_WEBHOOK_MAX_ATTEMPTS attempts.")
    last_delivery_at: MaybeTimestamp
    last_outcome: str | None = Field(description="delivered, retry, failed or refused: how the last attempt ended.")


class Webhooks(Response):
    """Every webhook."""

    webhooks: list[Webhook]


class WebhookDeleted(Response):
    """The webhook was deleted, with its queued events and its deliveries."""

    deleted: str


class Delivery(Response):
    """One attempt to deliver one event."""

    id: int
    delivery: str = Field(description="X-Cloudx-Delivery: the same for every attempt of one event.")
    event: str
    job_id: str
    attempt: int
    outcome: Literal["delivered", "retry", "failed", "refused"] = Field(
        description="delivered (2xx), retry (will be tried again), failed (the last attempt failed: given up), refused (the "
        "URL's address is not allowed; no connection was made; tried again like a failure)."
    )
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came (refused, timeout, connection).")
    latency_ms: int | None
    error: str | None
    body: str = Field(description="The JSON body sent (the same for every attempt of one event).")
    at: Timestamp


class Deliveries(Response):
    """A webhook's delivery attempts, newest first."""

    webhook_id: str
    deliveries: list[Delivery]
    next_before: int | None


class DeliveriesQuery(Query):
    limit: PageSize = Field(default=MAX_PAGE, description=f"At most this many (1-{MAX_PAGE}).")
    before: QueryInt | None = Field(default=None, description="next_before of the previous page.")


def webhook_view(fields: dict[str, Any]) -> dict[str, Any]:
    return Webhook.dump(fields)
