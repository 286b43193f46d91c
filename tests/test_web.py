"""The dashboard (controller.web) with no executor and no browser: sign-in and its sessions, CSRF, roles, the scan
form, escaping of hostile data, the strict CSP, and the API's reads with the session cookie."""

from __future__ import annotations

import hashlib
import html
import logging
import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text, update

from controller.app import create_app
from controller.services.auth import revoke_token
from controller.store.models import ApiToken, Job, JobEvent, WebSession, aware, utcnow
from tests.support.app import FIXTURES, make_config, make_token, prepare_app

COOKIE = "cloudx_session"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
SCAN = {"tool": "nmap", "scan_type": "default", "target": "192.0.2.10"}
HOSTILE_OUTPUT = '<script>alert("out")</script> "><img src=x onerror=alert(3)>'


# -- helpers ------------------------------------------------------------------------------------------------------


def browser(app: Flask) -> FlaskClient:
    """A client as a browser is: cookies, and no Authorization header (the tests' clients send an admin token)."""
    client = app.test_client()
    client.environ_base.pop("HTTP_AUTHORIZATION", None)
    return client


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: FlaskClient, token: str, next_path: str | None = None, **kwargs: Any) -> Any:
    form = client.get("/signin", **kwargs)
    assert form.status_code == 200
    data = {"token": token, "csrf_token": csrf_of(form.text)}
    if next_path is not None:
        data["next"] = next_path
    return client.post("/signin", data=data, **kwargs)


def signed_in(app: Flask, role: str = "operator", **options: Any) -> tuple[FlaskClient, str]:
    client, token = browser(app), make_token(app, role, **options)
    response = sign_in(client, token)
    assert response.status_code == 303, response.text
    return client, token


def cookie_value(client: FlaskClient) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None, "no session cookie"
    return cookie.value


def session_header(response: Any, secure: bool = False) -> str | None:
    """The Set-Cookie of the session: named with the __Host- prefix when Secure (no subdomain can plant one)."""
    name = f"__Host-{COOKIE}" if secure else COOKIE
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]
    assert len(headers) <= 1
    return headers[0] if headers else None


def attributes(header: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}


def rows(app: Flask, sql: str) -> list[Any]:
    with app.extensions["cloudx.db"].session() as session:
        return list(session.execute(text(sql)).all())


def digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def job_count(app: Flask) -> int:
    return len(rows(app, "SELECT id FROM jobs"))


def session_count(app: Flask) -> int:
    return len(rows(app, "SELECT id FROM web_sessions"))


def page_ok(client: FlaskClient, path: str = "/") -> bool:
    response = client.get(path)
    assert response.status_code in (200, 303), response.status_code
    return response.status_code == 200


def queued_scan(client: FlaskClient, target: str = "192.0.2.10", **fields: str) -> str:
    response = client.post("/api/scans", json={**SCAN, "target": target, **fields})
    assert response.status_code in (201, 202), response.get_json()
    return str(response.get_json()["job_id"])


def with_app(tmp_path: Any, **overrides: Any) -> Flask:
    return prepare_app(create_app(make_config(tmp_path, **overrides)))


# -- redirects and next -------------------------------------------------------------------------------------------


def test_a_page_without_a_session_redirects_to_signin(app):
    client = browser(app)
    response = client.get("/")
    assert response.status_code == 303 and response.headers["Location"] == "/signin?next=/"
    response = client.get("/scans")
    assert response.status_code == 303 and response.headers["Location"].startswith("/signin?next=/scans")
    # A cookie that is no session of ours is no session either.
    client.set_cookie(COOKIE, "A" * 43)
    assert client.get("/").status_code == 303


def test_next_is_kept_through_signin(app):
    client, token = browser(app), make_token(app, "viewer")
    wanted = "/scans?tool=nmap&status=queued"
    location = client.get(wanted).headers["Location"]
    form = client.get(location)
    assert form.status_code == 200
    hidden = re.search(r'name="next" value="([^"]*)"', form.text)
    assert hidden and html.unescape(hidden.group(1)) == wanted
    response = client.post("/signin", data={"token": token, "csrf_token": csrf_of(form.text), "next": html.unescape(hidden.group(1))})
    assert response.status_code == 303 and response.headers["Location"] == wanted
    assert client.get(wanted).status_code == 200


