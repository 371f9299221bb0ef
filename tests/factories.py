"""Directories and playbooks built in code for workflow tests (independent of the demo YAML)."""

from __future__ import annotations

import uuid
from typing import Any

from domain.directory import Directory
from domain.incident import DirectorySnapshot, PlaybookSnapshot, StartIncident
from domain.loader import sha256
from domain.playbook import Playbook, Severity
from domain.validation import validate_playbook

OFFICE = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}


def person(pid: str, roles: list[str], tz: str = "Europe/London", *, hours: Any = OFFICE,
           access: list[str] | None = None, deputies: list[str] | None = None
           ) -> dict[str, Any]:
    return {"id": pid, "name": pid.replace("-", " ").title(), "roles": roles, "timezone": tz,
            "working_hours": hours, "email": f"{pid}@example.com",
            "access": access or ["reporter", "approver"], "deputies": deputies or []}


def directory() -> Directory:
    return Directory.model_validate({
        "people": [
            person("lena-legal", ["legal"], "Europe/London", deputies=["vera-vp"]),
            person("leo-legal", ["legal"], "America/New_York"),
            person("cara-comms", ["comms-lead"], "Europe/London"),
            person("colin-comms", ["comms-lead"], "America/New_York"),
            person("chen-comms", ["comms-lead"], "Asia/Singapore"),
            person("chloe-comms", ["comms-lead"], "Europe/London"),
            person("vera-vp", ["exec"], "America/New_York", access=["approver", "leader"]),
            person("gabe-counsel", ["legal"], "America/New_York"),
            person("sam-social", ["social"], "Europe/London", access=["communicator"]),
            person("eve-exec", ["exec"], "Asia/Singapore", hours=None,
                   access=["approver", "leader"]),
            person("olga-oncall", ["legal", "comms-lead"], "UTC", hours=None),
            person("otto-oncall", ["comms-lead"], "UTC", hours=None),
            person("nia-desk", [], "Europe/London", access=["communicator"]),
        ],
        "roles": [
            {"id": "legal", "oncall": "legal-oncall"},
            {"id": "comms-lead", "oncall": "comms-oncall"},
            {"id": "social"},
            {"id": "exec", "oncall": "exec-oncall"},
        ],
        "rosters": [
            {"id": "legal-oncall", "members": ["olga-oncall"]},
            {"id": "comms-oncall", "members": ["otto-oncall"]},
            {"id": "exec-oncall", "members": ["eve-exec"]},
        ],
    })


LIBRARY_V1 = "We're aware of the posts and are looking into them. We'll update here soon."
LIBRARY_V2 = ("We're aware of the posts and are looking into them urgently. We'll update "
              "here within two hours.")


def library() -> dict[str, Any]:
    """Two versions of a pre-approved holding statement; any one comms lead may use it."""
    approved = {"approved_by": "legal: Lena Legal", "approved_on": "2026-11-02"}
    return {"library": [{"id": "aware-looking", "version": 1, "text": LIBRARY_V1, **approved},
                        {"id": "aware-looking", "version": 2, "text": LIBRARY_V2, **approved}],
            "library_policy": {"approvers": [{"role": "comms-lead"}], "quorum": "any"}}


def drafts_playbook(publish_url: str, *, confirm: str = "none",
                    escalation_clock: str = "keep", with_library: bool = False
                    ) -> dict[str, Any]:
    """BRIEF scenario 7: the holding statement is written during the incident (drafts),
    and the publish action sends exactly the approved version."""
    data = viral_playbook(publish_url)
    approval = data["steps"][2]["approval"]
    approval["content"] = "Suggested: We are aware of posts about {{incident.title}}."
    approval["drafts"] = {"escalation_clock": escalation_clock,
                          **(library() if with_library else {})}
    action = approval["on_approved"][0]["action"]
    action["publishes"] = "holding-statement"
    action["confirm"] = confirm
    return data


