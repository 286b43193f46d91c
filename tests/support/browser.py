"""A real headless Chromium for the web dashboard's tests, driven by selenium through Debian's chromedriver.

Nothing is downloaded: the driver's path is given to selenium (so selenium-manager never runs) and the browser is
Debian's /usr/bin/chromium. The browser reaches only loopback addresses: every other host goes to a proxy that is not
there (net::ERR_PROXY_CONNECTION_FAILED, which the page's console reports as an error).

    with Browser("http://127.0.0.1:8080") as browser:
        browser.open("/dashboard")
        browser.fill("Target", "10.0.0.0/24")
        browser.click("button[type=submit]")
        browser.wait_for(".job-row")
        assert browser.console_errors() == []
        assert browser.unlabeled_inputs() == []
        assert browser.keyboard_unreachable() == []
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPOSITORY = Path(__file__).resolve().parents[2]
# Not a proxy: nothing listens there, so a request to any host but a loopback one fails at once.
NO_PROXY = "http://127.0.0.1:9"
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-crash-reporter",
    "--window-size=1280,900",
)
LOOPBACK_ONLY = (
    f"--proxy-server={NO_PROXY}",
    # Chromium never sends loopback through a proxy; the name of any other host is not even looked up.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
)

# One element as a test sees it (tab_order, interactive_elements, unlabeled_inputs).
_DESCRIBE = """
const describe = (el) => ({
  tag: el.tagName.toLowerCase(),
  id: el.id || "",
  name: el.getAttribute("name") || "",
  text: (el.innerText || el.value || el.getAttribute("aria-label") || "").replace(/\\s+/g, " ").trim(),
  type: el.getAttribute("type") || "",
  href: el.getAttribute("href") || "",
});
const visible = (el) => el.checkVisibility({visibilityProperty: true});
"""
_ACTIVE = _DESCRIBE + "const el = document.activeElement; return el ? [el, describe(el)] : [null, null];"
_CONTROLS = """
const controls = [...document.querySelectorAll(
  'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]'
)].filter((el) => visible(el) && !el.matches(':disabled')
  && !(el.matches('[tabindex]:not(a[href], button, input, select, textarea)') && el.tabIndex < 0));
"""
_INTERACTIVE = _DESCRIBE + _CONTROLS + "return controls.map((el) => [el, describe(el)]);"
_UNLABELED = (
    _DESCRIBE
    + """
const text = (label) => {
  const copy = label.cloneNode(true);
  copy.querySelectorAll("input, select, textarea").forEach((el) => el.remove());
  return copy.textContent.trim();
};
const labelled = (el) =>
  [...el.labels].some((label) => text(label) !== "")
  || (el.getAttribute("aria-label") || "").trim() !== ""
  || (el.getAttribute("aria-labelledby") || "").split(/\\s+/).some((id) => id && document.getElementById(id));
return [...document.querySelectorAll("input, select, textarea")]
  .filter((el) => !["hidden", "submit", "button", "reset", "image"].includes(el.type))
  .filter((el) => visible(el) && !labelled(el))
  .map(describe);