@pytest.mark.parametrize(
    "wanted", ["//evil.example", "/\\evil", "https://x", "http://evil.example/", "/\\/evil", " /x", "javascript:alert(1)"]
)
def test_an_open_redirect_next_lands_on_the_overview(app, wanted):
    client, token = browser(app), make_token(app, "viewer")
    form = client.get("/signin", query_string={"next": wanted})
    assert form.status_code == 200 and 'name="next" value="/"' in form.text
    response = client.post("/signin", data={"token": token, "csrf_token": csrf_of(form.text), "next": wanted})
    assert response.status_code == 303 and response.headers["Location"] == "/"


# -- sign-in and its cookie ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["nonsense", "cx_000000000000_" + "A" * 43, ""])
def test_a_wrong_token_is_a_401_page_without_a_session(app, wrong):
    client = browser(app)
    real = make_token(app, "admin")
    if wrong == "":
        wrong = real[:-1] + ("A" if real[-1] != "A" else "B")  # a known id with the wrong secret
    response = sign_in(client, wrong)
    assert response.status_code == 401
    assert "That token is not valid, expired or was revoked." in response.text and 'id="token-error"' in response.text
    assert session_header(response) is None and client.get_cookie(COOKIE) is None
    assert session_count(app) == 0
    assert client.get("/").status_code == 303


def test_a_good_token_opens_a_session_with_a_strict_cookie(app):
    client, token = browser(app), make_token(app, "operator")
    response = sign_in(client, token)
    assert response.status_code == 303 and response.headers["Location"] == "/"
    header = session_header(response)
    assert header is not None
    flags = attributes(header)
    assert {"httponly", "path"} <= flags and "secure" not in flags
    assert re.search(r";\s*Path=/(;|$)", header) and re.search(r";\s*SameSite=Strict(;|$)", header)
    assert client.get("/").status_code == 200


def test_the_cookie_is_secure_over_https(app):
    client, token = browser(app), make_token(app, "operator")
    response = sign_in(client, token, base_url="https://localhost")
    header = session_header(response, secure=True)
    assert response.status_code == 303 and header is not None and "secure" in attributes(header)
    assert {"httponly"} <= attributes(header) and re.search(r";\s*SameSite=Strict(;|$)", header)


def test_the_cookie_is_always_secure_when_configured(tmp_path):
    app = with_app(tmp_path / "secure", WEB_SECURE_COOKIES="always")
    try:
        client, token = browser(app), make_token(app, "operator")
        form = client.get("/signin")
        presession = [h for h in form.headers.getlist("Set-Cookie") if h.startswith("__Host-cloudx_presession=")]
        assert presession and "secure" in attributes(presession[0])
        response = client.post("/signin", data={"token": token, "csrf_token": csrf_of(form.text)})
        header = session_header(response, secure=True)
        assert response.status_code == 303 and header is not None and "secure" in attributes(header)
    finally:
        app.extensions["cloudx.db"].dispose()


def test_only_the_cookies_hash_is_stored_and_the_token_is_written_nowhere(app, caplog):
    caplog.set_level(logging.DEBUG)
    client, token = browser(app), make_token(app, "operator", "web-secret-test")
    secret = token.rsplit("_", 1)[1]
    assert sign_in(client, token).status_code == 303
    cookie = cookie_value(client)
    ids = [r.id for r in rows(app, "SELECT id FROM web_sessions")]
    assert cookie not in ids and hashlib.sha256(cookie.encode()).hexdigest() in ids
    # A page, a change and a sign-out, so the audit log and the access log have something to say.
    scans = client.get("/scans")
    assert scans.status_code == 200
    assert client.post("/scans", data={**SCAN, "csrf_token": csrf_of(scans.text)}).status_code == 303
    stored = rows(app, "SELECT * FROM web_sessions") + rows(app, "SELECT * FROM audit_log")
    assert len(rows(app, "SELECT * FROM audit_log")) > 0
    dumped = repr(stored)
    assert token not in dumped and secret not in dumped and cookie not in dumped
    assert client.post("/signout", data={"csrf_token": csrf_of(client.get("/").text)}).status_code == 303
    assert caplog.records, "nothing was logged"
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert token not in logged and secret not in logged and cookie not in logged


# -- CSRF ---------------------------------------------------------------------------------------------------------


def test_signin_needs_its_csrf_token(app):
    client, token = browser(app), make_token(app, "operator")
    client.get("/signin")  # the pre-session cookie, but no token sent with the form
    response = client.post("/signin", data={"token": token})
    assert response.status_code == 403 and session_header(response) is None and session_count(app) == 0
    # Another browser's sign-in form: its token is derived from that browser's pre-session cookie, not this one's.
    other = browser(app).get("/signin")
    response = client.post("/signin", data={"token": token, "csrf_token": csrf_of(other.text)})
    assert response.status_code == 403 and session_header(response) is None and session_count(app) == 0
    # No cookie at all (a cross-site post cannot send the SameSite one either).
    response = browser(app).post("/signin", data={"token": token, "csrf_token": csrf_of(other.text)})
    assert response.status_code == 403 and session_count(app) == 0
    assert client.get("/").status_code == 303


