"""The registry of job kinds: the one place the worker looks a job's kind up."""

from __future__ import annotations

from controller.runner.deploy import DeployKind
from controller.runner.jobkind import JobKind
from controller.runner.scan import ScanKind


class PlaybookKind(JobKind):
    """A playbook run as it is: what the CLI's and the benchmarks' plain jobs are."""

    name = "playbook"
    # A plain playbook may run the scanner role too (the CLI's and the benchmarks' jobs): its polls report.
    progress = ScanKind.progress


KINDS: dict[str, JobKind] = {kind.name: kind for kind in (ScanKind(), DeployKind(), PlaybookKind())}


def kind_for(name: str) -> JobKind:
    """The kind of a job; LookupError for one this worker does not know (a newer controller's job)."""
    try:
        return KINDS[name]
    except KeyError:
        raise LookupError(f"this worker does not run jobs of kind {name!r}") from None
