"""The browser harness (tests/support/browser.py) on small pages of its own: each check is shown to fail where it must
(an unlabelled input, a control that Tab skips, an inline script that the page's CSP blocks, an uncaught exception)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from tests.support import browser as harness
from tests.support.browser import Browser

pytestmark = pytest.mark.slow

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Harness</title><script src="/app.js" defer></script></head>
<body>
  <h1 id="greeting">Hello</h1>
  <a id="home" href="/clean">Home</a>
  <label for="target">Target</label> <input id="target" name="target">
  <input id="nameless" name="nameless">
  <input type="hidden" name="token" value="x">
  <input id="hidden-away" style="display: none">
  <label>Mode <select id="mode" name="mode"><option value="fast">Fast</option><option value="full">Full scan</option></select></label>
  <button id="go" type="button">Go</button>
  <button id="mouse-only" type="button" tabindex="-1">Mouse only</button>
  <p id="echo"></p>
</body></html>
"""
APP_JS = """
document.getElementById("go").addEventListener("click", () => {
  document.getElementById("echo").textContent = document.getElementById("target").value + " " + document.getElementById("mode").value;
});
document.body.dataset.external = "ran";
"""
CSP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CSP</title><script src="/app.js" defer></script></head>
<body><p>Strict</p><button id="go" type="button">Go</button><input id="target" aria-label="Target"><select id="mode"></select>
<p id="echo"></p><script>document.body.dataset.inline = "ran";</script></body></html>
"""
BROKEN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Broken</title><script src="/broken.js"></script></head>
<body><p>Broken</p></body></html>
"""
PAGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "/clean": ("text/html", FORM, {}),
    "/csp": ("text/html", CSP_PAGE, {"Content-Security-Policy": "script-src 'self'"}),
    "/broken": ("text/html", BROKEN_PAGE, {}),
    "/app.js": ("text/javascript", APP_JS, {}),
    "/broken.js": ("text/javascript", "throw new Error('harness boom');", {}),
}


class Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        if self.path not in PAGES:
            self.send_error(404)
            return
        kind, body, headers = PAGES[self.path]
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _no_selenium_manager(*_args: object) -> dict[str, str]:
    raise AssertionError("selenium-manager was asked for a driver: it would look one up on the network")


@pytest.fixture(scope="module")
def browser(site: str) -> Iterator[Browser]:
    reason = harness.available()
    if reason:
        pytest.skip(reason)
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SeleniumManager, "binary_paths", _no_selenium_manager)
        with Browser(site) as started:
            yield started


@pytest.fixture
def clean(browser: Browser) -> Browser:
    browser.open("/clean")
    browser.wait_for(lambda b: b.find("body").get_attribute("data-external") == "ran")
    browser.console_errors()
    return browser


def test_keyboard_reaches_the_controls_but_not_one_out_of_the_tab_order(clean: Browser) -> None:
    order = [(element["tag"], element["id"] or element["text"]) for element in clean.tab_order()]
    assert order == [("a", "home"), ("input", "target"), ("input", "nameless"), ("select", "mode"), ("button", "go")]
    assert clean.tab_order()[0] == {"tag": "a", "id": "home", "name": "", "text": "Home", "type": "", "href": "/clean"}
    assert [element["id"] for element in clean.interactive_elements()] == ["home", "target", "nameless", "mode", "go", "mouse-only"]
    assert [element["id"] for element in clean.keyboard_unreachable()] == ["mouse-only"]


def test_unlabeled_inputs_finds_exactly_the_one_without_a_label(clean: Browser) -> None:
    assert clean.unlabeled_inputs() == [{"tag": "input", "id": "nameless", "name": "nameless", "text": "", "type": "", "href": ""}]


def test_fill_by_label_and_css_then_click(clean: Browser) -> None:
    clean.fill("Target", "10.0.0.0/24")
    clean.fill("Mode", "Full scan")
    clean.click("#go")
    assert clean.wait_for(lambda b: b.text("#echo")) == "10.0.0.0/24 full"
    clean.fill("#target", "192.0.2.0/28")
    clean.fill("#mode", "fast")
    clean.click("button#go")
    clean.wait_for(lambda b: b.text("#echo") == "192.0.2.0/28 fast")
    with pytest.raises(AssertionError, match="names 0 controls"):
        clean.fill("No such label", "x")
    with pytest.raises(AssertionError, match="not met"):
        clean.wait_for("#never", timeout=0.3)


def test_console_is_clean_on_the_clean_page(clean: Browser) -> None:
    clean.open("/clean")
    clean.wait_for(lambda b: b.find("body").get_attribute("data-external") == "ran")
    assert clean.console_errors() == []


def test_console_errors_report_the_inline_script_that_csp_blocks(browser: Browser) -> None:
    browser.open("/csp")
    browser.wait_for(lambda b: b.find("body").get_attribute("data-external") == "ran")
    assert browser.find("body").get_attribute("data-inline") is None
    errors = browser.console_errors()
    assert len(errors) == 1, errors
    assert "Content Security Policy" in errors[0] and "inline script" in errors[0]
    assert browser.console_errors() == []  # each error is reported once
    browser.open("/csp")
    browser.wait_for(lambda b: b.find("body").get_attribute("data-external") == "ran")
    assert browser.console_errors(ignore=["Content Security Policy"]) == []


def test_console_errors_report_an_uncaught_exception(browser: Browser) -> None:
    browser.open("/broken")
    errors = browser.wait_for(lambda b: b.console_errors())
    assert any("Uncaught Error: harness boom" in error for error in errors), errors


def test_screenshot_is_a_png_in_the_artifacts_folder(clean: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDX_TEST_ARTIFACTS", str(tmp_path))
    path = clean.screenshot("harness/clean page")
    assert path == tmp_path / "screenshots" / "harness_clean_page.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 1000
    whole = clean.screenshot("whole", full_page=True)
    assert whole.read_bytes().startswith(b"\x89PNG")


def test_close_ends_chromedriver_and_chromium_and_removes_the_profile(site: str) -> None:
    reason = harness.available()
    if reason:
        pytest.skip(reason)
    browser = Browser(site)
    driver = psutil.Process(browser.driver.service.process.pid)
    processes = [driver, *driver.children(recursive=True)]
    assert any("chrom" in process.name() for process in processes[1:]), processes
    profile = Path(browser._profile)
    assert profile.is_dir()
    browser.close()
    browser.close()  # a second close does nothing
    ended = [p for p in processes if not psutil.pid_exists(p.pid) or p.status() == psutil.STATUS_ZOMBIE]
    assert ended == processes, [(p.pid, p.status()) for p in processes if p not in ended]
    assert not profile.exists()
    # Chromium's zombies, reparented when chromedriver quit, are reaped by the system within about a second.
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == []
