"""Record event histories of real playbooks for the replay test.

    python -m tests.histories.record TAG    # writes tests/histories/<playbook>.<TAG>.json

A recorded history is a promise to the incidents that are running on that code: never
re-record or delete one. Record new ones beside them under a new tag (for example the
change that needed them); the script refuses to overwrite a file.

Each playbook in `playbooks/` runs on the time-skipping server with the real activities and
loopback receivers: approve every open task in turn, let virtual time pass, then resolve.
Commit the JSON files: `test_replay.py` replays them against the current interpreter and
fails if a change would break incidents that are already running.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from core.actor_signing import unsigned_client
from core.config import ROOT, Settings
from core.time_off_store import TimeOffStore
from domain.directory import Directory, Period
from domain.incident import (
    DecideRequest,
    IncidentView,
    Report,
    ResolveRequest,
    StatusUpdateRequest,
    SubmitDraftRequest,
)
from domain.loader import load_directory, snapshot_playbook
from domain.playbook import Severity
from domain.time_off import SetAway
from tests.factories import start_input
from tests.receivers import HttpReceiver, SmtpReceiver
from tests.servers import redis_server
from tests.workflow_harness import fresh_time_env
from worker.main import build_worker
from workflows.incident import IncidentWorkflow

HERE = Path(__file__).parent
SINK = "/demo/sink"
STORIES = {"viral-complaint": Severity.high, "data-breach-rumour": Severity.critical,
           "product-safety": Severity.high}


def localised(text: str, sink: str) -> bytes:
    return text.replace(SINK, sink).encode()


async def drive(handle: WorkflowHandle[IncidentWorkflow, object], communicator: str) -> None:
    """Approve open tasks one at a time; let time pass when nothing is open. A node that
    takes drafts gets one redraft from the communicator first (a second round), so the
    story covers drafts, rounds and publishing the approved version."""
    redrafted: set[str] = set()
    for _ in range(40):
        view: IncidentView = await handle.query(IncidentWorkflow.state)
        open_tasks = [t for t in view.tasks if t.state == "open"]
        drafting = [n for n in view.nodes if n.outcome == "pending"
                    and n.draft_version is not None and n.step_id not in redrafted]
        if drafting:
            node = drafting[0]
            redrafted.add(node.step_id)
            await handle.execute_update(IncidentWorkflow.submit_draft, SubmitDraftRequest(
                request_id=uuid.uuid4().hex, actor=communicator, node_id=node.step_id,
                text=f"Recorded statement for {node.title}: we are on it."))
            continue
        if open_tasks:
            task = open_tasks[0]
            await handle.execute_update(IncidentWorkflow.decide, DecideRequest(
                request_id=uuid.uuid4().hex, actor=task.assignee, task_id=task.id,
                decision="approve", comment="recorded story"))
            continue
        if all(n.outcome != "pending" for n in view.nodes) and len(view.nodes) > 0:
            break
        await asyncio.sleep(0.3)
    await handle.execute_update(IncidentWorkflow.post_status_update, StatusUpdateRequest(
        request_id=uuid.uuid4().hex, actor=communicator, message="Statement is out"))


async def set_away(env: WorkflowEnvironment,
                   handle: WorkflowHandle[IncidentWorkflow, object], task_queue: str) -> None:
    """As the API does when someone is set away (histories since v8-time-off-read): the
    change goes to the overlay's workflow, the incident is told and reads it from there."""
    now = await env.get_current_time()
    overlay = await TimeOffStore(env.client, task_queue).apply(SetAway(
        actor="ada-admin", admin=True, person_id="ada-admin",
        periods=[Period(start=now, end=now + timedelta(hours=1), reason="recorded story")]))
    await handle.signal("time_off", overlay)
    for _ in range(100):
        timeline = await handle.query(IncidentWorkflow.timeline)
        if any(e.kind == "time_off_applied" for e in timeline):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the incident never applied the time-off overlay")


async def report_twice(env: WorkflowEnvironment,
                       handle: WorkflowHandle[IncidentWorkflow, object]) -> None:
    """As the API sends a storm's batch (histories since v9-signed-reports), plus one batch
    sent straight to Temporal without the API's signature: refused, and the refusal is a
    marker in the history (`core.actor_signing`)."""
    unsigned = unsigned_client(env.client).get_workflow_handle(handle.id)
    await unsigned.signal("add_reports", [Report(
        id="recorded-forged", summary="forged report", reported_by="ada-admin")])
    await handle.signal("add_reports", [Report(
        id="recorded-real", summary="recorded report", reported_by="ray-reporter")])
    for _ in range(100):
        view: IncidentView = await handle.query(IncidentWorkflow.state)
        if view.incident.reports == 2:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the incident never took the signed report")


async def record(playbook_id: str, severity: Severity, directory: Directory,
                 out: Path) -> None:
    with HttpReceiver() as sink, SmtpReceiver() as smtp, redis_server() as redis_url:
        base = sink.url("")
        dir_raw = localised((ROOT / "config" / "directory.yaml").read_text(), base)
        tmp = out.with_suffix(".directory.yaml")
        tmp.write_bytes(dir_raw)
        try:
            dir_snapshot = load_directory(tmp)
        finally:
            tmp.unlink()
        raw = localised((ROOT / "playbooks" / f"{playbook_id}.yaml").read_text(), base)
        snap = snapshot_playbook(raw, dir_snapshot.definition, playbook_id)
        settings = Settings(redis_url=redis_url, smtp_port=smtp.port)
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        async with fresh_time_env() as env, httpx.AsyncClient(trust_env=False) as http:
            await env.sleep(timedelta(days=(3 - (await env.get_current_time()).weekday()) % 7))
            worker = build_worker(env.client, settings, redis, http, task_queue="record")
            async with worker:
                start = start_input(snap, severity=severity, directory=dir_snapshot,
                                    incident_id=f"inc-recorded-{playbook_id}",
                                    opened_by="ada-admin")
                handle = await env.client.start_workflow(
                    IncidentWorkflow.run, start, id=start.incident_id, task_queue="record")
                await set_away(env, handle, "record")
                await report_twice(env, handle)
                await drive(handle, "ada-admin")
                await env.sleep(timedelta(hours=2, minutes=5))
                await handle.execute_update(IncidentWorkflow.resolve, ResolveRequest(
                    request_id=uuid.uuid4().hex, actor="ada-admin", summary="Recorded"))
                await handle.result()
                history = await handle.fetch_history()
                out.write_text(history.to_json())  # noqa: ASYNC240 - a one-off recording script
        await redis.aclose()
    print(f"recorded {out.name}: {len(history.events)} events")


async def main(tag: str) -> None:
    directory = load_directory(ROOT / "config" / "directory.yaml").definition
    targets = {p: HERE / f"{p}.{tag}.json" for p in STORIES}
    taken = [str(path) for path in targets.values() if path.exists()]
    if taken:
        raise SystemExit(f"refusing to overwrite recorded histories: {', '.join(taken)}")
    for playbook_id, severity in STORIES.items():
        await record(playbook_id, severity, directory, targets[playbook_id])


if __name__ == "__main__":
    if len(sys.argv) != 2 or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,40}", sys.argv[1]):
        raise SystemExit("usage: python -m tests.histories.record TAG  (e.g. v3-aggregate)")
    asyncio.run(main(sys.argv[1]))
