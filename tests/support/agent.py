"""The agent role's test inputs: the fixture package's variables and inventories of booted hosts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import testhosts

ENROLLMENT_PASSWORD = "enroll-S3cret-7f1c9a"


def write_agent_vars(path: Path, package: Path, sha256: str, **more: str) -> Path:
    """Variables that make the Linux role install the TEST FIXTURE package from a file (and any others given)."""
    path.write_text(
        json.dumps(
            {
                "cloudx_agent_linux_package_source": "file",
                "cloudx_agent_linux_package_file": str(package),
                "cloudx_agent_linux_package_checksum": f"sha256:{sha256}",
                **more,
            }
        )
    )
    return path


def agent_inventory(directory: Path, hosts: list[testhosts.TestHost], ssh_key: Path) -> Path:
    """An inventory for booted hosts with their real host keys pinned in a known_hosts file."""
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("".join(f"{h.address} {key}\n" for h in hosts for key in h.host_keys()))
    lines = ["all:", "  children:", "    agents:", "      children:", "        linux:", "          hosts:"]
    for host in hosts:
        lines += [f"            {host.name}:", f"              ansible_host: {host.address}"]
    lines += [
        "          vars:",
        "            ansible_user: root",
        f"            ansible_ssh_private_key_file: {ssh_key}",
        f"            ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
        "            ansible_python_interpreter: /usr/bin/python3",
    ]
    path = directory / "hosts.yml"
    path.write_text("\n".join(lines) + "\n")
    return path
