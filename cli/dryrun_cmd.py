"""`crisis dry-run`: show, in virtual time, what a playbook does in a scenario.

    crisis dry-run playbooks/viral-complaint.yaml playbooks/scenarios/legal-silent-exec-rejects.yaml
    crisis dry-run playbooks/scenarios/legal-silent-exec-rejects.yaml   # uses its `playbook:`
    crisis dry-run PLAYBOOK SCENARIO --json

The real workflow runs on a private time-skipping server; nothing is delivered. Invalid
files print one `<file>: <path>: <message>` line per problem and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from core.config import get_settings
from domain.validation import PlaybookInvalid, PlaybookIssue


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "dry-run", help="run a playbook against a scenario in virtual time; deliver nothing",
        description="Run PLAYBOOK (default: the scenario's `playbook:`, relative to the "
                    "scenario file) against SCENARIO in virtual time and print the timeline, "
                    "the approval outcomes and what would have been sent.")
    parser.add_argument("playbook", type=Path, nargs="?", metavar="PLAYBOOK")
    parser.add_argument("scenario", type=Path, metavar="SCENARIO")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--directory", type=Path, default=None,
                        help="people, roles and rosters (default: CRISIS_DIRECTORY_FILE)")
    parser.add_argument("--today", type=_aware_time, default=None, metavar="ISO_TIME",
                        help="resolve relative starts ('fri 17:40') against this moment "
                             "instead of now, e.g. 2090-03-08T12:00:00+00:00; pins the "
                             "roster week so a report is reproducible")
    parser.set_defaults(handler=dry_run)


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. +00:00")
    return moment


def _print_invalid(exc: PlaybookInvalid) -> None:
    for issue in exc.issues:
        print(f"{exc.source}: {issue.path}: {issue.message}", file=sys.stderr)


def dry_run(args: argparse.Namespace) -> int:
    from domain.loader import load_directory, load_playbook
    from dryrun.report import render
    from dryrun.runner import DryRunError, run_dry_run
    from dryrun.scenario import load_scenario

    settings = get_settings()
    directory_path: Path = args.directory or settings.directory_file
    try:
        directory = load_directory(directory_path)
        scenario = load_scenario(args.scenario, directory.definition)
        playbook_path: Path | None = args.playbook
        if playbook_path is None:
            if scenario.playbook is None:
                raise PlaybookInvalid([PlaybookIssue(
                    "playbook", "no playbook: give PLAYBOOK or set `playbook:` in the scenario")],
                    str(args.scenario))
            playbook_path = args.scenario.parent / scenario.playbook
        playbook = load_playbook(playbook_path, directory.definition)
    except PlaybookInvalid as exc:
        _print_invalid(exc)
        return 1
    except OSError as exc:
        print(f"{exc.filename}: (top): cannot read file: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        report = asyncio.run(run_dry_run(playbook, directory, scenario,
                                         scenario_name=str(args.scenario),
                                         public_url=settings.public_url,
                                         today=args.today))
    except DryRunError as exc:
        print(f"{args.scenario}: {exc}", file=sys.stderr)
        return 1
    finally:
        # The Temporal client, worker and server bridge sit in reference cycles that point
        # into the SDK's Rust core. Left to the collector that runs while Python finalizes,
        # their native destructors run with the thread state already torn down and abort
        # the process (`PyGILState_Release`, exit 134/139) after a complete report. Collect
        # them now, while the interpreter is fully alive.
        gc.collect()
    print(report.model_dump_json(indent=2) if args.json else render(report), end="")
    if args.json:
        print()
    return 0