def test_changes_need_this_sessions_csrf_token(app):
    client, _ = signed_in(app, "operator")
    other, _ = signed_in(app, "operator")
    foreign = csrf_of(other.get("/scans").text)
    own = csrf_of(client.get("/scans").text)
    assert foreign != own
    for csrf in (None, "", foreign, "0" * 64):
        data = {**SCAN} if csrf is None else {**SCAN, "csrf_token": csrf}
        response = client.post("/scans", data=data)
        assert response.status_code == 403 and "CSRF" in response.text
        assert job_count(app) == 0
        data = {} if csrf is None else {"csrf_token": csrf}
        assert client.post("/signout", data=data).status_code == 403
        assert page_ok(client) and page_ok(other)
    assert session_count(app) == 2


# -- sessions end -------------------------------------------------------------------------------------------------


def test_signout_ends_the_session_on_the_server(app):
    client, _ = signed_in(app, "viewer")
    cookie = cookie_value(client)
    copy = browser(app)
    copy.set_cookie(COOKIE, cookie)
    assert copy.get("/api/scans").status_code == 200 and page_ok(copy)  # the cookie alone is the session
    response = client.post("/signout", data={"csrf_token": csrf_of(client.get("/").text)})
    assert response.status_code == 303 and response.headers["Location"] == "/signin"
    assert session_count(app) == 0
    replay = browser(app)
    replay.set_cookie(COOKIE, cookie)
    response = replay.get("/")
    assert response.status_code == 303 and response.headers["Location"].startswith("/signin")
    assert replay.get("/api/scans").status_code == 401


def test_revoking_the_token_ends_its_sessions(app):
    client, _ = signed_in(app, "operator", name="to-revoke")
    second, _ = signed_in(app, "viewer")
    assert page_ok(client) and client.get("/api/scans").status_code == 200
    with app.extensions["cloudx.db"].session() as session:
        revoke_token(session, "to-revoke")
    assert not page_ok(client) and client.get("/api/scans").status_code == 401
    assert page_ok(second)  # another token's session is not touched
    scans = second.get("/scans")
    assert "Start a scan" not in scans.text


def test_an_expired_session_is_refused(app):
    client, _ = signed_in(app, "operator")
    with app.extensions["cloudx.db"].session() as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert not page_ok(client) and client.get("/api/scans").status_code == 401


def test_a_session_never_outlives_its_token(app, config):
    signed_in(app, "operator", name="short-lived", expires_in="1h")
    signed_in(app, "operator", name="long-lived", expires_in="30d")
    with app.extensions["cloudx.db"].session() as session:
        expiry = {
            name: (aware(token_expiry), aware(session_expiry))
            for name, token_expiry, session_expiry in session.execute(
                select(ApiToken.name, ApiToken.expires_at, WebSession.expires_at).join(WebSession, WebSession.token_id == ApiToken.id)
            )
        }
    token_expiry, session_expiry = expiry["short-lived"]
    assert session_expiry <= token_expiry and session_expiry > utcnow() + timedelta(minutes=59)
    token_expiry, session_expiry = expiry["long-lived"]
    lifetime = timedelta(hours=config.WEB_SESSION_HOURS)
    assert session_expiry <= token_expiry and session_expiry <= utcnow() + lifetime
    assert session_expiry > utcnow() + lifetime - timedelta(minutes=5)


# -- the API with the cookie --------------------------------------------------------------------------------------


def test_the_api_reads_with_the_cookie_but_changes_need_the_bearer_token(app, client):
    job_id = queued_scan(client)
    web, _ = signed_in(app, "admin")
    listed = web.get("/api/scans")
    assert listed.status_code == 200 and [s["job_id"] for s in listed.get_json()["scans"]] == [job_id]
    assert web.head("/api/scans").status_code == 200
    before = job_count(app)
    for method in ("post", "put", "patch", "delete"):
        path = "/api/scans" if method in ("post", "put", "patch") else f"/api/scans/{job_id}"
        response = getattr(web, method)(path, json=SCAN)
        assert response.status_code in (401, 405), (method, response.status_code)
        if method in ("post", "delete"):
            assert response.status_code == 401
    assert web.post(f"/api/scans/{job_id}/stop").status_code == 401
    assert job_count(app) == before and client.get(f"/api/scans/{job_id}").get_json()["status"] == "queued"


