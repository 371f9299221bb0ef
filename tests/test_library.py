"""Pre-approved holding statements: a draft that is byte-identical to a library statement is
decided under the lighter library policy (any one comms lead here); any other text, even one
character off, is refused that policy and goes through the node's full policy."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from domain.incident import SubmitDraftRequest, SubmitDraftResult
from domain.playbook import Playbook
from tests.factories import LIBRARY_V1, LIBRARY_V2, drafts_playbook, library, sha, snapshot
from tests.workflow_harness import Harness, eventually
from workflows.incident import IncidentWorkflow


async def submit(handle: Any, text: str, **extra: Any) -> SubmitDraftResult:
    result: SubmitDraftResult = await handle.execute_update(
        IncidentWorkflow.submit_draft, SubmitDraftRequest(
            request_id=uuid.uuid4().hex, actor="sam-social", node_id="holding-statement",
            text=text, **extra))
    return result


async def test_a_library_statement_is_published_under_the_lighter_policy(h: Harness) -> None:
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(drafts_playbook(h.publish.url("/publish"),
                                                    with_library=True)))
    await h.entries(handle, "awaiting_draft")
    result = await submit(handle, LIBRARY_V1, library="aware-looking", library_version=1)
    assert (result.draft.library_id, result.draft.library_version) == ("aware-looking", 1)
    assert result.node is not None and "any approvers" in result.node.policy
    assert "aware-looking@v1" in result.node.policy
    # only comms leads are asked: legal approved the wording in advance
    assert result.tasks and {t.role for t in result.tasks} == {"comms-lead"}
    decided = await h.decide(handle, result.tasks[0], "approve")
    assert decided.node.outcome == "approved" and decided.node.approved_sha256 == sha(LIBRARY_V1)

    submitted = (await h.entries(handle, "draft_submitted"))[0].details
    assert (submitted["library"], submitted["library_version"]) == ("aware-looking", 1)
    assert submitted["library_approved_by"] == "legal: Lena Legal"
    await eventually(h.received, lambda r: len(r) >= 1)
    assert h.publish.requests[0].json()["text"] == LIBRARY_V1
    assert h.publish.requests[0].headers["x-crisis-content-sha256"] == sha(LIBRARY_V1)


async def test_a_non_library_text_cannot_use_the_lighter_policy(h: Harness) -> None:
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(drafts_playbook(h.publish.url("/publish"),
                                                    with_library=True)))
    await h.entries(handle, "awaiting_draft")
    for text, extra in [(LIBRARY_V1 + " ", {"library": "aware-looking"}),  # one byte off
                        (LIBRARY_V1, {"library": "aware-looking", "library_version": 2}),
                        (LIBRARY_V1, {"library": "no-such-statement"})]:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await submit(handle, text, **extra)
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == "LibraryMismatch", text
    assert not await handle.query(IncidentWorkflow.drafts)  # nothing was recorded
    # the newest version is the default; the same text without `library` gets full review
    newest = await submit(handle, LIBRARY_V2, library="aware-looking")
    assert newest.draft.library_version == 2
    plain = await submit(handle, LIBRARY_V2)
    assert plain.draft.library_id is None and plain.node is not None
    assert {t.role for t in plain.tasks} == {"legal", "comms-lead"}
    assert "veto: legal" in plain.node.policy


def test_a_library_needs_its_policy_and_unique_versions() -> None:
    data = drafts_playbook("/demo/sink/publish", with_library=True)
    drafts = data["steps"][2]["approval"]["drafts"]
    without_policy = {**drafts, "library_policy": None}
    data["steps"][2]["approval"]["drafts"] = without_policy
    with pytest.raises(ValidationError, match="go together"):
        Playbook.model_validate(data)
    twice = library()
    twice["library"].append(twice["library"][0])
    data["steps"][2]["approval"]["drafts"] = {**drafts, **twice}
    with pytest.raises(ValidationError, match="aware-looking@v1"):
        Playbook.model_validate(data)
