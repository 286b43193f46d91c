"""Administration: API tokens, the scope policy, stored credentials and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from controller.api.auth import requires
from controller.api.body import body, doc, query, reply
from controller.api.context import config, executor, principal, session
from controller.schemas.admin import (
    AuditPage,
    AuditQuery,
    Credential,
    CredentialRequest,
    Credentials,
    NameDeleted,
    NewToken,
    Policy,
    PolicyChange,
    RevokedToken,
    Token,
    TokenRequest,
    Tokens,
)
from controller.services.audit import audit_page
from controller.services.auth import issue_token, list_tokens, revoke_token
from controller.services.credentials import delete_credential, list_credentials, store_credential
from controller.services.policy import get_policy, update_policy

bp = Blueprint("admin", __name__)


@bp.get("/tokens")
@requires("admin")
@doc("list_tokens", "admin", "API tokens", {200: Tokens})
def tokens() -> Any:
    with session() as s:
        return reply(Tokens, {"tokens": list_tokens(s)})


@bp.post("/tokens")
@requires("admin")
@body(TokenRequest)
@doc("create_token", "admin", "Create an API token", {201: NewToken}, errors={409: "A token with this name exists."})
def new_token(body: TokenRequest) -> Any:
    """Create a token; its text is in this response only."""
    with session() as s:
        token, text = issue_token(s, body, principal().name)
        return reply(NewToken, {**Token.model_validate(token).__dict__, "token": text}, 201)


@bp.delete("/tokens/<name>")
@requires("admin")
@doc("revoke_token", "admin", "Revoke an API token", {200: RevokedToken}, errors={404: "No token with this name."})
def revoke(name: str) -> Any:
    """Revoke a token: its queued jobs are canceled and its running jobs stopped (`stopped_jobs`)."""
    with session() as s:
        token, jobs = revoke_token(s, name)
        view = Token.model_validate(token).__dict__
    for job_id in jobs:
        executor().cancel(job_id)
    return reply(RevokedToken, {**view, "stopped_jobs": jobs})


@bp.get("/policy")
@requires("operator")
@doc("get_policy", "admin", "The scope policy", {200: Policy})
def show_policy() -> Any:
    with session() as s:
        return reply(Policy, get_policy(s))


@bp.put("/policy")
@requires("admin")
@body(PolicyChange)
@doc(
    "update_policy",
    "admin",
    "Change the scope policy",
    {200: Policy},
    description="Changes the given fields; the others keep their values.",
)
def set_policy(body: PolicyChange) -> Any:
    with session() as s:
        return reply(Policy, update_policy(s, body, principal().name))


@bp.get("/credentials")
@requires("operator")
@doc("list_credentials", "admin", "Stored credentials (never their secrets)", {200: Credentials})
def credentials() -> Any:
    with session() as s:
        return reply(Credentials, {"credentials": list_credentials(s)})


@bp.post("/credentials")
@requires("admin")
@body(CredentialRequest)
@doc(
    "create_credential",
    "admin",
    "Store a credential",
    {201: Credential},
    errors={
        400: "The input is not valid, or the controller has no valid CLOUDX_CREDENTIALS_KEY (field credential).",
        409: "A credential with this name exists.",
    },
    description="The secret is encrypted with CLOUDX_CREDENTIALS_KEY (AES-256-GCM) and never returned.",
)
def new_credential(body: CredentialRequest) -> Any:
    with session() as s:
        return reply(Credential, store_credential(s, config(), body, principal().name), 201)


@bp.delete("/credentials/<name>")
@requires("admin")
@doc("delete_credential", "admin", "Delete a stored credential", {200: NameDeleted}, errors={404: "No credential with this name."})
def remove_credential(name: str) -> Any:
    with session() as s:
        delete_credential(s, name)
    return reply(NameDeleted, {"name": name, "deleted": True})


@bp.get("/audit")
@requires("admin")
@query(AuditQuery)
@doc(
    "list_audit",
    "admin",
    "The audit log, newest first",
    {200: AuditPage},
    errors={400: "limit or before is not valid."},
    description="Every mutating request (POST, PUT, DELETE), whatever its outcome.",
)
def audit(query: AuditQuery) -> Any:
    """The audit log, newest first; `before` is the `next_before` of the previous page."""
    with session() as s:
        rows, next_before = audit_page(s, query.limit, query.before)
        return reply(AuditPage, {"entries": rows, "next_before": next_before})