def test_a_bearer_header_wins_over_the_cookie(app):
    web, _ = signed_in(app, "viewer")
    operator = make_token(app, "operator")
    # A viewer's session, but the operator's Bearer token: the change is the operator's.
    response = web.post("/api/scans", json=SCAN, headers={"Authorization": f"Bearer {operator}"})
    assert response.status_code in (201, 202) and job_count(app) == 1
    # A bad Bearer header is refused even with a good session cookie beside it.
    assert web.get("/api/scans", headers={"Authorization": "Bearer cx_000000000000_" + "A" * 43}).status_code == 401
    assert web.get("/api/scans", headers={"Authorization": "Basic abc"}).status_code == 401
    # An admin session does not lift a viewer's Bearer token.
    admin, _ = signed_in(app, "admin")
    viewer = make_token(app, "viewer")
    response = admin.post("/api/scans", json=SCAN, headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 403 and job_count(app) == 1


# -- roles --------------------------------------------------------------------------------------------------------


def test_a_viewer_sees_no_controls_and_cannot_submit(app, client):
    job_id = queued_scan(client)
    viewer, _ = signed_in(app, "viewer")
    scans = viewer.get("/scans")
    assert scans.status_code == 200
    assert "Start a scan" not in scans.text and 'id="target"' not in scans.text and 'method="post" action="/scans"' not in scans.text
    scan = viewer.get(f"/scans/{job_id}")
    assert scan.status_code == 200
    assert "Stop scan" not in scan.text and "Delete" not in scan.text
    assert f"/scans/{job_id}/stop" not in scan.text and f"/scans/{job_id}/delete" not in scan.text
    job = viewer.get(f"/jobs/{job_id}")
    assert job.status_code == 200 and "Cancel job" not in job.text and f"/jobs/{job_id}/cancel" not in job.text
    response = viewer.post("/scans", data={**SCAN, "csrf_token": csrf_of(scans.text)})
    assert response.status_code == 403 and job_count(app) == 1
    response = viewer.post(f"/scans/{job_id}/stop", data={"csrf_token": csrf_of(scans.text)})
    assert response.status_code == 403 and client.get(f"/api/scans/{job_id}").get_json()["status"] == "queued"
    assert viewer.get(f"/scans/{job_id}/delete").status_code == 403


def test_an_operator_sees_the_form_and_the_controls(app, client):
    job_id = queued_scan(client)
    operator, _ = signed_in(app, "operator")
    scans = operator.get("/scans")
    assert "Start a scan" in scans.text and 'id="target"' in scans.text and 'action="/scans"' in scans.text
    # Another user's scan: only its creator or an admin may stop or delete it, so no control is offered.
    scan = operator.get(f"/scans/{job_id}")
    assert "Stop scan" not in scan.text and f"/scans/{job_id}/delete" not in scan.text
    assert operator.get(f"/scans/{job_id}/delete").status_code == 403
    response = operator.post("/scans", data={**SCAN, "target": "192.0.2.20", "csrf_token": csrf_of(scans.text)})
    assert response.status_code == 303 and response.headers["Location"].startswith("/scans/")
    assert job_count(app) == 2
    own = response.headers["Location"].split("?")[0].rsplit("/", 1)[1]
    scan = operator.get(f"/scans/{own}")
    assert "Stop scan" in scan.text and f"/scans/{own}/stop" in scan.text and f"/scans/{own}/delete" in scan.text


# -- the scan form ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"target": "-iL /etc/passwd"}, "target"),
        ({"target": "10.0.0.1;id"}, "target"),
        ({"target": ""}, "target"),
        ({"target": "192.0.2.1", "ports": "1-99999"}, "ports"),
    ],
)
def test_a_refused_scan_shows_the_apis_message_at_its_field(app, client, fields, field):
    api = client.post("/api/scans", json={**SCAN, **fields})
    assert api.status_code == 400 and api.get_json()["field"] == field
    message = api.get_json()["error"]
    operator, _ = signed_in(app, "operator")
    scans = operator.get("/scans")
    response = operator.post("/scans", data={**SCAN, **fields, "csrf_token": csrf_of(scans.text)})
    assert response.status_code == 400
    shown = re.search(rf'<p class="field-error" id="{field}-error"[^>]*>(.*?)</p>', response.text, re.S)
    assert shown and html.unescape(shown.group(1)).strip() == message
    assert re.search(rf'<input id="{field}"[^>]*aria-describedby="{field}-error"', response.text, re.S)
    assert job_count(app) == 0


