"""Open or attach under load: storms of duplicate reports, a resolution in the middle of one,
two API processes at once, retries of a report whose incident was resolved, and ids that
cannot be computed from a dedup key."""

from __future__ import annotations

import asyncio
import stat
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from api.intake import ReportRouter
from api.main import create_app
from cli.users_cmd import issue_tokens
from core.config import Settings
from domain.ids import dedup_incident_id
from domain.loader import load_directory
from tests.api_fixtures import ApiStack, _run_stack, eventually, with_db
from tests.factories import SIGN_OFF_PEOPLE, sign_off_playbook
from workflows.incident import IncidentWorkflow

pytest_plugins = ["tests.api_fixtures"]

REPORTERS = [f"rep-{n:02d}" for n in range(300)]  # one token per simulated employee
STORM_DIRECTORY: dict[str, Any] = {
    "people": [{"id": r, "name": f"Reporter {r}", "access": ["reporter"]} for r in REPORTERS]
    + SIGN_OFF_PEOPLE,
    "roles": [{"id": "legal"}],
}
STORM_PLAYBOOK = sign_off_playbook("storm", "Storm")


def write_storm_config(workdir: Path) -> Path:
    (workdir / "config").mkdir()
    (workdir / "playbooks").mkdir()
    directory_file = workdir / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(STORM_DIRECTORY))
    (workdir / "config" / "routing.yaml").write_text(yaml.safe_dump(
        {"routes": {s: {"playbook": "storm"} for s in ("low", "medium", "high", "critical")}}))
    (workdir / "playbooks" / "storm.yaml").write_text(yaml.safe_dump(STORM_PLAYBOOK))
    return directory_file


@pytest.fixture(scope="session")
async def storm_stack(dev_env: WorkflowEnvironment, redis_url: str,
                      tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    workdir = tmp_path_factory.mktemp("storm-stack")
    directory_file = write_storm_config(workdir)
    async for stack in _run_stack(dev_env, with_db(redis_url, 5), workdir, directory_file,
                                  workdir / "playbooks"):
        yield stack


@pytest.fixture(scope="session")
async def batch_stack(dev_env: WorkflowEnvironment, redis_url: str,
                      tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    """The storm stack, but its worker runs a workflow with an `add_reports` signal (the
    prototype in `bench.batch_workflow`): intake then sends one signal per batch."""
    from bench.intake_worker import batch_worker

    workdir = tmp_path_factory.mktemp("batch-stack")
    directory_file = write_storm_config(workdir)
    users = issue_tokens(load_directory(directory_file).definition,
                         workdir / "demo-tokens.json", workdir / "tokens.json")
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        redis_url=with_db(redis_url, 7), task_queue=f"batch-{uuid.uuid4().hex[:8]}",
        tokens_file=workdir / "tokens.json", directory_file=directory_file,
        playbooks_dir=workdir / "playbooks")
    app = create_app(settings)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient() as webhooks,
        batch_worker(dev_env.client, settings, redis, webhooks),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                          timeout=60) as http,
    ):
        yield ApiStack(app=app, http=http, settings=settings, redis=redis, env=dev_env,
                       tokens={u["id"]: u["token"] for u in users})
    await redis.aclose()


@pytest.fixture(params=["signal per report", "batch signal"])
def any_stack(request: pytest.FixtureRequest) -> ApiStack:
    name = "storm_stack" if request.param == "signal per report" else "batch_stack"
    stack: ApiStack = request.getfixturevalue(name)
    return stack


def report_body(key: str, n: int) -> dict[str, Any]:
    return {"summary": f"Report {n}: the post is everywhere", "dedup_key": key,
            "severity": "high"}


async def storm(stack: ApiStack, key: str, count: int, first: int = 0) -> list[httpx.Response]:
    return list(await asyncio.gather(*(
        stack.call("POST", "/reports", REPORTERS[n % len(REPORTERS)], json=report_body(key, n))
        for n in range(first, first + count))))


async def reports_on(stack: ApiStack, incident_id: str) -> Counter[str]:
    """Report ids on the incident's timeline, from the workflow itself (not the read model)."""
    handle = stack.env.client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    entries = await handle.query(IncidentWorkflow.timeline)
    return Counter(str(e.details["report_id"]) for e in entries
                   if e.kind in ("opened", "report_added"))


