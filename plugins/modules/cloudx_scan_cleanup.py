#!/usr/bin/python
# Ends a scan started by cloudx_scan that may still be running and removes everything it left on the scanner.
from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import time
from typing import Any, Dict, List, Set

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: cloudx_scan_cleanup
short_description: End a cloudx_scan scan and remove its work directory
author: Cloud-X playbooks
description:
  - "Meant for scans whose playbook did not end normally (canceled, killed or timed out): stops what is left of
    the scan and removes O(work_dir) with everything in it (raw output, hosts, summary, the async job's status
    file when C(ansible_async_dir) was O(async_dir))."
  - "The scan's processes are found from C(status.json) (C(pid), C(scanner_pid)) and from C(/proc): the
    processes started for the async job (their environment has C(ANSIBLE_ASYNC_DIR=)O(async_dir)), scanner
    processes (nmap, masscan, zmap) whose arguments name a file in O(work_dir), a cloudx_scan module
    with a file in O(work_dir) open, and the process status.json names (C(pid)) when it holds a file in
    O(work_dir) open (the detached process of cloudx_scan with C(detach), whatever its arguments). No other
    process is signalled."
  - The cloudx_scan module gets SIGTERM (SIGKILL if it is still there after 3 s), the scanner's process
    group SIGKILL; the async wrapper is left to exit by itself (it removes its own temporary files). The
    module waits at most O(wait) seconds for all of them, then removes O(work_dir).
  - Also removes the async wrapper's copy of cloudx_scan for this scan (C(<remote_tmp>/ansible-tmp-*/), which
    embeds the scan's arguments) that the wrapper leaves when it is killed.
  - Idempotent; C(changed) only when a process was stopped or something was removed. Nothing to clean is not
    an error. Check mode reports what would be done and does nothing.
options:
  work_dir:
    description: The scan's work directory.
    type: path
    required: true
  async_dir:
    description: The async directory the scan used; default O(work_dir)/async.
    type: path
  wait:
    description: Seconds to wait for the scan's processes to end (the module gets 3 s in any case).
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Remove what is left of a scan
  cloudx_scan_cleanup:
    work_dir: /var/tmp/cloudx-scans/example
"""

RETURN = r"""
work_dir:
  description: The work directory, as an absolute path.
  returned: always
  type: str
stopped:
  description: Process ids of the scan's module and scanner that were signalled (would be, in check mode).
  returned: always
  type: list
  elements: int
removed:
  description: Whether the work directory was removed (would be, in check mode).
  returned: always
  type: bool
module_copies:
  description: How many leftover copies of cloudx_scan for this scan were removed (would be).
  returned: always
  type: int
still_running:
  description: Process ids that did not end within O(wait) seconds.
  returned: when some did not end
  type: list
  elements: int
"""

SCANNERS = ("nmap", "masscan", "zmap")
MODULE_FILES = {"AnsiballZ_cloudx_scan.py", "cloudx_scan.py"}


class Proc:
    """A process of the scan, identified by pid and start time (so a reused pid is never signalled)."""

    def __init__(self, pid: int, start: str, kind: str) -> None:
        self.pid = pid
        self.start = start
        self.kind = kind  # module, scanner or wrapper

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start and _state(self.pid) not in ("Z", "X", None)

    def signal(self, sig: int, group: bool = False) -> None:
        if not self.alive():
            return
        try:
            if group and os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> List[str] | None:
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    return data[data.rfind(b")") + 2 :].decode("ascii", "replace").split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _ancestors() -> Set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        fields = _stat_fields(pid)
        pid = int(fields[1]) if fields else 0
    return pids


def _under(path: str, roots: List[str]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def classify(pid: int, roots: List[str], async_env: bytes) -> str | None:
    """What a process is to the scan in roots (module, scanner, wrapper), or None when it is not the scan's."""
    cmdline = _read(f"/proc/{pid}/cmdline")
    if not cmdline:
        return None  # gone, a kernel thread, or not readable
    argv = [arg.decode("utf-8", "surrogateescape") for arg in cmdline.rstrip(b"\0").split(b"\0")]
    names = {os.path.basename(arg) for arg in argv[:3]}
    if os.path.basename(argv[0]) in SCANNERS and any(_under(arg, roots) for arg in argv[1:]):
        return "scanner"
    kind = "wrapper" if "async_wrapper.py" in names else "module" if names & MODULE_FILES else None
    environ = _read(f"/proc/{pid}/environ") or b""
    if async_env in environ.split(b"\0"):
        if kind is None and os.path.basename(argv[0]) in SCANNERS:
            return "scanner"
        return kind  # anything else started for the job (ip, a shell) ends by itself
    # A cloudx_scan started with another async directory still has its output files open.
    return "module" if kind == "module" and _has_open_file(pid, roots) else None