# -- escaping -----------------------------------------------------------------------------------------------------


def imported_hostile_scan(app: Flask, client: FlaskClient) -> str:
    data = (FIXTURES / "hostile-nmap.xml").read_bytes()
    response = client.post("/api/imports", data=data, headers={"Content-Type": "application/xml"})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["job_id"])


def add_event(app: Flask, job_id: str, stdout: str) -> None:
    with app.extensions["cloudx.db"].session() as session:
        last = session.scalar(select(JobEvent.counter).where(JobEvent.job_id == job_id).order_by(JobEvent.counter.desc()).limit(1))
        session.add(JobEvent(job_id=job_id, counter=(last or 0) + 1, event="runner_on_ok", host="h1", stdout=stdout, event_data={}))


def assert_escaped(page: str) -> None:
    assert "&lt;script&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page and "<img" not in page


def test_hostile_scan_data_is_escaped(app, client):
    job_id = imported_hostile_scan(app, client)
    hosts = client.get(f"/api/scans/{job_id}").get_json()["results"]["hosts"]
    assert any("<script>" in name for name in hosts[0]["hostnames"])  # stored as it came
    web, _ = signed_in(app, "operator")
    page = web.get(f"/scans/{job_id}")
    assert page.status_code == 200
    assert_escaped(page.text)
    assert "&lt;script&gt;alert(&#34;xss-host&#34;)&lt;/script&gt;" in page.text or "&lt;script&gt;alert(&quot;xss-host" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert_clean(page.text)
    listing = web.get("/scans")
    assert listing.status_code == 200 and "<script>alert" not in listing.text
    assert web.get("/").status_code == 200 and "<script>alert" not in web.get("/").text


def test_hostile_job_output_is_escaped(app, client):
    job_id = queued_scan(client)
    add_event(app, job_id, HOSTILE_OUTPUT)
    web, _ = signed_in(app, "viewer")
    for path in (f"/jobs/{job_id}", f"/scans/{job_id}"):
        page = web.get(path)
        assert page.status_code == 200
        assert_escaped(page.text)
        assert "&lt;script&gt;alert(&#34;out&#34;)&lt;/script&gt;" in page.text
        assert_clean(page.text)


# -- the CSP and no inline script or style ------------------------------------------------------------------------


