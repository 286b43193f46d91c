"""Run the benchmarks and write bench/RESULTS.md: `.venv/bin/python -m bench [--only NAME,...] [--quick]`.

`--baseline GIT_REF` (api_latency): also serve that commit of this repository, extracted into bench/.cache, next to the
current tree, alternating, and append the comparison (current \u00f7 baseline per endpoint); `--rounds N` (api_latency)
sets the number of rounds.
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, versions

# Module name -> what it measures, in the order of the report.
BENCHMARKS = {
    "overhead": "controller overhead against bare ansible-playbook",
    "ingest": "event ingest into SQLite and PostgreSQL",
    "scanparse": "nmap XML parse + store against python-libnmap",
    "network": "the network over time: diff, asset update and import on 65,536 hosts",
    "api_latency": "API latency with 1M events and 100k scans",
    "fanout": "agent deployment to 20 hosts against 1",
    "cancel": "cancel latency with the local and Celery executors",
    "operations": "live-stream fan-out and the scheduler's claims",
    "dashboard": "dashboard pages with 1M events and 100k scans, and their live updates",
    "scan_latency": "small-scan latency: submit to results stored, against a one-task playbook and bare nmap",
}
# Options only some benchmarks take (keyword arguments of their run()).
OPTIONS = {"baseline": {"api_latency"}, "rounds": {"api_latency", "scan_latency"}, "with_testhost": {"scan_latency"}}
HERE = Path(__file__).resolve().parent
PARTS = HERE / "results"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds, to check the benchmarks run")
    parser.add_argument("--baseline", metavar="GIT_REF", help="api_latency: also serve this commit and compare (current / baseline)")
    parser.add_argument("--rounds", type=int, metavar="N", help="api_latency, scan_latency: rounds (default: 5, 2 with --quick)")
    parser.add_argument(
        "--with-testhost", action="store_const", const=True, help="scan_latency: also masscan and zmap against a test host (root)"
    )
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    for option, takers in OPTIONS.items():
        if getattr(args, option) is not None and not takers & set(chosen):
            parser.error(f"--{option.replace('_', '-')} is for {', '.join(sorted(takers))}, which is not chosen")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    PARTS.mkdir(exist_ok=True)
    # The controller as tools/setup.sh installs it: compiled (a checkout edited since would otherwise recompile
    # its changed modules in every job worker the benchmarks start).
    compileall.compile_dir(ROOT / "controller", quiet=1)
    if len(chosen) > 1:
        # One process per benchmark: a process's peak memory (ru_maxrss) starts at its parent's size when it is
        # forked, so a parent that held one benchmark's data would inflate the next one's memory figures.
        for name in chosen:
            argv = [sys.executable, "-m", "bench", "--only", name] + (["--quick"] if args.quick else [])
            for option, value in options_for(name, args).items():
                argv += [f"--{option}", str(value)]
            if subprocess.run(argv, check=False).returncode != 0:
                log(f"== {name} FAILED (see above); the other benchmarks go on")
        write_report()
        return 0
    for name in chosen:
        log(f"== {name}: {BENCHMARKS[name]}")
        started = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        section = module.run(quick=args.quick, log=log, **options_for(name, args))
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        quick = " (quick run: reduced sizes)" if args.quick else ""
        text = section.markdown() + f"\n_Measured {stamp}{quick} in {time.monotonic() - started:.0f} s._\n"
        (PARTS / f"{name}.md").write_text(text)
        log(f"== {name} done: {section.verdicts}")
    write_report()
    return 0


def options_for(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The options given that this benchmark takes."""
    return {option: getattr(args, option) for option, takers in OPTIONS.items() if name in takers and getattr(args, option) is not None}


def write_report() -> None:
    """bench/RESULTS.md: the machine and versions, then every benchmark's latest section."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `.venv/bin/python -m bench`. Every figure is a ratio against a reference measured in the same",
        "run, the variants alternating, several rounds, medians reported. Each section says when it was measured.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {json.dumps(versions())}",
        f"- Report written: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
    ]
    for name in BENCHMARKS:
        part = PARTS / f"{name}.md"
        lines.append(part.read_text() if part.is_file() else f"## {BENCHMARKS[name]}\n\nNot measured yet.\n")
    (HERE / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
