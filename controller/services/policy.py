"""The scope policy: what may be scanned and where agents may go. It fails closed.

A target is allowed when every address it stands for lies inside the policy scope and, if the caller's
token has a scope of its own, inside that too. Hostnames (in targets and in scopes) are resolved and
every resolved address is checked, so a name cannot point a scan outside the scope.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.errors import Forbidden, ValidationError
from controller.principal import Principal, Quota
from controller.scanlib import ScanInputError, scanner
from controller.services.auth import expired
from controller.store.models import Policy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_SCOPE_ENTRIES = 1000
HOW_TO = "an admin sets it with `cloudx policy set --scope CIDR_OR_HOST ...` or PUT /api/policy"
FIELDS = ("scope", "max_prefix_v4", "max_prefix_v6", "windows_deployments", "token_max_queued", "token_max_running", "max_scan_timeout")
SCANNING_ROLES = ("operator", "admin")
DEFAULT_MAX_SCAN_TIMEOUT = {"operator": 7200}


def validate_scope(value: Any) -> list[str]:
    """Scope entries as canonical CIDRs and lowercase hostnames."""
    if not isinstance(value, list) or len(value) > MAX_SCOPE_ENTRIES:
        raise ValidationError(f"scope must be a list of at most {MAX_SCOPE_ENTRIES} CIDR networks, addresses or hostnames", field="scope")
    entries = []
    for item in value:
        try:
            entry = scanner.validate_target(item)
        except ScanInputError as exc:
            raise ValidationError(exc.message.replace("target", "scope entry", 1), field="scope") from None
        if not _is_name(entry):
            entry = ipaddress.ip_network(entry, strict=False).with_prefixlen
        if entry not in entries:
            entries.append(entry)
    return entries


def _is_name(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return True
    return False


def get_policy(session: Session) -> Policy:
    policy = session.get(Policy, 1)
    if policy is None:
        policy = Policy(
            id=1,
            scope=[],
            max_prefix_v4=16,
            max_prefix_v6=112,
            windows_deployments=True,
            token_max_queued=20,
            token_max_running=4,
            max_scan_timeout=dict(DEFAULT_MAX_SCAN_TIMEOUT),
        )
        session.add(policy)
        session.flush()
    return policy


def update_policy(session: Session, changes: Any, updated_by: str) -> Policy:
    """Apply the given fields (the others keep their values)."""
    if not isinstance(changes, dict) or not changes:
        raise ValidationError(f"give at least one of: {', '.join(FIELDS)}", field="body")
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    values: dict[str, Any] = {}
    if "scope" in changes:
        values["scope"] = validate_scope(changes["scope"])
    bounds = (("max_prefix_v4", 0, 32), ("max_prefix_v6", 0, 128), ("token_max_queued", 1, 10000), ("token_max_running", 1, 10000))
    for field, low, top in bounds:
        if field in changes:
            values[field] = _bounded(changes[field], field, low, top)
    if "windows_deployments" in changes:
        if not isinstance(changes["windows_deployments"], bool):
            raise ValidationError("windows_deployments must be true or false", field="windows_deployments")
        values["windows_deployments"] = changes["windows_deployments"]
    if "max_scan_timeout" in changes:
        limits = changes["max_scan_timeout"]
        if not isinstance(limits, dict) or not set(limits) <= set(SCANNING_ROLES):
            raise ValidationError(f"max_scan_timeout must map roles ({', '.join(SCANNING_ROLES)}) to seconds", field="max_scan_timeout")
        values["max_scan_timeout"] = {role: _bounded(limits[role], "max_scan_timeout", 1, 10**7) for role in sorted(limits)}
    policy = get_policy(session)
    for key, value in values.items():
        setattr(policy, key, value)
    policy.updated_by = updated_by
    session.flush()
    return policy


def _bounded(value: Any, field: str, low: int, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
        raise ValidationError(f"{field} must be an integer from {low} to {top}", field=field)
    return value


def policy_view(policy: Policy) -> dict[str, Any]:
    from controller.queue.jobs import iso

    return {
        "scope": policy.scope,
        "max_prefix_v4": policy.max_prefix_v4,
        "max_prefix_v6": policy.max_prefix_v6,
        "windows_deployments": policy.windows_deployments,
        "token_max_queued": policy.token_max_queued,
        "token_max_running": policy.token_max_running,
        "max_scan_timeout": _scan_timeouts(policy),
        "updated_by": policy.updated_by,
        "updated_at": iso(policy.updated_at),
    }


def quota_for(session: Session, principal: Principal) -> Quota | None:
    """The job quotas of a submitter: its token's own, else the policy's; admins (and the CLI) have none."""
    if principal.role == "admin":
        return None
    policy = get_policy(session)
    queued = principal.max_queued if principal.max_queued is not None else policy.token_max_queued
    running = principal.max_running if principal.max_running is not None else policy.token_max_running
    return Quota(queued, running)


def max_scan_timeout(session: Session, principal: Principal, ceiling: int) -> int:
    """The largest scan timeout this caller's role may ask for (never above CLOUDX_SCAN_MAX_TIMEOUT)."""
    limits = _scan_timeouts(get_policy(session))
    return min(ceiling, int(limits.get(principal.role, ceiling)))