class Tags(HTMLParser):
    """Every start tag with its attributes, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag


def assert_clean(page: str) -> None:
    parser = Tags()
    parser.feed(page)
    parser.close()
    assert parser.tags, "no HTML"
    for tag, attrs in parser.tags:
        names = [name.lower() for name, _ in attrs]
        assert "style" not in names, (tag, attrs)
        assert not [n for n in names if n.startswith("on")], (tag, attrs)
        assert tag != "style", tag
        if tag == "script":
            assert dict(attrs).get("src"), "an inline script"
        for name, value in attrs:
            if name in ("href", "src", "action"):
                assert not (value or "").strip().lower().startswith("javascript:"), (tag, attrs)
    # The raw text, too: markup only ever comes from the templates (hostile text is escaped, so has no '<').
    for markup in re.findall(r"<[^>]*>", page):
        assert not re.search(r"\son\w+\s*=", markup), markup
        assert not re.search(r"\sstyle\s*=", markup), markup
        if re.match(r"<script\b", markup, re.I):
            assert "src=" in markup, markup


def assert_csp(response: Any) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    directives = {d.strip().split()[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == "script-src 'self'", csp
    assert directives.get("style-src") == "style-src 'self'", csp
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp


def test_every_page_has_the_strict_csp_and_no_inline_script_or_style(app, client):
    job_id = queued_scan(client)
    imported = imported_hostile_scan(app, client)
    add_event(app, job_id, HOSTILE_OUTPUT)
    anonymous = browser(app)
    signin = anonymous.get("/signin")
    assert signin.status_code == 200
    responses = [signin, anonymous.get("/"), sign_in(browser(app), "wrong")]
    for role in ("viewer", "admin"):
        web, _ = signed_in(app, role)
        for path in ("/", "/scans", f"/scans/{job_id}", f"/scans/{imported}", "/jobs", f"/jobs/{job_id}", f"/jobs/{imported}"):
            response = web.get(path)
            assert response.status_code == 200, (role, path, response.status_code)
            assert response.mimetype == "text/html"
            responses.append(response)
        responses += [web.get("/scans/nope"), web.get("/scans?tool=curl"), web.post("/scans", data=SCAN)]
    for response in responses:
        assert_csp(response)
        if response.mimetype == "text/html" and response.status_code != 303:
            assert_clean(response.text)


def test_the_static_script_is_served_with_the_csp(app):
    response = browser(app).get("/static/live.js")
    assert response.status_code == 200 and b"eval(" not in response.data
    assert_csp(response)


# -- GET /api/scans filters ---------------------------------------------------------------------------------------


def test_scans_are_filtered_by_tool_status_and_target(app, client):
    first = queued_scan(client, "192.0.2.1")
    second = queued_scan(client, "192.0.2.1")
    other_target = queued_scan(client, "192.0.2.2")
    masscan = queued_scan(client, "192.0.2.1", tool="masscan", scan_type="tcp_scan", ports="22")
    with app.extensions["cloudx.db"].session() as session:
        session.execute(update(Job).where(Job.id.in_([first, other_target, masscan])).values(status="successful"))
    target = client.get(f"/api/scans/{first}").get_json()["target"]

    def listed(**params: str) -> list[str]:
        response = client.get("/api/scans", query_string=params)
        assert response.status_code == 200, response.get_json()
        return [s["job_id"] for s in response.get_json()["scans"]]

    assert listed(tool="nmap", status="successful", target=target) == [first]
    assert listed(tool="nmap", target=target) == [second, first]
    assert listed(tool="masscan") == [masscan]
    assert listed(status="successful") == [masscan, other_target, first]
    assert listed(status="queued") == [second]
    assert listed(target="192.0.2.9") == []
    assert listed(tool="", status="", target="") == [masscan, other_target, second, first]
    assert listed(tool="nmap", status="successful", limit="1") == [other_target]
    page = client.get("/api/scans", query_string={"tool": "nmap", "status": "successful", "limit": "1"}).get_json()
    rest = client.get("/api/scans", query_string={"tool": "nmap", "status": "successful", "before": page["next_before"]}).get_json()
    assert [s["job_id"] for s in rest["scans"]] == [first]
    for params, field in (({"tool": "curl"}, "tool"), ({"status": "done"}, "status"), ({"target": "x" * 256}, "target")):
        response = client.get("/api/scans", query_string=params)
        assert response.status_code == 400 and response.get_json()["field"] == field, response.get_json()
    # The dashboard's list takes the same filters.
    web, _ = signed_in(app, "viewer")
    page_html = web.get("/scans", query_string={"tool": "masscan"}).text
    assert masscan[:8] in page_html and first[:8] not in page_html
    bad = web.get("/scans", query_string={"tool": "curl"})
    assert bad.status_code == 400 and "tool must be one of" in bad.text


@pytest.mark.parametrize("window", [1, 3, 5000])
def test_a_final_status_filter_pages_alike_inside_and_past_the_window(app, client, monkeypatch, window):
    """A final status is looked for among the newest STATUS_WINDOW scans first, then through its index: both give
    the same pages (a window of 1 falls back at once, 3 on some pages, 5,000 never here)."""
    import controller.services.scans as scans

    monkeypatch.setattr(scans, "STATUS_WINDOW", window)
    jobs = [queued_scan(client, "192.0.2.1") for _ in range(9)]
    ended = {jobs[i]: ("successful" if i % 3 else "failed") for i in range(9)}
    with app.extensions["cloudx.db"].session() as session:
        for job_id, status in ended.items():
            session.execute(update(Job).where(Job.id == job_id).values(status=status))
    for status in ("successful", "failed"):
        expected = [job_id for job_id in reversed(jobs) if ended[job_id] == status]
        seen, before = [], None
        while True:
            query = {"status": status, "limit": "2", **({"before": str(before)} if before else {})}
            page = client.get("/api/scans", query_string=query).get_json()
            seen += [s["job_id"] for s in page["scans"]]
            before = page["next_before"]
            if before is None:
                break
        assert seen == expected


def test_a_deployment_page_with_settings_of_an_older_version_renders(app, client):
    """Settings stored by an older version (fields since renamed) must not break the job's page."""
    job_id = queued_scan(client)
    with app.extensions["cloudx.db"].session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(kind="deploy", settings={"host_key_policy": "accept-new"}))
    web, _ = signed_in(app, "viewer")
    assert web.get(f"/jobs/{job_id}").status_code == 200


