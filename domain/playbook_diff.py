"""What changed between two versions of a playbook or of the directory (pure).

The text diff is a unified diff of the stored bytes. The summary names what a reviewer
cares about: steps added, removed or changed (by step id), each approval node's quorum
rule, and its escalation tiers; for the directory, people, roles and rosters.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.directory import Directory
from domain.durations import format_duration
from domain.loader import parse_yaml
from domain.playbook import Approval, EscalationTier, Playbook, QuorumK, Step

MAX_DIFF_CHARS = 200_000


class StepChange(BaseModel):
    step: str
    kind: str
    change: str  # added, removed, changed
    fields: list[str] = Field(default_factory=list)  # top-level keys of the step that differ


class RuleChange(BaseModel):
    step: str
    before: str | None
    after: str | None


class TierChange(BaseModel):
    step: str
    before: list[str]
    after: list[str]


class EntryChange(BaseModel):
    kind: str  # person, role, roster, playbook (a top-level field)
    id: str
    change: str  # added, removed, changed
    fields: list[str] = Field(default_factory=list)


class VersionDiff(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "subject": "playbook:viral-complaint", "from_version": 1, "to_version": 2,
        "from_sha256": "5e8f...", "to_sha256": "9f86...",
        "unified": "--- v1\n+++ v2\n@@ -20 +20 @@\n-    quorum: {k: 2}\n+    quorum: {k: 1}\n",
        "steps": [{"step": "holding-statement", "kind": "approval", "change": "changed",
                   "fields": ["approval.quorum"]}],
        "quorum_rules": [{"step": "holding-statement", "before": "2 approvals",
                          "after": "1 approvals"}],
        "tiers": [], "entries": [],
        "summary": ["step holding-statement (approval) changed: approval.quorum",
                    "quorum rule of holding-statement: 2 approvals -> 1 approvals"]}]})

    subject: str
    from_version: int
    to_version: int
    from_sha256: str
    to_sha256: str
    unified: str
    steps: list[StepChange] = Field(default_factory=list)
    quorum_rules: list[RuleChange] = Field(default_factory=list)
    tiers: list[TierChange] = Field(default_factory=list)
    entries: list[EntryChange] = Field(default_factory=list)
    summary: list[str] = Field(default_factory=list)  # one line per change, for people


def unified(before: bytes, after: bytes, from_label: str, to_label: str) -> str:
    lines = difflib.unified_diff(
        before.decode("utf-8", "replace").splitlines(keepends=True),
        after.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile=from_label, tofile=to_label)
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return text if len(text) <= MAX_DIFF_CHARS else text[:MAX_DIFF_CHARS] + "... (truncated)\n"


def quorum_rule(approval: Approval) -> str:
    """The node's rule as a reviewer reads it: `1 of legal AND 2 of comms-lead; veto: legal`."""
    if approval.require is not None:
        text = " AND ".join(f"{r.min} of {r.role}" for r in approval.require)
    elif isinstance(approval.quorum, QuorumK):
        text = f"{approval.quorum.k} approvals"
    else:
        text = f"{approval.quorum or 'any'} approvers"
    if approval.veto:
        text += "; veto: " + ", ".join(approval.veto)
    if approval.deadline is not None:
        text += f"; deadline {format_duration(approval.deadline)}"
    return text


def tier_text(tier: EscalationTier) -> str:
    parts = [f"after {format_duration(tier.after)}"]
    if tier.name:
        parts.insert(0, repr(tier.name))
    if tier.notify:
        parts.append("notify " + ", ".join(t.label() for t in tier.notify))
    if tier.add_approvers:
        parts.append("add approvers " + ", ".join(t.label() for t in tier.add_approvers))
    if tier.repeat:
        every = format_duration(tier.every) if tier.every else "?"
        parts.append(f"repeat {tier.repeat}x every {every}")
    return " ".join(parts)


def _steps(playbook: Playbook) -> dict[str, Step]:
    return {step.id: step for _, step in playbook.walk()}


def _own_fields(step: Step) -> dict[str, Any]:
    """The step without its nested steps (those are compared on their own)."""
    data: dict[str, Any] = step.model_dump(mode="json")
    kind = data.get(step.kind)
    if isinstance(kind, dict):
        for key in ("on_approved", "on_rejected", "cases", "default", "branches", "steps"):
            if key in kind:
                nested = kind[key]
                kind[key] = ([s["id"] for s in nested] if isinstance(nested, list)
                             and all(isinstance(s, dict) for s in nested) else "(nested)")
    return data


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            if isinstance(before.get(key), dict) and isinstance(after.get(key), dict):
                keys += [f"{key}.{k}" for k in _changed_keys(before[key], after[key])]
            else:
                keys.append(key)
    return keys


