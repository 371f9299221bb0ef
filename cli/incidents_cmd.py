"""`crisis incidents list|show|open|resolve`: incidents over the HTTP API.

Authenticates with `CRISIS_TOKEN`; the API is `--api-url` or `CRISIS_API_URL`
(cli/http_client.py). `--json` prints the API's answer as it came.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.http_client import add_client_options, call, print_json, print_page, print_table

SEVERITIES = ("low", "medium", "high", "critical")
COLUMNS = [("id", "id"), ("status", "status"), ("severity", "severity"),
           ("playbook", "playbook"), ("opened_at", "opened_at"), ("title", "title")]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "incidents", help="list, show, open and resolve incidents (HTTP API, CRISIS_TOKEN)")
    actions = parser.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="incidents, newest first")
    listing.add_argument("--status", choices=("open", "resolved"))
    listing.add_argument("--severity", choices=SEVERITIES)
    listing.add_argument("--playbook")
    listing.add_argument("--limit", type=int, default=50, help="default: %(default)s")
    add_client_options(listing)
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one incident: state, nodes, tasks")
    show.add_argument("incident_id")
    show.add_argument("--timeline", action="store_true", help="also print the timeline")
    add_client_options(show)
    show.set_defaults(handler=_show)

    opening = actions.add_parser("open", help="open an incident (or add a report by dedup key)")
    opening.add_argument("--title", required=True)
    opening.add_argument("--summary", required=True)
    opening.add_argument("--severity", required=True, choices=SEVERITIES)
    opening.add_argument("--playbook", required=True)
    opening.add_argument("--source-url")
    opening.add_argument("--dedup-key")
    add_client_options(opening)
    opening.set_defaults(handler=_open)

    resolve = actions.add_parser("resolve", help="resolve an incident")
    resolve.add_argument("incident_id")
    resolve.add_argument("--summary", required=True, help="what resolved it")
    add_client_options(resolve)
    resolve.set_defaults(handler=_resolve)


def _list(args: argparse.Namespace) -> int:
    return print_page(args, "/incidents", {
        "status": args.status, "severity": args.severity, "playbook": args.playbook,
        "limit": args.limit}, COLUMNS)


def _show(args: argparse.Namespace) -> int:
    detail = call(args, "GET", f"/incidents/{args.incident_id}")
    timeline = call(args, "GET", f"/incidents/{args.incident_id}/timeline") \
        if args.timeline else None
    if args.json:
        print_json(detail if timeline is None else {**detail, "timeline": timeline})
        return 0
    incident = detail["incident"]
    print(f"{incident['id']}  {incident['status']}  {incident['severity']}  "
          f"{incident['title']}")
    print(f"  playbook  {incident['playbook']['id']} v{incident['playbook']['version']}")
    print(f"  opened    {incident['opened_at']} by {incident['opened_by']}")
    if incident.get("resolved_at"):
        print(f"  resolved  {incident['resolved_at']} by {incident['resolved_by']}: "
              f"{incident.get('resolution_summary') or ''}")
    print("\nnodes:")
    print_table(detail["nodes"], [("step", "step_id"), ("outcome", "outcome")])
    print("\ntasks:")
    print_table(detail["tasks"], [("id", "id"), ("assignee", "assignee"), ("role", "role"),
                                  ("state", "state"), ("decided_by", "decided_by")])
    if timeline is not None:
        print("\ntimeline:")
        print_table(timeline["entries"], [("seq", "seq"), ("at", "at"), ("kind", "kind"),
                                          ("actor", "actor")])
    return 0


def _open(args: argparse.Namespace) -> int:
    body = {"title": args.title, "summary": args.summary, "severity": args.severity,
            "playbook": args.playbook}
    if args.source_url:
        body["source_url"] = args.source_url
    if args.dedup_key:
        body["dedup_key"] = args.dedup_key
    opened = call(args, "POST", "/incidents", body=body)
    if args.json:
        print_json(opened)
    else:
        what = "opened" if opened.get("created", True) else "report added to open incident"
        print(f"{opened['id']}  {what}  (playbook {opened['playbook']['id']} "
              f"v{opened['playbook']['version']})")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    resolved = call(args, "POST", f"/incidents/{args.incident_id}/resolve",
                    body={"summary": args.summary})
    if args.json:
        print_json(resolved)
    else:
        incident = resolved.get("incident", resolved)
        print(f"{incident.get('id', args.incident_id)}  {incident.get('status', 'resolved')}")
    return 0
