#!/usr/bin/python
# Runs one nmap, masscan or zmap scan on the scanner host: in a detached process of its own (detach), or
# started with `async`, and watched with cloudx_scan_status.
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import time
from typing import Any, Dict, List, Tuple

from ansible.module_utils.basic import AnsibleModule

# From a checkout (roles_path) the scanner role's module_utils/ provide it; installed as the collection
# cloudx.security, its plugins/module_utils/. ansible-core packs whichever of the two it finds.
try:
    from ansible.module_utils.cloudx_scanner import (
        ScanInputError,
        Shard,
        build_argv,
        copy_results,
        masscan_progress,
        nmap_overall_percent,
        nmap_progress,
        parse_output,
        probed_ports,
        read_json,
        remove_ended_work_dir,
        renew_lease,
        validate_request,
        validate_retries,
        validate_shard,
        write_jsonl,
        zmap_progress,
    )
except ImportError:
    from ansible_collections.cloudx.security.plugins.module_utils.cloudx_scanner import (
        ScanInputError,
        Shard,
        build_argv,
        copy_results,
        masscan_progress,
        nmap_overall_percent,
        nmap_progress,
        parse_output,
        probed_ports,
        read_json,
        remove_ended_work_dir,
        renew_lease,
        validate_request,
        validate_retries,
        validate_shard,
        write_jsonl,
        zmap_progress,
    )

