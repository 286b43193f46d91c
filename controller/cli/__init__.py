"""The `cloudx` command line: one module per group of commands, each registering on the `cloudx` group."""

from __future__ import annotations

from controller.cli import admin, imports, jobs, network, operations, schedules, serve, webhooks
from controller.cli.context import cli

COMMANDS = (admin, imports, jobs, network, operations, schedules, serve, webhooks)  # imported for the commands they register on `cli`


def main() -> None:
    cli(prog_name="cloudx")


if __name__ == "__main__":
    main()
