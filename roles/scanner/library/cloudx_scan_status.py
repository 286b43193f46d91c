#!/usr/bin/python
# Reports a running cloudx_scan's progress and renews its lease.
from __future__ import annotations

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: cloudx_scan_status
short_description: Report the progress of a scan started by cloudx_scan
description:
  - Reads C(status.json) in O(work_dir), renews the scan's lease (a scan whose lease is not renewed stops by
    itself) and returns C(finished) and C(cloudx_scan_progress) (percent, phase, elapsed seconds).
  - Meant for a polling loop (C(until: result.finished)); every poll becomes an Ansible event that carries
    the progress.
options:
  work_dir: {type: path, required: true}
  startup_grace: {type: int, default: 30}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(work_dir=dict(type="path", required=True), startup_grace=dict(type="int", default=30)),
        supports_check_mode=True,
    )
    work_dir = module.params["work_dir"]
    lease = os.path.join(work_dir, "lease")
    if os.path.isdir(work_dir) and not module.check_mode:
        with open(lease, "a", encoding="utf-8"):
            os.utime(lease, None)
    try:
        with open(os.path.join(work_dir, "status.json"), encoding="utf-8") as stream:
            status = json.load(stream)
    except (OSError, ValueError):
        # The async job may not have written its first status yet.
        age = time.time() - os.stat(work_dir).st_mtime if os.path.isdir(work_dir) else 0
        if age > module.params["startup_grace"]:
            module.fail_json(msg=f"the scan did not start within {module.params['startup_grace']} s")
        module.exit_json(changed=False, finished=False, cloudx_scan_progress={"state": "starting", "percent": 0, "phase": "starting"})
    if status["state"] == "running" and not _alive(status.get("pid")):
        module.fail_json(msg="the scan process {} ended without a result".format(status.get("pid")), cloudx_scan_progress=status)
    module.exit_json(changed=False, finished=status["state"] == "finished", cloudx_scan_progress=status)


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
