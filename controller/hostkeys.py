"""SSH host keys: which keys the controller trusts, who established them, and each deploy job's known_hosts.

Trust is decided before any login, never by the request that logs in:
- an admin adds keys (PUT /api/host-keys, `cloudx host-key add`): source "admin";
- CLOUDX_KNOWN_HOSTS_FILE lists keys the machine's owner trusts;
- a deploy job records the keys it used ("pinned") only after its own successful connection to that host,
  with the stored credential it logged in with (that credential may not rely on the pin).
Keys given with a request, or scanned on first contact (CLOUDX_HOST_KEY_POLICY=pin-on-first-use), go to
that job's known_hosts only. A job that logs in with a stored credential gets none of them: only keys
established before, independently of it (see `untrusted_for_credential`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db import Database
from controller.errors import ApiError, ValidationError
from controller.models import HostKey, JobEvent

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
KEY_LINE = re.compile(
    r"^(?:\[[A-Za-z0-9.:-]+\]:\d+|[A-Za-z0-9.:-]+) (ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/=]+$"
)
ADMIN, PINNED = "admin", "pinned"
# ssh-keyscan reads every host of a port group in parallel; the whole set-up waits at most this long.
KEYSCAN_TIMEOUT = 5
KEYSCAN_BOUND = 20
# Tasks that run on the controller, not over the host's connection: a host whose only events are these
# was never connected to.
CONTROLLER_SIDE_ACTIONS = {
    "group_by",
    "set_fact",
    "include_role",
    "include_tasks",
    "import_role",
    "import_tasks",
    "assert",
    "debug",
    "fail",
    "meta",
    "add_host",
    "set_stats",
    "include_vars",
    "validate_argument_spec",
}


class Target(NamedTuple):
    """One host a deploy job logs in to over SSH: its inventory name and where it connects."""

    name: str
    address: str
    port: int


def known_name(address: str, port: int) -> str:
    """The host's name in a known_hosts file (and in the host_keys table)."""
    return address if port == 22 else f"[{address}]:{port}"


def parse_lines(value: Any, field: str = "known_hosts") -> list[str]:
    """known_hosts text or lines as 'host keytype base64key' lines (comments and blank lines dropped)."""
    if value is None:
        return []
    lines = value.splitlines() if isinstance(value, str) else value
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ValidationError(f"{field} must be a string or a list of 'host keytype key' lines", field=field)
    kept = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for line in kept:
        if not KEY_LINE.fullmatch(line):
            raise ValidationError(f"{field} line is not 'host keytype base64key': {line[:80]!r}", field=field)
    return kept


def _split(line: str) -> tuple[str, str, str]:
    host, key_type, key = line.split(" ", 2)
    return host, key_type, key


# --- what an admin says ---------------------------------------------------------


def add_admin_keys(session: Session, value: Any, added_by: str) -> list[HostKey]:
    """Trust these keys for their hosts; an admin's key replaces a key of the same type (a rebuilt host)."""
    lines = parse_lines(value)
    if not lines:
        raise ValidationError("give known_hosts: one or more 'host keytype base64key' lines", field="known_hosts")
    keys = []
    for line in lines:
        host, key_type, key = _split(line)
        existing = session.scalar(select(HostKey).where(HostKey.host == host, HostKey.key_type == key_type))
        if existing is None:
            existing = HostKey(host=host, key_type=key_type)
            session.add(existing)
        existing.public_key, existing.source, existing.added_by = key, ADMIN, added_by
        existing.job_id, existing.credential = None, None
        keys.append(existing)
    session.flush()
    return keys


def list_keys(session: Session) -> list[HostKey]:
    return list(session.scalars(select(HostKey).order_by(HostKey.host, HostKey.key_type)))


def forget_host(session: Session, host: str) -> int:
    keys = list(session.scalars(select(HostKey).where(HostKey.host == host)))
    for key in keys:
        session.delete(key)
    return len(keys)


# --- the machine's own file ----------------------------------------------------------


