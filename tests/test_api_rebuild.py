"""After Redis `FLUSHALL` and `crisis projection rebuild`, the API lists the same incidents,
tasks, inboxes and timelines as before."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from readmodel.rebuild import incident_ids, rebuild

if TYPE_CHECKING:
    from tests.api_fixtures import ApiStack

# registered once as a plugin, so each stack is shared by every module of the session
pytest_plugins = ["tests.api_fixtures"]

PEOPLE = ("rita", "cora", "alex", "abby", "liam", "adam", "dora")


async def snapshot(stack: ApiStack) -> dict[str, Any]:
    """Everything a user can list, as the API answers it."""
    async def get(path: str, person: str = "adam") -> Any:
        response = await stack.call("GET", path, person)
        assert response.status_code == 200, response.text
        return response.json()

    incidents = (await get("/incidents?limit=200"))["items"]
    return {
        "incidents": incidents,
        "open": (await get("/incidents?status=open&limit=200"))["items"],
        "tasks": {i["id"]: (await get(f"/tasks?incident_id={i['id']}&limit=200"))["items"]
                  for i in incidents},
        "timelines": {i["id"]: (await get(f"/incidents/{i['id']}/timeline"))["entries"]
                      for i in incidents},
        "inboxes": {p: (await get("/tasks?limit=200", p))["items"]
                    for p in PEOPLE if p != "rita"},
    }


async def settled_snapshot(stack: ApiStack) -> dict[str, Any]:
    """A snapshot once workflows stopped changing (notifications still land after writes)."""
    previous = await snapshot(stack)

    async def stable() -> dict[str, Any] | None:
        nonlocal previous
        await asyncio.sleep(0.3)
        current = await snapshot(stack)
        same = current == previous
        previous = current
        return current if same else None
    return await stack.eventually(stable, what="the incidents to settle")


async def crisis_projection_rebuild(stack: ApiStack) -> str:
    env = {**os.environ, "CRISIS_TEMPORAL_ADDRESS": stack.settings.temporal_address,
           "CRISIS_REDIS_URL": stack.settings.redis_url,
           "CRISIS_TASK_QUEUE": stack.settings.task_queue}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "projection", "rebuild", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_flushall_then_rebuild_lists_the_same(matrix_stack: ApiStack) -> None:
    stack = matrix_stack
    opened = [await stack.matrix_incident() for _ in range(3)]
    quiet = await stack.open_incident("cora", "matrix-quiet", dedup_key="rebuild-quiet")
    await stack.call("POST", "/incidents", "adam", json={
        "title": "again", "summary": "second report", "severity": "high",
        "playbook": "matrix-quiet", "dedup_key": "rebuild-quiet"})
    approved = await stack.call("POST", f"/tasks/{opened[0]['tasks']['alex']}/decision",
                                "alex", json={"decision": "approve"})
    assert approved.status_code == 200
    resolved = await stack.call("POST", f"/incidents/{opened[1]['id']}/resolve", "cora",
                                json={"summary": "done"})
    assert resolved.status_code == 200
    mine = {o["id"] for o in opened} | {quiet["id"]}

    async def visible() -> bool:
        return mine <= set(await incident_ids(stack.env.client, stack.settings.task_queue))
    await stack.eventually(visible, what="the incidents in Temporal visibility")
    # other tests flush Redis too: start from a complete read model
    healed = await rebuild(stack.env.client, stack.redis, task_queue=stack.settings.task_queue)
    assert healed.failed == {}
    before = await settled_snapshot(stack)
    assert mine <= {i["id"] for i in before["incidents"]}

    await stack.redis.flushall()
    assert (await stack.call("GET", "/incidents", "adam")).json()["items"] == []
    # reads of one incident fall back to the workflow until the rebuild ran
    fallback = await stack.view(opened[0]["id"], "adam")
    assert {t["assignee"]: t["state"] for t in fallback["tasks"]}["alex"] == "approved"

    output = await crisis_projection_rebuild(stack)
    assert '"failed": {}' in output
    after = await snapshot(stack)
    assert after == before
