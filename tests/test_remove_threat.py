"""Tests for scripts/linux/remove-threat.py, the Wazuh active response that quarantines a file named in an alert.

Everything runs against a real file system under tmp_path (the tests run as root, so nothing relies on
permission-denied errors). The script is loaded with importlib because its file name has a dash.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "linux" / "remove-threat.py"
SECRET = "FULL-LOG-MUST-NOT-BE-LOGGED"
CONTENT = b"#!/bin/sh\necho malicious payload\n"


@pytest.fixture(scope="module")
def rt():
    spec = importlib.util.spec_from_file_location("remove_threat", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@dataclass
class Env:
    root: Path
    safe: Path
    outside: Path
    quarantine: Path
    log: Path
    config: Path

    def args(self, *extra: str, handshake: bool = False, safe: bool = True) -> list[str]:
        args = ["--config", str(self.config), "--quarantine-dir", str(self.quarantine), "--log-file", str(self.log)]
        if safe:
            args += ["--safe-dir", str(self.safe)]
        if not handshake:
            args.append("--no-handshake")
        return [*args, *extra]

    def records(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def quarantined(self) -> list[str]:
        if not self.quarantine.exists():
            return []
        return sorted(p.name for p in self.quarantine.iterdir() if not p.name.endswith(".json"))


@dataclass
class Result:
    rc: int
    stdout: str
    records: list[dict] = field(default_factory=list)

    @property
    def last(self) -> dict:
        return self.records[-1]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    safe = tmp_path / "safe"
    outside = tmp_path / "outside"
    safe.mkdir()
    outside.mkdir()
    config = tmp_path / "config.json"
    config.write_text("{}")
    config.chmod(0o600)
    return Env(tmp_path, safe, outside, tmp_path / "quarantine", tmp_path / "ar.log", config)


def make_file(path: Path, content: bytes = CONTENT, mode: int = 0o755) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def vt_alert(path: str) -> dict:
    return {
        "id": "1700000000.12345",
        "rule": {"id": "87105", "level": 12, "description": "VirusTotal: Alert - 10 engines detected this file"},
        "data": {"virustotal": {"found": "1", "positives": "10", "source": {"file": path, "sha1": "x" * 40}}},
        "full_log": SECRET,
    }


def fim_alert(path: str) -> dict:
    return {"rule": {"id": "554", "description": "File added to the system."}, "syscheck": {"path": path, "event": "added"}}


def data_file_alert(path: str) -> dict:
    return {"rule": {"id": "100200", "description": "custom"}, "data": {"file": path}}


def message(alert: dict | None, command: str = "add") -> str:
    parameters: dict = {"extra_args": [], "program": "active-response/bin/remove-threat.py"}
    if alert is not None:
        parameters["alert"] = alert
    return json.dumps({"version": 1, "origin": {"name": "node01", "module": "wazuh-execd"}, "command": command, "parameters": parameters})


def run(rt, env: Env, alert: dict | None = None, *extra: str, raw: bytes | None = None, command: str = "add", **kw) -> Result:
    data = raw if raw is not None else message(alert, command).encode() + b"\n"
    out = io.StringIO()
    rc = rt.main(env.args(*extra, **kw), io.BytesIO(data), out)
    return Result(rc, out.getvalue(), env.records())


def continue_line(command: str = "continue") -> bytes:
    return json.dumps({"version": 1, "origin": {"name": "node01", "module": "wazuh-execd"}, "command": command, "parameters": {}}).encode()


def assert_untouched(path: Path, content: bytes = CONTENT) -> None:
    assert path.is_file() and not path.is_symlink()
    assert path.read_bytes() == content


def assert_refused(result: Result, reason: str) -> None:
    assert result.rc == 2, result.records
    assert result.last["action"] == "refused"
    assert reason in result.last["reason"]


def replace_with_new_file(path: str, content: bytes = b"innocent replacement\n") -> None:
    tmp = path + ".new"
    Path(tmp).write_bytes(content)
    os.replace(tmp, path)


def hook_at(rt, monkeypatch, stage: str, action) -> list[str]:
    seen: list[str] = []

    def checkpoint(name: str, path: str) -> None:
        seen.append(name)
        if name == stage:
            action(path)

    monkeypatch.setattr(rt, "_checkpoint", checkpoint)
    return seen


# --- successful quarantine ---------------------------------------------------------------------------------------


def test_quarantines_virustotal_file(rt, env):
    evil = make_file(env.safe / "evil.sh")
    before = evil.stat()
    result = run(rt, env, vt_alert(str(evil)))

    assert result.rc == 0, result.records
    assert not evil.exists()
    assert stat.S_IMODE(env.quarantine.stat().st_mode) == 0o700
    [name] = env.quarantined()
    qfile = env.quarantine / name
    assert len(name) == 32 and int(name, 16) >= 0
    assert stat.S_IMODE(qfile.stat().st_mode) == 0o600
    assert qfile.read_bytes() == CONTENT
    meta_path = env.quarantine / f"{name}.json"
    assert stat.S_IMODE(meta_path.stat().st_mode) == 0o600
    meta = json.loads(meta_path.read_text())
    sha = hashlib.sha256(CONTENT).hexdigest()
    assert meta["sha256"] == sha
    assert meta["original_path"] == str(evil)
    assert meta["real_path"] == os.path.realpath(evil)
    assert meta["size"] == len(CONTENT)
    assert meta["mode"] == "0o755"
    assert (meta["uid"], meta["gid"]) == (before.st_uid, before.st_gid)
    assert meta["type"] == "regular file"
    assert meta["quarantined_at"].endswith("Z") and meta["mtime"].endswith("Z")
    assert meta["rule_id"] == "87105" and meta["rule_description"].startswith("VirusTotal")
    assert meta["alert_id"] == "1700000000.12345"
    assert meta["killed_pids"] == []
    assert meta["hostname"]
    assert meta["method"] == "rename"

    record = result.last
    assert record["action"] == "quarantined"
    assert record["path"] == str(evil)
    assert record["sha256"] == sha
    assert record["quarantine_name"] == name
    assert record["pids"] == []
    assert SECRET not in env.log.read_text()


@pytest.mark.parametrize("make_alert", [vt_alert, fim_alert, data_file_alert], ids=["virustotal", "syscheck", "data.file"])
def test_each_alert_path_source(rt, env, make_alert):
    evil = make_file(env.safe / "evil.bin")
    result = run(rt, env, make_alert(str(evil)))
    assert result.rc == 0
    assert result.last["action"] == "quarantined"
    assert not evil.exists()
    [name] = env.quarantined()
    assert json.loads((env.quarantine / f"{name}.json").read_text())["original_path"] == str(evil)


def test_alert_path_precedence(rt, env):
    vt_file = make_file(env.safe / "vt")
    fim_file = make_file(env.safe / "fim")
    other = make_file(env.safe / "other")
    alert = vt_alert(str(vt_file))
    alert["syscheck"] = {"path": str(fim_file)}
    alert["data"]["file"] = str(other)
    assert run(rt, env, alert).rc == 0
    assert not vt_file.exists()
    assert_untouched(fim_file)
    assert_untouched(other)

    alert = fim_alert(str(fim_file))
    alert["data"] = {"file": str(other)}
    assert run(rt, env, alert).rc == 0
    assert not fim_file.exists()
    assert_untouched(other)


def test_safe_dir_given_through_a_symlink_is_resolved(rt, env):
    link = env.root / "safe-link"
    link.symlink_to(env.safe)
    evil = make_file(env.safe / "evil")
    args = ["--config", str(env.config), "--safe-dir", str(link), "--quarantine-dir", str(env.quarantine)]
    rc = rt.main([*args, "--log-file", str(env.log), "--no-handshake"], io.BytesIO(message(fim_alert(str(evil))).encode()), io.StringIO())
    assert rc == 0
    assert not evil.exists()


def test_existing_secure_quarantine_dir_is_reused(rt, env):
    env.quarantine.mkdir(mode=0o700)
    env.quarantine.chmod(0o700)
    first = make_file(env.safe / "one")
    second = make_file(env.safe / "two", b"second")
    assert run(rt, env, fim_alert(str(first))).rc == 0
    assert run(rt, env, fim_alert(str(second))).rc == 0
    assert len(env.quarantined()) == 2


# --- ignored -----------------------------------------------------------------------------------------------------


def test_no_file_in_alert_is_ignored(rt, env):
    result = run(rt, env, {"rule": {"id": "5710"}, "data": {"srcip": "10.0.0.1"}})
    assert result.rc == 0
    assert result.last["action"] == "ignored"
    assert result.last["reason"] == "no file in alert"
    assert not env.quarantine.exists()


def test_delete_is_a_noop(rt, env):
    evil = make_file(env.safe / "evil")
    result = run(rt, env, vt_alert(str(evil)), command="delete", handshake=True)
    assert result.rc == 0
    assert result.stdout == ""  # no handshake for delete
    assert result.last["action"] == "ignored"
    assert "delete" in result.last["reason"]
    assert_untouched(evil)
    assert not env.quarantine.exists()


# --- handshake ---------------------------------------------------------------------------------------------------


def test_handshake_continue(rt, env):
    evil = make_file(env.safe / "evil")
    raw = message(vt_alert(str(evil))).encode() + b"\n" + continue_line() + b"\n"
    result = run(rt, env, raw=raw, handshake=True)
    assert result.rc == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "version": 1,
        "origin": {"name": "remove-threat.py", "module": "active-response"},
        "command": "check_keys",
        "parameters": {"keys": [str(evil)]},
    }
    assert not evil.exists()


def test_handshake_abort(rt, env):
    evil = make_file(env.safe / "evil")
    raw = message(vt_alert(str(evil))).encode() + b"\n" + continue_line("abort") + b"\n"
    result = run(rt, env, raw=raw, handshake=True)
    assert result.rc == 0
    assert "check_keys" in result.stdout
    assert result.last["action"] == "ignored"
    assert "abort" in result.last["reason"]
    assert_untouched(evil)
    assert not env.quarantine.exists()


@pytest.mark.parametrize("response", [b"", b"not json\n", continue_line("maybe") + b"\n"], ids=["eof", "garbage", "unknown-command"])
def test_handshake_bad_response(rt, env, response):
    evil = make_file(env.safe / "evil")
    result = run(rt, env, raw=message(vt_alert(str(evil))).encode() + b"\n" + response, handshake=True)
    assert result.rc == 1
    assert result.last["action"] == "error"
    assert result.last["reason"].startswith("handshake")
    assert_untouched(evil)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_oversize_input_refused(rt, env):
    evil = make_file(env.safe / "evil")
    alert = vt_alert(str(evil))
    alert["full_log"] = "A" * 70_000
    data = message(alert).encode() + b"\n"
    stdin = io.BytesIO(data)
    rc = rt.main(env.args(), stdin, io.StringIO())
    assert rc == 1
    assert stdin.tell() == 64 * 1024 + 1  # read at most cap + 1 bytes
    record = env.records()[-1]
    assert record["action"] == "error"
    assert "exceeds 65536 bytes" in record["reason"]
    assert SECRET not in env.log.read_text() and "AAAA" not in env.log.read_text()
    assert_untouched(evil)


def test_input_cap_boundary(rt, env):
    evil = make_file(env.safe / "evil")
    data = message(fim_alert(str(evil))).encode()
    result = run(rt, env, None, "--max-input-bytes", str(len(data) - 1), raw=data + b"\n")
    assert result.rc == 1
    assert f"exceeds {len(data) - 1} bytes" in result.last["reason"]
    assert_untouched(evil)
    assert run(rt, env, None, "--max-input-bytes", str(len(data)), raw=data + b"\n").rc == 0  # newline not counted
    assert not evil.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n",
        b"{not json\n",
        b"\xff\xfe\n",
        b"[1, 2]\n",
        b'{"version": 2, "command": "add", "parameters": {"alert": {}}}\n',
        b'{"version": true, "command": "add", "parameters": {"alert": {}}}\n',
        b'{"version": 1, "command": "restart", "parameters": {"alert": {}}}\n',
        b'{"version": 1, "command": "add"}\n',
        b'{"version": 1, "command": "add", "parameters": []}\n',
        b'{"version": 1, "command": "add", "parameters": {"extra_args": []}}\n',
        b'{"version": 1, "command": "add", "parameters": {"alert": "x"}}\n',
    ],
)
def test_malformed_input(rt, env, raw):
    evil = make_file(env.safe / "evil")
    result = run(rt, env, raw=raw)
    assert result.rc == 1
    assert result.last["action"] == "error"
    assert_untouched(evil)
    assert not env.quarantine.exists()


def test_usage_error_exits_1_not_2(rt, env, capsys):
    assert rt.main(["--no-such-option"], io.BytesIO(b""), io.StringIO()) == 1
    assert rt.main(["--max-input-bytes", "lots"], io.BytesIO(b""), io.StringIO()) == 1
    assert "usage error" in capsys.readouterr().err


# --- configuration -----------------------------------------------------------------------------------------------


def write_config(env: Env, config: dict, mode: int = 0o600) -> None:
    env.config.write_text(json.dumps(config))
    env.config.chmod(mode)


def test_config_file(rt, env):
    evil = make_file(env.safe / "evil")
    write_config(
        env, {"safe_dirs": [str(env.safe)], "quarantine_dir": str(env.quarantine), "log_file": str(env.log), "max_input_bytes": 4096}
    )
    rc = rt.main(["--config", str(env.config), "--no-handshake"], io.BytesIO(message(fim_alert(str(evil))).encode()), io.StringIO())
    assert rc == 0
    assert not evil.exists()
    assert env.records()[-1]["action"] == "quarantined"


def test_config_max_input_bytes(rt, env):
    evil = make_file(env.safe / "evil")
    write_config(env, {"max_input_bytes": 100})
    assert run(rt, env, vt_alert(str(evil))).rc == 1
    assert "exceeds 100 bytes" in env.records()[-1]["reason"]
    assert_untouched(evil)


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ('{"safe_dir": ["/tmp"]}', 0o600, "unknown keys"),
        ('{"safe_dirs": "/tmp"}', 0o600, "list of strings"),
        ('{"safe_dirs": ["relative/dir"]}', 0o600, "absolute"),
        ('{"safe_dirs": ["/"]}', 0o600, "'/' cannot"),
        ('{"max_input_bytes": "big"}', 0o600, "integer"),
        ("{broken", 0o600, "not valid JSON"),
        ("[]", 0o600, "JSON object"),
        ("{}", 0o666, "writable by group or others"),
    ],
)
def test_bad_config_fails(rt, env, content, mode, reason):
    evil = make_file(env.safe / "evil")
    env.config.write_text(content)
    env.config.chmod(mode)
    result = run(rt, env, vt_alert(str(evil)))
    assert result.rc == 1
    assert result.last["action"] == "error"
    assert reason in result.last["reason"]
    assert_untouched(evil)


def test_explicit_missing_config_fails(rt, env):
    evil = make_file(env.safe / "evil")
    env.config.unlink()
    result = run(rt, env, vt_alert(str(evil)))
    assert result.rc == 1
    assert "does not exist" in result.last["reason"]
    assert_untouched(evil)


def test_no_safe_dirs_refuses_everything(rt, env):
    evil = make_file(env.safe / "evil")
    result = run(rt, env, vt_alert(str(evil)), safe=False)
    assert_refused(result, "no safe directories configured")
    assert_untouched(evil)
    assert not env.quarantine.exists()


# --- safety rules ------------------------------------------------------------------------------------------------


def test_symlink_refused_and_target_untouched(rt, env):
    target = make_file(env.safe / "target")
    link = env.safe / "link"
    link.symlink_to(target)
    result = run(rt, env, vt_alert(str(link)))
    assert_refused(result, "symbolic link")
    assert link.is_symlink()
    assert_untouched(target)
    assert not env.quarantine.exists()


def test_symlink_to_outside_refused(rt, env):
    target = make_file(env.outside / "passwd")
    link = env.safe / "link"
    link.symlink_to(target)
    assert_refused(run(rt, env, vt_alert(str(link))), "symbolic link")
    assert_untouched(target)


def test_directory_refused(rt, env):
    directory = env.safe / "dir"
    directory.mkdir()
    (directory / "inner").write_text("x")
    assert_refused(run(rt, env, fim_alert(str(directory))), "directory")
    assert (directory / "inner").read_text() == "x"


def test_fifo_refused(rt, env):
    fifo = env.safe / "fifo"
    os.mkfifo(fifo)
    assert_refused(run(rt, env, fim_alert(str(fifo))), "FIFO")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_relative_path_refused(rt, env, monkeypatch):
    make_file(env.safe / "evil")
    monkeypatch.chdir(env.safe)
    assert_refused(run(rt, env, fim_alert("evil")), "not absolute")
    assert_untouched(env.safe / "evil")


def test_missing_file_refused(rt, env):
    assert_refused(run(rt, env, fim_alert(str(env.safe / "gone"))), "does not exist")


def test_nul_byte_refused(rt, env):
    assert_refused(run(rt, env, fim_alert(str(env.safe / "evil") + "\0.txt")), "NUL")


def test_outside_safe_dirs_refused(rt, env):
    victim = make_file(env.outside / "important")
    assert_refused(run(rt, env, vt_alert(str(victim))), "outside the safe directories")
    assert_untouched(victim)
    assert not env.quarantine.exists()


def test_string_prefix_sibling_is_outside(rt, env):
    sibling = env.root / "safe2"  # "/…/safe2/x" starts with "/…/safe" but is not inside it
    sibling.mkdir()
    victim = make_file(sibling / "x")
    assert_refused(run(rt, env, vt_alert(str(victim))), "outside the safe directories")
    assert_untouched(victim)


def test_dotdot_traversal_refused(rt, env):
    victim = make_file(env.outside / "important")
    path = f"{env.safe}/../outside/important"
    assert os.path.exists(path)
    assert_refused(run(rt, env, vt_alert(path)), "'..'")
    assert_untouched(victim)


def test_symlinked_parent_escaping_safe_dir_refused(rt, env):
    victim = make_file(env.outside / "important")
    (env.safe / "escape").symlink_to(env.outside)
    path = env.safe / "escape" / "important"
    assert path.is_file()
    assert_refused(run(rt, env, vt_alert(str(path))), "outside the safe directories")
    assert_untouched(victim)
    assert (env.safe / "escape").is_symlink()


def test_world_writable_directory_without_sticky_bit_refused(rt, env):
    shared = env.safe / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    evil = make_file(shared / "evil")
    assert_refused(run(rt, env, vt_alert(str(evil))), "world-writable")
    assert_untouched(evil)


def test_world_writable_sticky_directory_allowed(rt, env):
    shared = env.safe / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    evil = make_file(shared / "evil")
    assert run(rt, env, vt_alert(str(evil))).rc == 0
    assert not evil.exists()


def test_file_inside_quarantine_dir_refused(rt, env):
    quarantine = env.safe / "quarantine"
    quarantine.mkdir(mode=0o700)
    quarantine.chmod(0o700)
    inside = make_file(quarantine / "already-quarantined", mode=0o600)
    args = env.args()
    args[args.index("--quarantine-dir") + 1] = str(quarantine)
    rc = rt.main(args, io.BytesIO(message(vt_alert(str(inside))).encode()), io.StringIO())
    assert rc == 2
    assert "inside the quarantine directory" in env.records()[-1]["reason"]
    assert_untouched(inside)


@pytest.mark.parametrize("problem", ["group-readable", "symlink", "other-owner", "not-a-directory"])
def test_insecure_quarantine_dir_refused(rt, env, problem):
    evil = make_file(env.safe / "evil")
    if problem == "group-readable":
        env.quarantine.mkdir()
        env.quarantine.chmod(0o750)
    elif problem == "symlink":
        real = env.root / "real-quarantine"
        real.mkdir(mode=0o700)
        env.quarantine.symlink_to(real)
    elif problem == "other-owner":
        env.quarantine.mkdir(mode=0o700)
        os.chown(env.quarantine, 65534, 65534)
    else:
        env.quarantine.write_text("not a dir")
    result = run(rt, env, vt_alert(str(evil)))
    assert_refused(result, "quarantine directory")
    assert_untouched(evil)


# --- identity (swapped inode) checks -----------------------------------------------------------------------------


def test_file_swapped_before_move_is_not_moved(rt, env, monkeypatch):
    evil = make_file(env.safe / "evil")
    seen = hook_at(rt, monkeypatch, "before-move", replace_with_new_file)
    result = run(rt, env, vt_alert(str(evil)))
    assert "before-move" in seen
    assert_refused(result, "inode changed")
    assert_untouched(evil, b"innocent replacement\n")
    assert env.quarantined() == []
    assert list(env.quarantine.iterdir()) == []


def test_file_swapped_before_open_is_not_moved(rt, env, monkeypatch):
    evil = make_file(env.safe / "evil")
    hook_at(rt, monkeypatch, "before-open", replace_with_new_file)
    assert_refused(run(rt, env, vt_alert(str(evil))), "inode changed")
    assert_untouched(evil, b"innocent replacement\n")
    assert not env.quarantine.exists()


def test_file_swapped_for_symlink_before_open_is_refused(rt, env, monkeypatch):
    evil = make_file(env.safe / "evil")
    victim = make_file(env.outside / "important")

    def swap(path: str) -> None:
        os.unlink(path)
        os.symlink(victim, path)

    hook_at(rt, monkeypatch, "before-open", swap)
    assert_refused(run(rt, env, vt_alert(str(evil))), "cannot open file safely")
    assert_untouched(victim)
    assert Path(evil).is_symlink()


def test_cross_filesystem_copy(rt, env, monkeypatch):
    evil = make_file(env.safe / "evil")

    def exdev(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(rt.os, "rename", exdev)
    result = run(rt, env, vt_alert(str(evil)))
    assert result.rc == 0, result.records
    assert not evil.exists()
    [name] = env.quarantined()
    assert (env.quarantine / name).read_bytes() == CONTENT
    assert stat.S_IMODE((env.quarantine / name).stat().st_mode) == 0o600
    meta = json.loads((env.quarantine / f"{name}.json").read_text())
    assert meta["method"] == "copy"
    assert meta["sha256"] == hashlib.sha256(CONTENT).hexdigest()


def test_cross_filesystem_copy_swapped_before_unlink(rt, env, monkeypatch):
    evil = make_file(env.safe / "evil")

    def exdev(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(rt.os, "rename", exdev)
    hook_at(rt, monkeypatch, "before-unlink", replace_with_new_file)
    assert_refused(run(rt, env, vt_alert(str(evil))), "inode changed")
    assert_untouched(evil, b"innocent replacement\n")
    assert list(env.quarantine.iterdir()) == []


# --- dry run -----------------------------------------------------------------------------------------------------


def test_dry_run_changes_nothing(rt, env):
    evil = make_file(env.safe / "evil")
    before = evil.stat()
    result = run(rt, env, vt_alert(str(evil)), "--dry-run")
    assert result.rc == 0
    assert result.last["action"] == "dry-run"
    assert result.last["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    assert result.last["quarantine_name"] is None
    assert_untouched(evil)
    after = evil.stat()
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (before.st_ino, before.st_mode, before.st_mtime_ns)
    assert not env.quarantine.exists()


def test_dry_run_still_refuses(rt, env):
    victim = make_file(env.outside / "important")
    assert_refused(run(rt, env, vt_alert(str(victim)), "--dry-run"), "outside the safe directories")


def test_dry_run_reports_pids_from_proc_root(rt, env):
    evil = make_file(env.safe / "evil")
    other = make_file(env.safe / "other", b"other")
    proc = env.root / "proc"
    for pid, exe in ((4242, evil), (os.getpid(), evil), (4343, other)):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "exe").symlink_to(exe)
    (proc / "99").mkdir()  # a kernel thread: no exe
    (proc / "self").symlink_to(proc / str(os.getpid()))
    result = run(rt, env, vt_alert(str(evil)), "--dry-run", "--proc-root", str(proc))
    assert result.rc == 0
    assert result.last["pids"] == [4242]  # never our own pid
    assert_untouched(evil)


# --- processes ---------------------------------------------------------------------------------------------------


@pytest.fixture
def sleepers(env):
    evil = env.safe / "evil-sleep"
    shutil.copy2("/bin/sleep", evil)
    victim = subprocess.Popen([str(evil), "60"])
    bystander = subprocess.Popen(["/bin/sleep", "60"])
    yield evil, victim, bystander
    for process in (victim, bystander):
        if process.poll() is None:
            process.kill()
        process.wait()


def test_kills_processes_running_the_file(rt, env, sleepers):
    evil, victim, bystander = sleepers
    evil_bytes = evil.read_bytes()
    result = run(rt, env, vt_alert(str(evil)))
    assert result.rc == 0, result.records
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert bystander.poll() is None
    assert result.last["pids"] == [victim.pid]
    [name] = env.quarantined()
    assert (env.quarantine / name).read_bytes() == evil_bytes
    assert json.loads((env.quarantine / f"{name}.json").read_text())["killed_pids"] == [victim.pid]
    assert not evil.exists()


def test_dry_run_does_not_kill(rt, env, sleepers):
    evil, victim, bystander = sleepers
    result = run(rt, env, vt_alert(str(evil)), "--dry-run")
    assert result.rc == 0
    assert result.last["pids"] == [victim.pid]
    assert victim.poll() is None and bystander.poll() is None
    assert evil.exists()


def test_no_kill_when_refused(rt, env, sleepers, monkeypatch):
    evil, victim, _ = sleepers
    env.quarantine.mkdir()
    env.quarantine.chmod(0o755)  # insecure: refused before any process is touched
    assert_refused(run(rt, env, vt_alert(str(evil))), "quarantine directory")
    assert victim.poll() is None


# --- logging and the script as a program -------------------------------------------------------------------------


def test_log_lines_are_json_objects(rt, env):
    evil = make_file(env.safe / "evil")
    run(rt, env, vt_alert(str(evil)), "--dry-run")
    run(rt, env, raw=b"garbage\n")
    run(rt, env, vt_alert(str(env.outside / "nothing")))
    run(rt, env, vt_alert(str(evil)), command="delete")
    run(rt, env, vt_alert(str(evil)))
    lines = env.log.read_text().splitlines()
    assert len(lines) == 5
    keys = {"timestamp", "program", "action", "path", "reason", "sha256", "quarantine_name", "pids"}
    records = [json.loads(line) for line in lines]
    assert all(set(r) == keys for r in records)
    assert [r["action"] for r in records] == ["dry-run", "error", "refused", "ignored", "quarantined"]
    assert SECRET not in env.log.read_text()


def test_log_file_symlink_not_followed(rt, env, capsys):
    target = env.outside / "target.log"
    target.write_text("")
    env.log.symlink_to(target)
    assert run(rt, env, {"rule": {}}).rc == 0
    assert target.read_text() == ""
    assert '"action": "ignored"' in capsys.readouterr().err


def test_subprocess_with_handshake(env):
    evil = make_file(env.safe / "evil.exe")
    stdin = message(vt_alert(str(evil))) + "\n" + continue_line().decode() + "\n"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *env.args(handshake=True)], input=stdin.encode(), capture_output=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["parameters"]["keys"] == [str(evil)]
    assert not evil.exists()
    [record] = env.records()
    assert record["action"] == "quarantined"
    assert (env.quarantine / record["quarantine_name"]).read_bytes() == CONTENT


def test_subprocess_refusal_exit_code(env):
    assert os.access(SCRIPT, os.X_OK)
    victim = make_file(env.outside / "important")
    completed = subprocess.run(
        [str(SCRIPT), *env.args()], input=message(fim_alert(str(victim))).encode() + b"\n", capture_output=True, timeout=60, check=False
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == b""
    assert env.records()[-1]["action"] == "refused"
    assert_untouched(victim)


def test_script_is_python38_syntax():
    ast.parse(SCRIPT.read_text(), feature_version=(3, 8))
