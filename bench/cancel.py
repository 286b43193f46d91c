"""Cancel latency with each executor: from the cancel request to the job recorded as canceled and to the
last process of its playbook gone, with the local executor and with a Celery worker (PostgreSQL, Redis and
`cloudx worker` started as throwaway servers by tests/support/cluster.py), alternating, several rounds.

The job runs `tests/playbooks/sleep.yml` on this machine (ansible_connection local), so what is measured is
the controller's path only: the API's cancel, the worker's poll of the job's cancel flag, ansible-runner's
cancel and the end of the process tree.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import ROOT, Section

# The target: a cancel reaches the worker that runs the job within 2 s.
TARGET_SECONDS = 2.0


@contextmanager
def executor_app(kind: str, work: Path) -> Iterator[Any]:
    """The app with its executor running (the tests' own set-up); for Celery, a throwaway PostgreSQL and Redis."""
    sys.path.insert(0, str(ROOT))
    from tests.support.app import running_app
    from tests.support.cluster import Cluster

    cluster = Cluster() if kind == "celery" else None
    try:
        with running_app(None, work, kind, workers_started=("bench",), cluster=cluster) as app:
            yield app
    finally:
        if cluster is not None:
            cluster.close()


def one_cancel(app: Any, inventory: Path) -> tuple[float, float]:
    """Seconds from the cancel request to the status canceled, and to no process of the job left."""
    from controller.queue.jobs import cancel_job, create_job
    from controller.store.models import Job

    db, executor = app.extensions["cloudx.db"], app.extensions["cloudx.executor"]
    seconds = 3600 + int(time.time() * 1000) % 1000  # a sleep whose command line is this job's own
    with db.session() as session:
        job_id = create_job(
            session,
            kind="playbook",
            playbook="tests/playbooks/sleep.yml",
            inventory=str(inventory),
            extra_vars={"sleep_seconds": seconds},
            timeout=600,
        ).id
    executor.submit(job_id)
    deadline = time.monotonic() + 120
    while not _running(f"sleep {seconds}"):
        if time.monotonic() > deadline:
            raise RuntimeError("the sleep task did not start")
        time.sleep(0.05)
    asked = time.monotonic()
    with db.session() as session:
        cancel_job(session, job_id)
    executor.cancel(job_id)
    recorded = gone = None
    while recorded is None or gone is None:
        now = time.monotonic()
        if now - asked > 120:
            raise RuntimeError(f"the job did not end after its cancel: recorded {recorded}, processes gone {gone}")
        if recorded is None:
            with db.session() as session:
                job = session.get(Job, job_id)
                if job.status == "canceled":
                    recorded = now - asked
                elif job.status not in ("queued", "running"):
                    raise RuntimeError(f"the job ended {job.status}, not canceled: {job.status_reason}")
        if gone is None and not _running(f"sleep {seconds}") and not _running(job_id):
            gone = now - asked
        time.sleep(0.02)
    return recorded, gone


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def run(quick: bool, log: Callable[[str], None]) -> Section:
    rounds = 2 if quick else 5
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cloudx-bench-cancel-") as tmp:
        work = Path(tmp)
        inventory = work / "hosts.yml"
        inventory.write_text(
            f"all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        )
        apps = {}
        stack = []
        try:
            for kind in ("local", "celery"):
                (work / kind).mkdir()
                manager = executor_app(kind, work / kind)
                apps[kind] = manager.__enter__()
                stack.append(manager)
                results[kind] = {"recorded": [], "gone": []}
            for number in range(1, rounds + 1):
                for kind, app in apps.items():
                    recorded, gone = one_cancel(app, inventory)
                    results[kind]["recorded"].append(recorded)
                    results[kind]["gone"].append(gone)
                    log(f"  round {number}/{rounds} {kind}: canceled recorded after {recorded:.2f} s, processes gone after {gone:.2f} s")
        finally:
            for manager in reversed(stack):
                manager.__exit__(None, None, None)
    rows = []
    for kind, figures in results.items():
        rows.append(
            (
                kind,
                f"{statistics.median(figures['recorded']):.2f}",
                f"{max(figures['recorded']):.2f}",
                f"{statistics.median(figures['gone']):.2f}",
                f"{max(figures['gone']):.2f}",
            )
        )
    worst = max(max(f["gone"]) for f in results.values())
    ratio = statistics.median(results["celery"]["gone"]) / statistics.median(results["local"]["gone"])
    met = "met" if worst <= TARGET_SECONDS else "MISSED"
    return Section(
        title="6. Cancel latency, local and Celery executors",
        setup=(
            f"A running job (`tests/playbooks/sleep.yml`, a local `sleep`) is canceled {rounds} times per executor, alternating; "
            "timed from the cancel request until the job is recorded `canceled`, and until no process of it is left."
        ),
        header=("executor", "recorded median s", "recorded max s", "processes gone median s", "processes gone max s"),
        rows=rows,
        verdict=(
            f"Target: a cancel reaches the worker within {TARGET_SECONDS:.0f} s. Slowest end of a job's processes: {worst:.2f} s: {met}. "
            f"Celery \u00f7 local (processes gone, medians): {ratio:.2f}\u00d7."
        ),
        notes=[
            "The job's worker process reads its cancel flag from the database twice a second with either executor (with Celery "
            "on whichever machine runs the job), then ends the job's whole process tree at once (it is a child subreaper) and "
            "ansible-runner records the cancel.",
            "Celery: PostgreSQL and Redis on loopback, started for the benchmark (tests/support/cluster.py), one `cloudx worker` "
            "with two job slots.",
        ],
    )
