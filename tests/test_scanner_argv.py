"""The scanner role's argument lists, exactly: every tool and scan type, with and without ports, link and exclude options.

build_argv dispatches per tool (and nmap per scan type); these pin what each one runs.
"""

from __future__ import annotations

import pytest

from controller.scanlib import ScanInputError, scanner

NMAP = ["nmap", "-T4", "-oX", "/tmp/raw", "--stats-every", "2s"]
ZMAP = ["zmap", "-o", "/tmp/raw", "-r", "1000", "-c", "5"]
MASSCAN = ["masscan", "-oJ", "/tmp/raw", "--interactive", "--rate", "1000", "--wait", "5"]
ZMAP_SYN = ["-M", "tcp_synscan", "-p", "22", "-f", "saddr,sport,classification,success,repeat,ttl"]
ZMAP_ICMP = ["-M", "icmp_echoscan", "-f", "saddr,type,code,classification,success,repeat,ttl"]
ZMAP_FILTER = ["--output-filter", "success = 1 && repeat = 0"]
TARGET = "192.0.2.0/30"


def request(tool: str, scan_type: str, ports: str | None = None, target: str = TARGET) -> dict:
    return {"tool": tool, "scan_type": scan_type, "target": target, "ports": ports}


@pytest.mark.parametrize(
    ("scan_type", "ports", "options"),
    [
        ("default", None, ["-F"]),
        ("default", "22,80", ["-p", "22,80"]),
        ("quick", None, ["--top-ports", "20", "--max-retries", "1"]),
        ("quick", "22,80", ["-p", "22,80", "--max-retries", "1"]),
        ("intense", None, ["-A"]),
        ("intense", "22,80", ["-A", "-p", "22,80"]),
        ("tcp", None, ["-p", "1-65535"]),
        ("tcp", "22,80", ["-p", "22,80"]),
        ("udp", None, ["-sU"]),
        ("udp", "22,80", ["-sU", "-p", "22,80"]),
    ],
)
def test_nmap_scan_types(scan_type, ports, options):
    assert scanner.build_argv(request("nmap", scan_type, ports), "/tmp/raw") == [*NMAP, *options, "--", TARGET]
    ipv6 = scanner.build_argv(request("nmap", scan_type, ports, "2001:db8::1"), "/tmp/raw", exclude_file="/tmp/x", stats_every=5)
    assert ipv6 == [*NMAP[:-1], "5s", "-6", *options, "--excludefile", "/tmp/x", "--", "2001:db8::1"]


def test_nmap_ignores_the_link_options():
    argv = scanner.build_argv(request("nmap", "default"), "/tmp/raw", interface="veth0", gateway_mac="02:00:00:00:00:01", rate=5)
    assert argv == [*NMAP, "-F", "--", TARGET]


@pytest.mark.parametrize(
    ("tool", "scan_type", "ports", "plain", "linked"),
    [
        (
            "zmap",
            "tcp_syn",
            "22",
            [*ZMAP, *ZMAP_SYN, *ZMAP_FILTER, "--", TARGET],
            ["-i", "veth0", "-G", "02:00:00:00:00:01", "-S", "192.0.2.9", "-b", "/tmp/x", "--", TARGET],
        ),
        (
            "zmap",
            "icmp_echo",
            None,
            [*ZMAP, *ZMAP_ICMP, *ZMAP_FILTER, "--", TARGET],
            ["-i", "veth0", "-G", "02:00:00:00:00:01", "-S", "192.0.2.9", "-b", "/tmp/x", "--", TARGET],
        ),
        (
            "masscan",
            "tcp_scan",
            "22,80",
            [*MASSCAN, "-p", "22,80", TARGET],
            ["-e", "veth0", "--router-mac", "02:00:00:00:00:01", "--adapter-ip", "192.0.2.9", "--excludefile", "/tmp/x", TARGET],
        ),
        (
            "masscan",
            "udp_scan",
            "22,80",
            [*MASSCAN, "-p", "U:22,U:80", TARGET],
            ["-e", "veth0", "--router-mac", "02:00:00:00:00:01", "--adapter-ip", "192.0.2.9", "--excludefile", "/tmp/x", TARGET],
        ),
        (
            "masscan",
            "ping_scan",
            None,
            [*MASSCAN, "--ping", TARGET],
            ["-e", "veth0", "--router-mac", "02:00:00:00:00:01", "--adapter-ip", "192.0.2.9", "--excludefile", "/tmp/x", TARGET],
        ),
    ],
)
def test_zmap_and_masscan(tool, scan_type, ports, plain, linked):
    assert scanner.build_argv(request(tool, scan_type, ports), "/tmp/raw") == plain
    link = {"interface": "veth0", "gateway_mac": "02:00:00:00:00:01", "source_ip": "192.0.2.9", "exclude_file": "/tmp/x"}
    argv = scanner.build_argv(request(tool, scan_type, ports), "/tmp/raw", rate=50, wait=3, **link)
    # The rate and wait given, the scan type's options, then the link and exclude options in this order, then the target.
    head = plain[: -2 if tool == "zmap" else -1]
    head[head.index("1000")], head[head.index("5")] = "50", "3"
    assert argv == head + linked


