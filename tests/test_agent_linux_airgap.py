"""The Linux agent role on air-gapped Debian 12 hosts: no python3-apt and an APT source nobody can reach.

The role installs a package file with dpkg alone, so it deploys, is idempotent, previews in check mode and
removes the agent without python3-apt and without ever contacting an APT source; a package whose
dependency is missing fails within seconds, naming it, with the host left as it was.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.agent import ENROLLMENT_PASSWORD, agent_inventory, write_agent_vars
from tests.test_agent_linux import changed_tasks, playbook, recap, unit_reload_state

pytestmark = pytest.mark.integration

# The host's only APT source: an address of this machine on a port the host's own nftables drop (with a counter),
# so any apt-get update would hang until it times out, as on the air-gapped host of issue 14.
SOURCE_PORT = 8089
MISSING = "cloudx-airgap-missing"
# A hang check, not a benchmark: the run that fails takes about 15 s here; apt's retries took minutes (issue 14).
FAIL_FAST_SECONDS = 60


def source_packets(host) -> int:
    """Packets the host sent towards its APT source (the nftables counter of the drop rule)."""
    ruleset = subprocess.run(
        ["ip", "netns", "exec", host.netns, "nft", "list", "table", "inet", "airgap"], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r"counter packets (\d+)", ruleset).group(1))


def make_air_gapped(host, service_address: str) -> None:
    host.shell("dpkg --purge python3-apt python-apt-common")  # what the test image ships; nothing depends on them
    assert host.shell("python3 -c 'import apt_pkg'", check=False).returncode != 0
    host.shell(f"echo 'deb http://{service_address}:{SOURCE_PORT}/debian bookworm main' > /etc/apt/sources.list")
    rules = (
        "table inet airgap {\n chain output {\n  type filter hook output priority 0; policy accept;\n"
        f"  ip daddr {service_address} tcp dport {SOURCE_PORT} counter drop\n }}\n}}\n"
    )
    subprocess.run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], input=rules, text=True, check=True)
    # The source does not refuse: it never answers.
    probe = f"import socket; socket.create_connection(('{service_address}', {SOURCE_PORT}), timeout=2)"
    assert "timed out" in host.shell(f'python3 -c "{probe}" 2>&1', check=False).stdout
    assert source_packets(host) > 0


@pytest.fixture(scope="module")
def airgapped_hosts(lab, ssh_key):
    """Two fresh booted hosts of their own (the shared booted_hosts keep python3-apt), made air-gapped."""
    key = ssh_key.with_suffix(".pub").read_text()
    hosts = [lab.add_booted_host(key) for _ in range(2)]
    for host in hosts:
        make_air_gapped(host, lab.service_address())
    return hosts


@pytest.fixture(scope="module")
def package_missing_a_dependency(agent_package, tmp_path_factory) -> tuple[Path, str]:
    """The fixture package, rebuilt with one more dependency that no host has."""
    package, _ = agent_package
    work = tmp_path_factory.mktemp("missing-dep")
    subprocess.run(["dpkg-deb", "-R", str(package), str(work / "root")], check=True)
    control = work / "root/DEBIAN/control"
    control.write_text(re.sub(r"^Depends: (.*)$", rf"Depends: \1, {MISSING} (>= 1.0)", control.read_text(), flags=re.M))
    built = work / package.name
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(work / "root"), str(built)], check=True, capture_output=True)
    return built, hashlib.sha256(built.read_bytes()).hexdigest()


def vars_file(directory: Path, manager, package: Path, sha256: str) -> list[str]:
    more = {"cloudx_agent_manager_address": manager.sock.getsockname()[0], "cloudx_agent_enrollment_password": ENROLLMENT_PASSWORD}
    path = write_agent_vars(directory / "agent.json", package, sha256, **more)
    path.chmod(0o600)
    return ["-e", f"@{path}"]


def timed(*args, **kwargs) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = playbook(*args, **kwargs)
    return result, time.monotonic() - started


def nothing_installed(host) -> bool:
    """dpkg does not know the agent and nothing of it is on disk."""
    return (
        host.shell("dpkg-query -W wazuh-agent", check=False).returncode != 0
        and host.shell("test -e /var/ossec || test -e /lib/systemd/system/wazuh-agent.service || echo clean").stdout.strip() == "clean"
    )


def test_missing_dependency_fails_fast_and_named(airgapped_hosts, ssh_key, manager, package_missing_a_dependency, tmp_path):
    host = airgapped_hosts[0]
    inventory = agent_inventory(tmp_path, [host], ssh_key)
    extra = vars_file(tmp_path, manager, *package_missing_a_dependency)
    packets = source_packets(host)

    result, elapsed = timed("deploy_agent.yml", inventory, *extra)
    assert result.returncode != 0, result.stdout[-3000:]
    assert elapsed < FAIL_FAST_SECONDS, f"took {elapsed:.0f} s"
    failure = result.stdout[result.stdout.index("fatal:") :]
    assert f"{MISSING} (>= 1.0)" in failure and "needs packages that are not installed" in failure, failure[:2000]
    assert "python3-apt" not in result.stdout  # no attempt to install it (ansible.builtin.apt would)
    assert "Install the package file with dpkg" not in result.stdout  # it failed before dpkg ran
    # Nothing was installed or unpacked (only the verified package file is in the cache); nothing tried the source.
    assert nothing_installed(host)
    assert source_packets(host) == packets
    print(f"air-gapped failure with a missing dependency: {elapsed:.1f} s")


def test_deploy_check_idempotence_and_removal_without_python3_apt(airgapped_hosts, ssh_key, manager, agent_package, tmp_path):
    host = airgapped_hosts[1]
    inventory = agent_inventory(tmp_path, [host], ssh_key)
    extra = vars_file(tmp_path, manager, *agent_package)
    packets = source_packets(host)

    # Check mode on a host without the agent: what would change is reported, nothing changes.
    preview = playbook("deploy_agent.yml", inventory, *extra, check=True)
    assert preview.returncode == 0, preview.stdout[-3000:]
    assert recap(preview.stdout)[host.name]["changed"] > 0
    assert "Check mode: dpkg would install wazuh-agent 4.9.2" in preview.stdout
    assert nothing_installed(host) and host.shell("test -e /var/cache/cloudx-agent || echo none").stdout.strip() == "none"

    first, elapsed = timed("deploy_agent.yml", inventory, *extra)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "python3-apt" not in first.stdout and ENROLLMENT_PASSWORD not in first.stdout
    assert host.shell("dpkg-query -W -f='${Status} ${Version}' wazuh-agent").stdout == "hold ok installed 4.9.2-1"
    assert host.shell("systemctl is-enabled wazuh-agent; systemctl is-active wazuh-agent").stdout.split() == ["enabled", "active"]
    assert host.shell("cat /var/ossec/etc/client.keys").stdout.split()[1] == host.name
    # Distribution facts read through ansible_facts (injected fact variables are off in these runs).
    assert "<config-profile>debian, debian12</config-profile>" in host.shell("cat /var/ossec/etc/ossec.conf").stdout
    assert host.shell("python3 -c 'import apt_pkg'", check=False).returncode != 0  # still no python3-apt

    second = playbook("deploy_agent.yml", inventory, *extra)
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap(second.stdout)[host.name]["changed"] == 0, changed_tasks(second.stdout)
    checked = playbook("deploy_agent.yml", inventory, *extra, check=True)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert recap(checked.stdout)[host.name]["changed"] == 0, changed_tasks(checked.stdout)

    removal_preview = playbook("remove_agent.yml", inventory, check=True)
    assert removal_preview.returncode == 0 and "Check mode: dpkg would purge wazuh-agent" in removal_preview.stdout
    assert host.shell("dpkg-query -W -f='${Status}' wazuh-agent").stdout == "hold ok installed"
    removed = playbook("remove_agent.yml", inventory)
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert "python3-apt" not in removed.stdout
    assert nothing_installed(host) and host.shell("test -e /var/cache/cloudx-agent || echo none").stdout.strip() == "none"
    need_reload, status = unit_reload_state(host)
    assert need_reload != "yes" and "changed on disk" not in status, (need_reload, status)
    again = playbook("remove_agent.yml", inventory)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout)[host.name]["changed"] == 0, changed_tasks(again.stdout)

    assert source_packets(host) == packets  # no run tried the APT source
    print(f"air-gapped deploy: {elapsed:.1f} s")
