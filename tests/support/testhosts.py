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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.waiting import wait_for

STATE_DIR = Path("/run/cloudx-testhosts")
ROOTFS = Path("/var/cache/cloudx-testhosts/rootfs-bookworm")
HOSTS_DIR = Path("/var/lib/cloudx-testhosts")
PREFIX = "cxt"
LISTENER = Path(__file__).with_name("lab_listener.py")
ROOTFS_PACKAGES = "openssh-server,python3,python3-apt,systemd,systemd-sysv,dbus,iproute2,procps"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def available() -> str | None:
    """Why test hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, raw sockets)"
    for tool in ("ip", "nft", "nmap", "masscan", "zmap", "debootstrap", "systemd-nspawn"):
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
    machine: subprocess.Popen[bytes] | None = None
    root: Path | None = None
    network: ipaddress.IPv4Network | None = None  # add_network's: every address of it answers

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

    def shell(self, command: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside a booted host (its own mount, PID and network namespaces)."""
        assert self.machine is not None, "not a booted host"
        leader = _container_leader(self.machine.pid)
        argv = ["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "--", "/bin/sh", "-c", command]
        return subprocess.run(argv, check=check, capture_output=True, text=True, input=stdin)

    def host_keys(self) -> list[str]:
        assert self.root is not None
        return [p.read_text().strip() for p in sorted((self.root / "etc/ssh").glob("ssh_host_*_key.pub"))]


class Lab:
    """A set of test hosts owned by this process."""

    def __init__(self) -> None:
        self.id = PREFIX + uuid.uuid4().hex[:5]
        self.hosts: list[TestHost] = []
        self._addresses: list[str] = []  # on lo, for fake servers
        self._service_address: str | None = None
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        cleanup_stale()
        self.state_file = STATE_DIR / f"{self.id}.json"
        self._save()

    def _save(self) -> None:
        state = {
            "pid": os.getpid(),
            "netns": [h.netns for h in self.hosts],
            "roots": [str(h.root) for h in self.hosts if h.root],
            "addresses": self._addresses,
        }
        self.state_file.write_text(json.dumps(state))

    def _network_host(self) -> TestHost:
        """A namespace joined to this machine by a veth pair, with the host at .2 of its own /24."""
        name = f"{self.id}h{len(self.hosts)}"
        host = TestHost(name=name, netns=name, subnet=free_subnet(), outer_if=f"{name}a", inner_if=f"{name}b")
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
        return host

    def add_host(
        self,
        tcp: list[int] = (),  # type: ignore[assignment]
        http: list[int] = (),  # type: ignore[assignment]
        udp_echo: list[int] = (),  # type: ignore[assignment]
        udp_silent: list[int] = (),  # type: ignore[assignment]
        drop_tcp: list[int] = (),  # type: ignore[assignment]
        drop_udp: list[int] = (),  # type: ignore[assignment]
    ) -> TestHost:
        """A light host for scans: the namespace alone, with listeners and nftables drop rules."""
        host = self._network_host()
        host.tcp = list(tcp)
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
            raise RuntimeError(f"listener on {host.name} did not start")
        return host

    def add_network(self, prefixlen: int = 22, tcp: list[int] = (8080,)) -> TestHost:  # type: ignore[assignment]
        """A whole network of answering addresses in one namespace (../shared/TESTHOSTS.md): every address of
        `host.network` is the namespace's own and is routed to it from this machine; listeners on 0.0.0.0 (with a
        listen backlog that drops no SYN) accept on the `tcp` ports of every address, the others answer RST."""
        host = self._network_host()
        host.tcp = list(tcp)
        with _network_lock():  # another test run may be choosing one right now
            host.network = free_network(prefixlen)
            # The route goes with the veth when the namespace is removed.
            run("ip", "route", "add", str(host.network), "via", host.address, "dev", host.outer_if)
        host.exec("ip", "route", "add", "local", str(host.network), "dev", "lo")
        # Per namespace: a backlog of 64 drops SYNs of a fast scan (masscan then misses addresses).
        host.exec("sysctl", "-q", "-w", "net.core.somaxconn=65535")
        host.exec("sysctl", "-q", "-w", "net.ipv4.tcp_max_syn_backlog=65535")
        argv = ["ip", "netns", "exec", host.netns, sys.executable, str(LISTENER), "--bind", "0.0.0.0", "--backlog", "65535"]
        argv += ["--tcp", ",".join(map(str, tcp))]
        host.listener = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd="/tmp")
        assert host.listener.stdout is not None
        if host.listener.stdout.readline().strip() != "ready":
            raise RuntimeError(f"listener on {host.name} did not start")
        return host

    def add_booted_host(self, authorized_key: str) -> TestHost:
        """A Debian 12 host booted with systemd-nspawn on an overlay of the shared root, reachable over SSH as root."""
        root_fs = ensure_rootfs()
        _raise_inotify_instances()
        host = self._network_host()
        base = HOSTS_DIR / host.name
        for sub in ("upper", "work", "root"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        host.root = base / "root"
        self._save()
        run(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={root_fs},upperdir={base / 'upper'},workdir={base / 'work'}",
            str(host.root),
        )
        (host.root / "etc/hostname").write_text(host.name + "\n")
        # Test hosts are offline: no Debian mirror, only repositories a test serves on the test network.
        (host.root / "etc/apt/sources.list").write_text("")
        (host.root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        ssh_dir = host.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(authorized_key.strip() + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)
        for old in (host.root / "etc/ssh").glob("ssh_host_*"):
            old.unlink()
        run("ssh-keygen", "-A", "-f", str(host.root))
        log = (base / "console.log").open("wb")
        host.machine = subprocess.Popen(
            [
                "systemd-nspawn",
                "--register=no",
                "--keep-unit",
                "-q",
                "-b",
                "-D",
                str(host.root),
                f"--machine={host.name}",
                f"--network-namespace-path=/run/netns/{host.netns}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_for(lambda: _ssh_ready(host.address), timeout=90):
            console = (base / "console.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{host.name} did not boot; its console ended with:\n" + "\n".join(console))
        return host

    def service_address(self) -> str:
        """An address of this machine that every test host reaches through its default route (for fake servers)."""
        if self._service_address is None:
            address = f"198.19.{os.getpid() % 200 + 1}.{int(self.id[-2:], 16) % 250 + 1}/32"  # below free_network's
            self._addresses.append(address)
            self._save()
            run("ip", "addr", "add", address, "dev", "lo")
            self._service_address = address.split("/")[0]
        return self._service_address

    def close(self) -> None:
        for address in self._addresses:
            run("ip", "addr", "del", address, "dev", "lo", check=False)
        self._addresses.clear()
        for host in self.hosts:
            if host.listener is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.listener.pid, signal.SIGKILL)
                host.listener.wait()
            if host.machine is not None:
                stop_machine(host.machine.pid)
                host.machine.wait()
        remove_roots([str(h.root) for h in self.hosts if h.root])
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


@contextlib.contextmanager
def _network_lock() -> Iterator[None]:
    import fcntl

    HOSTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(HOSTS_DIR / ".networks.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_network(prefixlen: int) -> ipaddress.IPv4Network:
    """A network of 198.19.0.0/16 that no address or route of this machine touches, from the top down, above
    198.19.200.255 (the /24 test hosts live in 198.18.0.0/16, service_address's /32 addresses on lo in 198.19.1.0
    to 198.19.200.255). Call it under _network_lock until the network's route is added."""
    taken = [
        ipaddress.ip_network(word, strict=False)
        for line in run("ip", "-4", "-o", "addr", "show").stdout.splitlines() + run("ip", "-4", "route", "show").stdout.splitlines()
        for word in line.split()
        if word[:1].isdigit() and word.count(".") == 3
    ]
    service = ipaddress.ip_network("198.19.0.0/16")
    for candidate in reversed(list(service.subnets(new_prefix=prefixlen))):
        if candidate.network_address < ipaddress.ip_address("198.19.201.0"):
            break
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError(f"no free /{prefixlen} in 198.19.201.0 to 198.19.255.255")


def ensure_rootfs() -> Path:
    """The minimal Debian root every booted host overlays, built once with debootstrap from apt's own source."""
    if (ROOTFS / "usr/sbin/sshd").exists():
        return ROOTFS
    import fcntl

    ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    with open(ROOTFS.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it right now
        if (ROOTFS / "usr/sbin/sshd").exists():
            return ROOTFS
        return _build_rootfs()


def _build_rootfs() -> Path:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    mirror = next(line.split()[1] for line in sources.read_text().splitlines() if line.startswith("URIs:"))
    building = ROOTFS.with_name(ROOTFS.name + f".tmp{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    run("debootstrap", "--variant=minbase", f"--include={ROOTFS_PACKAGES}", "bookworm", str(building), mirror)
    # sshd must start without a first-boot key generation step; keys are made per host.
    (building / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.symlink("/lib/systemd/system/ssh.service", building / "etc/systemd/system/multi-user.target.wants/ssh.service")
    building.rename(ROOTFS)
    return ROOTFS


def _ssh_ready(address: str) -> bool:
    import socket

    try:
        with socket.create_connection((address, 22), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _raise_inotify_instances(wanted: int = 1024) -> None:
    """Every booted host's systemd takes inotify instances from root's share (128 by default): about 18
    hosts exhaust it and the next one cannot boot. Raise the limit (a kernel setting, not persisted)."""
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text()) < wanted:
            path.write_text(str(wanted))


def _container_leader(nspawn_pid: int) -> int:
    """PID (in this namespace) of the container's init: the child of systemd-nspawn."""
    children = run("pgrep", "-P", str(nspawn_pid)).stdout.split()
    return int(children[0])


def stop_machine(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def remove_roots(roots: list[str]) -> None:
    for root in roots:
        run("umount", root, check=False)
        if os.path.ismount(root):
            run("umount", "-l", root, check=False)
        shutil.rmtree(Path(root).parent, ignore_errors=True)


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
            for name in data.get("netns", []):
                # A machine left running by a killed run: its nspawn is the process inside that namespace's root.
                for line in run("pgrep", "-af", f"systemd-nspawn .*--machine={name} ", check=False).stdout.splitlines():
                    stop_machine(int(line.split()[0]))
            remove_roots(data.get("roots", []))
            for address in data.get("addresses", []):
                run("ip", "addr", "del", address, "dev", "lo", check=False)
            remove_netns(data.get("netns", []))
        except (ValueError, KeyError, OSError):
            pass
        state.unlink(missing_ok=True)
