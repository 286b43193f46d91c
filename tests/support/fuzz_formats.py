"""The API's `cloudx-*` string formats for the fuzzer: what each one accepts, and values it accepts.

Each format names a rule of the scanner role (plugins/module_utils/cloudx_scanner.py, through controller.scanlib)
or of controller.schemas.types, so the check of a format *is* that rule, called as the API calls it. The strategies
build values from a few known-good shapes and keep only those the rule accepts: data schemathesis draws as valid
is valid by the validator itself, not by a second copy of it.

`validator_for` checks a value against the served OpenAPI document with these formats checked for real (JSON
Schema alone cannot): the tests use it to tell a request that is really valid (or really invalid) from one the
generator only labelled so.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import schemathesis
from hypothesis import strategies as st

from controller.scanlib import ScanInputError, scanner
from controller.schemas.admin import parse_expires_in
from controller.schemas.assets import since
from controller.schemas.schedules import cron_expression, time_zone, time_zones
from controller.schemas.types import KEY_TYPES, FieldError, host, known_hosts_lines, private_key


def _accepts(rule: Callable[[str], object]) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if not isinstance(value, str):
            return True  # JSON Schema formats constrain strings only
        try:
            rule(value)
        except (ScanInputError, FieldError):
            return False
        return True

    return check


def _one_port(value: str) -> None:
    ports = scanner.parse_ports(value)
    if ports is None or not ports.isdigit():
        raise ScanInputError("ports", "not one port")


def _some_ports(value: str) -> None:
    if scanner.parse_ports(value) is None:
        raise ScanInputError("ports", "no ports")


def _some_keys(lines: list[str]) -> None:
    if not lines:
        raise FieldError("known_hosts", "no key")


def _ip_rule(parse: Callable[[str], object]) -> Callable[[str], None]:
    """A rule that raises ValueError (ipaddress, datetime) as the API's refusal."""

    def check(value: str) -> None:
        try:
            parse(value)
        except (ValueError, OverflowError):
            raise FieldError("value", "refused") from None

    return check


# format -> the rule the API applies to such a value
CHECKS: dict[str, Callable[[object], bool]] = {
    "cloudx-target": _accepts(scanner.validate_target),
    "cloudx-host": _accepts(lambda value: host(value, "target")),
    "cloudx-target-ipv4": _accepts(lambda value: scanner.validate_request("zmap", "icmp_echo", value, None)),
    "cloudx-network": _accepts(lambda value: scanner.validate_request("masscan", "ping_scan", value, None)),
    "cloudx-port": _accepts(_one_port),
    "cloudx-ports": _accepts(_some_ports),
    "cloudx-port-range": _accepts(lambda value: scanner.parse_ports([value])),
    "cloudx-private-key": _accepts(private_key),
    "cloudx-known-hosts": _accepts(known_hosts_lines),
    "cloudx-host-keys": _accepts(lambda value: _some_keys(known_hosts_lines(value))),
    "cloudx-known-hosts-line": _accepts(lambda value: known_hosts_lines([value])),
    "cloudx-key-line": _accepts(lambda value: _some_keys(known_hosts_lines([value]))),
    "cloudx-lifetime": _accepts(parse_expires_in),
    "cloudx-address": _accepts(_ip_rule(ipaddress.ip_address)),
    "cloudx-cidr": _accepts(_ip_rule(lambda value: ipaddress.ip_network(value, strict=False))),
    "cloudx-since": _accepts(_ip_rule(since)),
    # The fuzzed service runs with the default CLOUDX_SCHEDULE_MIN_INTERVAL (60 s).
    "cloudx-cron": _accepts(cron_expression),
    "cloudx-timezone": _accepts(time_zone),
}

# --- known-good shapes ----------------------------------------------------------------------------------------

_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: a.compressed)
_ipv4_net = st.tuples(st.ip_addresses(v=4), st.integers(16, 32)).map(lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)))
_ipv6_net = st.tuples(st.ip_addresses(v=6), st.integers(64, 128)).map(lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)))
_label = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?\Z")
_tld = st.from_regex(r"\A[a-z][a-z0-9]{1,5}\Z")
_hostname = st.builds(
    lambda labels, tld, upper, dot: (".".join([*labels, tld]).upper() if upper else ".".join([*labels, tld])) + ("." if dot else ""),
    st.lists(_label, max_size=3),
    _tld,
    st.booleans(),
    st.booleans(),
)
_addresses = st.one_of(_ipv4, _ipv6)
_networks = st.one_of(_ipv4_net, _ipv6_net)


