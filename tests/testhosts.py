"""Test hosts: network namespaces joined to this machine by veth pairs (see ../shared/TESTHOSTS.md).

Each host gets its own 198.18.N.0/24 (RFC 2544 benchmarking space): the machine
is .1, the host .2. A host runs lab_listener.py for its services and nftables
rules for filtered ports. Everything a Lab creates is recorded under
/run/cloudx-testhosts so a later run removes what an interrupted one left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path("/run/cloudx-testhosts")
PREFIX = "cxt"
LISTENER = Path(__file__).with_name("lab_listener.py")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def available() -> str | None:
    """Why test hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, raw sockets)"
    for tool in ("ip", "nft", "nmap", "masscan", "zmap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@dataclass
class TestHost:
    name: str
    netns: str
    subnet: ipaddress.IPv4Network
    outer_if: str
    inner_if: str
    listener: subprocess.Popen[str] | None = None
    tcp: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.subnet.network_address + 2)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def mac(self) -> str:
        return run("ip", "netns", "exec", self.netns, "cat", f"/sys/class/net/{self.inner_if}/address").stdout.strip()

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.netns, *argv, check=check)


class Lab:
    """A set of test hosts owned by this process."""

    def __init__(self) -> None:
        self.id = PREFIX + uuid.uuid4().hex[:5]
        self.hosts: list[TestHost] = []
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        cleanup_stale()
        self.state_file = STATE_DIR / f"{self.id}.json"
        self._save()

    def _save(self) -> None:
        self.state_file.write_text(json.dumps({"pid": os.getpid(), "netns": [h.netns for h in self.hosts]}))

    def add_host(
        self,
        tcp: list[int] = (),  # type: ignore[assignment]
        http: list[int] = (),  # type: ignore[assignment]
        udp_echo: list[int] = (),  # type: ignore[assignment]
        udp_silent: list[int] = (),  # type: ignore[assignment]
        drop_tcp: list[int] = (),  # type: ignore[assignment]
        drop_udp: list[int] = (),  # type: ignore[assignment]
    ) -> TestHost:
        index = len(self.hosts)
        name = f"{self.id}h{index}"
        host = TestHost(name=name, netns=name, subnet=free_subnet(), outer_if=f"{name}a", inner_if=f"{name}b", tcp=list(tcp))
        self.hosts.append(host)
        self._save()
        run("ip", "netns", "add", host.netns)
        run("ip", "link", "add", host.outer_if, "type", "veth", "peer", "name", host.inner_if)
        run("ip", "link", "set", host.inner_if, "netns", host.netns)
        run("ip", "addr", "add", f"{host.gateway}/{host.subnet.prefixlen}", "dev", host.outer_if)
        run("ip", "link", "set", host.outer_if, "up")
        host.exec("ip", "addr", "add", f"{host.address}/{host.subnet.prefixlen}", "dev", host.inner_if)
        host.exec("ip", "link", "set", host.inner_if, "up")
        host.exec("ip", "link", "set", "lo", "up")
        host.exec("ip", "route", "add", "default", "via", host.gateway)
        if drop_tcp or drop_udp:
            rules = ["table inet lab {", " chain input {", "  type filter hook input priority 0; policy accept;"]
            rules += [f"  tcp dport {p} drop" for p in drop_tcp] + [f"  udp dport {p} drop" for p in drop_udp]
            rules += [" }", "}"]
            subprocess.run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], input="\n".join(rules), text=True, check=True)
        argv = ["ip", "netns", "exec", host.netns, sys.executable, str(LISTENER), "--bind", host.address]
        for option, values in (("--tcp", tcp), ("--http", http), ("--udp-echo", udp_echo), ("--udp-silent", udp_silent)):
            if values:
                argv += [option, ",".join(map(str, values))]
        host.listener = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd="/tmp")
        assert host.listener.stdout is not None
        if host.listener.stdout.readline().strip() != "ready":
            raise RuntimeError(f"listener on {name} did not start")
        return host

    def close(self) -> None:
        for host in self.hosts:
            if host.listener is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.listener.pid, signal.SIGKILL)
                host.listener.wait()
        remove_netns([h.netns for h in self.hosts])
        self.hosts.clear()
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def free_subnet() -> ipaddress.IPv4Network:
    used = run("ip", "-4", "-o", "addr", "show").stdout
    for third in range(10 + os.getpid() % 200, 256):
        subnet = ipaddress.ip_network(f"198.18.{third}.0/24")
        if f"198.18.{third}." not in used:
            return subnet
    raise RuntimeError("no free /24 in 198.18.0.0/16")


def remove_netns(names: list[str]) -> None:
    for name in names:
        # Processes still inside the namespace (listeners, scanners) go first.
        pids = run("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "link", "del", f"{name}a", check=False)
        run("ip", "netns", "del", name, check=False)


def cleanup_stale() -> None:
    """Remove namespaces left by labs whose process is gone (an interrupted or killed run)."""
    for state in STATE_DIR.glob(f"{PREFIX}*.json"):
        try:
            data = json.loads(state.read_text())
            os.kill(int(data["pid"]), 0)
            continue
        except ProcessLookupError:
            remove_netns(data.get("netns", []))
        except (ValueError, KeyError, OSError):
            pass
        state.unlink(missing_ok=True)


def wait_for(predicate: object, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