DOCUMENTATION = r"""
module: cloudx_scan
short_description: Run one nmap, masscan or zmap scan and normalize its results
author: Cloud-X playbooks
description:
  - Validates the request, builds the scanner's argument list (never a shell), runs it in its own process
    group with a hard timeout, writes progress to C(status.json) in O(work_dir) while it runs, and on exit
    writes the raw output, C(hosts.jsonl) (one normalized host per line) and C(summary.json).
  - The scan stops by itself when the lease file in O(work_dir) is not refreshed for O(lease_seconds)
    (cloudx_scan_status refreshes it), so a stopped playbook never leaves a scanner process behind.
    A scan that ends with its lease expired (nobody polls it, so nobody will fetch its results) then
    removes O(work_dir) with everything in it, the async job's status file too when the async directory
    (C(ansible_async_dir)) is inside it.
  - O(work_dir) is made mode 0700 even when the async wrapper created it first.
  - "With O(detach), no C(async) is needed: the scan runs in a process of its own (a new session, detached from
    the task, so that the task may return while it runs), and the task waits up to O(detach_wait) seconds for
    its end, renewing the lease meanwhile. A scan that ended by then is returned as cloudx_scan_status returns
    an ended scan (C(finished), C(summary), with O(results_dir) its result files copied, with
    O(remove_work_dir) its work directory removed); else C(finished=false) and its progress, and
    cloudx_scan_status follows it. That process also ends the scan O(timeout) + 120 seconds after its start
    (as C(async) would), and C(cloudx_scan_cleanup) finds it (it holds O(work_dir) open)."
  - In check mode nothing runs; the planned argument list is returned.
options:
  tool:
    description: The scanner.
    type: str
    required: true
    choices: [nmap, masscan, zmap]
  scan_type:
    description:
      - The scan type of that tool.
      - nmap default, quick, intense, tcp, udp; zmap tcp_syn, icmp_echo; masscan tcp_scan, udp_scan, ping_scan.
    type: str
    required: true
  target:
    description: An IPv4 or IPv6 address, a CIDR network, or a hostname (nmap only); never starts with C(-).
    type: str
    required: true
  ports:
    description: Ports such as C(22,80,8000-8100); required by zmap tcp_syn and masscan tcp_scan and udp_scan.
    type: str
  work_dir:
    description: The scan's own directory on the scanner host (status, lease, raw output, results).
    type: path
    required: true
  timeout:
    description: Hard limit in seconds; the scanner then gets SIGINT, SIGTERM and SIGKILL.
    type: int
    default: 1800
  lease_seconds:
    description: The scan stops by itself when its lease file is not refreshed for this long.
    type: int
    default: 15
  interface:
    description: Outgoing interface for masscan and zmap; empty means discovered from the route to the target.
    type: str
    default: ""
  gateway_mac:
    description: MAC address of the next hop for masscan and zmap; empty means discovered from the neighbour table.
    type: str
    default: ""
  source_ip:
    description: Source address for masscan; empty means the route's preferred source.
    type: str
    default: ""
  exclude:
    description: CIDR networks never probed.
    type: list
    elements: str
    default: []
  use_system_blocklist:
    description: zmap also honours C(/etc/zmap/blocklist.conf).
    type: bool
    default: true
  rate:
    description: Packets per second for masscan and zmap; for a sharded scan, of this shard (each scanner sends at this rate).
    type: int
    default: 1000
  retries:
    description:
      - Probes sent again to an address that did not answer, 0 to 10 - masscan C(--retries N), zmap C(-P N+1); nmap
        retransmits by itself. masscan drops a few replies even at low rates (2% at 100 packets/s, 17% at 2,000 on a
        veth here); one retry found every address.
    type: int
    default: 0
  shards:
    description:
      - Split the scan into this many shards (1 to 64), each run by its own scanner, with the tool's own mechanism.
      - zmap C(--shards N --shard i --seed S), masscan C(--shard i+1/N --seed S) with a source port of its own (61000 + i);
        nmap scans the O(shard)-th of O(shards)
        contiguous blocks of the target's addresses (an address or a network; not a hostname).
    type: int
    default: 1
  shard:
    description: Which shard this scan is, from 0 to O(shards) - 1.
    type: int
    default: 0
  seed:
    description:
      - The address permutation's seed of a sharded zmap or masscan scan, 0 to 4294967295; required for those, the
        same for every shard of a scan (shards with different seeds would miss and repeat addresses).
    type: int
  wait:
    description: Seconds masscan and zmap keep listening after the last probe.
    type: int
    default: 5
  max_addresses:
    description: Larger CIDR targets are refused before anything is sent.
    type: int
    default: 65536
  keep_work_dir:
    description: Keep O(work_dir) even when the scan ends with its lease expired.
    type: bool
    default: false
  detach:
    description: Run the scan in a detached process of its own and return within O(detach_wait) seconds (no C(async)).
    type: bool
    default: false
  detach_wait:
    description: With O(detach), seconds to wait for the scan's end before returning its progress.
    type: int
    default: 0
  results_dir:
    description:
      - With O(detach), once the scan has ended within O(detach_wait), copy its result files (O(result_files))
        into this directory on the scanner host (created when missing); empty copies nothing.
    type: path
    default: ""
  result_files:
    description: The names of the result files in O(work_dir) that O(results_dir) gets (missing ones are skipped).
    type: list
    elements: str
    default: []
  remove_work_dir:
    description: With O(detach), once the scan has ended within O(detach_wait) (and O(results_dir) got its files), remove O(work_dir).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Start a scan and wait up to 2 s for its end
  cloudx_scan:
    tool: nmap
    scan_type: default
    target: 192.0.2.10
    ports: "22,80,443"
    work_dir: /var/tmp/cloudx-scans/example
    detach: true
    detach_wait: 2
  register: scan_job

- name: Start a scan in the background
  cloudx_scan:
    tool: nmap
    scan_type: default
    target: 192.0.2.10
    ports: "22,80,443"
    work_dir: /var/tmp/cloudx-scans/example
  async: 1920
  poll: 0
  register: scan_job
"""

RETURN = r"""
summary:
  description:
    - What the scanner reported about the run.
    - State (completed, timeout, stopped, failed), argv, rc, elapsed, counts, error, files, probed, shard (index, count, seed).
    - With O(detach), for a scan that ended before it wrote one (it failed to start), C(state) (failed) and C(error) only.
  returned: when the scan ran; with O(detach), when it ended within O(detach_wait)
  type: dict
finished:
  description: Whether the scan has ended.
  returned: with O(detach)
  type: bool
cloudx_scan_progress:
  description: The scan's status (state, percent, phase, elapsed seconds, pids), as cloudx_scan_status returns it.
  returned: with O(detach)
  type: dict
msg:
  description: Why the scan failed, when it ended without a summary.
  returned: with O(detach), when the scan ended failed
  type: str
copied:
  description: The result files copied to O(results_dir).
  returned: with O(detach), when the scan ended within O(detach_wait) and O(results_dir) is set
  type: list
  elements: str
removed:
  description: Whether O(work_dir) was removed.
  returned: with O(detach), when the scan ended within O(detach_wait) and O(remove_work_dir) is set
  type: bool
argv:
  description: The planned argument list.
  returned: in check mode
  type: list
  elements: str
state:
  description: C(planned) in check mode.
  returned: in check mode
  type: str
"""

