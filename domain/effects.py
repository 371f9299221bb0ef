"""Inputs and results of the activities: the workflow's only way to touch the world.

Every request carries an `idempotency_key` of the form `workflow_id:step_id[:suffix]`; the
activities record completed keys in Redis so a retried or replayed call never delivers twice.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from domain.incident import Incident, NodeState, Task, TimelineEntry
from domain.playbook import Channel


class Recipient(BaseModel):
    person_id: str
    name: str
    email: str | None = None
    webhook: str | None = None


class NotifyRequest(BaseModel):
    idempotency_key: str
    incident_id: str
    step_id: str
    kind: Literal["notify", "task", "escalation", "reminder"] = "notify"
    recipient: Recipient
    channels: list[Channel]
    subject: str
    message: str

    def missing_address(self, channel: Channel) -> str | None:
        """Why this recipient can't get `channel` (None if they can): no address, no message."""
        if channel == "email" and not self.recipient.email:
            return "recipient has no email address"
        if channel == "webhook" and not self.recipient.webhook:
            return "recipient has no webhook"
        return None


class NotifyResult(BaseModel):
    delivered: list[Channel] = Field(default_factory=list)
    already_done: list[Channel] = Field(default_factory=list)  # done by an earlier attempt
    skipped: dict[str, str] = Field(default_factory=dict)  # channel -> why (no address, ...)


class ActionRequest(BaseModel):
    idempotency_key: str
    incident_id: str
    step_id: str
    url: str
    method: Literal["POST", "PUT"] = "POST"
    payload: dict[str, Any]
    headers: dict[str, str] = Field(default_factory=dict)


class ActionResult(BaseModel):
    status_code: int
    body_excerpt: str = ""
    already_done: bool = False


class ProjectionBatch(BaseModel):
    """Changes to write to the Redis read models since the last batch."""

    incident: Incident
    tasks: list[Task] = Field(default_factory=list)
    nodes: list[NodeState] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
