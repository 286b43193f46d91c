"""Constants and value types of the API, each defined once.

The address and port rules are the scanner role's (controller.scanlib: the role must work without the
controller); the types here call them and never re-derive them. In the OpenAPI document such values carry a
`format` of their own (cloudx-target, cloudx-host, cloudx-ports) that names the rule instead of copying it.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, GetJsonSchemaHandler, PlainSerializer, ValidationInfo, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue

from controller.scanlib import ScanInputError, scanner
from controller.store.jsontext import iso

MAX_PAGE = 500
MAX_ID = 10**18 - 1  # query integers: at most 18 ASCII digits
MAX_SECRET = 16 * 1024
MAX_HOSTS = 1000
MAX_SCOPE_ENTRIES = 1000
MAX_QUOTA = 10000
MAX_TOKEN_LIFETIME_DAYS = 3650
OS_TYPES = ("linux", "windows", "mac")
CREDENTIAL_KINDS = ("ssh_key", "password")
DEPLOY_STATES = ("present", "absent")
# The store's ACTIVE_STATUSES + FINAL_STATUSES (tests/test_schemas.py compares them: the store is below this layer).
JOB_STATUSES = ("queued", "running", "successful", "failed", "canceled", "timeout", "error")
SCAN_TOOLS = tuple(scanner.SCAN_TYPES)
SCANNING_ROLES = ("operator", "admin")
DEFAULT_MAX_SCAN_TIMEOUT = {"operator": 7200}

USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,63}$")
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOKEN_FORMAT = re.compile(r"^cx_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
EXPIRES_IN = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
ANSIBLE_PATTERN = re.compile(r"^[A-Za-z0-9_.:*!&,\[\]][A-Za-z0-9_.:*!&,\[\]-]{0,254}$")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
KEY_LINE = re.compile(
    r"^(?:\[[A-Za-z0-9.:-]{1,245}\]:\d{1,5}|[A-Za-z0-9.:-]{1,253}) (ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/=]+$"
)
QUERY_DIGITS = re.compile(r"[0-9]{1,18}")


class FieldError(ValueError):
    """A refused value; `field` names it (as ScanInputError does)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- the scanner role's rules ------------------------------------------------------------------------------


def host(value: str, field: str) -> str:
    """One host (an address or a hostname, canonical), not a network."""
    try:
        canonical = scanner.validate_target(value)
    except ScanInputError as exc:
        raise FieldError(field, exc.message.replace("target", field, 1)) from None
    if "/" in canonical:
        raise FieldError(field, f"{field} must be one host, not a network")
    return canonical


def is_name(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return True
    return False


def scope_entries(value: list[str], field: str = "scope") -> list[str]:
    """Scope entries as canonical CIDRs and lowercase hostnames, without repeats."""
    entries: list[str] = []
    for item in value:
        try:
            entry = scanner.validate_target(item)
        except ScanInputError as exc:
            raise FieldError(field, exc.message.replace("target", "scope entry", 1)) from None
        if not is_name(entry):
            entry = ipaddress.ip_network(entry, strict=False).with_prefixlen
        if entry not in entries:
            entries.append(entry)
    return entries


def known_hosts_lines(value: str | list[str] | None, field: str = "known_hosts") -> list[str]:
    """known_hosts text or lines as 'host keytype base64key' lines (comments and blank lines dropped)."""
    if value is None:
        return []
    lines = value.splitlines() if isinstance(value, str) else value
    kept = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for line in kept:
        if not KEY_LINE.fullmatch(line):
            raise FieldError(field, f"{field} line is not 'host keytype base64key': {line[:80]!r}")
    return kept


def _host(value: str, info: ValidationInfo) -> str:
    return host(value, info.field_name or "target")


def _scope(value: list[str], info: ValidationInfo) -> list[str]:
    return scope_entries(value, info.field_name or "scope")


class Documented:
    """JSON Schema keywords for what a validator, not a pydantic constraint, enforces (a pattern checked with its
    own message, bounds on a query integer read from text): the document states the rule the validator applies."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema


def matching(regex: re.Pattern[str], message: str) -> Any:
    """A string that fully matches `regex` (the document's `pattern`), refused with `message` ({field}, {pattern})."""

    def check(value: str, info: ValidationInfo) -> str:
        if not regex.fullmatch(value):
            raise FieldError(info.field_name or "body", message.format(field=info.field_name, pattern=regex.pattern))
        return value

    return Annotated[str, AfterValidator(check), Documented(pattern=regex.pattern)]


def _cidr(value: str, info: ValidationInfo) -> str:
    try:
        return ipaddress.ip_network(value, strict=False).with_prefixlen
    except ValueError:
        field = info.field_name or "network"
        raise FieldError(field, f"{field} must be an address or a CIDR network such as 192.0.2.0/24") from None


def _secret(value: str, info: ValidationInfo) -> str:
    if not value or len(value) > MAX_SECRET or "\x00" in value:
        raise FieldError(info.field_name or "secret", f"{info.field_name} must be a non-empty string of at most {MAX_SECRET} characters")
    return value


def private_key(value: str, field: str = "ssh_key") -> str:
    """A key as OpenSSH reads it: from its first line (a form's textarea sends CR LF, and maybe a blank line first)."""
    value = value.replace("\r\n", "\n").lstrip()
    if not value.startswith("-----BEGIN ") or "PRIVATE KEY-----" not in value:
        raise FieldError(field, f"{field} must be a private key in PEM/OpenSSH format")
    return value if value.endswith("\n") else value + "\n"


def _private_key(value: str, info: ValidationInfo) -> str:
    return private_key(value, info.field_name or "ssh_key")


def _known_hosts(value: str | list[str], info: ValidationInfo) -> list[str]:
    return known_hosts_lines(value, info.field_name or "known_hosts")


def _format(name: str, description: str, **keywords: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "format": name, "minLength": 1, "maxLength": 253, "description": description, **keywords})


Target = Annotated[
    str,
    AfterValidator(lambda value: _target(value)),
    _format("cloudx-target", "An IPv4/IPv6 address, a CIDR network or a hostname (the scanner role's validate_target)."),
]
Host = Annotated[str, AfterValidator(_host), _format("cloudx-host", "One host: an IPv4 or IPv6 address or a hostname, not a network.")]
Scope = Annotated[
    list[Annotated[str, _format("cloudx-target", "An address, a CIDR network or a hostname.")]],
    Field(max_length=MAX_SCOPE_ENTRIES),
    AfterValidator(_scope),
]
# A network (an address is a network of one) as a CIDR; not the scanner's rule (any size, no hostname): what the
# stored records are filtered by.
Cidr = Annotated[str, AfterValidator(_cidr), Documented(format="cloudx-cidr", maxLength=64)]
Secret = Annotated[
    str, AfterValidator(_secret), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_SECRET, "pattern": r"^[^\u0000]*$"})
]
PrivateKey = Annotated[
    str,
    AfterValidator(_secret),
    AfterValidator(_private_key),
    WithJsonSchema({"type": "string", "format": "cloudx-private-key", "minLength": 1, "maxLength": MAX_SECRET}),
]
Username = matching(USERNAME, "{field} may hold letters, digits, _ . - and \\ (1-64 characters)")
AgentName = matching(AGENT_NAME, "{field} must match {pattern}")
CredentialName = matching(CREDENTIAL_NAME, "{field} must match {pattern}")
TokenName = matching(TOKEN_NAME, "{field} must match {pattern}")


