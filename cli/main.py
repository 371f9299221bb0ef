"""The `crisis` command. Each sub-command lives in its own module with a `register` function.

A server that can't be reached (Temporal, Redis, the HTTP API) ends any command with one
line on stderr, `crisis: error: ...`, and exit status 1; never a traceback.

As a process (`crisis ...`, `python -m cli.main ...`) the command ends through `run()`: it
flushes the logs, spans and standard streams, then exits without the interpreter's teardown.
The Temporal SDK's Rust threads (the client's and the worker's Tokio runtime) can still call
into Python while CPython finalizes, which aborts the process with "Fatal Python error:
PyGILState_Release: thread state ... must be current when releasing" on the way out
(temporalio/sdk-python#300); a worker or API stopped by Ctrl-C or SIGTERM then wrote that
line into its JSON log and died of SIGABRT (or SIGSEGV) instead of exiting 0.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

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


def exit_status(code: object) -> int:
    """The process status `sys.exit(code)` would give: None is 0, an int is itself, and
    anything else (a message) is printed to stderr and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def finish(code: int) -> NoReturn:
    """End the process with `code` once everything buffered is written: log handlers, batched
    trace spans (when tracing was set up), stdout and stderr; then `os._exit`, so no Temporal
    runtime thread can outlive a finalizing interpreter (see the module docstring)."""
    tracing = sys.modules.get("core.tracing")
    if tracing is not None:
        try:
            tracing.shutdown()
        except Exception:  # a collector that is gone must not change the exit status
            traceback.print_exc()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or file: nothing more can be written
            pass
    os._exit(code)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The `crisis` process: `main`, then `finish` with its status."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, --version, a usage error
        code = exit_status(exc.code)
    except Exception:  # an unexpected failure still shows its traceback, and gives 1
        traceback.print_exc()
        code = 1
    finish(code)


if __name__ == "__main__":
    run()
