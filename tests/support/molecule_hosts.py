"""Test hosts for molecule's delegated driver: `create` boots them, `destroy` removes them.

    python tests/support/molecule_hosts.py up STATE_DIR [--booted N] [--target]
    python tests/support/molecule_hosts.py down STATE_DIR

`up` starts a keeper process that owns a tests.support.testhosts.Lab (so the hosts outlive the command, as molecule's
create and destroy are separate playbook runs), boots N Debian hosts reachable over SSH as root with a key of
its own, optionally a light scan target (listeners on known ports), and a fake enrollment manager with a
TEST FIXTURE agent package; it writes what it made to STATE_DIR/lab.json and returns. `down` stops the keeper,
which removes everything (a keeper killed outright is cleaned up by the next Lab, as for any test run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import testhosts
from tests.support.agent_fixture import FakeManager, build_package

ENROLLMENT_PASSWORD = "molecule-Enroll-5b2e"
TARGET_PORTS = {"open": 8080, "closed": 80, "filtered": 9999}


def keep(state_dir: Path, booted: int, target: bool) -> None:
    """The keeper: make the hosts, report them, hold them until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state = state_dir / "lab.json"
    key = state_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "molecule", "-f", str(key)], check=True)
    try:
        with testhosts.Lab() as lab:
            report: dict[str, object] = {"pid": os.getpid(), "identity_file": str(key), "hosts": []}
            for _ in range(booted):
                host = lab.add_booted_host(key.with_suffix(".pub").read_text())
                report["hosts"].append({"address": host.address, "user": "root", "port": 22})  # type: ignore[union-attr]
            if target:
                scan = lab.add_host(tcp=[22, TARGET_PORTS["open"]], http=[TARGET_PORTS["open"]], drop_tcp=[TARGET_PORTS["filtered"]])
                report["target"] = {"address": scan.address, "ports": TARGET_PORTS}
            manager = FakeManager(lab.service_address(), password=ENROLLMENT_PASSWORD) if booted else None
            if manager is not None:
                package, sha256 = build_package(state_dir)
                report["agent"] = {
                    "manager_address": manager.sock.getsockname()[0],
                    "enrollment_password": ENROLLMENT_PASSWORD,
                    "package_file": str(package),
                    "package_sha256": sha256,
                }
            state.write_text(json.dumps(report, indent=1))
            stop.wait()
            if manager is not None:
                manager.close()
    except Exception as exc:
        (state_dir / "lab.error").write_text(f"{type(exc).__name__}: {exc}")
        raise


def up(state_dir: Path, booted: int, target: bool, timeout: float = 600) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in ("lab.json", "lab.error"):
        (state_dir / name).unlink(missing_ok=True)
    log = (state_dir / "lab.log").open("ab")
    argv = [sys.executable, __file__, "keep", str(state_dir), "--booted", str(booted)] + (["--target"] if target else [])
    keeper = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state_dir / "lab.json").exists():
            print((state_dir / "lab.json").read_text())
            return 0
        if (state_dir / "lab.error").exists() or keeper.poll() is not None:
            error = state_dir / "lab.error"
            print(f"the test hosts could not be made: {error.read_text() if error.exists() else 'see lab.log'}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    keeper.terminate()
    print(f"the test hosts were not ready within {timeout:.0f} s", file=sys.stderr)
    return 1


def down(state_dir: Path, timeout: float = 120) -> int:
    state = state_dir / "lab.json"
    if not state.exists():
        return 0  # nothing was made (or it is gone already)
    pid = json.loads(state.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        state.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            state.unlink(missing_ok=True)
            return 0
        time.sleep(0.25)
    print(f"the keeper {pid} did not stop within {timeout:.0f} s", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "keep"])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--booted", type=int, default=1)
    parser.add_argument("--target", action="store_true")
    args = parser.parse_args()
    if args.action == "up":
        return up(args.state_dir, args.booted, args.target)
    if args.action == "down":
        return down(args.state_dir)
    keep(args.state_dir, args.booted, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