def _known_hosts_schema(some: bool) -> WithJsonSchema:
    """known_hosts as text (format cloudx-known-hosts, or cloudx-host-keys: at least one key) or as a list of lines
    (each cloudx-known-hosts-line: a key, blank or a comment; with `some`, one at least a cloudx-key-line)."""
    lines: dict[str, Any] = {"type": "array", "items": {"type": "string", "format": "cloudx-known-hosts-line"}}
    if some:
        lines["contains"] = {"type": "string", "format": "cloudx-key-line"}
    text = {"type": "string", "format": "cloudx-host-keys" if some else "cloudx-known-hosts"}
    description = (
        "known_hosts text or lines: 'host keytype base64key' (host or [host]:port; "
        f"{', '.join(KEY_TYPES)}); blank lines and # comments are ignored" + ("; one key at least." if some else ".")
    )
    return WithJsonSchema({"anyOf": [text, lines], "description": description})


def _some_keys(value: list[str], info: ValidationInfo) -> list[str]:
    if not value:
        field = info.field_name or "known_hosts"
        raise FieldError(field, f"give {field}: one or more 'host keytype base64key' lines")
    return value


KnownHosts = Annotated[str | list[str], AfterValidator(_known_hosts), _known_hosts_schema(some=False)]
HostKeyLines = Annotated[str | list[str], AfterValidator(_known_hosts), AfterValidator(_some_keys), _known_hosts_schema(some=True)]


def query_int(low: int, high: int, message: str = "") -> Any:
    """A query integer from `low` to `high`, given as ASCII digits (or an int, from the CLI); refused with
    `message` ({field}; empty: the model's message for the field). Checked here, not with Field(ge=...): pydantic
    does not apply a field's own bounds to a type with a BeforeValidator."""

    def check(value: Any, info: ValidationInfo) -> int:
        if isinstance(value, str) and QUERY_DIGITS.fullmatch(value):
            value = int(value)
        if type(value) is not int or not low <= value <= high:
            raise FieldError(info.field_name or "query", message.format(field=info.field_name))
        return value

    return Annotated[int, BeforeValidator(check), Documented(type="integer", minimum=low, maximum=high)]


QueryInt = query_int(0, MAX_ID)
PageSize = query_int(1, MAX_PAGE, f"{{field}} must be an integer from 1 to {MAX_PAGE}")
Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str), WithJsonSchema({"type": "string", "format": "date-time"})]
MaybeTimestamp = Annotated[
    datetime | None,
    PlainSerializer(iso, return_type=str | None),
    WithJsonSchema({"type": ["string", "null"], "format": "date-time"}),
]


def _target(value: str) -> str:
    try:
        return scanner.validate_target(value)
    except ScanInputError as exc:
        raise FieldError("target", exc.message) from None