def _has_open_file(pid: int, roots: List[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if _under(os.readlink(f"/proc/{pid}/fd/{fd}"), roots):
                return True
    return False


def find_processes(work_dir: str, async_dir: str, hints: List[int]) -> List[Proc]:
    roots = sorted({work_dir, os.path.realpath(work_dir)})
    async_env = b"ANSIBLE_ASYNC_DIR=" + os.fsencode(async_dir)
    skip = _ancestors()
    pids = set(hints)
    with contextlib.suppress(OSError):
        pids.update(int(name) for name in os.listdir("/proc") if name.isdigit())
    found = []
    for pid in sorted(pids - skip):
        start = _start_time(pid)
        kind = classify(pid, roots, async_env) if start else None
        if kind is None and start and pid in hints and _has_open_file(pid, roots):
            # status.json's process of the scan (cloudx_scan with detach) holds the work dir open.
            kind = "module"
        if kind and _start_time(pid) == start:
            found.append(Proc(pid, start, kind))
    return found


def _status_pids(work_dir: str) -> List[int]:
    try:
        with open(os.path.join(work_dir, "status.json"), encoding="utf-8") as stream:
            status = json.load(stream)
    except (OSError, ValueError):
        return []
    if not isinstance(status, dict):
        return []
    return [value for value in (status.get("pid"), status.get("scanner_pid")) if isinstance(value, int) and value > 1]


def _wait_gone(procs: List[Proc], seconds: float) -> List[Proc]:
    deadline = time.monotonic() + seconds
    left = [p for p in procs if p.alive()]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if p.alive()]
    return left


def stop(procs: List[Proc], wait: int) -> List[Proc]:
    """SIGTERM to the module, SIGKILL to the scanners' groups; the processes still there after `wait` s."""
    for proc in procs:
        if proc.kind == "module":
            proc.signal(signal.SIGTERM)
    for proc in procs:
        if proc.kind == "scanner":
            proc.signal(signal.SIGKILL, group=True)
    modules = [p for p in procs if p.kind == "module"]
    for proc in _wait_gone(modules, 3):
        proc.signal(signal.SIGKILL)
    # The async wrapper notices its module's end (it checks every 5 s) and exits, removing its temporary files.
    return _wait_gone(procs, wait)


def module_copies(remote_tmp: str | None, work_dir: str) -> List[str]:
    """The async wrappers' directories holding a copy of cloudx_scan with this work_dir among its arguments."""
    path = os.path.expandvars(remote_tmp or "~/.ansible/tmp")
    bases = {os.path.expanduser(path)}
    if path == "~" or path.startswith("~/"):
        # Ansible expands ~ as the user's home directory (~user), which need not be $HOME.
        with contextlib.suppress(KeyError):
            bases.add(pwd.getpwuid(os.geteuid()).pw_dir + path[1:])
    value = json.dumps(work_dir)
    markers = [f'"work_dir": {value}'.encode(), f'"work_dir":{value}'.encode()]
    found = []
    for base in sorted(bases):
        for copy in sorted(glob.glob(os.path.join(glob.escape(base), "ansible-tmp-*", "AnsiballZ_cloudx_scan.py"))):
            data = _read(copy)
            if data and any(marker in data for marker in markers):
                found.append(os.path.dirname(copy))
    return found


def remove_tree(path: str) -> bool:
    if os.path.islink(path):
        os.unlink(path)
        return True
    if not os.path.lexists(path):
        return False
    for attempt in range(10):
        try:
            shutil.rmtree(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            # A process of the scan wrote a file while the tree was being removed.
            if attempt == 9:
                raise
            time.sleep(0.2)
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            work_dir=dict(type="path", required=True),
            async_dir=dict(type="path"),
            wait=dict(type="int", default=10),
        ),
        supports_check_mode=True,
    )
    work_dir = os.path.abspath(module.params["work_dir"])
    async_dir = os.path.abspath(module.params["async_dir"] or os.path.join(work_dir, "async"))
    if os.path.dirname(work_dir) == work_dir or work_dir == os.path.expanduser("~"):
        module.fail_json(msg=f"refusing to remove {work_dir}")
    procs = find_processes(work_dir, async_dir, _status_pids(work_dir))
    exists = os.path.lexists(work_dir)
    result: Dict[str, Any] = {"work_dir": work_dir, "stopped": [p.pid for p in procs if p.kind != "wrapper"]}
    if module.check_mode:
        copies = module_copies(module._remote_tmp, work_dir)
        module.exit_json(changed=bool(result["stopped"] or copies) or exists, removed=exists, module_copies=len(copies), **result)
    left = stop(procs, module.params["wait"]) if procs else []
    try:
        removed = remove_tree(work_dir)
        copies = module_copies(module._remote_tmp, work_dir)
        for copy in copies:
            remove_tree(copy)
    except OSError as exc:
        module.fail_json(msg=f"could not remove {exc.filename or work_dir}: {exc}", **result)
    left = [p.pid for p in left if p.kind != "wrapper" and p.alive()]
    if left:
        result["still_running"] = left
    module.exit_json(changed=bool(result["stopped"] or copies) or removed, removed=removed, module_copies=len(copies), **result)


if __name__ == "__main__":
    main()