def test_an_ended_session_can_still_sign_out_and_its_forms_ask_to_sign_in(app):
    client, _token = signed_in(app, "operator")
    form = client.get("/scans").text
    with app.extensions["cloudx.db"].session() as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    # A form of the ended session: a 401 asking to sign in again (not a CSRF refusal), and nothing made.
    refused = client.post("/scans", data={**SCAN, "csrf_token": csrf_of(form)})
    assert refused.status_code == 401 and "sign in again" in refused.text and job_count(app) == 0
    # Its sign-out form still works: the row goes, the cookie is cleared.
    out = client.post("/signout", data={"csrf_token": csrf_of(form)})
    assert out.status_code == 303 and out.headers["Location"] == "/signin"
    assert session_count(app) == 0 and client.get_cookie(COOKIE) is None


def test_signing_in_again_ends_the_previous_session(app):
    client, _ = signed_in(app, "operator")
    old = cookie_value(client)
    assert sign_in(client, make_token(app, "viewer")).status_code == 303
    assert session_count(app) == 1 and cookie_value(client) != old
    replay = browser(app)
    replay.set_cookie(COOKIE, old)
    assert replay.get("/api/scans").status_code == 401


def test_refused_forms_of_no_one_are_bounded_in_the_audit_log(app):
    """Anyone who reaches the port may post forms without a session or a CSRF token: their audit entries are bounded
    as the API's unauthenticated requests are (a minute's first ANONYMOUS_ROWS_PER_MINUTE, then one counted entry)."""
    from controller.api.audit import ANONYMOUS_ROWS_PER_MINUTE

    client = browser(app)
    before = len(rows(app, "SELECT id FROM audit_log"))
    for _ in range(3 * ANONYMOUS_ROWS_PER_MINUTE):
        assert client.post("/scans", data=SCAN).status_code == 401
        assert client.post("/signin", data={"token": "x"}).status_code == 403
    assert len(rows(app, "SELECT id FROM audit_log")) - before <= ANONYMOUS_ROWS_PER_MINUTE + 1


def test_prune_deletes_sessions_that_can_no_longer_be_used(app, config):
    from controller.services.retention import prune

    expired_client, _ = signed_in(app, "viewer")
    _revoked_client, revoked = signed_in(app, "viewer")
    live_client, _ = signed_in(app, "viewer")
    db = app.extensions["cloudx.db"]
    with db.session() as session:
        session.execute(update(WebSession).where(WebSession.id == digest(cookie_value(expired_client))).values(expires_at=utcnow()))
        revoke_token(session, session.scalar(select(ApiToken.name).where(ApiToken.id == revoked.split("_")[1])))
    report = prune(db, config, timedelta(days=30))
    assert report.web_sessions == 2 and session_count(app) == 1 and page_ok(live_client)


@pytest.mark.parametrize("end", ["sign-out", "revoke"])
def test_an_open_stream_ends_when_its_session_or_token_does(app, monkeypatch, end):
    import threading

    import controller.api.streams as streams

    monkeypatch.setattr(streams, "RECHECK_SECONDS", 0.0)
    client, token = signed_in(app, "viewer")
    form = client.get("/").text
    response = client.get("/api/stream", buffered=False)
    assert response.status_code == 200
    chunks = iter(response.response)
    assert next(chunks).startswith(b"retry:")
    done = threading.Event()
    reader = threading.Thread(target=lambda: (list(chunks), done.set()), daemon=True)
    reader.start()
    assert not done.wait(1.5), "the stream ended while the session was valid"
    if end == "sign-out":
        assert client.post("/signout", data={"csrf_token": csrf_of(form)}).status_code == 303
    else:
        with app.extensions["cloudx.db"].session() as session:
            revoke_token(session, session.scalar(select(ApiToken.name).where(ApiToken.id == token.split("_")[1])))
    assert done.wait(5), "the stream went on after its session ended"
    response.close()


def test_every_page_needs_a_session(app):
    """Each page but the sign-in form and the static files: a GET without a session goes to sign in, a POST is a 401."""
    anonymous = browser(app)
    pages = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("web.") and r.endpoint not in PUBLIC_PAGES]
    assert len(pages) > 20
    for rule in pages:
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = anonymous.open(path, method=method)
            expected = (303,) if method == "GET" else (401,)
            assert response.status_code in expected, (method, path, response.status_code)
            if method == "GET":
                assert response.headers["Location"].startswith("/signin?next=")


PUBLIC_PAGES = {"web.static", "web.signin.form", "web.signin.submit", "web.signin.signout"}


def test_empty_fields_of_a_get_form_are_no_filter(app):
    web, _ = signed_in(app, "admin")
    for path in ("/fleet?network=&port=&service=&seen_since=&unseen_days=", "/admin/audit?before=&limit=", "/scans?tool=&status=&target="):
        assert web.get(path).status_code == 200, path


