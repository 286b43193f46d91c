"""SSH host keys: which keys the controller trusts, who established them, and each deploy job's known_hosts.

Trust is decided before any login, never by the request that logs in:
- an admin adds keys (PUT /api/host-keys, `cloudx host-key add`): source "admin";
- CLOUDX_KNOWN_HOSTS_FILE lists keys the machine's owner trusts;
- a deploy job records the key a host presented ("pinned") only after its own successful connection to that
  host, for a host that had no trusted key, with who submitted the job.
Keys given with a request, or scanned on first contact (CLOUDX_HOST_KEY_POLICY=pin-on-first-use), go to
that job's known_hosts only. A job that logs in with a stored credential gets none of them: only keys
established before, independently of it: an admin's, the file's, or a pin of an admin's deployment (an
operator's own successful login proves nothing about a host the operator may run; see
`untrusted_for_credential`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.errors import ApiError, ValidationError
from controller.schemas.deployments import DeploySettings, TrustHostKeys
from controller.schemas.types import KEY_TYPES
from controller.store.database import Database
from controller.store.models import ApiToken, HostKey, JobEvent

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
    "pause",
}


class Target(NamedTuple):
    """One host a deploy job logs in to over SSH: its inventory name and where it connects."""

    name: str
    address: str
    port: int


def known_name(address: str, port: int) -> str:
    """The host's name in a known_hosts file (and in the host_keys table)."""
    return address if port == 22 else f"[{address}]:{port}"


def _split(line: str) -> tuple[str, str, str]:
    host, key_type, key = line.split(" ", 2)
    return host, key_type, key


# --- what an admin says ---------------------------------------------------------


def add_admin_keys(session: Session, request: TrustHostKeys | str, added_by: str) -> list[HostKey]:
    """Trust these keys for their hosts; an admin's key replaces a key of the same type (a rebuilt host)."""
    lines = (request if isinstance(request, TrustHostKeys) else TrustHostKeys.parse({"known_hosts": request})).known_hosts
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


def _admins(session: Session, names: set[str]) -> set[str]:
    """Which of these submitters are admins now: the controller's own command line, or admin tokens."""
    tokens = set(session.scalars(select(ApiToken.name).where(ApiToken.name.in_(names), ApiToken.role == "admin")))
    return tokens | {name for name in names if name.startswith("cli:")}


def trusted_for_credential(session: Session, keys: list[HostKey], credential: str | None) -> list[HostKey]:
    """The keys a job logging in with stored credential `credential` may rely on (all keys when it uses none)."""
    if credential is None:
        return keys
    admins = _admins(session, {k.added_by for k in keys if k.source == PINNED and k.added_by})
    return [k for k in keys if k.source == ADMIN or (k.source == PINNED and k.credential != credential and k.added_by in admins)]


def untrusted_for_credential(session: Session, known_hosts_file: str, credential: str, names: Iterable[str]) -> list[str]:
    """The hosts (known_hosts names) whose identity was not established independently of `credential`."""
    wanted = sorted(set(names))
    trusted = names_in_file(known_hosts_file, wanted)
    keys = list(session.scalars(select(HostKey).where(HostKey.host.in_(wanted))))
    trusted |= {key.host for key in trusted_for_credential(session, keys, credential)}
    return [name for name in wanted if name not in trusted]