async def resolve(stack: ApiStack, incident_id: str) -> None:
    done = await stack.call("POST", f"/incidents/{incident_id}/resolve", "cora",
                            json={"summary": "handled"})
    assert done.status_code == 200, done.text


async def test_a_storm_of_duplicates_makes_one_incident_with_every_report(
        any_stack: ApiStack) -> None:
    storm_stack = any_stack
    key = f"post:{uuid.uuid4().hex}"
    responses = await storm(storm_stack, key, 150)
    # 202: accepted by signal, without waiting for the workflow (the shipped workflow hands
    # late reports on); 200: confirmed by query (the prototype drops them, so it must)
    statuses = Counter(r.status_code for r in responses)
    assert statuses[201] == 1 and statuses[200] + statuses[202] == 149, [
        (r.status_code, r.text[:200]) for r in responses if r.status_code >= 300][:5]
    receipts = [r.json() for r in responses]
    assert len({r["incident_id"] for r in receipts}) == 1
    assert [r["created"] for r in receipts].count(True) == 1
    incident_id = receipts[0]["incident_id"]
    on_timeline = await reports_on(storm_stack, incident_id)
    assert on_timeline == Counter(r["report_id"] for r in receipts)  # each once, none lost

    async def all_counted() -> dict[str, Any] | None:
        view = await storm_stack.view(incident_id, "cora")
        return view if view["incident"]["reports"] == 150 else None
    await eventually(all_counted, what="the read model to count 150 reports")
    # the incident still works: a storm must not stall it
    await resolve(storm_stack, incident_id)


async def test_resolving_mid_storm_loses_no_report(any_stack: ApiStack) -> None:
    storm_stack = any_stack
    key = f"post:{uuid.uuid4().hex}"
    opened = (await storm(storm_stack, key, 1))[0]
    assert opened.status_code == 201, opened.text
    first_id = opened.json()["incident_id"]

    async def waves() -> list[httpx.Response]:
        sent = []
        for wave in range(6):  # reports keep coming before, during and after the resolve
            sent.append(asyncio.ensure_future(storm(storm_stack, key, 20, first=1 + 20 * wave)))
            await asyncio.sleep(0.03)
        return [r for batch in await asyncio.gather(*sent) for r in batch]
    reports = asyncio.ensure_future(waves())
    await asyncio.sleep(0.06)
    await resolve(storm_stack, first_id)
    responses = await reports
    assert all(r.status_code in (200, 201, 202) for r in responses), \
        [r.text for r in responses if r.status_code >= 300][:3]
    receipts = [opened.json(), *(r.json() for r in responses)]
    all_ids = [r["report_id"] for r in receipts]
    assert len(set(all_ids)) == 121
    # the resolved run completes once it has handed its late reports on
    await storm_stack.env.client.get_workflow_handle_for(IncidentWorkflow.run, first_id).result()
    # whatever raced with the resolution went to one new incident for the key: the next
    # epoch's (a report acknowledged by 202 for the resolving incident is handed on there)
    secret = storm_stack.settings.id_secret_bytes()
    incidents = [first_id, dedup_incident_id(f"key:{key}", 1, secret)]
    assert {r["incident_id"] for r in receipts} <= set(incidents)
    totals = Counter[str]()
    for incident_id in incidents:
        on_timeline = await _reports_if_any(storm_stack, incident_id)
        totals += on_timeline
        placed = [r for r in receipts if r["incident_id"] == incident_id]
        confirmed = [r for r, resp in zip(receipts[1:], responses, strict=True)
                     if r["incident_id"] == incident_id and resp.status_code != 202]
        assert {r["report_id"] for r in confirmed} <= set(on_timeline), \
            "a confirmed receipt names an incident that does not have its report"
        assert [r["created"] for r in placed].count(True) <= 1, incident_id
    # every acknowledged report is on exactly one of them, once: none lost, none twice
    assert totals == Counter(all_ids)
    if await _reports_if_any(storm_stack, incidents[1]):
        await resolve(storm_stack, incidents[1])


