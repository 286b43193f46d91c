#!/usr/bin/env python3
"""Wazuh active response: quarantine the file named in an alert, with strict safety checks.

Standalone script (Python 3.8+, standard library only) for ``/var/ossec/active-response/bin``.

Input
    One JSON message (active-response protocol version 1) on one line of stdin::

        {"version": 1, "origin": {"name": "", "module": "wazuh-execd"}, "command": "add" | "delete",
         "parameters": {"extra_args": [], "alert": {...}, "program": "remove-threat.py"}}

    At most ``max_input_bytes`` bytes (default 65536, not counting the terminating newline) are read;
    a larger message is refused. ``delete`` is a no-op (logged).

    For ``add`` the script follows Wazuh's stateful handshake: it writes one line
    ``{"version":1,"origin":{"name":"remove-threat.py","module":"active-response"},"command":"check_keys",
    "parameters":{"keys":["<file path>"]}}`` to stdout and reads one line from stdin whose ``command`` is
    ``continue`` (go on) or ``abort`` (stop, exit 0). ``--no-handshake`` skips this for manual runs.

File path, first found wins
    ``data.virustotal.source.file`` (VirusTotal integration), ``syscheck.path`` (FIM), ``data.file``.

Safety rules (each one refuses with a logged reason and changes nothing)
    * at least one safe directory must be configured (fail closed);
    * the path must be absolute and must not contain a ``..`` component;
    * ``lstat`` must show a regular file (symlinks, directories, devices, FIFOs and sockets are refused);
    * its real path (``os.path.realpath``) must lie inside one of the safe directories (themselves resolved),
      by path components (``os.path.commonpath``), not by string prefix;
    * files inside the quarantine directory are refused;
    * the file's own directory must not be world-writable unless it has the sticky bit (in such a directory
      anyone can replace the entry; only the file's own directory is checked, not its ancestors);
    * the (st_dev, st_ino) identity seen by the first ``lstat`` must be the one of the file found in the
      pinned parent directory, of the descriptor opened with O_RDONLY|O_NOFOLLOW|O_NOCTTY (``fstat``), and of
      the path again right before the move (and before the unlink when copying across file systems);
    * the quarantine directory must be a real directory (not a symlink) owned by the running user with no
      group or other permissions; a missing one is created with mode 0700.

Action
    The SHA-256 is computed from the open descriptor. Processes whose executable (``/proc/<pid>/exe``) is
    that very file (same st_dev and st_ino, so also when it shows as " (deleted)") get SIGKILL, never this
    script's own process. The file is then renamed into the quarantine directory under a random name
    (``secrets.token_hex(16)``), or, if it lives on another file system, copied from the open descriptor to a
    new file (O_CREAT|O_EXCL, fsync) and the original unlinked after its identity is checked again. The
    quarantined file gets mode 0600 and a ``<name>.json`` metadata file (0600) is written next to it.

Options (command line values take precedence over the config file; ``--safe-dir`` adds to ``safe_dirs``)
    --safe-dir DIR          directory files may be quarantined from (repeatable)
    --config PATH           JSON config (default /var/ossec/etc/cloudx-remove-threat.json; optional when
                            not given explicitly); keys: safe_dirs (list), quarantine_dir, log_file,
                            max_input_bytes. The file must be a regular file, owned by root or the running
                            user and not writable by group or others. Unknown keys are an error.
    --quarantine-dir DIR    default /var/ossec/quarantine
    --log-file PATH         default /var/ossec/logs/active-responses.log
    --max-input-bytes N     default 65536
    --proc-root DIR         default /proc (for tests)
    --dry-run               do every check, hash the file and report the pids it would kill; change nothing
                            (no kill, no move, the quarantine directory is not created)
    --no-handshake          do not send check_keys / wait for continue|abort

Log
    One JSON object per line appended to the log file: timestamp, program, action (quarantined, refused,
    dry-run, ignored, error), path, reason, sha256, quarantine_name, pids. The alert itself is never logged.

Exit codes
    0  quarantined, dry run, or ignored (delete, no file in the alert, abort from wazuh-execd)
    1  bad input (oversize, malformed JSON, wrong shape, bad options or config) or unexpected error
    2  refused by a safety rule
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import hashlib
import json
import os
import secrets
import signal
import socket
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, NoReturn

PROGRAM = "remove-threat.py"
DEFAULT_CONFIG = "/var/ossec/etc/cloudx-remove-threat.json"
DEFAULT_QUARANTINE_DIR = "/var/ossec/quarantine"
DEFAULT_LOG_FILE = "/var/ossec/logs/active-responses.log"
DEFAULT_MAX_INPUT_BYTES = 64 * 1024
DEFAULT_PROC_ROOT = "/proc"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 2

CONFIG_KEYS = frozenset({"safe_dirs", "quarantine_dir", "log_file", "max_input_bytes"})
ALERT_PATH_SOURCES = (
    ("data", "virustotal", "source", "file"),
    ("syscheck", "path"),
    ("data", "file"),
)
CHUNK = 1024 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
MAX_LOGGED_PATH = 4096


class BadInput(Exception):
    """Malformed input, options or configuration: exit 1, nothing changed."""


class Refused(Exception):
    """A safety rule refused the action: exit 2, nothing changed."""


@dataclass(frozen=True)
class Settings:
    safe_dirs: tuple[str, ...]
    quarantine_dir: str
    log_file: str
    max_input_bytes: int
    proc_root: str
    dry_run: bool
    handshake: bool


@dataclass
class Outcome:
    action: str
    code: int
    path: str | None = None
    reason: str = ""
    sha256: str | None = None
    quarantine_name: str | None = None
    pids: list[int] | None = None


def _checkpoint(stage: str, path: str) -> None:
    """Test seam, called at "before-open", "before-move" and "before-unlink"; does nothing."""


def _utc_iso(timestamp: float | None = None) -> str:
    utc = datetime.timezone(datetime.timedelta(0))  # not datetime.UTC: that needs Python 3.11, this script supports 3.8
    moment = datetime.datetime.now(utc) if timestamp is None else datetime.datetime.fromtimestamp(timestamp, utc)
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------------------------
# Logging


class ActionLog:
    """Appends one JSON object per line; falls back to stderr when the log file cannot be written."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, outcome: Outcome) -> None:
        path = outcome.path
        if path is not None and len(path) > MAX_LOGGED_PATH:
            path = path[:MAX_LOGGED_PATH] + "...(truncated)"
        record = {
            "timestamp": _utc_iso(),
            "program": PROGRAM,
            "action": outcome.action,
            "path": path,
            "reason": outcome.reason,
            "sha256": outcome.sha256,
            "quarantine_name": outcome.quarantine_name,
            "pids": outcome.pids if outcome.pids is not None else [],
        }
        line = (json.dumps(record, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            sys.stderr.write(f"{PROGRAM}: cannot write log {self.path!r}: {exc}\n")
            sys.stderr.write(line.decode("ascii"))


# ---------------------------------------------------------------------------------------------------------------
# Options and configuration


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit 2, which means "refused" here
        raise BadInput(f"usage error: {message}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(prog=PROGRAM, description="Wazuh active response: quarantine the file named in an alert.")
    parser.add_argument("--safe-dir", action="append", default=[], metavar="DIR", help="directory files may be quarantined from")
    parser.add_argument("--config", default=None, metavar="PATH", help=f"JSON config file (default {DEFAULT_CONFIG}, optional)")
    parser.add_argument("--quarantine-dir", default=None, metavar="DIR", help=f"default {DEFAULT_QUARANTINE_DIR}")
    parser.add_argument("--log-file", default=None, metavar="PATH", help=f"default {DEFAULT_LOG_FILE}")
    parser.add_argument("--max-input-bytes", type=int, default=None, metavar="N", help=f"default {DEFAULT_MAX_INPUT_BYTES}")
    parser.add_argument("--proc-root", default=DEFAULT_PROC_ROOT, metavar="DIR", help="default /proc")
    parser.add_argument("--dry-run", action="store_true", help="check and report only, change nothing")
    parser.add_argument("--no-handshake", action="store_true", help="skip the check_keys handshake with wazuh-execd")
    return parser.parse_args(list(argv) if argv is not None else None)


def load_config(path: str, explicit: bool) -> dict[str, Any]:
    fd = _open_config(path, explicit)
    if fd is None:
        return {}
    try:
        _check_config_file(os.fstat(fd), path)
        raw = _read_config(fd, path)
    finally:
        os.close(fd)
    config = _decode_config(raw, path)
    _check_config_values(config)
    return config


def _open_config(path: str, explicit: bool) -> int | None:
    """A descriptor of the config file; None when the default one is absent."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        if explicit:
            raise BadInput(f"config file {path!r} does not exist") from None
        return None
    except OSError as exc:
        raise BadInput(f"cannot open config file {path!r}: {exc.strerror}") from None


def _check_config_file(st: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"config file {path!r} is not a regular file")
    if st.st_uid not in (0, os.geteuid()):
        raise BadInput(f"config file {path!r} is owned by uid {st.st_uid}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BadInput(f"config file {path!r} is writable by group or others")


def _read_config(fd: int, path: str) -> bytes:
    raw = b""
    while len(raw) <= MAX_CONFIG_BYTES:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_CONFIG_BYTES:
        raise BadInput(f"config file {path!r} is too large")
    return raw


def _decode_config(raw: bytes, path: str) -> dict[str, Any]:
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"config file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise BadInput(f"config file {path!r} must hold a JSON object")
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise BadInput(f"config file {path!r} has unknown keys: {', '.join(unknown)}")
    return config


def _check_config_values(config: dict[str, Any]) -> None:
    safe_dirs = config.get("safe_dirs", [])
    if not isinstance(safe_dirs, list) or not all(isinstance(d, str) for d in safe_dirs):
        raise BadInput("config safe_dirs must be a list of strings")
    for key in ("quarantine_dir", "log_file"):
        if key in config and not (isinstance(config[key], str) and config[key]):
            raise BadInput(f"config {key} must be a non-empty string")
    limit = config.get("max_input_bytes")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise BadInput("config max_input_bytes must be an integer")


def _absolute_dir(value: str, what: str) -> str:
    if not value or "\0" in value or not os.path.isabs(value):
        raise BadInput(f"{what} must be an absolute path: {value!r}")
    return value


def build_settings(args: argparse.Namespace) -> Settings:
    config = load_config(args.config or DEFAULT_CONFIG, explicit=args.config is not None)
    safe_dirs: list[str] = []
    for value in [*config.get("safe_dirs", []), *args.safe_dir]:
        resolved = os.path.realpath(_absolute_dir(value, "safe directory"))
        if resolved == os.path.sep:
            raise BadInput("'/' cannot be a safe directory")
        if resolved not in safe_dirs:
            safe_dirs.append(resolved)
    quarantine_dir = _absolute_dir(args.quarantine_dir or config.get("quarantine_dir") or DEFAULT_QUARANTINE_DIR, "quarantine directory")
    log_file = args.log_file or config.get("log_file") or DEFAULT_LOG_FILE
    limit = args.max_input_bytes if args.max_input_bytes is not None else config.get("max_input_bytes", DEFAULT_MAX_INPUT_BYTES)
    if limit <= 0:
        raise BadInput("max_input_bytes must be positive")
    return Settings(
        safe_dirs=tuple(safe_dirs),
        quarantine_dir=os.path.normpath(quarantine_dir),
        log_file=log_file,
        max_input_bytes=limit,
        proc_root=args.proc_root,
        dry_run=args.dry_run,
        handshake=not args.no_handshake,
    )


# ---------------------------------------------------------------------------------------------------------------
# Input


def read_message(stream: IO[Any], limit: int) -> dict[str, Any]:
    """Read one line of at most ``limit`` bytes (plus its newline) and decode it as a JSON object."""
    data = stream.readline(limit + 1)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if data.endswith(b"\n"):
        data = data[:-1]
    if len(data) > limit:
        raise BadInput(f"input exceeds {limit} bytes")
    if not data.strip():
        raise BadInput("empty input")
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"malformed JSON input: {exc}") from None
    if not isinstance(message, dict):
        raise BadInput("input is not a JSON object")
    return message


def validate_message(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return (command, alert) of an active-response version 1 message."""
    if message.get("version") != 1 or isinstance(message.get("version"), bool):
        raise BadInput("unsupported message version (expected 1)")
    command = message.get("command")
    if command not in ("add", "delete"):
        raise BadInput("command must be 'add' or 'delete'")
    parameters = message.get("parameters")
    if not isinstance(parameters, dict):
        raise BadInput("parameters must be a JSON object")
    alert = parameters.get("alert", {} if command == "delete" else None)
    if not isinstance(alert, dict):
        raise BadInput("parameters.alert must be a JSON object")
    return command, alert


def find_alert_path(alert: dict[str, Any]) -> str | None:
    for keys in ALERT_PATH_SOURCES:
        node: Any = alert
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str) and node:
            return node
    return None


def handshake(path: str, stdin: IO[Any], stdout: IO[Any], limit: int) -> bool:
    """Send check_keys and return True for "continue", False for "abort"."""
    request = {
        "version": 1,
        "origin": {"name": PROGRAM, "module": "active-response"},
        "command": "check_keys",
        "parameters": {"keys": [path]},
    }
    stdout.write(json.dumps(request) + "\n")
    stdout.flush()
    try:
        response = read_message(stdin, limit)
    except BadInput as exc:
        raise BadInput(f"handshake: {exc}") from None
    command = response.get("command")
    if command == "continue":
        return True
    if command == "abort":
        return False
    raise BadInput("handshake: response command must be 'continue' or 'abort'")


# ---------------------------------------------------------------------------------------------------------------
# Checks and quarantine


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISREG, "regular file"),
    ):
        if test(mode):
            return name
    return "unknown file type"


