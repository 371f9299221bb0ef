"""Playbook validation that helps an admin: every error carries its path in the file.

Two passes: pydantic checks structure (unknown keys, types, durations); then
`check_references` checks what the schema can't see alone: people, roles and rosters that
the directory doesn't know, duplicate or unknown step ids, template placeholders, and
quorums that can't be met by the people who could vote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from domain.directory import Directory, Target
from domain.durations import format_duration
from domain.playbook import Approval, Defaults, Playbook, Severity, Step
from domain.quorum import Outcome
from domain.templates import check_placeholder, did_you_mean, placeholders, unsupported


@dataclass(frozen=True)
class PlaybookIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class PlaybookInvalid(ValueError):
    """A playbook that failed validation; `issues` lists every problem with its path."""

    def __init__(self, issues: list[PlaybookIssue], source: str = "playbook") -> None:
        self.issues = issues
        self.source = source
        super().__init__(f"{source}: " + "; ".join(str(i) for i in issues))


_UNION_TAGS = ("function-", "tagged-union", "literal[", "QuorumK")


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and part.startswith(_UNION_TAGS)


def format_loc(loc: Iterable[Any]) -> str:
    """('steps', 2, 'approval', 'require', 0, 'min') -> steps[2].approval.require[0].min"""
    parts = list(loc)
    out = ""
    for index, part in enumerate(parts):
        is_key = index + 1 < len(parts) and parts[index + 1] == "[key]"
        if part == "[key]" or _is_union_tag(part):
            continue  # pydantic's internal validator names are noise to an admin
        if isinstance(part, int) and not isinstance(part, bool) and not is_key:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"


def _union_base(loc: tuple[Any, ...]) -> str | None:
    """The path of the field a union error belongs to (None if not from a union member)."""
    for index, part in enumerate(loc):
        if _is_union_tag(part):
            return format_loc(loc[:index])
    return None


def issues_from_validation_error(error: ValidationError) -> list[PlaybookIssue]:
    items = error.errors(include_url=False)
    # A union field (e.g. `quorum: all|any|{k: N}`) reports one error per member. When a
    # member got further (an error inside `{k: N}`), the admin chose that member: keep only
    # its errors, not "Input should be 'all' or 'any'".
    deeper = {base for item in items
              if (base := _union_base(item["loc"])) is not None
              and format_loc(item["loc"]) != base}
    issues: list[PlaybookIssue] = []
    for item in items:
        path = format_loc(item["loc"])
        base = _union_base(item["loc"])
        if base is not None and base in deeper and path == base:
            continue
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["loc"] and item["loc"][-1] == "[key]":
            message = f"keys must be text: quote {item['input']!r} as \"{item['input']}\""
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        issue = PlaybookIssue(path, message)
        if issue not in issues:
            issues.append(issue)
    return issues


def _check_targets(
    path: str, targets: list[Target], directory: Directory, issues: list[PlaybookIssue]
) -> None:
    role_ids = {r.id for r in directory.roles} | {r for p in directory.people for r in p.roles}
    roster_ids = {r.id for r in directory.rosters}
    for index, target in enumerate(targets):
        here = f"{path}[{index}]"
        if target.person is not None and not directory.has_person(target.person):
            issues.append(PlaybookIssue(
                f"{here}.person", f"unknown person {target.person!r}"
                + did_you_mean(target.person, (p.id for p in directory.people))))
        if target.role is not None:
            if target.role not in role_ids:
                issues.append(PlaybookIssue(
                    f"{here}.role", f"unknown role {target.role!r}"
                    + did_you_mean(target.role, role_ids)))
            elif not directory.members_of(target.role):
                issues.append(PlaybookIssue(f"{here}.role", f"role {target.role!r} has no members"))
        if target.roster is not None and target.roster not in roster_ids:
            issues.append(PlaybookIssue(
                f"{here}.roster", f"unknown roster {target.roster!r}"
                + did_you_mean(target.roster, roster_ids)))


def possible_voters(approval: Approval, directory: Directory) -> dict[str | None, set[str]]:
    """People who could vote per counted role (None: all of them), counting approvers and
    every escalation tier's added approvers."""
    voters: dict[str | None, set[str]] = {None: set()}
    added = [t for tier in approval.escalation for t in tier.add_approvers]
    targets = list(approval.approvers) + added
    for target in targets:
        if target.person is not None and directory.has_person(target.person):
            person = directory.person(target.person)
            voters[None].add(person.id)
            if person.roles:
                voters.setdefault(person.roles[0], set()).add(person.id)
        elif target.role is not None:
            members = {p.id for p in directory.members_of(target.role)}
            voters[None] |= members
            voters.setdefault(target.role, set()).update(members)
        elif target.roster is not None and any(r.id == target.roster for r in directory.rosters):
            voters[None] |= set(directory.roster(target.roster).members)
    return voters


