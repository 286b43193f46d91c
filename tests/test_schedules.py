"""Schedules: the API and CLI, the once-only claim of each due time, missed, skipped, refused and paused runs, and
real scheduled jobs with both executors and across API processes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from controller.app import create_app
from controller.services import schedules
from controller.services.auth import revoke_token
from controller.services.policy import update_policy
from controller.store.database import Database
from controller.store.models import Job, Schedule, ScheduleRun, utcnow
from tests.support.app import make_config, make_token, prepare_app, running_app
from tests.support.service import Service
from tests.support.waiting import wait_for, wait_job

SCAN = {"tool": "nmap", "scan_type": "tcp", "target": "192.0.2.10", "ports": "22,80"}


def _create(client, name="nightly", request=None, kind="scan", **when):
    body = {"name": name, "kind": kind, "request": request or SCAN, **(when or {"every_seconds": 60})}
    response = client.post("/api/schedules", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _runs(client, name):
    response = client.get(f"/api/schedules/{name}/runs")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["runs"]


def _due(app, name, now):
    """run_due as the scheduler thread calls it, at `now`."""
    return schedules.run_due(app.extensions["cloudx.db"], app.extensions["cloudx.config"], "tests:1", now)


def _next(client, name) -> datetime:
    return datetime.fromisoformat(client.get(f"/api/schedules/{name}").get_json()["next_run_at"].replace("Z", "+00:00"))


def _finish(app, job_id, status="successful"):
    with app.extensions["cloudx.db"].session() as session:
        job = session.get(Job, job_id)
        job.status, job.finished_at = status, utcnow()


# --- the API and the CLI --------------------------------------------------------------------------------------------


def test_a_schedule_is_created_listed_changed_and_deleted(client):
    made = _create(client, cron="0 3 * * 1-5", timezone="Europe/Paris")
    assert made["kind"] == "scan" and made["request"] == SCAN and made["enabled"] and made["catch_up"] == "none"
    assert made["created_by"] == "tests" and made["missed_runs"] == 0 and made["last_job_id"] is None
    # 03:00 in Paris is 02:00 UTC in winter, on a weekday.
    next_run = datetime.fromisoformat(made["next_run_at"].replace("Z", "+00:00"))
    assert (next_run.hour, next_run.minute) == (2, 0) and next_run.weekday() < 5 and next_run > datetime.now(UTC)

    _create(client, name="hourly", every_seconds=3600)
    page = client.get("/api/schedules", query_string={"limit": 1}).get_json()
    assert [s["name"] for s in page["schedules"]] == ["hourly"] and page["next_after"] == "hourly"
    page = client.get("/api/schedules", query_string={"after": "hourly"}).get_json()
    assert [s["name"] for s in page["schedules"]] == ["nightly"] and page["next_after"] is None
    assert client.get(f"/api/schedules/{made['id']}").get_json()["name"] == "nightly"  # by id or by name

    paused = client.patch("/api/schedules/nightly", json={"enabled": False}).get_json()
    assert not paused["enabled"] and paused["next_run_at"] is None
    changed = client.patch("/api/schedules/nightly", json={"every_seconds": 120, "enabled": True, "name": "often"}).get_json()
    assert changed["name"] == "often" and changed["cron"] is None and changed["every_seconds"] == 120
    assert 100 < (_next(client, "often") - datetime.now(UTC)).total_seconds() <= 120

    assert client.delete("/api/schedules/often").get_json() == {"deleted": made["id"]}
    assert client.get("/api/schedules/often").status_code == 404
    assert client.get(f"/api/schedules/{made['id']}/runs").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"cron": "0 3 * *"}, "cron", "five fields"),
        ({"cron": "0 0 31 2 *"}, "cron", "never runs"),
        ({"cron": "* * * * *", "every_seconds": 60}, "cron", "one of cron"),
        ({}, "cron", "one of cron"),
        ({"every_seconds": 59}, "every_seconds", "at least 60"),
        ({"every_seconds": "60"}, "every_seconds", "integer"),
        ({"every_seconds": 60, "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"every_seconds": 60, "catch_up": "all"}, "catch_up", "none or one"),
        ({"every_seconds": 60, "name": "-bad"}, "name", "must match"),
        ({"every_seconds": 60, "kind": "backup"}, "kind", "scan, deployment"),
        ({"every_seconds": 60, "request": {**SCAN, "scan_type": "bogus"}}, "request.scan_type", "must be one of"),
        ({"every_seconds": 60, "request": {"tool": "nmap", "scan_type": "tcp"}}, "request.target", "target"),
        ({"every_seconds": 60, "request": {**SCAN, "extra": 1}}, "request.extra", "unknown"),
        (
            {"every_seconds": 60, "kind": "deployment", "request": {"hosts": ["192.0.2.7"], "os_type": "linux", "password": "pw"}},
            "request.password",
            "no pasted secret",
        ),
        (
            {"every_seconds": 60, "kind": "deployment", "request": {"hosts": ["192.0.2.7"], "os_type": "linux", "credential": "nope"}},
            "request.credential",
            "no stored credential",
        ),
    ],
)
def test_bad_schedules_are_refused_and_nothing_is_stored(app, client, body, field, words):
    full = {"name": "s1", "kind": "scan", "request": SCAN, **body}
    response = client.post("/api/schedules", json=full)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field and words in response.get_json()["error"], response.get_json()
    with app.extensions["cloudx.db"].session() as session:
        assert session.query(Schedule).count() == 0 and session.query(Job).count() == 0


def test_who_may_schedule_and_change_schedules(app, client):
    outside = client.post(
        "/api/schedules", json={"name": "x", "kind": "scan", "request": {**SCAN, "target": "10.1.2.3"}, "every_seconds": 60}
    )
    assert outside.status_code == 403 and "outside the policy scope" in outside.get_json()["error"]
    _create(client)
    assert client.post("/api/schedules", json={"name": "nightly", "kind": "scan", "request": SCAN, "every_seconds": 60}).status_code == 409

    viewer = {"Authorization": f"Bearer {make_token(app, 'viewer', 'v1')}"}
    operator = {"Authorization": f"Bearer {make_token(app, 'operator', 'op1')}"}
    assert client.get("/api/schedules", headers=viewer).status_code == 200
    assert (
        client.post("/api/schedules", headers=viewer, json={"name": "v", "kind": "scan", "request": SCAN, "every_seconds": 60}).status_code
        == 403
    )
    # An operator may not change or delete another's schedule; its own, yes.
    assert client.patch("/api/schedules/nightly", headers=operator, json={"enabled": False}).status_code == 403
    assert client.delete("/api/schedules/nightly", headers=operator).status_code == 403
    mine = client.post("/api/schedules", headers=operator, json={"name": "mine", "kind": "scan", "request": SCAN, "every_seconds": 60})
    assert mine.status_code == 201 and mine.get_json()["created_by"] == "op1"
    assert client.patch("/api/schedules/mine", headers=operator, json={"catch_up": "one"}).get_json()["catch_up"] == "one"
    # A new request is checked with the creator's rights: an operator token scoped narrower than the change.
    narrow = {"Authorization": f"Bearer {make_token(app, 'operator', 'op2', scope=['192.0.2.0/28'])}"}
    assert (
        client.post("/api/schedules", headers=narrow, json={"name": "n", "kind": "scan", "request": SCAN, "every_seconds": 60}).status_code
        == 201
    )
    wider = client.patch("/api/schedules/n", json={"request": {**SCAN, "target": "192.0.2.200"}})  # by an admin
    assert wider.status_code == 403 and "op2" in wider.get_json()["error"]
    assert client.get("/api/schedules/n").get_json()["request"]["target"] == "192.0.2.10"


# --- runs -------------------------------------------------------------------------------------------------------------


def test_a_due_run_starts_once_and_an_active_one_is_not_overlapped(app, client):
    made = _create(client, every_seconds=60)
    due = _next(client, "nightly")
    assert _due(app, "nightly", due - timedelta(seconds=1)) == []
    started = _due(app, "nightly", due + timedelta(seconds=1))
    assert len(started) == 1 and started[0].secrets is None
    assert _due(app, "nightly", due + timedelta(seconds=1)) == []  # claimed: nothing twice
    with app.extensions["cloudx.db"].session() as session:
        job = session.get(Job, started[0].job_id)
        assert (job.kind, job.status, job.created_by) == ("scan", "queued", "tests")
        assert job.extra_vars["scanner_target"] == "192.0.2.10" and job.scan.ports == "22,80"
    view = client.get("/api/schedules/nightly").get_json()
    assert view["last_job_id"] == started[0].job_id and view["last_status"] == "queued"
    assert _next(client, "nightly") == due + timedelta(seconds=60)

    # The next due time while that job still runs: skipped, and said so.
    assert _due(app, "nightly", due + timedelta(seconds=61)) == []
    runs = _runs(client, "nightly")
    assert [r["outcome"] for r in runs] == ["skipped", "started"] and started[0].job_id in runs[0]["reason"]
    assert client.get("/api/schedules/nightly").get_json()["skipped_runs"] == 1
    _finish(app, started[0].job_id)
    again = _due(app, "nightly", due + timedelta(seconds=121))
    assert len(again) == 1 and again[0].job_id != started[0].job_id
    assert [r["outcome"] for r in _runs(client, "nightly")] == ["started", "skipped", "started"]
    assert made["id"] == again[0].schedule


def test_runs_missed_while_no_controller_ran_are_recorded_and_caught_up_once_if_asked(app, client):
    # Every 10 minutes; the grace (CLOUDX_SCHEDULE_MISFIRE_GRACE) is 120 s.
    _create(client, name="none", every_seconds=600)
    _create(client, name="one", every_seconds=600, catch_up="one")
    _create(client, name="many", every_seconds=60)  # due first 9 minutes before the others: 39 missed by `later`
    due = _next(client, "none")
    later = due + timedelta(minutes=30, seconds=30)  # 4 due times passed; the newest, 30 s ago, is within the grace
    assert len(_due(app, "x", later)) == 3  # the newest due time runs, whatever catch_up says
    for name, missed in (("none", 3), ("one", 3), ("many", 39)):
        view = client.get(f"/api/schedules/{name}").get_json()
        assert view["missed_runs"] == missed, view
        runs = _runs(client, name)
        assert runs[0]["outcome"] == "started" and runs[0]["reason"] is None
        assert [r["outcome"] for r in runs[1:]] == ["missed"] * missed and "not running" in runs[1]["reason"]
        _finish(app, view["last_job_id"])

    # Down for three hours: the newest due time of the 10-minute schedules is 5.5 min old, past the grace. catch_up
    # none starts nothing, one starts one run, marked a catch-up run.
    much_later = later + timedelta(hours=3, minutes=5)
    started = {s.schedule for s in _due(app, "x", much_later)}
    one, none, many = (client.get(f"/api/schedules/{name}").get_json() for name in ("one", "none", "many"))
    assert started == {one["id"], many["id"]}
    assert none["missed_runs"] == 3 + 18 and one["missed_runs"] == 3 + 17 and many["missed_runs"] == 39 + 184
    assert _runs(client, "none")[0]["outcome"] == "missed"
    assert "catch-up run: 17 due time(s) were missed" in _runs(client, "one")[0]["reason"]
    newest_missed = _runs(client, "many")[1]
    assert newest_missed["outcome"] == "missed" and "184 runs missed, the newest 100 are listed" in newest_missed["reason"]
    assert len(_runs(client, "many")) == 1 + 39 + 1 + 100
    # The next due time is in the future, on the interval's beat.
    assert _next(client, "none") > much_later and (_next(client, "none") - due).total_seconds() % 600 == 0


def test_a_revoked_creator_pauses_the_schedule_and_a_narrowed_scope_refuses_the_run(app, client):
    operator = {"Authorization": f"Bearer {make_token(app, 'operator', 'op1')}"}
    assert (
        client.post(
            "/api/schedules", headers=operator, json={"name": "op", "kind": "scan", "request": SCAN, "every_seconds": 60}
        ).status_code
        == 201
    )
    _create(client, name="admin")
    due = _next(client, "admin")
    db = app.extensions["cloudx.db"]
    with db.session() as session:
        update_policy(session, {"scope": ["198.18.0.0/15"]}, "tests")  # 192.0.2.10 no longer in scope
        revoke_token(session, "op1")
    assert _due(app, "x", due + timedelta(seconds=1)) == []
    op = client.get("/api/schedules/op").get_json()
    assert not op["enabled"] and op["next_run_at"] is None and "revoked" in op["paused_reason"]
    assert [r["outcome"] for r in _runs(client, "op")] == ["paused"]
    refused = _runs(client, "admin")
    assert [r["outcome"] for r in refused] == ["refused"] and "outside the policy scope" in refused[0]["reason"]
    with db.session() as session:
        assert session.query(Job).count() == 0
    # Resuming it is refused while its creator may not start jobs; the admin's own schedule resumes from now.
    refused_resume = client.patch("/api/schedules/op", json={"enabled": True})
    assert refused_resume.status_code == 403 and "revoked" in refused_resume.get_json()["error"]
    client.patch("/api/schedules/admin", json={"enabled": False})
    resumed = client.patch("/api/schedules/admin", json={"enabled": True}).get_json()
    assert resumed["enabled"] and resumed["paused_reason"] is None and _next(client, "admin") > datetime.now(UTC)


def test_concurrent_schedulers_start_each_due_run_once(app, client):
    """Four schedulers, each with its own connection, on 40 schedules due at the same moment: 40 jobs (SQLite)."""
    _schedulers_race(app, client)


@pytest.mark.integration
def test_concurrent_schedulers_start_each_due_run_once_on_postgresql(cluster, tmp_path):
    app = prepare_app(create_app(make_config(tmp_path, **cluster.settings())))
    try:
        _schedulers_race(app, app.test_client())
    finally:
        app.extensions["cloudx.db"].dispose()


def _schedulers_race(app, client):
    for i in range(40):
        _create(client, name=f"s{i:02d}", every_seconds=60)
    moment = _next(client, "s39") + timedelta(seconds=1)
    config = app.extensions["cloudx.config"]
    started: list = []
    errors: list = []
    barrier = threading.Barrier(4)

    def scheduler() -> None:
        db = Database(config.DATABASE_URL, config.DB_BUSY_TIMEOUT)
        try:
            barrier.wait()
            started.extend(schedules.run_due(db, config, "tests:1", moment))
        except Exception as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(started) == 40 and len({s.schedule for s in started}) == 40
    with app.extensions["cloudx.db"].session() as session:
        assert session.query(Job).count() == 40
        assert session.query(ScheduleRun).filter_by(outcome="started").count() == 40


def test_the_schedule_commands(runner, config):
    from controller.cli import cli

    bad = runner.invoke(cli, ["schedule", "add", "n", "--kind", "scan", "--request", '{"tool": "nmap"}', "--every", "60"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "request.scan_type" not in bad.output and "Error:" in bad.output
    added = runner.invoke(
        cli,
        [
            "schedule",
            "add",
            "nightly",
            "--kind",
            "scan",
            "--request",
            '{"tool": "nmap", "scan_type": "tcp", "target": "192.0.2.3"}',
            "--cron",
            "0 3 * * *",
        ],
    )
    assert added.exit_code == 0, added.output
    assert "schedule nightly" in added.output and "next run 20" in added.output
    listed = runner.invoke(cli, ["schedule", "list"])
    assert listed.exit_code == 0 and "nightly\tscan\t0 3 * * *\tenabled" in listed.output and "never run" in listed.output
    assert "paused" in runner.invoke(cli, ["schedule", "pause", "nightly"]).output
    assert '"enabled": false' in runner.invoke(cli, ["schedule", "list", "--json"]).output
    assert "next run" in runner.invoke(cli, ["schedule", "resume", "nightly"]).output
    assert runner.invoke(cli, ["schedule", "runs", "nightly"]).exit_code == 0
    assert runner.invoke(cli, ["schedule", "delete", "nightly"]).exit_code == 0
    gone = runner.invoke(cli, ["schedule", "pause", "nightly"])
    assert gone.exit_code == 1 and "no schedule nightly" in gone.output


# --- real jobs ----------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_scheduled_scan_runs_with_each_executor(request, tmp_path, executor_kind, target):
    settings = {"SCHEDULE_MIN_INTERVAL": 1, "SCHEDULE_POLL_SECONDS": 0.2}
    with running_app(request, tmp_path, executor_kind, **settings) as app:
        client = app.test_client()
        _create(client, request={"tool": "nmap", "scan_type": "tcp", "target": target.address, "ports": "22"}, every_seconds=2)
        assert wait_for(lambda: client.get("/api/schedules/nightly").get_json()["last_job_id"], timeout=30)
        job_id = client.get("/api/schedules/nightly").get_json()["last_job_id"]
        assert wait_job(client, job_id, timeout=180)["status"] == "successful"
        client.patch("/api/schedules/nightly", json={"enabled": False})
        scan = client.get(f"/api/scans/{job_id}").get_json()
        assert [(p["port"], p["state"]) for h in scan["results"]["hosts"] for p in h["ports"]] == [(22, "open")]
        outcomes = {r["outcome"] for r in _runs(client, "nightly")}
        assert "started" in outcomes and outcomes <= {"started", "skipped"}


@pytest.mark.integration
def test_two_api_processes_run_each_due_time_once_and_a_stopped_controller_misses_runs(tmp_path):
    env = {"CLOUDX_SCHEDULE_MIN_INTERVAL": "1", "CLOUDX_SCHEDULE_POLL_SECONDS": "0.2", "CLOUDX_SCHEDULE_MISFIRE_GRACE": "1"}
    service = Service(tmp_path, **env)
    http, url = service.http, service.url
    try:
        service.start("--processes", "2")
        # Quick jobs: a scan of the API's own port on loopback every second, for several seconds, two processes claiming.
        scan = {"tool": "nmap", "scan_type": "tcp", "target": "127.0.0.1", "ports": str(service.port)}
        body = {"name": "ping", "kind": "scan", "request": scan}
        made = http.post(f"{url}/schedules", json={**body, "every_seconds": 1, "catch_up": "one"}, timeout=10)
        assert made.status_code == 201, made.text
        assert wait_for(lambda: len(_started(http, url)) >= 3, timeout=90)
        service.stop()
        db = Database(service.config.DATABASE_URL)
        with db.session() as session:
            runs = session.query(ScheduleRun).all()
            jobs = session.query(Job).filter(Job.kind == "scan").all()
            started = [r for r in runs if r.outcome == "started"]
            assert len(started) == len(jobs) >= 3  # one job per started run: no due time ran twice
            assert sorted(r.job_id for r in started) == sorted(j.id for j in jobs)
            assert {r.outcome for r in runs} <= {"started", "skipped"}
            stopped_at = utcnow()
        time.sleep(4)  # due times pass with no controller running
        service.start()
        assert wait_for(lambda: any(r["outcome"] == "missed" for r in _runs_http(http, url)), timeout=30)
        view = http.get(f"{url}/schedules/ping", timeout=10).json()
        assert view["missed_runs"] >= 2
        newest_started = next(r for r in _runs_http(http, url) if r["outcome"] == "started")
        assert datetime.fromisoformat(newest_started["due_at"].replace("Z", "+00:00")) > stopped_at
        http.patch(f"{url}/schedules/ping", json={"enabled": False}, timeout=10)
        db.dispose()
    finally:
        service.stop()
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def _runs_http(http: requests.Session, url: str) -> list[dict]:
    return http.get(f"{url}/schedules/ping/runs", timeout=10).json()["runs"]


def _started(http: requests.Session, url: str) -> list[dict]:
    return [r for r in _runs_http(http, url) if r["outcome"] == "started"]


# --- found in review ----------------------------------------------------------------------------------------------


def test_a_daily_cron_runs_once_on_the_night_clocks_go_back_and_stored_times_are_utc():
    from zoneinfo import ZoneInfo

    # 2026-10-25: Paris goes from 03:00 CEST back to 02:00 CET; 02:30 comes twice.
    moment = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    runs = []
    for _ in range(3):
        moment = schedules.next_due("30 2 * * *", None, "Europe/Paris", moment)
        runs.append(moment)
    assert [r.astimezone(ZoneInfo("Europe/Paris")).strftime("%d %H:%M") for r in runs] == ["25 02:30", "26 02:30", "27 02:30"]
    # A time given back in another zone (PostgreSQL's session zone) is the same instant, in UTC: intervals add real time.
    paris = datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris"))
    assert schedules.aware(paris) == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert schedules.next_due(None, 1800, "UTC", schedules.aware(paris)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_one_broken_schedule_does_not_stop_the_others(app, client):
    _create(client, name="broken")
    _create(client, name="fine")
    db = app.extensions["cloudx.db"]
    with db.session() as session:
        broken = session.query(Schedule).filter_by(name="broken").one()
        # A row already there for its due time: starting it fails on the unique due time.
        session.add(ScheduleRun(schedule_id=broken.id, due_at=broken.next_run_at, outcome="started"))
        due = schedules.aware(broken.next_run_at)
    started = _due(app, "x", due + timedelta(seconds=5))
    assert [s.schedule for s in started] == [client.get("/api/schedules/fine").get_json()["id"]]
    view = client.get("/api/schedules/broken").get_json()
    assert view["enabled"] and _next(client, "broken") > due + timedelta(seconds=5)
    assert _due(app, "x", due + timedelta(seconds=6)) == []  # moved on: not tried again at every tick


def test_review_refusals(app, client, runner):
    from controller.cli import cli

    # An admin scoped narrower may not widen an operator's schedule beyond the admin's own scope.
    operator = {"Authorization": f"Bearer {make_token(app, 'operator', 'op1')}"}
    assert (
        client.post(
            "/api/schedules", headers=operator, json={"name": "ops", "kind": "scan", "request": SCAN, "every_seconds": 60}
        ).status_code
        == 201
    )
    narrow_admin = {"Authorization": f"Bearer {make_token(app, 'admin', 'nadmin', scope=['192.0.2.0/28'])}"}
    wider = client.patch("/api/schedules/ops", headers=narrow_admin, json={"request": {**SCAN, "target": "192.0.2.200"}})
    assert wider.status_code == 403 and "nadmin" in wider.get_json()["error"]
    # A coverage schedule names a credential that must exist, even with no uncovered host today.
    coverage = {"coverage": {"network": "192.0.2.0/28"}, "os_type": "linux", "credential": "does-not-exist"}
    refused = client.post("/api/schedules", json={"name": "cov", "kind": "deployment", "request": coverage, "every_seconds": 60})
    assert refused.status_code == 400 and refused.get_json()["field"] == "request.credential", refused.get_json()
    # A name shaped like an id could never be reached by name.
    uuid_name = client.post(
        "/api/schedules", json={"name": "12345678-1234-1234-1234-123456789abc", "kind": "scan", "request": SCAN, "every_seconds": 60}
    )
    assert uuid_name.status_code == 400 and uuid_name.get_json()["field"] == "name"
    long_cron = client.post(
        "/api/schedules", json={"name": "l", "kind": "scan", "request": SCAN, "cron": ",".join(map(str, range(60))) + " * * * *"}
    )
    assert long_cron.status_code == 400 and "at most 128" in long_cron.get_json()["error"]
    # Resuming a schedule whose creator was revoked is refused, with why.
    client.patch("/api/schedules/ops", json={"enabled": False})
    with app.extensions["cloudx.db"].session() as session:
        revoke_token(session, "op1")
    resumed = client.patch("/api/schedules/ops", json={"enabled": True})
    assert resumed.status_code == 403 and "revoked" in resumed.get_json()["error"]
    # The CLI: a request that is not JSON, or a file that cannot be read, is one line.
    for text in ("{not json", "@/nonexistent/request.json"):
        result = runner.invoke(cli, ["schedule", "add", "n", "--kind", "scan", "--request", text, "--every", "60"])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and "--request" in result.output, result.output
