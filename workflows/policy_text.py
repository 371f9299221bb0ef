"""`PolicyTextWorkflow`: one version's text, kept for the policy catalog.

The catalog keeps inline only the texts it works with (active versions, open proposals) and
hands every other version's text to a workflow of this type, started as its child (parent
close policy ABANDON) under an id made of the text's sha256
(`domain.policy_versions.policy_text_id`). It checks the text against that sha256 when it
starts, then holds it for good: it never completes (no timer, no history beyond its start),
so no retention period ever removes a version's text; query `text` answers it. The API reads
it through `core.policy_store.PolicyStore.version`, which checks the sha256 again.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.loader import sha256
    from domain.policy_versions import PolicyTextStart, unpack_text

__all__ = ["PolicyTextWorkflow"]


@workflow.defn(name="PolicyText")
class PolicyTextWorkflow:
    @workflow.init
    def __init__(self, start: PolicyTextStart) -> None:
        self.start = start

    @workflow.run
    async def run(self, start: PolicyTextStart) -> None:
        if sha256(unpack_text(start.text_z)) != start.sha256:
            raise ApplicationError("the text does not match its sha256", type="TextMismatch",
                                   non_retryable=True)
        await workflow.wait_condition(lambda: False)  # kept for good

    @workflow.query(name="text")
    def text(self) -> str:
        """The text, compressed as the catalog keeps texts (`pack_text`)."""
        return self.start.text_z