async def _reports_if_any(stack: ApiStack, incident_id: str) -> Counter[str]:
    """`reports_on`, or nothing when no workflow has that id (no report was late)."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        return await reports_on(stack, incident_id)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return Counter()


async def test_a_storm_at_concurrency_50_from_distinct_reporters_loses_nothing(
        storm_stack: ApiStack) -> None:
    key = f"post:{uuid.uuid4().hex}"
    gate = asyncio.Semaphore(50)

    async def one(n: int) -> httpx.Response:
        async with gate:
            return await storm_stack.call("POST", "/reports", REPORTERS[n],
                                          json=report_body(key, n))
    responses = await asyncio.gather(*(one(n) for n in range(300)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({201: 1, 202: 299}), [
        (r.status_code, r.text[:200]) for r in responses if r.status_code >= 300][:5]
    receipts = [r.json() for r in responses]
    assert len({r["incident_id"] for r in receipts}) == 1
    incident_id = receipts[0]["incident_id"]
    # a 202 is durable: the workflow has every report (queries see every accepted signal)
    assert await reports_on(storm_stack, incident_id) == Counter(r["report_id"] for r in receipts)
    await resolve(storm_stack, incident_id)


async def test_a_storm_is_not_held_by_a_run_that_is_slow_to_answer_queries(
        storm_stack: ApiStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reports that arrive with the opener wait for the new run: its queries, or the
    opener's own answer, whichever comes first. A query reaches the run through a worker
    poll and, in a storm, once took over a second while the run sat idle; here it never
    answers within the storm, and the storm must still be answered (the opener's answer
    says all the queries would), every report on the one incident."""
    slow = asyncio.Event()

    async def unanswered_queries(self: ReportRouter, incident_id: str, epoch: int) -> None:
        await slow.wait()  # released when the test ends

    monkeypatch.setattr(ReportRouter, "_early_known", unanswered_queries)
    key = f"post:{uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(30):  # a guard against a hang, not a speed target
            responses = await storm(storm_stack, key, 60)
    finally:
        slow.set()
    statuses = Counter(r.status_code for r in responses)
    assert statuses[201] == 1 and statuses[201] + statuses[202] == 60, statuses
    receipts = [r.json() for r in responses]
    assert len({r["incident_id"] for r in receipts}) == 1
    incident_id = receipts[0]["incident_id"]
    assert await reports_on(storm_stack, incident_id) == Counter(r["report_id"] for r in receipts)
    await resolve(storm_stack, incident_id)


async def test_a_report_signalled_while_its_incident_resolves_opens_the_next_one(
        storm_stack: ApiStack) -> None:
    """The API acknowledged it (202) when Temporal accepted the signal; the incident was
    resolved but its run not yet closed: the workflow hands the report on."""
    from temporalio.client import WorkflowUpdateStage

    from domain.incident import Report, ResolveRequest

    key = f"post:{uuid.uuid4().hex}"
    opened = (await storm(storm_stack, key, 1))[0]
    first_id = opened.json()["incident_id"]
    handle = storm_stack.env.client.get_workflow_handle_for(IncidentWorkflow.run, first_id)
    # accepted = the resolve handler has run up to its projection: resolved, still running
    resolving = await handle.start_update(
        IncidentWorkflow.resolve, ResolveRequest(request_id=f"r-{uuid.uuid4().hex}",
                                                 actor="cora", summary="handled"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    late = [Report(id=f"rep-late-{n}-{uuid.uuid4().hex[:8]}", summary=f"Late report {n}",
                   severity=None, reported_by=REPORTERS[n]) for n in range(3)]
    await handle.signal("add_reports", late)
    await resolving.result()
    await handle.result()  # the run completes only once the late reports are handed on

    assert not {r.id for r in late} & set(await reports_on(storm_stack, first_id))
    next_id = dedup_incident_id(f"key:{key}", 1, storm_stack.settings.id_secret_bytes())
    on_next = await reports_on(storm_stack, next_id)
    assert on_next == Counter(r.id for r in late)  # each once, none lost
    view = await storm_stack.env.client.get_workflow_handle_for(
        IncidentWorkflow.run, next_id).query(IncidentWorkflow.state)
    assert view.incident.status == "open" and view.incident.dedup_key == key
    # the API now sends the key's reports there too
    more = (await storm(storm_stack, key, 1, first=10))[0]
    assert more.status_code in (200, 202) and more.json()["incident_id"] == next_id, more.text
    await resolve(storm_stack, next_id)


async def test_a_report_after_resolution_opens_the_next_incident_without_an_error_log(
        storm_stack: ApiStack) -> None:
    """The id of a resolved incident refuses the start (REJECT_DUPLICATE) and the report goes
    on to the next epoch. The SDK also keeps that refusal on the start operation; left there,
    asyncio logged "Future exception was never retrieved" with a traceback for every such
    report, in production logs an error for normal work."""
    import gc

    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        key = f"post:{uuid.uuid4().hex}"
        first = (await storm(storm_stack, key, 1))[0].json()["incident_id"]
        await resolve(storm_stack, first)
        await storm_stack.env.client.get_workflow_handle(first).result()
        again = (await storm(storm_stack, key, 1, first=1))[0]
        assert again.status_code == 201 and again.json()["incident_id"] != first, again.text
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [str(c.get("message")) for c in unhandled] == []
    await resolve(storm_stack, again.json()["incident_id"])


async def test_two_api_processes_open_one_incident_per_key(storm_stack: ApiStack) -> None:
    """Single-flight is per process; two processes must still agree through Temporal."""
    other = create_app(storm_stack.settings)
    async with (other.router.lifespan_context(other),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=other),
                                  base_url="http://testserver", timeout=60) as second):
        key = f"post:{uuid.uuid4().hex}"

        async def via_second(n: int) -> httpx.Response:
            return await second.post("/reports", json=report_body(key, n),
                                      headers=storm_stack.auth(REPORTERS[n % len(REPORTERS)]))
        first_half = storm(storm_stack, key, 40)
        second_half = asyncio.gather(*(via_second(n) for n in range(40, 80)))
        responses = [*(await first_half), *(await second_half)]
    assert all(r.status_code in (200, 201, 202) for r in responses)
    receipts = [r.json() for r in responses]
    assert len({r["incident_id"] for r in receipts}) == 1
    assert [r["created"] for r in receipts].count(True) == 1
    incident_id = receipts[0]["incident_id"]
    assert sum((await reports_on(storm_stack, incident_id)).values()) == 80
    await resolve(storm_stack, incident_id)


