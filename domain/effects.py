"""Inputs and results of the activities: the workflow's only way to touch the world.

Every request carries an `idempotency_key` of the form `workflow_id:step_id[:suffix]`; the
activities record completed keys in Redis so a retried or replayed call never delivers twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from domain.directory import Person
from domain.incident import Incident, NodeState, Task, TimelineEntry
from domain.playbook import Channel


class Recipient(BaseModel):
    person_id: str
    name: str
    email: str | None = None
    webhook: str | None = None
    # Apprise tags of this person (`Person.apprise_tags`); the URLs live in the secret
    # Apprise config file (CRISIS_APPRISE_CONFIG), never in a request or a log.
    apprise_tags: list[str] = Field(default_factory=list)

    @classmethod
    def for_person(cls, person: Person) -> Recipient:
        """Everything the activities need to reach `person` (addresses and Apprise tags)."""
        return cls(person_id=person.id, name=person.name, email=person.email,
                   webhook=person.webhook, apprise_tags=list(person.apprise_tags))


class MessageLink(BaseModel):
    label: str = Field(max_length=200)
    url: str = Field(max_length=4000)


class NotifyRequest(BaseModel):
    idempotency_key: str
    incident_id: str
    step_id: str
    kind: Literal["notify", "task", "escalation", "reminder"] = "notify"
    recipient: Recipient
    channels: list[Channel]
    subject: str
    message: str  # plain text, untrusted; the body when `body` is empty
    # Optional structured parts (additive; each channel renders and escapes them):
    body: list[str] = Field(default_factory=list)  # paragraphs of untrusted text
    task_id: str | None = None  # adds a link to the task's web page
    links: list[MessageLink] = Field(default_factory=list)  # more page links
    action_links: list[MessageLink] = Field(default_factory=list)  # signed one-click actions
    # What the activity's action-link hook signs (core.action_links.issue_link) for a task:
    content_sha256: str | None = None  # the draft being approved
    expires_at: datetime | None = None  # the task's deadline

    def missing_address(self, channel: Channel) -> str | None:
        """Why this recipient can't get `channel` (None if they can): no address, no message."""
        if channel == "email" and not self.recipient.email:
            return "recipient has no email address"
        if channel == "webhook" and not self.recipient.webhook:
            return "recipient has no webhook"
        if channel == "apprise" and not self.recipient.apprise_tags:
            return "recipient has no Apprise tags"
        return None


# ApplicationError types a failed `notify` / `run_action` raises (see activities.delivery):
DELIVERY_FAILED = "DeliveryFailed"  # the channel said "not now": retryable
DELIVERY_REJECTED = "DeliveryRejected"  # the channel refused: final (non-retryable)
INFRASTRUCTURE_UNAVAILABLE = "InfrastructureUnavailable"  # our Redis / SMTP relay: retryable
# an at-most-once action may have reached its receiver (timeout, 5xx, crash): never resent
ACTION_OUTCOME_UNKNOWN = "ActionOutcomeUnknown"
RETRYABLE_DELIVERY_ERRORS = frozenset({DELIVERY_FAILED, INFRASTRUCTURE_UNAVAILABLE})

ReceiptStatus = Literal["delivered", "already_delivered", "failed", "skipped"]


class ChannelReceipt(BaseModel):
    """The outcome of one delivery target: a channel, or one Apprise service of a person."""

    channel: Channel
    target: str | None = None  # non-secret label, e.g. "apprise:lena-sms json#3f2a9c01"
    status: ReceiptStatus
    permanent: bool = False  # failed: the channel itself refused (no retry will help)
    infrastructure: bool = False  # failed: our side (Redis, SMTP relay) was unavailable
    reason: str | None = None
    at: datetime | None = None


class NotifyResult(BaseModel):
    delivered: list[Channel] = Field(default_factory=list)
    already_done: list[Channel] = Field(default_factory=list)  # done by an earlier attempt
    skipped: dict[str, str] = Field(default_factory=dict)  # channel -> why (no address, ...)
    receipts: list[ChannelReceipt] = Field(default_factory=list)  # one per target

    def reached(self) -> bool:
        """Delivered (now or earlier) on at least one channel other than `log`."""
        return any(r.status in ("delivered", "already_delivered") and r.channel != "log"
                   for r in self.receipts)

    def unreachable(self) -> bool:
        """Every channel that can reach a person (all but `log`) failed permanently or has
        no address, so waiting or retrying cannot reach them: hand over to the stand-in."""
        outward = [r for r in self.receipts if r.channel != "log"]
        return bool(outward) and all(
            r.status == "skipped" or (r.status == "failed" and r.permanent) for r in outward)

    def delayed(self) -> bool:
        """Some target failed for now (the channel said "not now", or our infrastructure
        is down): retrying can still deliver."""
        return any(r.status == "failed" and not r.permanent for r in self.receipts)

    @classmethod
    def from_failure_details(cls, details: Sequence[Any]) -> NotifyResult | None:
        """The partial result a failed `notify` carries in its ApplicationError details
        (`ActivityError.cause.details`), or None if there is none."""
        if not details or not isinstance(details[0], dict) or "result" not in details[0]:
            return None
        try:
            return cls.model_validate(details[0]["result"])
        except ValidationError:
            return None


class NotifyBatchRequest(BaseModel):
    """One step's messages to all its recipients, for one `notify_batch` activity; each
    request keeps its own per-recipient idempotency key (and per-channel records)."""

    requests: list[NotifyRequest]
    # the incident's pending projection batch, written to the read model before any
    # message goes out, so whatever a message links to (its task) is there when it lands;
    # it saves the workflow a `project` activity and a workflow task per step
    projection: ProjectionBatch | None = None


class NotifyOutcome(BaseModel):
    """One recipient's outcome in a batch: `result` when delivered (or skipped), else the
    error (`error_type` one of the `DELIVERY_*` / `INFRASTRUCTURE_UNAVAILABLE` types) with
    the partial result, as a failed `notify` would raise them."""

    result: NotifyResult | None = None
    error: str | None = None
    error_type: str | None = None
    partial: NotifyResult | None = None

    @property
    def retryable(self) -> bool:
        return self.error_type in RETRYABLE_DELIVERY_ERRORS


class NotifyBatchResult(BaseModel):
    outcomes: list[NotifyOutcome]  # in request order
    projected: bool = False  # the request's `projection` was written


class ActionRequest(BaseModel):
    idempotency_key: str
    incident_id: str
    step_id: str
    url: str
    method: Literal["POST", "PUT"] = "POST"
    payload: dict[str, Any]
    headers: dict[str, str] = Field(default_factory=dict)
    # the receiver can't deduplicate: never send twice; a call that may have reached it
    # fails with `ActionOutcomeUnknown` (and the workflow asks a human)
    at_most_once: bool = False
    # the incident's pending projection batch, written before the call (as `notify_batch`)
    projection: ProjectionBatch | None = None


class ActionResult(BaseModel):
    status_code: int
    body_excerpt: str = ""
    already_done: bool = False
    projected: bool = False  # the request's `projection` was written (this attempt)


class ProjectionBatch(BaseModel):
    """Changes to write to the Redis read models since the last batch."""

    incident: Incident
    tasks: list[Task] = Field(default_factory=list)
    nodes: list[NodeState] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    # request ids of the commands whose changes this batch carries (or, for a repeat,
    # carried earlier): the API waits for them before answering (read-your-writes)
    answered: list[str] = Field(default_factory=list)


# `projection` names a model defined below them
NotifyBatchRequest.model_rebuild()
ActionRequest.model_rebuild()
