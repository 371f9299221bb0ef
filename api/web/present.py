"""Turning incidents, tasks and timeline entries into what people read: names, not ids;
sentences, not JSON; "in 12 min", not an ISO timestamp."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from domain.directory import Person
from domain.incident import NodeState, Task, TaskState, TimelineEntry
from domain.metrics import duration

SYSTEM_ACTORS = {"system": "The system", "playbook": "The playbook"}


class Names:
    """People's names for pages: `people` is the registry's index by id (`people_by_id`)."""

    def __init__(self, people: Mapping[str, Person]) -> None:
        self._people = people

    def __call__(self, person_id: str | None) -> str:
        if person_id is None:
            return "—"
        person = self._people.get(person_id)
        return person.name if person is not None else SYSTEM_ACTORS.get(person_id, person_id)

    def many(self, ids: Iterable[Any]) -> str:
        listed = [self(str(i)) for i in ids]
        return ", ".join(listed) if listed else "nobody"


def offset(at: datetime, since: datetime) -> str:
    """`+01:05` (hours:minutes after `since`), `+2d 03:10` past a day."""
    total = max(0, int((at - since).total_seconds()) // 60)
    days, rest = divmod(total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"+{days}d {hours:02d}:{minutes:02d}" if days else f"+{hours:02d}:{minutes:02d}"


def _target(label: str, names: Names) -> str:
    kind, _, value = label.partition(":")
    return names(value) if kind == "person" else f"the {value} {kind}"


def sentence(entry: TimelineEntry, names: Names, nodes: dict[str, str] | None = None) -> str:
    """One readable line; `nodes` maps approval node ids to their titles."""
    d = dict(entry.details)
    if nodes and d.get("node") in nodes:
        d["node"] = f"“{nodes[str(d['node'])]}”"
    who = names(entry.actor)
    kind = entry.kind
    if kind == "opened":
        return (f"{who} opened the incident “{d.get('title', '')}” at severity "
                f"{d.get('severity', '?')} with playbook {d.get('playbook_id', '?')} "
                f"v{d.get('playbook_version', '?')}")
    if kind == "report_added":
        return f"{who} added a report (now {d.get('reports', '?')}): {d.get('summary', '')}"
    if kind == "task_created":
        why = ""
        if d.get("replaces"):
            why = f", standing in for {names(str(d['replaces']))}"
        elif d.get("reason"):
            why = f" ({d['reason']})"
        role = f" as {d['role']}" if d.get("role") else ""
        return f"Asked {names(str(d.get('assignee')))}{role} to decide {d.get('node')}{why}"
    if kind == "notified":
        channels = ", ".join(d.get("channels") or []) or "no channel"
        return f"Notified {names(str(d.get('to')))} ({d.get('purpose', 'message')}) by {channels}"
    if kind == "reminder":
        return f"Reminded {names(str(d.get('to')))}"
    if kind == "notification_failed":
        return f"Could not notify {names(str(d.get('to')))}: {d.get('error', '')}"
    if kind == "decision":
        verb = "approved" if d.get("decision") == "approve" else "rejected"
        role = f" (as {d['role']})" if d.get("role") else ""
        comment = f": “{d['comment']}”" if d.get("comment") else ""
        return f"{who}{role} {verb} {d.get('node')}{comment}"
    if kind == "delegation":
        comment = f": “{d['comment']}”" if d.get("comment") else ""
        return f"{who} delegated {d.get('node')} to {names(str(d.get('to')))}{comment}"
    if kind == "escalation":
        reached = [_target(str(t), names) for t in [*(d.get("notify") or []),
                                                     *(d.get("add_approvers") or [])]]
        tier = f"tier {d.get('tier')}" + (f" ({d['name']})" if d.get("name") else "")
        missed = (f" (catching up {d['missed']} missed while the service was unavailable)"
                  if d.get("missed") else "")
        return (f"Escalated {d.get('node')} to {tier}: {', '.join(reached) or 'nobody'}, "
                f"waiting on {names.many(d.get('waiting_on') or [])}{missed}")
    if kind == "node_outcome":
        reason = f" ({d['reason']})" if d.get("reason") else ""
        return f"Approval {d.get('node')} ended {d.get('outcome')}{reason}"
    if kind in ("task_cancelled", "task_expired"):
        verb = "cancelled" if kind == "task_cancelled" else "expired"
        return f"The task of {names(str(d.get('assignee')))} in {d.get('node')} {verb}"
    if kind == "action_run":
        return f"Ran action {d.get('step')}: HTTP {d.get('status_code')}"
    if kind == "action_failed":
        return f"Action {d.get('step')} failed: {d.get('error', '')}"
    if kind == "action_sending":
        return f"Sending action {d.get('step')} (at most once, attempt {d.get('attempt')})"
    if kind == "action_outcome_unknown":
        return (f"Action {d.get('step')} may or may not have reached its receiver "
                f"({d.get('error', '')}); not sent again: a communicator must say whether "
                "it was sent")
    if kind == "action_outcome_resolved":
        verb = "was sent" if d.get("resolution") == "sent" else "must be sent again"
        comment = f": “{d['comment']}”" if d.get("comment") else ""
        return f"{who} said action {d.get('step')} {verb}{comment}"
    if kind == "catch_up":
        return (f"Caught up {d.get('purpose', '')} {d.get('step')}: one firing for "
                f"{d.get('missed')} missed while the service was unavailable")
    if kind == "status_update":
        return f"{who} posted an update: {d.get('message', '')}"
    if kind == "waited":
        return f"Waited {d.get('duration')} ({d.get('step')})"
    if kind == "branch_taken":
        return (f"Took branch “{d.get('case')}” of {d.get('step')} "
                f"({d.get('on')} = {d.get('value')})")
    if kind == "resolved":
        return f"{who} resolved the incident: {d.get('summary', '')}"
    return _control_sentence(kind, d, who) or f"{who}: {kind}"


def _control_sentence(kind: str, d: dict[str, object], who: str) -> str | None:
    """Drafts and crisis controls (library statements, paused posts, time off)."""
    if kind == "draft_submitted":
        library = (f", pre-approved library statement {d['library']} v{d.get('library_version')}"
                   if d.get("library") else "")
        return (f"{who} submitted draft v{d.get('version')} of {d.get('node')} "
                f"(sha256 {str(d.get('sha256', ''))[:12]}){library}")
    if kind == "posts_paused":
        return f"Scheduled posts paused ({d.get('step')}); they resume on resolution"
    if kind == "posts_kept_paused":
        verb = "asked to keep scheduled posts paused" if d.get("keep") else \
            "let scheduled posts resume on resolution"
        return f"{who} {verb}: {d.get('reason', '')}"
    if kind == "posts_resumed":
        return f"Scheduled posts resumed ({d.get('step')}): HTTP {d.get('status_code')}"
    if kind == "posts_resume_failed":
        return f"Resuming scheduled posts ({d.get('step')}) failed: {d.get('error', '')}"
    if kind == "posts_resume_skipped":
        return f"Scheduled posts stay paused, as {d.get('kept_by')} asked: {d.get('reason', '')}"
    if kind == "time_off_applied":
        return f"Time off revision {d.get('revision')} applies from now: {d.get('change', '')}"
    return None


def countdown(until: datetime | None, now: datetime) -> str:
    if until is None:
        return "—"
    seconds = (until - now).total_seconds()
    return f"in {duration(seconds)}" if seconds >= 0 else f"{duration(-seconds)} overdue"


def age(since: datetime, now: datetime) -> str:
    return duration((now - since).total_seconds())


def waiting_on(node: NodeState, tasks: list[Task], names: Names) -> str:
    return names.many(t.assignee for t in tasks
                      if t.node_id == node.step_id and t.state == TaskState.open)


def diff_lines(old: str | None, new: str | None) -> list[tuple[str, str]]:
    """Word-level changes from `old` to `new`, as (op, text): op is "same", "add" or "del"."""
    import difflib
    if not old or not new:
        return []
    a, b = old.split(" "), new.split(" ")
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b).get_opcodes():
        if op == "equal":
            out.append(("same", " ".join(a[i1:i2])))
        if op in ("delete", "replace"):
            out.append(("del", " ".join(a[i1:i2])))
        if op in ("insert", "replace"):
            out.append(("add", " ".join(b[j1:j2])))
    return out
