"""The fair baseline: a hand-written Temporal workflow doing a viral-complaint incident's work.

`SameWorkWorkflow` does what `IncidentWorkflow` does for the viral-complaint playbook, with
the same real activities (`notify`, `run_action`, `project` of
`activities.incident_activities`, writing to the same Redis and the same receivers), but
written by hand for this one playbook, with no interpreter and no aggregate:

1. project the opened incident;
2. notify the social team (one `notify` per person, in parallel, like a hand-written fan-out);
3. open the approval: make the tasks, project incident + node + tasks;
4. notify every task holder (one `notify` each, in parallel), project the delivery entries;
5. take `decide` updates (each projects before it returns: read-your-writes), until 1 legal
   and 2 comms-lead approvals;
6. publish (`run_action`), project; then wait for `resolve` (projects), and end.

Who gets notified and who gets a task is decided by the bench client with
`domain.directory.resolve_targets` at the server's current time, so both flows reach the
same people; the start input carries just those recipients (no playbook, no directory).

The module has no side effects on import: the workflow sandbox re-imports it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.effects import (
        ActionRequest,
        ActionResult,
        NotifyRequest,
        NotifyResult,
        ProjectionBatch,
        Recipient,
    )
    from domain.incident import (
        Incident,
        IncidentStatus,
        NodeState,
        Task,
        TaskState,
        TimelineEntry,
    )
    from domain.playbook import Channel

TIMEOUT = timedelta(seconds=30)
RETRY = RetryPolicy(maximum_attempts=5)


class Approver(BaseModel):
    recipient: Recipient
    role: str


class SameWorkStart(BaseModel):
    incident: Incident
    social: list[Recipient]
    approvers: list[Approver]
    channels: list[Channel]
    publish_url: str
    title: str
    content: str
    legal_needed: int = 1
    comms_needed: int = 2


class SameWorkResult(BaseModel):
    tasks: int
    notifications: int
    resolved: bool
    approved: bool
    timeline: list[TimelineEntry] = Field(default_factory=list)


class SameWorkDecide(BaseModel):
    task_id: str
    actor: str


@workflow.defn(name="SameWorkWorkflow")
class SameWorkWorkflow:
    def __init__(self) -> None:
        self.incident: Incident | None = None
        self.tasks: dict[str, Task] = {}
        self.node: NodeState | None = None
        self.timeline: list[TimelineEntry] = []
        self.projected = 0
        self.notified = 0

    def _entry(self, kind: Any, actor: str, **details: Any) -> None:
        self.timeline.append(TimelineEntry(seq=len(self.timeline) + 1, at=workflow.now(),
                                           kind=kind, actor=actor, details=details))

    async def _project(self, tasks: list[Task] | None = None) -> None:
        assert self.incident is not None
        self.incident.rev += 1
        batch = ProjectionBatch(incident=self.incident, tasks=tasks or [],
                                nodes=[self.node] if self.node is not None else [],
                                timeline=self.timeline[self.projected:])
        self.projected = len(self.timeline)
        await workflow.execute_activity("project", batch, start_to_close_timeout=TIMEOUT,
                                        retry_policy=RETRY)

    async def _notify(self, start: SameWorkStart, step: str, people: list[Recipient],
                      message: str, tasks: dict[str, Task] | None = None) -> None:
        async def one(person: Recipient) -> None:
            task = (tasks or {}).get(person.person_id)
            result: NotifyResult = await workflow.execute_activity(
                "notify", NotifyRequest(
                    idempotency_key=f"{start.incident.id}:{step}:{person.person_id}",
                    incident_id=start.incident.id, step_id=step,
                    kind="task" if task else "notify", recipient=person,
                    channels=start.channels, subject=f"[HIGH] {start.incident.title}",
                    message=message, task_id=task.id if task else None),
                result_type=NotifyResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
            self.notified += 1
            self._entry("notified", "playbook", step=step, person=person.person_id,
                        channels=result.delivered)

        calls = [asyncio.ensure_future(one(person)) for person in people]
        await workflow.wait(calls)
        for call in calls:
            call.result()

    def _approved(self, start: SameWorkStart) -> bool:
        roles = [t.role for t in self.tasks.values() if t.state == TaskState.approved]
        return (roles.count("legal") >= start.legal_needed
                and roles.count("comms-lead") >= start.comms_needed)

    @workflow.run
    async def run(self, start: SameWorkStart) -> SameWorkResult:
        self.incident = start.incident.model_copy(update={"opened_at": workflow.now()})
        self._entry("opened", start.incident.opened_by, title=start.incident.title)
        await self._project()
        await self._notify(start, "notify-social", start.social,
                           f"{start.incident.title} is spreading. Don't reply yet.")
        now = workflow.now()
        self.node = NodeState(step_id="holding-statement", title=start.title,
                              policy="1 of legal AND 2 of comms-lead; veto: legal",
                              opened_at=now, deadline=now + timedelta(hours=4))
        for approver in start.approvers:
            task = Task(id=str(workflow.uuid4()), incident_id=start.incident.id,
                        node_id="holding-statement", title=start.title, content=start.content,
                        assignee=approver.recipient.person_id, role=approver.role,
                        created_at=now, deadline=self.node.deadline)
            self.tasks[task.id] = task
            self._entry("task_created", "playbook", task_id=task.id, assignee=task.assignee)
        await self._project(list(self.tasks.values()))
        by_person = {t.assignee: t for t in self.tasks.values()}
        await self._notify(start, "holding-statement", [a.recipient for a in start.approvers],
                           f"Your approval is needed: {start.title}\n\n{start.content}",
                           tasks=by_person)
        await self._project()
        await workflow.wait_condition(
            lambda: self._approved(start) or self.incident is None
            or self.incident.status != IncidentStatus.open)
        if self._approved(start):
            self.node.outcome = "approved"  # type: ignore[assignment]
            self.node.ended_at = workflow.now()
            self._entry("node_outcome", "playbook", step="holding-statement",
                        outcome="approved")
            result: ActionResult = await workflow.execute_activity(
                "run_action", ActionRequest(
                    idempotency_key=f"{start.incident.id}:publish-statement",
                    incident_id=start.incident.id, step_id="publish-statement",
                    url=start.publish_url, payload={"text": start.content,
                                                    "incident": start.incident.id}),
                result_type=ActionResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
            self._entry("action_run", "playbook", step="publish-statement",
                        status_code=result.status_code)
            await self._project()
        await workflow.wait_condition(lambda: self.incident is not None
                                      and self.incident.status != IncidentStatus.open)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return SameWorkResult(tasks=len(self.tasks), notifications=self.notified,
                              resolved=True, approved=self._approved(start),
                              timeline=self.timeline)

    @workflow.update(name="decide")
    async def decide(self, req: SameWorkDecide) -> Task:
        task = self.tasks[req.task_id]
        task.state = TaskState.approved
        task.decided_by = req.actor
        task.decided_at = workflow.now()
        task.rev += 1
        self._entry("decision", req.actor, task_id=task.id, decision="approve")
        await self._project([task])
        return task

    @decide.validator
    def _validate_decide(self, req: SameWorkDecide) -> None:
        task = self.tasks.get(req.task_id)
        if task is None or task.assignee != req.actor or task.state != TaskState.open:
            raise ValueError("not a decidable task")

    @workflow.update(name="resolve")
    async def resolve(self, actor: str) -> Incident:
        assert self.incident is not None
        self.incident.status = IncidentStatus.resolved
        self.incident.resolved_by = actor
        self.incident.resolved_at = workflow.now()
        self._entry("resolved", actor)
        await self._project()
        return self.incident

    @workflow.query(name="tasks")
    def list_tasks(self) -> list[Task]:
        return list(self.tasks.values())
