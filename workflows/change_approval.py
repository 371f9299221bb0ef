"""`ChangeApprovalWorkflow`: the review of one proposed playbook or directory version.

Started by the catalog, one per proposal (id `<catalog>/change/<subject>/v<n>`):

1. runs the dry run (`policy_dry_run` activity) of the proposed text against the scenario
   files; a failing dry run ends the review `rejected` and the version can never be active;
2. opens an approval node whose voters are the people the change policy allows in the
   *active* directory (by default: admins other than the author), evaluated with
   `domain.quorum` exactly like an incident's approval node (k-of-n, per-role rules, veto);
3. tells the catalog the outcome (signal `proposal_closed`) and waits for its `recorded`
   signal, so a `decide` update that reaches quorum returns once the version is active.

The `decide` update's validator checks the voter again (author, eligibility, double votes),
so the rules hold even if the API is bypassed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.directory import Target, resolve_targets
    from domain.durations import format_duration
    from domain.effects import NotifyRequest, NotifyResult, Recipient
    from domain.policy_versions import (
        ALREADY_DECIDED,
        AUTHOR_CANNOT_APPROVE,
        DRY_RUN_FAILED,
        DRY_RUN_PENDING,
        NOT_AN_APPROVER,
        PROPOSAL_CLOSED,
        ChangeDecision,
        ChangeInput,
        DecisionRecord,
        DryRunSummary,
        NotifiedRecord,
        PolicyError,
        ProposalClosed,
        ReviewOutcome,
        ReviewState,
        describe_subject,
        directory_of,
    )
    from domain.quorum import Outcome, QuorumError, Tally

DRY_RUN_TIMEOUT = timedelta(minutes=10)
DRY_RUN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3,
                            non_retryable_error_types=["DryRunInvalid"])
RECORD_WAIT = timedelta(seconds=30)
NOTIFY_TIMEOUT = timedelta(seconds=30)
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                           maximum_interval=timedelta(minutes=1), maximum_attempts=5,
                           non_retryable_error_types=["DeliveryRejected"])


def _refuse(code: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=code, non_retryable=True)


@workflow.defn(name="PolicyChange")
class ChangeApprovalWorkflow:
    @workflow.init
    def __init__(self, change: ChangeInput) -> None:
        self.change = change
        directory = directory_of(change.reviewers_directory_z)
        self.directory = directory
        try:
            self.tally = change.policy.tally(directory, change.author)
        except PolicyError:  # the catalog checked this; the directory can't have changed
            self.tally = Tally(policy=change.policy.quorum())
        self.review = ReviewState(
            proposal_id=change.proposal_id, subject=change.subject, number=change.number,
            sha256=change.sha256, author=change.author, policy=change.policy.describe(),
            eligible=sorted(self.tally.slots))
        self.recorded = False

    @workflow.run
    async def run(self, change: ChangeInput) -> ReviewState:
        summary = await self._dry_run()
        self.review.dry_run = summary
        if self.review.outcome is ReviewOutcome.pending:
            if not summary.passed:
                self._close(ReviewOutcome.rejected, "the dry run failed: " + _failures(summary))
            elif self.tally.check() is not Outcome.pending:
                self._close(ReviewOutcome.rejected,
                            f"the change policy ({self.review.policy}) cannot be met")
        if self.review.outcome is ReviewOutcome.pending:
            await self._notify([Target(person=p) for p in self.review.eligible], "review", None)
            deadline = workflow.now() + change.policy.deadline
            await self._escalate(deadline)
            try:
                await workflow.wait_condition(
                    self._decided, timeout=max(deadline - workflow.now(), timedelta(0)))
            except TimeoutError:
                self._close(ReviewOutcome.rejected, "expired: no decision within "
                            f"{format_duration(change.policy.deadline)}")
        await workflow.get_external_workflow_handle(change.catalog_id).signal(
            "proposal_closed", ProposalClosed(review=self.review))
        try:
            await workflow.wait_condition(lambda: self.recorded, timeout=RECORD_WAIT)
        except TimeoutError:
            workflow.logger.warning("the catalog did not confirm %s", change.proposal_id)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.review

    async def _dry_run(self) -> DryRunSummary:
        try:
            result: DryRunSummary = await workflow.execute_activity(
                "policy_dry_run", self.change.dry_run, result_type=DryRunSummary,
                start_to_close_timeout=DRY_RUN_TIMEOUT, retry_policy=DRY_RUN_RETRY)
            return result
        except ActivityError as exc:
            cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc)
            return DryRunSummary(passed=False, problems=[f"the dry run could not run: {cause}"])

    def _decided(self) -> bool:
        return self.review.outcome is not ReviewOutcome.pending

    async def _escalate(self, deadline: datetime) -> None:
        """Each tier fires `after` the review opened if it is still undecided, like a
        statement's escalation: durable timers, so a worker restart changes nothing."""
        opened = workflow.now()
        tiers = sorted(enumerate(self.change.policy.escalation), key=lambda t: t[1].after)
        for index, tier in tiers:
            if opened + tier.after >= deadline:
                return
            wait = opened + tier.after - workflow.now()
            if wait > timedelta(0):
                try:
                    await workflow.wait_condition(self._decided, timeout=wait)
                except TimeoutError:
                    pass
            if self._decided():
                return
            self.review.tiers_fired.append(index)
            await self._notify(tier.notify, "escalation", index)

    async def _notify(self, targets: list[Target], purpose: Literal["review", "escalation"],
                      tier: int | None) -> None:
        review = self.review
        what = describe_subject(review.subject)
        waiting = [p for p in review.eligible
                   if not any(d.actor == p for d in review.decisions)]
        subject = f"[REVIEW] {what} v{review.number}"
        message = (f"{review.author} proposes {what} v{review.number}"
                   + (f": {self.change.note}" if self.change.note else "") + ". "
                   f"The dry run passed. It needs {review.policy}; waiting on "
                   f"{', '.join(waiting) or 'nobody'}.\n\n{self.change.link()}")
        if purpose == "escalation":
            message = f"Still no decision on this change. {message}"
        suffix = "review" if tier is None else f"tier{tier}"
        # reviewers are told themselves; escalation targets may have on-call stand-ins
        for assignment in resolve_targets(targets, self.directory, workflow.now(),
                                          respect_hours=purpose == "escalation"):
            person = self.directory.person(assignment.person_id)
            request = NotifyRequest(
                idempotency_key=f"{self.change.proposal_id}:{suffix}:{person.id}",
                incident_id=self.change.proposal_id, step_id="review",
                kind="task" if purpose == "review" else "escalation",
                recipient=Recipient(person_id=person.id, name=person.name, email=person.email,
                                    webhook=person.webhook),
                channels=list(self.change.policy.channels), subject=subject, message=message)
            record = NotifiedRecord(at=workflow.now(), to=person.id, purpose=purpose,
                                    tier=tier)
            try:
                result: NotifyResult = await workflow.execute_activity(
                    "notify", request, result_type=NotifyResult,
                    start_to_close_timeout=NOTIFY_TIMEOUT, retry_policy=NOTIFY_RETRY)
                record.channels = [*result.delivered, *result.already_done]
            except ActivityError as exc:
                record.error = str(exc.cause or exc)
            review.notified.append(record)

    def _close(self, outcome: ReviewOutcome, reason: str) -> None:
        self.review.outcome = outcome
        self.review.reason = reason
        self.review.decided_at = workflow.now()

    # ---- the approval node -----------------------------------------------------------

    @workflow.update(name="decide")
    async def decide(self, decision: ChangeDecision) -> ReviewState:
        if self._repeat(decision):
            return self.review
        now = workflow.now()
        if decision.actor == self.change.author and decision.actor not in self.tally.slots:
            self.review.decisions.append(DecisionRecord(
                actor=decision.actor, decision="withdraw", comment=decision.comment, at=now))
            self._close(ReviewOutcome.rejected, f"withdrawn by its author {decision.actor}")
        else:
            outcome = self.tally.vote(decision.actor, decision.approve)
            self.review.decisions.append(DecisionRecord(
                actor=decision.actor, decision="approve" if decision.approve else "reject",
                comment=decision.comment, at=now))
            if outcome is Outcome.approved:
                voters = [d.actor for d in self.review.decisions if d.decision == "approve"]
                self._close(ReviewOutcome.approved,
                            f"approved by {', '.join(voters)} ({self.review.policy})")
            elif outcome is Outcome.vetoed:
                self._close(ReviewOutcome.rejected, f"vetoed by {decision.actor}")
            elif outcome is not Outcome.pending:
                no = [d.actor for d in self.review.decisions if d.decision == "reject"]
                self._close(ReviewOutcome.rejected, f"rejected by {', '.join(no)}: the "
                            f"change policy ({self.review.policy}) can no longer be met")
        if self.review.outcome is not ReviewOutcome.pending:
            try:
                await workflow.wait_condition(lambda: self.recorded, timeout=RECORD_WAIT)
            except TimeoutError:
                pass  # answered anyway; the catalog applies the signal when it runs
        return self.review

    def _repeat(self, decision: ChangeDecision) -> bool:
        """The same vote again (a client retry): answer the current state."""
        kind = "approve" if decision.approve else "reject"
        return any(d.actor == decision.actor and d.decision in (kind, "withdraw")
                   for d in self.review.decisions)

    @decide.validator
    def _validate_decide(self, decision: ChangeDecision) -> None:
        if self._repeat(decision):
            return
        review = self.review
        if review.outcome is not ReviewOutcome.pending:
            raise _refuse(PROPOSAL_CLOSED, f"this proposal is closed ({review.outcome}: "
                          f"{review.reason})")
        author_withdraws = decision.actor == self.change.author and not decision.approve
        if decision.actor not in self.tally.slots and not author_withdraws:
            if decision.actor == self.change.author:
                raise _refuse(AUTHOR_CANNOT_APPROVE, f"{decision.actor} proposed this change "
                              f"and cannot approve it ({review.policy})")
            raise _refuse(NOT_AN_APPROVER, f"{decision.actor} may not review this change "
                          f"({review.policy}); reviewers: {', '.join(review.eligible)}")
        if any(d.actor == decision.actor for d in review.decisions):
            raise _refuse(ALREADY_DECIDED, f"{decision.actor} has already decided")
        if decision.approve:
            if review.dry_run is None:
                raise _refuse(DRY_RUN_PENDING, "the dry run is still running; approve once "
                              "it has passed")
            if not review.dry_run.passed:
                raise _refuse(DRY_RUN_FAILED, "the dry run failed, so this version cannot "
                              "be activated: " + _failures(review.dry_run))
        if author_withdraws and decision.actor not in self.tally.slots:
            return
        try:
            Tally(policy=self.tally.policy, slots=dict(self.tally.slots)).vote(
                decision.actor, decision.approve)
        except QuorumError as exc:
            raise _refuse(ALREADY_DECIDED, str(exc)) from None

    @workflow.signal(name="recorded")
    def mark_recorded(self) -> None:
        self.recorded = True

    @workflow.query(name="review")
    def get_review(self) -> ReviewState:
        return self.review


def _failures(summary: DryRunSummary) -> str:
    failed = [f"{s.scenario}: {s.error}" for s in summary.scenarios if not s.passed]
    return "; ".join([*summary.problems, *failed]) or "see the report"
