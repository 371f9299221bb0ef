"""`IncidentWorkflow`: one durable workflow per incident, interpreting a playbook snapshot.

The playbook and the directory arrive frozen in the input, so editing a YAML file never
changes a running incident. All state lives in one `IncidentWorkflowState` (see
`domain.ledger`), which is carried across continue-as-new; every step keeps its progress
there, so the interpreter can resume mid-playbook in a new run.

Handlers:
- updates (with validators): `report`, `decide`, `delegate`, `post_status_update`, `resolve`;
- signal: `add_report`;
- queries: `state`, `timeline`.

Every update returns only after its change is written to the Redis projection, so a client
reads its own write. Side effects happen only in activities (`notify`, `run_action`,
`project`), each with an idempotency key `workflow_id:step_id[:suffix]` and bounded retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.directory import Assignment, Directory, Target, resolve_targets
    from domain.effects import (
        ActionRequest,
        ActionResult,
        NotifyRequest,
        NotifyResult,
        ProjectionBatch,
        Recipient,
    )
    from domain.incident import (
        DecideRequest,
        DecideResult,
        DelegateRequest,
        DelegateResult,
        Incident,
        IncidentFinal,
        IncidentView,
        IncidentWorkflowState,
        Report,
        ReportResult,
        ResolveRequest,
        StartIncident,
        StatusUpdateRequest,
        StepProgress,
        TimelineEntry,
    )
    from domain.ledger import Ledger, LedgerError
    from domain.playbook import Approval, Channel, Step
    from domain.quorum import Outcome
    from domain.templates import render

T = TypeVar("T")

NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                           maximum_interval=timedelta(minutes=1), maximum_attempts=5,
                           non_retryable_error_types=["DeliveryRejected"])
ACTION_RETRY = NOTIFY_RETRY
PROJECT_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                            maximum_interval=timedelta(seconds=5), maximum_attempts=8)
ACTIVITY_TIMEOUT = timedelta(seconds=30)


def _business_error(error: LedgerError) -> ApplicationError:
    return ApplicationError(error.message, type=error.code, non_retryable=True)


@workflow.defn(name="IncidentWorkflow")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, start: StartIncident) -> None:
        self.start = start
        self.playbook = start.playbook.definition
        self.directory: Directory = start.directory.definition
        if start.state is not None:
            self.ledger = Ledger(start.state)
            self.ledger.state.runs += 1
            self.ledger.mark_all_changed()
        else:
            now = workflow.now()
            incident = Incident(
                id=start.incident_id, title=start.title, summary=start.summary,
                severity=start.severity, source_url=start.source_url, dedup_key=start.dedup_key,
                opened_by=start.opened_by, opened_at=now, playbook=start.playbook.ref())
            self.ledger = Ledger(IncidentWorkflowState(incident=incident))
            self.ledger.record(now, "opened", start.opened_by, title=start.title,
                               severity=start.severity.value, source_url=start.source_url,
                               dedup_key=start.dedup_key, report_id=start.opening_report_id,
                               playbook_id=start.playbook.id,
                               playbook_version=start.playbook.version,
                               playbook_sha256=start.playbook.sha256)
        self._sync_lock = asyncio.Lock()
        self._draining = False  # set before continue-as-new: every wait returns early
        self._background: list[asyncio.Task[None]] = []
        self._opened_synced = False

    # ---- main loop -----------------------------------------------------------------

    @workflow.run
    async def run(self, start: StartIncident) -> IncidentFinal:
        await self._sync()
        self._opened_synced = True
        interpreter = asyncio.create_task(self._interpret())
        await workflow.wait_condition(
            lambda: not self.ledger.is_open or interpreter.done() or self._should_continue())
        if interpreter.done() and self.ledger.is_open:
            interpreter.result()  # an interpreter bug: fail the workflow task, don't hang
        # Never cancel the interpreter: in-flight activities finish, every wait returns early.
        self._draining = self.ledger.is_open
        await workflow.wait([interpreter, *self._background])
        for task in [interpreter, *self._background]:
            task.result()
        if self.ledger.is_open:  # continue-as-new, carrying the whole state
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._sync()
            workflow.logger.info("continuing as new at history length %s",
                                 workflow.info().get_current_history_length())
            workflow.continue_as_new(start.model_copy(update={"state": self.ledger.state}))
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._sync()
        return IncidentFinal(view=self.ledger.view(), timeline=self.ledger.state.timeline)

    def _should_continue(self) -> bool:
        info = workflow.info()
        return (info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= self.start.continue_as_new_after_events)

    def _halted(self) -> bool:
        """Resolved, or draining for continue-as-new: stop starting work, stop waiting."""
        return self._draining or not self.ledger.is_open

    async def _interpret(self) -> None:
        await self._run_steps(self.playbook.steps)
        await workflow.wait_condition(self._halted)

    async def _wait(self, until: datetime) -> bool:
        """Wait until `until`; False if the incident halted first."""
        remaining = until - workflow.now()
        if remaining <= timedelta(0):
            return not self._halted()
        try:
            await workflow.wait_condition(self._halted, timeout=remaining)
            return False
        except TimeoutError:
            return not self._halted()

    # ---- steps ---------------------------------------------------------------------

    async def _run_steps(self, steps: list[Step]) -> bool:
        """Run steps in order; False if the incident halted before they all completed."""
        for step in steps:
            if self._halted() or not await self._run_step(step):
                return False
        return True

    def _progress(self, step: Step) -> StepProgress:
        progress = self.ledger.state.progress.get(step.id)
        if progress is None:
            progress = StepProgress(started_at=workflow.now())
            self.ledger.state.progress[step.id] = progress
        return progress

    async def _run_step(self, step: Step) -> bool:
        """Run one step (resuming from its progress); True once it has completed."""
        progress = self._progress(step)
        if progress.status == "done":
            return True
        completed = True
        if step.notify is not None:
            await self._notify(step.id, step.notify.to, step.notify.message, kind="notify",
                               channels=step.notify.channels)
        elif step.approval is not None:
            outcome = await self._run_approval(step.id, step.approval)
            if outcome == Outcome.pending:
                return False
            progress.outcome = str(outcome)
            branch = step.approval.on_approved if outcome == Outcome.approved \
                else step.approval.on_rejected
            completed = await self._run_steps(branch)
        elif step.wait is not None:
            assert progress.started_at is not None
            completed = await self._wait(progress.started_at + step.wait.duration)
            if completed:
                self.ledger.record(workflow.now(), "waited", "playbook", step=step.id,
                                   duration=str(step.wait.duration))
        elif step.action is not None:
            await self._run_action(step)
        elif step.branch is not None:
            if progress.outcome is None:
                value = self._lookup(step.branch.on)
                progress.outcome = value if value in step.branch.cases else "default"
                self.ledger.record(workflow.now(), "branch_taken", "playbook", step=step.id,
                                   on=step.branch.on, value=value, case=progress.outcome)
            chosen = step.branch.cases.get(progress.outcome, step.branch.default)
            completed = await self._run_steps(chosen)
        elif step.parallel is not None:
            branches = [asyncio.create_task(self._run_steps(b)) for b in step.parallel.branches]
            await workflow.wait(branches)
            completed = all(branch_task.result() for branch_task in branches)
        elif step.sequence is not None:
            completed = await self._run_steps(step.sequence.steps)
        elif step.reminder is not None:
            self._background.append(asyncio.create_task(self._reminder_loop(step)))
            return True  # runs until the incident is resolved; the playbook moves on
        elif step.resolution is not None:
            await workflow.wait_condition(self._halted)
            completed = False
        if completed:
            progress.status = "done"
        await self._sync()
        return completed

    # ---- approval nodes ------------------------------------------------------------

    async def _run_approval(self, step_id: str, approval: Approval) -> Outcome:
        ledger = self.ledger
        node = ledger.state.nodes.get(step_id)
        content = self._render(approval.content)
        title = self._render(approval.title)
        if node is None:
            now = workflow.now()
            deadline = now + (approval.deadline or self.playbook.defaults.approval_deadline)
            node = ledger.open_node(step_id, approval, now, deadline, title)
            assignments = self._resolve(approval.approvers)
            tasks = ledger.add_tasks(step_id, assignments, title=title,
                                     content=content, at=now, deadline=deadline)
            tasks += self._top_up(step_id, approval, title, content, now, deadline)
            outcome = ledger.evaluate(step_id, approval)
            if outcome != Outcome.pending:
                ledger.close_node(step_id, outcome, now, reason="not enough approvers")
            await self._sync()
            if node.outcome == Outcome.pending:
                await self._notify_tasks(step_id, [t.assignee for t in tasks], approval, content)
        while node.outcome == Outcome.pending and not self._halted():
            tier_index, fire_at = self._next_tier(approval, node.opened_at, node.tiers_fired)
            assert node.deadline is not None
            wake = min(fire_at, node.deadline) if fire_at is not None else node.deadline
            timeout = wake - workflow.now()
            if timeout > timedelta(0):
                try:
                    await workflow.wait_condition(
                        lambda: node.outcome != Outcome.pending or self._halted(),
                        timeout=timeout)
                    continue
                except TimeoutError:
                    pass
            if self._halted():
                break
            if workflow.now() >= node.deadline:
                ledger.close_node(step_id, Outcome.expired, workflow.now(),
                                  reason="deadline passed without quorum")
                await self._sync()
            elif tier_index is not None:
                await self._fire_tier(step_id, approval, tier_index, title, content)
        return Outcome.pending if node.outcome == "cancelled" else Outcome(node.outcome)

    def _top_up(self, step_id: str, approval: Approval, title: str, content: str,
                now: datetime, deadline: datetime) -> list[Any]:
        """If off-hours substitution left a role too few voters, add off-hours members back:
        a vote they might give beats a node that can never be decided."""
        created = []
        for role, missing in self.ledger.shortfall(step_id, approval).items():
            holders = {t.assignee for t in self.ledger.node_tasks(step_id)}
            pool = [Assignment(person_id=p.id, role=role, via="role")
                    for target in approval.approvers
                    for p in self._people_of(target, role) if p.id not in holders]
            created += self.ledger.add_tasks(
                step_id, pool[:missing], title=title, content=content, at=now,
                deadline=deadline, reason="needed for quorum although outside working hours")
        return created

    def _people_of(self, target: Target, role: str | None) -> list[Any]:
        if target.role is not None and role in (None, target.role):
            return self.directory.members_of(target.role)
        if target.person is not None:
            person = self.directory.person(target.person)
            return [person] if role is None or role in person.roles else []
        return []

    @staticmethod
    def _next_tier(approval: Approval, opened_at: datetime,
                   fired: list[int]) -> tuple[int | None, datetime | None]:
        best: tuple[int | None, datetime | None] = (None, None)
        for index, tier in enumerate(approval.escalation):
            count = fired[index] if index < len(fired) else 0
            if count > tier.repeat:
                continue
            at = opened_at + tier.after + count * (tier.every or tier.after)
            if best[1] is None or at < best[1]:
                best = (index, at)
        return best

    async def _fire_tier(self, step_id: str, approval: Approval, index: int, title: str,
                         content: str) -> None:
        tier = approval.escalation[index]
        node = self.ledger.state.nodes[step_id]
        while len(node.tiers_fired) <= index:
            node.tiers_fired.append(0)
        node.tiers_fired[index] += 1
        firing = node.tiers_fired[index]
        now = workflow.now()
        waiting = [t.assignee for t in self.ledger.node_tasks(step_id) if t.state == "open"]
        self.ledger.record(now, "escalation", "playbook", node=step_id, tier=index + 1,
                           name=tier.name, firing=firing,
                           notify=[t.label() for t in tier.notify],
                           add_approvers=[t.label() for t in tier.add_approvers],
                           waiting_on=waiting)
        added = []
        if tier.add_approvers:
            added = self.ledger.add_tasks(step_id, self._resolve(tier.add_approvers),
                                          title=title, content=content, at=now,
                                          deadline=node.deadline,
                                          reason=f"escalation tier {index + 1}")
        await self._sync()
        message = tier.message or (
            f"ESCALATION (tier {index + 1}): '{title}' for incident "
            f"'{{{{incident.title}}}}' has no quorum after "
            f"{int((now - node.opened_at).total_seconds() // 60)} min. "
            f"Needs {node.policy}. Waiting on: {', '.join(waiting) or 'nobody'}. "
            "{{incident.url}}")
        suffix = f"tier{index + 1}.{firing}"
        if tier.notify:
            await self._notify(step_id, tier.notify, message, kind="escalation", suffix=suffix)
        if added:
            await self._notify_tasks(step_id, [t.assignee for t in added], approval, content,
                                     suffix=suffix)

    async def _notify_tasks(self, step_id: str, people: list[str], approval: Approval,
                            content: str, suffix: str = "tasks") -> None:
        message = (f"Your approval is needed: {self._render(approval.title)} (incident "
                   "'{{incident.title}}', severity {{incident.severity}}). Policy: "
                   f"{self.ledger.state.nodes[step_id].policy}.\n\n{content}\n\n{{{{incident.url}}}}")
        await self._notify(step_id, [Target(person=p) for p in people], message, kind="task",
                           suffix=suffix, resolve_hours=False)

    # ---- effects -------------------------------------------------------------------

    def _resolve(self, targets: list[Target],
                 resolve_hours: bool | None = None) -> list[Assignment]:
        respect = self.playbook.defaults.respect_working_hours if resolve_hours is None \
            else resolve_hours
        return resolve_targets(targets, self.directory, workflow.now(), respect_hours=respect)

    async def _activity(self, name: str, arg: Any, result_type: type[T],
                        retry: RetryPolicy) -> T:
        result: T = await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=retry)
        return result

    async def _notify(self, step_id: str, targets: list[Target], template: str, *, kind: str,
                      channels: list[Channel] | None = None, suffix: str | None = None,
                      resolve_hours: bool | None = None) -> None:
        assignments = self._resolve(targets, resolve_hours)
        message = self._render(template)
        subject = f"[{self.ledger.incident.severity.value.upper()}] {self.ledger.incident.title}"
        key = f"{self.ledger.incident.id}:{step_id}" + (f":{suffix}" if suffix else "")
        calls = []
        for assignment in assignments:
            person = self.directory.person(assignment.person_id)
            request = NotifyRequest(
                idempotency_key=f"{key}:{person.id}", incident_id=self.ledger.incident.id,
                step_id=step_id, kind=kind,
                recipient=Recipient(person_id=person.id, name=person.name, email=person.email,
                                    webhook=person.webhook),
                channels=channels or self.playbook.defaults.channels, subject=subject,
                message=message)
            calls.append(self._deliver(request, assignment))
        await self._gather(calls)
        await self._sync()

    async def _deliver(self, request: NotifyRequest, assignment: Assignment) -> None:
        try:
            result = await self._activity("notify", request, NotifyResult, NOTIFY_RETRY)
        except ActivityError as exc:
            self.ledger.record(workflow.now(), "notification_failed", "system",
                               step=request.step_id, to=request.recipient.person_id,
                               purpose=request.kind, error=str(exc.cause or exc))
            return
        self.ledger.record(workflow.now(), "reminder" if request.kind == "reminder" else "notified",
                           "system", step=request.step_id, to=request.recipient.person_id,
                           purpose=request.kind, channels=[*result.delivered, *result.already_done],
                           skipped=result.skipped or None, via=assignment.via,
                           replaces=assignment.replaces)

    async def _gather(self, calls: Sequence[Awaitable[None]]) -> None:
        if not calls:
            return
        tasks = [asyncio.ensure_future(call) for call in calls]
        await workflow.wait(tasks)
        for task in tasks:
            task.result()

    async def _run_action(self, step: Step) -> None:
        assert step.action is not None
        request = ActionRequest(
            idempotency_key=f"{self.ledger.incident.id}:{step.id}",
            incident_id=self.ledger.incident.id, step_id=step.id,
            url=self._render(step.action.url), method=step.action.method,
            payload=render(step.action.payload, self._context()),
            headers=step.action.headers)
        try:
            result = await self._activity("run_action", request, ActionResult, ACTION_RETRY)
        except ActivityError as exc:
            self.ledger.record(workflow.now(), "action_failed", "system", step=step.id,
                               url=request.url, error=str(exc.cause or exc))
            self._progress(step).outcome = "failed"
            return
        self._progress(step).outcome = "done"
        self.ledger.record(workflow.now(), "action_run", "system", step=step.id, url=request.url,
                           status_code=result.status_code)

    async def _reminder_loop(self, step: Step) -> None:
        assert step.reminder is not None
        progress = self._progress(step)
        while not self._halted():
            last = progress.last_fired_at or progress.started_at
            assert last is not None
            due = last + step.reminder.every
            if not await self._wait(due):
                return
            progress.last_fired_at = due
            count = int((due - (progress.started_at or due)) / step.reminder.every)
            await self._notify(step.id, step.reminder.to, step.reminder.message, kind="reminder",
                               channels=step.reminder.channels, suffix=f"r{count}")

    async def _sync(self) -> None:
        """Write what changed to the Redis projection (ordered; failures retried later).

        A regular activity on purpose: it is scheduled only once the workflow task that made
        the change is committed. A local activity runs before the commit, so a workflow task
        that then fails (e.g. an aborted update) would leave uncommitted entries and revisions
        in Redis, where they shadow the real ones.
        """
        async with self._sync_lock:
            batch = self.ledger.take_batch()
            if batch is None:
                return
            try:
                await self._activity("project", batch, type(None), PROJECT_RETRY)
            except ActivityError:
                workflow.logger.warning("projection failed; will resend everything next time")
                self.ledger.mark_all_changed()

    # ---- templates -----------------------------------------------------------------

    def _context(self) -> dict[str, Any]:
        incident = {"incident": self._fields()}
        steps: dict[str, dict[str, Any]] = {}
        for _, step in self.playbook.walk():
            progress = self.ledger.state.progress.get(step.id)
            entry: dict[str, Any] = {"outcome": progress.outcome if progress else None}
            if step.approval is not None:
                entry["content"] = render(step.approval.content, incident)
            steps[step.id] = entry
        return {**incident, "steps": steps}

    def _fields(self) -> dict[str, Any]:
        incident = self.ledger.incident
        data = incident.model_dump(mode="json", exclude={"playbook", "rev"})
        data.update(playbook_id=incident.playbook.id, playbook_version=incident.playbook.version,
                    url=f"{self.start.public_url}/incidents/{incident.id}")
        return data

    def _render(self, template: str) -> str:
        return str(render(template, self._context()))

    def _lookup(self, path: str) -> str:
        value: Any = self._context()
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    # ---- handlers ------------------------------------------------------------------

    def _approval_of(self, task_id: str) -> Approval:
        task = self.ledger.state.tasks[task_id]
        approval = self.playbook.step(task.node_id).approval
        assert approval is not None
        return approval

    async def _answer(self, apply: Callable[[], T]) -> T:
        """Run a ledger change, write it to the projection, then return its result."""
        try:
            result = apply()
        except LedgerError as exc:
            raise _business_error(exc) from None
        await self._sync()
        return result

    @workflow.update(name="report")
    async def report(self, report: Report) -> ReportResult:
        if report.id == self.start.opening_report_id:
            await workflow.wait_condition(lambda: self._opened_synced)
            return ReportResult(created=True, incident=self.ledger.incident)
        if not any(e.details.get("report_id") == report.id for e in self.ledger.state.timeline):
            self.ledger.add_report(report, workflow.now())
        await self._sync()
        return ReportResult(created=False, incident=self.ledger.incident)

    @report.validator
    def _validate_report(self, report: Report) -> None:
        if report.id != self.start.opening_report_id:
            self._check(self.ledger.require_open)

    @workflow.signal(name="add_report")
    async def add_report(self, report: Report) -> None:
        if self.ledger.is_open and not any(
                e.details.get("report_id") == report.id for e in self.ledger.state.timeline):
            self.ledger.add_report(report, workflow.now())
            await self._sync()

    @workflow.update(name="decide")
    async def decide(self, req: DecideRequest) -> DecideResult:
        task = self.ledger.state.tasks.get(req.task_id)
        approval = self._approval_of(task.id) if task else None
        return await self._answer(
            lambda: self.ledger.decide(req, approval, workflow.now()))  # type: ignore[arg-type]

    @decide.validator
    def _validate_decide(self, req: DecideRequest) -> None:
        self._check(lambda: self.ledger.validate_decision(req))

    @workflow.update(name="delegate")
    async def delegate(self, req: DelegateRequest) -> DelegateResult:
        result = await self._answer(lambda: self.ledger.delegate(req, workflow.now()))
        if result.new_task.state == "open":
            approval = self._approval_of(result.new_task.id)
            await self._notify_tasks(result.new_task.node_id, [result.new_task.assignee],
                                     approval, result.new_task.content,
                                     suffix=f"delegated.{result.new_task.id}")
        return result

    @delegate.validator
    def _validate_delegate(self, req: DelegateRequest) -> None:
        self._check(lambda: self.ledger.validate_delegation(req, self.directory))

    @workflow.update(name="post_status_update")
    async def post_status_update(self, req: StatusUpdateRequest) -> TimelineEntry:
        def apply() -> TimelineEntry:
            first = self.ledger.answered(req)
            if first is not None:
                return TimelineEntry.model_validate(first)
            entry = self.ledger.record(workflow.now(), "status_update", req.actor,
                                       message=req.message)
            self.ledger.remember(req, entry)
            return entry
        return await self._answer(apply)

    @post_status_update.validator
    def _validate_status(self, req: StatusUpdateRequest) -> None:
        self._check(lambda: self._check_communicator(req))

    @workflow.update(name="resolve")
    async def resolve(self, req: ResolveRequest) -> Incident:
        def apply() -> Incident:
            first = self.ledger.answered(req)
            if first is not None:
                return Incident.model_validate(first)
            self.ledger.resolve(req.actor, req.summary, workflow.now())
            self.ledger.remember(req, self.ledger.incident)
            return self.ledger.incident
        return await self._answer(apply)

    @resolve.validator
    def _validate_resolve(self, req: ResolveRequest) -> None:
        self._check(lambda: self._check_communicator(req))

    def _check_communicator(self, req: StatusUpdateRequest | ResolveRequest) -> None:
        if self.ledger.answered(req) is None:
            self.ledger.require_communicator(req.actor, self.directory)
            self.ledger.require_open()

    @staticmethod
    def _check(check: Callable[[], None]) -> None:
        try:
            check()
        except LedgerError as exc:
            raise _business_error(exc) from None

    @workflow.query(name="state")
    def state(self) -> IncidentView:
        return self.ledger.view()

    @workflow.query(name="timeline")
    def timeline(self) -> list[TimelineEntry]:
        return self.ledger.state.timeline


__all__ = ["IncidentWorkflow", "ProjectionBatch"]
