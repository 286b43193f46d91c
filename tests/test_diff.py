"""The scan diff (GET /api/scans/<job_id>/diff, `cloudx diff`): on rows stored from the real captured output in
tests/fixtures/scans and modified copies of it, through the real store path; and one real nmap scan of a test host
twice, a port opened and one closed in between."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.scanlib import scanner
from controller.services.diff import same_state
from controller.services.probed import PortSet
from tests.support.stored import store_scan

SCANS = Path(__file__).resolve().parent / "fixtures" / "scans"
ADDRESS = "198.18.0.2"
FIXTURE_PORTS = "22,80,2222,8080,9999"  # what nmap_ports.xml and masscan.json probed


def nmap_fixture(name: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    info: dict[str, Any] = {}
    with (SCANS / name).open("rb") as stream:
        hosts = list(scanner.parse_nmap_xml(stream, info))
    return hosts, info.get("probed", {})


def masscan_fixture() -> list[dict[str, Any]]:
    with (SCANS / "masscan.json").open() as stream:
        return list(scanner.parse_masscan(stream, None, {}))


def zmap_fixture() -> list[dict[str, Any]]:
    with (SCANS / "zmap_syn.csv").open() as stream:
        return list(scanner.parse_zmap_csv(stream, {}))


def host(address: str, ports: list[tuple[int, str]] = (), status: str = "up", extra_state: str | None = None, **service: Any) -> dict:  # type: ignore[assignment]
    """A host as the scanner role writes it to hosts.jsonl."""
    rows = [
        {
            "protocol": "tcp",
            "port": p,
            "state": s,
            "reason": None,
            "service": None,
            "product": None,
            "version": None,
            **service.get(str(p), {}),
        }
        for p, s in ports
    ]
    return {"address": address, "status": status, "reason": None, "hostnames": [], "mac": None, "ports": rows, "extra_state": extra_state}


def port_of(hosts: list[dict[str, Any]], number: int, address: str = ADDRESS) -> dict[str, Any]:
    return next(p for h in hosts if h["address"] == address for p in h["ports"] if p["port"] == number)


@pytest.fixture
def store(app, client, config):
    return storing(app, client, config)


def storing(app, client, config):
    """store(hosts, tool=..., ...) -> job_id: tests/support/stored.py's store_scan, at ADDRESS with the fixtures' ports."""

    def submit(hosts: list[dict[str, Any]], target: str = ADDRESS, ports: str | None = FIXTURE_PORTS, **options: Any) -> str:
        return store_scan(app, client, hosts, target, ports=ports, **options)

    return submit


def diff(client, job_id: str, against: str | None = None, status: int = 200) -> dict[str, Any]:
    response = client.get(f"/api/scans/{job_id}/diff" + (f"?against={against}" if against else ""))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def changes(view: dict[str, Any], address: str = ADDRESS) -> dict[str, list[tuple[int, str | None, str | None]]]:
    (entry,) = [h for h in view["hosts"] if h["address"] == address]
    return {
        c: [(p["port"], p["old_state"], p["new_state"]) for p in entry[c]]
        for c in ("open_ports", "opened", "closed", "state_changed", "service_changed")
        if entry[c]
    }


def test_port_set_membership():
    ports = PortSet("2501,22,1500-2500,80,1000-2000, 443")
    assert ports.ranges() == [(22, 22), (80, 80), (443, 443), (1000, 2501)]
    assert [p in ports for p in (22, 80, 443, 1000, 1777, 2500, 2501)] == [True] * 7
    assert [p in ports for p in (0, 21, 23, 79, 999, 2502, 65535, "22")] == [False] * 8
    assert not PortSet("") and not PortSet("x,9-3,70000")
    assert 65535 in PortSet("1-65535") and 0 not in PortSet("1-65535")


def test_port_states_alike():
    assert same_state("closed|filtered", "closed") and same_state("filtered", "closed|filtered")
    assert not same_state("open", "open|filtered") and not same_state("closed", "filtered")


def test_the_same_results_twice_differ_in_nothing(client, store):
    hosts, probed = nmap_fixture("nmap_ports.xml")
    first = store(hosts, probed=probed)
    second = store(hosts, probed=probed)
    view = diff(client, second)  # without against: the previous successful scan of the same target, tool and type
    assert view["against"]["job_id"] == first and view["scan"]["job_id"] == second
    assert (view["mode"], view["note"], view["differences"], view["hosts"]) == ("full", None, False, [])
    assert view["summary"]["hosts_compared"] == 1
    assert not any(v for k, v in view["summary"].items() if k != "hosts_compared")
    assert view["scan"]["status"] == "successful" and view["scan"]["tool"] == "nmap"


def test_ports_opened_closed_changed_state_and_service(client, store):
    hosts, probed = nmap_fixture("nmap_ports.xml")
    changed = copy.deepcopy(hosts)
    port_of(changed, 22)["state"] = "open"  # closed -> open
    port_of(changed, 2222)["state"] = "closed"  # open -> closed
    port_of(changed, 9999)["state"] = "closed"  # filtered -> closed
    port_of(changed, 8080)["service"] = "http"  # http-proxy -> http
    view = diff(client, store(changed, probed=probed), store(hosts, probed=probed))
    assert view["differences"] is True
    assert changes(view) == {
        "opened": [(22, "closed", "open")],
        "closed": [(2222, "open", "closed")],
        "state_changed": [(9999, "filtered", "closed")],
        "service_changed": [(8080, "open", "open")],
    }
    (entry,) = view["hosts"]
    assert entry["change"] == "changed" and (entry["old_status"], entry["new_status"]) == ("up", "up")
    assert entry["service_changed"][0]["changed"] == {"service": {"old": "http-proxy", "new": "http"}}
    assert entry["opened"][0]["service"] == "ssh" and entry["not_comparable"] == 0
    summary = view["summary"]
    assert [summary[f"ports_{c}"] for c in ("opened", "closed", "state_changed", "service_changed", "not_comparable")] == [1, 1, 1, 1, 0]
    assert summary["hosts_changed"] == 1


def test_a_service_version_changed_and_a_missing_field_is_no_change(client, store):
    hosts, probed = nmap_fixture("nmap_intense.xml")
    assert port_of(hosts, 8080)["version"] == "0.6"
    newer = copy.deepcopy(hosts)
    port_of(newer, 8080)["version"] = "0.7"
    port_of(newer, 8080)["product"] = None  # not named by one scan: not compared
    store(hosts, scan_type="intense", ports="22,8080,9999", probed=probed)
    view = diff(client, store(newer, scan_type="intense", ports="22,8080,9999", probed=probed))
    assert view["against"]["scan_type"] == "intense"
    (port,) = view["hosts"][0]["service_changed"]
    assert (port["port"], port["changed"]) == (8080, {"version": {"old": "0.6", "new": "0.7"}})
    assert (port["product"], port["version"]) == ("SimpleHTTPServer", "0.7")  # the newer scan's, else the older one's


def test_the_default_baseline_and_its_absence(client, store):
    hosts, probed = nmap_fixture("nmap_ports.xml")
    assert diff(client, store(hosts, probed=probed), status=404)["error"].startswith("no earlier successful nmap default scan")
    baseline = store(hosts, probed=probed)
    store(hosts, probed=probed, status="failed")  # not a baseline
    store(hosts, scan_type="quick", probed=probed)  # another scan type
    store(hosts, target="198.18.0.0/30", probed=probed)  # another target
    assert diff(client, store(hosts, probed=probed))["against"]["job_id"] == baseline


def test_errors(app, client, store):
    from sqlalchemy import select

    from controller.store.models import Scan
    from tests.support.app import make_token

    hosts, probed = nmap_fixture("nmap_ports.xml")
    done = store(hosts, probed=probed)
    assert diff(client, "no-such-job", status=404)["error"] == "no scan with job_id no-such-job"
    assert diff(client, done, "no-such-job", status=404)["error"] == "no scan with job_id no-such-job"
    queued = client.post("/api/scans", json={"target": ADDRESS, "tool": "nmap", "scan_type": "default"}).get_json()["job_id"]
    assert "still queued" in diff(client, queued, done, status=409)["error"]
    assert "still queued" in diff(client, done, queued, status=409)["error"]
    elsewhere = store([], target="198.18.5.0/24", probed=probed)
    refused = diff(client, elsewhere, done, status=400)
    assert refused["field"] == "against" and "do not overlap" in refused["error"]
    # A scan whose target is neither an address nor a network (nor was resolved to one): named by its field.
    broken = store(hosts, probed=probed)
    with app.extensions["cloudx.db"].session() as session:
        scan = session.scalars(select(Scan).where(Scan.job_id == broken)).one()
        scan.target, scan.job.extra_vars = "unresolved.example", {**scan.job.extra_vars, "scanner_target": None}
    refused = diff(client, broken, done, status=400)
    assert refused["field"] == "job_id" and refused["error"].startswith(f"scan {broken}: its target unresolved.example is not")
    assert diff(client, done, broken, status=400)["field"] == "against"
    viewer = make_token(app, "viewer")
    response = client.get(f"/api/scans/{done}/diff?against={done}", headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 200 and response.get_json()["differences"] is False


def test_hosts_new_and_gone_inside_both_targets_only(client, store):
    hosts, probed = nmap_fixture("nmap_ports.xml")
    network = "198.18.0.0/24"
    old = store([*hosts, host("198.18.0.3", [(22, "open")])], target=network, probed=probed)
    added = {**host("198.18.0.4", [(80, "open"), (443, "closed")]), "hostnames": ["new.example"]}
    new = store([*hosts, added, host("198.18.0.9", status="down")], target=network)
    view = diff(client, new, old)
    assert [h["hostnames"] for h in view["hosts"]] == [[], ["new.example"]]
    assert [(h["address"], h["change"]) for h in view["hosts"]] == [("198.18.0.3", "gone"), ("198.18.0.4", "new")]
    assert changes(view, "198.18.0.4") == {"open_ports": [(80, None, "open")]}
    assert changes(view, "198.18.0.3") == {"open_ports": [(22, "open", None)]}
    assert (view["summary"]["hosts_new"], view["summary"]["hosts_gone"], view["summary"]["hosts_not_comparable"]) == (1, 1, 0)

    # A wider scan: its host outside the /24 is not new, and the other way round not gone.
    wider = store([*hosts, host("198.18.1.5", [(22, "open")])], target="198.18.0.0/23")
    view = diff(client, wider, old)
    assert [(h["address"], h["change"]) for h in view["hosts"]] == [("198.18.0.3", "gone")]
    assert view["summary"]["hosts_not_comparable"] == 1
    view = diff(client, old, wider)
    assert [(h["address"], h["change"]) for h in view["hosts"]] == [("198.18.0.3", "new")]
    assert (view["summary"]["hosts_not_comparable"], view["summary"]["hosts_gone"]) == (1, 0)


def test_a_host_that_went_down_or_came_up(client, store):
    hosts, probed = nmap_fixture("nmap_ports.xml")
    down = copy.deepcopy(hosts)
    down[0]["status"] = "down"
    before = store(hosts, probed=probed)
    view = diff(client, store(down, probed=probed), before)
    (entry,) = view["hosts"]
    assert (entry["change"], entry["old_status"], entry["new_status"]) == ("down", "up", "down")
    assert [p["port"] for p in entry["open_ports"]] == [2222, 8080]
    assert view["summary"]["hosts_down"] == 1 and view["summary"]["ports_closed"] == 0  # a down host's ports: not compared
    view = diff(client, store(hosts, probed=probed), None)
    assert (view["hosts"][0]["change"], view["summary"]["hosts_up"]) == ("up", 1)


def test_a_scan_cut_short_compares_only_what_it_listed(client, store):
    network = "198.18.0.0/24"
    old = store([host(ADDRESS, [(22, "open"), (80, "open")]), host("198.18.0.3", [(22, "open")])], target=network, ports="1-1000")
    cut = store([host(ADDRESS, [(22, "closed")], extra_state="closed")], target=network, ports="1-1000", status="timeout", state="timeout")
    view = diff(client, cut, old)
    # 22 listed by both: closed; 80 not listed by the scan cut short, 198.18.0.3 not reported by it: not compared.
    assert changes(view) == {"closed": [(22, "open", "closed")]} and [h["address"] for h in view["hosts"]] == [ADDRESS]
    assert (view["summary"]["ports_not_comparable"], view["summary"]["hosts_not_comparable"]) == (1, 1)
    assert view["note"] == f"scan {cut} did not run to its end (timeout): only the hosts and ports it listed are compared"
    assert view["scan"]["status"] == "timeout"


def test_ports_not_probed_by_both_are_not_comparable(client, store):
    hosts, _ = nmap_fixture("nmap_ports.xml")
    old = copy.deepcopy(hosts)
    old[0]["ports"] = [p for p in old[0]["ports"] if p["port"] in (22, 80)]
    new = copy.deepcopy(hosts)
    new[0]["ports"] = [p for p in new[0]["ports"] if p["port"] in (80, 8080)]
    port_of(new, 80)["state"] = "open"
    view = diff(client, store(new, ports="80,8080"), store(old, ports="22,80"))
    assert changes(view) == {"opened": [(80, "closed", "open")]}  # not 22 closed, nor 8080 opened
    assert view["hosts"][0]["not_comparable"] == 2 and view["summary"]["ports_not_comparable"] == 2


def test_unlisted_ports_have_the_state_nmap_gave_them(client, store):
    probed = {"tcp": "1-1000"}
    old = host(ADDRESS, [(22, "open"), (80, "open")], extra_state="closed")
    new = host(ADDRESS, [(22, "open"), (25, "closed"), (443, "filtered")], extra_state="closed|filtered")
    before = store([old], ports="1-1000", probed=probed)
    after = store([new], ports="1-1000", probed=probed)
    view = diff(client, after, before)
    # 80 is not listed (closed|filtered): closed; 443 was not listed (closed): now filtered; 25 closed both times.
    assert changes(view) == {"closed": [(80, "open", "closed|filtered")], "state_changed": [(443, "closed", "filtered")]}
    assert view["hosts"][0]["unlisted"] is None  # closed|filtered against closed is no change
    filtered = host(ADDRESS, [(22, "open"), (80, "open")], extra_state="filtered")
    view = diff(client, store([filtered], ports="1-1000", probed=probed), before)
    assert view["hosts"][0]["unlisted"] == {"old": "closed", "new": "filtered"}  # every port neither lists
    assert changes(view) == {} and view["differences"] is True and view["summary"]["hosts_changed"] == 1
    view = diff(client, store([filtered], ports="1-1000", probed=probed), after)  # against closed|filtered
    # 80 closed|filtered, now open; 25 listed closed, now not listed (filtered); 443 filtered both times.
    assert changes(view) == {"opened": [(80, "closed|filtered", "open")], "state_changed": [(25, "closed", "filtered")]}
    assert view["hosts"][0]["unlisted"] is None


def test_an_nmap_scan_stored_without_probed_ports_compares_ports_both_list(client, store):
    old = host(ADDRESS, [(22, "open"), (80, "closed")])
    new = host(ADDRESS, [(22, "open"), (8080, "open")], extra_state="closed")
    view = diff(client, store([new], ports="1-9000"), store([old], ports="22,80", probed=None))
    # 80: closed, then not listed (closed): the same; 8080: not listed by the older scan, whose probed ports are unknown.
    assert view["differences"] is False and view["summary"]["ports_not_comparable"] == 1


def test_nmap_against_masscan_compares_open_ports_only(client, store):
    hosts, probed = nmap_fixture("nmap_ports.xml")
    nmap_scan = store(hosts, probed=probed)
    masscan = masscan_fixture()
    assert [(p["port"], p["state"]) for p in masscan[0]["ports"]] == [(2222, "open"), (8080, "open")]
    view = diff(client, store(masscan, tool="masscan", scan_type="tcp_scan"), nmap_scan)
    # 22 and 80 closed, 9999 filtered: not reported by masscan, which is no change.
    assert (view["mode"], view["differences"]) == ("open_ports", False)
    assert "masscan reports open ports only" in view["note"]
    fewer = copy.deepcopy(masscan)
    fewer[0]["ports"] = [p for p in fewer[0]["ports"] if p["port"] != 2222]
    view = diff(client, store(fewer, tool="masscan", scan_type="tcp_scan"), nmap_scan)
    assert changes(view) == {"closed": [(2222, "open", "not open")]}
    view = diff(client, nmap_scan, store(fewer, tool="masscan", scan_type="tcp_scan"))
    assert changes(view) == {"opened": [(2222, "not open", "open")]}
    # Services are not compared in this mode.
    assert view["summary"]["ports_service_changed"] == 0
    # masscan sees a host only through an open port: one whose open port (2222, 8080) it probed and did not report
    # is gone; the other way round, new.
    view = diff(client, store([], tool="masscan", scan_type="tcp_scan"), nmap_scan)
    assert [(h["address"], h["change"]) for h in view["hosts"]] == [(ADDRESS, "gone")]
    view = diff(client, nmap_scan, store([], tool="masscan", scan_type="tcp_scan", ports="8080"))
    assert [(h["address"], h["change"]) for h in view["hosts"]] == [(ADDRESS, "new")]


def test_a_host_an_open_only_port_scan_did_not_report_is_gone_only_if_it_probed_an_open_port(client, store, runner):
    network = "198.18.0.0/24"
    masscan = {"tool": "masscan", "scan_type": "tcp_scan", "target": network}
    # masscan -p 22 saw 22 open; masscan -p 80 did not report the host: 22 was not probed, nothing was by both.
    only_22 = store([host(ADDRESS, [(22, "open")])], ports="22", **masscan)
    only_80 = store([], ports="80", **masscan)
    for new, old in ((only_80, only_22), (only_22, only_80)):
        view = diff(client, new, old)
        assert (view["differences"], view["hosts"]) == (False, [])
        assert (view["summary"]["hosts_not_comparable"], view["summary"]["hosts_compared"]) == (1, 0)
    # masscan -p 22,80 against it: 22 probed and not reported, the host gone (80: not probed before).
    both = store([], ports="22,80", **masscan)
    assert [(h["address"], h["change"]) for h in diff(client, both, only_22)["hosts"]] == [(ADDRESS, "gone")]

    # nmap sees the host up with closed ports only; masscan of the same ports can never report it: no change.
    nmap = {"target": network, "ports": "22,80"}
    closed = store([host(ADDRESS, [(22, "closed"), (80, "closed")])], **nmap)
    for new, old in ((both, closed), (closed, both)):
        view = diff(client, new, old)
        assert (view["differences"], view["hosts"], view["mode"]) == (False, [], "open_ports")
        assert (view["summary"]["hosts_compared"], view["summary"]["hosts_not_comparable"]) == (1, 0)
    assert invoke(runner, closed, both).exit_code == 0
    # Up with 80 open, then not reported by masscan -p 22: 22 was closed, 80 not probed; not gone, compared on 22.
    open_80 = store([host(ADDRESS, [(22, "closed"), (80, "open")])], **nmap)
    view = diff(client, store([], ports="22", **masscan), open_80)
    assert (view["differences"], view["summary"]["hosts_compared"]) == (False, 1)
    # An unlisted port both probed compares too (nmap: closed, as its extraports say; masscan: not open).
    probed = {"tcp": "1-1000"}
    unlisted = store([host(ADDRESS, [(22, "closed")], extra_state="closed")], target=network, ports="1-1000", probed=probed)
    view = diff(client, store([], ports="443", **masscan), unlisted)
    assert (view["differences"], view["summary"]["hosts_compared"]) == (False, 1)
    view = diff(client, store([], ports="5000", **masscan), unlisted)
    assert (view["differences"], view["summary"]["hosts_not_comparable"]) == (False, 1)

    # Host discovery (masscan --ping, zmap icmp_echo) sees hosts through echo replies: a host up it did not report
    # is gone, whatever its ports.
    for tool, scan_type in (("masscan", "ping_scan"), ("zmap", "icmp_echo")):
        ping = store([], target=network, tool=tool, scan_type=scan_type, ports=None)
        view = diff(client, ping, closed)
        assert [(h["address"], h["change"]) for h in view["hosts"]] == [(ADDRESS, "gone")], (tool, view)


def test_zmap_against_masscan_compares_the_port_both_probed(client, store):
    zmap = store(zmap_fixture(), tool="zmap", scan_type="tcp_syn", ports="8080")
    view = diff(client, zmap, store(masscan_fixture(), tool="masscan", scan_type="tcp_scan", probed=None))
    # masscan's probed ports from its ports column (stored without summary["probed"]); 2222: zmap did not probe it.
    assert (view["mode"], view["differences"]) == ("open_ports", False)
    assert view["summary"]["ports_not_comparable"] == 1
    assert view["note"].startswith("masscan and zmap report open ports only")


@pytest.mark.integration
def test_postgresql_streams_hosts_in_the_order_python_compares(tmp_path, cluster):
    """On PostgreSQL a collation that ignores punctuation (as most locales' do) puts 198.18.11.0 before 198.18.1.20,
    bytes the other way round: the merge-join must read both scans in bytewise order, or hosts in both would look new
    and gone."""
    import os

    from sqlalchemy import text

    from controller.app import create_app
    from tests.support.app import make_config, prepare_app

    name = f"diff_{os.getpid()}"
    config = make_config(tmp_path, DATABASE_URL=cluster.pg.create_database(name))
    app = prepare_app(create_app(config))
    try:
        with app.extensions["cloudx.db"].session() as session:
            session.execute(text("CREATE COLLATION punctuation_ignored (provider = icu, locale = 'und-u-ka-shifted')"))
            session.execute(text("ALTER TABLE scan_hosts ALTER COLUMN address TYPE varchar(64) COLLATE punctuation_ignored"))
        client = app.test_client()
        store = storing(app, client, config)
        addresses = ["198.18.1.20", "198.18.11.0", "198.18.0.2", "198.18.0.10", "198.18.1.3"]
        old = store([host(a, [(22, "open")]) for a in addresses], target="198.18.0.0/16", ports="22")
        new = store([host(a, [(22, "closed")]) for a in addresses], target="198.18.0.0/16", ports="22")
        view = diff(client, new, old)
        assert [(h["address"], h["change"]) for h in view["hosts"]] == [(a, "changed") for a in sorted(addresses)]
        assert view["summary"]["ports_closed"] == 5 and view["summary"]["hosts_compared"] == 5
    finally:
        app.extensions["cloudx.db"].dispose()
        cluster.pg.drop_database(name)


def invoke(runner, *args: str):
    from controller.cli import cli

    return runner.invoke(cli, ["diff", *args])


def test_cli_exit_codes_and_json(client, store, runner):
    hosts, probed = nmap_fixture("nmap_ports.xml")
    first, second = store(hosts, probed=probed), store(hosts, probed=probed)
    changed = copy.deepcopy(hosts)
    port_of(changed, 22)["state"] = "open"
    third = store(changed, probed=probed)

    same = invoke(runner, first, second)
    assert same.exit_code == 0, same.output
    assert "no differences" in same.stdout and same.stderr == ""
    different = invoke(runner, second, third)
    assert different.exit_code == 1, different.output
    assert f"- scan {second}" in different.stdout and f"+ scan {third}" in different.stdout
    assert "+22/tcp" in different.stdout and "closed -> open" in different.stdout and "1 opened" in different.stdout
    as_json = invoke(runner, second, third, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == diff(client, third, second)

    missing = invoke(runner, second, "no-such-job")
    assert missing.exit_code == 2 and missing.stdout == ""
    assert missing.stderr == "cloudx diff: no scan with job_id no-such-job\n"
    queued = client.post("/api/scans", json={"target": ADDRESS, "tool": "nmap", "scan_type": "default"}).get_json()["job_id"]
    busy = invoke(runner, second, queued)
    assert busy.exit_code == 2 and busy.stderr.count("\n") == 1 and "still queued" in busy.stderr
    assert invoke(runner, second).exit_code == 2  # a usage error, as click reports it


def test_cli_errors_that_are_not_differences_exit_2(client, store, runner, config, monkeypatch):
    """Cron alerts on 1 ("differences"): a broken tool, settings or database must say 2, in one line."""
    from sqlalchemy import create_engine, text

    hosts, probed = nmap_fixture("nmap_ports.xml")
    first, second = store(hosts, probed=probed), store(hosts, probed=probed)
    assert invoke(runner, first, second).exit_code == 0

    bad = runner.invoke(cli_group(), ["diff", first, second], env={"CLOUDX_DB_BUSY_TIMEOUT": "soon"})
    assert bad.exit_code == 2, bad.output
    assert bad.stdout == "" and bad.stderr.startswith("cloudx diff: CLOUDX_DB_BUSY_TIMEOUT ") and bad.stderr.count("\n") == 1

    with monkeypatch.context() as patch:  # a bug in the diff
        patch.setattr("controller.services.diff.scan_diff", lambda *args: 1 / 0)
        broken = invoke(runner, first, second)
    assert (broken.exit_code, broken.stderr) == (2, "cloudx diff: ZeroDivisionError: division by zero\n"), broken.output

    # A database at a migration this version does not know: Alembic's CommandError, while the context migrates it.
    engine = create_engine(config.DATABASE_URL)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'fffffffffff0'"))
    engine.dispose()
    unknown = invoke(runner, first, second)
    assert unknown.exit_code == 2, unknown.output
    assert unknown.stderr.startswith("cloudx diff: cannot read the scans: ") and "fffffffffff0" in unknown.stderr
    assert unknown.stderr.count("\n") == 1 and unknown.stdout == ""


def test_cli_assets_and_coverage_say_a_database_error_in_one_line(client, store, runner, config):
    from sqlalchemy import create_engine, text

    store([host(ADDRESS, [(22, "open")])])
    ok = runner.invoke(cli_group(), ["assets", ADDRESS])
    assert ok.exit_code == 0 and ADDRESS in ok.stdout, ok.output
    engine = create_engine(config.DATABASE_URL)
    with engine.begin() as connection:
        for table in ("asset_port_changes", "asset_ports", "asset_scans", "assets"):
            connection.execute(text(f"DROP TABLE {table}"))
    engine.dispose()
    for args in (["assets"], ["assets", ADDRESS], ["coverage"]):
        result = runner.invoke(cli_group(), args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.output)
        assert result.stderr.startswith("Error: cannot read the ") and result.stderr.count("\n") == 1, (args, result.output)
        assert "no such table" in result.stderr, (args, result.stderr)


def cli_group():
    from controller.cli import cli

    return cli


# --- against a real test host ----------------------------------------------------------------------------------


def restart_listener(test_host: Any, tcp: list[int]) -> None:
    """The test host's services, now these TCP ports."""
    from tests.support.testhosts import LISTENER

    assert test_host.listener is not None
    test_host.listener.terminate()
    test_host.listener.wait(timeout=10)
    argv = [
        "ip",
        "netns",
        "exec",
        test_host.netns,
        sys.executable,
        str(LISTENER),
        "--bind",
        test_host.address,
        "--tcp",
        ",".join(map(str, tcp)),
    ]
    test_host.listener = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd="/tmp")
    assert test_host.listener.stdout is not None and test_host.listener.stdout.readline().strip() == "ready"


