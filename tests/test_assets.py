"""Assets: what the stored scans say of each host over time, kept as each scan's results are stored."""

from __future__ import annotations

import copy

import pytest

from controller.config import ROOT
from tests.support.stored import nmap_hosts, store_scan

FIXTURE = (ROOT / "tests" / "fixtures" / "scans" / "nmap_ports.xml").read_text()
TARGET = "198.18.0.0/24"
PROBED = {"tcp": "22,80,2222,8080,9999"}


@pytest.fixture
def first():
    """The real capture: 198.18.0.2 with 22, 80 closed, 2222, 8080 open, 9999 filtered."""
    hosts, info = nmap_hosts(FIXTURE)
    assert info["probed"] == PROBED and [h["address"] for h in hosts] == ["198.18.0.2"]
    return hosts


def _port(host, number):
    return next(p for p in host["ports"] if p["port"] == number)


def _changed(hosts):
    """The next scan: 22 opened, 8080 closed (listed), a host added."""
    hosts = copy.deepcopy(hosts)
    _port(hosts[0], 22)["state"] = "open"
    _port(hosts[0], 8080)["state"] = "closed"
    added = copy.deepcopy(hosts[0])
    added.update(address="198.18.0.3", mac=None, hostnames=["new.test"])
    return [*hosts, added]


def _states(client, address):
    detail = client.get(f"/api/assets/{address}").get_json()
    return {p["port"]: p["state"] for p in detail["ports"]}, detail


def test_a_scan_makes_assets_and_the_next_one_updates_them(app, client, first):
    one = store_scan(app, client, first, TARGET, probed=PROBED)
    page = client.get("/api/assets").get_json()
    assert [a["address"] for a in page["assets"]] == ["198.18.0.2"] and page["next_cursor"] is None
    assert [p["port"] for p in page["assets"][0]["open_ports"]] == [2222, 8080]
    assert page["assets"][0]["mac"] == "2a:a7:c7:05:5d:24"

    two = store_scan(app, client, _changed(first), TARGET, probed=PROBED)
    states, detail = _states(client, "198.18.0.2")
    assert states == {22: "open", 80: "closed", 2222: "open", 8080: "closed", 9999: "filtered"}
    assert [s["job_id"] for s in detail["scans"]] == [one, two]
    changes = [(c["port"], c["change"], c["previous"], c["state"]) for c in detail["history"] if c["scan_job_id"] == two]
    assert sorted(changes) == [(22, "opened", "closed", "open"), (8080, "closed", "open", "closed")]
    ports = {p["port"]: p for p in detail["ports"]}
    assert ports[2222]["first_seen"] < ports[2222]["last_seen"]

    # Open again: reopened, not opened.
    store_scan(app, client, first, TARGET, probed=PROBED)
    _, detail = _states(client, "198.18.0.2")
    assert [c["change"] for c in detail["history"] if c["port"] == 8080] == ["opened", "closed", "reopened"]
    assert [a["address"] for a in client.get("/api/assets").get_json()["assets"]] == ["198.18.0.2", "198.18.0.3"]


def test_a_port_not_probed_keeps_its_state(app, client, first):
    store_scan(app, client, first, TARGET, probed=PROBED)
    narrower = copy.deepcopy(first)
    narrower[0]["ports"] = [_port(narrower[0], 22)]
    narrower[0]["extra_state"] = "closed"
    store_scan(app, client, narrower, TARGET, ports="22,80", probed={"tcp": "22,80"})
    states, _ = _states(client, "198.18.0.2")
    assert states[8080] == "open" and states[2222] == "open"  # not probed: left alone
    # Probed and unlisted (nmap's <extraports state="closed">): closed.
    store_scan(app, client, narrower, TARGET, probed=PROBED)
    states, detail = _states(client, "198.18.0.2")
    assert states == {22: "closed", 80: "closed", 2222: "closed", 8080: "closed", 9999: "closed"}
    assert {c["port"] for c in detail["history"] if c["change"] == "closed"} == {2222, 8080}


def test_masscan_closes_only_what_it_probed_and_a_partial_scan_closes_nothing(app, client, first):
    store_scan(app, client, first, TARGET, probed=PROBED)
    only_2222 = [{"address": "198.18.0.2", "status": "up", "reason": None, "hostnames": [], "mac": None, "ports": []}]
    only_2222[0]["ports"] = [{**_port(first[0], 2222), "service": None}]
    store_scan(app, client, only_2222, TARGET, tool="masscan", scan_type="tcp_scan", ports="2222,8080", state="timeout")
    assert _states(client, "198.18.0.2")[0][8080] == "open"  # the scan did not complete
    store_scan(app, client, only_2222, TARGET, tool="masscan", scan_type="tcp_scan", ports="2222,8080")
    states, detail = _states(client, "198.18.0.2")
    assert states[8080] == "closed" and states[2222] == "open" and states[9999] == "filtered"
    assert {p["port"]: p["service"] for p in detail["ports"]}[2222] == "EtherNetIP-1"  # masscan names none: kept