"""
)
# The control named by a label's own text (the text of the controls inside it left out), or by its aria-label.
_BY_LABEL = """
const wanted = arguments[0].replace(/\\s+/g, " ").trim();
const own = (label) => {
  const copy = label.cloneNode(true);
  copy.querySelectorAll("input, select, textarea").forEach((el) => el.remove());
  return copy.textContent.replace(/\\s+/g, " ").trim();
};
const found = [...document.querySelectorAll("label")].filter((l) => own(l) === wanted && l.control).map((l) => l.control);
document.querySelectorAll("[aria-label]").forEach((el) => {
  if (el.getAttribute("aria-label").trim() === wanted && !found.includes(el)) found.push(el);
});
return found;
"""
# Focus the body so that the next Tab starts from the top of the document (a blur would keep the old starting point).
_FOCUS_BODY = """
const body = document.body, had = body.getAttribute("tabindex");
body.setAttribute("tabindex", "-1");
body.focus();
if (had === null) body.removeAttribute("tabindex"); else body.setAttribute("tabindex", had);
"""


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def available() -> str | None:
    """Why the browser cannot run here, or None when it can. Under CI (env CI set) a missing piece is an error, not a skip:
    tools/setup.sh --test installs them all."""
    reason = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        reason = "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            reason = f"{path} is not installed (tools/setup.sh --test)"
    if reason and _ci():
        raise RuntimeError(f"CI must run the browser tests: {reason}")
    return reason


def artifacts() -> Path:
    """Where the tests leave files for a person to look at (CLOUDX_TEST_ARTIFACTS, else tests/artifacts)."""
    return Path(os.environ.get("CLOUDX_TEST_ARTIFACTS", str(REPOSITORY / "tests" / "artifacts")))


def _running(processes: list[Any]) -> list[Any]:
    """Those still running: a zombie has ended (whoever it was reparented to reaps it in its own time)."""
    import psutil

    running = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
    return running


def _shutdown(driver: Any, profile: str) -> None:
    """Quit, wait for chromedriver and Chromium's processes to end, kill any still running after 5 s."""
    import psutil

    try:
        root = psutil.Process(driver.service.process.pid)
        processes = [root, *root.children(recursive=True)]
    except (AttributeError, psutil.Error):
        processes = []
    try:
        driver.quit()
    finally:
        deadline = time.monotonic() + 5
        while _running(processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in _running(processes):
            with contextlib.suppress(psutil.Error):
                process.kill()
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """One headless Chromium with a fresh profile, its console kept for console_errors()."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 5.0, loopback_only: bool = True) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.base_url = base_url
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="cloudx-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ARGUMENTS + (LOOPBACK_ONLY if loopback_only else ()):
            options.add_argument(argument)
        options.add_argument(f"--user-data-dir={self._profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            # With a driver path, selenium does not run selenium-manager (nothing is looked up or downloaded).
            self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except BaseException:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(max(timeout, 30.0))
        # A test that forgets close() still ends the browser when the Browser goes, at the latest when Python exits.
        self._finalizer = weakref.finalize(self, _shutdown, self.driver, self._profile)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End chromedriver and Chromium and remove the profile."""
        self._finalizer()

    # Pages and elements

    def open(self, url: str) -> None:
        """Load url (relative to base_url when one was given) and wait for it to load."""
        self.driver.get(urljoin(self.base_url, url) if self.base_url else url)

    @property
    def url(self) -> str:
        return self.driver.current_url

    def find(self, css: str) -> Any:
        """The first element matching css (selenium's NoSuchElementException when there is none)."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """The visible text of the first element matching css."""
        return self.find(css).text

    def wait_for(self, condition: str | Callable[[Browser], Any], timeout: float | None = None) -> Any:
        """Wait until a visible element matches css (it is returned) or predicate(browser) is truthy (its value is returned);
        AssertionError after timeout seconds."""
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.wait import WebDriverWait

        def check(_driver: Any) -> Any:
            if callable(condition):
                return condition(self)
            return next((el for el in self.find_all(condition) if el.is_displayed()), None)

        timeout = self.timeout if timeout is None else timeout
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
        try:
            return wait.until(check)
        except TimeoutException:
            what = condition if isinstance(condition, str) else getattr(condition, "__name__", repr(condition))
            raise AssertionError(f"{what} not met after {timeout} s on {self.driver.current_url}") from None

    def control(self, css_or_label: str) -> Any:
        """The element matching a CSS selector or, when none does, the control of the label with exactly this text
        (or with this aria-label)."""
        from selenium.common.exceptions import InvalidSelectorException

        try:
            found = self.find_all(css_or_label)
        except InvalidSelectorException:
            found = []
        if not found:
            found = self.driver.execute_script(_BY_LABEL, css_or_label)
        if len(found) != 1:
            raise AssertionError(f"{css_or_label!r} names {len(found)} controls on {self.driver.current_url}, not one")
        return found[0]

    def fill(self, css_or_label: str, value: str | bool) -> None:
        """Type value into a text field (replacing what it held), choose an option of a select by its text or value,
        or check (True) or uncheck (False) a checkbox or radio."""
        from selenium.webdriver.support.select import Select

        element = self.control(css_or_label)
        kind = (element.get_attribute("type") or "").lower()
        if element.tag_name.lower() == "select":
            select = Select(element)
            if any(option.text.strip() == value for option in select.options):
                select.select_by_visible_text(str(value))
            else:
                select.select_by_value(str(value))
        elif kind in ("checkbox", "radio"):
            if element.is_selected() != bool(value):
                element.click()
        else:
            element.clear()
            element.send_keys(str(value))

    def click(self, css: str) -> None:
        """Click the first visible element matching css as a person would (an error when another element covers it)."""
        element = self.wait_for(css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    # What a person or a check sees

    def console_errors(self, ignore: Iterable[str] = ()) -> list[str]:
        """The console's errors since the last call: SEVERE entries (uncaught exceptions, failed loads, console.error)
        and every Content Security Policy violation whatever its level; entries containing a string of ignore are
        left out."""
        ignore = tuple(ignore)
        errors = []
        for entry in self.driver.get_log("browser"):
            message = entry.get("message", "")
            csp = entry.get("source") == "security" or "Content Security Policy" in message
            if (entry.get("level") == "SEVERE" or csp) and not any(text in message for text in ignore):
                errors.append(message)
        return errors

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        """Save the window (or the whole page) as artifacts()/screenshots/<name>.png and return the path."""
        import base64

        folder = artifacts() / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.png"
        if full_page:
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            path.write_bytes(base64.b64decode(shot["data"]))
        else:
            path.write_bytes(self.driver.get_screenshot_as_png())
        return path

    def _tab_elements(self, limit: int) -> list[tuple[Any, dict[str, str]]]:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        self.driver.execute_script(_FOCUS_BODY)
        reached: list[tuple[Any, dict[str, str]]] = []
        for _ in range(limit):
            ActionChains(self.driver).send_keys(Keys.TAB).perform()
            element, description = self.driver.execute_script(_ACTIVE)
            if element is None or description["tag"] in ("body", "html") or any(element == seen for seen, _ in reached):
                break
            reached.append((element, description))
        return reached

    def tab_order(self, limit: int = 200) -> list[dict[str, str]]:
        """The elements that Tab focuses, from the top of the page, until focus leaves the page or comes back:
        each as {tag, id, name, text, type, href}."""
        return [description for _, description in self._tab_elements(limit)]

    def interactive_elements(self) -> list[dict[str, str]]:
        """Every visible, enabled control in document order: a[href], button, input (not hidden), select, textarea
        and any other element with tabindex >= 0."""
        return [description for _, description in self.driver.execute_script(_INTERACTIVE)]

    def keyboard_unreachable(self, limit: int = 200) -> list[dict[str, str]]:
        """The interactive elements that Tab never focuses (a radio group counts as reached when one of its radios is,
        as Tab stops once in a group)."""
        reached = self._tab_elements(limit)
        groups = {description["name"] for _, description in reached if description["type"] == "radio" and description["name"]}
        return [
            description
            for element, description in self.driver.execute_script(_INTERACTIVE)
            if not any(element == seen for seen, _ in reached) and not (description["type"] == "radio" and description["name"] in groups)
        ]

    def unlabeled_inputs(self) -> list[dict[str, str]]:
        """The visible inputs, selects and textareas (not hidden, submit, button, reset or image) that no label names:
        no <label for=id> and no wrapping <label> with text of its own, no aria-label, no aria-labelledby of an element
        on the page (a placeholder or title is not a label)."""
        return self.driver.execute_script(_UNLABELED)
