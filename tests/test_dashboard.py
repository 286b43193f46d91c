"""The dashboard in a real headless Chromium against a real `cloudx serve`: sign-in, live scans and job output,
stopping a scan, hostile scan data shown as text, roles, CSRF, console errors, keyboard access and screenshots.

One service and one browser serve the whole module (users change by signing out and in). With
CLOUDX_UPDATE_SCREENSHOTS=1 the pages' screenshots are also copied to docs/screenshots/, as the README shows them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import browser as harness
from tests.support.hostile_service import (
    BANNER_MARKUP,
    EXPECTED_PRODUCT,
    EXPECTED_VERSION,
    HOSTILE_HOSTNAMES,
    HOSTILE_NMAP_XML,
    start_hostile_service,
)
from tests.support.service import Service
from tests.support.waiting import wait_for
from tests.test_scan_integration import scanner_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS_SCREENSHOTS = harness.REPOSITORY / "docs" / "screenshots"
FINAL = ("successful", "failed", "canceled", "timeout", "error")
# A scan of the slow host that runs for minutes unless stopped (it answers UDP probes only with rate-limited ICMP).
LONG_SCAN = {"tool": "nmap", "scan_type": "udp", "ports": "1-1000"}


# Fixtures: one service, one browser, and who is signed in


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if harness.available():
        pytest.skip(harness.available())
    started = Service(tmp_path_factory.mktemp("dashboard"))
    started.start()
    started.operator = started.cloudx("token", "create", "--name", "web-operator", "--role", "operator").strip()  # type: ignore[attr-defined]
    started.viewer = started.cloudx("token", "create", "--name", "web-viewer", "--role", "viewer").strip()  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        started.stop()
        started.log.close()


@pytest.fixture(scope="module")
def web(service: Service) -> str:
    return service.url.removesuffix("/api")


@pytest.fixture(scope="module")
def browser(web: str) -> Iterator[harness.Browser]:
    with harness.Browser(web, timeout=10) as started:
        started.signed_in_as = None  # type: ignore[attr-defined]
        yield started


def sign_out(browser: harness.Browser) -> None:
    if browser.find_all("form.who button"):
        browser.click("form.who button")
        browser.wait_for(lambda b: b.url.endswith("/signin") and b.find_all("#token"))
    browser.signed_in_as = None  # type: ignore[attr-defined]


def sign_in(browser: harness.Browser, token: str, next_path: str = "/") -> None:
    """Sign in by pasting the token into the sign-in form, as a person does."""
    browser.open(next_path)
    if browser.signed_in_as == token and browser.find_all("form.who button"):  # type: ignore[attr-defined]
        return
    sign_out(browser)
    browser.open(f"/signin?next={next_path}")
    browser.fill("API token", token)
    browser.click("form[action='/signin'] button[type=submit]")
    browser.wait_for(lambda b: b.find_all("form.who button"))
    browser.signed_in_as = token  # type: ignore[attr-defined]


def as_role(browser: harness.Browser, service: Service, role: str) -> harness.Browser:
    sign_in(browser, {"admin": service.token, "operator": service.operator, "viewer": service.viewer}[role])  # type: ignore[attr-defined]
    return browser


def path_of(browser: harness.Browser) -> str:
    return browser.driver.execute_script("return location.pathname + location.search")


def mark_page(browser: harness.Browser) -> None:
    """A mark that only this very document carries: gone after any reload or navigation."""
    browser.driver.execute_script("window.__marker = 1")


def same_page(browser: harness.Browser) -> bool:
    return browser.driver.execute_script("return window.__marker === 1")


def status_of(browser: harness.Browser) -> str:
    return browser.text(".panel [data-field=status]").strip()


def output_text(browser: harness.Browser) -> str:
    return browser.driver.execute_script("return document.querySelector('pre[data-lines]').textContent")


def event_line(event: dict[str, Any]) -> str:
    """An event as the job page shows it (its stdout, else its kind, host and task)."""
    if event.get("stdout"):
        return event["stdout"].replace("\r\n", "\n")
    return f"[{event['event']}]" + "".join(f" {event[key]}" for key in ("host", "task") if event.get(key))


def api_scan(service: Service, **body: Any) -> str:
    response = service.http.post(f"{service.url}/scans", json=body)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def submit_scan(browser: harness.Browser, **fields: str) -> str:
    """Start a scan with the form of /scans, as the signed-in user; the scan's page is open when this returns."""
    browser.open("/scans")
    for name, value in fields.items():
        browser.fill(f"#{name}", value)
    browser.click("form[action='/scans'] button[type=submit]")
    browser.wait_for(lambda b: path_of(b).startswith("/scans/") and "notice=scan-submitted" in path_of(b))
    assert browser.text(".notice") == "Scan submitted."
    return path_of(browser).split("/")[2].split("?")[0]