def viral_playbook(publish_url: str, *, version: int = 1, content: str | None = None,
                   extra_steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """BRIEF scenario 1: 1 of legal AND 2 of comms, legal vetoes, tiers at 15m and 30m."""
    return {
        "id": "viral-complaint", "name": "Viral complaint", "version": version,
        "severities": ["medium", "high", "critical"],
        "steps": [
            {"id": "notify-social", "notify": {"to": [{"role": "social"}],
                                               "message": "New incident: {{incident.title}}"}},
            {"id": "status-reminder", "reminder": {"every": "2h", "to": [{"role": "social"}],
                                                   "message": "Post a status update"}},
            {"id": "holding-statement", "approval": {
                "title": "Holding statement: {{incident.title}}",
                "content": content or "We are aware of posts about {{incident.title}}.",
                "approvers": [{"role": "legal"}, {"role": "comms-lead"}],
                "require": [{"role": "legal", "min": 1}, {"role": "comms-lead", "min": 2}],
                "veto": ["legal"],
                "deadline": "4h",
                "escalation": [
                    {"name": "tier 2", "after": "15m",
                     "notify": [{"person": "vera-vp"}, {"person": "gabe-counsel"}]},
                    {"name": "tier 3", "after": "30m", "notify": [{"roster": "exec-oncall"}]},
                ],
                "on_approved": [{"id": "publish-statement", "action": {
                    "url": publish_url,
                    "payload": {"text": "{{steps.holding-statement.content}}",
                                "incident": "{{incident.id}}"}}}],
                "on_rejected": [{"id": "tell-comms", "notify": {
                    "to": [{"role": "comms-lead"}],
                    "message": "Statement for {{incident.title}}: "
                               "{{steps.holding-statement.outcome}}"}}],
            }},
            *(extra_steps or []),
            {"id": "resolved", "resolution": {}},
        ],
    }


def sha(text: str) -> str:
    """The sha256 (hex) of a text, as a draft's version is bound by it."""
    return sha256(text.encode())


def snapshot(data: dict[str, Any], dir_: Directory | None = None) -> PlaybookSnapshot:
    playbook: Playbook = validate_playbook(data, dir_ or directory())
    raw = playbook.model_dump_json().encode()
    return PlaybookSnapshot(id=playbook.id, version=playbook.version, sha256=sha256(raw),
                            definition=playbook)


def start_input(playbook: PlaybookSnapshot, *, severity: Severity = Severity.high,
                incident_id: str | None = None, **overrides: Any) -> StartIncident:
    dir_ = directory()
    values: dict[str, Any] = {
        "incident_id": incident_id or f"inc-test-{uuid.uuid4().hex[:12]}",
        "title": "Viral complaint about cold pizza", "summary": "A post is spreading",
        "severity": severity, "source_url": "https://social.example/post/1",
        "opened_by": "sam-social", "opening_report_id": uuid.uuid4().hex,
        "playbook": playbook,
        "directory": DirectorySnapshot(sha256=sha256(dir_.model_dump_json().encode()),
                                       definition=dir_),
    }
    values.update(overrides)
    return StartIncident(**values)


# A one-approver stack for API tests: Cora communicates, Alex (legal) signs off.
SIGN_OFF_PEOPLE: list[dict[str, Any]] = [
    {"id": "cora", "name": "Cora Communicator", "access": ["communicator"]},
    {"id": "alex", "name": "Alex Approver", "roles": ["legal"], "access": ["approver"]}]


def sign_off_playbook(playbook_id: str, name: str) -> dict[str, Any]:
    """Alex signs off (any one vote, 4 h deadline), then the incident waits to resolve."""
    return {
        "id": playbook_id, "name": name, "version": 1,
        "defaults": {"channels": ["log"], "respect_working_hours": False},
        "steps": [
            {"id": "sign-off", "approval": {
                "title": "Sign off", "content": "{{ incident.title }}",
                "approvers": [{"person": "alex"}], "quorum": "any", "deadline": "4h"}},
            {"id": "done", "resolution": {}},
        ],
    }
