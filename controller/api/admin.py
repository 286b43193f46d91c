"""Administration: API tokens, the scope policy, stored credentials and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from controller.api import config, executor, json_object, principal, requires, session
from controller.errors import ValidationError
from controller.queue.jobs import int_arg, iso, page_limit
from controller.services.auth import create_token, list_tokens, revoke_token, token_view
from controller.services.credentials import credential_view, delete_credential, list_credentials, store_credential
from controller.services.policy import get_policy, policy_view, update_policy
from controller.store.models import AuditEntry

bp = Blueprint("admin", __name__)


@bp.get("/tokens")
@requires("admin")
def tokens() -> Any:
    with session() as s:
        return jsonify({"tokens": [token_view(t) for t in list_tokens(s)]})


@bp.post("/tokens")
@requires("admin")
def new_token() -> Any:
    """Create a token; its text is in this response only."""
    body = json_object()
    unknown = set(body) - {"name", "role", "scope", "allow_large_targets", "expires_in", "max_queued", "max_running"}
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    with session() as s:
        token, text = create_token(
            s,
            body.get("name"),
            body.get("role"),
            principal().name,
            body.get("scope"),
            body.get("allow_large_targets", False),
            expires_in=body.get("expires_in"),
            max_queued=body.get("max_queued"),
            max_running=body.get("max_running"),
        )
        return jsonify({**token_view(token), "token": text}), 201


@bp.delete("/tokens/<name>")
@requires("admin")
def revoke(name: str) -> Any:
    """Revoke a token: its queued jobs are canceled and its running jobs stopped (`stopped_jobs`)."""
    with session() as s:
        token, jobs = revoke_token(s, name)
        view = token_view(token)
    for job_id in jobs:
        executor().cancel(job_id)
    return jsonify({**view, "stopped_jobs": jobs})


@bp.get("/policy")
@requires("operator")
def show_policy() -> Any:
    with session() as s:
        return jsonify(policy_view(get_policy(s)))


@bp.put("/policy")
@requires("admin")
def set_policy() -> Any:
    """Change the given fields of the policy; the others keep their values."""
    with session() as s:
        return jsonify(policy_view(update_policy(s, json_object(), principal().name)))


@bp.get("/credentials")
@requires("operator")
def credentials() -> Any:
    with session() as s:
        return jsonify({"credentials": [credential_view(c) for c in list_credentials(s)]})


@bp.post("/credentials")
@requires("admin")
def new_credential() -> Any:
    with session() as s:
        return jsonify(credential_view(store_credential(s, config(), json_object(), principal().name))), 201


@bp.delete("/credentials/<name>")
@requires("admin")
def remove_credential(name: str) -> Any:
    with session() as s:
        delete_credential(s, name)
    return jsonify({"name": name, "deleted": True})


@bp.get("/audit")
@requires("admin")
def audit() -> Any:
    """The audit log, newest first; `before` is the `next_before` of the previous page."""
    limit = page_limit(request.args.get("limit"))
    before = int_arg(request.args.get("before"), "before", "before must be an audit entry id")
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    with session() as s:
        rows = list(s.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify({"entries": [audit_view(e) for e in rows], "next_before": rows[-1].id if more else None})


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "request_id": entry.request_id,
        "client_request_id": entry.client_request_id,
        "count": entry.count,
        "actor": entry.actor,
        "role": entry.role,
        "remote_addr": entry.remote_addr,
        "method": entry.method,
        "path": entry.path,
        "action": entry.action,
        "status": entry.status,
        "outcome": entry.outcome,
        "job_id": entry.job_id,
        "detail": entry.detail,
    }
