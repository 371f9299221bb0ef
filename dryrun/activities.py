"""Simulation activities for dry runs: `notify`, `notify_batch`, `run_action` and `project`,
under the real activities' names, that deliver nothing.

They record what would have been sent (recipient, channels, message; action URL and
payload) in memory, stamped with the simulation's virtual time, and report success. They
hold no network client at all, so no message can leave the machine during a dry run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity

from domain.effects import (
    ActionRequest,
    ActionResult,
    NotifyBatchRequest,
    NotifyBatchResult,
    NotifyOutcome,
    NotifyRequest,
    NotifyResult,
    ProjectionBatch,
)
from domain.playbook import Channel

SIMULATED_STATUS = 200  # what a simulated action "returns"; the timeline shows it


class SimulatedMessage(BaseModel):
    at: datetime
    step_id: str
    kind: str
    person_id: str
    name: str
    channels: list[Channel]
    skipped: dict[str, str] = Field(default_factory=dict)  # channel -> why it couldn't go
    subject: str
    message: str


class SimulatedAction(BaseModel):
    at: datetime
    step_id: str
    method: str
    url: str
    payload: dict[str, Any]


class SimulatedEffects:
    """Activities that record instead of deliver; read `messages` and `actions` afterwards."""

    def __init__(self) -> None:
        self.messages: list[SimulatedMessage] = []
        self.actions: list[SimulatedAction] = []
        self.projections = 0
        self._seen: set[str] = set()  # idempotency keys: a retry records nothing twice

    @staticmethod
    def _now() -> datetime:
        return activity.info().current_attempt_scheduled_time

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        channels: list[Channel] = list(dict.fromkeys(req.channels))
        result = NotifyResult()
        for channel in channels:
            missing = req.missing_address(channel)  # the same rule as real delivery
            if missing is None:
                result.delivered.append(channel)
            else:
                result.skipped[channel] = missing
        if req.idempotency_key not in self._seen:
            self._seen.add(req.idempotency_key)
            self.messages.append(SimulatedMessage(
                at=self._now(), step_id=req.step_id, kind=req.kind,
                person_id=req.recipient.person_id, name=req.recipient.name,
                channels=result.delivered, skipped=result.skipped, subject=req.subject,
                message=req.message))
        return result

    @activity.defn(name="notify_batch")
    async def notify_batch(self, batch: NotifyBatchRequest) -> NotifyBatchResult:
        if batch.projection is not None:
            await self.project(batch.projection)
        return NotifyBatchResult(projected=batch.projection is not None,
                                 outcomes=[NotifyOutcome(result=await self.notify(req))
                                           for req in batch.requests])

    @activity.defn(name="run_action")
    async def run_action(self, req: ActionRequest) -> ActionResult:
        if req.projection is not None:
            await self.project(req.projection)
        if req.idempotency_key not in self._seen:
            self._seen.add(req.idempotency_key)
            self.actions.append(SimulatedAction(at=self._now(), step_id=req.step_id,
                                                method=req.method, url=req.url,
                                                payload=req.payload))
        return ActionResult(status_code=SIMULATED_STATUS, body_excerpt="dry run: not sent",
                            projected=req.projection is not None)

    @activity.defn(name="project")
    async def project(self, batch: ProjectionBatch) -> None:
        self.projections += 1  # a dry run has no read model to write