def _check_approval(path: str, approval: Approval, directory: Directory,
                    default_deadline: timedelta, issues: list[PlaybookIssue]) -> None:
    _check_targets(f"{path}.approvers", approval.approvers, directory, issues)
    if approval.drafts is not None and approval.drafts.library_policy is not None:
        _check_targets(f"{path}.drafts.library_policy.approvers",
                       approval.drafts.library_policy.approvers, directory, issues)
    for t_index, tier in enumerate(approval.escalation):
        _check_targets(f"{path}.escalation[{t_index}].notify", tier.notify, directory, issues)
        _check_targets(f"{path}.escalation[{t_index}].add_approvers", tier.add_approvers,
                       directory, issues)
    afters = [tier.after for tier in approval.escalation]
    if afters != sorted(afters):
        issues.append(PlaybookIssue(f"{path}.escalation", "tiers must be in order of `after`"))
    deadline = approval.deadline or default_deadline
    where = "deadline" if approval.deadline else "default approval_deadline"
    for t_index, tier in enumerate(approval.escalation):
        if tier.after >= deadline:
            issues.append(PlaybookIssue(
                f"{path}.escalation[{t_index}].after",
                f"fires after the node's deadline ({format_duration(tier.after)} >= "
                f"{where} {format_duration(deadline)})"))
    voters = possible_voters(approval, directory)
    everyone = len(voters[None])
    if approval.quorum is not None and not isinstance(approval.quorum, str):
        if approval.quorum.k > everyone:
            issues.append(PlaybookIssue(
                f"{path}.quorum.k",
                f"impossible quorum: k={approval.quorum.k} but only {everyone} people could vote"))
    for r_index, rule in enumerate(approval.require or []):
        could = len(voters.get(rule.role, set()))
        if could == 0:
            issues.append(PlaybookIssue(f"{path}.require[{r_index}].role",
                                        f"no approver counts toward role {rule.role!r}"))
        elif rule.min > could:
            issues.append(PlaybookIssue(
                f"{path}.require[{r_index}].min",
                f"impossible quorum: needs {rule.min} of {rule.role!r} "
                f"but only {could} could vote"))
    known_roles = {r.id for r in directory.roles} | {r for p in directory.people for r in p.roles}
    for v_index, role in enumerate(approval.veto):
        if role not in known_roles:
            issues.append(PlaybookIssue(f"{path}.veto[{v_index}]", f"unknown role {role!r}"
                                        + did_you_mean(role, known_roles)))


@dataclass(frozen=True)
class _StepIndex:
    """Where every step sits in execution (walk) order, and what kind it is."""

    order: dict[str, int]
    kinds: dict[str, str]
    drafts: dict[str, bool]

    @property
    def ids(self) -> set[str]:
        return set(self.order)


def _check_reference(placeholder: str, here: str, index: _StepIndex) -> str | None:
    """Errors a well-formed placeholder can still have: a step that runs later, or
    `.content` of a step that has no content."""
    error = check_placeholder(placeholder, index.ids)
    if error is not None:
        return error
    parts = placeholder.split(".")
    if parts[0] != "steps":
        return None
    target, field_name = parts[1], parts[2]
    if field_name == "content" and index.kinds[target] != "approval":
        return (f"placeholder {{{{{placeholder}}}}}: step {target!r} is a "
                f"{index.kinds[target]} step; only approval steps have content")
    later = index.order[target] > index.order[here]
    own_outcome = target == here and field_name == "outcome"
    if later or own_outcome:
        return (f"placeholder {{{{{placeholder}}}}} names step {target!r}, which has no "
                f"{field_name} yet when step {here!r} runs")
    return None


def _templates(step: Step) -> list[tuple[str, Any]]:
    """(path suffix, template) for every templated field of a step."""
    out: list[tuple[str, Any]] = []
    if step.notify is not None:
        out.append(("notify.message", step.notify.message))
    if step.reminder is not None:
        out.append(("reminder.message", step.reminder.message))
    if step.action is not None:
        out += [("action.url", step.action.url), ("action.payload", step.action.payload),
                ("action.headers", step.action.headers)]
    if step.approval is not None:
        out += [("approval.title", step.approval.title),
                ("approval.content", step.approval.content)]
        out += [(f"approval.escalation[{t_index}].message", tier.message or "")
                for t_index, tier in enumerate(step.approval.escalation)]
    return out


