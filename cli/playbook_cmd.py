"""`crisis playbook`: validate playbooks against the directory, print the JSON Schema, draw
a playbook as a Mermaid flowchart, and take part in the reviewed version store.

    crisis playbook validate playbooks/*.yaml [--directory config/directory.yaml]
    crisis playbook schema > playbook.schema.json
    crisis playbook graph playbooks/viral-complaint.yaml

    crisis playbook publish playbooks/viral-complaint.yaml --note "..."   # propose (API)
    crisis playbook versions viral-complaint                              # history
    crisis playbook diff viral-complaint 1 2
    crisis playbook approve viral-complaint 2 [--comment ...]             # or reject
    crisis playbook rollback viral-complaint 1
    crisis playbook seed                                                  # first start

SUBJECT is a playbook id, or `directory` for the directory. The review commands call the
HTTP API (`--api-url`, default CRISIS_PUBLIC_URL) with a bearer token (`--token`, default
the CRISIS_TOKEN variable), so the API's role checks apply; `seed` talks to Temporal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
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


# ---- the version store, through the API -------------------------------------------------

DIRECTORY_SUBJECT = "directory"
Call = Callable[[argparse.Namespace, httpx.AsyncClient], Awaitable[int]]


def _base(subject: str) -> str:
    return "/directory" if subject == DIRECTORY_SUBJECT else f"/playbooks/{subject}"


def _fail(response: httpx.Response) -> int:
    try:
        body = response.json()
        print(f"refused ({response.status_code} {body.get('error')}): {body.get('detail')}",
              file=sys.stderr)
        for field in body.get("errors") or []:
            print(f"  {field['path']}: {field['message']}", file=sys.stderr)
    except ValueError:
        print(f"refused ({response.status_code}): {response.text[:500]}", file=sys.stderr)
    return 1


def _version_line(version: dict[str, Any]) -> str:
    subject = version["subject"].removeprefix("playbook:")
    review = version.get("review") or {}
    line = (f"{subject} v{version['number']} {version['status']} (sha256 "
            f"{version['sha256'][:12]}, by {version['author']}, {version['created_at'][:19]})")
    if version.get("bootstrap"):
        line += " bootstrap: shipped, no review"
    if version.get("rollback_of"):
        line += f" rollback of v{version['rollback_of']}"
    if version.get("note"):
        line += f" - {version['note']}"
    if review.get("reason"):
        line += f" [{review['reason']}]"
    return line


def _print_review(version: dict[str, Any]) -> None:
    print(_version_line(version))
    review = version.get("review") or {}
    dry_run = review.get("dry_run")
    if version.get("policy"):
        print(f"  review: {version['policy']}; reviewers: "
              f"{', '.join(review.get('eligible') or []) or '-'}")
    if dry_run is None:
        if version["status"] == "proposed":
            print("  dry run: running")
        return
    print(f"  dry run: {'passed' if dry_run['passed'] else 'FAILED'} ({dry_run.get('note')})")
    for problem in dry_run.get("problems") or []:
        print(f"    {problem}")
    for scenario in dry_run.get("scenarios") or []:
        state = "ok" if scenario["passed"] else f"FAILED: {scenario['error']}"
        print(f"    {scenario['scenario']} ({scenario['playbook']}): {state}")
    for decision in review.get("decisions") or []:
        print(f"  {decision['decision']} by {decision['actor']}"
              + (f": {decision['comment']}" if decision.get("comment") else ""))


async def _await_dry_run(http: httpx.AsyncClient, path: str, within: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        response = await http.get(path)
        response.raise_for_status()
        version: dict[str, Any] = response.json()
        review = version.get("review") or {}
        finished = review.get("dry_run") is not None and (
            review["dry_run"]["passed"] or version["status"] != "proposed")
        if finished or version["status"] != "proposed" or loop.time() > deadline:
            return version
        await asyncio.sleep(0.5)


async def _publish(args: argparse.Namespace, http: httpx.AsyncClient) -> int:
    path: Path = args.file
    try:
        raw = await asyncio.to_thread(path.read_bytes)
        data = parse_yaml(raw, str(path))
    except OSError as exc:
        _print_issues(path, _unreadable(path, exc))
        return 1
    except PlaybookInvalid as exc:
        _print_issues(path, exc.issues)
        return 1
    is_directory = isinstance(data, dict) and "people" in data and "steps" not in data
    target = "/directory/versions" if is_directory else "/playbooks"
    response = await http.post(target, content=raw, params={"note": args.note} if args.note
                               else None, headers={"Content-Type": "application/yaml"})
    if response.status_code not in (200, 202):
        return _fail(response)
    version: dict[str, Any] = response.json()
    subject = DIRECTORY_SUBJECT if is_directory else version["subject"].removeprefix(
        "playbook:")
    if response.status_code == 200:
        print(f"unchanged: {path} is already {_version_line(version)}")
        return 0
    print(f"proposed {path}")
    if args.no_wait:
        print(_version_line(version))
        return 0
    version = await _await_dry_run(http, f"{_base(subject)}/versions/{version['number']}",
                                   args.wait_seconds)
    _print_review(version)
    dry_run = (version.get("review") or {}).get("dry_run")
    if dry_run is not None and not dry_run["passed"]:
        return 1
    if version["status"] == "proposed":
        print(f"  next: two reviewers run `crisis playbook approve {subject} "
              f"{version['number']}`")
    return 0


async def _decide(args: argparse.Namespace, http: httpx.AsyncClient) -> int:
    verdict = "approve" if args.playbook_command == "approve" else "reject"
    response = await http.post(f"{_base(args.subject)}/versions/{args.number}/{verdict}",
                               json={"comment": args.comment})
    if response.status_code != 200:
        return _fail(response)
    _print_review(response.json())
    return 0


async def _versions(args: argparse.Namespace, http: httpx.AsyncClient) -> int:
    path = f"{_base(args.subject)}/versions"
    if args.number is not None:
        response = await http.get(f"{path}/{args.number}")
        if response.status_code != 200:
            return _fail(response)
        version = response.json()
        if args.text:
            print(version["yaml"], end="")
        else:
            _print_review(version)
        return 0
    response = await http.get(path)
    if response.status_code != 200:
        return _fail(response)
    for version in response.json()["items"]:
        print(_version_line(version))
    return 0


async def _diff(args: argparse.Namespace, http: httpx.AsyncClient) -> int:
    path = "/directory/diff" if args.subject == DIRECTORY_SUBJECT else \
        f"/playbooks/{args.subject}/diff"
    response = await http.get(path, params={"from": args.a, "to": args.b})
    if response.status_code != 200:
        return _fail(response)
    diff = response.json()
    for line in diff["summary"] or ["no change besides the text"]:
        print(f"* {line}")
    print(diff["unified"], end="")
    return 0


async def _rollback(args: argparse.Namespace, http: httpx.AsyncClient) -> int:
    response = await http.post(f"{_base(args.subject)}/rollback",
                               json={"to": args.number, "note": args.note})
    if response.status_code != 202:
        return _fail(response)
    version = response.json()
    print(f"proposed {_version_line(version)}; it needs the same review as any change")
    return 0


def api_client(args: argparse.Namespace) -> httpx.AsyncClient:
    token = args.token or os.environ.get("CRISIS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=args.api_url or get_settings().public_url,
                             headers=headers, timeout=60)


def _through_api(call: Call) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        if not (args.token or os.environ.get("CRISIS_TOKEN")):
            print("give a token: --token or CRISIS_TOKEN (from `crisis users issue-tokens`)",
                  file=sys.stderr)
            return 2

        async def run() -> int:
            async with api_client(args) as http:
                try:
                    return await call(args, http)
                except httpx.HTTPError as exc:
                    print(f"cannot reach the API at {http.base_url}: {exc}", file=sys.stderr)
                    return 1
        return asyncio.run(run())
    return handler


def seed(args: argparse.Namespace) -> int:
    """Publish the shipped playbooks and directory as first versions (talks to Temporal)."""
    from core.policy_store import seed_shipped_versions
    from worker.main import connect

    async def run() -> list[str]:
        return await seed_shipped_versions(await connect(get_settings()), get_settings())
    for line in asyncio.run(run()):
        print(line)
    return 0


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", default=None, help="default: CRISIS_PUBLIC_URL")
    parser.add_argument("--token", default=None, help="bearer token (default: CRISIS_TOKEN)")


def _register_store(commands: Any) -> None:
    subject_help = "a playbook id, or `directory`"
    publish = commands.add_parser(
        "publish", help="propose a playbook (or directory) file as a new version",
        description="Propose FILE (a playbook, or the directory) through the API. The review "
                    "starts with a dry run against the scenario files; this waits for it "
                    "and prints its result (exit 1 if refused or if the dry run failed).")
    publish.add_argument("file", type=Path, metavar="FILE")
    publish.add_argument("--note", default="", help="the change note")
    publish.add_argument("--no-wait", action="store_true", help="don't wait for the dry run")
    publish.add_argument("--wait-seconds", type=float, default=180.0)
    _api_options(publish)
    publish.set_defaults(handler=_through_api(_publish))

    for name, text in (("approve", "approve a proposed version"),
                       ("reject", "reject a proposed version (its author: withdraw it)")):
        decide = commands.add_parser(name, help=text)
        decide.add_argument("subject", metavar="SUBJECT", help=subject_help)
        decide.add_argument("number", type=int, metavar="N")
        decide.add_argument("--comment", default="")
        _api_options(decide)
        decide.set_defaults(handler=_through_api(_decide))

    versions = commands.add_parser("versions", help="list the versions (or show one)")
    versions.add_argument("subject", metavar="SUBJECT", help=subject_help)
    versions.add_argument("number", type=int, nargs="?", metavar="N")
    versions.add_argument("--text", action="store_true", help="print version N's exact text")
    _api_options(versions)
    versions.set_defaults(handler=_through_api(_versions))

    diff = commands.add_parser("diff", help="what changed between two versions")
    diff.add_argument("subject", metavar="SUBJECT", help=subject_help)
    diff.add_argument("a", type=int, metavar="FROM")
    diff.add_argument("b", type=int, metavar="TO")
    _api_options(diff)
    diff.set_defaults(handler=_through_api(_diff))

    rollback = commands.add_parser(
        "rollback", help="propose an earlier version's text again, for the same review")
    rollback.add_argument("subject", metavar="SUBJECT", help=subject_help)
    rollback.add_argument("number", type=int, metavar="N")
    rollback.add_argument("--note", default="")
    _api_options(rollback)
    rollback.set_defaults(handler=_through_api(_rollback))

    seeder = commands.add_parser(
        "seed", help="publish the shipped playbooks and directory as their first versions",
        description="Bootstrap: the first version of each playbook and of the directory is "
                    "active without review. Does nothing for subjects that have versions.")
    seeder.set_defaults(handler=seed)


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

    _register_store(commands)