def parse_playbook(raw: bytes) -> Playbook:
    return Playbook.model_validate(parse_yaml(raw, "version"))


def playbook_diff(subject: str, numbers: tuple[int, int], shas: tuple[str, str],
                  before_raw: bytes, after_raw: bytes) -> VersionDiff:
    before, after = parse_playbook(before_raw), parse_playbook(after_raw)
    diff = VersionDiff(subject=subject, from_version=numbers[0], to_version=numbers[1],
                       from_sha256=shas[0], to_sha256=shas[1],
                       unified=unified(before_raw, after_raw, f"v{numbers[0]}", f"v{numbers[1]}"))
    top_before = before.model_dump(mode="json", exclude={"steps"})
    top_after = after.model_dump(mode="json", exclude={"steps"})
    for key in _changed_keys(top_before, top_after):
        diff.entries.append(EntryChange(kind="playbook", id=key, change="changed"))
        diff.summary.append(f"{key}: {_short(_get(top_before, key))} -> "
                            f"{_short(_get(top_after, key))}")
    old, new = _steps(before), _steps(after)
    for step_id in [*old, *(s for s in new if s not in old)]:
        a, b = old.get(step_id), new.get(step_id)
        if a is None and b is not None:
            diff.steps.append(StepChange(step=step_id, kind=b.kind, change="added"))
            diff.summary.append(f"step {step_id} ({b.kind}) added")
        elif b is None and a is not None:
            diff.steps.append(StepChange(step=step_id, kind=a.kind, change="removed"))
            diff.summary.append(f"step {step_id} ({a.kind}) removed")
        elif a is not None and b is not None:
            fields = _changed_keys(_own_fields(a), _own_fields(b))
            if fields:
                diff.steps.append(StepChange(step=step_id, kind=b.kind, change="changed",
                                             fields=fields))
                diff.summary.append(f"step {step_id} ({b.kind}) changed: {', '.join(fields)}")
        rule_a = quorum_rule(a.approval) if a is not None and a.approval else None
        rule_b = quorum_rule(b.approval) if b is not None and b.approval else None
        if rule_a != rule_b:
            diff.quorum_rules.append(RuleChange(step=step_id, before=rule_a, after=rule_b))
            diff.summary.append(f"quorum rule of {step_id}: {rule_a or '(none)'} -> "
                                f"{rule_b or '(none)'}")
        tiers_a = [tier_text(t) for t in a.approval.escalation] if a and a.approval else []
        tiers_b = [tier_text(t) for t in b.approval.escalation] if b and b.approval else []
        if tiers_a != tiers_b:
            diff.tiers.append(TierChange(step=step_id, before=tiers_a, after=tiers_b))
            diff.summary.append(f"escalation tiers of {step_id}: {len(tiers_a)} -> "
                                f"{len(tiers_b)} ({'; '.join(tiers_b) or 'none'})")
    return diff


def directory_diff(numbers: tuple[int, int], shas: tuple[str, str], before_raw: bytes,
                   after_raw: bytes) -> VersionDiff:
    before = Directory.model_validate(parse_yaml(before_raw, "version"))
    after = Directory.model_validate(parse_yaml(after_raw, "version"))
    diff = VersionDiff(subject="directory", from_version=numbers[0], to_version=numbers[1],
                       from_sha256=shas[0], to_sha256=shas[1],
                       unified=unified(before_raw, after_raw, f"v{numbers[0]}", f"v{numbers[1]}"))
    for kind, a_items, b_items in (("person", before.people, after.people),
                                   ("role", before.roles, after.roles),
                                   ("roster", before.rosters, after.rosters)):
        a_map = {i.id: i.model_dump(mode="json") for i in a_items}
        b_map = {i.id: i.model_dump(mode="json") for i in b_items}
        for item_id in [*a_map, *(k for k in b_map if k not in a_map)]:
            if item_id not in b_map:
                diff.entries.append(EntryChange(kind=kind, id=item_id, change="removed"))
                diff.summary.append(f"{kind} {item_id} removed")
            elif item_id not in a_map:
                diff.entries.append(EntryChange(kind=kind, id=item_id, change="added"))
                diff.summary.append(f"{kind} {item_id} added")
            else:
                fields = _changed_keys(a_map[item_id], b_map[item_id])
                if fields:
                    diff.entries.append(EntryChange(kind=kind, id=item_id, change="changed",
                                                    fields=fields))
                    diff.summary.append(f"{kind} {item_id} changed: {', '.join(fields)}")
    return diff


def _get(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
