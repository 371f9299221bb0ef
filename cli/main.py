"""The `crisis` command. Each sub-command lives in its own module with a `register` function.

A server that can't be reached (Temporal, Redis, the HTTP API) ends any command with one
line on stderr, `crisis: error: ...`, and exit status 1; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cli.errors import one_line

# module name -> registers one top-level sub-command
COMMANDS = ("cli.playbook_cmd", "cli.worker_cmd", "cli.api_cmd", "cli.users_cmd",
            "cli.projection_cmd", "cli.stack_cmd", "cli.dryrun_cmd", "cli.incidents_cmd",
            "cli.tasks_cmd")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("crisis-engine")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crisis", description="crisis-engine command line")
    parser.add_argument("--version", action="version", version=f"crisis-engine {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = one_line(exc)
        if message is None:
            raise
        print(f"crisis: error: {message}", file=sys.stderr, flush=True)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
