"""Administration: tokens, the scope policy, stored credentials and the audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from controller.errors import ValidationError
from controller.principal import ROLES
from controller.schemas.base import Query, Request, Response
from controller.schemas.types import (
    CREDENTIAL_KINDS,
    CREDENTIAL_NAME,
    DEFAULT_MAX_SCAN_TIMEOUT,
    EXPIRES_IN,
    MAX_PAGE,
    MAX_QUOTA,
    MAX_TOKEN_LIFETIME_DAYS,
    SCANNING_ROLES,
    TOKEN_FORMAT,
    TOKEN_NAME,
    CredentialName,
    FieldError,
    MaybeTimestamp,
    PageSize,
    QueryInt,
    Scope,
    Secret,
    Timestamp,
    TokenName,
    Username,
    private_key,
)

Role = Literal["viewer", "operator", "admin"]
assert Role.__args__ == ROLES  # type: ignore[attr-defined]
Kind = Literal["ssh_key", "password"]
assert Kind.__args__ == CREDENTIAL_KINDS  # type: ignore[attr-defined]
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
Quota = Annotated[int, Field(ge=1, le=MAX_QUOTA)]


def parse_expires_in(value: int | str, field: str = "expires_in") -> timedelta:
    """'30d', '12h', '90m', '3600s' (or a number of seconds) as a lifetime."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        seconds = value
    elif isinstance(value, str) and (match := EXPIRES_IN.fullmatch(value)):
        seconds = int(match.group(1)) * UNITS[match.group(2)]
    else:
        raise FieldError(field, f"{field} must be a lifetime such as 30d, 12h, 90m or a number of seconds")
    if seconds > MAX_TOKEN_LIFETIME_DAYS * 86400:
        raise FieldError(field, f"{field} must be at most {MAX_TOKEN_LIFETIME_DAYS} days")
    return timedelta(seconds=seconds)


