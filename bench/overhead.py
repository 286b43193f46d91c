"""Controller overhead: a 50 hosts x 20 tasks playbook as a controller job (every event stored in SQLite),
against bare ansible-playbook and plain ansible_runner.run() on the same inventory and playbook.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import BIN, PYTHON, ROOT, Section, Variant, alternate, env_with, ratio, run_measured

FORKS = 10


def build(directory: Path, hosts: int, tasks: int) -> tuple[Path, Path]:
    """An inventory of local hosts and a playbook of debug tasks."""
    names = "".join(f"        h{i:03d}:\n" for i in range(hosts))
    inventory = directory / "inventory.yml"
    inventory.write_text(
        f"all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {PYTHON}\n"
        f"  children:\n    fleet:\n      hosts:\n{names}"
    )
    step = "    - name: Step {i}\n      ansible.builtin.debug:\n        msg: 'step {i} on {{{{ inventory_hostname }}}}'\n"
    steps = "".join(step.format(i=i) for i in range(tasks))
    playbook = directory / "playbook.yml"
    playbook.write_text(f"- name: Overhead\n  hosts: fleet\n  gather_facts: false\n  tasks:\n{steps}")
    return inventory, playbook


def ansible_env() -> dict[str, str]:
    # The same Ansible settings for every variant: the project's ansible.cfg, 10 forks.
    return env_with(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORKS=str(FORKS), PATH=f"{BIN}:/usr/bin:/bin")


def runner_child(private_dir: str, playbook: str, inventory: str, handler: str) -> None:
    """Plain ansible_runner.run(): default settings (event files written) or an event handler returning False."""
    import ansible_runner

    Path(private_dir).mkdir(parents=True)
    kwargs = {"event_handler": lambda _event: False} if handler == "false" else {}
    result = ansible_runner.run(private_data_dir=private_dir, playbook=playbook, inventory=inventory, quiet=True, **kwargs)
    if result.status != "successful":
        raise SystemExit(f"ansible-runner ended {result.status}")
    events = list(result.events) if handler != "false" else []
    print(json.dumps({"events": len(events)}))


def run(quick: bool, log: Callable[[str], None]) -> Section:
    from sqlalchemy import select

    from controller.config import Config
    from controller.queue.jobs import create_job
    from controller.store.database import Database
    from controller.store.models import Job, JobEvent

    hosts, tasks, rounds = (10, 5, 2) if quick else (50, 20, 5)
    work = Path(tempfile.mkdtemp(prefix="cloudx-bench-overhead-"))
    inventory, playbook = build(work, hosts, tasks)
    env = ansible_env()
    counter = itertools.count()
    database_url = f"sqlite:///{work / 'scans.db'}"
    config = Config.from_env(DATABASE_URL=database_url, ARTIFACTS_DIR=str(work / "artifacts"), INVENTORY=str(inventory))
    db = Database(database_url)
    db.upgrade()
    job_ids: list[str] = []

    def queue_job() -> None:
        with db.session() as session:
            job = create_job(session, kind="playbook", playbook=str(playbook), inventory=str(inventory), extra_vars={}, timeout=3600)
            job_ids.append(job.id)

    def bare() -> dict[str, float]:
        return run_measured([str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)], env=env, cwd=work)

    def runner(handler: str) -> Callable[[], dict[str, float]]:
        def go() -> dict[str, float]:
            private = work / f"runner-{next(counter)}"
            arguments = ", ".join(repr(str(a)) for a in (private, playbook, inventory, handler))
            code = f"from bench.overhead import runner_child; runner_child({arguments})"
            return run_measured([PYTHON, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT)

        return go

    def controller() -> dict[str, float]:
        worker_env = {**env, **config.as_env()}
        return run_measured([PYTHON, "-m", "controller.runner", job_ids[-1]], env=worker_env, cwd=ROOT)

    variants = [
        Variant("ansible-playbook", bare),
        Variant("ansible_runner.run() default", runner("default")),
        Variant("ansible_runner.run() handler returns False", runner("false")),
        Variant("controller job (events in SQLite)", controller, setup=queue_job),
    ]
    results = alternate(variants, rounds, log)

    # Every controller job stored every event, in order, and ended successful.
    events_per_job = set()
    with db.session() as session:
        for job_id in job_ids:
            job = session.get(Job, job_id)
            assert job is not None and job.status == "successful", (job_id, job and job.status)
            counters = list(session.scalars(select(JobEvent.counter).where(JobEvent.job_id == job_id)))
            assert sorted(counters) == list(range(1, job.final_counter + 1)), job_id
            events_per_job.add(len(counters))
    db.dispose()
    shutil.rmtree(work, ignore_errors=True)

    reference = results["ansible-playbook"].median
    cpu_reference = results["ansible-playbook"].extra_median("cpu_s")
    rows = []
    for name, m in results.items():
        cpu = m.extra_median("cpu_s")
        rows.append((name, f"{m.median:.2f}", ratio(m.median, reference), f"{cpu:.1f}", ratio(cpu, cpu_reference)))
    controller_ratio = results["controller job (events in SQLite)"].median / reference
    runner_floor = results["ansible_runner.run() handler returns False"].median / reference
    met = "met" if controller_ratio <= 1.10 else "missed"
    own = controller_ratio / runner_floor
    bare_cpu, bare_wall = cpu_reference, reference
    notes = [
        f"The controller job against plain ansible-runner with a handler that stores nothing: {own:.2f}x: that is what "
        "the controller adds (worker start, storing every event, results). ansible-runner's own event transport (its "
        "callback plugin in ansible-playbook and the pexpect reader), which every controller job goes through, costs "
        f"{runner_floor:.2f}x here; the issue measured 1.16x.",
        f"CPU: bare ansible-playbook keeps {bare_cpu / bare_wall:.1f} of this machine's {os.cpu_count()} cores busy "
        f"({bare_cpu:.1f} CPU-s in {bare_wall:.1f} s): the run is CPU-bound, so each CPU-second added anywhere (the "
        "callback plugin, the reader, the controller) lengthens it.",
    ]
    return Section(
        title="1. Controller overhead",
        setup=(
            f"{hosts} hosts x {tasks} debug tasks, `ansible_connection: local`, forks {FORKS}, the project's ansible.cfg; "
            f"{rounds} rounds, variants alternating; wall time of each process from start to exit, median. "
            f"The controller job is `python -m controller.runner.worker JOB_ID` (the process the executor starts): it runs the "
            f"playbook through ansible-runner and stores every event ({max(events_per_job)} per job) in SQLite (WAL)."
        ),
        header=("variant", "median s", "vs ansible-playbook", "median CPU s", "CPU vs ansible-playbook"),
        rows=rows,
        verdict=(
            f"Target: controller at most 1.10x bare ansible-playbook. Measured {controller_ratio:.2f}x: {met}. "
            + (
                f"The target is below ansible-runner's own cost ({runner_floor:.2f}x with a handler that stores nothing), "
                f"which every controller job pays; the controller's own share is {own:.2f}x."
                if runner_floor > 1.10
                else f"ansible-runner alone (a handler that stores nothing): {runner_floor:.2f}x."
            )
        ),
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit("run through: python -m bench --only overhead")
