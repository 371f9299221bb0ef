"""`crisis tasks list|decide|delegate`: approval tasks over the HTTP API.

Authenticates with `CRISIS_TOKEN` (the token says who you are: `list` is your inbox);
the API is `--api-url` or `CRISIS_API_URL`. `--json` prints the API's answer as it came.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.http_client import add_client_options, call, print_json, print_page

COLUMNS = [("id", "id"), ("state", "state"), ("assignee", "assignee"), ("role", "role"),
           ("deadline", "deadline"), ("title", "title")]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "tasks", help="list, decide and delegate approval tasks (HTTP API, CRISIS_TOKEN)")
    actions = parser.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="your tasks (inbox), newest first")
    listing.add_argument("--state", choices=("open", "approved", "rejected", "delegated",
                                             "expired", "cancelled"))
    listing.add_argument("--incident", dest="incident_id",
                         help="every task of one incident (communicators, leaders, admins)")
    listing.add_argument("--assignee", help="someone else's tasks (leaders and admins)")
    listing.add_argument("--limit", type=int, default=50, help="default: %(default)s")
    add_client_options(listing)
    listing.set_defaults(handler=_list)

    decide = actions.add_parser("decide", help="approve or reject your task")
    decide.add_argument("task_id")
    decide.add_argument("decision", choices=("approve", "reject"))
    decide.add_argument("--comment", default="")
    add_client_options(decide)
    decide.set_defaults(handler=_decide)

    delegate = actions.add_parser("delegate", help="hand your task to someone else")
    delegate.add_argument("task_id")
    delegate.add_argument("--to", required=True, help="person id of the delegate")
    delegate.add_argument("--comment", default="")
    add_client_options(delegate)
    delegate.set_defaults(handler=_delegate)


def _list(args: argparse.Namespace) -> int:
    return print_page(args, "/tasks", {
        "state": args.state, "incident_id": args.incident_id, "assignee": args.assignee,
        "limit": args.limit}, COLUMNS)


def _decide(args: argparse.Namespace) -> int:
    decided = call(args, "POST", f"/tasks/{args.task_id}/decision",
                   body={"decision": args.decision, "comment": args.comment})
    if args.json:
        print_json(decided)
    else:
        task, node = decided["task"], decided["node"]
        print(f"{task['id']}  {task['state']}  (node {node['step_id']}: {node['outcome']})")
    return 0


def _delegate(args: argparse.Namespace) -> int:
    delegated = call(args, "POST", f"/tasks/{args.task_id}/delegate",
                     body={"to": args.to, "comment": args.comment})
    if args.json:
        print_json(delegated)
    else:
        new = delegated["new_task"]
        print(f"{delegated['task']['id']}  delegated to {new['assignee']} as {new['id']}")
    return 0
