"""The dashboard's schedules and webhooks pages: what each role sees and may do, forms checked by the API's models with
their messages next to the field, pause, resume and delete, and a webhook's secret never in any page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from controller.app import create_app
from controller.services import schedules
from controller.store.models import Schedule, Webhook, WebhookDelivery, WebhookOutbox, utcnow
from controller.store.sealing import keygen
from tests.support.app import make_config, make_token, prepare_app

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
SECRET = "whsec-0123456789abcdefABCDEF"
FORM = {"name": "nightly", "cron": "0 3 * * 1-5", "timezone": "Europe/Paris", "catch_up": "none", "tool": "nmap", "scan_type": "tcp"}
FORM |= {"target": "192.0.2.10", "ports": "22,80", "timeout": "300"}


@pytest.fixture
def web(tmp_path):
    """The app with a key that seals webhook secrets and loopback allowed for webhooks."""
    app = prepare_app(create_app(make_config(tmp_path, CREDENTIALS_KEY=keygen(), WEBHOOK_ALLOW="127.0.0.1")))
    yield app
    app.extensions["cloudx.db"].dispose()


@pytest.fixture
def api(web):
    return web.test_client()  # the admin test token


def browser(app, role, name=None):
    """A browser signed in with a new token of that role."""
    client = FlaskClient(app)
    token = make_token(app, role, name or f"web-{role}")
    response = client.post("/signin", data={"token": token, "csrf_token": csrf(client, "/signin")})
    assert response.status_code == 303, response.text
    return client


def csrf(client, path="/schedules"):
    return CSRF.search(client.get(path).text).group(1)


def post(client, path, data=None, page="/schedules"):
    return client.post(path, data={**(data or {}), "csrf_token": csrf(client, page)})


def field_error(html, name):
    found = re.search(rf'<p class="field-error" id="{re.escape(name)}-error" role="alert">([^<]*)</p>', html)
    return found.group(1) if found else None


def api_schedules(api):
    return api.get("/api/schedules").get_json()["schedules"]


def test_pages_render_for_viewer_and_operator_and_a_viewer_gets_no_controls(web, api):
    body = {
        "name": "hourly",
        "kind": "scan",
        "every_seconds": 3600,
        "request": {"tool": "nmap", "scan_type": "tcp", "target": "192.0.2.10"},
    }
    made = api.post("/api/schedules", json=body).get_json()
    deploy = {"name": "agents", "kind": "deployment", "every_seconds": 86400, "request": {"hosts": ["192.0.2.7"], "os_type": "linux"}}
    assert api.post("/api/schedules", json=deploy).status_code == 201
    config = web.extensions["cloudx.config"]
    schedules.run_due(web.extensions["cloudx.db"], config, "tests:1", utcnow() + timedelta(hours=2))

    viewer, operator = browser(web, "viewer"), browser(web, "operator")
    for client in (viewer, operator):
        page = client.get("/schedules")
        assert page.status_code == 200 and "hourly" in page.text and "nmap tcp of 192.0.2.10" in page.text
        one = client.get(f"/schedules/{made['id']}")
        assert one.status_code == 200 and "started" in one.text and "every 3600 s" in one.text
        assert client.get(f"/schedules/{made['name']}").status_code == 200  # by name too, as the API
        assert "deploy the agent (linux) on 192.0.2.7" in page.text and "every 86400 s" in page.text
        assert "deploy the agent (linux) on 192.0.2.7" in client.get("/schedules/agents").text
    page, one = viewer.get("/schedules").text, viewer.get(f"/schedules/{made['id']}").text
    assert 'action="/schedules"' not in page and "Schedule a scan" not in page
    assert "/pause" not in one and "/resume" not in one and "/delete" not in one
    assert 'action="/schedules"' in operator.get("/schedules").text
    # Another operator's schedule: the controls are not offered, and the service refuses them anyway.
    assert "/pause" not in operator.get(f"/schedules/{made['id']}").text
    refused = post(operator, f"/schedules/{made['id']}/pause")
    assert refused.status_code == 403 and "only its creator or an admin" in refused.text
    assert all(s["enabled"] for s in api_schedules(api))

    assert post(viewer, "/schedules", FORM).status_code == 403
    assert post(viewer, f"/schedules/{made['id']}/pause").status_code == 403
    assert post(viewer, f"/schedules/{made['id']}/delete").status_code == 403
    assert viewer.get(f"/schedules/{made['id']}/delete").status_code == 403
    assert [s["name"] for s in api_schedules(api)] == ["agents", "hourly"]
    # Webhooks are the admin's, as in the API.
    assert viewer.get("/webhooks").status_code == 403 and operator.get("/webhooks").status_code == 403
    assert browser(web, "admin").get("/webhooks").status_code == 200
    assert viewer.get("/schedules/no-such").status_code == 404


def test_a_schedule_created_from_the_form_is_the_apis(web, api):
    operator = browser(web, "operator", "web-op")
    response = post(operator, "/schedules", FORM)
    assert response.status_code == 303, response.text
    shown = operator.get(response.headers["Location"])
    assert shown.status_code == 200 and "Schedule saved." in shown.text and "0 3 * * 1-5 (Europe/Paris)" in shown.text
    [made] = api_schedules(api)
    assert made["name"] == "nightly" and made["cron"] == "0 3 * * 1-5" and made["timezone"] == "Europe/Paris"
    assert made["request"] == {"tool": "nmap", "scan_type": "tcp", "target": "192.0.2.10", "ports": "22,80", "timeout": 300}
    assert made["created_by"] == "web-op" and made["enabled"] and made["next_run_at"]
    listed = operator.get("/schedules").text
    assert "nightly" in listed and "nmap tcp of 192.0.2.10, ports 22,80" in listed

    again = post(operator, "/schedules", {**FORM, "cron": "", "every_seconds": "600"})
    assert again.status_code == 409 and "exists" in field_error(again.text, "name")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"cron": "0 3 * *"}, "cron", "five fields"),
        ({"cron": ""}, "cron", "one of cron"),
        ({"cron": "", "every_seconds": "ten"}, "every_seconds", "integer"),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"target": ""}, "target", "target is required"),
        ({"scan_type": "bogus"}, "scan_type", "must be one of"),
        ({"name": "-bad"}, "name", "must match"),
    ],
)
def test_a_bad_form_shows_the_apis_message_next_to_its_field_and_creates_nothing(web, api, change, field, words):
    operator = browser(web, "operator")
    response = post(operator, "/schedules", {**FORM, **change})
    assert response.status_code in (400, 403), response.text
    message = field_error(response.text, field)
    assert message is not None and words in message, response.text
    assert f'id="{field}" name="{field}"' in response.text and 'aria-invalid="true" aria-describedby="' + field + '-error"' in response.text
    assert 'value="192.0.2.10"' in response.text or field == "target"  # what was typed is kept
    assert api_schedules(api) == []
    with web.extensions["cloudx.db"].session() as session:
        assert session.query(Schedule).count() == 0


def test_a_refusal_about_no_one_field_is_shown_above_the_form(web, api):
    response = post(browser(web, "operator"), "/schedules", {**FORM, "target": "203.0.113.9"})
    assert response.status_code == 403
    assert '<p class="error" role="alert">target 203.0.113.9 is outside the policy scope</p>' in response.text
    assert api_schedules(api) == []


def test_pause_resume_and_delete_a_schedule(web, api):
    operator = browser(web, "operator", "web-op")
    location = post(operator, "/schedules", FORM).headers["Location"]
    schedule_id = location.split("/")[2].split("?")[0]
    page = operator.get(location).text
    assert f"/schedules/{schedule_id}/pause" in page and "/resume" not in page

    paused = post(operator, f"/schedules/{schedule_id}/pause")
    assert paused.status_code == 303 and "notice=schedule-paused" in paused.headers["Location"]
    state = api.get(f"/api/schedules/{schedule_id}").get_json()
    assert state["enabled"] is False and state["next_run_at"] is None
    page = operator.get(paused.headers["Location"]).text
    assert "Schedule paused" in page and f"/schedules/{schedule_id}/resume" in page and "paused" in operator.get("/schedules").text

    resumed = post(operator, f"/schedules/{schedule_id}/resume")
    assert resumed.status_code == 303
    state = api.get(f"/api/schedules/{schedule_id}").get_json()
    assert state["enabled"] is True and state["next_run_at"]

    confirm = operator.get(f"/schedules/{schedule_id}/delete")
    assert (
        confirm.status_code == 200
        and "Delete schedule nightly" in confirm.text
        and f'action="/schedules/{schedule_id}/delete"' in confirm.text
    )
    deleted = post(operator, f"/schedules/{schedule_id}/delete")
    assert deleted.status_code == 303 and deleted.headers["Location"] == "/schedules?notice=schedule-deleted"
    assert "Schedule deleted." in operator.get(deleted.headers["Location"]).text
    assert api.get(f"/api/schedules/{schedule_id}").status_code == 404
    assert post(operator, f"/schedules/{schedule_id}/delete").status_code == 303  # a second click: already gone
    assert post(operator, f"/schedules/{schedule_id}/pause").status_code == 404


def test_a_webhook_from_the_form_never_shows_its_secret(web, api):
    admin = browser(web, "admin", "web-admin")
    form = {"url": "http://127.0.0.1:9/hooks", "events": ["job.failed", "scan.changed"], "secret": SECRET}
    refused = post(admin, "/webhooks", {**form, "url": "http://10.0.0.1/hooks"}, page="/webhooks")
    assert refused.status_code == 400 and "url refused" in field_error(refused.text, "url") and SECRET not in refused.text
    assert 'value="job.failed" checked' in refused.text  # what was ticked is kept, the secret is not
    none = post(admin, "/webhooks", {**form, "events": []}, page="/webhooks")
    assert none.status_code == 400 and "events must be" in field_error(none.text, "events")
    short = post(admin, "/webhooks", {**form, "secret": "short"}, page="/webhooks")
    assert short.status_code == 400 and "16 to 256" in field_error(short.text, "secret")
    assert api.get("/api/webhooks").get_json()["webhooks"] == []

    made = post(admin, "/webhooks", form, page="/webhooks")
    assert made.status_code == 303, made.text
    [hook] = api.get("/api/webhooks").get_json()["webhooks"]
    assert hook["url"] == form["url"] and hook["events"] == form["events"] and hook["signed"] and hook["created_by"] == "web-admin"
    with web.extensions["cloudx.db"].session() as session:
        session.add(
            WebhookOutbox(
                id="0" * 8 + "-0000-4000-8000-" + "0" * 12,
                webhook_id=hook["id"],
                event="job.failed",
                job_id="1" * 8 + "-1111-4111-8111-" + "1" * 12,
                body='{"event": "job.failed"}',
                status="pending",
                attempts=1,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
        )
        session.flush()
        session.add(
            WebhookDelivery(
                webhook_id=hook["id"],
                outbox_id="0" * 8 + "-0000-4000-8000-" + "0" * 12,
                event="job.failed",
                job_id="1" * 8 + "-1111-4111-8111-" + "1" * 12,
                attempt=1,
                outcome="retry",
                status_code=502,
                latency_ms=12,
                error="HTTP 502 <from the receiver>",
                body='{"event": "job.failed"}',
                at=utcnow(),
            )
        )
    pages = [made.headers["Location"], "/webhooks", f"/webhooks/{hook['id']}", f"/webhooks/{hook['id']}/delete", "/schedules", "/"]
    for path in pages:
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text)
        assert SECRET not in response.text, path
    detail = admin.get(f"/webhooks/{hook['id']}").text
    assert "502" in detail and "12 ms" in detail and "HTTP 502 &lt;from the receiver&gt;" in detail and "retry" in detail
    assert "Webhook saved." in admin.get(made.headers["Location"]).text

    paused = post(admin, f"/webhooks/{hook['id']}/pause", page="/webhooks")
    assert paused.status_code == 303 and api.get(f"/api/webhooks/{hook['id']}").get_json()["enabled"] is False
    assert f"/webhooks/{hook['id']}/resume" in admin.get(paused.headers["Location"]).text
    assert post(admin, f"/webhooks/{hook['id']}/resume", page="/webhooks").status_code == 303
    assert api.get(f"/api/webhooks/{hook['id']}").get_json()["enabled"] is True
    deleted = post(admin, f"/webhooks/{hook['id']}/delete", page="/webhooks")
    assert deleted.status_code == 303 and deleted.headers["Location"] == "/webhooks?notice=webhook-deleted"
    assert api.get("/api/webhooks").get_json()["webhooks"] == []
    with web.extensions["cloudx.db"].session() as session:
        assert session.query(Webhook).count() == 0


def test_a_post_without_the_csrf_token_is_refused(web, api):
    operator, admin = browser(web, "operator"), browser(web, "admin")
    assert operator.post("/schedules", data=FORM).status_code == 403
    assert operator.post("/schedules", data={**FORM, "csrf_token": "0" * 64}).status_code == 403
    assert admin.post("/webhooks", data={"url": "http://127.0.0.1:9/", "events": ["job.failed"]}).status_code == 403
    assert api_schedules(api) == [] and api.get("/api/webhooks").get_json()["webhooks"] == []
    location = post(operator, "/schedules", FORM).headers["Location"]
    schedule_id = location.split("/")[2].split("?")[0]
    assert operator.post(f"/schedules/{schedule_id}/pause").status_code == 403
    assert operator.post(f"/schedules/{schedule_id}/delete").status_code == 403
    assert all(s["enabled"] for s in api_schedules(api))
