"""An update refused by a run that just continued as new lands on the next run
(core.current_run, used by the API's commands, the time-off store and the workflow harness).

The refusal: an update that reaches a run in the moment it continues as new gets NOT_FOUND
"Completed workflow" from the time-skipping server (CI saw it; through the API it was a 500
for an approver's click during a report storm). That moment is too narrow to hit on demand,
so a client interceptor makes it happen: on the first send it rolls the real workflow over
to a new run and answers as the server did for the closed one. Everything else is the real
server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.current_run import update_current_run
from tests.workflow_harness import eventually


@workflow.defn(sandboxed=False)
class Tally:
    """Takes updates; continues as new when told to roll over; returns what it took."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.roll = self.finish = False

    @workflow.run
    async def run(self, taken: list[str]) -> list[str]:
        self.taken = [*taken, *self.taken]
        await workflow.wait_condition(lambda: self.roll or self.finish)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if not self.finish:
            workflow.continue_as_new(self.taken)
        return self.taken

    @workflow.signal
    def roll_over(self) -> None:
        self.roll = True

    @workflow.signal
    def end(self) -> None:
        self.finish = True

    @workflow.update
    def take(self, what: str) -> str:
        self.taken.append(what)
        return workflow.info().run_id


class RefusedByAClosingRun(Interceptor):
    """Counts update sends; the first one rolls the workflow over to a new run and is
    refused as the closed run's (NOT_FOUND "Completed workflow")."""

    def __init__(self, plain: Client) -> None:
        self.plain = plain  # a client without this interceptor, to roll the workflow over
        self.sends = 0
        self.refuse_first = True

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Refusing(next, self)


class _Refusing(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, owner: RefusedByAClosingRun) -> None:
        super().__init__(next)
        self.owner = owner

    async def start_workflow_update(self, input: StartWorkflowUpdateInput
                                    ) -> WorkflowUpdateHandle[Any]:
        self.owner.sends += 1
        if self.owner.sends == 1 and self.owner.refuse_first:
            await self._roll_over(input.id)
            raise RPCError("Completed workflow", RPCStatusCode.NOT_FOUND, b"")
        return await self.next.start_workflow_update(input)

    async def _roll_over(self, workflow_id: str) -> None:
        handle = self.owner.plain.get_workflow_handle(workflow_id)
        before = (await handle.describe()).run_id
        await handle.signal(Tally.roll_over)
        await eventually(handle.describe, lambda d: d.run_id != before)


@pytest.fixture
async def refusing(time_env: WorkflowEnvironment
                   ) -> AsyncIterator[tuple[Client, RefusedByAClosingRun, str]]:
    """A client whose first update is refused by a run that continued as new, and a worker."""
    refusal = RefusedByAClosingRun(time_env.client)
    config = time_env.client.config()
    config["interceptors"] = [*config["interceptors"], refusal]
    client = Client(**config)
    queue = f"current-run-{uuid.uuid4().hex[:8]}"
    async with Worker(time_env.client, task_queue=queue, workflows=[Tally]):
        yield client, refusal, queue


async def _started(client: Client, queue: str) -> WorkflowHandle[Any, Any]:
    handle = await client.start_workflow(Tally.run, [], id=f"tally-{uuid.uuid4().hex[:8]}",
                                         task_queue=queue)
    return client.get_workflow_handle(handle.id)  # not pinned to a run, as the API's


async def test_a_refused_update_lands_once_on_the_run_that_continued(
        refusing: tuple[Client, RefusedByAClosingRun, str]) -> None:
    client, refusal, queue = refusing
    handle = await _started(client, queue)
    first = (await handle.describe()).run_id
    took = await update_current_run(handle, Tally.take, "approve")
    assert took != first and refusal.sends == 2
    await handle.signal(Tally.end)
    assert await handle.result() == ["approve"]  # taken once, by the next run


async def test_without_the_resend_the_caller_gets_the_refusal(
        refusing: tuple[Client, RefusedByAClosingRun, str]) -> None:
    """What callers saw before: the refusal itself (the API answered it with a 500)."""
    client, _, queue = refusing
    handle = await _started(client, queue)
    with pytest.raises(RPCError) as refused:
        await handle.execute_update(Tally.take, "approve")
    assert refused.value.status == RPCStatusCode.NOT_FOUND
    await handle.signal(Tally.end)
    assert await handle.result() == []


async def test_a_closed_or_unknown_workflow_still_answers_not_found_at_once(
        refusing: tuple[Client, RefusedByAClosingRun, str]) -> None:
    """No resend when the workflow is over: callers map NOT_FOUND to 409/404 as before."""
    client, refusal, queue = refusing
    refusal.refuse_first = False
    handle = await _started(client, queue)
    await handle.signal(Tally.end)
    await handle.result()
    with pytest.raises(RPCError) as closed:
        await update_current_run(handle, Tally.take, "late")
    assert closed.value.status == RPCStatusCode.NOT_FOUND and refusal.sends == 1
    unknown = client.get_workflow_handle(f"tally-none-{uuid.uuid4().hex[:8]}")
    with pytest.raises(RPCError) as missing:
        await update_current_run(unknown, Tally.take, "x")
    assert missing.value.status == RPCStatusCode.NOT_FOUND and refusal.sends == 2
