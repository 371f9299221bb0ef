"""Replay committed histories of real playbooks against the current interpreter.

If a change to `IncidentWorkflow` (or the domain logic it runs) would make running
incidents take a different path, replay raises a non-determinism error here. Gate such
changes with `workflow.patched(...)`, and record new histories beside the old ones with
`python -m tests.histories.record TAG`; never re-record or delete a committed one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from core.actor_signing import ActorVerifier, ephemeral_keyring
from core.payloads import DATA_CONVERTER
from worker.main import workflow_runner
from workflows.incident import IncidentWorkflow

RECORDED = sorted((Path(__file__).parent / "histories").glob("*.json"))
CATALOG_HISTORIES = [p for p in RECORDED if p.stem.startswith("catalog.")]
HISTORIES = [p for p in RECORDED if p not in CATALOG_HISTORIES]  # incidents


def test_histories_cover_at_least_two_playbooks() -> None:
    assert len(HISTORIES) >= 2


SHIPPED = ("viral-complaint", "data-breach-rumour", "product-safety")
KEPT = {  # every recorded history is a promise to running incidents: they replay forever
    *SHIPPED,  # recorded before the incident aggregate
    *(f"{name}.{tag}" for name in SHIPPED
      for tag in ("v1-remote-projection", "v2-aggregate", "v3-drafts", "v3-faults", "v3-perf",
                  "v3-storm", "v4-merged", "v5-one-marker", "v6-answer-first",
                  "v7-carried", "v8-time-off-read", "v9-signed-reports")),
    "at-most-once.v3-faults", "catch-up.v3-faults",
}


KEPT_CATALOGS = {"catalog.v1-inline-texts", "catalog.v2-texts-kept-elsewhere"}  # record_catalog.py


def test_no_recorded_history_was_deleted() -> None:
    assert KEPT <= {p.stem for p in HISTORIES}
    assert KEPT_CATALOGS <= {p.stem for p in CATALOG_HISTORIES}


@pytest.mark.parametrize("path", CATALOG_HISTORIES, ids=lambda p: p.stem)
async def test_catalog_history_replays_without_nondeterminism(path: Path) -> None:
    """A policy catalog runs for the deployment's whole life: its recorded history (versions
    superseded by reviews, a directory change, a rollback) replays on today's code."""
    from workflows.catalog import PolicyCatalogWorkflow
    from workflows.change_approval import ChangeApprovalWorkflow

    data = json.loads(path.read_text())  # noqa: ASYNC240 - a small fixture file
    history = WorkflowHistory.from_json(f"replay-{path.stem}", data)
    replayer = Replayer(workflows=[PolicyCatalogWorkflow, ChangeApprovalWorkflow],
                        data_converter=DATA_CONVERTER,
                        workflow_runner=workflow_runner(strict=True),
                        interceptors=[ActorVerifier(ephemeral_keyring("replay"))])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_without_nondeterminism(path: Path) -> None:
    data = json.loads(path.read_text())  # noqa: ASYNC240 - a small fixture file
    history = WorkflowHistory.from_json(f"replay-{path.stem}", data)
    kinds = {e.get("eventType") for e in data["events"]}
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED" in kinds  # the whole story is there
    # strict: the workflow module re-imported under the sandbox's restrictions, so a
    # nondeterministic call on any replayed path fails here even though the worker shares it
    # as a worker replays: with its signature check (`ActorVerifier`), under a key that signed
    # none of these (every key since retired): histories from before commands were signed,
    # and refused signals (v9-signed-reports), replay as they ran
    replayer = Replayer(workflows=[IncidentWorkflow], data_converter=DATA_CONVERTER,
                        workflow_runner=workflow_runner(strict=True),
                        interceptors=[ActorVerifier(ephemeral_keyring("replay"))])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


async def test_replay_detects_an_interpreter_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard the guard: an interpreter that skips the first notify step must fail replay."""
    path = next(p for p in HISTORIES if p.stem == "viral-complaint")
    history = WorkflowHistory.from_json("replay-changed", json.loads(path.read_text()))

    original = IncidentWorkflow._notify

    async def skip_social(self: IncidentWorkflow, step_id: str, *args: object,
                          **kwargs: object) -> None:
        if step_id == "notify-social":
            return
        await original(self, step_id, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(IncidentWorkflow, "_notify", skip_social)
    # unsandboxed, so the patched class is the one that runs
    replayer = Replayer(workflows=[IncidentWorkflow], data_converter=DATA_CONVERTER,
                        workflow_runner=UnsandboxedWorkflowRunner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