def test_link_options_are_checked():
    for field, value in (("interface", "-e x"), ("gateway_mac", "02:00:00:00:00")):
        with pytest.raises(ScanInputError) as error:
            scanner.build_argv(request("masscan", "ping_scan"), "/tmp/raw", **{field: value})
        assert error.value.field == field
    with pytest.raises(ValueError):
        scanner.build_argv(request("zmap", "icmp_echo"), "/tmp/raw", source_ip="not-an-address")


def test_refused_requests():
    with pytest.raises(ScanInputError) as error:
        scanner.build_argv(request("curl", "default"), "/tmp/raw")
    assert error.value.field == "tool"
    with pytest.raises(ScanInputError) as error:
        scanner.build_argv(request("zmap", "icmp_echo", target=""), "/tmp/raw")
    assert error.value.field == "target"


@pytest.mark.parametrize(
    ("ports", "canonical"),
    [(None, None), ("", None), (443, "443"), ((22, "80-90"), "22,80-90"), (["1-65535"], "1-65535"), (" 1 , 2-3 ", "1,2-3")],
)
def test_port_forms(ports, canonical):
    assert scanner.parse_ports(ports) == canonical


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        (False, "ports must be a port number"),
        ((), "ports list must hold"),
        ([22, None], "ports list must hold"),
        ({"22": 1}, "ports must be a port number"),
        ("22-", "ports must look like"),
        ("0-22", "between 1 and 65535"),
        ("90-80", "port range 90-80 is reversed"),
    ],
)
def test_port_errors(ports, message):
    with pytest.raises(ScanInputError) as error:
        scanner.parse_ports(ports)
    assert error.value.field == "ports" and message in error.value.message


# --- sharded scans: each tool's own mechanism --------------------------------------------------------------


def shard(tool: str, index: int, count: int, seed: int | None = 7, target: str = "198.18.16.0/22") -> scanner.Shard:
    return scanner.validate_shard(request(tool, SHARD_TYPES[tool], SHARD_PORTS[tool], target), index, count, seed)


SHARD_TYPES = {"nmap": "default", "zmap": "tcp_syn", "masscan": "tcp_scan"}
SHARD_PORTS = {"nmap": "8080", "zmap": "8080", "masscan": "8080"}


def test_zmap_and_masscan_shard_with_their_own_options_and_one_seed():
    zmap = scanner.build_argv(request("zmap", "tcp_syn", "8080", "198.18.16.0/22"), "/tmp/raw", shard=shard("zmap", 2, 4))
    assert zmap[-8:] == ["--shards", "4", "--shard", "2", "--seed", "7", "--", "198.18.16.0/22"]  # zmap counts from 0
    masscan = scanner.build_argv(request("masscan", "tcp_scan", "8080", "198.18.16.0/22"), "/tmp/raw", shard=shard("masscan", 0, 2, 99))
    # masscan counts from 1; each shard replies to its own source port (a shared seed gives them one SYN cookie)
    assert masscan[-7:] == ["--shard", "1/2", "--seed", "99", "--source-port", "61000", "198.18.16.0/22"]
    last = scanner.build_argv(request("masscan", "tcp_scan", "8080", "198.18.16.0/22"), "/tmp/raw", shard=shard("masscan", 63, 64))
    assert last[-7:] == ["--shard", "64/64", "--seed", "7", "--source-port", "61063", "198.18.16.0/22"]
    # One shard is the unsharded scan: no shard options, no seed.
    whole = scanner.build_argv(request("zmap", "tcp_syn", "8080", "198.18.16.0/22"), "/tmp/raw")
    assert scanner.build_argv(request("zmap", "tcp_syn", "8080", "198.18.16.0/22"), "/tmp/raw", shard=shard("zmap", 0, 1)) == whole


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 64])
def test_nmap_shards_cover_the_target_once_in_even_blocks(count):
    import ipaddress

    covered = []
    for index in range(count):
        argv = scanner.build_argv(request("nmap", "default", "8080", "198.18.16.0/22"), "/tmp/raw", shard=shard("nmap", index, count))
        blocks = argv[argv.index("--") + 1 :]
        covered.append([a for block in blocks for a in ipaddress.ip_network(block)])
    sizes = {len(part) for part in covered}
    assert max(sizes) - min(sizes) <= 1
    every = [a for part in covered for a in part]
    assert every == list(ipaddress.ip_network("198.18.16.0/22"))  # in order, none twice, none missed


