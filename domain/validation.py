"""Playbook validation that helps an admin: every error carries its path in the file.

Two passes: pydantic checks structure (unknown keys, types, durations); then
`check_references` checks what the schema can't see alone: people, roles and rosters that
the directory doesn't know, duplicate or unknown step ids, template placeholders, and
quorums that can't be met by the people who could vote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from domain.directory import Directory, Target
from domain.playbook import Approval, Playbook, Step
from domain.templates import check_placeholder, placeholders


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


def format_loc(loc: Iterable[Any]) -> str:
    """('steps', 2, 'approval', 'require', 0, 'min') -> steps[2].approval.require[0].min"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union", "literal[", "QuorumK")):
            continue  # pydantic's internal validator names are noise to an admin
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"


def issues_from_validation_error(error: ValidationError) -> list[PlaybookIssue]:
    issues: list[PlaybookIssue] = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        path = format_loc(item["loc"])
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
            issues.append(PlaybookIssue(f"{here}.person", f"unknown person {target.person!r}"))
        if target.role is not None:
            if target.role not in role_ids:
                issues.append(PlaybookIssue(f"{here}.role", f"unknown role {target.role!r}"))
            elif not directory.members_of(target.role):
                issues.append(PlaybookIssue(f"{here}.role", f"role {target.role!r} has no members"))
        if target.roster is not None and target.roster not in roster_ids:
            issues.append(PlaybookIssue(f"{here}.roster", f"unknown roster {target.roster!r}"))


def possible_voters(approval: Approval, directory: Directory) -> dict[str | None, set[str]]:
    """People who could vote per counted role (None: all of them), counting approvers and
    every escalation tier's added approvers."""
    voters: dict[str | None, set[str]] = {None: set()}
    targets = list(approval.approvers) + [t for tier in approval.escalation for t in tier.add_approvers]
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
                    issues: list[PlaybookIssue]) -> None:
    _check_targets(f"{path}.approvers", approval.approvers, directory, issues)
    for t_index, tier in enumerate(approval.escalation):
        _check_targets(f"{path}.escalation[{t_index}].notify", tier.notify, directory, issues)
        _check_targets(f"{path}.escalation[{t_index}].add_approvers", tier.add_approvers,
                       directory, issues)
    afters = [tier.after for tier in approval.escalation]
    if afters != sorted(afters):
        issues.append(PlaybookIssue(f"{path}.escalation", "tiers must be in order of `after`"))
    if approval.deadline is not None:
        for t_index, tier in enumerate(approval.escalation):
            if tier.after >= approval.deadline:
                issues.append(PlaybookIssue(f"{path}.escalation[{t_index}].after",
                                            "fires after the node's deadline"))
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
                f"impossible quorum: needs {rule.min} of {rule.role!r} but only {could} could vote"))
    known_roles = {r.id for r in directory.roles} | {r for p in directory.people for r in p.roles}
    for v_index, role in enumerate(approval.veto):
        if role not in known_roles:
            issues.append(PlaybookIssue(f"{path}.veto[{v_index}]", f"unknown role {role!r}"))


def _check_step(path: str, step: Step, directory: Directory, step_ids: set[str],
                issues: list[PlaybookIssue]) -> None:
    kind = step.kind
    body = getattr(step, kind)
    if step.notify is not None:
        _check_targets(f"{path}.notify.to", step.notify.to, directory, issues)
    if step.reminder is not None:
        _check_targets(f"{path}.reminder.to", step.reminder.to, directory, issues)
    if step.approval is not None:
        _check_approval(f"{path}.approval", step.approval, directory, issues)
    if step.branch is not None:
        on = step.branch.on
        error = check_placeholder(on, step_ids)
        if error is not None or on.endswith(".content"):
            issues.append(PlaybookIssue(
                f"{path}.branch.on",
                error or "branch on incident.<field> or steps.<id>.outcome"))
    for field_name, template in body.model_dump(mode="json").items():
        if field_name in ("content", "message", "payload", "url", "title"):
            for placeholder in placeholders(template):
                error = check_placeholder(placeholder, step_ids)
                if error is not None:
                    issues.append(PlaybookIssue(f"{path}.{kind}.{field_name}", error))
    if step.approval is not None:
        for t_index, tier in enumerate(step.approval.escalation):
            for placeholder in placeholders(tier.message or ""):
                error = check_placeholder(placeholder, step_ids)
                if error is not None:
                    issues.append(PlaybookIssue(
                        f"{path}.approval.escalation[{t_index}].message", error))


def check_references(playbook: Playbook, directory: Directory) -> list[PlaybookIssue]:
    issues: list[PlaybookIssue] = []
    walked = playbook.walk()
    seen: dict[str, str] = {}
    for path, step in walked:
        if step.id in seen:
            issues.append(PlaybookIssue(f"{path}.id",
                                        f"duplicate step id {step.id!r} (first at {seen[step.id]})"))
        else:
            seen[step.id] = path
    step_ids = set(seen)
    for path, step in walked:
        _check_step(path, step, directory, step_ids, issues)
    return issues


def validate_playbook(data: Any, directory: Directory, source: str = "playbook") -> Playbook:
    """Parse and fully check a playbook; raise `PlaybookInvalid` listing every issue."""
    if not isinstance(data, dict):
        raise PlaybookInvalid([PlaybookIssue("(top)", "a playbook is a mapping of keys")], source)
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise PlaybookInvalid(issues_from_validation_error(exc), source) from None
    issues = check_references(playbook, directory)
    if issues:
        raise PlaybookInvalid(issues, source)
    return playbook