def _port_part() -> st.SearchStrategy[str]:
    single = st.integers(1, 65535).map(str)
    span = st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(lambda t: f"{min(t)}-{max(t)}")
    return st.one_of(single, span)


def _pem(kind: str, body: bytes, newline: bool) -> str:
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)] or ["AAAA"]
    return f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines) + f"\n-----END {kind}PRIVATE KEY-----" + ("\n" if newline else "")


_key_line_host = st.one_of(
    _ipv4,
    _ipv6,
    _hostname.map(lambda name: name.rstrip(".")),
    st.tuples(st.one_of(_ipv4, _ipv6, _hostname.map(lambda n: n.rstrip("."))), st.integers(1, 65535)).map(lambda t: f"[{t[0]}]:{t[1]}"),
)
_key_line = st.builds(
    lambda name, kind, key: f"{name} {kind} {base64.b64encode(key).decode()}",
    _key_line_host,
    st.sampled_from(KEY_TYPES),
    st.binary(min_size=16, max_size=64),
)
_comment = st.sampled_from(["# trusted by the fuzzer", "", "   ", "#"])

SHAPES: dict[str, st.SearchStrategy[str]] = {
    "cloudx-target": st.one_of(_addresses, _networks, _hostname),
    "cloudx-host": st.one_of(_addresses, _hostname),
    "cloudx-target-ipv4": st.one_of(_ipv4, _ipv4_net, _hostname),
    "cloudx-network": st.one_of(_addresses, _networks),
    "cloudx-port": st.integers(1, 65535).map(str),
    "cloudx-ports": st.lists(_port_part(), min_size=1, max_size=8).map(",".join),
    "cloudx-port-range": _port_part(),
    "cloudx-private-key": st.builds(
        _pem, st.sampled_from(["", "OPENSSH ", "RSA ", "EC "]), st.binary(min_size=1, max_size=300), st.booleans()
    ),
    "cloudx-known-hosts": st.lists(st.one_of(_key_line, _key_line, _comment), min_size=1, max_size=4).map("\n".join),
    "cloudx-host-keys": st.lists(st.one_of(_key_line, _key_line, _comment), min_size=1, max_size=4).map("\n".join),
    "cloudx-known-hosts-line": st.one_of(_key_line, _key_line, _comment),
    "cloudx-key-line": _key_line,
    "cloudx-address": _addresses,
    "cloudx-cidr": st.one_of(_addresses, _networks),
    "cloudx-since": st.one_of(
        st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 999999), st.sampled_from("smhd")),
        st.datetimes().map(lambda moment: moment.isoformat()),
    ),
    "cloudx-lifetime": st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 999999), st.sampled_from("smhd")),
    "cloudx-cron": st.one_of(
        st.sampled_from(["@daily", "@hourly", "@weekly", "0 3 * * 1-5", "*/15 * * * *", "0 0 29 2 *", "30 2 * mar-oct sun"]),
        st.builds(lambda m, h, dow: f"{m} {h} * * {dow}", st.integers(0, 59), st.integers(0, 23), st.sampled_from(["*", "1-5", "0", "6"])),
    ),
    "cloudx-timezone": st.sampled_from(sorted(time_zones())),
}
assert SHAPES.keys() == CHECKS.keys()


def strategy(name: str) -> st.SearchStrategy[str]:
    """Values of format `name` that the API's own rule accepts."""
    return SHAPES[name].filter(CHECKS[name])


def register() -> None:
    """Let schemathesis draw every cloudx-* format from these strategies."""
    for name in CHECKS:
        schemathesis.openapi.format(name, strategy(name))


def validator_for(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A JSON Schema 2020-12 validator of `schema` (references into `document`) with the cloudx-* formats checked."""
    root = {**schema, "components": document.get("components", {})}
    return jsonschema_rs.Draft202012Validator(root, formats=CHECKS, validate_formats=True)