def test_nmap_shard_blocks_are_the_fewest_networks():
    assert scanner.shard_blocks("198.18.16.0/22", 0, 2) == ["198.18.16.0/23"]
    # 1,024 addresses in three: 341, 341 and 342 (addresses 341 to 681 here).
    assert scanner.shard_blocks("198.18.16.0/22", 1, 3) == [
        "198.18.17.85/32",
        "198.18.17.86/31",
        "198.18.17.88/29",
        "198.18.17.96/27",
        "198.18.17.128/25",
        "198.18.18.0/25",
        "198.18.18.128/27",
        "198.18.18.160/29",
        "198.18.18.168/31",
    ]
    assert scanner.shard_blocks("2001:db8::/126", 3, 4) == ["2001:db8::3/128"]
    # IPv6 networks whose addresses are small numbers stay IPv6 (ip_address(int) would make them IPv4).
    assert scanner.shard_blocks("::/112", 1, 2) == ["::8000/113"]
    assert scanner.shard_blocks("scanme.example", 0, 1) == ["scanme.example"]


@pytest.mark.parametrize(
    ("tool", "index", "count", "seed", "target", "field", "message"),
    [
        ("nmap", 0, 0, None, "198.18.16.0/22", "shards", "from 1 to 64"),
        ("nmap", 0, 65, None, "198.18.16.0/22", "shards", "from 1 to 64"),
        ("nmap", 2, 2, None, "198.18.16.0/22", "shard", "from 0 to 1"),
        ("nmap", -1, 2, None, "198.18.16.0/22", "shard", "from 0 to 1"),
        ("nmap", 0, 2, None, "scanme.example", "target", "not a hostname"),
        ("nmap", 0, 8, None, "198.18.16.0/30", "shards", "fewer than 8 shards"),
        ("zmap", 0, 2, None, "198.18.16.0/22", "seed", "same seed"),
        ("masscan", 0, 2, None, "198.18.16.0/22", "seed", "same seed"),
        ("masscan", 0, 2, 2**32, "198.18.16.0/22", "seed", "0 to 4294967295"),
        ("zmap", True, 2, 1, "198.18.16.0/22", "shard", "whole number"),
    ],
)
def test_shard_errors(tool, index, count, seed, target, field, message):
    with pytest.raises(ScanInputError) as error:
        scanner.validate_shard(request(tool, SHARD_TYPES[tool], SHARD_PORTS[tool], target), index, count, seed)
    assert error.value.field == field and message in error.value.message


def test_retries_are_each_tools_own():
    zmap = scanner.build_argv(request("zmap", "tcp_syn", "8080"), "/tmp/raw", retries=1)
    assert zmap[zmap.index("-P") : zmap.index("-P") + 2] == ["-P", "2"]  # probes per address
    masscan = scanner.build_argv(request("masscan", "tcp_scan", "8080"), "/tmp/raw", retries=2)
    assert masscan[masscan.index("--retries") : masscan.index("--retries") + 2] == ["--retries", "2"]
    assert scanner.build_argv(request("nmap", "default"), "/tmp/raw", retries=3) == scanner.build_argv(
        request("nmap", "default"), "/tmp/raw"
    )
    assert "-P" not in scanner.build_argv(request("zmap", "tcp_syn", "8080"), "/tmp/raw")
    for wrong in (11, -1, True, "1"):
        with pytest.raises(ScanInputError, match="from 0 to 10"):
            scanner.build_argv(request("masscan", "tcp_scan", "8080"), "/tmp/raw", retries=wrong)
