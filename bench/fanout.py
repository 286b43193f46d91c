"""Fleet fan-out: the Linux agent role deployed to 20 booted test hosts against 1 (real SSH, real systemd).

Each timed run is a fresh install: the agent is removed from the hosts before it (untimed). The hosts are
the test harness's Debian 12 machines (systemd-nspawn, one network namespace each), the package the
test fixture package, the manager the fake enrollment service.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import BIN, ROOT, Section, Variant, alternate, ratio

FLEET = 20


def _cpu_seconds() -> float:
    """CPU time the whole machine spent (user + system, all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system = (int(v) for v in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def _ansible_settings() -> dict[str, str]:
    from configparser import ConfigParser

    parser = ConfigParser()
    parser.read(ROOT / "ansible.cfg")
    return {
        "forks": parser.get("defaults", "forks"),
        "pipelining": parser.get("ssh_connection", "pipelining"),
        "ssh_args": parser.get("ssh_connection", "ssh_args"),
    }


def run(quick: bool, log: Callable[[str], None]) -> Section:
    from tests.support import testhosts
    from tests.support.agent import ENROLLMENT_PASSWORD, agent_inventory
    from tests.support.agent_fixture import FakeManager, build_package

    reason = testhosts.available()
    if reason:
        raise SystemExit(f"fanout needs the test-host harness: {reason}")
    fleet, rounds = (4, 1) if quick else (FLEET, 3)
    work = Path(tempfile.mkdtemp(prefix="cloudx-bench-fanout-"))
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    package, sha256 = build_package(work / "package")
    cpu: dict[str, list[float]] = {}
    with testhosts.Lab() as lab:
        started = time.monotonic()
        hosts = [lab.add_booted_host(key.with_suffix(".pub").read_text()) for _ in range(fleet)]
        log(f"  {fleet} hosts booted in {time.monotonic() - started:.0f} s")
        manager = FakeManager(lab.service_address(), password=ENROLLMENT_PASSWORD)
        try:
            inventory = agent_inventory(work, hosts, key)
            variables = work / "vars.json"
            variables.write_text(
                json.dumps(
                    {
                        "cloudx_agent_manager_address": manager.sock.getsockname()[0],
                        "cloudx_agent_enrollment_password": ENROLLMENT_PASSWORD,
                        "cloudx_agent_linux_package_source": "file",
                        "cloudx_agent_linux_package_file": str(package),
                        "cloudx_agent_linux_package_checksum": f"sha256:{sha256}",
                    }
                )
            )
            env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}"}

            def playbook(name: str, limit: list[str]) -> None:
                argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), f"playbooks/{name}", "-e", f"@{variables}"]
                argv += ["--limit", ",".join(h.name for h in hosts if h.address in limit)]
                done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
                if done.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{done.stdout[-3000:]}")

            def variant(name: str, targets: list[str]) -> Variant:
                def setup() -> None:
                    playbook("remove_agent.yml", targets)  # every timed run installs from scratch

                def deploy() -> dict[str, float]:
                    before = _cpu_seconds()
                    playbook("deploy_agent.yml", targets)
                    spent = _cpu_seconds() - before
                    cpu.setdefault(name, []).append(spent)
                    return {"machine_cpu_s": spent}

                return Variant(name, deploy, setup=setup)

            addresses = [h.address for h in hosts]
            single, many = "1 host", f"{fleet} hosts"
            results = alternate([variant(single, addresses[:1]), variant(many, addresses)], rounds, log)
            for host in hosts:
                assert host.shell("systemctl is-active wazuh-agent", check=False).stdout.strip() == "active", host.name
        finally:
            manager.close()
    shutil.rmtree(work, ignore_errors=True)

    settings = _ansible_settings()
    one, all_ = results[single], results[many]
    measured = all_.median / one.median
    cores = os.cpu_count() or 1
    # With every core busy, the fleet run cannot take less than its CPU time spread over the cores.
    floor = all_.extra_median("machine_cpu_s") / cores / one.median
    rows = [
        (name, f"{m.median:.1f}", ratio(m.median, one.median), f"{m.extra_median('machine_cpu_s'):.1f}")
        for name, m in ((single, one), (many, all_))
    ]
    met = "met" if measured <= 2.5 else "missed"
    notes = [
        f"Ansible settings (ansible.cfg): forks {settings['forks']}, pipelining {settings['pipelining']}, "
        f"ssh_args `{settings['ssh_args']}` (ControlPersist keeps one SSH connection per host for the whole run).",
        f"Machine CPU is the CPU time all {cores} cores spent during the run (/proc/stat): controller, SSH and the hosts' own work.",
        f"CPU floor: with every core busy the {fleet}-host run cannot be faster than its CPU time / {cores} cores: "
        f"{floor:.2f}x the single-host time on this machine.",
    ]
    if measured > 2.5 and floor > 2.0:
        notes.append(
            f"The target assumes the fleet's work runs in parallel; here {fleet} hosts share {cores} cores with the controller, "
            f"so the run is CPU-bound: {measured:.2f}x against a floor of {floor:.2f}x. On hosts that are separate machines "
            "the per-host work would not compete for the controller's cores."
        )
    return Section(
        title="5. Fleet fan-out",
        setup=(
            f"playbooks/deploy_agent.yml (the Linux role: package from a file, configuration, enrollment, service) to {fleet} "
            f"booted Debian 12 hosts against 1, real SSH; {rounds} rounds alternating, each a fresh install (the agent removed "
            "before, untimed)."
        ),
        header=("variant", "median s", "vs 1 host", "machine CPU s"),
        rows=rows,
        verdict=f"Target: {fleet} hosts at most 2.5x one host. Measured {measured:.2f}x: {met}.",
        notes=notes,
    )