def is_within(path: str, directory: str) -> bool:
    """Path-component containment of two absolute, normalised paths."""
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:
        return False


def check_path_syntax(path: str) -> None:
    if "\0" in path:
        raise Refused("path contains a NUL byte")
    try:
        os.fsencode(path)
    except UnicodeError:
        raise Refused("path cannot be encoded for the file system") from None
    if not os.path.isabs(path):
        raise Refused("path is not absolute")
    if ".." in path.split("/"):
        raise Refused("path contains a '..' component")


def find_pids(proc_root: str, identity: tuple[int, int]) -> list[int]:
    """Pids (not our own) whose /proc/<pid>/exe is the file with this (st_dev, st_ino)."""
    own = os.getpid()
    pids = []
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == own:
            continue
        if _exe_identity(proc_root, int(entry)) == identity:
            pids.append(int(entry))
    return sorted(pids)


def _exe_identity(proc_root: str, pid: int) -> tuple[int, int] | None:
    exe = os.path.join(proc_root, str(pid), "exe")
    try:
        os.readlink(exe)  # kernel threads have no exe; a target ending in " (deleted)" still stats fine below
        return _identity(os.stat(exe))
    except OSError:
        return None


def kill_pids(proc_root: str, pids: list[int], identity: tuple[int, int]) -> list[int]:
    """SIGKILL each pid after pinning it (pidfd where available) and checking its exe again."""
    killed = []
    for pid in pids:
        if pid == os.getpid():
            continue
        pidfd = None
        try:
            if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
                try:
                    pidfd = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                except OSError:
                    pidfd = None
            if _exe_identity(proc_root, pid) != identity:
                continue
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return killed


