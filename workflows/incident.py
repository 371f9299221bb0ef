"""`IncidentWorkflow`: one durable workflow per incident, interpreting a playbook snapshot.

The playbook and the directory arrive frozen in the input, so editing a YAML file never
changes a running incident (of the directory, only the people an incident can reach or must
authorize: `domain.incident_directory`). All state lives in one `IncidentWorkflowState` (see
`domain.ledger`), which is carried across continue-as-new; every step keeps its progress
there, so the interpreter can resume mid-playbook in a new run.

Handlers:
- updates (with validators): `report`, `decide`, `delegate`, `post_status_update`, `resolve`;
- signals: `add_report`, `add_reports` (reports signalled after resolution are handed on to
  the next incident for the key by the `forward_reports` activity, `domain.forwarding`);
- queries: `state`, `timeline`, `forwards_late_reports`.

A client reads its own write: an update answers in the workflow task that made the change,
its request id rides in the next projection batch, and the API answers once Redis shows it
(`_answer`; runs started before that wrote the projection before answering). Side effects
happen only in activities (`notify`, `run_action`, `project`), each with an idempotency key
`workflow_id:step_id[:suffix]` and bounded retries.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from domain.directory import Assignment, TimeOff
    from domain.effects import (
        DELIVERY_REJECTED,
        RETRYABLE_DELIVERY_ERRORS,
        ActionRequest,
        ActionResult,
        NotifyBatchRequest,
        NotifyBatchResult,
        NotifyOutcome,
        NotifyRequest,
        NotifyResult,
        ProjectionBatch,
        Recipient,
    )
    from domain.errors import LedgerError
    from domain.forwarding import FORWARD_ACTIVITY, ForwardReports
    from domain.incident import (
        CancelTaskRequest,
        ConfirmPublishRequest,
        DecideRequest,
        DecideResult,
        DelegateRequest,
        DelegateResult,
        Draft,
        Incident,
        IncidentFinal,
        IncidentView,
        KeepPostsPausedRequest,
        NodeState,
        ReassignRequest,
        Report,
        ReportResult,
        ResolveRequest,
        ResolveUnknownActionRequest,
        StartIncident,
        StatusUpdateRequest,
        SubmitDraftRequest,
        SubmitDraftResult,
        Task,
        TimelineEntry,
    )
    from domain.ledger import COMMUNICATOR_ACCESS, Ledger, has_access
    from domain.playbook import Approval, Channel, Step
    from domain.quorum import Outcome
    from domain.snapshot_cache import shared
    from domain.templates import render, render_url
    from domain.time_off import TIME_OFF_READ_ACTIVITY, ReadTimeOff, TimeOffRead, time_off_id

T = TypeVar("T")

NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                           maximum_interval=timedelta(minutes=1), maximum_attempts=5,
                           non_retryable_error_types=["DeliveryRejected"])
# After the first round: a channel that said "not now", or our Redis / SMTP relay being down,
# is retried with backoff for as long as the incident is open. Each call is bounded at 10 min
# and the loop checks in between, so a resolved incident is never held open by a dead relay.
NOTIFY_RETRY_DELAYED = RetryPolicy(initial_interval=timedelta(seconds=30), backoff_coefficient=2.0,
                                   maximum_interval=timedelta(minutes=2), maximum_attempts=0,
                                   non_retryable_error_types=["DeliveryRejected"])
DELAYED_CALL_LIMIT = timedelta(minutes=10)
ACTION_RETRY = NOTIFY_RETRY
PROJECT_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                            maximum_interval=timedelta(seconds=5), maximum_attempts=8)
# Redis down past PROJECT_RETRY: catch up on a durable timer (`_project_loop`); each try is
# one activity retrying every second (server-side, no history) for up to a minute.
PROJECT_RETRY_BEHIND = RetryPolicy(initial_interval=timedelta(milliseconds=500),
                                   backoff_coefficient=2.0, maximum_interval=timedelta(seconds=1),
                                   maximum_attempts=0)
PROJECT_CATCH_UP_CALL = timedelta(minutes=1)
PROJECT_CATCH_UP_TIMER_FIRST = timedelta(seconds=1)
PROJECT_CATCH_UP_TIMER_MAX = timedelta(seconds=2)
PROJECT_CATCH_UP_AFTER_RESOLVE = timedelta(hours=1)  # ~60 tries, ~700 events
# How long the projector lets a carried batch's activity finish before it sends that batch's
# changes again itself (see `_let_carried_land`): a command's answer waits at most this long.
CARRIED_WAIT = timedelta(seconds=1)
ACTIVITY_TIMEOUT = timedelta(seconds=30)
# An action heartbeats while its call is in flight: a worker that dies mid-call is noticed
# after this long (then the call is retried with the same Idempotency-Key, or, for an
# at-most-once action, its outcome is unknown), not after the 30 s start-to-close timeout.
ACTION_HEARTBEAT_TIMEOUT = timedelta(seconds=5)
# at-most-once: Temporal never retries the call by itself; the workflow sends again only
# after a failure that proves nothing reached the receiver, up to this many sends
AT_MOST_ONCE_RETRY = RetryPolicy(maximum_attempts=1)
AT_MOST_ONCE_SENDS = 5


def _missed_note(missed: int, what: str) -> str:
    """What a catch-up firing adds to its message: how many firings it stands for."""
    if missed <= 0:
        return ""
    plural = "s" if missed > 1 else ""
    return (f"\n\n(Catching up: {missed} earlier {what}{plural} fell due while crisis-engine "
            "was unavailable; this one message stands for them.)")
# Late reports were acknowledged to their reporters: keep trying for about an hour.
FORWARD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                            maximum_interval=timedelta(minutes=1), maximum_attempts=60)
# ... then the resolved run keeps the reports and tries again on a durable timer (a few
# history events per try, so a day-long outage costs about a hundred events)
FORWARD_CATCH_UP_FIRST = timedelta(minutes=5)
FORWARD_CATCH_UP_MAX = timedelta(hours=1)


# Reading the time-off overlay: a few minutes of retries (its worker restarting), then the
# incident keeps the overlay it has and takes the next revision it is told of.
READ_TIME_OFF_TIMEOUT = timedelta(minutes=5)
READ_TIME_OFF_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                  maximum_interval=timedelta(seconds=30))


# The template root of text inserted as is (`IncidentWorkflow._render`); playbooks can't
# use it (`domain.templates.check_placeholder` knows only incident. and steps.).
SLOT = "slot"


def _business_error(error: LedgerError) -> ApplicationError:
    return ApplicationError(error.message, type=error.code, non_retryable=True)


# Every patch below, recorded as one marker by runs started since (`_patches`).
ALL_PATCHES_OF_WAVE_3 = "wave-3-patches-in-one-marker"
# Later patches, each asked by its own name.
AWAY_HANDS_OVER_ALWAYS = "away-hands-over-when-hours-ignored"
# a `time_off` signal is a prompt: the overlay is read from its workflow, never the signal
TIME_OFF_FROM_ITS_WORKFLOW = "time-off-read-from-its-workflow"


def _patches() -> Callable[[str], bool]:
    """`since(patch)`: whether this run takes the patched path. A run started on today's
    code records one marker (`ALL_PATCHES_OF_WAVE_3`) that stands for every patch of wave
    3, instead of a marker and a search-attribute upsert per patch (26 history events per
    incident); a run started before it replays its own markers one by one, unchanged.
    A patch added later is asked for by its own name, outside this set."""
    if workflow.patched(ALL_PATCHES_OF_WAVE_3):
        return lambda _patch: True
    return workflow.patched


@workflow.defn(name="IncidentWorkflow")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, start: StartIncident) -> None:
        # the pinned playbook and directory: one copy per worker for identical content
        start.playbook, start.directory = shared(start.playbook), shared(start.directory)
        self.start = start
        self.playbook = start.playbook.definition
        self.ledger = Ledger.open(start, workflow.now())
        since = _patches()
        # Rules added while incidents were running: on only for histories that allow them.
        self.ledger.widen_quorum = since("widen-quorum-before-reject")
        self.ledger.tier_names_person = since("tier-adds-named-person")
        self.ledger.one_vote_per_person = since("one-vote-per-person")
        self.ledger.skip_away_on_call = since("away-on-call-hands-over")
        # someone away is replaced by on-call even where working hours are ignored; asked
        # (and its marker recorded) only when such a person would otherwise get a message
        self.ledger.away_hands_over = lambda: workflow.patched(AWAY_HANDS_OVER_ALWAYS)
        # delivery receipts; unreachable approvers handed to on-call; outages retried
        self._reach = since("delivery-receipts-and-outage-retries")
        # report storms: signals don't wait for the projection while draining for
        # continue-as-new (the state is carried over anyway)
        self._storm = since("storm-signals-skip-sync-while-draining")
        # after an outage, an overdue repeating tier or reminder fires once, noting how
        # many firings it stands for, then keeps its grid (no burst of missed firings)
        self._catch_up = since("catch-up-fires-once")
        self.ledger.catch_up_once = self._catch_up
        # on resolution, resume what a playbook action paused (scheduled posts)
        self._resume_posts = since("pause-posts-resume-on-resolve")
        # a two-person publish still waiting for its confirmation when the run continues
        # as new is not done: the next run keeps waiting (it used to be skipped)
        self._publish_waits_across_runs = since("two-person-wait-across-runs")
        # a reject that ends a drafts round asks the communicators for the next version
        self._ask_redraft = since("ask-for-redraft-on-reject")
        # durable storm receipts: reports signalled after resolution are handed on to the
        # next incident for the key, never dropped (see `domain.forwarding`)
        self._forward = since("storm-late-reports-forwarded")
        self._late: list[Report] = []
        self._late_ids: set[str] = set()
        self._sync_lock = asyncio.Lock()
        self._draining = False  # set before continue-as-new: every wait returns early
        self._background: list[asyncio.Task[None]] = []
        self._opened_synced = False
        # cost per incident: one projector writes at most one batch per activation, and
        # retries on a durable timer while Redis is down (see `_project_loop`)
        self._coalesce = since("perf-coalesced-projection")
        # one `notify_batch` activity per step for all its recipients (see `_notify`)
        self._notify_batch = self._reach and since("perf-one-notify-per-step")
        # a step's `notify_batch` carries the pending projection batch and writes it before
        # it sends (see `_carried_batch`); new runs record this one marker, which also
        # stands for `perf-answer-before-projection` (an older run replays its own)
        self._carry = self._coalesce and self._notify_batch and workflow.patched(
            "perf-notify-carries-projection")
        # commands answer in the workflow task that made the change; the API waits for the
        # projection instead (see `_answer`)
        self._answer_first = self._coalesce and (
            self._carry or workflow.patched("perf-answer-before-projection"))
        self._batches_taken = 0  # projection batches taken from the ledger so far
        self._batches_done = 0  # every batch up to this number is written (or given up on)
        self._batches_finished: set[int] = set()  # finished out of order, above that
        self._unfinished: dict[int, ProjectionBatch] = {}  # taken, not yet finished
        self._sync_waiting = 0  # callers of `_sync` waiting for their batch right now
        self._sync_wanted = 0  # the highest batch number some caller asked for
        self._projection_behind = False  # a write failed: Redis catches up on a timer
        self._projector_stop = False
        self._projector: asyncio.Task[None] | None = None

    # ---- main loop -----------------------------------------------------------------

    @workflow.run
    async def run(self, start: StartIncident) -> IncidentFinal:
        if self._coalesce:  # the opening projection goes out with the first notification
            self._projector = asyncio.create_task(self._project_loop())
            self._request_sync()
        else:
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
            await self._written_before_continuing()
            workflow.logger.info("continuing as new at history length %s",
                                 workflow.info().get_current_history_length())
            workflow.continue_as_new(start.model_copy(update={"state": self.ledger.state}))
        if self._resume_posts:
            await self._resume_paused_posts()
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._sync()
        if self._coalesce:
            await self._final_projection()
        if self._forward:  # last: reports signalled until the run completes are handed on
            await self._forward_late_reports()
        return IncidentFinal(view=self.ledger.view(), timeline=self.ledger.state.timeline)

    async def _written_before_continuing(self) -> None:
        """Every handler finished and its change written before the run continues as new.

        Carried runs (`perf-notify-carries-projection`) also wait for a command answered in
        the very activation that would continue as new, and for batches still in flight: a
        batch scheduled by a run that ends at once is never written, and a caller waiting
        for its answer would wait in vain (the next run writes the state, not the marks).
        Reports signalled meanwhile don't hold the run: they are carried over."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._sync()
            if not self._carry or self._projection_behind or not (
                    self._unfinished or self.ledger.answers_unsent()):
                return

    async def _forward_late_reports(self) -> None:
        """Hand reports signalled after resolution on to the next incident for the key.
        Loops until none is left: a signal arriving before the run completes is seen
        (Temporal refuses to complete a run with unseen signals). After an hour of failed
        tries the run keeps them and tries again on a durable timer, as long as it takes
        (runs from before that dropped them)."""
        failures = 0
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._late:
                return
            batch, self._late = self._late, []
            if self.start.dedup_key is None:  # only keyed reports are ever signalled
                workflow.logger.warning("dropping %s late reports without a dedup key",
                                        len(batch))
                continue
            template = self.start.model_copy(update={"state": None})
            try:
                await workflow.execute_activity(
                    FORWARD_ACTIVITY, ForwardReports(
                        from_incident_id=self.ledger.incident.id,
                        dedup_key=self.start.dedup_key, template=template, reports=batch),
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=FORWARD_RETRY)
            except ActivityError as exc:  # an hour of failures
                if not workflow.patched("forward-late-reports-until-placed"):
                    workflow.logger.error("could not hand on late reports %s: %s",
                                          [r.id for r in batch], exc.cause or exc)
                    continue  # runs from before: dropped
                # the reporters were told "accepted": keep them, and try again later
                pause = min(FORWARD_CATCH_UP_MAX, FORWARD_CATCH_UP_FIRST * 2 ** failures)
                failures += 1
                workflow.logger.error("late reports %s not handed on yet (%s); trying again "
                                      "in %s", [r.id for r in batch], exc.cause or exc, pause)
                self._late = [*batch, *self._late]
                await workflow.sleep(pause)

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

    async def _run_step(self, step: Step) -> bool:
        """Run one step (resuming from its progress); True once it has completed."""
        ledger = self.ledger
        progress = ledger.progress(step.id, workflow.now())
        if progress.status == "done":
            return True
        completed = True
        if step.notify is not None:
            await self._notify(step.id, ledger.resolve(step.notify.to, workflow.now()),
                               step.notify.message, kind="notify", channels=step.notify.channels)
        elif step.approval is not None:
            outcome = await self._run_approval(step.id, step.approval)
            if outcome == Outcome.pending:
                return False
            ledger.set_outcome(step.id, str(outcome))
            branch = step.approval.on_approved if outcome == Outcome.approved \
                else step.approval.on_rejected
            completed = await self._run_steps(branch)
        elif step.wait is not None:
            assert progress.started_at is not None
            completed = await self._wait(progress.started_at + step.wait.duration)
            if completed:
                ledger.record(workflow.now(), "waited", "playbook", step=step.id,
                              duration=str(step.wait.duration))
        elif step.action is not None:
            completed = await self._run_action(step)
            if step.action.resume_on_resolve is not None:
                ledger.note_pause(step.id, workflow.now())
        elif step.branch is not None:
            if progress.outcome is None:
                value = self._lookup(step.branch.on)
                case = value if value in step.branch.cases else "default"
                ledger.set_outcome(step.id, case)
                ledger.record(workflow.now(), "branch_taken", "playbook", step=step.id,
                              on=step.branch.on, value=value, case=case)
            chosen = step.branch.cases.get(progress.outcome or "", step.branch.default)
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
            ledger.finish_step(step.id)
        await self._sync(wait=False)
        return completed

    # ---- approval nodes ------------------------------------------------------------

    async def _run_approval(self, step_id: str, approval: Approval) -> Outcome:
        """Open the node (once), then wait for its outcome, firing tiers and the deadline."""
        ledger = self.ledger
        node = ledger.node(step_id)
        content = self._render(approval.content)
        title = self._render(approval.title)
        if node is None:
            tasks = ledger.open_approval(step_id, approval, workflow.now(), title=title,
                                         content=content)
            node = ledger.state.nodes[step_id]
            await self._sync_before_messages()
            if tasks:
                await self._notify_tasks(step_id, tasks, approval)
        while node.outcome == Outcome.pending and not self._halted():
            tier_index, fire_at = ledger.next_tier(step_id, approval)
            assert node.deadline is not None
            wake = min(fire_at, node.deadline) if fire_at is not None else node.deadline
            timeout = wake - workflow.now()
            if timeout > timedelta(0):
                try:
                    await workflow.wait_condition(self._node_moved(node), timeout=timeout)
                    continue
                except TimeoutError:
                    pass
            if self._halted():
                break
            if workflow.now() >= node.deadline:
                ledger.expire_node(step_id, workflow.now())
                await self._sync(wait=False)
            elif tier_index is not None:
                await self._fire_tier(step_id, approval, tier_index, title, content)
        return Outcome.pending if node.outcome == "cancelled" else Outcome(node.outcome)

    def _node_moved(self, node: NodeState) -> Callable[[], bool]:
        """Wake when the node ends, the incident halts, or a new draft starts a round (which
        may restart the escalation clock)."""
        round_ = node.round
        return lambda: node.outcome != Outcome.pending or self._halted() or node.round != round_

    async def _fire_tier(self, step_id: str, approval: Approval, index: int, title: str,
                         content: str) -> None:
        tier = approval.escalation[index]
        now = workflow.now()
        slots = self.ledger.tier_slots_due(step_id, approval, index, now) \
            if self._catch_up else 1
        firing, waiting, added = self.ledger.fire_tier(step_id, approval, index, now,
                                                       title=title, content=content,
                                                       slots=slots)
        node = self.ledger.state.nodes[step_id]
        await self._sync_before_messages()
        message = tier.message or (
            f"ESCALATION (tier {index + 1}): '{{{{slot.title}}}}' for incident "
            f"'{{{{incident.title}}}}' has no quorum after "
            f"{int((now - node.opened_at).total_seconds() // 60)} min. "
            "Needs {{slot.policy}}. Waiting on: {{slot.waiting}}. {{incident.url}}")
        message += _missed_note(slots - 1, "escalation")
        suffix = f"tier{index + 1}.{firing}"
        if tier.notify:
            await self._notify(step_id, self.ledger.resolve(tier.notify, now), message,
                               kind="escalation", suffix=suffix,
                               slots={"title": title, "policy": node.policy,
                                      "waiting": ", ".join(waiting) or "nobody"})
        if added:
            await self._notify_tasks(step_id, added, approval, suffix=suffix)

    async def _notify_tasks(self, step_id: str, tasks: list[Task], approval: Approval,
                            suffix: str = "tasks") -> None:
        """Tell each task's holder, as they were assigned: an on-call stand-in's message
        is recorded `via: oncall, replaces: ...`, like its task. The message quotes the text
        the tasks decide (`Task.content`: the current draft on a drafts node, also for a
        tier's or a stand-in's task), the same for every task of one call."""
        content = tasks[0].content
        message = ("Your approval is needed: {{slot.title}} (incident '{{incident.title}}', "
                   "severity {{incident.severity}}). Policy: {{slot.policy}}.\n\n"
                   "{{slot.content}}\n\n{{incident.url}}")
        await self._notify(step_id, self.ledger.assignments_of(tasks), message, kind="task",
                           suffix=suffix, tasks={t.assignee: t for t in tasks},
                           slots={"title": self._render(approval.title), "content": content,
                                  "policy": self.ledger.state.nodes[step_id].policy})

    # ---- effects -------------------------------------------------------------------

    async def _activity(self, name: str, arg: Any, result_type: type[T],
                        retry: RetryPolicy) -> T:
        result: T = await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=retry)
        return result

    async def _notify(self, step_id: str, assignments: list[Assignment], template: str, *,
                      kind: str, channels: list[Channel] | None = None,
                      suffix: str | None = None, tasks: dict[str, Task] | None = None,
                      slots: Mapping[str, str] | None = None) -> None:
        message = self._render(template, slots)
        incident = self.ledger.incident
        subject = f"[{incident.severity.value.upper()}] {incident.title}"
        key = f"{incident.id}:{step_id}" + (f":{suffix}" if suffix else "")
        calls = []
        batch: list[tuple[NotifyRequest, Assignment, Task | None]] = []
        for assignment in assignments:
            person = self.ledger.directory.person(assignment.person_id)
            task = (tasks or {}).get(person.id)
            if self._reach:
                recipient = Recipient.for_person(person)
            else:
                recipient = Recipient(person_id=person.id, name=person.name,
                                      email=person.email, webhook=person.webhook)
            # what the signed action links bind to: the task, its exact text, its deadline
            linked: dict[str, Any] = {} if task is None or not self._reach else {
                "task_id": task.id, "expires_at": task.deadline,
                "content_sha256": hashlib.sha256(task.content.encode()).hexdigest()}
            request = NotifyRequest(
                idempotency_key=f"{key}:{person.id}", incident_id=incident.id,
                step_id=step_id, kind=kind, recipient=recipient,
                channels=channels or self.playbook.defaults.channels, subject=subject,
                message=message, **linked)
            if self._notify_batch:
                batch.append((request, assignment, task))
            else:
                calls.append(self._deliver(request, assignment, task))
        if batch:
            await self._deliver_batch(batch)
        await self._gather(calls)
        await self._sync(wait=False)

    async def _deliver_batch(self, batch: list[tuple[NotifyRequest, Assignment, Task | None]]
                             ) -> None:
        """One `notify_batch` activity for all of a step's recipients; those that failed for
        now go on through `_deliver` (retries, "delayed"), with the same idempotency keys, so
        only what failed is sent again."""
        carried = await self._carried_batch() if self._carry else None
        projected = False
        try:
            done: NotifyBatchResult = await workflow.execute_activity(
                "notify_batch", NotifyBatchRequest(
                    requests=[r for r, _, _ in batch],
                    projection=carried[1] if carried is not None else None),
                result_type=NotifyBatchResult, start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=NOTIFY_RETRY)
            outcomes: list[NotifyOutcome | None] = list(done.outcomes)
            projected = done.projected
        except ActivityError:
            outcomes = [None] * len(batch)
        if carried is not None:
            self._carried_written(*carried, written=projected)
        calls: list[Awaitable[None]] = []
        for (request, assignment, task), outcome in zip(batch, outcomes, strict=True):
            if outcome is None or (outcome.result is None and outcome.retryable):
                calls.append(self._deliver(request, assignment, task))
            elif outcome.result is not None:
                calls.append(self._settle(request, assignment, task, outcome.result, None))
            else:
                calls.append(self._settle(request, assignment, task, outcome.partial,
                                          outcome.error or "unknown error"))
        await self._gather(calls)

    async def _deliver(self, request: NotifyRequest, assignment: Assignment,
                       task: Task | None = None) -> None:
        if not self._reach:
            try:
                result = await self._activity("notify", request, NotifyResult, NOTIFY_RETRY)
            except ActivityError as exc:
                self.ledger.record_delivery_failure(
                    at=workflow.now(), step_id=request.step_id, kind=request.kind,
                    person_id=request.recipient.person_id, error=str(exc.cause or exc))
                return
            self.ledger.record_delivery(
                at=workflow.now(), step_id=request.step_id, kind=request.kind,
                assignment=assignment, channels=[*result.delivered, *result.already_done],
                skipped=result.skipped)
            return
        outcome, error = await self._deliver_until_done(request)
        await self._settle(request, assignment, task, outcome, error)

    async def _settle(self, request: NotifyRequest, assignment: Assignment, task: Task | None,
                      outcome: NotifyResult | None, error: str | None) -> None:
        """Record a delivery's receipts (or its failure); an unreachable task holder's
        on-call stand-in gets a task at once."""
        if outcome is not None and error is None:
            self.ledger.record_delivery(
                at=workflow.now(), step_id=request.step_id, kind=request.kind,
                assignment=assignment, channels=[*outcome.delivered, *outcome.already_done],
                skipped=outcome.skipped, receipts=outcome.receipts)
        else:
            self.ledger.record_delivery_failure(
                at=workflow.now(), step_id=request.step_id, kind=request.kind,
                person_id=request.recipient.person_id, error=error or "unknown error",
                receipts=outcome.receipts if outcome is not None else None)
        if task is not None and outcome is not None and outcome.unreachable():
            added = self.ledger.stand_in_for_unreachable(task.id, workflow.now())
            if added:
                await self._sync_before_messages()
                approval = self.ledger.approval_of(added[0])
                await self._notify_tasks(added[0].node_id, added, approval,
                                         suffix=f"unreachable.{task.id}")

    async def _deliver_until_done(self, request: NotifyRequest
                                  ) -> tuple[NotifyResult | None, str | None]:
        """Deliver; a temporary failure (the channel said "not now", or our Redis or SMTP
        relay is down) is recorded as delayed and retried while the incident is open. Only
        a permanent refusal by the channel ends in a failure."""
        policy = NOTIFY_RETRY
        delayed = False
        while True:
            try:
                done: NotifyResult = await workflow.execute_activity(
                    "notify", request, result_type=NotifyResult,
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=policy,
                    schedule_to_close_timeout=DELAYED_CALL_LIMIT if delayed else None)
                return done, None
            except ActivityError as exc:
                cause = exc.cause
                partial = None
                if isinstance(cause, ApplicationError):
                    partial = NotifyResult.from_failure_details(list(cause.details))
                # a round of the delayed policy that ran out of time is not a refusal either
                retryable = (isinstance(cause, ApplicationError)
                             and cause.type in RETRYABLE_DELIVERY_ERRORS) or (
                    delayed and isinstance(cause, ActivityTimeout))
                if not retryable or self._halted():
                    return partial, str(cause or exc)
                if not delayed:
                    self.ledger.record_delivery_delayed(
                        at=workflow.now(), step_id=request.step_id, kind=request.kind,
                        person_id=request.recipient.person_id, error=str(cause),
                        infrastructure=bool(partial and any(
                            r.infrastructure for r in partial.receipts)))
                    await self._sync(wait=False)
                delayed, policy = True, NOTIFY_RETRY_DELAYED

    async def _gather(self, calls: Sequence[Awaitable[None]]) -> None:
        if not calls:
            return
        tasks = [asyncio.ensure_future(call) for call in calls]
        await workflow.wait(tasks)
        for task in tasks:
            task.result()

    async def _run_action(self, step: Step) -> bool:
        """Run an action step; False only if an at-most-once action is still waiting for a
        human when the incident halts (the next run asks again)."""
        action = step.action
        assert action is not None
        headers = dict(action.headers)
        published = None
        if action.publishes is not None:
            try:
                published = self.ledger.publication(action.publishes)
            except LedgerError as exc:
                self.ledger.record_action(at=workflow.now(), step_id=step.id,
                                          url=self._render_url(action.url),
                                          error=exc.message)
                return True
            if action.confirm == "two_person":
                self.ledger.await_confirmation(step.id, published, workflow.now())
                await self._sync()
                await workflow.wait_condition(
                    lambda: self.ledger.is_confirmed(step.id) or self._halted())
                if self._halted():
                    # draining for continue-as-new: the next run waits for the confirmation
                    # again (the step isn't done); resolved: nothing is published
                    return not (self._publish_waits_across_runs and self._draining)
            headers["X-Crisis-Content-SHA256"] = published.sha256
        request = ActionRequest(
            idempotency_key=f"{self.ledger.incident.id}:{step.id}",
            incident_id=self.ledger.incident.id, step_id=step.id,
            url=self._render_url(action.url), method=action.method,
            payload=render(action.payload, self._context()), headers=headers)
        if action.at_most_once:
            return await self._send_at_most_once(step.id, request, published)
        carried = await self._carried_batch() if self._carry else None
        if carried is not None:
            request = request.model_copy(update={"projection": carried[1]})
        try:
            result = await workflow.execute_activity(
                "run_action", request, result_type=ActionResult,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                heartbeat_timeout=ACTION_HEARTBEAT_TIMEOUT, retry_policy=ACTION_RETRY)
        except ActivityError as exc:
            if carried is not None:
                self._carried_written(*carried, written=False)
            self.ledger.record_action(at=workflow.now(), step_id=step.id, url=request.url,
                                      error=str(exc.cause or exc))
            return True
        if carried is not None:
            self._carried_written(*carried, written=result.projected)
        self.ledger.record_action(at=workflow.now(), step_id=step.id, url=request.url,
                                  status_code=result.status_code, published=published)
        return True

    async def _send_at_most_once(self, step_id: str, request: ActionRequest,
                                 published: Draft | None) -> bool:
        """An action whose receiver can't deduplicate: "sending" is recorded before every
        call, Temporal never retries a call, and the workflow sends again only after a
        failure that proves nothing reached the receiver. A call that may have reached it
        (a timeout, a dead worker, a 5xx other than 503) makes the outcome unknown: the
        timeline says so, the opener is asked, and the step waits for a communicator's
        `resolve_unknown_action` ("it was sent" / "send it again")."""
        ledger = self.ledger
        request = request.model_copy(update={"at_most_once": True})
        sends = 0
        while True:
            state = ledger.action_state(step_id)
            if state in ("done", "failed"):
                return True
            if state == "sending":  # a call without a recorded end (defensive)
                await self._outcome_unknown(step_id, request, "the call had no recorded end")
                continue
            if state == "unknown":
                await workflow.wait_condition(
                    lambda: ledger.action_state(step_id) != "unknown" or self._halted())
                if ledger.action_state(step_id) == "unknown":
                    return False
                sends = 0
                continue
            sends += 1
            ledger.action_sending(step_id, workflow.now(), url=request.url, attempt=sends,
                                  idempotency_key=request.idempotency_key)
            await self._sync()
            try:
                result = await workflow.execute_activity(
                    "run_action", request, result_type=ActionResult,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    heartbeat_timeout=ACTION_HEARTBEAT_TIMEOUT,
                    retry_policy=AT_MOST_ONCE_RETRY)
            except ActivityError as exc:
                cause = exc.cause
                error = str(cause or exc)
                kind = cause.type if isinstance(cause, ApplicationError) else None
                if kind in RETRYABLE_DELIVERY_ERRORS and sends < AT_MOST_ONCE_SENDS:
                    # provably not processed (no connection, 408/429/503, our Redis down)
                    assert isinstance(cause, ApplicationError)
                    ledger.set_outcome(step_id, "retry")
                    delay = cause.next_retry_delay or timedelta(seconds=2 * 2 ** (sends - 1))
                    if not await self._wait(workflow.now() + delay):
                        return False
                    continue
                if kind == DELIVERY_REJECTED or kind in RETRYABLE_DELIVERY_ERRORS:
                    ledger.record_action(at=workflow.now(), step_id=step_id, url=request.url,
                                         error=error)
                    return True
                await self._outcome_unknown(step_id, request, error)
                continue
            ledger.record_action(at=workflow.now(), step_id=step_id, url=request.url,
                                 status_code=result.status_code, published=published)
            return True

    async def _outcome_unknown(self, step_id: str, request: ActionRequest, error: str) -> None:
        entry = self.ledger.action_outcome_unknown(step_id, workflow.now(), url=request.url,
                                                   error=error)
        await self._sync()
        opener = self.ledger.incident.opened_by
        if has_access(self.ledger.directory, opener, COMMUNICATOR_ACCESS):
            await self._notify(
                step_id, [Assignment(person_id=opener)],
                f"The outcome of action '{step_id}' ({{{{slot.call}}}}) is "
                "unknown: the call may have reached the receiver, so it was not sent "
                "again. Please check the receiver, then answer 'it was sent' or 'send it "
                "again' on the incident. {{incident.url}}",
                kind="notify", suffix=f"unknown{entry.seq}",
                slots={"call": f"{request.method} {request.url}"})

    async def _resume_paused_posts(self) -> None:
        """The incident is resolved: call each pausing step's `resume_on_resolve` (once,
        idempotency key `<incident>:<step>:resume`), unless someone asked to keep posts
        paused. Each call, or its skip, is on the timeline with its status."""
        for step in self.ledger.to_resume():
            call = step.action.resume_on_resolve if step.action is not None else None
            assert call is not None
            url = self._render_url(call.url)
            kept = self.ledger.kept_paused()
            if kept is not None:
                self.ledger.record_posts_resume(workflow.now(), step.id, url, skipped=kept)
                continue
            request = ActionRequest(
                idempotency_key=f"{self.ledger.incident.id}:{step.id}:resume",
                incident_id=self.ledger.incident.id, step_id=step.id, url=url,
                method=call.method, payload=render(call.payload, self._context()),
                headers=dict(call.headers))
            try:
                result = await self._activity("run_action", request, ActionResult, ACTION_RETRY)
            except ActivityError as exc:
                self.ledger.record_posts_resume(workflow.now(), step.id, url,
                                                error=str(exc.cause or exc))
                continue
            self.ledger.record_posts_resume(workflow.now(), step.id, url,
                                            status_code=result.status_code)
        await self._sync()

    async def _reminder_loop(self, step: Step) -> None:
        assert step.reminder is not None
        progress = self.ledger.progress(step.id, workflow.now())
        while not self._halted():
            last = progress.last_fired_at or progress.started_at
            assert last is not None
            due = last + step.reminder.every
            if not await self._wait(due):
                return
            missed = 0
            if self._catch_up:  # late (an outage): the latest slot due, once
                due, missed = self.ledger.reminder_slot(step.id, workflow.now())
            count = self.ledger.fire_reminder(step.id, due, missed, at=workflow.now())
            await self._notify(step.id, self.ledger.resolve(step.reminder.to, workflow.now()),
                               step.reminder.message + _missed_note(missed, "reminder"),
                               kind="reminder", channels=step.reminder.channels,
                               suffix=f"r{count}")

    async def _sync(self, *, wait: bool = True) -> None:
        """Write what changed to the Redis projection (ordered; failures retried later), and
        return once it is written: read-your-writes for updates.

        A regular activity on purpose: it is scheduled only once the workflow task that made
        the change is committed. A local activity runs before the commit, so a workflow task
        that then fails (e.g. an aborted update) would leave uncommitted entries and revisions
        in Redis, where they shadow the real ones.

        Coalesced (`perf-coalesced-projection`): the caller only asks `_project_loop` for
        the next batch and waits for it; every change made in the same activation rides in
        that one batch. While Redis is down (`_projection_behind`) nobody waits: the change is
        committed in Temporal and the projector's timer brings Redis up to date. The
        interpreter's own progress (`wait=False`) does not wait for Redis at all; it waits
        only where a message is about to link to what it just wrote (tasks).
        """
        if self._coalesce:
            wanted = self._request_sync()
            if wait:
                self._sync_waiting += 1
                try:
                    await workflow.wait_condition(
                        lambda: self._batch_written(wanted) or self._projection_behind)
                finally:
                    self._sync_waiting -= 1
            return
        async with self._sync_lock:
            batch = self.ledger.take_batch()
            if batch is None:
                return
            try:
                await self._activity("project", batch, type(None), PROJECT_RETRY)
            except ActivityError:
                workflow.logger.warning("projection failed; will resend everything next time")
                self.ledger.mark_all_changed()

    def _request_sync(self) -> int:
        """Ask the projector for the batch that will hold every change made so far."""
        wanted = self._batches_taken + 1
        self._sync_wanted = max(self._sync_wanted, wanted)
        return wanted

    async def _sync_before_messages(self) -> None:
        """What the next messages link to (their tasks) is in Redis before they are sent.
        Carried (`perf-notify-carries-projection`): their `notify_batch` writes it first,
        so this only asks for it (written by the projector if no message follows)."""
        if self._carry:
            self._request_sync()
        else:
            await self._sync()

    async def _carried_batch(self) -> tuple[int, ProjectionBatch] | None:
        """The pending changes, taken for a `notify_batch` (or `run_action`) that writes
        them before it sends; it also carries whatever batches still in flight hold
        (`_take_batch`), so what the messages link to is in Redis before they go.

        Not carried: the opening batch (the opening report's answer waits for it, and must
        not wait for deliveries), nor a batch someone is waiting for (`_sync`): the
        projector writes those first, and the messages wait for them as they did before."""
        if self._batches_taken == 0:
            return None
        if self._sync_waiting:
            await self._sync()
        number, batch = self._take_batch()
        if batch is None:
            self._finish_batch(number)
            return None
        return number, batch

    def _take_batch(self) -> tuple[int, ProjectionBatch | None]:
        """Number and take the next batch: every change since the last one, and, while
        carried, everything the batches still in flight hold. A carried batch lands only
        after its `notify_batch` started, so a later batch may land first; holding the
        earlier ones' changes too, whichever lands leaves the read model whole up to its
        revision (the writer keeps the newest revision and each timeline seq once)."""
        if self._carry:
            for in_flight in self._unfinished.values():
                self.ledger.requeue(in_flight)
        batch = self.ledger.take_batch()
        self._batches_taken += 1
        if batch is not None:
            self._unfinished[self._batches_taken] = batch
        return self._batches_taken, batch

    def _carried_written(self, number: int, batch: ProjectionBatch, *, written: bool) -> None:
        """A carried batch's `notify_batch` is done: if its write failed (Redis down), the
        changes go back to the ledger and the projector writes them on its timer."""
        if not written:
            workflow.logger.warning("carried projection not written; retrying on a timer")
            self.ledger.requeue(batch)
            self._projection_behind = True
        if self._projection_behind:  # the projector catches up, then says Redis is current
            self._request_sync()
        self._finish_batch(number)

    def _finish_batch(self, number: int) -> None:
        """Batch `number` is written (or given up on): move the watermark over every batch
        finished so far; a carried batch can finish after a later one."""
        self._unfinished.pop(number, None)
        self._batches_finished.add(number)
        while self._batches_done + 1 in self._batches_finished:
            self._batches_done += 1
            self._batches_finished.remove(self._batches_done)

    def _batch_written(self, number: int) -> bool:
        return number <= self._batches_done or number in self._batches_finished

    async def _project_loop(self) -> None:
        """The one projector: waits until someone asks, takes one batch (all changes of the
        activation so far), writes it with one `project` activity, and repeats.

        A failed write (Redis down past `PROJECT_RETRY`) releases the waiters, puts the batch
        back into the ledger, and is retried on a durable timer (backoff capped at
        `PROJECT_CATCH_UP_TIMER_MAX`), each try a `project` activity that itself retries
        every second for up to a minute: a write accepted during an outage reaches Redis
        within about 2 s of its return, with no rebuild. Ends when `_final_projection` says so.
        """
        failures = 0
        while True:
            await workflow.wait_condition(
                lambda: self._sync_wanted > self._batches_taken or self._projector_stop)
            if self._carry:  # let the interpreter run first: a step that sends now carries it
                await asyncio.sleep(0)
            if self._sync_wanted <= self._batches_taken:  # a `notify_batch` carried it
                if self._projector_stop:
                    return
                continue
            await self._let_carried_land()
            number, batch = self._take_batch()
            if batch is not None and not await self._write_batch(batch, behind=failures > 0):
                self.ledger.requeue(batch)
                self._projection_behind = True
                self._finish_batch(number)  # nobody waits through an outage
                failures += 1
                self._sync_wanted = max(self._sync_wanted, self._batches_taken + 1)
                if self._projector_stop:  # resolved and out of time: `crisis rebuild` repairs
                    return
                delay = min(PROJECT_CATCH_UP_TIMER_MAX,
                            PROJECT_CATCH_UP_TIMER_FIRST * 2 ** (failures - 1))
                try:
                    await workflow.wait_condition(lambda: self._projector_stop, timeout=delay)
                except TimeoutError:
                    pass
                continue
            failures = 0
            self._projection_behind = False
            self._finish_batch(number)
            self._opened_synced = True

    async def _let_carried_land(self) -> None:
        """A carried batch is still in flight: give its activity a moment to finish (its
        write comes first, so it has landed by then) rather than send all it holds again
        in this batch; a slow delivery costs the bytes, not the wait (`CARRIED_WAIT`).
        Someone waiting in the workflow for this batch (`_sync`, e.g. a report of a storm)
        never waits for a delivery: the batch takes the bytes at once."""
        if not (self._carry and self._unfinished) or self._sync_waiting:
            return
        try:
            await workflow.wait_condition(lambda: not self._unfinished or self._projector_stop,
                                          timeout=CARRIED_WAIT)
        except TimeoutError:
            pass

    async def _write_batch(self, batch: ProjectionBatch, *, behind: bool) -> bool:
        try:
            await workflow.execute_activity(
                "project", batch, start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=PROJECT_RETRY_BEHIND if behind else PROJECT_RETRY,
                schedule_to_close_timeout=PROJECT_CATCH_UP_CALL if behind else None)
            return True
        except ActivityError:
            workflow.logger.warning("projection failed; retrying on a timer")
            return False

    async def _final_projection(self) -> None:
        """Resolved: keep retrying until the final state is in Redis (bounded), then stop
        the projector."""
        wanted = self._request_sync()
        try:
            await workflow.wait_condition(
                lambda: self._batches_done >= wanted and not self._projection_behind,
                timeout=PROJECT_CATCH_UP_AFTER_RESOLVE)
        except TimeoutError:
            workflow.logger.warning("final projection not written; `crisis rebuild` repairs it")
        self._projector_stop = True
        if self._projector is not None:
            await self._projector

    # ---- templates -----------------------------------------------------------------

    def _context(self) -> dict[str, Any]:
        incident = {"incident": self._fields()}
        steps: dict[str, dict[str, Any]] = {}
        for _, step in self.playbook.walk():
            progress = self.ledger.state.progress.get(step.id)
            entry: dict[str, Any] = {"outcome": progress.outcome if progress else None}
            if step.approval is not None:
                entry["content"] = self.ledger.statement(
                    step.id, str(render(step.approval.content, incident)))
            steps[step.id] = entry
        return {**incident, "steps": steps}

    def _fields(self) -> dict[str, Any]:
        incident = self.ledger.incident
        data = incident.model_dump(mode="json", exclude={"playbook", "rev"})
        data.update(playbook_id=incident.playbook.id, playbook_version=incident.playbook.version,
                    url=f"{self.start.public_url}/ui/incidents/{incident.id}" if self._reach
                    else f"{self.start.public_url}/incidents/{incident.id}")
        return data

    def _render(self, template: str, slots: Mapping[str, str] | None = None) -> str:
        """Fill a template's placeholders. Text that came from people or from an earlier
        rendering (titles, drafts, comments, URLs) goes in `slots` as `{{slot.<name>}}`:
        it is inserted as it is, never read as a template itself, so a draft saying
        "{{incident.dedup_key}}" reaches approvers in exactly those words."""
        context = self._context_for(template)
        if slots:
            context[SLOT] = dict(slots)
        return str(render(template, context))

    def _render_url(self, template: str) -> str:
        """An action's URL: placeholders filled percent-encoded (`render_url`)."""
        return render_url(template, self._context_for(template))

    def _context_for(self, template: str) -> dict[str, Any]:
        """What `template` can name: the incident, plus every approval's content only when
        it names `steps` (building those renders each approval's content)."""
        return {"incident": self._fields()} if "steps" not in template else self._context()

    def _lookup(self, path: str) -> str:
        value: Any = self._context()
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    # ---- handlers: each routes a command to the aggregate ----------------------------

    async def _answer(self, request_id: str, apply: Callable[[], T]) -> T:
        """Run an aggregate command and return its result; the caller reads it in Redis.

        Answered first (`perf-answer-before-projection`): the result goes back in the
        workflow task that made the change, and the projector's next batch names
        `request_id`; the API waits for that name in Redis before it answers the caller
        (`ReadModel.wait_answered`), so read-your-writes holds without a second workflow
        task per command. A result is only ever delivered once Temporal committed it, so
        nothing uncommitted can reach Redis this way.
        """
        try:
            result = apply()
        except LedgerError as exc:
            raise _business_error(exc) from None
        self.ledger.answered(request_id, alone=self._answer_first)
        if self._answer_first:
            self._request_sync()
            return result
        await self._sync()
        return result

    @staticmethod
    def _check(check: Callable[[], None]) -> None:
        try:
            check()
        except LedgerError as exc:
            raise _business_error(exc) from None

    @workflow.update(name="report")
    async def report(self, report: Report) -> ReportResult:
        if report.id == self.start.opening_report_id:
            await workflow.wait_condition(
                lambda: self._opened_synced or (self._coalesce and self._projection_behind))
            return ReportResult(created=True, incident=self.ledger.incident,
                                forwards_late_reports=self._forward)
        if not self.ledger.has_report(report.id):
            # resolved between the validator and here: refuse, don't fail the workflow task
            def attach() -> None:
                self.ledger.add_report(report, workflow.now())
            self._check(attach)
        await self._sync()
        return ReportResult(created=False, incident=self.ledger.incident,
                            forwards_late_reports=self._forward)

    @report.validator
    def _validate_report(self, report: Report) -> None:
        if report.id != self.start.opening_report_id:
            self._check(self.ledger.require_open)

    @workflow.signal(name="add_report")
    async def add_report(self, report: Report) -> None:
        await self.add_reports([report])

    @workflow.signal(name="add_reports")
    async def add_reports(self, reports: list[Report]) -> None:
        """A batch of reports from a storm (the API sends them per short window): each is
        added once. A resolved incident takes none: it hands them on to the next incident
        for the key before it completes (`_forward_late_reports`; runs from before that
        dropped them, and the API confirmed by query). Never remove this handler: signals
        to a missing handler are dropped silently."""
        if not self.ledger.is_open:
            if self._forward:  # the API acknowledged them: hand them on (see `run`)
                for report in reports:
                    if report.id not in self._late_ids and not self.ledger.has_report(report.id):
                        self._late_ids.add(report.id)
                        self._late.append(report)
            return
        added = False
        for report in reports:
            added = self.ledger.add_report(report, workflow.now()) or added
        if added and not (self._storm and self._draining):
            await self._sync(wait=False)

    @workflow.update(name="decide")
    async def decide(self, req: DecideRequest) -> DecideResult:
        result = await self._answer(
            req.request_id, lambda: self.ledger.decide(req, workflow.now()))
        await self._notify_widened(result.task.node_id)
        if self._ask_redraft:
            await self._ask_for_redraft(result.task)
        return result

    async def _ask_for_redraft(self, task: Task) -> None:
        """A reject ended a drafts round: ask the communicators for the next version now,
        rather than when the node's deadline runs out."""
        request = self.ledger.redraft_request(task)
        if request is None or not request[0]:
            return
        people, reasons = request
        node = self.ledger.state.nodes[task.node_id]
        await self._notify(
            task.node_id, people,
            f"Draft v{node.draft_version} of '{{{{slot.title}}}}' was not approved in round "
            f"{node.round} ({{{{slot.reasons}}}}). Submit a new draft to start round "
            f"{node.round + 1}: {{{{incident.url}}}}", kind="notify",
            suffix=f"redraft{node.round}", slots={"title": node.title, "reasons": reasons})

    async def _notify_widened(self, node_id: str) -> None:
        added = self.ledger.take_widened()
        if added:
            await self._notify_tasks(node_id, added, self.ledger.approval_of(added[0]),
                                     suffix=f"widened.{added[0].id}")

    @decide.validator
    def _validate_decide(self, req: DecideRequest) -> None:
        self._check(lambda: self.ledger.validate_decision(req))

    @workflow.update(name="delegate")
    async def delegate(self, req: DelegateRequest) -> DelegateResult:
        result = await self._answer(
            req.request_id, lambda: self.ledger.delegate(req, workflow.now()))
        await self._notify_new_holder(result, f"delegated.{result.new_task.id}")
        return result

    @delegate.validator
    def _validate_delegate(self, req: DelegateRequest) -> None:
        self._check(lambda: self.ledger.validate_delegation(req))

    @workflow.update(name="reassign")
    async def reassign(self, req: ReassignRequest) -> DelegateResult:
        result = await self._answer(
            req.request_id, lambda: self.ledger.reassign(req, workflow.now()))
        await self._notify_new_holder(result, f"reassigned.{result.new_task.id}")
        return result

    @reassign.validator
    def _validate_reassign(self, req: ReassignRequest) -> None:
        self._check(lambda: self.ledger.validate_reassign(req))

    @workflow.update(name="cancel_task")
    async def cancel_task(self, req: CancelTaskRequest) -> DecideResult:
        result = await self._answer(
            req.request_id, lambda: self.ledger.cancel_task(req, workflow.now()))
        await self._notify_widened(result.task.node_id)
        return result

    @cancel_task.validator
    def _validate_cancel_task(self, req: CancelTaskRequest) -> None:
        self._check(lambda: self.ledger.validate_cancel_task(req))

    async def _notify_new_holder(self, result: DelegateResult, suffix: str) -> None:
        new = self.ledger.state.tasks[result.new_task.id]
        if new.state == "open":
            await self._notify_tasks(new.node_id, [new], self.ledger.approval_of(new),
                                     suffix=suffix)

    @workflow.update(name="submit_draft")
    async def submit_draft(self, req: SubmitDraftRequest) -> SubmitDraftResult:
        result = await self._answer(
            req.request_id, lambda: self.ledger.submit_draft(req, workflow.now()))
        if result.tasks:
            approval = self.ledger.approval_of(result.tasks[0])
            live = [self.ledger.state.tasks[t.id] for t in result.tasks]
            await self._notify_tasks(req.node_id, [t for t in live if t.state == "open"],
                                     approval, suffix=f"draft{result.draft.version}")
        return result

    @submit_draft.validator
    def _validate_submit_draft(self, req: SubmitDraftRequest) -> None:
        self._check(lambda: self.ledger.validate_draft(req))

    @workflow.update(name="confirm_publish")
    async def confirm_publish(self, req: ConfirmPublishRequest) -> TimelineEntry:
        return await self._answer(
            req.request_id, lambda: self.ledger.confirm_publish(req, workflow.now()))

    @confirm_publish.validator
    def _validate_confirm_publish(self, req: ConfirmPublishRequest) -> None:
        self._check(lambda: self.ledger.validate_confirm_publish(req))

    @workflow.update(name="resolve_unknown_action")
    async def resolve_unknown_action(self, req: ResolveUnknownActionRequest) -> TimelineEntry:
        """A communicator says what happened to an at-most-once action whose outcome is
        unknown: `sent` ends it as done, `resend` sends it once more."""
        return await self._answer(
            req.request_id, lambda: self.ledger.resolve_unknown(req, workflow.now()))

    @resolve_unknown_action.validator
    def _validate_resolve_unknown_action(self, req: ResolveUnknownActionRequest) -> None:
        self._check(lambda: self.ledger.validate_resolve_unknown(req))

    @workflow.query(name="drafts")
    def drafts(self) -> dict[str, list[Any]]:
        return {node: [d.model_dump(mode="json") for d in versions]
                for node, versions in self.ledger.state.drafts.items()}

    @workflow.signal(name="time_off")
    async def time_off(self, overlay: TimeOff) -> None:
        """A new revision of the time-off overlay (away periods, roster overrides): used
        from the next assignment on. Old or repeated revisions are ignored.

        Signals are not signed, so the signal's overlay is only its sender's word: runs
        since `time-off-read-from-its-workflow` read the overlay from the deployment's
        `TimeOff` workflow (changed by signed updates only) and apply that, whatever the
        signal said. Runs from before take the signal's copy, as they did."""
        if not self.ledger.is_open:
            return  # nothing left to route (the ledger refuses it too)
        if workflow.patched(TIME_OFF_FROM_ITS_WORKFLOW):
            read = await self._read_time_off()
            if read is None:
                return
            overlay = read
        if self.ledger.apply_time_off(overlay, workflow.now()):
            await self._sync()

    async def _read_time_off(self) -> TimeOff | None:
        workflow_id = time_off_id(workflow.info().task_queue)
        try:
            read: TimeOffRead = await workflow.execute_activity(
                TIME_OFF_READ_ACTIVITY, ReadTimeOff(workflow_id=workflow_id),
                result_type=TimeOffRead, schedule_to_close_timeout=READ_TIME_OFF_TIMEOUT,
                retry_policy=READ_TIME_OFF_RETRY)
        except ActivityError as exc:
            workflow.logger.error("time-off overlay not read from %s: %s", workflow_id,
                                  exc.cause or exc)
            return None
        if read.overlay is None:
            workflow.logger.warning("told of a time-off overlay, but %s holds none",
                                    workflow_id)
        return read.overlay

    @workflow.update(name="keep_posts_paused")
    async def keep_posts_paused(self, req: KeepPostsPausedRequest) -> TimelineEntry:
        return await self._answer(
            req.request_id, lambda: self.ledger.keep_posts_paused(req, workflow.now()))

    @keep_posts_paused.validator
    def _validate_keep_posts_paused(self, req: KeepPostsPausedRequest) -> None:
        self._check(lambda: self.ledger.validate_keep_posts_paused(req))

    @workflow.update(name="post_status_update")
    async def post_status_update(self, req: StatusUpdateRequest) -> TimelineEntry:
        return await self._answer(
            req.request_id, lambda: self.ledger.post_status_update(req, workflow.now()))

    @post_status_update.validator
    def _validate_status(self, req: StatusUpdateRequest) -> None:
        self._check(lambda: self.ledger.validate_status_update(req))

    @workflow.update(name="resolve")
    async def resolve(self, req: ResolveRequest) -> Incident:
        return await self._answer(
            req.request_id, lambda: self.ledger.resolve_incident(req, workflow.now()))

    @resolve.validator
    def _validate_resolve(self, req: ResolveRequest) -> None:
        self._check(lambda: self.ledger.validate_resolve(req))

    @workflow.query(name="state")
    def state(self) -> IncidentView:
        return self.ledger.view()

    @workflow.query(name="forwards_late_reports")
    def forwards_late_reports(self) -> bool:
        """True when reports signalled after resolution are handed on, never dropped: the
        API may then acknowledge a report as soon as its signal is accepted."""
        return self._forward

    @workflow.query(name="timeline")
    def timeline(self) -> list[TimelineEntry]:
        return self.ledger.state.timeline


__all__ = ["IncidentWorkflow", "ProjectionBatch"]
