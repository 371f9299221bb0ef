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

from temporalio import activity
from temporalio.client import Client

from activities.authority_workflows import authority_handle
from domain.policy_versions import ReadReview, ReviewRead, ReviewState

REVIEW_WORKFLOW = "PolicyChange"  # workflows.change_approval.ChangeApprovalWorkflow


@dataclass
class ReviewReader:
    client: Client

    @activity.defn(name="policy_read_review")
    async def read_review(self, req: ReadReview) -> ReviewRead:
        handle = await authority_handle(self.client, req.proposal_id,
                                        workflow_type=REVIEW_WORKFLOW, parent_id=req.catalog_id)
        if handle is None:
            return ReviewRead()
        review = await handle.query("review", result_type=ReviewState)
        return ReviewRead(review=review)