def refuse_untrusted(session: Session, known_hosts_file: str, credential: str, targets: Iterable[Target]) -> None:
    """Forbidden (naming the hosts) unless every SSH target's key was established before, without this credential."""
    names = {known_name(t.address, t.port): t for t in targets}
    missing = untrusted_for_credential(session, known_hosts_file, credential, names)
    if missing:
        raise ApiError(
            f"stored credential {credential!r} is only used on hosts whose SSH host key was established before: "
            f"no such key for {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. An admin adds it "
            "(PUT /api/host-keys or `cloudx host-key add`), or an admin's successful deployment without this credential pins it",
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
        while True:
            try:
                out = proc.communicate(given, timeout=0.25)[0] or ""
                break
            except subprocess.TimeoutExpired:
                given = None  # sent once; retrying communicate() loses no output
                if time.monotonic() >= deadline or should_stop():
                    proc.kill()  # keep what it read so far: only the hosts still silent are missing
                    out = proc.communicate()[0] or ""
                    break
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and not line.startswith("#") and parts[1] in KEY_TYPES:
                name = known_name(parts[0].split("]:")[0].lstrip("["), port)
                found.setdefault(name, []).append((parts[1], parts[2]))
    return found


class JobKeys(NamedTuple):
    known_hosts: Path
    # Hosts that had no trusted key, with the keys first used by this job: recorded as pins, for the key the
    # host presents, if the job connects to it.
    pending: dict[str, list[tuple[str, str, str]]]


def write_job_known_hosts(
    db: Database,
    config: Any,
    settings: DeploySettings,
    targets: list[Target],
    directory: Path,
    should_stop: Callable[[], bool] = lambda: False,
) -> JobKeys:
    """The job's known_hosts file.

    With a stored credential: only keys established before (admin, the machine's file, pins of admins' logins).
    Otherwise also, for hosts with no trusted key at all, the request's own keys and, with pin-on-first-use,
    keys scanned now (a host that has a trusted key gets no other: no key can be planted beside it).
    """
    credential = settings.credential
    names = {known_name(t.address, t.port): t for t in targets}
    provided: dict[str, list[tuple[str, str]]] = {}
    for line in settings.known_hosts:
        host, key_type, key = _split(line)
        provided.setdefault(host, []).append((key_type, key))
    lines = file_lines(config.KNOWN_HOSTS_FILE)
    in_file = names_in_file(config.KNOWN_HOSTS_FILE, names)
    stored: dict[str, dict[str, str]] = {}
    with db.session() as session:
        keys = list(session.scalars(select(HostKey).where(HostKey.host.in_(list(names) + list(provided)))))
        for key in keys:
            # A different key of a trusted type: refused, whatever this job may rely on.
            for key_type, given in provided.get(key.host, []):
                if key_type == key.key_type and given != key.public_key:
                    raise ValidationError(
                        f"the {key_type} key given for {key.host} differs from the trusted one; an admin removes it first "
                        f"(DELETE /api/host-keys/{key.host})",
                        field="known_hosts",
                    )
        for key in trusted_for_credential(session, keys, credential):
            stored.setdefault(key.host, {})[key.key_type] = key.public_key
    known = {k.host for k in keys} | in_file
    pending: dict[str, list[tuple[str, str, str]]] = {}
    if credential is None:
        fresh_hosts = [n for n in names if n not in known]
        unknown = [(names[n].address, names[n].port) for n in fresh_hosts if n not in provided]
        scanned = scan_keys(unknown, should_stop) if unknown and config.HOST_KEY_POLICY == "pin-on-first-use" else {}
        for name in fresh_hosts:
            fresh = [(name, kt, k) for kt, k in provided.get(name, []) + scanned.get(name, [])]
            if fresh:
                pending[names[name].name] = fresh
                lines += [" ".join(entry) for entry in fresh]
    for host, host_keys in sorted(stored.items()):
        lines += [f"{host} {key_type} {key}" for key_type, key in sorted(host_keys.items())]
    path = directory / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return JobKeys(path, pending)


def connected_hosts(session: Session, job_id: str) -> set[str]:
    """Inventory hosts a job really reached over their connection: a task ran there and succeeded (not only
    on the controller: group_by, set_fact, ...), and the host was never unreachable."""
    reached, unreachable = set(), set()
    rows = session.execute(
        select(JobEvent.host, JobEvent.event, JobEvent.event_data).where(
            JobEvent.job_id == job_id, JobEvent.event.in_(("runner_on_ok", "runner_on_unreachable"))
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


def _address_port(name: str) -> tuple[str, int]:
    if name.startswith("["):
        address, _, port = name[1:].partition("]:")
        return address, int(port)
    return name, 22


def record_pins(
    db: Database, job_id: str, pending: dict[str, list[tuple[str, str, str]]], submitted_by: str | None, credential: str | None = None
) -> list[str]:
    """After the job: pin, on the hosts it reached, the keys it first used that the host presents now (a key
    given with the request that the host does not hold is never pinned). Never replaces a trusted key."""
    if not pending:
        return []
    with db.session() as session:
        reached = connected_hosts(session, job_id) & set(pending)
    candidates = {name for host in reached for name, _, _ in pending[host]}
    presented = scan_keys([_address_port(name) for name in sorted(candidates)], lambda: False) if candidates else {}
    pinned = []
    with db.session() as session:
        for host in sorted(reached):
            for name, key_type, key in pending[host]:
                if (key_type, key) not in presented.get(name, []):
                    continue
                if session.scalar(select(HostKey.id).where(HostKey.host == name)) is not None and name not in pinned:
                    continue  # trusted meanwhile (an admin, another job): that stands
                pin = HostKey(host=name, key_type=key_type, public_key=key, source=PINNED, job_id=job_id, credential=credential)
                pin.added_by = submitted_by
                session.add(pin)
                session.flush()
                pinned.append(name)
    return sorted(set(pinned))
