"""Who a request comes from, their role and their job quota: known to every layer, decided by services.auth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# Each role may do what the roles before it may.
ROLES = ("viewer", "operator", "admin")


class Quota(NamedTuple):
    """Jobs a submitter may have waiting, and running at once; None: no limit."""

    queued: int | None
    running: int | None


@dataclass(frozen=True)
class Principal:
    """The caller: a token's owner, or the local command line."""

    name: str
    role: str
    token_id: str | None = None
    scope: tuple[str, ...] | None = None
    allow_large_targets: bool = False
    # The token's last recorded use is old enough to record this one (see LAST_USED_RESOLUTION).
    stale_use: bool = False
    # The token's own job quotas (None: the policy's).
    max_queued: int | None = None
    max_running: int | None = None

    def has(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)
