#!/usr/bin/python
# Reports a running cloudx_scan's progress and renews its lease; once the scan ends, returns its result.
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

# From a checkout (roles_path) the scanner role's module_utils/ provide it; installed as the collection
# cloudx.security, its plugins/module_utils/.
try:
    from ansible.module_utils.cloudx_scanner import copy_results, process_gone, read_json, remove_ended_work_dir, renew_lease
except ImportError:
    from ansible_collections.cloudx.security.plugins.module_utils.cloudx_scanner import (
        copy_results,
        process_gone,
        read_json,
        remove_ended_work_dir,
        renew_lease,
    )

DOCUMENTATION = r"""
module: cloudx_scan_status
short_description: Report the progress of a scan started by cloudx_scan
author: Cloud-X playbooks
description:
  - Reads C(status.json) in O(work_dir), renews the scan's lease (a scan whose lease is not renewed stops by
    itself) and returns C(finished) and C(cloudx_scan_progress) (percent, phase, elapsed seconds).
  - With O(wait), a poll of a running scan returns as soon as the scan ends, or after O(wait) seconds with its
    progress (the lease is renewed meanwhile); a poll of a scan that has ended returns at once.
  - Once the scan has ended, also returns its C(summary) (what cloudx_scan returned, as in C(summary.json)), so
    no C(async_status) is needed, and with O(results_dir) copies the result files there.
  - "Meant for a polling loop (C(until: result.finished)); every poll becomes an Ansible event that carries
    the progress. Every failure also returns C(finished=true), so such a loop ends at once."
  - With O(remove_work_dir), the poll that finds the scan ended then removes O(work_dir), once the process
    that ran the scan has exited (so that no C(cloudx_scan_cleanup) task is needed afterwards).
  - For a scan started by cloudx_scan with its C(detach) option, O(async_jid) stays empty; a scan
    whose process ended before it wrote its last status fails at once.
  - A poll of a scan whose work directory is gone fails at once.
  - While C(status.json) does not exist yet, the async job's result file (O(async_dir)/O(async_jid)) tells
    whether cloudx_scan is still starting or has already ended; a scan it refused (its request failed
    validation) fails here with cloudx_scan's own message, and a scan whose work directory is gone fails at
    once. O(startup_grace) is measured from the async job's start (its result file's modification time).
options:
  work_dir:
    description: The scan's work directory (cloudx_scan's O(work_dir)).
    type: path
    required: true
  startup_grace:
    description: Seconds the scan may take to write its first status before the poll fails.
    type: int
    default: 30
  async_jid:
    description: The async job id of the cloudx_scan task (its C(ansible_job_id)).
    type: str
    default: ""
  async_dir:
    description: The async directory of that task (C(ansible_async_dir)).
    type: path
    default: ~/.ansible_async
  wait:
    description: Seconds a poll waits for a running (or starting) scan to end before it reports its progress.
    type: int
    default: 0
  results_dir:
    description:
      - Once the scan has ended, copy its result files (O(result_files)) into this directory on the scanner
        host (created when missing). For a scanner host that is the machine running ansible-playbook
        (connection local), instead of fetching them. Empty copies nothing.
    type: path
    default: ""
  result_files:
    description: The names of the result files in O(work_dir) that O(results_dir) gets (missing ones are skipped).
    type: list
    elements: str
    default: []
  remove_work_dir:
    description:
      - Once the scan has ended (and its result files are copied to O(results_dir)), remove O(work_dir).
      - Nothing in it is needed any more then when O(results_dir) got the results.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Report scan progress
  cloudx_scan_status:
    work_dir: /var/tmp/cloudx-scans/example
    wait: 2
  register: progress
  until: progress.finished | default(true)
  retries: 960
  delay: 0
  when: not scan_job.finished  # scan_job: cloudx_scan with detach

- name: Report the progress of a scan started with async
  cloudx_scan_status:
    work_dir: /var/tmp/cloudx-scans/example
    async_jid: "{{ scan_job.ansible_job_id }}"
    async_dir: /var/tmp/cloudx-scans/example/async
    wait: 2
  register: progress
  until: progress.finished | default(true)
  retries: 960
  delay: 0
"""

RETURN = r"""
finished:
  description: Whether the scan has ended (also true on every failure).
  returned: always
  type: bool
cloudx_scan_progress:
  description: The scan's status (state, percent, phase, elapsed seconds, pids).
  returned: always
  type: dict
summary:
  description:
    - The scan's summary (cloudx_scan's C(summary), C(summary.json)); for a scan that ended before it wrote
      one (it failed to start), C(state) (failed) and C(error) only.
  returned: when the scan has ended
  type: dict
msg:
  description: Why the scan failed, when it ended without a summary or cloudx_scan failed.
  returned: when the scan ended failed
  type: str
copied:
  description: The result files copied to O(results_dir).
  returned: when the scan has ended and O(results_dir) is set
  type: list
  elements: str
removed:
  description: Whether O(work_dir) was removed.
  returned: when the scan has ended and O(remove_work_dir) is set
  type: bool
"""

STARTING = {"state": "starting", "percent": 0, "phase": "starting"}
# How often a waiting poll looks at the scan, and how long it waits for the async job's record once the
# scan says it has ended (cloudx_scan writes its last status just before it returns).
TICK = 0.1
JOB_GRACE = 5.0