def test_filters_pages_and_errors(app, client, first):
    store_scan(app, client, _changed(first), TARGET, probed=PROBED)
    listed = lambda **q: [a["address"] for a in client.get("/api/assets", query_string=q).get_json()["assets"]]  # noqa: E731
    assert listed(port="22") == ["198.18.0.2", "198.18.0.3"]
    assert listed(port="8080") == []
    assert listed(network="198.18.0.3/32") == ["198.18.0.3"] == listed(network="198.18.0.3")
    assert listed(network="10.0.0.0/8") == []
    assert listed(service="EtherNetIP-1") == ["198.18.0.2", "198.18.0.3"]
    assert listed(seen_since="1d") == ["198.18.0.2", "198.18.0.3"]
    assert listed(seen_since="2999-01-01T00:00:00Z") == []
    page = client.get("/api/assets", query_string={"limit": "1"}).get_json()
    assert [a["address"] for a in page["assets"]] == ["198.18.0.2"]
    rest = client.get("/api/assets", query_string={"limit": "1", "cursor": page["next_cursor"]}).get_json()
    assert [a["address"] for a in rest["assets"]] == ["198.18.0.3"] and rest["next_cursor"] is None
    for query, field in [
        ({"network": "nope"}, "network"),
        ({"port": "0"}, "port"),
        ({"cursor": "x"}, "cursor"),
        ({"seen_since": "soon"}, "seen_since"),
    ]:
        response = client.get("/api/assets", query_string=query)
        assert response.status_code == 400 and response.get_json()["field"] == field, response.get_json()
    assert client.get("/api/assets/not-an-address").status_code == 400
    assert client.get("/api/assets/192.0.2.99").status_code == 404


def test_deleting_a_scan_keeps_the_assets(app, client, first):
    job_id = store_scan(app, client, first, TARGET, probed=PROBED)
    assert client.delete(f"/api/scans/{job_id}").status_code == 200
    states, detail = _states(client, "198.18.0.2")
    assert states[8080] == "open" and detail["scans"] == [] and {c["scan_job_id"] for c in detail["history"]} == {None}


def test_a_masscan_that_no_longer_reports_a_host_closes_the_ports_it_probed(app, client):
    """masscan lists hosts only through their open ports: a host inside its network that it did not report has none
    of the ports it probed open (Faraday #247: a re-import must close ports)."""
    host = {"address": "198.18.0.5", "status": "up", "reason": None, "hostnames": [], "mac": None, "ports": []}
    host["ports"] = [
        {"protocol": "tcp", "port": p, "state": "open", "reason": "syn-ack", "service": None, "product": None, "version": None}
        for p in (22, 80)
    ]
    store_scan(app, client, [host], TARGET, tool="masscan", scan_type="tcp_scan", ports="22,80")
    store_scan(app, client, [], TARGET, tool="masscan", scan_type="tcp_scan", ports="443")  # probed neither: no change
    assert _states(client, "198.18.0.5")[0] == {22: "open", 80: "open"}
    store_scan(app, client, [], "198.18.1.0/24", tool="masscan", scan_type="tcp_scan", ports="22")  # another network
    assert _states(client, "198.18.0.5")[0] == {22: "open", 80: "open"}
    store_scan(app, client, [], TARGET, tool="masscan", scan_type="tcp_scan", ports="22")
    states, detail = _states(client, "198.18.0.5")
    assert states == {22: "closed", 80: "open"}
    assert [(c["port"], c["change"]) for c in detail["history"]][-1] == (22, "closed")


def test_addresses_of_each_version_sort_apart():
    from controller.services.assets import address_key, network_keys

    assert address_key("10.0.0.1") < address_key("10.0.0.2") < address_key("192.0.2.1") < address_key("::1")
    low, high = network_keys("::/0")
    assert not low <= address_key("10.0.0.1") <= high  # an IPv6 network holds no IPv4 address (as ipaddress says)
    low, high = network_keys("10.0.0.0/8")
    assert low <= address_key("10.255.255.255") <= high and not low <= address_key("11.0.0.0") <= high


def test_the_list_views_built_by_hand_are_the_models(app, client, first):
    """GET /api/assets builds its views without the model (its hot path): they must be what the model says."""
    from controller.schemas.assets import AssetPage

    store_scan(app, client, _changed(first), TARGET, probed=PROBED)
    page = client.get("/api/assets").get_json()
    assert page["assets"] and AssetPage.model_validate(page).model_dump(mode="json") == page
