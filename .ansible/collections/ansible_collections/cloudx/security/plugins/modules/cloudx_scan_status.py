#!/usr/bin/python
# Reports a running cloudx_scan's progress and renews its lease.
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: cloudx_scan_status
short_description: Report the progress of a scan started by cloudx_scan
author: Cloud-X playbooks
description:
  - Reads C(status.json) in O(work_dir), renews the scan's lease (a scan whose lease is not renewed stops by
    itself) and returns C(finished) and C(cloudx_scan_progress) (percent, phase, elapsed seconds).
  - "Meant for a polling loop (C(until: result.finished)); every poll becomes an Ansible event that carries
    the progress. Every failure also returns C(finished=true), so such a loop ends at once."
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
"""

EXAMPLES = r"""
- name: Report scan progress
  cloudx_scan_status:
    work_dir: /var/tmp/cloudx-scans/example
    async_jid: "{{ scan_job.ansible_job_id }}"
    async_dir: /var/tmp/cloudx-scans/example/async
  register: progress
  until: progress.finished | default(true)
  retries: 960
  delay: 2
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
"""

STARTING = {"state": "starting", "percent": 0, "phase": "starting"}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            work_dir=dict(type="path", required=True),
            startup_grace=dict(type="int", default=30),
            async_jid=dict(type="str", default=""),
            async_dir=dict(type="path", default="~/.ansible_async"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    work_dir = p["work_dir"]
    lease = os.path.join(work_dir, "lease")
    if os.path.isdir(work_dir) and not module.check_mode:
        with open(lease, "a", encoding="utf-8"):
            os.utime(lease, None)
    job_file = os.path.join(p["async_dir"], p["async_jid"]) if p["async_jid"] else ""
    try:
        with open(os.path.join(work_dir, "status.json"), encoding="utf-8") as stream:
            status = json.load(stream)
    except (OSError, ValueError):
        if job_file:
            _starting_from_job(module, work_dir, job_file)
        # Without the job id: the async job may not have written its first status yet.
        age = time.time() - os.stat(work_dir).st_mtime if os.path.isdir(work_dir) else 0
        _starting(module, age)
    if status["state"] == "running" and not _alive(status.get("pid")):
        job = _read_job(job_file) if job_file else None
        why = job.get("msg") if job and job.get("failed") else None
        module.fail_json(
            msg="the scan process {} ended without a result{}".format(status.get("pid"), f": {why}" if why else ""),
            finished=True,
            cloudx_scan_progress=status,
        )
    module.exit_json(changed=False, finished=status["state"] == "finished", cloudx_scan_progress=status)


def _starting_from_job(module: AnsibleModule, work_dir: str, job_file: str) -> None:
    """No status.json: the async job's own record says whether the scan is still starting."""
    job = _read_job(job_file)
    if job is None:
        async_dir = os.path.dirname(job_file)
        if os.path.isdir(async_dir):
            # The async wrapper creates its directory, then writes the job's first record.
            _starting(module, time.time() - os.stat(async_dir).st_mtime)
        module.fail_json(
            msg=f"the scan's work directory {work_dir} is gone (removed, or the scan stopped itself because nobody polled it)",
            finished=True,
            cloudx_scan_progress={**STARTING, "state": "gone"},
        )
    if job.get("started") and not job.get("finished"):
        _starting(module, time.time() - os.stat(job_file).st_mtime)
    if job.get("failed"):
        # cloudx_scan refused the request (or could not start) before it wrote any status.
        module.fail_json(msg=str(job.get("msg") or "the scan failed before it started"), finished=True, cloudx_scan_progress=STARTING)
    module.exit_json(changed=False, finished=True, cloudx_scan_progress={**STARTING, "state": "finished"})


def _starting(module: AnsibleModule, age: float) -> None:
    if age > module.params["startup_grace"]:
        module.fail_json(
            msg=f"the scan did not start within {module.params['startup_grace']} s", finished=True, cloudx_scan_progress=STARTING
        )
    module.exit_json(changed=False, finished=False, cloudx_scan_progress=STARTING)


def _read_job(path: str) -> Dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    main()