class TokenRequest(Request):
    """POST /api/tokens (and `cloudx token create`)."""

    messages = {
        "name": f"name must match {TOKEN_NAME.pattern}",
        "role": f"role must be one of: {', '.join(ROLES)}",
        "allow_large_targets": "allow_large_targets must be true or false",
        "scope": "scope must be a list of at most 1000 CIDR networks, addresses or hostnames",
        "expires_in": "expires_in must be a lifetime such as 30d, 12h, 90m or a number of seconds",
        "max_queued": f"max_queued must be an integer from 1 to {MAX_QUOTA}",
        "max_running": f"max_running must be an integer from 1 to {MAX_QUOTA}",
    }

    name: TokenName
    role: Role
    scope: Scope | None = Field(default=None, description="Narrows the policy scope for this token; null: the policy scope.")
    allow_large_targets: bool = Field(default=False, description="May scan networks larger than the policy allows.")
    expires_in: int | str | None = Field(
        default=None,
        description="Lifetime: 30d, 12h, 90m, 3600s or seconds (at most 3650 days); none: no expiry.",
        json_schema_extra={
            "anyOf": [
                # The format: the number and unit at most MAX_TOKEN_LIFETIME_DAYS (parse_expires_in).
                {"type": "string", "pattern": EXPIRES_IN.pattern, "format": "cloudx-lifetime"},
                {"type": "integer", "minimum": 1, "maximum": 315360000},
                {"type": "null"},
            ]
        },
    )
    max_queued: Quota | None = Field(default=None, description="Jobs it may have waiting; null: the policy's token_max_queued.")
    max_running: Quota | None = Field(default=None, description="Jobs it may run at once; null: the policy's token_max_running.")

    @field_validator("expires_in")
    @classmethod
    def _lifetime(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_expires_in(value)
        return value

    @property
    def lifetime(self) -> timedelta | None:
        return parse_expires_in(self.expires_in) if self.expires_in is not None else None


ScanTimeout = Annotated[int, Field(ge=1, le=10**7)]


class ScanTimeouts(Request):
    messages = {r: f"max_scan_timeout must map roles ({', '.join(SCANNING_ROLES)}) to seconds" for r in SCANNING_ROLES}

    operator: ScanTimeout | None = None
    admin: ScanTimeout | None = None


class PolicyChange(Request):
    """PUT /api/policy (and `cloudx policy set`): the fields given change, the others keep their values."""

    messages = {
        "scope": "scope must be a list of at most 1000 CIDR networks, addresses or hostnames",
        "windows_deployments": "windows_deployments must be true or false",
        "max_scan_timeout": f"max_scan_timeout must map roles ({', '.join(SCANNING_ROLES)}) to seconds",
        **{f: f"{f} must be an integer from {lo} to {hi}" for f, lo, hi in (("max_prefix_v4", 0, 32), ("max_prefix_v6", 0, 128))},
        **{f: f"{f} must be an integer from 1 to {MAX_QUOTA}" for f in ("token_max_queued", "token_max_running")},
    }

    scope: Scope | None = None
    max_prefix_v4: int | None = Field(
        default=None, ge=0, le=32, description="IPv4 networks with a shorter prefix need a token allowed large targets."
    )
    max_prefix_v6: int | None = Field(default=None, ge=0, le=128, description="The same for IPv6.")
    windows_deployments: bool | None = None
    token_max_queued: Quota | None = Field(default=None, description="Jobs a non-admin token may have waiting.")
    token_max_running: Quota | None = Field(default=None, description="Jobs a non-admin token may have running at once.")
    max_scan_timeout: ScanTimeouts | None = Field(
        default=None, description="Largest scan timeout per role (never above CLOUDX_SCAN_MAX_TIMEOUT)."
    )

    model_config = {"json_schema_extra": {"minProperties": 1}}  # type: ignore[typeddict-unknown-key]

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        """A field given is a change: null is refused, naming the field (it never means "unset" or "no limit")."""
        if isinstance(data, dict):
            for name, value in data.items():
                if value is None and name in cls.messages:
                    raise ValidationError(cls.messages[name], field=name)
            limits = data.get("max_scan_timeout")
            if isinstance(limits, dict) and (not set(limits) <= set(SCANNING_ROLES) or None in limits.values()):
                raise ValidationError(cls.messages["max_scan_timeout"], field="max_scan_timeout")
        return data

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.changes():
            raise ValidationError(f"give at least one of: {', '.join(type(self).model_fields)}", field="body")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields given (not null), as the policy stores them."""
        values = {name: getattr(self, name) for name in self.model_fields_set if getattr(self, name) is not None}
        if "max_scan_timeout" in values:
            values["max_scan_timeout"] = self.max_scan_timeout.model_dump(exclude_none=True)  # type: ignore[union-attr]
        return values


class CredentialRequest(Request):
    """POST /api/credentials (and `cloudx credential add`)."""

    messages = {
        "name": f"name must match {CREDENTIAL_NAME.pattern}",
        "kind": f"kind must be one of: {', '.join(CREDENTIAL_KINDS)}",
        "username": "username may hold letters, digits, _ . - and \\ (1-64 characters)",
        "secret": "secret must be a non-empty string of at most 16384 characters",
        "scope": "scope must be a list of at most 1000 CIDR networks, addresses or hostnames",
        "ports": "ports must be a list of 1 to 64 port numbers (1-65535)",
    }

    name: CredentialName
    kind: Kind
    username: Username | None = None
    secret: Secret = Field(description="A password, or (kind ssh_key) a private key in PEM/OpenSSH format.")
    scope: Scope | None = Field(default=None, description="Only for hosts inside these networks and names; null: anywhere.")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None, min_length=1, max_length=64, description="Only on these ports; null: 22 for SSH, 5986 for WinRM."
    )

    model_config = {  # type: ignore[typeddict-unknown-key]
        "json_schema_extra": {
            "if": {"properties": {"kind": {"const": "ssh_key"}}},
            "then": {"properties": {"secret": {"format": "cloudx-private-key"}}},
        }
    }

    @model_validator(mode="after")
    def _key(self) -> Self:
        if self.kind == "ssh_key":
            try:
                self.secret = private_key(self.secret, "secret")
            except FieldError as exc:
                raise ValidationError(exc.message, field=exc.field) from None
        if self.ports is not None:
            self.ports = sorted(set(self.ports))
        return self


class AuditQuery(Query):
    messages = {"before": "before must be an audit entry id"}

    limit: PageSize = Field(default=50, description=f"Page size, 1 to {MAX_PAGE}.")
    before: QueryInt | None = Field(default=None, description="Entries with a smaller id (next_before).")


class Token(Response):
    id: str
    name: str
    role: Role
    scope: list[str] | None
    allow_large_targets: bool
    created_by: str
    created_at: Timestamp
    last_used_at: MaybeTimestamp
    revoked_at: MaybeTimestamp
    expires_at: MaybeTimestamp
    max_queued: int | None
    max_running: int | None


class Tokens(Response):
    tokens: list[Token]


class NewToken(Token):
    token: str = Field(pattern=TOKEN_FORMAT.pattern, description="The bearer token; shown once.")


class RevokedToken(Token):
    stopped_jobs: list[str] = Field(description="Its queued (canceled) and running (stopped) jobs.")


class Policy(Response):
    scope: list[str]
    max_prefix_v4: int = Field(ge=0, le=32)
    max_prefix_v6: int = Field(ge=0, le=128)
    windows_deployments: bool
    token_max_queued: int = Field(ge=0)
    token_max_running: int = Field(ge=0)
    max_scan_timeout: dict[str, Annotated[int, Field(ge=1)]]
    updated_by: str | None
    updated_at: MaybeTimestamp

    @field_validator("max_scan_timeout", mode="before")
    @classmethod
    def _default(cls, value: Any) -> Any:
        # None: never set (a policy from before per-role limits existed): the default applies, not "no limit".
        return dict(DEFAULT_MAX_SCAN_TIMEOUT) if value is None else dict(value)


class Credential(Response):
    name: str
    kind: Kind
    username: str | None
    scope: list[str] | None
    ports: list[int] | None
    created_by: str
    created_at: Timestamp


class Credentials(Response):
    credentials: list[Credential]


class NameDeleted(Response):
    name: str
    deleted: Literal[True]


class AuditEntry(Response):
    id: int
    at: Timestamp
    request_id: str | None
    client_request_id: str | None
    count: int = Field(ge=1, description="Requests this entry stands for (unauthenticated denials are aggregated).")
    actor: str
    role: Role | None
    remote_addr: str | None
    method: str
    path: str
    action: str | None
    status: int
    outcome: Literal["ok", "denied", "refused", "error"]
    job_id: str | None
    detail: str | None


class AuditPage(Response):
    entries: list[AuditEntry]
    next_before: int | None
