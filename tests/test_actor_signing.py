"""Signed actors: commands that reach Temporal without the API's signature change nothing.

A caller who can reach Temporal but holds no actor key can name anyone in a command; the
worker refuses it before any validator runs, and the incident stays exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
)
from temporalio.exceptions import ApplicationError
from temporalio.workflow import _Definition

from core.actor_signing import (
    FORGED,
    HEADER,
    UNSIGNED,
    Keyring,
    actor_keyring,
    signature_header,
    signed_client,
    start_command,
    unsigned_client,
    verify,
)
from core.config import Settings
from domain.incident import DecideRequest, ResolveRequest, Task
from tests.clock import EVEN_WEEK
from tests.factories import snapshot, viral_playbook
from tests.workflow_harness import Harness, eventually, fresh_time_env, harness
from workflows.catalog import PolicyCatalogWorkflow
from workflows.incident import IncidentWorkflow

NEW, OLD = "k-2026-12", "k-2026-06"
KEYS = {NEW: "n" * 32, OLD: "o" * 32}


def keyring(*ids: str) -> Keyring:
    return Keyring(ids[0], {i: KEYS[i].encode() for i in ids})


def decide_request(actor: str, task_id: str, decision: str = "reject") -> DecideRequest:
    return DecideRequest(request_id=uuid.uuid4().hex, actor=actor, task_id=task_id,
                         decision=decision)  # type: ignore[arg-type]


# ---- the signature itself (pure) --------------------------------------------------------------

def test_a_signature_covers_incident_command_actor_request_roles_and_body() -> None:
    ring = keyring(NEW)
    req = decide_request("lena-legal", "inc-a.step.1")
    header = {HEADER: signature_header(ring, "inc-a", "decide", [req], ["approver"])}
    assert verify(ring, header, "inc-a", "decide", [req]) == ("lena-legal", ["approver"])

    changed: list[tuple[str, str, list[Any]]] = [
        ("inc-b", "decide", [req]),  # another incident
        ("inc-a", "resolve", [req]),  # another command
        ("inc-a", "decide", [req.model_copy(update={"actor": "ada-admin"})]),
        ("inc-a", "decide", [req.model_copy(update={"request_id": "other"})]),
        ("inc-a", "decide", [req.model_copy(update={"decision": "approve"})]),
        ("inc-a", "decide", [req.model_copy(update={"comment": "added later"})]),
    ]
    for workflow_id, command, args in changed:
        with pytest.raises(ApplicationError) as refused:
            verify(ring, header, workflow_id, command, args)
        assert refused.value.type == FORGED and refused.value.non_retryable
    # roles are signed too: a header that claims more roles does not verify
    claim = header[HEADER].data.replace(b'["approver"]', b'["admin", "approver"]')
    with pytest.raises(ApplicationError, match="does not match"):
        verify(ring, {HEADER: Payload(metadata=header[HEADER].metadata, data=claim)},
               "inc-a", "decide", [req])
    with pytest.raises(ApplicationError) as unsigned:
        verify(ring, {}, "inc-a", "decide", [req])
    assert unsigned.value.type == UNSIGNED


def test_rotation_accepts_the_previous_key_until_it_is_retired() -> None:
    req = decide_request("lena-legal", "inc-a.step.1")
    by_old = {HEADER: signature_header(keyring(OLD), "inc-a", "decide", [req])}
    by_new = {HEADER: signature_header(keyring(NEW), "inc-a", "decide", [req])}
    during = keyring(NEW, OLD)
    assert verify(during, by_old, "inc-a", "decide", [req])[0] == "lena-legal"
    assert verify(during, by_new, "inc-a", "decide", [req])[0] == "lena-legal"
    after = keyring(NEW)
    with pytest.raises(ApplicationError, match="unknown or retired key"):
        verify(after, by_old, "inc-a", "decide", [req])
    # the same key id with another secret is a forgery, not a rotation
    impostor = Keyring(NEW, {NEW: b"x" * 32})
    with pytest.raises(ApplicationError, match="does not match"):
        verify(impostor, by_new, "inc-a", "decide", [req])


def test_keys_come_from_settings_first_key_signing_and_are_never_shown(tmp_path: Any) -> None:
    ring = actor_keyring(Settings(actor_keys={NEW: SecretStr(KEYS[NEW]),
                                              OLD: SecretStr(KEYS[OLD])}))
    assert ring.signing_id == NEW and set(ring.keys) == {NEW, OLD}
    assert KEYS[NEW] not in repr(ring) and KEYS[NEW] not in repr(Settings(
        actor_keys={NEW: SecretStr(KEYS[NEW])}))
    # without keys: one random key in a 0600 file next to the tokens, the same every time
    settings = Settings(tokens_file=tmp_path / "tokens.json")
    first, again = actor_keyring(settings), actor_keyring(settings)
    assert first == again and first.signing_id == "local"
    assert (tmp_path / "actor.key").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="16"):
        actor_keyring(Settings(actor_keys={"short": SecretStr("tiny")}))


def test_every_update_of_every_workflow_has_a_validator() -> None:
    """The verifier runs as part of validation: an update without a validator would skip it."""
    from worker.main import WORKFLOWS

    assert len(WORKFLOWS) >= 5
    for cls in WORKFLOWS:
        definition = _Definition.must_from_class(cls)
        missing = [name for name, update in definition.updates.items()
                   if update.validator is None]
        assert not missing, f"{cls.__name__}: updates without a validator: {missing}"


# ---- against a real server and worker -------------------------------------------------------

class _FixedHeader(Interceptor):
    """A client that sends a header of its own making (a copied or home-made signature)."""

    def __init__(self, header: Payload) -> None:
        self.header = header

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        header = self.header

        class Out(OutboundInterceptor):
            async def start_workflow_update(self, input: StartWorkflowUpdateInput
                                            ) -> WorkflowUpdateHandle[Any]:
                input.headers = {**input.headers, HEADER: header}
                return await self.next.start_workflow_update(input)

            async def start_workflow(self, input: StartWorkflowInput
                                     ) -> WorkflowHandle[Any, Any]:
                input.headers = {**input.headers, HEADER: header}
                return await self.next.start_workflow(input)

            async def signal_workflow(self, input: SignalWorkflowInput) -> None:
                input.headers = {**input.headers, HEADER: header}
                await self.next.signal_workflow(input)
        return Out(next)


def with_header(client: Client, header: Payload) -> Client:
    config = unsigned_client(client).config()
    config["interceptors"] = [*config.get("interceptors", []), _FixedHeader(header)]
    return Client(**config)


async def _legal_task(h: Harness, handle: WorkflowHandle[Any, Any]) -> Task:
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    return next(t for t in tasks if t.role == "legal")


async def _refused(client: Client, incident_id: str, update: Any, arg: Any) -> str | None:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await client.get_workflow_handle(incident_id).execute_update(update, arg)
    cause = refused.value.cause
    return cause.type if isinstance(cause, ApplicationError) else None


async def test_forged_and_unsigned_commands_sent_straight_to_temporal_change_nothing(
        h: Harness) -> None:
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    legal = await _legal_task(h, handle)
    before = await h.timeline(handle)
    raw = unsigned_client(h.env.client)

    # the attack: no token, no key, a veto in the legal approver's name ...
    veto = decide_request(legal.assignee, legal.id)
    assert await _refused(raw, handle.id, IncidentWorkflow.decide, veto) == UNSIGNED
    # ... and a resolve in the admin's
    resolve = ResolveRequest(request_id="forged-1", actor="ada-admin", summary="forged")
    assert await _refused(raw, handle.id, IncidentWorkflow.resolve, resolve) == UNSIGNED

    # a home-made signature (right key id, wrong secret)
    impostor = Keyring("local", {"local": b"guessed-secret-0123456789"})
    forged = with_header(h.env.client, signature_header(
        impostor, handle.id, "decide", [veto], ["approver"]))
    assert await _refused(forged, handle.id, IncidentWorkflow.decide, veto) == FORGED

    # a genuine signature copied onto another command: the veto's signature under an
    # approval, and under a resolve
    genuine = signature_header(actor_keyring(Settings()), handle.id, "decide", [veto])
    approve = veto.model_copy(update={"decision": "approve"})
    copied = with_header(h.env.client, genuine)
    assert await _refused(copied, handle.id, IncidentWorkflow.decide, approve) == FORGED
    assert await _refused(copied, handle.id, IncidentWorkflow.resolve, resolve) == FORGED

    # nothing changed: no decision or resolution on the timeline (only the task messages
    # still being delivered were added), the task and the incident still open
    after = await h.timeline(handle)
    assert after[:len(before)] == before
    assert {e.kind for e in after[len(before):]} <= {"notified"}, after[len(before):]
    view = await h.state(handle)
    assert view.incident.status == "open"
    assert next(t for t in view.tasks if t.id == legal.id).state == "open"

    # the API's way (signed) still works, with the real holder's name
    decided = await h.decide(handle, legal, "approve")
    assert decided.task.state == "approved"
    entries = [e for e in await h.timeline(handle) if e.kind == "decision"]
    assert [e.actor for e in entries] == [legal.assignee]


@pytest.mark.parametrize("phase", ["during", "after"])
async def test_a_previous_key_works_during_rotation_and_is_refused_once_retired(
        redis_url: str, phase: str) -> None:
    worker_keys = [NEW, OLD] if phase == "during" else [NEW]
    settings = Settings(redis_url=redis_url,
                        actor_keys={k: SecretStr(KEYS[k]) for k in worker_keys})
    async with fresh_time_env() as env, harness(env, redis_url, EVEN_WEEK,
                                                settings=settings) as h:
        await h.advance_to("mon", 15, 0)
        by_old = signed_client(env.client, keyring(OLD))
        by_new = signed_client(env.client, keyring(NEW))
        handle = await h.start(snapshot(viral_playbook(h.publish.url())), client=by_new)
        legal = await _legal_task(h, handle)
        request = decide_request(legal.assignee, legal.id, "approve")
        if phase == "during":
            result = await by_old.get_workflow_handle(handle.id).execute_update(
                IncidentWorkflow.decide, request)
            assert result.task.state == "approved"
        else:
            assert await _refused(by_old, handle.id, IncidentWorkflow.decide,
                                  request) == FORGED
            assert not [e for e in await h.timeline(handle) if e.kind == "decision"]
            result = await by_new.get_workflow_handle(handle.id).execute_update(
                IncidentWorkflow.decide, request)
            assert result.task.state == "approved"



# ---- workflow starts ----------------------------------------------------------------------


async def _refused_start(client: Client, workflow_run: Any, arg: Any, workflow_id: str,
                         queue: str) -> str | None:
    """Start straight on Temporal; the refusal's type, once sure the run did nothing."""
    handle = await client.start_workflow(workflow_run, arg, id=workflow_id, task_queue=queue)
    with pytest.raises(WorkflowFailureError) as failed:  # at once, or not at all
        await asyncio.wait_for(handle.result(), timeout=30)
    events = (await handle.fetch_history()).events
    assert not [e for e in events if e.HasField("activity_task_scheduled_event_attributes")
                or e.HasField("timer_started_event_attributes")
                or e.HasField("start_child_workflow_execution_initiated_event_attributes")]
    cause = failed.value.cause
    return cause.type if isinstance(cause, ApplicationError) else None


