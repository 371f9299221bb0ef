"""`PolicyCatalogWorkflow`: the version store of the playbooks and the directory.

One long-lived workflow per deployment (id from `core.policy_store.catalog_id`). Its state,
`domain.policy_versions.CatalogState`, holds every version of every subject (sha256, number,
author, time, note, status and review) and which version is active; it is carried across
continue-as-new. The texts (exact bytes, compressed) of the active versions and of open
proposals are kept inline; every other version's text is handed to a `PolicyText` child
workflow of its own (`workflows/policy_text.py`) as soon as it is superseded or rejected, so
the state stays far below Temporal's 2 MB payload limit however often the directory changes
(catalogs from before that keep texts inline until they next continue as new). Temporal is
the source of truth: the API's registry only caches what the `active` query answers.

Handlers:
- update `propose`: record a `proposed` version and start its `ChangeApprovalWorkflow`
  (a child that outlives this run: parent close policy ABANDON);
- update `bootstrap`: the first version of a subject, active without review;
- signal `proposal_closed`: a review ended; read the review from the review workflow itself
  (a signal is only its sender's word), activate or reject, then tell the review;
- queries `active`, `versions`, `version` (a version kept elsewhere answers its `text_ref`).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from domain.policy_versions import (
        DIRECTORY,
        PLAYBOOK_PREFIX,
        ActiveSet,
        BootstrapRequest,
        CatalogStart,
        CatalogState,
        ChangeInput,
        DryRunRequest,
        PolicyError,
        PolicyTextStart,
        ProposalClosed,
        ProposeRequest,
        ReadReview,
        ReviewRead,
        ReviewState,
        VersionRecord,
        VersionStatus,
        add_proposal,
        bootstrap,
        check_propose,
        close_proposal,
        confirms,
        policy_text_id,
        text_stored,
        texts_to_store,
    )
    from workflows.change_approval import ChangeApprovalWorkflow
    from workflows.policy_text import PolicyTextWorkflow


# A closed review is read from the review workflow before it changes what is active: a signal
# is only its sender's word (activities/review_reader.py). New catalogs record this marker on
# the first `proposal_closed`; histories from before it replay the old path.
READS_THE_REVIEW = "proposal-closed-reads-the-review"
# all attempts together, well inside the review's wait for `recorded` (30 s)
READ_REVIEW_TIMEOUT = timedelta(seconds=20)
READ_REVIEW_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=5))
# Texts of versions neither active nor proposed go to `PolicyText` workflows. Asked when the
# first such text is waiting in a run; runs from before it keep them inline.
TEXTS_KEPT_ELSEWHERE = "catalog-keeps-old-texts-in-workflows"


def proposal_id_template(catalog_id: str, subject: str) -> str:
    return f"{catalog_id}/change/{subject}/v{{number}}"


def _business(error: PolicyError) -> ApplicationError:
    return ApplicationError(error.message, type=error.code, non_retryable=True)


@workflow.defn(name="PolicyCatalog")
class PolicyCatalogWorkflow:
    @workflow.init
    def __init__(self, start: CatalogStart) -> None:
        self.start = start
        self.state = start.state or CatalogState()
        if start.state is not None:
            self.state.runs += 1
        self._keeps_texts_elsewhere: bool | None = None  # asked once a text waits

    @workflow.run
    async def run(self, start: CatalogStart) -> None:
        while not self._should_continue():
            await workflow.wait_condition(
                lambda: self._should_continue() or self._texts_waiting())
            if self._texts_waiting():
                if self._keeps_texts_elsewhere is None:
                    self._keeps_texts_elsewhere = workflow.patched(TEXTS_KEPT_ELSEWHERE)
                if self._keeps_texts_elsewhere:
                    await self._store_texts()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(start.model_copy(update={"state": self.state}))

    def _texts_waiting(self) -> bool:
        return self._keeps_texts_elsewhere is not False and bool(texts_to_store(self.state))

    async def _store_texts(self) -> None:
        """Hand each waiting text to a `PolicyText` workflow of its own (by content: the
        same text is kept once), then keep only the reference."""
        for record in texts_to_store(self.state):
            ref = policy_text_id(self.start.catalog_id, record.sha256)
            try:
                await workflow.start_child_workflow(
                    PolicyTextWorkflow.run,
                    PolicyTextStart(sha256=record.sha256, text_z=record.text_z), id=ref,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON)
            except WorkflowAlreadyStartedError:
                pass  # this very text is kept already
            text_stored(self.state, record.subject, record.number, ref)

    def _should_continue(self) -> bool:
        info = workflow.info()
        return (info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= self.start.continue_as_new_after_events)

    # ---- updates ---------------------------------------------------------------------

    @workflow.update(name="propose")
    async def propose(self, req: ProposeRequest) -> VersionRecord:
        existing = check_propose(self.state, req)
        if existing is not None:
            return existing.without_text()  # the same text again: idempotent
        record = add_proposal(self.state, req, workflow.now(),
                              proposal_id_template(self.start.catalog_id, req.subject))
        assert record.proposal_id is not None
        await workflow.start_child_workflow(
            ChangeApprovalWorkflow.run, self._change_input(req, record), id=record.proposal_id,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON)
        return record.without_text()

    @propose.validator
    def _validate_propose(self, req: ProposeRequest) -> None:
        try:
            check_propose(self.state, req)
            if req.subject == DIRECTORY or req.subject.startswith(PLAYBOOK_PREFIX):
                return
        except PolicyError as exc:
            raise _business(exc) from None
        raise ApplicationError(f"unknown subject {req.subject!r}", type="ValidationError",
                               non_retryable=True)

    def _change_input(self, req: ProposeRequest, record: VersionRecord) -> ChangeInput:
        directory = self.state.active_record(DIRECTORY)
        assert directory is not None and record.proposal_id is not None
        playbooks: dict[str, str] = {}
        if req.subject == DIRECTORY:
            for name in self.state.subjects:
                active = self.state.active_record(name)
                if name.startswith(PLAYBOOK_PREFIX) and active is not None:
                    playbooks[name[len(PLAYBOOK_PREFIX):]] = active.text_z
        dry_run = DryRunRequest(
            subject=req.subject, number=record.number, text_z=req.text_z,
            directory_z=req.text_z if req.subject == DIRECTORY else directory.text_z,
            playbooks_z=playbooks)
        return ChangeInput(
            catalog_id=self.start.catalog_id, proposal_id=record.proposal_id,
            subject=req.subject, number=record.number, sha256=record.sha256,
            author=req.author, note=req.note, policy=req.policy,
            reviewers_directory_z=directory.text_z, dry_run=dry_run, public_url=req.public_url)

    @workflow.update(name="bootstrap")
    def bootstrap(self, req: BootstrapRequest) -> VersionRecord:
        return bootstrap(self.state, req, workflow.now()).without_text()

    @bootstrap.validator
    def _validate_bootstrap(self, req: BootstrapRequest) -> None:
        """Nothing to check here: the worker's `ActorVerifier` runs before every validator
        and refuses an unsigned bootstrap (core/actor_signing.py)."""

    # ---- reviews ------------------------------------------------------------------------

    @workflow.signal(name="proposal_closed")
    async def proposal_closed(self, closed: ProposalClosed) -> None:
        review = closed.review
        if workflow.patched(READS_THE_REVIEW):
            confirmed = await self._review_itself(closed.review)
            if confirmed is None:
                return
            review = confirmed
        try:
            close_proposal(self.state, review, workflow.now())
        except PolicyError as exc:
            workflow.logger.warning("ignoring a closed review: %s", exc.message)
            return
        await workflow.get_external_workflow_handle(review.proposal_id).signal("recorded")

    async def _review_itself(self, claimed: ReviewState) -> ReviewState | None:
        """The review the signal names, as its own workflow holds it (None: ignore the
        signal). A repeated signal for a version already decided reads nothing."""
        subject = self.state.subjects.get(claimed.subject)
        record = subject.find(claimed.number) if subject is not None else None
        if record is None or record.proposal_id is None:
            workflow.logger.warning("ignoring a closed review of an unknown proposal")
            return None
        if record.status is not VersionStatus.proposed:
            return record.review  # the review it was decided by (a repeated signal)
        try:
            read: ReviewRead = await workflow.execute_activity(
                "policy_read_review", ReadReview(catalog_id=self.start.catalog_id,
                                                 proposal_id=record.proposal_id),
                result_type=ReviewRead, schedule_to_close_timeout=READ_REVIEW_TIMEOUT,
                retry_policy=READ_REVIEW_RETRY)
        except ActivityError:
            workflow.logger.warning("could not read review %s", record.proposal_id)
            return None
        if not confirms(record, read.review):
            workflow.logger.warning("ignoring a closed review its workflow does not confirm: "
                                    "%s", record.proposal_id)
            return None
        return read.review

    # ---- queries ------------------------------------------------------------------------

    @workflow.query(name="active")
    def active(self) -> ActiveSet:
        return self.state.active_set()

    @workflow.query(name="versions")
    def versions(self, subject: str) -> list[VersionRecord]:
        return [v.without_text() for v in self.state.subject(subject).versions]

    @workflow.query(name="version")
    def version(self, subject: str, number: int) -> VersionRecord | None:
        """With its text; `number` 0 means the active version."""
        state = self.state.subject(subject)
        return state.find(number or state.active or 0)

    @workflow.query(name="stats")
    def stats(self) -> dict[str, int]:
        """How many runs (continue-as-new), changes and subjects the catalog has seen, and
        the size of the state it carries (the 2 MB payload limit applies to it)."""
        return {"runs": self.state.runs, "revision": self.state.revision,
                "subjects": len(self.state.subjects),
                "state_bytes": len(self.state.model_dump_json())}
