"""`policy_read_review`: a policy review's state, read from the review workflow itself.

The catalog activates a version when a review says it ended (signal `proposal_closed`). A
signal is only its sender's word: anyone who can reach Temporal could send one saying
"approved" and activate a version nobody reviewed. Decisions on a review are signed updates
checked by the worker (`core/actor_signing.py`), so the review workflow's own state is the
authority. This activity reads it for the catalog, and only from a `PolicyChange` workflow
that the catalog started (its parent), never from whatever workflow a signal names.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from domain.policy_versions import ReadReview, ReviewRead, ReviewState

log = structlog.get_logger("crisis.policy")

REVIEW_WORKFLOW = "PolicyChange"  # workflows.change_approval.ChangeApprovalWorkflow


@dataclass
class ReviewReader:
    client: Client

    @activity.defn(name="policy_read_review")
    async def read_review(self, req: ReadReview) -> ReviewRead:
        handle = self.client.get_workflow_handle(req.proposal_id)
        try:
            described = await handle.describe()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise  # retried by the activity's policy
            log.warning("review_not_found", proposal_id=req.proposal_id)
            return ReviewRead()
        if described.workflow_type != REVIEW_WORKFLOW or described.parent_id != req.catalog_id:
            log.warning("review_not_started_by_catalog", proposal_id=req.proposal_id,
                        workflow_type=described.workflow_type, parent_id=described.parent_id)
            return ReviewRead()
        review = await handle.query("review", result_type=ReviewState)
        return ReviewRead(review=review)