class Outcome(Exception):
    """What a poll returns (failed or not): ends the wait."""

    def __init__(self, failed: bool, **result: Any) -> None:
        super().__init__(result.get("msg", ""))
        self.failed = failed
        self.result = result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            work_dir=dict(type="path", required=True),
            startup_grace=dict(type="int", default=30),
            async_jid=dict(type="str", default=""),
            async_dir=dict(type="path", default="~/.ansible_async"),
            wait=dict(type="int", default=0),
            results_dir=dict(type="path", default=""),
            result_files=dict(type="list", elements="str", default=[]),
            remove_work_dir=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    work_dir = p["work_dir"]
    job_file = os.path.join(p["async_dir"], p["async_jid"]) if p["async_jid"] else ""
    deadline = time.monotonic() + max(0, p["wait"])
    while True:
        if not module.check_mode:
            renew_lease(work_dir)
        try:
            result = _poll(p["startup_grace"], work_dir, job_file)
        except Outcome as outcome:
            if outcome.failed:
                module.fail_json(**outcome.result)
            result = outcome.result
        if result["finished"] or time.monotonic() >= deadline:
            break
        time.sleep(min(TICK, max(0.0, deadline - time.monotonic())))
    if result["finished"]:
        result.update(_ended(work_dir, job_file, result["cloudx_scan_progress"]))
        if p["results_dir"] and not module.check_mode:
            result["copied"] = copy_results(work_dir, p["results_dir"], p["result_files"])
            result["changed"] = bool(result["copied"])
        if p["remove_work_dir"] and not module.check_mode:
            try:
                result["removed"] = remove_ended_work_dir(work_dir, result["cloudx_scan_progress"].get("pid"))
            except OSError as exc:
                module.fail_json(msg=f"could not remove {work_dir}: {exc}", **result)
    module.exit_json(**result)


def _poll(startup_grace: int, work_dir: str, job_file: str) -> Dict[str, Any]:
    """One look at the scan: its progress, or an Outcome (a failure, or an ended scan found from its job)."""
    try:
        with open(os.path.join(work_dir, "status.json"), encoding="utf-8") as stream:
            status = json.load(stream)
    except (OSError, ValueError):
        if job_file:
            return _starting_from_job(startup_grace, work_dir, job_file)
        if not os.path.isdir(work_dir):
            # cloudx_scan (detach) made it before it returned: it was removed since.
            raise Outcome(True, msg=_gone(work_dir), finished=True, cloudx_scan_progress={**STARTING, "state": "gone"}) from None
        # Without the job id: the scan may not have written its first status yet.
        return _starting(startup_grace, time.time() - os.stat(work_dir).st_mtime)
    if status.get("state") != "finished" and not _alive(status.get("pid")):
        job = read_json(job_file) if job_file else None
        why = job.get("msg") if job and job.get("failed") else None
        raise Outcome(
            True,
            msg="the scan process {} ended without a result{}".format(status.get("pid"), f": {why}" if why else ""),
            finished=True,
            cloudx_scan_progress=status,
        )
    return dict(changed=False, finished=status["state"] == "finished", cloudx_scan_progress=status)


def _starting_from_job(startup_grace: int, work_dir: str, job_file: str) -> Dict[str, Any]:
    """No status.json: the async job's own record says whether the scan is still starting."""
    job = read_json(job_file)
    if job is None:
        async_dir = os.path.dirname(job_file)
        if os.path.isdir(async_dir):
            # The async wrapper creates its directory, then writes the job's first record.
            return _starting(startup_grace, time.time() - os.stat(async_dir).st_mtime)
        raise Outcome(True, msg=_gone(work_dir), finished=True, cloudx_scan_progress={**STARTING, "state": "gone"})
    if _job_running(job):
        return _starting(startup_grace, time.time() - os.stat(job_file).st_mtime)
    if job.get("failed"):
        # cloudx_scan refused the request (or could not start) before it wrote any status.
        raise Outcome(True, msg=str(job.get("msg") or "the scan failed before it started"), finished=True, cloudx_scan_progress=STARTING)
    raise Outcome(False, changed=False, finished=True, cloudx_scan_progress={**STARTING, "state": "finished"})


def _gone(work_dir: str) -> str:
    return f"the scan's work directory {work_dir} is gone (removed, or the scan stopped itself because nobody polled it)"


def _starting(startup_grace: int, age: float) -> Dict[str, Any]:
    if age > startup_grace:
        raise Outcome(True, msg=f"the scan did not start within {startup_grace} s", finished=True, cloudx_scan_progress=STARTING)
    return dict(changed=False, finished=False, cloudx_scan_progress=STARTING)


def _ended(work_dir: str, job_file: str, status: Dict[str, Any]) -> Dict[str, Any]:
    """The ended scan's summary (and msg when it failed): from the async job's record, as async_status would
    return it, else from summary.json and status.json."""
    job = _final_job(job_file) if job_file else None
    summary = job.get("summary") if job else None
    msg = str(job["msg"]) if job and job.get("failed") and job.get("msg") else None
    if not isinstance(summary, dict):
        try:
            with open(os.path.join(work_dir, "summary.json"), encoding="utf-8") as stream:
                summary = json.load(stream)
        except (OSError, ValueError):
            summary = None
    if not isinstance(summary, dict):
        msg = msg or status.get("error") or "the scan ended without a result"
        summary = {"state": "failed", "error": msg}
    ended: Dict[str, Any] = {"summary": summary}
    if msg:
        ended["msg"] = msg
    return ended


def _final_job(job_file: str) -> Dict[str, Any] | None:
    """The async job's last record; cloudx_scan has written its last status, so it comes within moments."""
    deadline = time.monotonic() + JOB_GRACE
    while True:
        job = read_json(job_file)
        if job is not None and not _job_running(job):
            return job
        if time.monotonic() >= deadline or not os.path.isdir(os.path.dirname(job_file)):
            return None
        time.sleep(0.02)


def _job_running(job: Dict[str, Any]) -> bool:
    return bool(job.get("started")) and not job.get("finished")


def _alive(pid: object) -> bool:
    return not process_gone(pid)


if __name__ == "__main__":
    main()