def api_status(service: Service, job_id: str) -> str:
    return service.http.get(f"{service.url}/jobs/{job_id}").json()["status"]


def wait_ended(service: Service, job_id: str, timeout: float = 180) -> str:
    assert wait_for(lambda: api_status(service, job_id) in FINAL, timeout=timeout), api_status(service, job_id)
    return api_status(service, job_id)


def stop_and_settle(service: Service, job_id: str, address: str) -> None:
    """A long scan stopped (if still running) and its scanner gone, so that nothing is left behind."""
    if api_status(service, job_id) not in FINAL:
        service.http.post(f"{service.url}/scans/{job_id}/stop")
    wait_ended(service, job_id, timeout=90)
    assert wait_for(lambda: not scanner_processes(address), timeout=40), scanner_processes(address)


def results(browser: harness.Browser) -> dict[int, dict[str, str]]:
    """The results table by port number: each row's cells by column heading."""
    headings = [th.text.strip() for th in browser.find_all("table.results thead th")]
    rows = {}
    for row in browser.find_all("table.results tbody tr"):
        cells = dict(zip(headings, (td.text for td in row.find_elements("css selector", "td")), strict=False))
        rows[int(cells["Port"].split("/")[0])] = cells
    return rows


def screenshot(browser: harness.Browser, name: str) -> Path:
    """The window at the top of the page (artifacts()/screenshots), also into docs/screenshots/ when asked."""
    browser.driver.execute_script("window.scrollTo(0, 0)")
    path = browser.screenshot(name)
    if os.environ.get("CLOUDX_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


@pytest.fixture(scope="module")
def finished_scan(service: Service, target: Any) -> str:
    """A successful scan of the test host (22 open, 80 closed, 9999 filtered) for pages that show one."""
    job_id = api_scan(service, target=target.address, tool="nmap", scan_type="default", ports="22,80,9999")
    assert wait_ended(service, job_id) == "successful"
    return job_id


# 1. Sign-in


def test_sign_in_with_a_pasted_token_lands_on_the_overview(service: Service, browser: harness.Browser) -> None:
    sign_out(browser)
    browser.open("/")
    assert path_of(browser) == "/signin?next=/"
    browser.fill("API token", "cx_not_a_token")
    browser.click("form[action='/signin'] button[type=submit]")
    assert "not valid" in browser.wait_for("#token-error").text
    assert [e for e in browser.console_errors() if "401 (UNAUTHORIZED)" not in e] == []  # the refusal's status only
    browser.fill("API token", service.operator)  # type: ignore[attr-defined]
    browser.click("form[action='/signin'] button[type=submit]")
    browser.wait_for(lambda b: b.find_all("form.who button"))
    browser.signed_in_as = service.operator  # type: ignore[attr-defined]
    assert path_of(browser) == "/"
    assert browser.text("h1") == "Overview"
    assert "web-operator" in browser.text("form.who") and "operator" in browser.text("form.who .role")
    assert browser.console_errors() == []


# 2. A scan from the form, followed live


def test_scan_from_the_form_is_followed_live_to_its_results(service: Service, browser: harness.Browser, target: Any) -> None:
    as_role(browser, service, "operator")
    job_id = submit_scan(browser, tool="nmap", scan_type="default", target=target.address, ports="22,80,9999")
    mark_page(browser)
    # The results section as the server rendered it, while the scan ran: live.js swaps in a new one at the end.
    browser.driver.execute_script("document.getElementById('results').dataset.original = '1'")
    browser.wait_for(lambda b: status_of(b) == "successful", timeout=120)
    browser.wait_for(lambda b: b.find("progress[data-field=progress]").get_attribute("value") == "100")
    browser.wait_for(lambda b: b.find_all("table.results") and not b.find("#results").get_attribute("data-original"))
    assert same_page(browser), "the page was reloaded"
    assert browser.text("[data-field=progress-text]") == "100 %"
    rows = results(browser)
    assert {port: row["State"] for port, row in rows.items()} == {22: "open", 80: "closed", 9999: "filtered"}
    assert {row["Address"] for row in rows.values()} == {target.address}
    assert browser.wait_for(lambda b: b.text("[data-stream-state]")) == "ended: successful"
    assert api_status(service, job_id) == "successful"
    assert browser.console_errors() == []


# 3. Stopping a long scan


def test_stop_a_long_scan_and_see_it_canceled_live(service: Service, browser: harness.Browser, slow_target: Any) -> None:
    as_role(browser, service, "operator")
    job_id = submit_scan(browser, target=slow_target.address, **LONG_SCAN)
    try:
        browser.wait_for(lambda b: status_of(b) == "running", timeout=60)
        browser.wait_for(lambda b: int(b.find("progress[data-field=progress]").get_attribute("value")) > 0, timeout=90)
        browser.click("form[action$='/stop'] button")
        browser.wait_for(lambda b: "notice=stop-requested" in path_of(b))
        assert browser.text(".notice").startswith("Stop requested")
        mark_page(browser)
        browser.wait_for(lambda b: status_of(b) == "canceled", timeout=60)
        browser.wait_for(lambda b: b.text("[data-stream-state]") == "ended: canceled")
        # The Stop control goes with the panel's buttons swapped in at the end (nothing is left to stop).
        browser.wait_for(lambda b: not b.find_all("form[action$='/stop']"))
        assert same_page(browser), "the page was reloaded"
        assert api_status(service, job_id) == "canceled"
        browser.driver.refresh()
        assert status_of(browser) == "canceled" and not browser.find_all("form[action$='/stop']")
        assert browser.console_errors() == []
    finally:
        stop_and_settle(service, job_id, slow_target.address)


# 4. A job's live output, resumed after a reload


def test_job_output_is_followed_live_and_resumes_after_a_reload(service: Service, browser: harness.Browser, slow_target: Any) -> None:
    as_role(browser, service, "operator")
    job_id = api_scan(service, target=slow_target.address, **LONG_SCAN, timeout=15)
    try:
        browser.open(f"/jobs/{job_id}")
        mark_page(browser)
        before = len(output_text(browser))
        browser.wait_for(lambda b: "TASK [" in output_text(b), timeout=60)
        browser.wait_for(lambda b: len(output_text(b)) > before and status_of(b) == "running", timeout=60)
        assert same_page(browser)
        # The host's results so far, counted from the stream's events while the job runs.
        browser.wait_for(lambda b: [int(c.text) for c in b.find_all("[data-host-progress] tr[data-host] [data-count=ok]")] not in ([], [0]))
        # Reloaded mid-run: what was shown comes from the server, the rest from the stream, nothing twice.
        shown = output_text(browser)
        browser.driver.refresh()
        assert not same_page(browser)
        assert status_of(browser) == "running", "reloaded too late: the job ended"
        assert output_text(browser).startswith(shown.rstrip("\n").rsplit("\n", 1)[0])
        browser.wait_for(lambda b: status_of(b) == "timeout", timeout=120)
        browser.wait_for(lambda b: b.text("[data-stream-state]") == "ended: timeout")
        events = service.http.get(f"{service.url}/jobs/{job_id}/events?limit=500").json()["events"]
        assert len(events) <= 300, "more events than the page renders: the comparison below would not hold"
        text = output_text(browser)
        assert text == "".join(f"{event_line(e)}\n" for e in events)
        first_task = next(line for line in text.splitlines() if line.startswith("TASK ["))
        assert text.splitlines().count(first_task) == 1
        browser.wait_for(lambda b: b.find_all("#hosts table"))  # the recap's counts, swapped in at the end
        assert browser.console_errors() == []
    finally:
        stop_and_settle(service, job_id, slow_target.address)


# 5. Hostile data


def no_script_ran(browser: harness.Browser) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.driver.switch_to.alert  # noqa: B018 (the property raises when no alert is open)
    assert browser.find_all("img[src=x]") == [] and browser.find_all("img") == []
    assert [s.get_attribute("src") for s in browser.find_all("script")] == [f"{browser.base_url}/static/live.js"]


def test_hostile_scan_data_is_shown_as_text(service: Service, browser: harness.Browser, lab: Any) -> None:
    host = lab.add_host()
    stop = start_hostile_service(host, 2121, product_port=2122)
    try:
        as_role(browser, service, "operator")
        scanned = submit_scan(browser, tool="nmap", scan_type="intense", target=host.address, ports="2121,2122")
        browser.wait_for(lambda b: status_of(b) == "successful", timeout=180)
        browser.wait_for("table.results")  # swapped in by live.js
        rows = results(browser)
        assert rows[2121]["Version"] == EXPECTED_VERSION and rows[2121]["Product"] == "vsftpd"
        assert rows[2122]["Product"] == EXPECTED_PRODUCT and rows[2122]["Version"] == "1.0"
        no_script_ran(browser)
        browser.driver.refresh()  # and as the server renders it
        rows = results(browser)
        assert rows[2121]["Version"] == EXPECTED_VERSION and rows[2122]["Product"] == EXPECTED_PRODUCT
        no_script_ran(browser)
        assert api_status(service, scanned) == "successful"
    finally:
        stop()

    response = service.http.post(f"{service.url}/imports", data=HOSTILE_NMAP_XML.read_bytes(), headers={"Content-Type": "application/xml"})
    assert response.status_code == 201, response.text
    browser.open(f"/scans/{response.json()['job_id']}")
    rows = results(browser)
    assert rows[2121]["Host names"] == ", ".join(HOSTILE_HOSTNAMES)
    assert rows[2121]["Version"] == EXPECTED_VERSION and rows[2122]["Product"] == EXPECTED_PRODUCT
    no_script_ran(browser)
    for page in ("/scans", "/", f"/jobs/{response.json()['job_id']}"):  # where the import is listed
        browser.open(page)
        no_script_ran(browser)
    assert all(markup not in browser.driver.title for markup in BANNER_MARKUP)
    assert browser.console_errors() == []


# 7. A viewer sees no controls that change anything


def test_viewer_has_no_scan_form_and_no_stop_or_delete(
    service: Service, browser: harness.Browser, slow_target: Any, finished_scan: str
) -> None:
    job_id = api_scan(service, target=slow_target.address, **LONG_SCAN)
    try:
        as_role(browser, service, "viewer")
        assert "viewer" in browser.text("form.who .role")
        browser.open("/scans")
        assert browser.find_all("form[action='/scans'][method=post]") == [] and browser.find_all("#target") == []
        assert "Start a scan" not in browser.text("main")
        browser.wait_for(lambda b: api_status(service, job_id) == "running", timeout=60)
        for scan in (job_id, finished_scan):
            browser.open(f"/scans/{scan}")
            assert browser.find_all("form[action$='/stop']") == [] and browser.find_all("a[href$='/delete']") == []
            assert "Stop scan" not in browser.text("main") and "Delete" not in browser.text("main")
            browser.open(f"/jobs/{scan}")
            assert browser.find_all("form[method=post][action^='/jobs/']") == []
        # Nor may a viewer post the forms that are not shown.
        browser.open(f"/scans/{finished_scan}/delete")
        assert browser.text("h1") == "403: not allowed" and "operator role" in browser.text("main")
        assert browser.console_errors(ignore=["403 (FORBIDDEN)"]) == []
    finally:
        stop_and_settle(service, job_id, slow_target.address)


# 8. CSRF


def test_form_without_its_csrf_token_is_refused(service: Service, browser: harness.Browser, target: Any) -> None:
    as_role(browser, service, "operator")
    before = service.http.get(f"{service.url}/scans?limit=500").json()["scans"]
    browser.open("/scans")
    browser.fill("#target", target.address)
    browser.fill("#ports", "22")
    browser.driver.execute_script("document.querySelector(\"form[action='/scans'] input[name=csrf_token]\").remove()")
    browser.click("form[action='/scans'] button[type=submit]")
    browser.wait_for(lambda b: b.text("h1") == "403: not allowed")
    assert "CSRF token is missing" in browser.text(".error")
    # A token from another session is no better.
    browser.open("/scans")
    browser.fill("#target", target.address)
    browser.driver.execute_script("document.querySelector(\"form[action='/scans'] input[name=csrf_token]\").value = 'x'.repeat(43)")
    browser.click("form[action='/scans'] button[type=submit]")
    browser.wait_for(lambda b: b.text("h1") == "403: not allowed")
    assert service.http.get(f"{service.url}/scans?limit=500").json()["scans"] == before
    assert browser.console_errors(ignore=["403 (FORBIDDEN)"]) == []


# 6, 9, 10. Every page: no console error, every control reachable by keyboard and labelled, a screenshot


PAGES = [
    ("overview", "/"),
    ("scans", "/scans"),
    ("scan", "/scans/{scan}"),
    ("jobs", "/jobs"),
    ("job", "/jobs/{scan}"),
    ("fleet", "/fleet"),
    ("schedules", "/schedules"),
    ("webhooks", "/webhooks"),
    ("tokens", "/admin/tokens"),
    ("policy", "/admin/policy"),
    ("audit", "/admin/audit"),
    ("signin", "/signin"),
]


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[name for name, _ in PAGES])
def test_page_is_clean_reachable_and_labelled(service: Service, browser: harness.Browser, finished_scan: str, name: str, path: str) -> None:
    if name == "signin":
        sign_out(browser)
    else:
        as_role(browser, service, "admin")
    browser.console_errors()  # what came before is not this page's
    browser.open(path.format(scan=finished_scan))
    assert browser.find("main"), path
    if name == "overview":  # the charts drawn from the machine's monitor
        browser.wait_for(lambda b: b.find("[data-metric=cpu_percent] polyline").get_attribute("points"))
    time.sleep(0.5)  # live.js's streams opened and their first events in
    assert browser.console_errors() == [], path
    screenshot(browser, name)  # before Tab moves the focus and scrolls the page
    assert browser.unlabeled_inputs() == [], path
    assert browser.keyboard_unreachable() == [], path
    assert browser.console_errors() == [], path
