"""Jobs through the real worker and ansible-runner: events in order, final counter, host summaries, limits."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from controller.queue.jobs import claim_next, create_job
from controller.store.database import Database
from controller.store.jsontext import dumps
from controller.store.models import Job, JobEvent, JobHostSummary
from controller.store.redact import REDACTED, may_hold_secrets, redact
from tests.support.app import make_config
from tests.support.waiting import wait_for


@pytest.mark.slow  # ansible-inventory or a worker process
def test_worker_stores_every_event_in_order(config, tmp_path):
    inventory = tmp_path / "many.yml"
    hosts = "".join(f"        h{i}:\n" for i in range(5))
    inventory.write_text(
        "all:\n  vars:\n    ansible_connection: local\n"
        f"    ansible_python_interpreter: {sys.executable}\n"
        f"  children:\n    g:\n      hosts:\n{hosts}"
    )
    db = Database(config.DATABASE_URL)
    db.upgrade()
    with db.session() as session:
        job = create_job(
            session,
            kind="playbook",
            playbook="tests/playbooks/events.yml",
            inventory=str(inventory),
            extra_vars={"api_token": "s3cr3t-token-value"},
            timeout=300,
        )
        job_id = job.id
    env = {**config.as_env(), "PATH": "/usr/bin:/bin", "CLOUDX_TEST_SECRET_SETTING": "do-not-record-me"}
    subprocess.run([sys.executable, "-m", "controller.runner", job_id], env=env, check=True, timeout=300)
    with db.session() as session:
        job = session.get(Job, job_id)
        counters = list(session.scalars(select(JobEvent.counter).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
        summaries = {
            s.host: (s.ok, s.changed, s.failed) for s in session.scalars(select(JobHostSummary).where(JobHostSummary.job_id == job_id))
        }
        assert job.status == "successful" and job.rc == 0 and job.progress == 100
        assert job.extra_vars == {"api_token": REDACTED}
        assert counters == list(range(1, job.final_counter + 1)) and len(counters) > 40
        assert summaries == {f"h{i}": (3, 1, 0) for i in range(5)}
    assert b"s3cr3t-token-value" not in (tmp_path / "scans.db").read_bytes()
    command = (tmp_path / "artifacts" / job_id / "artifacts" / "run" / "command").read_text()
    assert "do-not-record-me" not in command and "DATABASE_URL" not in command


def test_claim_respects_the_limit(config):
    db = Database(config.DATABASE_URL)
    db.upgrade()
    with db.session() as session:
        ids = [create_job(session, kind="playbook", playbook="x.yml", inventory="i", extra_vars={}, timeout=1).id for _ in range(3)]
    with db.session() as session:
        claimed = [claim_next(session, 2, "w:1", "local@w") for _ in range(3)]
    assert claimed == [ids[0], ids[1], None]


def local_inventory(tmp_path) -> str:
    path = tmp_path / "local.yml"
    path.write_text(
        f"all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
    )
    return str(path)


def sleep_job(config, tmp_path, seconds: int, timeout: int) -> tuple[Database, str]:
    db = Database(config.DATABASE_URL)
    db.upgrade()
    with db.session() as session:
        job_id = create_job(
            session,
            kind="playbook",
            playbook="tests/playbooks/sleep.yml",
            inventory=local_inventory(tmp_path),
            extra_vars={"sleep_seconds": seconds},
            timeout=timeout,
        ).id
    return db, job_id


@pytest.mark.slow  # ansible-inventory or a worker process
def test_job_timeout_ends_the_job_and_its_processes(config, tmp_path):
    db, job_id = sleep_job(config, tmp_path, 171, timeout=4)
    subprocess.run([sys.executable, "-m", "controller.runner", job_id], env=config.as_env(), check=True, timeout=120)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job.status == "timeout" and "timeout" in job.status_reason
    assert subprocess.run(["pgrep", "-f", "sleep 171"], capture_output=True).returncode == 1


@pytest.mark.slow  # ansible-inventory or a worker process
def test_idle_timeout_ends_a_silent_job(tmp_path):
    # ansible-runner drops settings= when the private data dir has no env/settings: the worker writes that file.
    config = make_config(tmp_path, IDLE_TIMEOUT=3)
    db, job_id = sleep_job(config, tmp_path, 172, timeout=600)
    # Without the idle timeout the sleep would end the job "successful" after 172 s (and this run time out).
    subprocess.run([sys.executable, "-m", "controller.runner", job_id], env=config.as_env(), check=False, timeout=150)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job.status == "timeout" and "IDLE_TIMEOUT" in job.status_reason, (job.status, job.status_reason)
    assert subprocess.run(["pgrep", "-f", "sleep 172"], capture_output=True).returncode == 1


@pytest.mark.slow  # a worker process
def test_a_burst_of_sigterms_stops_the_job_once(config, tmp_path):
    """A worker whose parent is killed gets one SIGTERM per thread of the parent as they exit: a stop handler that
    took a lock (threading.Event.set) could run again inside itself and wait for itself forever."""
    db, job_id = sleep_job(config, tmp_path, 173, timeout=600)
    worker = subprocess.Popen([sys.executable, "-m", "controller.runner", job_id], env=config.as_env())
    try:

        def sleeping() -> bool:  # its own playbook's task (not another run's leftover)
            for child in psutil.Process(worker.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "sleep 173" in " ".join(child.cmdline()):
                        return True
            return False

        assert wait_for(sleeping, timeout=60)
        for _ in range(300):
            worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0  # it recorded the end itself
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    with db.session() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.status_reason) == ("error", "stopped: its worker was shut down while the job was running")
    assert subprocess.run(["pgrep", "-f", "sleep 173"], capture_output=True).returncode == 1


def test_reconcile_keeps_queued_and_ends_orphaned_running(config):
    from controller.queue.jobs import reconcile

    db = Database(config.DATABASE_URL)
    db.upgrade()
    with db.session() as session:
        queued, running = (
            create_job(session, kind="playbook", playbook="x.yml", inventory="i", extra_vars={}, timeout=1).id for _ in range(2)
        )
        claim_next(session, 4, "this-host:1", "local@this-host", only=running)
        session.get(Job, running).worker = f"{__import__('controller.queue.jobs').queue.jobs.machine()}:999999"
    with db.session() as session:
        assert reconcile(session, lost_after=60) == [running]
    with db.session() as session:
        assert session.get(Job, queued).status == "queued"
        job = session.get(Job, running)
        assert job.status == "error" and "worker process is gone" in job.status_reason


KEYS = [
    "msg",
    "password",
    "Password",
    "db_passwd",
    "passphrase",
    "passport",
    "compass",
    "api_token",
    "token_count",
    "x_secret_y",
    "private_key_file",
    "SSH_KEY",
    "credentials",
    "res",
    "user",
    'a"password',
    "pass",
    "bypass",
    "key",
    "\u00e9password",
    "api_\u212aey",  # the Kelvin sign: re.I takes it for k
    "\u017fecret",  # the long s: re.I takes it for s
]


@settings(max_examples=400, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), st.sampled_from(["password", '":', "token"])),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_the_quick_secret_check_never_misses_a_key_redact_would_hide(value):
    encoded = dumps(value).decode()  # as EventWriter encodes event data
    if not may_hold_secrets(encoded):
        assert redact(value) == value, encoded


def test_event_data_written_by_the_fallback_encoder_is_redacted_and_valid_json():
    """Values orjson refuses (integers beyond 64 bits, lone surrogates) send the data to the standard library,
    which escapes non-ASCII keys: the secret check must still see them, and NaN is written as null either way."""
    from controller.store.events import trim_event_data

    for data in (
        {"res": {"api_\u212aey": "hunter2", "n": 2**64}},
        {"res": {"\u017fecret": "hunter2", "s": "\ud800"}},
        {"res": {"api_\u212aey": "hunter2"}},
    ):
        stored = trim_event_data(data)
        assert "hunter2" not in stored, stored
        assert json.loads(stored)["res"] == redact(data["res"])
    for data in ({"res": {"x": float("nan"), "n": 2**64}}, {"res": {"x": float("inf")}}):
        stored = trim_event_data(data)
        assert json.loads(stored, parse_constant=lambda name: pytest.fail(f"{name} in stored JSON"))["res"]["x"] is None


def test_event_pages_splice_stored_data_exactly(client, app):
    """The events page splices each event's stored JSON into the page: the result must be the page a full
    decode and encode would give, whatever hosts put in their output (NUL bytes, quotes, look-alike markers)."""

    from controller.store.events import EventWriter

    with app.extensions["cloudx.db"].session() as session:
        job_id = create_job(session, kind="playbook", playbook="x.yml", inventory="i", extra_vars={}, timeout=1).id
    hostile = ["\x00", '"\\u0000', "\x00" + "a" * 32, "ünïcødé ✓", '{"event_data": 1}', "line\nbreak", ""]
    writer = EventWriter(app.extensions["cloudx.db"], job_id)
    for counter, text in enumerate(hostile * 3, start=1):
        writer.put(
            {
                "counter": counter,
                "uuid": f"u{counter}",
                "event": "runner_on_ok",
                "stdout": text,
                "created": "2026-11-28T00:00:00",
                "event_data": {"host": "h", "res": {"msg": text, "n": [counter, None, 1.5]}},
            }
        )
    writer.close()
    response = client.get(f"/api/jobs/{job_id}/events?limit=5&after=2")
    page = json.loads(response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    assert [e["counter"] for e in page["events"]] == [3, 4, 5, 6, 7] and page["next_after"] == 7
    for event in page["events"]:
        text = hostile[(event["counter"] - 1) % len(hostile)]
        assert event["stdout"] == text and event["event_data"]["res"] == {"msg": text, "n": [event["counter"], None, 1.5]}
    assert set(page) == {"job_id", "job_status", "final_counter", "events", "next_after"}
    empty = client.get(f"/api/jobs/{job_id}/events?after=999").get_json()
    assert empty["events"] == [] and empty["next_after"] is None
