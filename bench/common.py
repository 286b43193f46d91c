"""What every benchmark shares: side-by-side alternating runs, medians, ratios, peak memory, the report.

Machines are shared and noisy, so no figure stands alone: each is a ratio against a reference measured
in the same run, the variants alternating (A B C A B C ...), several repetitions, medians reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent


@dataclass
class Variant:
    """One way of doing the measured work. `run` returns optional extra figures (e.g. peak memory)."""

    name: str
    run: Callable[[], dict[str, float] | None]
    setup: Callable[[], None] | None = None


@dataclass
class Measurement:
    name: str
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def extra_median(self, key: str) -> float:
        return statistics.median(self.extra[key])


def alternate(variants: Sequence[Variant], repetitions: int, log: Callable[[str], None] = print) -> dict[str, Measurement]:
    """Run the variants in turn, `repetitions` rounds, and time each run (wall clock)."""
    results = {v.name: Measurement(v.name) for v in variants}
    for round_number in range(1, repetitions + 1):
        for variant in variants:
            if variant.setup is not None:
                variant.setup()
            start = time.perf_counter()
            extra = variant.run() or {}
            elapsed = time.perf_counter() - start
            results[variant.name].seconds.append(elapsed)
            for key, value in extra.items():
                results[variant.name].extra.setdefault(key, []).append(value)
            log(f"  round {round_number}/{repetitions} {variant.name}: {elapsed:.3f} s {json.dumps(extra) if extra else ''}")
    return results


def run_measured(argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict[str, float]:
    """Run a command to completion; its peak resident memory (MiB) from wait4 (that process, not its children)
    and its CPU time (user + system, with the children it waited for).

    ru_maxrss includes what the process held when it was forked, so run benchmarks from a small parent
    (`python -m bench` runs each benchmark in a process of its own).
    """
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}: {stderr[-2000:]}")
    return {"peak_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lower, upper = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (k - lower)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("ansible-core", "ansible-runner", "sqlalchemy", "flask", "waitress", "python-libnmap", "psycopg"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    sqlite = subprocess.run([PYTHON, "-c", "import sqlite3; print(sqlite3.sqlite_version)"], capture_output=True, text=True)
    found["sqlite"] = sqlite.stdout.strip()
    return found


def machine() -> str:
    cpu = "unknown cpu"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB, {platform.platform()}"


@dataclass
class Section:
    """A benchmark's part of bench/RESULTS.md."""

    title: str
    setup: str
    rows: list[tuple[str, ...]]
    header: tuple[str, ...]
    verdict: str
    notes: list[str] = field(default_factory=list)
    # Sections measured in the same run that follow this one (e.g. a comparison with a baseline tree).
    appendix: list[Section] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.setup, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += ["", f"**{self.verdict}**", ""]
        lines += [f"- {note}" for note in self.notes]
        text = "\n".join(lines).rstrip() + "\n"
        return "\n".join([text, *(part.markdown() for part in self.appendix)])

    @property
    def verdicts(self) -> str:
        """This section's verdict and its appendix's, for the log."""
        return " ".join([self.verdict, *(part.verdicts for part in self.appendix)])


def self_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}\u00d7"


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def to_json(results: dict[str, Measurement]) -> dict[str, Any]:
    return {name: {"seconds": m.seconds, "median": m.median, **{k: v for k, v in m.extra.items()}} for name, m in results.items()}
