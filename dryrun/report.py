"""The result of a dry run, and its rendering as a readable table in virtual time.

Offsets are measured from the moment the incident opened and shown as `+HH:MM` (minutes
rounded down), so `+00:15  escalation` reads "fifteen minutes in, the node escalated".
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from domain.durations import format_duration
from domain.incident import IncidentView, PlaybookRef, TimelineEntry
from dryrun.activities import SimulatedAction, SimulatedMessage

_GROUPED = {"notified", "reminder", "task_created", "task_cancelled", "task_expired"}


class ScenarioNote(BaseModel):
    """What one scenario event did (or why it found nothing to do)."""

    at: datetime
    event: str
    result: str
    applied: bool


class DryRunReport(BaseModel):
    playbook: PlaybookRef
    scenario: str
    origin: datetime  # when the incident opened, in virtual time
    start_zone: str = "UTC"  # the scenario's time zone, for showing the start
    ended_at: datetime
    until: timedelta
    resolved: bool
    timeline: list[TimelineEntry]
    view: IncidentView
    notes: list[ScenarioNote] = Field(default_factory=list)
    messages: list[SimulatedMessage] = Field(default_factory=list)
    actions: list[SimulatedAction] = Field(default_factory=list)

    def offset(self, at: datetime) -> str:
        return format_offset(at - self.origin)

    def channel_counts(self) -> dict[str, int]:
        return dict(Counter(c for m in self.messages for c in m.channels))

    def kind_counts(self) -> dict[str, int]:
        return dict(Counter(m.kind for m in self.messages))


def format_offset(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    return f"+{minutes // 60:02d}:{minutes % 60:02d}"


def _join(values: Any) -> str:
    if isinstance(values, list):
        return ", ".join(str(v) for v in values) or "nobody"
    return str(values)


def _one(entry: TimelineEntry) -> str:
    """The part of a grouped line that belongs to one entry."""
    d = entry.details
    if entry.kind == "task_created":
        via = f"via {d.get('via')}" + (f" for {d['replaces']}" if d.get("replaces") else "")
        return f"{d.get('assignee')} ({d.get('role') or '-'}, {via})"
    if entry.kind in ("notified", "reminder"):
        return str(d.get("to")) + (f" (for {d['replaces']})" if d.get("replaces") else "")
    return str(d.get("assignee"))


def _group_key(entry: TimelineEntry, origin: datetime) -> tuple[Any, ...]:
    d = entry.details
    return (entry.kind, format_offset(entry.at - origin), d.get("node") or d.get("step"),
            d.get("purpose"), tuple(d.get("channels") or ()))


def _group_text(entries: list[TimelineEntry]) -> str:
    first = entries[0]
    d = first.details
    where = d.get("node") or d.get("step")
    people = ", ".join(_one(e) for e in entries)
    if first.kind in ("notified", "reminder"):
        return f"{where} [{d.get('purpose')}] to {people} on {_join(d.get('channels'))}"
    return f"{where}: {people}"


def describe(entry: TimelineEntry) -> str:
    """One line for a timeline entry that is not grouped."""
    d = entry.details
    kind = entry.kind
    if kind == "opened":
        return (f"'{d.get('title')}' ({d.get('severity')}) by {entry.actor}, playbook "
                f"{d.get('playbook_id')} v{d.get('playbook_version')}")
    if kind == "escalation":
        text = f"{d.get('node')} '{d.get('name')}' (escalation {d.get('tier')})"
        if d.get("notify"):
            text += f": notify {_join(d['notify'])}"
        if d.get("add_approvers"):
            text += f"; add approvers {_join(d['add_approvers'])}"
        return text + f"; waiting on {_join(d.get('waiting_on', []))}"
    if kind == "decision":
        return (f"{entry.actor} ({d.get('role') or '-'}) {d.get('decision')}s {d.get('node')}"
                + (f": {d['comment']}" if d.get("comment") else ""))
    if kind == "delegation":
        return f"{d.get('node')}: {d.get('from')} delegates to {d.get('to')}"
    if kind == "node_outcome":
        return f"{d.get('node')} {str(d.get('outcome')).upper()} ({d.get('reason', '')})"
    if kind == "action_run":
        return f"{d.get('step')} {d.get('url')} (simulated, not sent)"
    if kind == "notification_failed":
        return f"{d.get('step')} to {d.get('to')}: {d.get('error')}"
    if kind in ("status_update", "resolved"):
        return f"{entry.actor}: {d.get('message') or d.get('summary')}"
    return ", ".join(f"{k}={_join(v)}" for k, v in d.items())


def timeline_lines(report: DryRunReport) -> list[str]:
    """`+HH:MM  kind  text`, with runs of similar entries (same minute) on one line."""
    lines: list[str] = []
    entries = report.timeline
    index = 0
    while index < len(entries):
        entry = entries[index]
        if entry.kind in _GROUPED:
            key = _group_key(entry, report.origin)
            end = index + 1
            while end < len(entries) and _group_key(entries[end], report.origin) == key:
                end += 1
            text = _group_text(entries[index:end])
            index = end
        else:
            text = describe(entry)
            index += 1
        lines.append(f"{report.offset(entry.at)}  {entry.kind:<17} {text}")
    return lines


def render(report: DryRunReport) -> str:
    pb = report.playbook
    try:
        start = report.origin.astimezone(ZoneInfo(report.start_zone))
    except (ZoneInfoNotFoundError, ValueError):
        start = report.origin
    ran = format_offset(report.ended_at - report.origin)
    status = "resolved" if report.resolved else f"still open after {ran}"
    out = [
        f"DRY RUN of {pb.id} v{pb.version} (sha256 {pb.sha256[:12]}) with {report.scenario}",
        f"virtual start {start:%a %Y-%m-%d %H:%M %Z}, until "
        f"{format_duration(report.until)}; incident {status}",
        f"nothing was delivered: {len(report.messages)} message(s) and "
        f"{len(report.actions)} action call(s) were simulated",
        "",
        "TIMELINE (virtual time since the incident opened)",
        *timeline_lines(report),
        "",
        "SCENARIO EVENTS",
        *[f"{report.offset(n.at)}  {n.event}: {n.result}" for n in report.notes],
        "",
        "APPROVAL NODES",
    ]
    for node in report.view.nodes:
        ended = report.offset(node.ended_at) if node.ended_at else "-"
        out.append(f"  {node.step_id}: {node.outcome} at {ended}  [{node.policy}]")
        for task in (t for t in report.view.tasks if t.node_id == node.step_id):
            decided = f" at {report.offset(task.decided_at)}" if task.decided_at else ""
            out.append(f"    {task.assignee:<14} {task.role or '-':<12} {task.state}{decided}")
    if not report.view.nodes:
        out.append("  (none reached)")
    out += ["", "WOULD HAVE SENT (nothing was)"]
    channels = ", ".join(f"{c} {n}" for c, n in sorted(report.channel_counts().items()))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.kind_counts().items()))
    out.append(f"  messages: {len(report.messages)} (by channel: {channels or 'none'}; "
               f"by kind: {kinds or 'none'})")
    if report.actions:
        for action in report.actions:
            out.append(f"  {report.offset(action.at)}  action {action.step_id}: "
                       f"{action.method} {action.url} {json.dumps(action.payload)}")
    else:
        out.append("  action calls: none")
    return "\n".join(out) + "\n"
