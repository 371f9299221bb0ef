"""Crisis controls over HTTP on the real stack (app, worker, Redis, Temporal), with "now"
pinned: the stack runs on the time-skipping Temporal server, moved to the pinned days of
`tests.clock` and then to the weekday and hour each test needs (virtual time, never the
wall clock).

- Friday 17:40 London: one comms reject widens to the off-hours comms leads instead of
  ending the node `rejected`; a legal veto still ends it.
- Time off: an away approver is skipped; a roster override takes effect at once (also in a
  running incident) and ends on time; who may set what.
- A pre-approved library statement is published under the lighter policy; a non-library
  text can't use it.

Directory (`FRIDAY`): legal lena (London) and leo (Singapore); comms leads cara and chloe
(London), chen and colin (Singapore); olga stands in on call for both roles. On Friday 17:40
London olga takes the legal slot for leo, so she can't also stand in for chen and colin:
the comms vote has exactly two in-hours voters.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from domain.directory import WEEKDAYS
from tests.api_fixtures import ApiStack, _run_stack, with_db
from tests.clock import EVEN_WEEK
from tests.factories import LIBRARY_V1, drafts_playbook, person, sha, viral_playbook
from tests.workflow_harness import advance_to_today, fresh_time_env

FRIDAY: dict[str, Any] = {
    "people": [
        person("lena-legal", ["legal"], "Europe/London"),
        person("leo-legal", ["legal"], "Asia/Singapore"),
        person("cara-comms", ["comms-lead"], "Europe/London"),
        person("chloe-comms", ["comms-lead"], "Europe/London"),
        person("chen-comms", ["comms-lead"], "Asia/Singapore"),
        person("colin-comms", ["comms-lead"], "Asia/Singapore"),
        person("olga-oncall", ["legal", "comms-lead"], "UTC", hours=None),
        person("sam-social", ["social"], "Europe/London", access=["communicator"]),
        person("ada-admin", [], "Europe/London", access=["admin", "communicator"]),
        person("ray-reporter", [], "Europe/London", access=["reporter"]),
    ],
    "roles": [{"id": "legal", "oncall": "legal-oncall"},
              {"id": "comms-lead", "oncall": "comms-oncall"}, {"id": "social"}],
    "rosters": [{"id": "legal-oncall", "members": ["olga-oncall"]},
                {"id": "comms-oncall", "members": ["olga-oncall"]}],
}


def playbooks() -> dict[str, dict[str, Any]]:
    statement = viral_playbook("/demo/sink/publish")
    statement["steps"][2]["approval"]["escalation"] = []
    library = drafts_playbook("/demo/sink/publish", with_library=True)
    library.update(id="library-statement", name="Library statement")
    library["steps"][2]["approval"]["escalation"] = []
    sign_off = {
        "id": "legal-sign-off", "name": "Legal sign-off", "version": 1,
        "steps": [{"id": "sign-off", "approval": {
            "content": "Sign off {{incident.title}}", "approvers": [{"person": "lena-legal"}],
            "quorum": "any", "deadline": "4h",
            "escalation": [{"after": "15m", "add_approvers": [{"role": "legal"}]}]}},
            {"id": "resolved", "resolution": {}}],
    }
    paused = {
        "id": "pause-posts", "name": "Pause scheduled posts", "version": 1,
        "steps": [{"id": "pause-posts", "action": {
            "url": "/demo/sink/scheduler",
            "payload": {"command": "pause", "incident": "{{incident.id}}"},
            "resume_on_resolve": {"url": "/demo/sink/scheduler", "payload": {
                "command": "resume", "incident": "{{incident.id}}"}}}},
            {"id": "resolved", "resolution": {}}],
    }
    return {"viral-complaint": statement, "library-statement": library,
            "legal-sign-off": sign_off, "pause-posts": paused}


@pytest.fixture(scope="module")
async def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[ApiStack]:
    workdir = tmp_path_factory.mktemp("crisis-controls")
    (workdir / "config").mkdir()
    (workdir / "playbooks").mkdir()
    directory_file = workdir / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(FRIDAY))
    (workdir / "config" / "routing.yaml").write_text(yaml.safe_dump(
        {"routes": {s: {"playbook": "viral-complaint"}
                    for s in ("low", "medium", "high", "critical")}}))
    for name, data in playbooks().items():
        (workdir / "playbooks" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    async with fresh_time_env() as env:
        await advance_to_today(env, EVEN_WEEK)
        async for s in _run_stack(env, with_db(redis_url, 7), workdir, directory_file,
                                  Path(workdir / "playbooks")):
            yield s


async def advance_to(env: WorkflowEnvironment, weekday: str, hh: int, mm: int,
                     tz: str = "Europe/London") -> datetime:
    """Skip virtual time to the next `weekday hh:mm` in `tz`."""
    now = (await env.get_current_time()).astimezone(ZoneInfo(tz))
    target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    target += timedelta(days=(WEEKDAYS.index(weekday) - now.weekday()) % 7)
    if target <= now + timedelta(minutes=1):
        target += timedelta(days=7)
    await env.sleep(target - now)
    return target


async def open_incident(stack: ApiStack, playbook: str) -> str:
    opened = await stack.call("POST", "/incidents", "sam-social", json={
        "title": f"Backlash {uuid.uuid4().hex[:6]}", "summary": "A post has 40k shares",
        "severity": "high", "playbook": playbook})
    assert opened.status_code == 201, opened.text
    incident_id: str = opened.json()["id"]
    return incident_id


async def open_tasks(stack: ApiStack, incident_id: str, at_least: int = 1
                     ) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        tasks: list[dict[str, Any]] = (await stack.view(incident_id, "ada-admin"))["open_tasks"]
        return tasks if len(tasks) >= at_least else None
    return await stack.eventually(found, what=f"{at_least} open task(s)")


async def timeline(stack: ApiStack, incident_id: str) -> list[dict[str, Any]]:
    response = await stack.call("GET", f"/incidents/{incident_id}/timeline", "ada-admin")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def decide(stack: ApiStack, task: dict[str, Any], decision: str,
                 comment: str = "") -> dict[str, Any]:
    response = await stack.call("POST", f"/tasks/{task['id']}/decision", task["assignee"],
                                json={"decision": decision, "comment": comment})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# ---- Monday: time off, library ------------------------------------------------------


async def test_time_off_skips_the_away_approver_and_overrides_end_on_time(
        stack: ApiStack) -> None:
    now = await advance_to(stack.env, "mon", 15, 0)
    running = await open_incident(stack, "legal-sign-off")  # before any time off
    assert [t["assignee"] for t in await open_tasks(stack, running)] == ["lena-legal"]

    trip = {"start": (now - timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(hours=3)).isoformat(), "reason": "flight to Tokyo"}
    # a person sets their own time off; nobody else but an admin may
    refused = await stack.call("PUT", "/directory/people/lena-legal/away", "cara-comms",
                               json={"periods": [trip]})
    assert refused.status_code == 403, refused.text
    own = await stack.call("PUT", "/directory/people/lena-legal/away", "lena-legal",
                           json={"periods": [trip]})
    assert own.status_code == 200, own.text
    assert own.json()["overlay"]["away"]["lena-legal"][0]["reason"] == "flight to Tokyo"
    assert own.json()["incidents_updated"] >= 1  # the running incident got it
    backwards = await stack.call("PUT", "/directory/people/lena-legal/away", "ada-admin",
                                 json={"periods": [{**trip, "end": trip["start"],
                                                    "start": trip["end"]}]})
    assert backwards.status_code == 422, backwards.text
    unknown = await stack.call("PUT", "/directory/people/nobody/away", "ada-admin",
                               json={"periods": [trip]})
    assert unknown.status_code == 404, unknown.text

    away = await open_incident(stack, "legal-sign-off")
    [task] = await open_tasks(stack, away)
    assert (task["assignee"], task["via"], task["replaces"]) == (
        "olga-oncall", "oncall", "lena-legal")

    cover = {"start": now.isoformat(), "end": (now + timedelta(hours=1)).isoformat(),
             "member": "leo-legal", "reason": "Leo covers legal on-call"}
    not_admin = await stack.call("PUT", "/directory/rosters/legal-oncall/overrides",
                                 "lena-legal", json={"overrides": [cover]})
    assert not_admin.status_code == 403, not_admin.text
    stranger = await stack.call("PUT", "/directory/rosters/legal-oncall/overrides",
                                "ada-admin", json={"overrides": [{**cover, "member": "zed"}]})
    assert stranger.status_code == 422, stranger.text
    # incidents carry only people they may reach: someone who only reports can't stand in
    reporter = await stack.call("PUT", "/directory/rosters/legal-oncall/overrides",
                                "ada-admin", json={"overrides": [
                                    cover, {**cover, "member": "ray-reporter"}]})
    assert reporter.status_code == 422, reporter.text
    assert reporter.json()["detail"].startswith(
        "body.overrides[1].member: 'ray-reporter' can only report, so incidents never reach")
    set_cover = await stack.call("PUT", "/directory/rosters/legal-oncall/overrides",
                                 "ada-admin", json={"overrides": [cover]})
    assert set_cover.status_code == 200, set_cover.text
    covered = await open_incident(stack, "legal-sign-off")
    [task] = await open_tasks(stack, covered)
    assert (task["assignee"], task["replaces"]) == ("leo-legal", "lena-legal")

    # the incident that was already running resolves its escalation tier with the overlay;
    # the signal only prompts it to read the overlay (an activity), so it lands a moment
    # after the API answered
    async def applied_by_admin() -> list[dict[str, Any]] | None:
        applied = [e for e in await timeline(stack, running) if e["kind"] == "time_off_applied"]
        return applied if applied and applied[-1]["actor"] == "ada-admin" else None
    applied = await stack.eventually(applied_by_admin, what="the admin's override applied")
    assert [e["actor"] for e in applied] == ["lena-legal", "ada-admin"]
    await stack.env.sleep(timedelta(minutes=16))
    tier = await open_tasks(stack, running, at_least=2)
    assert "leo-legal" in {t["assignee"] for t in tier}

    await stack.env.sleep(timedelta(hours=1))  # the override has ended; lena is still away
    after = await open_incident(stack, "legal-sign-off")
    [task] = await open_tasks(stack, after)
    assert (task["assignee"], task["replaces"]) == ("olga-oncall", "lena-legal")

    listed = await stack.call("GET", "/directory/time-off", "ada-admin")
    assert [c["actor"] for c in listed.json()["overlay"]["changes"]] == [
        "lena-legal", "ada-admin"]
    mine = await stack.call("GET", "/directory/time-off", "cara-comms")
    assert mine.json()["overlay"]["away"] == {} and mine.json()["overlay"]["changes"] == []
    # clear it again for the tests that follow
    for path, body in (("/directory/people/lena-legal/away", {"periods": []}),
                       ("/directory/rosters/legal-oncall/overrides", {"overrides": []})):
        cleared = await stack.call("PUT", path, "ada-admin", json=body)
        assert cleared.status_code == 200, cleared.text


async def test_a_library_statement_publishes_under_the_lighter_policy(stack: ApiStack) -> None:
    await advance_to(stack.env, "tue", 11, 0)
    incident_id = await open_incident(stack, "library-statement")
    path = f"/incidents/{incident_id}/drafts"

    async def awaiting() -> bool:
        return any(e["kind"] == "awaiting_draft" for e in await timeline(stack, incident_id))
    await stack.eventually(awaiting, what="the node to wait for a draft")
    edited = await stack.call("POST", path, "sam-social", json={
        "node": "holding-statement", "text": LIBRARY_V1.replace("soon", "shortly"),
        "library": "aware-looking"})
    assert edited.status_code == 409, edited.text
    assert edited.json()["error"] == "LibraryMismatch"
    assert "byte-identical" in edited.json()["detail"]

    used = await stack.call("POST", path, "sam-social", json={
        "node": "holding-statement", "text": LIBRARY_V1, "library": "aware-looking",
        "library_version": 1})
    assert used.status_code == 201, used.text
    assert used.json()["draft"]["library"] == "aware-looking@v1"
    tasks = used.json()["tasks"]
    assert tasks and {t["role"] for t in tasks} == {"comms-lead"}  # legal approved already
    result = await decide(stack, tasks[0], "approve")
    assert result["node"]["outcome"] == "approved"

    async def published() -> list[dict[str, Any]]:
        sink = await stack.call("GET", "/demo/sink/publish")
        return [i for i in sink.json()["items"] if i["body"].get("incident") == incident_id]
    sent = await stack.eventually(published, what="the publish")
    assert [s["body"]["text"] for s in sent] == [LIBRARY_V1]
    submitted = next(e for e in await timeline(stack, incident_id)
                     if e["kind"] == "draft_submitted")
    assert (submitted["details"]["library"], submitted["details"]["library_version"]) == (
        "aware-looking", 1)

    async def recorded() -> dict[str, Any] | None:  # on the timeline once the call returned
        return next((e for e in await timeline(stack, incident_id)
                     if e["kind"] == "action_run"), None)
    run = await stack.eventually(recorded, what="the publish on the timeline")
    assert run["details"]["published_sha256"] == sha(LIBRARY_V1)


# ---- Friday 17:40 London: widening -------------------------------------------------


async def test_friday_one_comms_reject_widens_and_a_legal_veto_still_ends(
        stack: ApiStack) -> None:
    await advance_to(stack.env, "fri", 17, 40)
    incident_id = await open_incident(stack, "viral-complaint")
    tasks = await open_tasks(stack, incident_id, at_least=3)
    comms = [t for t in tasks if t["role"] == "comms-lead"]
    assert {t["assignee"] for t in comms} == {"cara-comms", "chloe-comms"}
    result = await decide(stack, comms[0], "reject", comment="Too defensive")
    assert result["node"]["outcome"] == "pending"  # not `rejected`: more comms leads exist
    widened = await open_tasks(stack, incident_id, at_least=4)  # 3 open before the reject
    added = {t["assignee"] for t in widened} - {t["assignee"] for t in tasks}
    assert added and added <= {"chen-comms", "colin-comms"}  # off-hours comms leads
    created = [e for e in await timeline(stack, incident_id) if e["kind"] == "task_created"
               and e["details"]["assignee"] in ("chen-comms", "colin-comms")]
    assert created and all("widened" in e["details"]["reason"] for e in created)

    legal = next(t for t in widened if t["role"] == "legal")
    vetoed = await decide(stack, legal, "reject", comment="Admits liability")
    assert vetoed["node"]["outcome"] == "vetoed"


async def test_scheduled_posts_can_be_kept_paused_past_resolution(stack: ApiStack) -> None:
    incident_id = await open_incident(stack, "pause-posts")

    async def paused() -> bool:
        return any(e["kind"] == "posts_paused" for e in await timeline(stack, incident_id))
    await stack.eventually(paused, what="posts to pause")
    path = f"/incidents/{incident_id}/scheduled-posts/keep-paused"
    approver = await stack.call("POST", path, "lena-legal", json={"reason": "no"})
    assert approver.status_code == 403, approver.text
    kept = await stack.call("POST", path, "sam-social",
                            json={"keep": True, "reason": "Second wave of posts"})
    assert kept.status_code == 201, kept.text
    assert kept.json()["entry"]["kind"] == "posts_kept_paused"
    other = await open_incident(stack, "legal-sign-off")
    nothing = await stack.call("POST", f"/incidents/{other}/scheduled-posts/keep-paused",
                               "sam-social", json={"reason": "x"})
    assert nothing.status_code == 409 and nothing.json()["error"] == "NoPausedPosts"

    resolved = await stack.call("POST", f"/incidents/{incident_id}/resolve", "sam-social",
                                json={"summary": "Handled"})
    assert resolved.status_code == 200, resolved.text

    async def skipped() -> list[dict[str, Any]]:
        return [e for e in await timeline(stack, incident_id)
                if e["kind"] == "posts_resume_skipped"]
    entry = (await stack.eventually(skipped, what="the resume to be skipped"))[0]
    assert (entry["details"]["kept_by"], entry["details"]["reason"]) == (
        "sam-social", "Second wave of posts")
    sink = (await stack.call("GET", "/demo/sink/scheduler")).json()["items"]
    assert [i["body"]["command"] for i in sink if i["body"].get("incident") == incident_id] == [
        "pause"]
