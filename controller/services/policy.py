"""The scope policy: what may be scanned and where agents may go. It fails closed.

A target is allowed when every address it stands for lies inside the policy scope and, if the caller's
token has a scope of its own, inside that too. Hostnames (in targets and in scopes) are resolved and
every resolved address is checked, so a name cannot point a scan outside the scope.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.errors import Forbidden
from controller.principal import Principal, Quota
from controller.schemas.admin import Policy as PolicyView
from controller.schemas.admin import PolicyChange
from controller.schemas.types import DEFAULT_MAX_SCAN_TIMEOUT, is_name
from controller.services.auth import expired
from controller.store.models import Policy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HOW_TO = "an admin sets it with `cloudx policy set --scope CIDR_OR_HOST ...` or PUT /api/policy"


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


def update_policy(session: Session, changes: PolicyChange | Mapping[str, Any], updated_by: str) -> Policy:
    """Apply the given fields (the others keep their values)."""
    policy = get_policy(session)
    for key, value in PolicyChange.coerce(changes).changes().items():
        setattr(policy, key, value)
    policy.updated_by = updated_by
    session.flush()
    return policy


def policy_view(policy: Policy) -> dict[str, Any]:
    return PolicyView.dump(policy)


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
    return PolicyView.model_validate(policy).max_scan_timeout


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
        if is_name(entry):
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
        networks = _target_networks(target)
        for network in networks:
            _check_network(network, target, policy, principal, scopes)
        checked[target] = [str(n.network_address) if n.num_addresses == 1 else n.with_prefixlen for n in networks]
    return checked


def _target_networks(target: str) -> list[Network]:
    if not is_name(target):
        return [ipaddress.ip_network(target, strict=False)]
    addresses = resolve(target)
    if not addresses:
        # The same words as a name outside the scope: a refusal must not tell which names exist.
        raise Forbidden(f"target {target!r} does not resolve to addresses inside the policy scope")
    return [ipaddress.ip_network(address) for address in sorted(addresses, key=str)]


def _check_network(network: Network, target: str, policy: Policy, principal: Principal, scopes: list[list[Network]]) -> None:
    limit = policy.max_prefix_v4 if network.version == 4 else policy.max_prefix_v6
    if network.prefixlen < limit and not principal.allow_large_targets:
        raise Forbidden(
            f"target {network.with_prefixlen} covers {network.num_addresses} addresses; networks larger than "
            f"/{limit} need a token allowed large targets (cloudx token create --allow-large-targets)"
        )
    for scope in scopes:
        if not _inside(network, scope):
            which = "the policy scope" if scope is scopes[0] else f"the scope of token {principal.name!r}"
            if is_name(target):  # never the addresses a name resolved to: no DNS oracle for internal names
                raise Forbidden(f"target {target!r} does not resolve to addresses inside {which}")
            raise Forbidden(f"target {target} is outside {which}")


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
