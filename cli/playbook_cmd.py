"""`crisis playbook`: validate playbooks against the directory, print the JSON Schema, draw
a playbook as a Mermaid flowchart.

    crisis playbook validate playbooks/*.yaml [--directory config/directory.yaml]
    crisis playbook schema > playbook.schema.json
    crisis playbook graph playbooks/viral-complaint.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from core.config import get_settings
from domain.directory import Directory
from domain.graph import mermaid
from domain.incident import DirectorySnapshot
from domain.loader import load_directory, load_playbook, parse_yaml
from domain.playbook import Playbook
from domain.validation import PlaybookInvalid, PlaybookIssue, issues_from_validation_error

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _print_issues(source: Path | str, issues: list[PlaybookIssue]) -> None:
    for issue in issues:
        print(f"{source}: {issue.path}: {issue.message}")


def _unreadable(path: Path, exc: OSError) -> list[PlaybookIssue]:
    return [PlaybookIssue("(top)", f"cannot read file: {exc.strerror or exc}")]


def _load_directory(path: Path) -> DirectorySnapshot | None:
    """The directory, or None after printing why it can't be used."""
    try:
        snapshot = load_directory(path)
    except PlaybookInvalid as exc:
        _print_issues(path, exc.issues)
        return None
    except OSError as exc:
        _print_issues(path, _unreadable(path, exc))
        return None
    directory = snapshot.definition
    print(f"OK {path} (directory: {len(directory.people)} people, {len(directory.roles)} roles, "
          f"{len(directory.rosters)} rosters, sha256 {snapshot.sha256[:12]})")
    return snapshot


def _validate_file(path: Path, directory: Directory, seen: dict[tuple[str, int], Path]) -> bool:
    try:
        snapshot = load_playbook(path, directory)
    except PlaybookInvalid as exc:
        _print_issues(path, exc.issues)
        return False
    except OSError as exc:
        _print_issues(path, _unreadable(path, exc))
        return False
    key = (snapshot.id, snapshot.version)
    other = seen.setdefault(key, path)
    if other != path:
        _print_issues(path, [PlaybookIssue(
            "version", f"{snapshot.id} v{snapshot.version} is also defined in {other}: "
                       "bump `version` when you change a playbook")])
        return False
    print(f"OK {path} ({snapshot.id} v{snapshot.version}, sha256 {snapshot.sha256[:12]})")
    return True


def validate(args: argparse.Namespace) -> int:
    """Exit 0 if the directory and every file are valid, 1 otherwise."""
    directory_path: Path = args.directory or get_settings().directory_file
    directory = _load_directory(directory_path)
    if directory is None:
        print(f"{directory_path}: the directory is invalid, so no playbook was checked",
              file=sys.stderr)
        return 1
    seen: dict[tuple[str, int], Path] = {}
    results = [_validate_file(path, directory.definition, seen) for path in args.files]
    failed = results.count(False)
    if failed:
        print(f"{failed} of {len(results)} playbook(s) invalid", file=sys.stderr)
        return 1
    return 0


def schema(args: argparse.Namespace) -> int:
    """The JSON Schema of a playbook, for editor completion (yaml-language-server)."""
    document = {"$schema": JSON_SCHEMA_DIALECT, **Playbook.model_json_schema()}
    print(json.dumps(document, indent=2))
    return 0


def graph(args: argparse.Namespace) -> int:
    """A Mermaid flowchart of the playbook's structure (the directory isn't needed)."""
    path: Path = args.file
    try:
        data = parse_yaml(path.read_bytes(), str(path))
        playbook = Playbook.model_validate(data)
    except PlaybookInvalid as exc:
        _print_issues(path, exc.issues)
        return 1
    except ValidationError as exc:
        _print_issues(path, issues_from_validation_error(exc))
        return 1
    except OSError as exc:
        _print_issues(path, _unreadable(path, exc))
        return 1
    print(mermaid(playbook), end="")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "playbook", help="validate, describe and draw playbooks",
        description="Validate playbooks against the directory, print their JSON Schema, "
                    "or draw one as a Mermaid flowchart.")
    commands = parser.add_subparsers(dest="playbook_command", required=True)

    check = commands.add_parser(
        "validate", help="check playbooks against the directory",
        description="Check each FILE and the directory. Prints `OK <file> (...)` or one line "
                    "per error as `<file>: <path>: <message>`; exits 1 if anything is invalid.")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument("--directory", type=Path, default=None, metavar="PATH",
                       help="directory YAML (default: CRISIS_DIRECTORY_FILE or "
                            "config/directory.yaml)")
    check.set_defaults(handler=validate)

    describe = commands.add_parser("schema", help="print the playbook JSON Schema")
    describe.set_defaults(handler=schema)

    draw = commands.add_parser("graph", help="print a Mermaid flowchart of a playbook")
    draw.add_argument("file", type=Path, metavar="FILE")
    draw.set_defaults(handler=graph)
