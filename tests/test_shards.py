"""Sharded scans with the scanner role alone: N scanner hosts each run one shard of the same scan.

A whole network of answering addresses lives in one namespace (testhosts.Lab.add_network); every shard set must
find exactly what the unsharded scan finds, each address in one shard only, with each tool's own sharding.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import sys
from pathlib import Path

import pytest

from tests.support.ansible import ansible

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT = 8080
SCAN_TYPES = {"nmap": "default", "masscan": "tcp_scan", "zmap": "tcp_syn"}
SEED = 20261202


@pytest.fixture(scope="module")
def network(lab):
    return lab.add_network(22, tcp=[PORT])


def run_shards(tmp_path: Path, tool: str, target: str, count: int) -> list[dict[str, set[int]]]:
    """Run the scan as `count` shards, one per scanner host (local connections, each with its own work dir);
    what each shard found: address -> open ports."""
    base = tmp_path / f"{tool}-{count}"
    hosts = {
        f"shard{i}": {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "scanner_shard": i,
            "scanner_work_dir": str(base / "work" / f"shard{i}"),
        }
        for i in range(count)
    }
    inventory = base / "inventory.json"
    base.mkdir(parents=True)
    inventory.write_text(json.dumps({"all": {"children": {"scanners": {"hosts": hosts, "vars": {"scanner_shards": count}}}}}))
    extra = {
        "scanner_tool": tool,
        "scanner_scan_type": SCAN_TYPES[tool],
        "scanner_target": target,
        "scanner_ports": str(PORT),
        "scanner_scan_id": f"shards-{tool}-{count}",
        "scanner_results_dir": str(base / "results"),
        "scanner_seed": SEED,
        "scanner_rate": 2000,
        "scanner_use_system_blocklist": False,  # zmap 3's /etc/zmap/blocklist.conf lists 198.18.0.0/15
        "scanner_retries": 1,  # masscan drops a few replies at any rate: one retry finds every address
        "scanner_wait": 3,
        "scanner_timeout": 300,
    }
    result = ansible(
        "ansible-playbook", "-f", str(count), "-i", str(inventory), "playbooks/scan.yml", "-e", json.dumps(extra), tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    found = []
    for i in range(count):
        folder = base / "results" / f"shards-{tool}-{count}" / f"shard{i}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["state"] == "completed" and summary["shard"] == {"index": i, "count": count, "seed": SEED if count > 1 else None}
        shard: dict[str, set[int]] = {}
        for line in (folder / "hosts.jsonl").read_text().splitlines():
            host = json.loads(line)
            shard[host["address"]] = {p["port"] for p in host["ports"] if p["state"] == "open"}
        found.append(shard)
    return found


@pytest.mark.parametrize("tool", ["nmap", "masscan", "zmap"])
def test_shards_find_exactly_what_the_whole_scan_finds(tmp_path, network, tool):
    target = str(network.network)
    (whole,) = run_shards(tmp_path, tool, target, 1)
    addresses = {str(a) for a in ipaddress.ip_network(target)}
    answered = {a for a, ports in whole.items() if ports == {PORT}}
    assert answered == addresses, f"{len(addresses - answered)} of {len(addresses)} addresses not found"  # every one answers
    for count in (2, 4):
        shards = run_shards(tmp_path, tool, target, count)
        seen = [a for shard in shards for a, ports in shard.items() if ports]
        assert len(seen) == len(set(seen)), f"{count} shards: an address was scanned by two shards"
        merged = {a: ports for shard in shards for a, ports in shard.items() if ports}
        assert merged == {a: ports for a, ports in whole.items() if ports}, f"{count} shards"
        assert all(shard for shard in shards), f"{count} shards: one found nothing"
        if tool == "nmap":  # contiguous blocks, in order
            blocks = [sorted(ipaddress.ip_address(a) for a in shard) for shard in shards]
            assert all(left[-1] < right[0] for left, right in itertools.pairwise(blocks))