def add_address(test_host: Any, tcp: list[int]) -> tuple[str, subprocess.Popen[str]]:
    """A second host on the test host's network (.3), with a listener: a host added between two scans."""
    from tests.support.testhosts import LISTENER

    address = str(test_host.subnet.network_address + 3)
    test_host.exec("ip", "addr", "add", f"{address}/{test_host.subnet.prefixlen}", "dev", test_host.inner_if)
    argv = ["ip", "netns", "exec", test_host.netns, sys.executable, str(LISTENER), "--bind", address, "--tcp", ",".join(map(str, tcp))]
    listener = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd="/tmp")
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    return address, listener


@pytest.mark.integration
def test_real_scans_before_and_after_a_port_opened_one_closed_and_a_host_added(request, lab, tmp_path, runner):
    """Two real nmap scans of the test network .2/31 (.2 up, .3 not yet): between them 8080 opens on .2, 80 closes,
    and .3 comes up. The diff, the assets and `cloudx diff` all say so."""
    from controller.cli import cli
    from tests.support.app import running_app
    from tests.support.waiting import wait_scan

    test_host = lab.add_host(tcp=[22, 80])
    target = f"{test_host.address}/31"  # .2 and .3: never the gateway (.1, this machine)
    added = None
    # The app's settings are the `runner` fixture's (the same tmp_path): the CLI reads the same database.
    try:
        with running_app(request, tmp_path, "local") as app:
            client = app.test_client()

            def scan() -> str:
                payload = {"target": target, "tool": "nmap", "scan_type": "tcp", "ports": "22,80,8080,9000-9100"}
                response = client.post("/api/scans", json=payload)
                assert response.status_code == 202, response.get_json()
                view = wait_scan(client, response.get_json()["job_id"], 300)
                assert view["status"] == "successful", (view["status"], view["status_reason"], view["results"]["summary"])
                return view["job_id"]

            before = scan()
            restart_listener(test_host, [22, 8080])  # 8080 opened, 80 closed
            address, added = add_address(test_host, [22])
            after = scan()
            view = diff(client, after)
            assert view["against"]["job_id"] == before and view["mode"] == "full"
            assert changes(view, test_host.address) == {"opened": [(8080, "closed", "open")], "closed": [(80, "open", "closed")]}
            assert [(h["address"], h["change"]) for h in view["hosts"] if h["address"] == address] == [(address, "new")]
            assert view["summary"]["ports_not_comparable"] == 0 and view["summary"]["hosts_new"] == 1

            # The assets: .2's ports now and their history, .3 new, both seen by the scans that saw them.
            asset = client.get(f"/api/assets/{test_host.address}").get_json()
            ports = {p["port"]: p["state"] for p in asset["ports"]}
            assert ports[22] == "open" and ports[8080] == "open" and ports[80] != "open", ports
            history = [(c["port"], c["change"]) for c in asset["history"] if c["scan_job_id"] == after]
            assert sorted(history) == [(80, "closed"), (8080, "opened")], asset["history"]
            assert [s["job_id"] for s in asset["scans"]] == [before, after]
            new = client.get(f"/api/assets/{address}").get_json()
            assert [s["job_id"] for s in new["scans"]] == [after] and {p["port"] for p in new["ports"] if p["state"] == "open"} == {22}
            listed = client.get("/api/assets", query_string={"network": target}).get_json()["assets"]
            assert [a["address"] for a in listed] == [test_host.address, address]
    finally:
        if added is not None:
            added.terminate()
            added.wait(timeout=10)
    result = invoke(runner, before, after)
    assert result.exit_code == 1, result.output
    assert "+8080/tcp" in result.stdout and "-80/tcp" in result.stdout
    assets = runner.invoke(cli, ["assets", "--network", target])
    assert assets.exit_code == 0 and test_host.address in assets.stdout and address in assets.stdout, assets.output
