"""The worker's final-status rule, on its own: how a playbook's end, a cancel and a worker's stop combine."""

from __future__ import annotations

import pytest

from controller.runner.worker import RunOutcome, final_status


def outcome(status: str, rc: int | None = 0, error: str | None = None) -> RunOutcome:
    return RunOutcome(writer=None, status=status, rc=rc, error=error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("runner_status", "rc", "cancel", "stop", "expected"),
    [
        ("successful", 0, False, None, ("successful", None)),
        ("failed", 2, False, None, ("failed", "ansible-playbook ended with rc 2: see the job's failed events")),
        # The watch ended the process tree before ansible-runner saw the cancel: ansible-runner says failed.
        ("failed", -9, True, None, ("canceled", "canceled on request")),
        ("canceled", 254, True, None, ("canceled", "canceled on request")),
        # A worker shut down while the job ran: not the user's cancel, so an error with the worker's reason.
        ("canceled", 254, True, "stopped: its worker was shut down", ("error", "stopped: its worker was shut down")),
        ("failed", -15, True, "the job was ended while it ran", ("error", "the job was ended while it ran")),
        ("timeout", 254, False, None, ("timeout", "the job ran longer than its timeout or produced no output for IDLE_TIMEOUT")),
        # A timeout stays a timeout even if a cancel arrived at the same moment.
        ("timeout", 254, True, None, ("timeout", "the job ran longer than its timeout or produced no output for IDLE_TIMEOUT")),
        # A successful playbook is successful whatever came after its end.
        ("successful", 0, True, "stopped", ("successful", None)),
    ],
)
def test_final_status(runner_status, rc, cancel, stop, expected):
    assert final_status(outcome(runner_status, rc), cancel, stop) == expected


def test_a_runner_that_could_not_start_is_an_error_whatever_else_happened():
    assert final_status(outcome("error", None, "ansible-runner failed: boom"), True, "stopped") == ("error", "ansible-runner failed: boom")


def test_request_stop_takes_no_lock():
    """It runs in signal handlers, nested in itself when signals come in a burst (one SIGTERM per thread of a
    killed parent): a lock taken there (threading.Event.set) would wait for itself forever."""
    import sys
    import threading

    from controller.runner.worker import JobRun

    run = JobRun.__new__(JobRun)
    run.stop_reason, run._stopping = None, False
    seen: list[str] = []

    def profile(frame, event, arg):
        if event == "call":
            seen.append(frame.f_code.co_filename)
        elif event == "c_call":
            seen.append(getattr(arg, "__qualname__", repr(arg)))

    sys.setprofile(profile)
    try:
        run.request_stop("first")
        run.request_stop("second")
    finally:
        sys.setprofile(None)
    assert run.stopping() and run.stop_reason == "first"
    assert not [name for name in seen if name == threading.__file__ or "acquire" in name or "lock" in name.lower()], seen
