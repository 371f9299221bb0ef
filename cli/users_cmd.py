"""`crisis users issue-tokens`: API tokens for every directory person.

Plain tokens go to `--out` (default `.data/demo-tokens.json`, as
`{"users": [{"id", "name", "roles", "token"}]}`, `roles` being API access roles) and only
their sha256 hashes to the tokens file the API reads (`--hashes`, default
`Settings.tokens_file`). Tokens already in `--out` are kept, so running it again (every
`make run`) never invalidates a token someone copied.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypedDict

from core.config import ROOT, get_settings
from core.tokens import generate_token, hash_token, write_hashes, write_json_atomic
from domain.directory import AccessRole, Directory
from domain.loader import load_directory

DEFAULT_OUT = ROOT / ".data" / "demo-tokens.json"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("users", help="manage API users")
    actions = parser.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue-tokens", help="issue a token to every directory person")
    issue.add_argument("--out", type=Path, default=DEFAULT_OUT,
                       help="plain tokens JSON (default .data/demo-tokens.json)")
    issue.add_argument("--hashes", type=Path, default=None,
                       help="hashed tokens file the API reads (default: CRISIS_TOKENS_FILE)")
    issue.add_argument("--directory", type=Path, default=None,
                       help="directory YAML (default: CRISIS_DIRECTORY_FILE)")
    issue.add_argument("--quiet", action="store_true", help="don't print the table")
    issue.add_argument("--json", action="store_true",
                       help="print the users and their tokens as JSON (stdout only)")
    issue.set_defaults(handler=_issue)


def access_roles(access: list[AccessRole]) -> list[str]:
    """API roles as the API applies them: reporter always, then the rest in role order."""
    granted = {AccessRole.reporter, *access}
    return [role.value for role in AccessRole if role in granted]


def _existing(out: Path) -> dict[str, str]:
    if not out.exists():
        return {}
    data = json.loads(out.read_text())
    return {u["id"]: u["token"] for u in data.get("users", []) if u.get("token")}


class IssuedUser(TypedDict):
    id: str
    name: str
    roles: list[str]
    token: str


def issue_tokens(directory: Directory, out: Path, hashes: Path) -> list[IssuedUser]:
    """Write both files; return the users with their tokens."""
    known = _existing(out)
    users = [IssuedUser(id=p.id, name=p.name, roles=access_roles(p.access),
                        token=known.get(p.id) or generate_token()) for p in directory.people]
    write_json_atomic(out, {"users": users})
    write_hashes(hashes, {hash_token(u["token"]): u["id"] for u in users})
    return users


def _issue(args: argparse.Namespace) -> int:
    settings = get_settings()
    directory = load_directory(args.directory or settings.directory_file).definition
    users = issue_tokens(directory, args.out, args.hashes or settings.tokens_file)
    if args.json and not args.quiet:
        print(json.dumps({"users": users, "out": str(args.out)}, indent=2))
    elif not args.quiet:
        width = max(len(u["id"]) for u in users)
        print(f"{'user':<{width}}  {'roles':<38}  token")
        for user in users:
            print(f"{user['id']:<{width}}  {','.join(user['roles']):<38}  {user['token']}")
        print(f"\n{len(users)} tokens written to {args.out}")
    return 0
