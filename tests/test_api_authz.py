"""The authorization matrix: every endpoint x every role x own/other object.

On the matrix directory each person has exactly one API role (rita reporter, cora
communicator, alex approver, liam leader, adam admin) and each holds one task in the
`matrix` playbook's approval, so "own" exists for every role:
- own task: the caller's task; other task: abby's task in the same incident;
- own incident: one where the caller holds a task; other incident: a `matrix-quiet`
  incident, where nobody does.
Every cell states the exact status; cells expected to succeed get fresh objects, so the
order of cells never matters. The summary counts unexpected successes, which must be 0.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from core.actor_signing import actor_keyring, signed_client, unsigned_client
from domain.incident import DecideRequest

if TYPE_CHECKING:
    from tests.api_fixtures import ApiStack

# registered once as a plugin, so each stack is shared by every module of the session
pytest_plugins = ["tests.api_fixtures"]

ROLES = {"anonymous": None, "reporter": "rita", "communicator": "cora", "approver": "alex",
         "leader": "liam", "admin": "adam"}
SMALL_PLAYBOOK = ("id: drafted\nname: Drafted\nversion: 1\nsteps:\n"
                  "  - id: tell\n    notify: {to: [{person: liam}], message: hi}\n")


@dataclass
class World:
    """Objects the cells act on."""

    stack: ApiStack
    shared: dict[str, Any]  # incident "a" (matrix), incident "b" (matrix-quiet)

    async def incident_with_tasks(self) -> dict[str, Any]:
        return await self.stack.matrix_incident()


# (world, caller, own object?, fresh object?) -> path. Cells expected to succeed at a
# mutating endpoint get fresh objects, so no cell changes what another cell sees.
Target = Callable[[World, str | None, bool, bool], Awaitable[str]]


def fixed(path: str) -> Target:
    async def target(world: World, person: str | None, own: bool, fresh: bool) -> str:
        return path
    return target


def incident_path(suffix: str = "", mutates: bool = False) -> Target:
    """Own: an incident where the caller holds a task; other: one where nobody does."""
    async def target(world: World, person: str | None, own: bool, fresh: bool) -> str:
        if mutates and fresh:
            incident = (await world.incident_with_tasks() if own
                        else await world.stack.open_incident("cora", "matrix-quiet"))
            return f"/incidents/{incident['id']}{suffix}"
        return f"/incidents/{world.shared['a' if own else 'b']['id']}{suffix}"
    return target


def task_path(suffix: str = "", mutates: bool = False) -> Target:
    """Own: the caller's task; other: abby's task in the same incident."""
    async def target(world: World, person: str | None, own: bool, fresh: bool) -> str:
        incident = await world.incident_with_tasks() if mutates and fresh else world.shared["a"]
        holder = person if own and person in incident["tasks"] else "abby"
        return f"/tasks/{incident['tasks'][holder]}{suffix}"
    return target


@dataclass(frozen=True)
class Endpoint:
    method: str
    name: str
    target: Target
    expected: dict[str, int | tuple[int, int]]  # role -> status, or (own, other)
    body: Callable[[], Any] | None = None
    has_owner: bool = False
    content_type: str | None = None


def new_incident() -> dict[str, Any]:
    return {"title": "Matrix", "summary": "cell", "severity": "high", "playbook": "matrix-quiet"}


def new_report() -> dict[str, Any]:
    return {"summary": "seen it", "dedup_key": f"matrix-{uuid.uuid4().hex}", "severity": "low"}


READERS = {"reporter": 403, "communicator": 200, "approver": 403, "leader": 200, "admin": 200}
ENDPOINTS = [
    Endpoint("GET", "healthz", fixed("/healthz"), {r: 200 for r in ROLES}),
    Endpoint("GET", "readyz", fixed("/readyz"), {r: 200 for r in ROLES}),
    Endpoint("POST", "open incident", fixed("/incidents"), {
        "anonymous": 401, "reporter": 403, "communicator": 201, "approver": 403, "leader": 403,
        "admin": 201}, body=new_incident),
    Endpoint("POST", "report", fixed("/reports"), {
        "anonymous": 401, "reporter": 201, "communicator": 201, "approver": 201, "leader": 201,
        "admin": 201}, body=new_report),
    Endpoint("GET", "list incidents", fixed("/incidents"), {"anonymous": 401, **READERS}),
    # an incident the approver may not see is 404, as an unknown one (no existence oracle)
    Endpoint("GET", "incident", incident_path(), {
        "anonymous": 401, "reporter": (403, 403), "communicator": (200, 200),
        "approver": (200, 404), "leader": (200, 200), "admin": (200, 200)}, has_owner=True),
    *(Endpoint("GET", name, incident_path(f"/{name}"), {
        "anonymous": 401, "reporter": (403, 403), "communicator": (200, 200),
        "approver": (200, 404), "leader": (200, 200), "admin": (200, 200)}, has_owner=True)
      for name in ("timeline", "metrics", "report")),
    Endpoint("POST", "status update", incident_path("/status-updates", mutates=True), {
        "anonymous": 401, "reporter": (403, 403), "communicator": (201, 201),
        "approver": (403, 403), "leader": (403, 403), "admin": (201, 201)},
        body=lambda: {"message": "update"}, has_owner=True),
    Endpoint("POST", "resolve", incident_path("/resolve", mutates=True), {
        "anonymous": 401, "reporter": (403, 403), "communicator": (200, 200),
        "approver": (403, 403), "leader": (403, 403), "admin": (200, 200)},
        body=lambda: {"summary": "over"}, has_owner=True),
    Endpoint("GET", "inbox", fixed("/tasks"), {
        "anonymous": 401, "reporter": 403, "communicator": 200, "approver": 200, "leader": 200,
        "admin": 200}),
    Endpoint("GET", "someone's inbox", fixed("/tasks?assignee=abby"), {
        "anonymous": 401, "reporter": 403, "communicator": 403, "approver": 403, "leader": 200,
        "admin": 200}),
    Endpoint("GET", "task", task_path(), {
        "anonymous": 401, "reporter": (403, 403), "communicator": (200, 200),
        "approver": (200, 403), "leader": (200, 200), "admin": (200, 200)}, has_owner=True),
    Endpoint("POST", "decision", task_path("/decision", mutates=True), {
        "anonymous": 401, "reporter": (403, 403), "communicator": (200, 403),
        "approver": (200, 403), "leader": (200, 403), "admin": (200, 403)},
        body=lambda: {"decision": "approve", "comment": "fine"}, has_owner=True),
    Endpoint("POST", "delegate", task_path("/delegate", mutates=True), {
        "anonymous": 401, "reporter": (403, 403), "communicator": (200, 403),
        "approver": (200, 403), "leader": (200, 403), "admin": (200, 403)},
        body=lambda: {"to": "dora"}, has_owner=True),
    Endpoint("GET", "playbooks", fixed("/playbooks"), {
        "anonymous": 401, "reporter": 403, "communicator": 200, "approver": 200, "leader": 200,
        "admin": 200}),
    Endpoint("GET", "playbook", fixed("/playbooks/matrix"), {
        "anonymous": 401, "reporter": 403, "communicator": 200, "approver": 200, "leader": 200,
        "admin": 200}),
    Endpoint("POST", "validate playbook", fixed("/playbooks/validate"), {
        "anonymous": 401, "reporter": 403, "communicator": 403, "approver": 403, "leader": 403,
        "admin": 200}, body=lambda: SMALL_PLAYBOOK, content_type="application/yaml"),
    # demo mode (the test stacks, `make run`): no token needed, the worker posts webhooks here
    Endpoint("POST", "demo sink", fixed("/demo/sink/matrix"), {r: 200 for r in ROLES},
             body=lambda: {"text": "hello"}),
    Endpoint("GET", "demo sink list", fixed("/demo/sink/matrix"), {r: 200 for r in ROLES}),
]


@dataclass(frozen=True)
class Cell:
    endpoint: Endpoint
    role: str
    own: bool | None
    expected: int

    @property
    def label(self) -> str:
        owner = "" if self.own is None else (" own" if self.own else " other")
        return f"{self.endpoint.method} {self.endpoint.name} as {self.role}{owner}"


def cells() -> list[Cell]:
    out: list[Cell] = []
    for endpoint in ENDPOINTS:
        for role in ROLES:
            expected = endpoint.expected[role]
            if isinstance(expected, tuple):
                out += [Cell(endpoint, role, True, expected[0]),
                        Cell(endpoint, role, False, expected[1])]
            else:
                out.append(Cell(endpoint, role, True if endpoint.has_owner else None, expected))
    return out


async def run_cell(world: World, cell: Cell) -> int:
    person = ROLES[cell.role]
    path = await cell.endpoint.target(world, person, cell.own is not False, cell.expected < 300)
    kwargs: dict[str, Any] = {}
    if cell.endpoint.body is not None:
        body = cell.endpoint.body()
        if cell.endpoint.content_type:
            kwargs = {"content": body, "headers": {"Content-Type": cell.endpoint.content_type}}
        else:
            kwargs = {"json": body}
    response = await world.stack.call(cell.endpoint.method, path, person, **kwargs)
    if response.status_code >= 400:
        assert response.json()["error"], cell.label  # every refusal is a JSON error
    return response.status_code


async def test_authorization_matrix(matrix_stack: ApiStack) -> None:
    world = World(matrix_stack, {})
    world.shared["a"] = await world.incident_with_tasks()
    quiet = await matrix_stack.open_incident("cora", "matrix-quiet")
    world.shared["b"] = {"id": quiet["id"], "tasks": {}}

    results = [(cell, await run_cell(world, cell)) for cell in cells()]
    wrong = [f"{cell.label}: expected {cell.expected}, got {status}"
             for cell, status in results if status != cell.expected]
    unexpected_successes = [cell.label for cell, status in results
                            if status < 300 <= cell.expected]
    assert unexpected_successes == []
    assert wrong == []
    assert len(results) == 171  # every endpoint x role x own/other object


async def test_inbox_and_incident_task_listing_show_only_what_the_caller_may_see(
        matrix_stack: ApiStack) -> None:
    incident = await World(matrix_stack, {}).incident_with_tasks()
    mine = await matrix_stack.call("GET", f"/tasks?incident_id={incident['id']}", "alex")
    assert [t["assignee"] for t in mine.json()["items"]] == ["alex"]
    everyone = await matrix_stack.call("GET", f"/tasks?incident_id={incident['id']}", "cora")
    assert sorted(t["assignee"] for t in everyone.json()["items"]) == sorted(incident["tasks"])
    receipt = await matrix_stack.call("POST", "/reports", "rita", json=new_report())
    assert set(receipt.json()) == {"incident_id", "created", "report_id"}


async def test_decided_and_delegated_tasks_answer_409(matrix_stack: ApiStack) -> None:
    incident = await World(matrix_stack, {}).incident_with_tasks()
    task = incident["tasks"]["alex"]
    first = await matrix_stack.call("POST", f"/tasks/{task}/decision", "alex",
                                    json={"decision": "approve", "comment": ""})
    assert first.status_code == 200
    again = await matrix_stack.call("POST", f"/tasks/{task}/decision", "alex",
                                    json={"decision": "reject", "comment": ""})
    assert (again.status_code, again.json()["error"]) == (409, "TaskClosed")

    moved = incident["tasks"]["abby"]
    delegated = await matrix_stack.call("POST", f"/tasks/{moved}/delegate", "abby",
                                        json={"to": "dora", "comment": "on a plane"})
    assert delegated.status_code == 200, delegated.text
    new_task = delegated.json()["new_task"]
    assert (new_task["assignee"], new_task["delegated_from"]) == ("dora", moved)
    late = await matrix_stack.call("POST", f"/tasks/{moved}/decision", "abby",
                                   json={"decision": "approve"})
    assert (late.status_code, late.json()["error"]) == (409, "TaskClosed")
    # the deputy decides, with the new task or the original id
    by_deputy = await matrix_stack.call("POST", f"/tasks/{moved}/decision", "dora",
                                        json={"decision": "approve"})
    assert by_deputy.status_code == 200, by_deputy.text
    assert by_deputy.json()["task"]["id"] == new_task["id"]
    entries = (await matrix_stack.call("GET", f"/incidents/{incident['id']}/timeline",
                                       "liam")).json()["entries"]
    delegation = next(e for e in entries if e["kind"] == "delegation")
    assert (delegation["details"]["from"], delegation["details"]["to"]) == ("abby", "dora")

    to_nobody = await matrix_stack.call("POST", f"/tasks/{incident['tasks']['cora']}/delegate",
                                        "cora", json={"to": "ghost"})
    assert (to_nobody.status_code, to_nobody.json()["error"]) == (422, "InvalidDelegate")
    unknown = await matrix_stack.call("POST", f"/tasks/{incident['id']}.sign-off.99/decision",
                                      "cora", json={"decision": "approve"})
    assert unknown.status_code == 404

    resolved = await matrix_stack.call("POST", f"/incidents/{incident['id']}/resolve", "cora",
                                       json={"summary": "done"})
    assert resolved.status_code == 200
    closed = await matrix_stack.call("POST", f"/incidents/{incident['id']}/status-updates",
                                     "cora", json={"message": "late"})
    assert closed.status_code == 409


async def test_workflow_refuses_a_non_holder_even_when_the_api_is_bypassed(
        matrix_stack: ApiStack) -> None:
    incident = await World(matrix_stack, {}).incident_with_tasks()
    request = DecideRequest(request_id="bypass-1", actor="liam",
                            task_id=incident["tasks"]["abby"], decision="approve")
    # without the API's key the command is refused before anything looks at it ...
    raw = unsigned_client(matrix_stack.env.client)
    with pytest.raises(WorkflowUpdateFailedError) as raised:
        await raw.get_workflow_handle(incident["id"]).execute_update("decide", request)
    assert isinstance(raised.value.cause, ApplicationError)
    assert raised.value.cause.type == "UnsignedCommand"
    # ... and even a holder of the key cannot decide someone else's task
    keyed = signed_client(matrix_stack.env.client, actor_keyring(matrix_stack.settings))
    with pytest.raises(WorkflowUpdateFailedError) as raised:
        await keyed.get_workflow_handle(incident["id"]).execute_update("decide", request)
    assert isinstance(raised.value.cause, ApplicationError)
    assert raised.value.cause.type == "NotYourTask"


# ---- no existence oracle -------------------------------------------------------------------

UNKNOWN_INCIDENT = "inc-00000000000000000000-0"
HIDDEN = "<id>"


async def test_a_hidden_incident_answers_exactly_like_an_unknown_one_on_every_route(
        matrix_stack: ApiStack) -> None:
    """dora (an approver) holds no task in this incident: whatever she asks about it, or
    about one of its tasks, she gets the answer an unknown id gets, byte for byte (the id
    aside), through the API and the web pages alike."""
    incident = await matrix_stack.matrix_incident()
    hidden_task = incident["tasks"]["abby"]
    unknown_task = f"{UNKNOWN_INCIDENT}.sign-off.1"
    api: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/incidents/{i}", {}), ("GET", "/incidents/{i}/timeline", {}),
        ("GET", "/incidents/{i}/metrics", {}), ("GET", "/incidents/{i}/report", {}),
        ("GET", "/incidents/{i}/drafts", {}), ("GET", "/incidents/{i}/events", {}),
        ("POST", "/incidents/{i}/status-updates", {"json": {"message": "x"}}),
        ("POST", "/incidents/{i}/resolve", {"json": {"summary": "x"}}),
        ("POST", "/incidents/{i}/drafts", {"json": {"node": "sign-off", "text": "x"}}),
        ("POST", "/incidents/{i}/publish-confirmations", {"json": {"step": "x"}}),
        ("GET", "/tasks/{t}", {}),
        ("POST", "/tasks/{t}/decision", {"json": {"decision": "approve"}}),
        ("POST", "/tasks/{t}/delegate", {"json": {"to": "alex"}}),
        ("GET", "/tasks?incident_id={i}", {}),
    ]
    differences = []

    def same(label: str, hidden: httpx.Response, unknown: httpx.Response,
             ids: tuple[str, str]) -> None:
        shown = hidden.text.replace(ids[0], HIDDEN)
        if (hidden.status_code, shown) != (unknown.status_code,
                                          unknown.text.replace(ids[1], HIDDEN)):
            differences.append(f"{label}: {hidden.status_code} {shown[:200]!r} vs "
                               f"{unknown.status_code} {unknown.text[:200]!r}")
        elif hidden.status_code < 400 and "?" not in label:
            differences.append(f"{label}: {hidden.status_code} for a hidden incident")

    for method, template, kwargs in api:
        answers = []
        for i, t in ((incident["id"], hidden_task), (UNKNOWN_INCIDENT, unknown_task)):
            answers.append(await matrix_stack.call(
                method, template.format(i=i, t=t), "dora", **kwargs))
        ids = (hidden_task, unknown_task) if "{t}" in template else (
            incident["id"], UNKNOWN_INCIDENT)
        same(f"{method} {template}", answers[0], answers[1], ids)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=matrix_stack.app),
                                 base_url="http://testserver") as browser:
        signed_in = await browser.post("/ui/login", data={"token": matrix_stack.tokens["dora"]})
        assert signed_in.status_code == 303, signed_in.text
        for template in ("/ui/incidents/{i}", "/ui/fragments/incidents/{i}",
                         "/ui/incidents/{i}/report", "/ui/tasks/{t}", "/ui/fragments/tasks/{t}"):
            answers = [await browser.get(template.format(i=i, t=t)) for i, t in (
                (incident["id"], hidden_task), (UNKNOWN_INCIDENT, unknown_task))]
            ids = (hidden_task, unknown_task) if "{t}" in template else (
                incident["id"], UNKNOWN_INCIDENT)
            same(f"GET {template}", answers[0], answers[1], ids)
    assert not differences, "\n".join(differences)

    # and someone who may see it still does: its holder, and a deputy acting for her
    assert (await matrix_stack.call("GET", f"/incidents/{incident['id']}", "abby")
            ).status_code == 200
    mine = await matrix_stack.call("GET", f"/tasks/{hidden_task}", "alex")
    assert (mine.status_code, mine.json()["error"]) == (403, "NotYourTask")  # alex sees it


async def test_the_api_signs_each_command_with_actor_and_roles_and_history_holds_no_key(
        matrix_stack: ApiStack) -> None:
    incident = await matrix_stack.matrix_incident()
    decided = await matrix_stack.call("POST", f"/tasks/{incident['tasks']['alex']}/decision",
                                      "alex", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    history = await matrix_stack.env.client.get_workflow_handle(incident["id"]).fetch_history()
    claims = [json.loads(event.workflow_execution_update_accepted_event_attributes
                         .accepted_request.input.header.fields["crisis-actor"].data)
              for event in history.events
              if event.HasField("workflow_execution_update_accepted_event_attributes")]
    # the opening report (cora, through update-with-start), then alex's decision
    assert [(c["actor"], c["roles"]) for c in claims] == [
        ("cora", ["communicator", "reporter"]), ("alex", ["approver", "reporter"])]
    key = actor_keyring(matrix_stack.settings).keys["local"]
    assert key not in history.to_json().encode()