def file_lines(path: str) -> list[str]:
    if not path or not Path(path).is_file():
        return []
    return [line for line in Path(path).read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _file_names(line: str) -> Callable[[str], bool]:
    """Whether a known_hosts line (plain names, comma-separated, or a hashed |1|salt|hash entry) names a host."""
    field = line.split()[0] if line.split() else ""
    if field.startswith("@"):  # @cert-authority / @revoked lines: not a plain trust of a host key
        return lambda name: False
    if field.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(part) for part in field[3:].split("|", 1))
        except ValueError:
            return lambda name: False
        return lambda name: hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    names = set(field.split(","))
    return lambda name: name in names


def names_in_file(path: str, names: Iterable[str]) -> set[str]:
    matchers = [_file_names(line) for line in file_lines(path)]
    return {name for name in names if any(match(name) for match in matchers)}


# --- trust for stored credentials ---------------------------------------------------


def untrusted_for_credential(session: Session, known_hosts_file: str, credential: str, names: Iterable[str]) -> list[str]:
    """The hosts (known_hosts names) whose identity was not established independently of `credential`."""
    wanted = sorted(set(names))
    trusted = names_in_file(known_hosts_file, wanted)
    for key in session.scalars(select(HostKey).where(HostKey.host.in_(wanted))):
        if key.source == ADMIN or (key.source == PINNED and key.credential != credential):
            trusted.add(key.host)
    return [name for name in wanted if name not in trusted]


def refuse_untrusted(session: Session, known_hosts_file: str, credential: str, targets: Iterable[Target]) -> None:
    """Forbidden (naming the hosts) unless every SSH target's key was established before, without this credential."""
    names = {known_name(t.address, t.port): t for t in targets}
    missing = untrusted_for_credential(session, known_hosts_file, credential, names)
    if missing:
        raise ApiError(
            f"stored credential {credential!r} is only used on hosts whose SSH host key was established before: "
            f"no such key for {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. An admin adds it "
            "(PUT /api/host-keys or `cloudx host-key add`), or a successful deployment without this credential pins it",
            field="credential",
            status=403,
        )


# --- a job's known_hosts ---------------------------------------------------------------