ZMAP_SYSTEM_BLOCKLIST = "/etc/zmap/blocklist.conf"
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
# With detach: how long the task waits for the scan's process to write its first status (it does at once), and
# how much longer than its timeout that process may run (the margin `async` is given in the role).
START_GRACE = 10.0
HARD_LIMIT_MARGIN = 120


def _die_with_parent() -> None:
    # Runs in the child before exec: if this module is killed, the scanner dies too.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _write_json(path: str, data: Dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(tmp, path)


def _ip_json(args: List[str]) -> List[Dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False, timeout=10)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return json.loads(out.stdout)


def discover_link(target: str) -> Dict[str, str]:
    """Interface, source address and next-hop MAC for the route to the target.

    zmap and masscan write raw frames, so they need the MAC of the next hop: the
    gateway's, or on a directly attached network the first target's own.
    """
    network = ipaddress.ip_network(target, strict=False)
    route: Dict[str, Any] = {}
    # The first address of the target that is not one of the scanner's own.
    for probe in itertools.islice(network.hosts() if network.num_addresses > 2 else iter(network), 16):
        routes = _ip_json(["route", "get", str(probe)])
        if routes and routes[0].get("type", "unicast") != "local" and routes[0].get("dev") != "lo":
            route = routes[0]
            break
    if not route:
        raise ScanInputError("interface", f"no route from the scanner host to {target}")
    next_hop = route.get("gateway") or str(probe)
    device = route.get("dev", "")
    mac = ""
    for attempt in range(5):  # about 7 s in all: a loaded scanner host answers ARP late
        for neigh in _ip_json(["neigh", "show", "to", next_hop, "dev", device]):
            if neigh.get("lladdr") and "FAILED" not in neigh.get("state", []):
                mac = neigh["lladdr"]
        if mac:
            break
        # Resolve the neighbour by sending one datagram to the discard port of the next hop.
        with _udp_socket(next_hop) as sock, contextlib.suppress(OSError):
            sock.sendto(b"", (next_hop, 9))
        time.sleep(0.5 * (attempt + 1))
    if not mac:
        raise ScanInputError("gateway_mac", f"could not resolve the MAC address of {next_hop} on {device}; set scanner_gateway_mac")
    return {"interface": device, "gateway_mac": mac, "source_ip": route.get("prefsrc", "")}


def _udp_socket(address: str) -> Any:
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.socket(family, socket.SOCK_DGRAM)