def _scan_timeouts(policy: Policy) -> dict[str, int]:
    # None: never set (a policy from before per-role limits existed): the default applies, not "no limit".
    return dict(DEFAULT_MAX_SCAN_TIMEOUT) if policy.max_scan_timeout is None else dict(policy.max_scan_timeout)


def resolve(name: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address a hostname resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()
    return {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}


def _networks(entries: Iterable[str]) -> list[Network]:
    networks: list[Network] = []
    for entry in entries:
        if _is_name(entry):
            networks.extend(ipaddress.ip_network(address) for address in resolve(entry))
        else:
            networks.append(ipaddress.ip_network(entry, strict=False))
    return networks


def _inside(network: Network, scope: list[Network]) -> bool:
    return any(network.version == s.version and network.subnet_of(s) for s in scope)  # type: ignore[arg-type]


def check_targets(session: Session, principal: Principal, targets: Iterable[str], windows: bool = False) -> dict[str, list[str]]:
    """The addresses each target stands for, checked; Forbidden unless all are in scope for this caller.

    Jobs use the addresses returned, not the names, so a name that resolves elsewhere later (another DNS
    answer, another resolver on the scanner) cannot take them out of the scope.
    """
    policy = get_policy(session)
    if not policy.scope:
        raise Forbidden(f"no scope policy is configured, so scanning and deploying are refused; {HOW_TO}")
    if windows and not policy.windows_deployments:
        raise Forbidden("Windows deployments are switched off by policy (windows_deployments: false)")
    scopes = [_networks(policy.scope)]
    if principal.scope is not None:
        scopes.append(_networks(principal.scope))
    checked: dict[str, list[str]] = {}
    for target in targets:
        if not _is_name(target):
            networks = [ipaddress.ip_network(target, strict=False)]
        else:
            addresses = resolve(target)
            if not addresses:
                # The same words as a name outside the scope: a refusal must not tell which names exist.
                raise Forbidden(f"target {target!r} does not resolve to addresses inside the policy scope")
            networks = [ipaddress.ip_network(address) for address in sorted(addresses, key=str)]
        for network in networks:
            limit = policy.max_prefix_v4 if network.version == 4 else policy.max_prefix_v6
            if network.prefixlen < limit and not principal.allow_large_targets:
                raise Forbidden(
                    f"target {network.with_prefixlen} covers {network.num_addresses} addresses; networks larger than "
                    f"/{limit} need a token allowed large targets (cloudx token create --allow-large-targets)"
                )
            for scope in scopes:
                if not _inside(network, scope):
                    which = "the policy scope" if scope is scopes[0] else f"the scope of token {principal.name!r}"
                    if _is_name(target):  # never the addresses a name resolved to: no DNS oracle for internal names
                        raise Forbidden(f"target {target!r} does not resolve to addresses inside {which}")
                    raise Forbidden(f"target {target} is outside {which}")
        checked[target] = [str(n.network_address) if n.num_addresses == 1 else n.with_prefixlen for n in networks]
    return checked


def principal_for(session: Session, created_by: str | None) -> Principal:
    """Who submitted a job, as they stand now: a job runs only if its submitter may still submit it."""
    from controller.services.auth import cli_principal
    from controller.store.models import ApiToken

    if created_by is None or created_by.startswith("cli:"):
        return cli_principal(allow_large_targets=True)
    token = session.scalar(select(ApiToken).where(ApiToken.name == created_by))
    if token is None or token.revoked_at is not None:
        raise Forbidden(f"the token {created_by!r} that submitted the job was revoked")
    if expired(token.expires_at):
        raise Forbidden(f"the token {created_by!r} that submitted the job has expired")
    return Principal(
        created_by,
        token.role,
        token.id,
        tuple(token.scope) if token.scope is not None else None,
        token.allow_large_targets,
        max_queued=token.max_queued,
        max_running=token.max_running,
    )


def inside_scope(entries: list[str], addresses: Iterable[str]) -> bool:
    """Whether every address (or network) lies within the given scope entries."""
    scope = _networks(entries)
    return all(_inside(ipaddress.ip_network(a, strict=False), scope) for a in addresses)