async def test_a_retry_after_resolution_gets_its_first_receipt(storm_stack: ApiStack) -> None:
    """The stored response of a keyed report is lost (Redis flushed, or the API died before
    storing it); the incident was resolved since. The retry must not open a new incident."""
    key = f"post:{uuid.uuid4().hex}"
    opened = (await storm(storm_stack, key, 1))[0]
    incident_id = opened.json()["incident_id"]
    headers = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    first = await storm_stack.call("POST", "/reports", "rep-07", json=report_body(key, 7),
                                   headers=headers)
    assert first.status_code == 202, first.text  # accepted for the open incident, by signal
    await resolve(storm_stack, incident_id)
    for record in [k async for k in storm_stack.redis.scan_iter("ce:idem:http:rep-07:*")]:
        await storm_stack.redis.delete(record)  # the first response is gone

    retry = await storm_stack.call("POST", "/reports", "rep-07", json=report_body(key, 7),
                                   headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json() == first.json()
    assert (await reports_on(storm_stack, incident_id))[first.json()["report_id"]] == 1
    # a new report for the key, after resolution, does open a new incident
    fresh = (await storm(storm_stack, key, 1, first=8))[0]
    assert fresh.status_code == 201
    assert fresh.json()["incident_id"] != incident_id
    await resolve(storm_stack, fresh.json()["incident_id"])


# ---- incident ids -----------------------------------------------------------------------

def test_ids_need_the_secret() -> None:
    one, two = b"s" * 32, b"t" * 32
    assert dedup_incident_id("social:post:123", 0, one) == \
        dedup_incident_id("social:post:123", 0, one)
    assert dedup_incident_id("social:post:123", 0, one) != \
        dedup_incident_id("social:post:123", 0, two)
    assert dedup_incident_id("social:post:123", 0, one) != \
        dedup_incident_id("social:post:123", 1, one)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        dedup_incident_id("social:post:123", 0, b"short")


def test_the_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings(tokens_file=tmp_path / "data" / "tokens.json")
    secret = settings.id_secret_bytes()
    path = tmp_path / "data" / "id-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32
    assert Settings(tokens_file=tmp_path / "data" / "tokens.json").id_secret_bytes() == secret
    assert list(path.parent.iterdir()) == [path]  # no draft left behind
    explicit = Settings(tokens_file=tmp_path / "x.json",
                        id_secret=SecretStr("0123456789abcdef0123"))
    assert explicit.id_secret_bytes() == b"0123456789abcdef0123"


async def test_an_incident_id_is_not_the_hash_of_its_key(storm_stack: ApiStack) -> None:
    import hashlib

    key = f"social:post:{uuid.uuid4().hex}"
    opened = (await storm(storm_stack, key, 1))[0]
    incident_id = opened.json()["incident_id"]
    assert hashlib.sha256(key.encode()).hexdigest()[:20] not in incident_id
    assert hashlib.sha256(f"key:{key}".encode()).hexdigest()[:20] not in incident_id
    # nor is the Redis hint named after the plain hash of the key
    hints = [k async for k in storm_stack.redis.scan_iter("ce:dedup:*")]
    assert f"ce:dedup:{hashlib.sha256(key.encode()).hexdigest()}" not in hints
    await resolve(storm_stack, incident_id)


async def test_an_incident_open_before_the_upgrade_keeps_its_reports(
        storm_stack: ApiStack) -> None:
    """Ids were `inc-{sha256(key)[:20]}-{epoch}` before they were keyed with the secret: an
    incident still open under such an id gets its key's reports until it is resolved."""
    import hashlib

    from domain.incident import StartIncident

    key = f"post:{uuid.uuid4().hex}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    legacy_id = f"inc-{digest[:20]}-0"
    registry = storm_stack.app.state.services.registry
    snapshot = registry.get("storm")
    assert snapshot is not None
    await storm_stack.env.client.start_workflow(
        IncidentWorkflow.run, StartIncident(
            incident_id=legacy_id, title="Opened before the upgrade", summary="old",
            severity=snapshot.definition.severities[0], dedup_key=key, opened_by="cora",
            opening_report_id="rep-legacy", playbook=snapshot,
            directory=registry.directory_snapshot()),
        id=legacy_id, task_queue=storm_stack.settings.task_queue)
    await storm_stack.redis.set(f"ce:dedup:{digest}", "0")  # the old epoch hint

    responses = await storm(storm_stack, key, 20)
    assert {r.json()["incident_id"] for r in responses} == {legacy_id}
    assert {r.status_code for r in responses} <= {200, 202}
    assert sum((await reports_on(storm_stack, legacy_id)).values()) == 21

    await resolve(storm_stack, legacy_id)
    after = (await storm(storm_stack, key, 1, first=30))[0]
    assert after.status_code == 201, after.text
    assert after.json()["incident_id"] not in (legacy_id, f"inc-{digest[:20]}-1")
    await resolve(storm_stack, after.json()["incident_id"])


async def test_an_incident_pins_its_directory_without_carrying_every_reporter(
        storm_stack: ApiStack) -> None:
    """300 people who only report: the incident's start carries the two it can reach or
    must authorize, under the full directory version's sha256, and still works."""
    from core.payloads import DATA_CONVERTER
    from domain.incident import StartIncident

    key = f"post:{uuid.uuid4().hex}"
    opened = (await storm(storm_stack, key, 1))[0]
    assert opened.status_code == 201, opened.text
    incident_id = opened.json()["incident_id"]
    handle = storm_stack.env.client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    history = await handle.fetch_history()
    first = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    start = DATA_CONVERTER.payload_converter.from_payload(first, StartIncident)
    assert [p.id for p in start.directory.definition.people] == ["cora", "alex"]
    full = storm_stack.app.state.services.registry.directory_snapshot()
    assert len(full.definition.people) == 302
    assert start.directory.sha256 == full.sha256
    assert len(first.data) < 8_000, len(first.data)
    # a reporter missing from the incident's directory still reports into it (the API
    # authenticates against the whole directory), and Alex still gets the sign-off task
    again = (await storm(storm_stack, key, 1, first=7))[0]
    assert again.status_code in (200, 202) and again.json()["incident_id"] == incident_id
    assert (await reports_on(storm_stack, incident_id)).total() == 2

    async def signed_off() -> dict[str, Any] | None:
        view = await storm_stack.view(incident_id, "cora")
        return view if [t["assignee"] for t in view["tasks"]] == ["alex"] else None
    await eventually(signed_off, what="Alex's sign-off task")
    await resolve(storm_stack, incident_id)
