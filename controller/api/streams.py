"""Live streams (Server-Sent Events): a job's events as they are stored, and every job's changes (services.streams)."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from sqlalchemy.exc import OperationalError

from controller.api.auth import requires
from controller.api.body import doc, query
from controller.api.context import config, db, principal
from controller.errors import ValidationError
from controller.schemas.jobs import StreamQuery
from controller.services.auth import token_active
from controller.services.streams import StreamHub, all_jobs_stream, job_stream
from controller.services.web_sessions import session_principal

bp = Blueprint("streams", __name__)
STREAM = ("text/event-stream.", {"text/event-stream": {"schema": {"type": "string"}}})
BUSY = {429: "CLOUDX_STREAM_MAX streams are already open in this API process (Retry-After is sent)."}


def hub() -> StreamHub:
    found = current_app.extensions.get("cloudx.streams")
    if found is None:
        cfg = config()
        # Read again: the jobs changed up to the database's busy timeout (and half a minute of clock skew) before a look.
        hub = StreamHub(db(), cfg.STREAM_POLL_SECONDS, cfg.STREAM_MAX, look_back=cfg.DB_BUSY_TIMEOUT + 30)
        found = current_app.extensions.setdefault("cloudx.streams", hub)
    return found


# How often an open stream checks that its caller may still read it (a revoked token, a signed-out session).
RECHECK_SECONDS = 5.0


def _gone() -> Any:
    """Whether the client went away (waitress tells; other servers end the stream when a write fails), or its token
    was revoked or expired, or its dashboard session ended, since the stream opened: it ends then."""
    disconnected = request.environ.get("waitress.client_disconnected") or (lambda: False)
    database, caller, cookie = db(), principal(), g.get("session_cookie")
    checked = {"at": time.monotonic(), "allowed": True}

    def allowed() -> bool:
        with database.session() as s:
            if cookie is not None:
                return session_principal(s, cookie) is not None
            return caller.token_id is None or token_active(s, caller.token_id)

    def gone() -> bool:
        if disconnected():
            return True
        if checked["allowed"] and time.monotonic() - checked["at"] >= RECHECK_SECONDS:
            checked["at"] = time.monotonic()
            with contextlib.suppress(OperationalError):  # a locked database is no reason to cut a reader off
                checked["allowed"] = allowed()
        return not checked["allowed"]

    return gone


def _events(body: Any) -> Response:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy may hold the events back
    return Response(body, content_type="text/event-stream; charset=utf-8", headers=headers)


@bp.get("/jobs/<job_id>/stream")
@requires("viewer")
@query(StreamQuery)
@doc(
    "stream_job",
    "jobs",
    "Follow a job's events live (Server-Sent Events)",
    {200: STREAM},
    errors={404: "No such job.", 400: "after or Last-Event-ID is not an event counter.", **BUSY},
    description="Every stored event after `after` (or the Last-Event-ID header of a reconnecting client) as `event: ansible` with "
    "`id:` its counter and data the event as GET /api/jobs/<id>/events gives it; `event: progress` when the job's progress "
    "changes; a final `event: end` with the job's status once every event is sent. Comment lines keep a quiet stream open.",
)
def stream_job(job_id: str, query: StreamQuery) -> Any:
    after = query.after or 0
    resumed = request.headers.get("Last-Event-ID")
    if resumed is not None:
        if not re.fullmatch(r"[0-9]{1,12}", resumed):  # not str.isdigit: "²" is a digit to it, and no int
            raise ValidationError("Last-Event-ID must be an event counter", field="Last-Event-ID")
        after = max(after, int(resumed))
    return _events(job_stream(hub(), job_id, after, config().STREAM_HEARTBEAT, _gone()))


@bp.get("/stream")
@requires("viewer")
@doc(
    "stream_jobs",
    "jobs",
    "Follow every job's changes live (Server-Sent Events)",
    {200: STREAM},
    errors=BUSY,
    description="`event: job` with `{job_id, kind, status, status_reason, progress, created_at, started_at, finished_at}`: each queued "
    "and running job when the stream opens, then each job created or changing status or progress.",
)
def stream_jobs() -> Any:
    return _events(all_jobs_stream(hub(), config().STREAM_HEARTBEAT, _gone()))
