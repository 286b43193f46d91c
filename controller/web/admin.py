"""Admin pages: API tokens (created with their secret shown once, revoked), the scope policy, and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, url_for

from controller.api.auth import requires
from controller.api.context import config, executor, principal, session
from controller.errors import ApiError
from controller.principal import ROLES
from controller.schemas.admin import AuditEntry as AuditView
from controller.schemas.admin import AuditQuery, PolicyChange, TokenRequest
from controller.schemas.types import SCANNING_ROLES
from controller.services.audit import audit_page
from controller.services.auth import expired, get_token, issue_token, list_tokens, revoke_token, token_view
from controller.services.policy import get_policy, policy_view, update_policy
from controller.web.forms import form_data, number, parsed_query, refused
from controller.web.pages import done, page

bp = Blueprint("admin", __name__)
TOKEN_FIELDS = ("name", "role", "scope", "allow_large_targets", "expires_in", "max_queued", "max_running")
POLICY_FIELDS = ("scope", "max_prefix_v4", "max_prefix_v6", "windows_deployments", "token_max_queued", "token_max_running")
TIMEOUT_FIELDS = tuple(f"max_scan_timeout_{role}" for role in SCANNING_ROLES)
CHOICES = {"yes": True, "no": False}


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


# --- tokens -------------------------------------------------------------------------------------------------


def _state(token: Any) -> str:
    return "revoked" if token.revoked_at is not None else "expired" if expired(token.expires_at) else "active"


def _tokens(errors: dict[str, str], given: dict[str, str], status: int = 200, created: dict[str, Any] | None = None) -> Any:
    with session() as s:
        tokens = [{**token_view(t), "state": _state(t)} for t in list_tokens(s)]
    return page("tokens.html", "tokens", status, tokens=tokens, roles=ROLES, errors=errors, given=given, created=created)


@bp.get("/admin/tokens")
@requires("admin")
def tokens() -> Any:
    return _tokens({}, {"role": "viewer"})


def _token_body(given: dict[str, str]) -> dict[str, Any]:
    """The form as POST /api/tokens takes it: scope one entry a line, numbers as numbers, the empty fields left out."""
    body: dict[str, Any] = {k: v for k, v in given.items() if v != "" and k not in ("scope", "allow_large_targets")}
    for name in ("expires_in", "max_queued", "max_running"):
        if name in body:
            body[name] = number(body[name])
    if given["scope"]:
        body["scope"] = _lines(given["scope"])
    body["allow_large_targets"] = given["allow_large_targets"] == "on"
    return body


@bp.post("/admin/tokens")
@requires("admin")
def create_token() -> Any:
    """Create a token: its secret is on this response only (rendered, never redirected to; pages are never cached)."""
    given = form_data(TOKEN_FIELDS)
    try:
        body = TokenRequest.parse(_token_body(given), config=config())
        with session() as s:
            token, secret = issue_token(s, body, principal().name)
            created = {**token_view(token), "token": secret}
    except ApiError as exc:
        return _tokens(refused(exc, TOKEN_FIELDS), given, exc.status)
    return _tokens({}, {"role": "viewer"}, 201, created)


def _token(name: str) -> dict[str, Any]:
    with session() as s:
        return token_view(get_token(s, name))


@bp.get("/admin/tokens/<name>/revoke")
@requires("admin")
def confirm_revoke(name: str) -> Any:
    token = _token(name)
    return page(
        "confirm.html",
        "tokens",
        verb="Revoke",
        what=f"token {token['name']} ({token['role']})",
        detail="It stops working at once, and so do the dashboard sessions opened with it; its queued jobs are canceled and its "
        "running jobs asked to stop. A revoked token's name is never used again.",
        action=url_for(".revoke", name=name),
        cancel=url_for(".tokens"),
        button="Revoke token",
    )


@bp.post("/admin/tokens/<name>/revoke")
@requires("admin")
def revoke(name: str) -> Any:
    """As DELETE /api/tokens/<name>: revoked (again is no change), and its jobs stopped."""
    with session() as s:
        _, jobs = revoke_token(s, name)
    for job_id in jobs:
        executor().cancel(job_id)
    return done(url_for(".tokens"), "token-revoked")


# --- the scope policy ---------------------------------------------------------------------------------------


def _policy(errors: dict[str, str], given: dict[str, str] | None, status: int = 200) -> Any:
    with session() as s:
        policy = policy_view(get_policy(s))
    if given is None:  # the form starts from the policy as it is
        given = {name: str(policy[name]) for name in POLICY_FIELDS if name not in ("scope", "windows_deployments")}
        given["scope"] = "\n".join(policy["scope"])
        given["windows_deployments"] = "yes" if policy["windows_deployments"] else "no"
        given.update({f"max_scan_timeout_{r}": str(policy["max_scan_timeout"].get(r, "")) for r in SCANNING_ROLES})
    ceiling = config().SCAN_MAX_TIMEOUT
    return page("policy.html", "policy", status, policy=policy, errors=errors, given=given, scanning_roles=SCANNING_ROLES, ceiling=ceiling)


@bp.get("/admin/policy")
@requires("operator")  # as GET /api/policy: operators read the scope they scan within
def policy() -> Any:
    return _policy({}, None)


def _policy_body(given: dict[str, str]) -> dict[str, Any]:
    """The form as PUT /api/policy takes it: the scope one entry a line (all of it: an empty box is an empty scope),
    the other fields given changed, the empty ones keeping their values."""
    body: dict[str, Any] = {"scope": _lines(given["scope"])}
    for name in ("max_prefix_v4", "max_prefix_v6", "token_max_queued", "token_max_running"):
        if given[name]:
            body[name] = number(given[name])
    if given["windows_deployments"]:
        body["windows_deployments"] = CHOICES.get(given["windows_deployments"], given["windows_deployments"])
    timeouts = {role: number(given[f"max_scan_timeout_{role}"]) for role in SCANNING_ROLES if given[f"max_scan_timeout_{role}"]}
    if timeouts:
        body["max_scan_timeout"] = timeouts
    return body


@bp.post("/admin/policy")
@requires("admin")
def set_policy() -> Any:
    """As PUT /api/policy: the fields given change, the others keep their values."""
    given = form_data(POLICY_FIELDS + TIMEOUT_FIELDS)
    try:
        body = PolicyChange.parse(_policy_body(given), config=config())
        with session() as s:
            update_policy(s, body, principal().name)
    except ApiError as exc:
        return _policy(refused(exc, (*POLICY_FIELDS, "max_scan_timeout")), given, exc.status)
    return done(url_for(".policy"), "policy-saved")


# --- the audit log ------------------------------------------------------------------------------------------


@bp.get("/admin/audit")
@requires("admin")
def audit() -> Any:
    """As GET /api/audit: newest first, a page before the `before` entry id."""
    query, filter_error = parsed_query(AuditQuery)
    with session() as s:
        rows, next_before = audit_page(s, query.limit, query.before)
        entries = [AuditView.dump(row) for row in rows]
    return page("audit.html", "audit", entries=entries, next_before=next_before, query=query, filter_error=filter_error)