def _check_branch(path: str, step: Step, index: _StepIndex,
                  issues: list[PlaybookIssue]) -> None:
    assert step.branch is not None
    on = step.branch.on
    error = _check_reference(on, step.id, index)
    if error is None and on.endswith(".content"):
        error = "branch on incident.<field> or steps.<id>.outcome"
    if error is not None:
        issues.append(PlaybookIssue(f"{path}.branch.on", error))
        return
    allowed: list[str] | None = None
    if on == "incident.severity":
        allowed = [s.value for s in Severity]
    elif on.startswith("steps.") and index.kinds[on.split(".")[1]] == "approval":
        allowed = [o.value for o in Outcome if o is not Outcome.pending]
    for key in step.branch.cases:
        if allowed is not None and key not in allowed:
            issues.append(PlaybookIssue(
                f"{path}.branch.cases.{key}",
                f"{on} is never {key!r}: use one of {', '.join(allowed)}"))


def _check_step(path: str, step: Step, directory: Directory, index: _StepIndex,
                defaults: Defaults, issues: list[PlaybookIssue]) -> None:
    if step.notify is not None:
        _check_targets(f"{path}.notify.to", step.notify.to, directory, issues)
    if step.reminder is not None:
        _check_targets(f"{path}.reminder.to", step.reminder.to, directory, issues)
    if step.approval is not None:
        _check_approval(f"{path}.approval", step.approval, directory,
                        defaults.approval_deadline, issues)
    if step.branch is not None:
        _check_branch(path, step, index, issues)
    if step.action is not None and step.action.publishes is not None:
        target = step.action.publishes
        if index.kinds.get(target) != "approval":
            issues.append(PlaybookIssue(f"{path}.action.publishes",
                                        f"{target!r} is not an approval step"))
        elif index.order[target] > index.order[step.id]:
            issues.append(PlaybookIssue(f"{path}.action.publishes",
                                        f"approval {target!r} runs after this action"))
        elif not index.drafts.get(target, False):
            issues.append(PlaybookIssue(
                f"{path}.action.publishes",
                f"approval {target!r} takes no drafts: add `drafts:` to it, or drop "
                "`publishes` and template its content"))
    for suffix, template in _templates(step):
        for expression in unsupported(template):
            issues.append(PlaybookIssue(
                f"{path}.{suffix}",
                f"unsupported template {expression}: use {{{{ incident.<field> }}}} or "
                "{{ steps.<id>.outcome }} / {{ steps.<id>.content }}"))
        for placeholder in placeholders(template):
            error = _check_reference(placeholder, step.id, index)
            if error is not None:
                issue = PlaybookIssue(f"{path}.{suffix}", error)
                if issue not in issues:
                    issues.append(issue)


def _check_gates(prefix: str, steps: list[Step], issues: list[PlaybookIssue]) -> None:
    """A reminder after the resolution gate would start only once the incident is resolved,
    and so never fire."""
    gate: int | None = None
    for s_index, step in enumerate(steps):
        if step.resolution is not None and gate is None:
            gate = s_index
        elif step.reminder is not None and gate is not None:
            issues.append(PlaybookIssue(
                f"{prefix}[{s_index}].reminder",
                f"never fires: it comes after the resolution gate {steps[gate].id!r}; "
                "move it before the gate"))
        for suffix, nested in step.children():
            _check_gates(f"{prefix}[{s_index}].{suffix}", nested, issues)


def check_references(playbook: Playbook, directory: Directory) -> list[PlaybookIssue]:
    issues: list[PlaybookIssue] = []
    walked = playbook.walk()
    seen: dict[str, str] = {}
    order: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for position, (path, step) in enumerate(walked):
        if step.id in seen:
            issues.append(PlaybookIssue(
                f"{path}.id", f"duplicate step id {step.id!r} (first at {seen[step.id]})"))
        else:
            seen[step.id] = path
            order[step.id] = position
            kinds[step.id] = step.kind
    drafts = {step.id: step.approval.drafts is not None for _, step in walked
              if step.approval is not None}
    index = _StepIndex(order=order, kinds=kinds, drafts=drafts)
    for path, step in walked:
        _check_step(path, step, directory, index, playbook.defaults, issues)
    _check_gates("steps", playbook.steps, issues)
    return issues


M = TypeVar("M", bound=BaseModel)


def validate_with_paths(model: type[M], data: Any, source: str,
                        check: Callable[[M], list[PlaybookIssue]]) -> M:
    """Parse `data` as `model`, then run `check`; raise `PlaybookInvalid` with every issue
    (structure first, then references), each with its path in the file."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise PlaybookInvalid(issues_from_validation_error(exc), source) from None
    issues = check(parsed)
    if issues:
        raise PlaybookInvalid(issues, source)
    return parsed


def validate_playbook(data: Any, directory: Directory, source: str = "playbook") -> Playbook:
    """Parse and fully check a playbook; raise `PlaybookInvalid` listing every issue."""
    if not isinstance(data, dict):
        raise PlaybookInvalid([PlaybookIssue("(top)", "a playbook is a mapping of keys")], source)
    return validate_with_paths(Playbook, data, source, lambda p: check_references(p, directory))