def open_quarantine_dir(path: str, create: bool) -> int | None:
    """Open (creating it with mode 0700 if asked) and verify the quarantine directory; None if missing."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        if not create:
            return None
        with contextlib.suppress(FileExistsError):  # created concurrently: verified below like any existing one
            os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("quarantine directory is not a real directory") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise Refused("quarantine directory is not a real directory")
        if st.st_uid != os.geteuid():
            raise Refused(f"quarantine directory is owned by uid {st.st_uid}, not {os.geteuid()}")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise Refused(f"quarantine directory has group/other permissions ({oct(stat.S_IMODE(st.st_mode))})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, CHUNK, offset)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        offset += len(chunk)


def _copy_fd(src: int, dst: int) -> None:
    offset = 0
    while True:
        chunk = os.pread(src, CHUNK, offset)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            written = os.write(dst, view)
            view = view[written:]
        offset += len(chunk)


def _same_entry(dir_fd: int, name: str, identity: tuple[int, int]) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _identity(st) == identity


def _move(dir_fd: int, name: str, quarantine_fd: int, qname: str, file_fd: int, identity: tuple[int, int], path: str) -> str:
    """Move the file into quarantine; return "rename" or "copy" (other file system)."""
    try:
        os.rename(name, qname, src_dir_fd=dir_fd, dst_dir_fd=quarantine_fd)
        os.fchmod(file_fd, 0o600)
        return "rename"
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    out = os.open(qname, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=quarantine_fd)
    try:
        os.fchmod(out, 0o600)
        _copy_fd(file_fd, out)
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(qname, dir_fd=quarantine_fd)
        raise
    os.close(out)
    _checkpoint("before-unlink", path)
    if not _same_entry(dir_fd, name, identity):
        os.unlink(qname, dir_fd=quarantine_fd)
        raise Refused("file was replaced before the original could be removed (inode changed)")
    os.unlink(name, dir_fd=dir_fd)
    return "copy"


def _write_metadata(quarantine_fd: int, qname: str, metadata: dict[str, Any]) -> None:
    data = (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(qname + ".json", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=quarantine_fd)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _rule_info(alert: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    rule = alert.get("rule")
    if isinstance(rule, dict):
        for key in ("id", "description", "level"):
            if isinstance(rule.get(key), (str, int)) and not isinstance(rule.get(key), bool):
                info[f"rule_{key}"] = rule[key]
    if isinstance(alert.get("id"), str):
        info["alert_id"] = alert["id"]
    return info


class _Descriptors:
    """The directory, file and quarantine directory descriptors quarantine() holds, closed together."""

    def __init__(self) -> None:
        self.dir = -1
        self.file = -1
        self.quarantine: int | None = None

    def close(self) -> None:
        for fd in (self.file, self.dir, self.quarantine):
            if fd is not None and fd >= 0:
                os.close(fd)


def quarantine(path: str, alert: dict[str, Any], settings: Settings) -> Outcome:
    """Run every safety check on ``path`` and quarantine it (or only report, in a dry run)."""
    identity, real = _check_path(path, settings)
    parent, name = os.path.split(real)
    fds = _Descriptors()
    try:
        fds.dir = _open_parent(parent)
        _check_parent(fds.dir, parent, name, identity)
        _checkpoint("before-open", path)
        fds.file = _open_file(fds.dir, name)
        st = _check_open_file(fds.file, identity)
        sha256 = _sha256_fd(fds.file)
        pids = find_pids(settings.proc_root, identity)
        if settings.dry_run:
            fds.quarantine = open_quarantine_dir(settings.quarantine_dir, create=False)
            note = "" if fds.quarantine is not None else "; quarantine directory would be created"
            return Outcome("dry-run", EXIT_OK, path, f"all checks passed, would quarantine{note}", sha256, None, pids)

        fds.quarantine = open_quarantine_dir(settings.quarantine_dir, create=True)
        if fds.quarantine is None:
            raise Refused("quarantine directory could not be created")
        killed = kill_pids(settings.proc_root, pids, identity)

        _checkpoint("before-move", path)
        if not _same_entry(fds.dir, name, identity):
            raise Refused("file was replaced before the move (inode changed)")
        qname = _quarantine_name(fds.quarantine)
        method = _move(fds.dir, name, fds.quarantine, qname, fds.file, identity, path)
        os.fsync(fds.quarantine)
        os.fsync(fds.dir)

        metadata = _metadata(path, real, sha256, st, qname, method, killed)
        metadata.update(_rule_info(alert))
        try:
            _write_metadata(fds.quarantine, qname, metadata)
        except OSError as exc:
            return Outcome("error", EXIT_ERROR, path, f"quarantined but metadata not written: {exc}", sha256, qname, killed)
        return Outcome("quarantined", EXIT_OK, path, f"moved to quarantine ({method})", sha256, qname, killed)
    finally:
        fds.close()


def _check_path(path: str, settings: Settings) -> tuple[tuple[int, int], str]:
    """The checks made through the path alone: its (st_dev, st_ino) identity (lstat) and its real path."""
    check_path_syntax(path)
    if not settings.safe_dirs:
        raise Refused("no safe directories configured")
    try:
        first = os.lstat(path)
    except FileNotFoundError:
        raise Refused("file does not exist") from None
    except OSError as exc:
        raise Refused(f"cannot lstat file: {exc.strerror}") from None
    if not stat.S_ISREG(first.st_mode):
        raise Refused(f"not a regular file ({_kind(first.st_mode)})")
    real = os.path.realpath(path)
    quarantine_real = os.path.realpath(settings.quarantine_dir)
    if is_within(real, quarantine_real):
        raise Refused("file is inside the quarantine directory")
    if not any(is_within(real, safe) for safe in settings.safe_dirs):
        raise Refused(f"real path {real!r} is outside the safe directories")
    return _identity(first), real


def _open_parent(parent: str) -> int:
    try:
        return os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise Refused(f"cannot open parent directory: {exc.strerror}") from None


def _check_parent(dir_fd: int, parent: str, name: str, identity: tuple[int, int]) -> None:
    """The pinned parent is the directory checked, holds the file seen by lstat and is not open to anyone."""
    dir_st = os.fstat(dir_fd)
    if os.path.realpath(parent) != parent or not _same_dir(parent, dir_st):
        raise Refused("parent directory changed during checks")
    if not _same_entry(dir_fd, name, identity):
        raise Refused("file changed during checks (inode changed)")
    if dir_st.st_mode & stat.S_IWOTH and not dir_st.st_mode & stat.S_ISVTX:
        raise Refused("file's directory is world-writable without the sticky bit")


def _open_file(dir_fd: int, name: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise Refused(f"cannot open file safely: {exc.strerror}") from None


def _check_open_file(file_fd: int, identity: tuple[int, int]) -> os.stat_result:
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode) or _identity(st) != identity:
        raise Refused("file was replaced between checks (inode changed)")
    return st


def _quarantine_name(quarantine_fd: int) -> str:
    """A random name free in the quarantine directory, for the file and its .json."""
    qname = secrets.token_hex(16)
    for candidate in (qname, qname + ".json"):
        try:
            os.stat(candidate, dir_fd=quarantine_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        raise Refused("quarantine name collision")
    return qname


def _metadata(path: str, real: str, sha256: str, st: os.stat_result, qname: str, method: str, killed: list[int]) -> dict[str, Any]:
    return {
        "original_path": path,
        "real_path": real,
        "sha256": sha256,
        "size": st.st_size,
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime": _utc_iso(st.st_mtime),
        "type": "regular file",
        "quarantined_at": _utc_iso(),
        "quarantine_name": qname,
        "method": method,
        "killed_pids": killed,
        "hostname": socket.gethostname(),
    }


def _same_dir(path: str, dir_st: os.stat_result) -> bool:
    try:
        return _identity(os.lstat(path)) == _identity(dir_st)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def run(settings: Settings, stdin: IO[Any], stdout: IO[Any]) -> Outcome:
    try:
        command, alert = validate_message(read_message(stdin, settings.max_input_bytes))
    except BadInput as exc:
        return Outcome("error", EXIT_ERROR, None, str(exc))
    path = find_alert_path(alert)
    if command == "delete":
        return Outcome("ignored", EXIT_OK, path, "delete command: nothing to undo")
    if path is None:
        return Outcome("ignored", EXIT_OK, None, "no file in alert")
    if settings.handshake:
        try:
            if not handshake(path, stdin, stdout, settings.max_input_bytes):
                return Outcome("ignored", EXIT_OK, path, "aborted by wazuh-execd")
        except BadInput as exc:
            return Outcome("error", EXIT_ERROR, path, str(exc))
    try:
        return quarantine(path, alert, settings)
    except Refused as exc:
        return Outcome("refused", EXIT_REFUSED, path, str(exc))
    except OSError as exc:
        return Outcome("error", EXIT_ERROR, path, f"unexpected error: {exc}")


def main(argv: Sequence[str] | None = None, stdin: IO[Any] | None = None, stdout: IO[Any] | None = None) -> int:
    """Run once; ``argv`` excludes the program name. Returns the exit code."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    try:
        args = parse_args(argv)
    except BadInput as exc:
        sys.stderr.write(f"{PROGRAM}: {exc}\n")
        return EXIT_ERROR
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    log = ActionLog(args.log_file or DEFAULT_LOG_FILE)
    try:
        settings = build_settings(args)
    except BadInput as exc:
        log.write(Outcome("error", EXIT_ERROR, None, str(exc)))
        return EXIT_ERROR
    log = ActionLog(settings.log_file)
    try:
        outcome = run(settings, stdin, stdout)
    except Exception as exc:
        outcome = Outcome("error", EXIT_ERROR, None, f"unexpected error: {type(exc).__name__}: {exc}")
    log.write(outcome)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