def test_a_pasted_key_with_a_blank_first_line_and_crlf_is_kept_as_openssh_reads_it():
    from controller.schemas.types import private_key

    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    assert private_key("\r\n  " + key.replace("\n", "\r\n")) == key


def test_a_sign_out_of_no_one_is_bounded_in_the_audit_log(app):
    from controller.api.audit import ANONYMOUS_ROWS_PER_MINUTE

    client = browser(app)
    form = client.get("/signin").text
    before = len(rows(app, "SELECT id FROM audit_log"))
    for _ in range(3 * ANONYMOUS_ROWS_PER_MINUTE):
        assert client.post("/signout", data={"csrf_token": csrf_of(form)}).status_code == 303
    assert len(rows(app, "SELECT id FROM audit_log")) - before <= ANONYMOUS_ROWS_PER_MINUTE + 1


def test_signing_in_over_https_ends_the_session_opened_over_http(app):
    client, _ = signed_in(app, "operator")
    plain = cookie_value(client)
    assert sign_in(client, make_token(app, "viewer"), base_url="https://localhost").status_code == 303
    assert session_count(app) == 1
    replay = browser(app)
    replay.set_cookie(COOKIE, plain)
    assert replay.get("/").status_code == 303


def test_a_failed_scan_is_run_again_from_its_job_page(app, client):
    from controller.store.models import JobHostSummary

    job_id = queued_scan(client, "192.0.2.30")
    admin, _ = signed_in(app, "admin")
    with app.extensions["cloudx.db"].session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="failed", status_reason="test"))
    # With no host run, the API's refusal is shown on the page, at its field.
    page = admin.get(f"/jobs/{job_id}")
    refused = admin.post(f"/jobs/{job_id}/relaunch", data={"hosts": "all", "csrf_token": csrf_of(page.text)})
    assert refused.status_code == 409 and 'id="hosts-error"' in refused.text and "nothing to relaunch" in refused.text
    with app.extensions["cloudx.db"].session() as session:
        session.add(JobHostSummary(job_id=job_id, host="localhost", ok=1, failed=1))
    page = admin.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "Run the scan again" in page.text
    response = admin.post(f"/jobs/{job_id}/relaunch", data={"hosts": "all", "csrf_token": csrf_of(page.text)})
    assert response.status_code == 303, response.text
    new_id = response.headers["Location"].split("?")[0].rsplit("/", 1)[1]
    assert new_id != job_id
    assert client.get(f"/api/jobs/{new_id}").get_json()["relaunched_from"] == job_id
    assert f"/jobs/{job_id}" in admin.get(f"/jobs/{new_id}").text  # the new job links the one it runs again


def test_the_overview_shows_what_the_latest_scans_changed(app, client):
    first = imported_hostile_scan(app, client)
    web, _ = signed_in(app, "viewer")
    assert "the first scan of this target" in web.get("/").text
    data = (FIXTURES / "hostile-nmap.xml").read_bytes().replace(b'<state state="open"', b'<state state="closed"', 1)
    second = client.post("/api/imports", data=data, headers={"Content-Type": "application/xml"}).get_json()["job_id"]
    page = web.get("/").text
    changes = page[page.index('id="changes-h"') : page.index('id="coverage-h"')]
    assert changes.index("/scans/" + second) < changes.index("/scans/" + first)  # newest first
    assert "0 ports opened, 1 closed" in changes and "the first scan of this target" in changes


def test_a_running_job_shows_each_hosts_results_so_far(app, client):
    job_id = queued_scan(client)
    with app.extensions["cloudx.db"].session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running"))
        events = [("runner_on_ok", "h1"), ("runner_on_ok", "h1"), ("runner_on_failed", "h2")]
        events += [("runner_on_start", "h2"), ("runner_on_ok", None)]  # neither counts
        for counter, (event, host) in enumerate(events, 1):
            session.add(JobEvent(job_id=job_id, counter=counter, event=event, host=host, event_data={}))
    web, _ = signed_in(app, "viewer")
    page = web.get(f"/jobs/{job_id}").text
    rows = re.findall(r'<tr data-host="([^"]+)"><td>[^<]*</td><td data-count="ok">(\d+)</td><td data-count="failed">(\d+)</td>', page)
    assert rows == [("h1", "2", "0"), ("h2", "0", "1")]
    with app.extensions["cloudx.db"].session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="successful"))
    assert "data-host-progress" not in web.get(f"/jobs/{job_id}").text  # ended: the recap's counts, or none