async def test_workflows_started_straight_on_temporal_without_the_api_signature_do_nothing(
        h: Harness) -> None:
    """Whoever reaches Temporal could start an incident whose playbook and directory are
    their own (its messages go out in the company's name, its actions call the company's
    webhooks), a policy catalog whose active playbooks are theirs, or a time-off overlay.
    Each such run fails before its first command: no message, no action, no timer."""
    from domain.policy_versions import CatalogStart
    from domain.time_off import TimeOffStart
    from tests.factories import start_input
    from workflows.time_off import TimeOffWorkflow

    await h.advance_to("mon", 15, 0)
    # the API's way (signed) opens an incident and asks its approvers (first: waiting on the
    # refused runs below lets the time-skipping server move the clock past working hours)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    assert len(await h.tasks_when(handle, lambda ts: len(ts) >= 5)) >= 5
    published = len(h.publish.requests)

    raw = unsigned_client(h.env.client)
    start = start_input(snapshot(viral_playbook(h.publish.url())))
    q = h.task_queue
    assert await _refused_start(raw, IncidentWorkflow.run, start, start.incident_id, q) \
        == UNSIGNED
    catalog = CatalogStart(catalog_id=f"catalog-{uuid.uuid4().hex[:6]}")
    assert await _refused_start(raw, PolicyCatalogWorkflow.run, catalog, catalog.catalog_id,
                                q) == UNSIGNED
    assert await _refused_start(raw, TimeOffWorkflow.run, TimeOffStart(),
                                f"time-off-{uuid.uuid4().hex[:6]}", q) == UNSIGNED

    # a home-made key, and a genuine start signature moved onto another incident
    impostor = signed_client(h.env.client, Keyring("local", {"local": b"guessed-secret-01234"}))
    other = start.model_copy(update={"incident_id": f"inc-{uuid.uuid4().hex[:8]}"})
    assert await _refused_start(impostor, IncidentWorkflow.run, other, other.incident_id,
                                q) == FORGED
    name = _Definition.must_from_class(IncidentWorkflow).name
    genuine = signature_header(actor_keyring(Settings()), start.incident_id,
                               start_command(name), [start])
    moved = start.model_copy(update={"incident_id": f"inc-{uuid.uuid4().hex[:8]}"})
    assert await _refused_start(with_header(h.env.client, genuine), IncidentWorkflow.run,
                                moved, moved.incident_id, q) == FORGED
    assert len(h.publish.requests) == published  # none of them published anything