def scan_keys(
    targets: list[tuple[str, int]], should_stop: Callable[[], bool], bound: float = KEYSCAN_BOUND
) -> dict[str, list[tuple[str, str]]]:
    """The keys ssh-keyscan reads from each (address, port): one ssh-keyscan per port, hosts in parallel,
    the whole within `bound` seconds, stopped early when should_stop() says so. Hosts that send no key
    within KEYSCAN_TIMEOUT are missing from the result (their connection then fails as unreachable)."""
    by_port: dict[int, list[str]] = {}
    for address, port in targets:
        by_port.setdefault(port, []).append(address)
    procs = []
    for port, addresses in by_port.items():
        argv = ["ssh-keyscan", "-T", str(KEYSCAN_TIMEOUT), "-p", str(port), "-t", "ed25519,ecdsa,rsa", "-f", "-"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append((port, proc, "\n".join(addresses) + "\n"))
    found: dict[str, list[tuple[str, str]]] = {}
    deadline = time.monotonic() + bound
    for port, proc, hosts in procs:
        out, given = "", hosts
        while time.monotonic() < deadline and not should_stop():
            try:
                out = proc.communicate(given, timeout=min(0.25, max(0.01, deadline - time.monotonic())))[0] or ""
                break
            except subprocess.TimeoutExpired:
                given = None  # sent once; retrying communicate() loses no output
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and not line.startswith("#") and parts[1] in KEY_TYPES:
                name = known_name(parts[0].split("]:")[0].lstrip("["), port)
                found.setdefault(name, []).append((parts[1], parts[2]))
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return found


class JobKeys(NamedTuple):
    known_hosts: Path
    # Keys first used by this job, per inventory host: recorded as pins if the job connects to that host.
    pending: dict[str, list[tuple[str, str, str]]]


def write_job_known_hosts(
    db: Database,
    config: Any,
    settings: dict[str, Any],
    targets: list[Target],
    directory: Path,
    should_stop: Callable[[], bool] = lambda: False,
) -> JobKeys:
    """The job's known_hosts file.

    With a stored credential: only keys established before (admin, the machine's file, pins of other logins).
    Otherwise also the request's own keys and, with pin-on-first-use, keys scanned now for hosts with none.
    """
    credential = settings.get("credential")
    names = {known_name(t.address, t.port): t for t in targets}
    provided: dict[str, list[tuple[str, str]]] = {}
    for line in settings.get("known_hosts", []):
        host, key_type, key = _split(line)
        provided.setdefault(host, []).append((key_type, key))
    lines = file_lines(config.KNOWN_HOSTS_FILE)
    in_file = names_in_file(config.KNOWN_HOSTS_FILE, names)
    stored: dict[str, dict[str, str]] = {}
    with db.session() as session:
        for key in session.scalars(select(HostKey).where(HostKey.host.in_(list(names) + list(provided)))):
            if credential is None or key.source == ADMIN or (key.source == PINNED and key.credential != credential):
                stored.setdefault(key.host, {})[key.key_type] = key.public_key
    for host, keys in provided.items():
        for key_type, key in keys:
            if stored.get(host, {}).get(key_type, key) != key:
                raise ValidationError(
                    f"the {key_type} key given for {host} differs from the trusted one; an admin removes it first "
                    f"(DELETE /api/host-keys/{host})",
                    field="known_hosts",
                )
    pending: dict[str, list[tuple[str, str, str]]] = {}
    if credential is None:
        unknown = [(t.address, t.port) for n, t in names.items() if n not in stored and n not in provided and n not in in_file]
        scanned = scan_keys(unknown, should_stop) if unknown and config.HOST_KEY_POLICY == "pin-on-first-use" else {}
        for name, target in names.items():
            fresh = [(name, kt, k) for kt, k in provided.get(name, []) + scanned.get(name, []) if kt not in stored.get(name, {})]
            if fresh:
                pending[target.name] = fresh
                lines += [" ".join(entry) for entry in fresh]
    for host, keys in sorted(stored.items()):
        lines += [f"{host} {key_type} {key}" for key_type, key in sorted(keys.items())]
    path = directory / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return JobKeys(path, pending)


def connected_hosts(session: Session, job_id: str) -> set[str]:
    """Inventory hosts a job really reached over their connection: a task ran there (ok or failed), not
    only on the controller (group_by, set_fact, ...), and the host was never unreachable."""
    reached, unreachable = set(), set()
    rows = session.execute(
        select(JobEvent.host, JobEvent.event, JobEvent.event_data).where(
            JobEvent.job_id == job_id, JobEvent.event.in_(("runner_on_ok", "runner_on_failed", "runner_on_unreachable"))
        )
    )
    for host, event, data in rows:
        if event == "runner_on_unreachable":
            unreachable.add(host)
            continue
        action = str((data or {}).get("task_action", "")).rsplit(".", 1)[-1]
        res = (data or {}).get("res") or {}
        if action not in CONTROLLER_SIDE_ACTIONS and not (isinstance(res, dict) and res.get("_ansible_delegated_vars")):
            reached.add(host)
    return reached - unreachable


def record_pins(db: Database, job_id: str, pending: dict[str, list[tuple[str, str, str]]], credential: str | None) -> list[str]:
    """After the job: pin the keys it used on the hosts it reached (never replacing a trusted key)."""
    if not pending:
        return []
    pinned = []
    with db.session() as session:
        reached = connected_hosts(session, job_id)
        for host in sorted(reached & set(pending)):
            for name, key_type, key in pending[host]:
                if session.scalar(select(HostKey.id).where(HostKey.host == name, HostKey.key_type == key_type)) is None:
                    session.add(HostKey(host=name, key_type=key_type, public_key=key, source=PINNED, job_id=job_id, credential=credential))
                    pinned.append(name)
    return sorted(set(pinned))