class ScanRun:
    def __init__(self, module: AnsibleModule, request: Dict[str, Any], shard: Shard) -> None:
        p = module.params
        self.module = module
        self.request = request
        self.shard = shard
        self.work_dir = p["work_dir"]
        self.timeout = p["timeout"]
        self.lease_seconds = p["lease_seconds"]
        self.wait = p["wait"]
        self.tool = request["tool"]
        ext = {"nmap": "xml", "masscan": "json", "zmap": "csv"}[self.tool]
        self.files = {
            "raw": os.path.join(self.work_dir, f"raw.{ext}"),
            "stdout": os.path.join(self.work_dir, "stdout.txt"),
            "stderr": os.path.join(self.work_dir, "stderr.txt"),
            "hosts": os.path.join(self.work_dir, "hosts.jsonl"),
            "summary": os.path.join(self.work_dir, "summary.json"),
        }
        self.status_file = os.path.join(self.work_dir, "status.json")
        self.lease_file = os.path.join(self.work_dir, "lease")
        self.percent = 0.0
        self.phase = "starting"
        self.offset = 0
        self.masscan_done_at: float | None = None
        self.started = time.time()

    def plan(self, link: Dict[str, str], exclude_file: str) -> List[str]:
        p = self.module.params
        return build_argv(
            self.request,
            self.files["raw"],
            interface=link.get("interface", ""),
            gateway_mac=link.get("gateway_mac", ""),
            source_ip=link.get("source_ip", ""),
            exclude_file=exclude_file,
            rate=p["rate"],
            wait=p["wait"],
            shard=self.shard,
            retries=p["retries"],
        )

    def status(self, state: str, **extra: Any) -> None:
        data = {
            "state": state,
            "percent": round(self.percent, 2),
            "phase": self.phase,
            "pid": os.getpid(),
            "elapsed": round(time.time() - self.started, 1),
            "timeout": self.timeout,
        }
        data.update(extra)
        _write_json(self.status_file, data)

    def read_progress(self) -> None:
        if self.tool == "nmap":
            chunk = self._read_new(self.files["raw"])
            found = nmap_progress(chunk) if chunk else None
            if found:
                self.phase = found[0]
                self.percent = max(self.percent, nmap_overall_percent(*found))
        elif self.tool == "masscan":
            chunk = self._read_new(self.files["stderr"])
            found = masscan_progress(chunk.decode("utf-8", "replace")) if chunk else None
            if found:
                self.phase = "waiting for replies" if found["percent"] >= 100 else "sending probes"
                self.percent = max(self.percent, found["percent"] * 0.95)
                if found["percent"] >= 100 and self.masscan_done_at is None:
                    self.masscan_done_at = time.time()
        elif self.tool == "zmap":
            chunk = self._read_new(self.files["stderr"])
            found_pct = zmap_progress(chunk.decode("utf-8", "replace")) if chunk else None
            if found_pct is not None:
                self.phase = "sending probes" if found_pct < 100 else "waiting for replies"
                self.percent = max(self.percent, found_pct * 0.95)

    def _read_new(self, path: str) -> bytes:
        try:
            with open(path, "rb") as stream:
                stream.seek(self.offset)
                chunk = stream.read()
        except OSError:
            return b""
        # Keep the tail of a line that may still be being written (masscan ends its status lines with CR).
        cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
        self.offset += cut
        return chunk[:cut]

    def lease_expired(self) -> bool:
        try:
            return time.time() - os.stat(self.lease_file).st_mtime > self.lease_seconds
        except OSError:
            return True

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGINT, then SIGTERM, then SIGKILL to the scanner's whole process group."""
        for sig, grace in ((signal.SIGINT, 4), (signal.SIGTERM, 3), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # anything the scanner left in its group
            os.killpg(proc.pid, signal.SIGKILL)

    def run(self, argv: List[str]) -> Dict[str, Any]:
        ending = "completed"
        with open(self.files["stdout"], "wb") as out, open(self.files["stderr"], "wb") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            try:
                ending = self._watch(proc)
            except BaseException:  # SystemExit from SIGTERM (cloudx_scan_cleanup): the scanner goes too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise
        rc = proc.returncode
        self.read_progress()
        info: Dict[str, Any] = {}
        counts = {"hosts_up": 0, "hosts": 0, "open_ports": 0}

        def count(host: Dict[str, Any]) -> None:
            counts["hosts"] += 1
            counts["hosts_up"] += host["status"] == "up"
            counts["open_ports"] += sum(1 for port in host["ports"] if port["state"] == "open")

        stdout_file = self.files["stdout"] if self.tool == "masscan" else None
        write_jsonl(parse_output(self.tool, self.files["raw"], stdout_file, info), self.files["hosts"], count)
        if ending == "completed" and rc not in (0, None) and not (self.tool == "masscan" and rc < 0):
            ending = "failed"
        error = info.get("error") or (self._stderr_tail() if ending == "failed" else None)
        summary = {
            "state": ending,
            "tool": self.tool,
            "scan_type": self.request["scan_type"],
            "target": self.request["target"],
            "ports": self.request["ports"],
            "argv": argv,
            "rc": rc,
            "elapsed": round(time.time() - self.started, 1),
            "truncated": bool(info.get("truncated")) and ending != "completed",
            "error": error,
            "files": {name: os.path.basename(path) for name, path in self.files.items()},
            "probed": probed_ports(self.tool, self.request["scan_type"], self.request["ports"], info),
            "shard": {"index": self.shard.index, "count": self.shard.count, "seed": self.shard.seed},
        }
        summary.update(counts)
        _write_json(self.files["summary"], summary)
        self.percent = 100.0 if ending == "completed" else self.percent
        self.phase = ending
        self.status("finished", result=ending)
        return summary

    def _watch(self, proc: subprocess.Popen) -> str:
        """Follow the scanner until it ends, or stop it; how the scan ended."""
        self.status("running", scanner_pid=proc.pid)
        deadline = self.started + self.timeout
        # Wait on the scanner itself: its end is seen at once (its last status follows in run()). A pidfd
        # says so the moment it exits; Popen.wait(timeout) alone looks up to 50 ms late.
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None
        try:
            return self._follow(proc, pidfd, deadline)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _follow(self, proc: subprocess.Popen, pidfd: int | None, deadline: float) -> str:
        ending = "completed"
        while True:
            if pidfd is not None:
                select.select([pidfd], [], [], 0.5)
            try:
                proc.wait(timeout=0 if pidfd is not None else 0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            self.read_progress()
            now = time.time()
            if now > deadline:
                ending = "timeout"
            elif self.lease_expired():
                ending = "stopped"
            elif self.masscan_done_at is not None and now - self.masscan_done_at > self.wait + 2:
                # masscan 1.3.2 may keep "waiting" forever after its --wait: end it here.
                ending = "completed"
            else:
                self.status("running", scanner_pid=proc.pid)
                continue
            self.phase = "stopping" if ending != "completed" else "finishing"
            self.status("running", scanner_pid=proc.pid)
            self.stop(proc)
            break
        return ending

    def _stderr_tail(self) -> str:
        try:
            with open(self.files["stderr"], "rb") as stream:
                stream.seek(max(0, os.path.getsize(self.files["stderr"]) - 2000))
                text = stream.read().decode("utf-8", "replace").replace("\r", "\n")
        except OSError:
            return "scanner failed"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "scanner failed"


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def write_exclude_file(path: str, exclude: List[str], system_blocklist: str | None) -> str:
    lines: List[str] = []
    if system_blocklist and os.path.exists(system_blocklist):
        with open(system_blocklist, encoding="utf-8") as stream:
            lines.extend(line.rstrip("\n") for line in stream)
    for entry in exclude:
        lines.append(ipaddress.ip_network(entry, strict=False).with_prefixlen)
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def _validate_params(p: Dict[str, Any]) -> Tuple[Dict[str, Any], Shard]:
    """The validated scan request and its shard; ScanInputError names the refused option."""
    request = validate_request(p["tool"], p["scan_type"], p["target"], p["ports"])
    shard = validate_shard(request, p["shard"], p["shards"], p["seed"])
    validate_retries(p["retries"])
    if "/" in request["target"]:
        size = ipaddress.ip_network(request["target"]).num_addresses
        if size > p["max_addresses"]:
            raise ScanInputError("target", f"target covers {size} addresses, more than max_addresses ({p['max_addresses']})")
    for entry in p["exclude"]:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ScanInputError("exclude", f"exclude entry {entry!r} is not an address or a CIDR network") from None
    if p["timeout"] < 1 or p["lease_seconds"] < 3:
        raise ScanInputError("timeout", "timeout must be at least 1 s and lease_seconds at least 3 s")
    return request, shard


def _prepare_work_dir(run: ScanRun) -> None:
    os.makedirs(run.work_dir, mode=0o700, exist_ok=True)
    # The async wrapper may have created it (for its status file) with the default permissions.
    os.chmod(run.work_dir, 0o700)
    with open(run.lease_file, "w", encoding="utf-8"):
        pass
    # A summary left by an earlier run of this scan id is not this scan's.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(run.files["summary"])


def _plan(run: ScanRun, p: Dict[str, Any], link: Dict[str, str]) -> List[str]:
    """The scanner's argument list: the link discovered for masscan and zmap when not given, the exclude file written."""
    tool, target = run.request["tool"], run.request["target"]
    if tool in ("zmap", "masscan") and not (link["interface"] and link["gateway_mac"]):
        found = discover_link(target)
        link = {key: link[key] or found[key] for key in link}
    exclude_file = ""
    if tool == "zmap" or p["exclude"]:
        system = ZMAP_SYSTEM_BLOCKLIST if tool == "zmap" and p["use_system_blocklist"] else None
        exclude_file = write_exclude_file(os.path.join(run.work_dir, "exclude.txt"), p["exclude"], system)
    return run.plan(link, exclude_file)


def _scan(run: ScanRun, p: Dict[str, Any], link: Dict[str, str]) -> Dict[str, Any] | None:
    """Plan and run the scan in this process: its summary, or None when it could not be planned (its status
    then says why). Removes the work dir of a scan nobody polls."""
    try:
        argv = _plan(run, p, link)
    except (ScanInputError, ValueError, OSError, subprocess.SubprocessError) as exc:
        message = exc.message if isinstance(exc, ScanInputError) else str(exc)
        run.status("finished", result="failed", error=message)
        return None
    summary = run.run(argv)
    if not p["keep_work_dir"] and (summary["state"] == "stopped" or run.lease_expired()):
        # Nobody is polling, so nobody will fetch the results: leave nothing of the scan behind.
        shutil.rmtree(run.work_dir, ignore_errors=True)
    return summary


def _module_copy() -> str:
    """The folder of this module's copy in Ansible's remote tmp dir (it embeds the scan's arguments), from this
    process's own command line; empty when there is none (pipelining)."""
    try:
        with open("/proc/self/cmdline", "rb") as stream:
            argv = stream.read().split(b"\0")
    except OSError:
        return ""
    path = os.path.realpath(os.fsdecode(argv[1])) if len(argv) > 1 and argv[1] else ""
    folder = os.path.dirname(path)
    if os.path.basename(path) == "AnsiballZ_cloudx_scan.py" and os.path.basename(folder).startswith("ansible-tmp-"):
        return folder
    return ""


def _detached(run: ScanRun, p: Dict[str, Any], link: Dict[str, str], notify: int, copy: str) -> None:
    """The scan's own process (a new session's, reparented): runs the scan and exits, never returns. Writes one
    byte to `notify` once its first status is written; its exit closes `notify` (the task sees the end). At its
    end it removes `copy` (as the async wrapper removed its copy of the module): left there when the task that
    started the scan was killed."""
    code = 1
    try:
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the task's pipes: the task (and ssh) must not wait for this process
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        # cloudx_scan_cleanup knows this process (status.json's pid) by the work dir it holds open.
        held = os.open(run.work_dir, os.O_RDONLY)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_NAME, b"cloudx_scan")
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # What async's limit was: SIGALRM ends the scan (the scanner too) when it outlives its timeout.
        signal.signal(signal.SIGALRM, _terminate)
        signal.alarm(p["timeout"] + HARD_LIMIT_MARGIN)
        run.status("starting")
        os.write(notify, b"s")
        try:
            _scan(run, p, link)
        except Exception as exc:  # the scanner could not be started, say: the poll reports it, not a dead pid
            run.status("finished", result="failed", error=f"{type(exc).__name__}: {exc}")
            if not p["keep_work_dir"] and run.lease_expired():
                shutil.rmtree(run.work_dir, ignore_errors=True)
        code = 0
        os.close(held)
    except BaseException:  # SIGTERM (cloudx_scan_cleanup) or SIGALRM: run() has killed the scanner
        pass
    finally:
        if copy:
            shutil.rmtree(copy, ignore_errors=True)
        os._exit(code)


def _start_detached(run: ScanRun, p: Dict[str, Any], link: Dict[str, str], keep_copy: bool) -> bool:
    """Start the scan in a process of its own and wait up to detach_wait for its end (renewing the lease);
    whether it ended."""
    _prepare_work_dir(run)
    copy = "" if keep_copy else _module_copy()
    readable, notify = os.pipe()
    child = os.fork()
    if child == 0:  # a double fork: the scan's process is nobody's child here, in a session of its own
        try:
            os.close(readable)
            os.setsid()
            if os.fork() == 0:
                _detached(run, p, link, notify, copy)
        finally:
            os._exit(0)
    os.close(notify)
    os.waitpid(child, 0)
    started = ended = False
    began = time.monotonic()
    deadline = began + max(0, p["detach_wait"])
    try:
        while not ended:
            now = time.monotonic()
            limit = deadline if started else max(deadline, began + START_GRACE)
            if now >= limit:
                break
            ready, _, _ = select.select([readable], [], [], min(1.0, limit - now))
            if ready:
                data = os.read(readable, 64)
                started = started or bool(data)
                ended = not data
            renew_lease(run.work_dir)
    finally:
        os.close(readable)
    return ended


def _run_detached(module: AnsibleModule, run: ScanRun, p: Dict[str, Any], link: Dict[str, str]) -> None:
    """The scan in a process of its own: exit_json with its progress, or its end as cloudx_scan_status returns it."""
    ended = _start_detached(run, p, link, bool(getattr(module, "_keep_remote_files", False)))
    status = read_json(run.status_file)
    if not ended:
        if status is None:
            module.fail_json(msg=f"the scan did not start within {START_GRACE:.0f} s", finished=True)
        module.exit_json(changed=False, finished=False, cloudx_scan_progress=status)
    if status is None or status.get("state") != "finished":
        module.fail_json(msg="the scan process ended without a result", finished=True, cloudx_scan_progress=status or {})
    summary = read_json(run.files["summary"])
    result: Dict[str, Any] = {"changed": False, "finished": True, "cloudx_scan_progress": status}
    if summary is None:
        result["msg"] = str(status.get("error") or "the scan ended without a result")
        summary = {"state": "failed", "error": result["msg"]}
    result["summary"] = summary
    try:
        if p["results_dir"]:
            result["copied"] = copy_results(run.work_dir, p["results_dir"], p["result_files"])
            result["changed"] = bool(result["copied"])
        if p["remove_work_dir"]:
            # The scan's process has exited (its end closed the pipe): nothing writes there any more.
            result["removed"] = remove_ended_work_dir(run.work_dir, None)
    except OSError as exc:
        module.fail_json(msg=f"could not copy the results or remove {run.work_dir}: {exc}", **result)
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            tool=dict(type="str", required=True, choices=["nmap", "masscan", "zmap"]),
            scan_type=dict(type="str", required=True),
            target=dict(type="str", required=True),
            ports=dict(type="str"),
            work_dir=dict(type="path", required=True),
            timeout=dict(type="int", default=1800),
            lease_seconds=dict(type="int", default=15),
            interface=dict(type="str", default=""),
            gateway_mac=dict(type="str", default=""),
            source_ip=dict(type="str", default=""),
            exclude=dict(type="list", elements="str", default=[]),
            use_system_blocklist=dict(type="bool", default=True),
            rate=dict(type="int", default=1000),
            retries=dict(type="int", default=0),
            shards=dict(type="int", default=1),
            shard=dict(type="int", default=0),
            seed=dict(type="int"),
            wait=dict(type="int", default=5),
            max_addresses=dict(type="int", default=65536),
            keep_work_dir=dict(type="bool", default=False),
            detach=dict(type="bool", default=False),
            detach_wait=dict(type="int", default=0),
            results_dir=dict(type="path", default=""),
            result_files=dict(type="list", elements="str", default=[]),
            remove_work_dir=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        request, shard = _validate_params(p)
    except ScanInputError as exc:
        module.fail_json(msg=exc.message, field=exc.field)

    run = ScanRun(module, request, shard)
    link = {"interface": p["interface"], "gateway_mac": p["gateway_mac"], "source_ip": p["source_ip"]}
    if module.check_mode:
        module.exit_json(changed=False, argv=run.plan(link, ""), state="planned")

    # SIGTERM (cloudx_scan_cleanup) ends the module through SystemExit: run() kills the scanner, and Ansible's
    # module wrapper removes the module's unpacked payload.
    signal.signal(signal.SIGTERM, _terminate)
    if p["detach"]:
        _run_detached(module, run, p, link)
    _prepare_work_dir(run)
    summary = _scan(run, p, link)
    if summary is None:
        module.fail_json(msg=str((read_json(run.status_file) or {}).get("error") or "the scan could not be planned"))
    if summary["state"] == "failed":
        module.fail_json(msg="{} failed: {}".format(request["tool"], summary["error"]), summary=summary)
    module.exit_json(changed=False, summary=summary)


if __name__ == "__main__":
    main()