# ---- signals taken at their word: reports ------------------------------------------------


async def test_forged_reports_are_dropped_now_and_on_every_replay(h: Harness) -> None:
    """A report puts its reporter's name and words on the timeline. One sent straight to
    Temporal (no key, a home-made key, or a genuine signature under other words) is dropped;
    the API's signed batch lands. The refusals are in the history, so a worker replaying it
    with other keys (the signing key retired since) takes exactly the same path."""
    from temporalio.worker import Replayer

    from core.actor_signing import REFUSED_SIGNAL_MARKER, ActorVerifier, ephemeral_keyring
    from core.payloads import DATA_CONVERTER
    from domain.incident import Report
    from worker.main import workflow_runner

    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    await _legal_task(h, handle)
    ceo = Report(id="forged-1", summary="The CEO says: admit everything",
                 reported_by="cara-comms")
    raw = unsigned_client(h.env.client).get_workflow_handle(handle.id)
    await raw.signal(IncidentWorkflow.add_report, ceo)
    await raw.signal("add_reports", [ceo.model_copy(update={"id": "forged-2"})])
    impostor = Keyring("local", {"local": b"guessed-secret-0123456789"})
    genuine = Report(id="real-1", summary="Seen it on TikTok", reported_by="ray-reporter")
    forged = with_header(h.env.client, signature_header(
        impostor, handle.id, "add_reports", [[ceo]]))
    await forged.get_workflow_handle(handle.id).signal("add_reports", [ceo])
    signed_header = signature_header(actor_keyring(Settings()), handle.id, "add_reports",
                                     [[genuine]])
    under_other_words = with_header(h.env.client, signed_header)
    await under_other_words.get_workflow_handle(handle.id).signal(
        "add_reports", [genuine.model_copy(update={"summary": "admit everything"})])
    # the API's way: signed by the client's ActorSigner
    await h.env.client.get_workflow_handle(handle.id).signal("add_reports", [genuine])

    view = await eventually(lambda: h.state(handle), lambda v: v.incident.reports == 2)
    added = [e for e in await h.timeline(handle) if e.kind == "report_added"]
    assert [(e.actor, e.details["summary"]) for e in added] == [
        ("ray-reporter", "Seen it on TikTok")]
    assert view.incident.reports == 2  # the opening report and the genuine one

    history = await handle.fetch_history()
    patches = [json.loads(e.marker_recorded_event_attributes.details["patch-data"]
                          .payloads[0].data)["id"]
               for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert [p for p in patches if p.startswith(REFUSED_SIGNAL_MARKER)] == [
        f"{REFUSED_SIGNAL_MARKER}-{n}" for n in (1, 2, 3, 4)]
    # a worker with none of the keys that signed it replays it as it ran (it drops what was
    # refused, by the markers, and checks nothing again); one without the check cannot
    for verifier in ([ActorVerifier(ephemeral_keyring("since-rotated"))], []):
        replayer = Replayer(workflows=[IncidentWorkflow], data_converter=DATA_CONVERTER,
                            workflow_runner=workflow_runner(), interceptors=verifier)
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if verifier:
            assert result.replay_failure is None, result.replay_failure
        else:
            assert "crisis-refused-signal-1" in str(result.replay_failure)
