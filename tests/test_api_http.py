"""HTTP behaviour users notice: auth errors, body limits, unknown fields, idempotency keys,
JSON errors, request logs, health, playbooks, the demo sink, the web UI and the OpenAPI."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import structlog

if TYPE_CHECKING:
    from tests.api_fixtures import ApiStack

# registered once as a plugin, so each stack is shared by every module of the session
pytest_plugins = ["tests.api_fixtures"]

SMALL_PLAYBOOK = """\
id: tiny
name: Tiny
version: 2
steps:
  - id: tell
    notify:
      to: [{person: liam}]
      message: "{{ incident.title }}"
"""


def incident_body(**extra: Any) -> dict[str, Any]:
    return {"title": "Idempotent", "summary": "Same request twice", "severity": "high",
            "playbook": "matrix-quiet", **extra}


# ---- authentication -------------------------------------------------------------------

async def test_missing_malformed_and_unknown_tokens_get_401(matrix_stack: ApiStack) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic YWxhZGRpbjpv"},
                    {"Authorization": "Bearer not-a-token"},
                    {"Authorization": "Bearer " + "x" * 5000}):
        response = await matrix_stack.http.get("/incidents", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "Unauthorized"


async def test_token_of_a_person_removed_from_the_directory_is_refused(
        matrix_stack: ApiStack) -> None:
    from core.tokens import hash_token, read_hashes, write_hashes

    hashes = read_hashes(matrix_stack.settings.tokens_file)
    write_hashes(matrix_stack.settings.tokens_file, {**hashes, hash_token("ghost-token"): "ghost"})
    try:
        response = await matrix_stack.http.get(
            "/tasks", headers={"Authorization": "Bearer ghost-token"})
        assert response.status_code == 401
    finally:
        write_hashes(matrix_stack.settings.tokens_file, hashes)


async def test_tokens_file_holds_only_hashes(matrix_stack: ApiStack) -> None:
    stored = matrix_stack.settings.tokens_file.read_text()
    assert all(token not in stored for token in matrix_stack.tokens.values())
    assert len(json.loads(stored)["tokens"]) == len(matrix_stack.tokens)


# ---- limits and validation ------------------------------------------------------------

async def test_body_over_256_kib_is_413_even_when_chunked(matrix_stack: ApiStack) -> None:
    big = json.dumps(incident_body(summary="x" * (300 * 1024))).encode()
    declared = await matrix_stack.call("POST", "/incidents", "cora", content=big,
                                       headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["error"] == "PayloadTooLarge"

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 16 * 1024):
            yield big[start:start + 16 * 1024]

    chunked = await matrix_stack.call("POST", "/incidents", "cora", content=chunks(),
                                      headers={"Content-Type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413


async def test_unknown_fields_and_overlong_strings_get_422(matrix_stack: ApiStack) -> None:
    unknown = await matrix_stack.call("POST", "/incidents", "cora",
                                      json=incident_body(priority="p1"))
    assert unknown.status_code == 422
    body = unknown.json()
    assert body["error"] == "ValidationError"
    assert {"path": "body.priority", "message": "unknown field"} in body["errors"]

    too_long = await matrix_stack.call("POST", "/incidents", "cora",
                                       json=incident_body(title="t" * 201))
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["path"] == "body.title"

    decision = await matrix_stack.call("POST", "/tasks/inc-abcd-0.x.1/decision", "alex",
                                       json={"decision": "maybe"})
    assert decision.status_code == 422


async def test_unknown_playbook_and_unsupported_severity_get_422(matrix_stack: ApiStack) -> None:
    unknown = await matrix_stack.call("POST", "/incidents", "cora",
                                      json=incident_body(playbook="nope"))
    assert (unknown.status_code, unknown.json()["error"]) == (422, "UnknownPlaybook")


async def test_errors_are_json_for_unknown_routes_and_methods(matrix_stack: ApiStack) -> None:
    missing = await matrix_stack.http.get("/nowhere")
    assert (missing.status_code, missing.json()["error"]) == (404, "NotFound")
    wrong = await matrix_stack.http.delete("/healthz")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "MethodNotAllowed")
    unknown = await matrix_stack.call("GET", "/incidents/inc-0000000000000000000f-0", "cora")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "NotFound")
    task = await matrix_stack.call("GET", "/tasks/inc-0000000000000000000f-0.x.1", "liam")
    assert (task.status_code, task.json()["error"]) == (404, "TaskNotFound")
    bad_cursor = await matrix_stack.call("GET", "/incidents?cursor=%%%", "cora")
    assert bad_cursor.status_code == 422


# ---- idempotency ----------------------------------------------------------------------

async def test_idempotency_key_replays_the_stored_response(matrix_stack: ApiStack) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = incident_body(dedup_key=f"idem-{uuid.uuid4().hex}")
    first = await matrix_stack.call("POST", "/incidents", "cora", json=body, headers=key)
    assert first.status_code == 201, first.text
    # same JSON, different key order and spacing: the same request
    again = await matrix_stack.call(
        "POST", "/incidents", "cora", headers={**key, "Content-Type": "application/json"},
        content=json.dumps(dict(reversed(list(body.items()))), indent=2))
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    view = await matrix_stack.view(first.json()["id"], "cora")
    assert view["incident"]["reports"] == 1  # the replay added no report

    other = await matrix_stack.call("POST", "/incidents", "cora", headers=key,
                                    json={**body, "title": "Another title"})
    assert (other.status_code, other.json()["error"]) == (422, "IdempotencyKeyReused")

    # keys are per caller: another communicator's identical key is a new request
    admin = await matrix_stack.call("POST", "/incidents", "adam", json=body, headers=key)
    assert admin.status_code == 200  # same dedup_key: attached to the open incident
    assert admin.json()["id"] == first.json()["id"]


async def test_concurrent_duplicate_gets_409(matrix_stack: ApiStack) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = incident_body()
    first, second = await asyncio.gather(
        matrix_stack.call("POST", "/incidents", "cora", json=body, headers=key),
        matrix_stack.call("POST", "/incidents", "cora", json=body, headers=key))
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    loser = first if first.status_code == 409 else second
    assert loser.json()["error"] == "RequestInFlight"
    later = await matrix_stack.call("POST", "/incidents", "cora", json=body, headers=key)
    assert later.status_code == 201
    winner = first if first.status_code == 201 else second
    assert later.json()["id"] == winner.json()["id"]


async def test_failed_request_is_not_stored(matrix_stack: ApiStack) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    refused = await matrix_stack.call("POST", "/incidents", "cora", headers=key,
                                      json=incident_body(playbook="nope"))
    assert refused.status_code == 422
    replay = await matrix_stack.call("POST", "/incidents", "cora", headers=key,
                                     json=incident_body(playbook="nope"))
    assert replay.status_code == 422
    assert replay.headers.get("idempotent-replayed") == "true"


# ---- observability --------------------------------------------------------------------

async def test_one_json_log_line_per_request_with_ids(matrix_stack: ApiStack) -> None:
    opened = await matrix_stack.open_incident("cora", "matrix-quiet")
    incident_id = opened["id"]
    stream = io.StringIO()
    previous = structlog.get_config()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False)
    try:
        response = await matrix_stack.call("GET", f"/incidents/{incident_id}", "cora",
                                           headers={"X-Request-ID": "req-test-0001"})
    finally:
        structlog.configure(**previous)
    assert response.headers["x-request-id"] == "req-test-0001"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == 1
    assert requests[0] | {"duration_ms": 0} == {
        "event": "request", "level": "info", "request_id": "req-test-0001",
        "incident_id": incident_id, "method": "GET", "path": f"/incidents/{incident_id}",
        "status": 200, "duration_ms": 0, "user": "cora"}


async def test_health_and_readiness(matrix_stack: ApiStack) -> None:
    assert (await matrix_stack.http.get("/healthz")).json() == {"status": "ok"}
    ready = await matrix_stack.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"temporal": "ok", "redis": "ok"}}


async def test_readiness_names_the_failed_dependency(matrix_stack: ApiStack) -> None:
    from api.main import create_app
    from tests.servers import free_port

    settings = matrix_stack.settings.model_copy(update={
        "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["temporal"] == "ok"
    assert ready.json()["checks"]["redis"].startswith("error")


# ---- playbooks ------------------------------------------------------------------------

async def test_playbook_list_and_validation(matrix_stack: ApiStack) -> None:
    listed = await matrix_stack.call("GET", "/playbooks", "cora")
    assert [p["id"] for p in listed.json()["items"]] == ["matrix", "matrix-drafts", "matrix-quiet"]

    good = await matrix_stack.call("POST", "/playbooks/validate", "adam", content=SMALL_PLAYBOOK,
                                   headers={"Content-Type": "application/yaml"})
    assert good.status_code == 200
    assert good.json()["valid"] is True
    assert good.json()["playbook"]["id"] == "tiny"
    assert good.json()["playbook"]["version"] == 2

    broken = SMALL_PLAYBOOK.replace("person: liam", "person: nobody")
    bad = await matrix_stack.call("POST", "/playbooks/validate", "adam", json={"yaml": broken})
    assert bad.json() == {"valid": False, "playbook": None, "errors": [
        {"path": "steps[0].notify.to[0].person", "message": "unknown person 'nobody'"}]}

    extra = await matrix_stack.call("POST", "/playbooks/validate", "adam",
                                    json={"yaml": broken, "strict": True})
    assert extra.status_code == 422
    wrong_type = await matrix_stack.call("POST", "/playbooks/validate", "adam", content=b"x",
                                         headers={"Content-Type": "image/png"})
    assert wrong_type.status_code == 415


async def test_playbook_edit_applies_to_new_incidents_only(matrix_stack: ApiStack) -> None:
    path = matrix_stack.settings.playbooks_dir / "matrix-quiet.yaml"
    original = path.read_text()
    before = await matrix_stack.open_incident("cora", "matrix-quiet")
    try:
        path.write_text(original.replace("version: 1", "version: 7"))
        after = await matrix_stack.open_incident("cora", "matrix-quiet")
    finally:
        path.write_text(original)
    assert after["playbook"]["version"] == 7
    view = await matrix_stack.view(before["id"], "cora")
    assert view["playbook"]["version"] == 1


# ---- demo sink and UI -----------------------------------------------------------------

async def test_demo_sink_takes_anyone_in_demo_mode(matrix_stack: ApiStack) -> None:
    name = f"sink-{uuid.uuid4().hex[:8]}"
    posted = await matrix_stack.http.post(f"/demo/sink/{name}", json={"text": "hello"})
    assert posted.status_code == 200
    remote = httpx.ASGITransport(app=matrix_stack.app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=remote, base_url="http://t") as outsider:
        assert (await outsider.post(f"/demo/sink/{name}", json=[1])).status_code == 200
        listed = await outsider.get(f"/demo/sink/{name}")
    assert [i["body"] for i in listed.json()["items"]] == [{"text": "hello"}, [1]]


async def test_demo_sink_stores_a_key_once_and_answers_the_first_response(
        matrix_stack: ApiStack) -> None:
    name = f"sink-{uuid.uuid4().hex[:8]}"
    key = {"Idempotency-Key": "inc-1:publish"}
    await matrix_stack.http.post(f"/demo/sink/{name}", json={"n": 0})
    first = await matrix_stack.http.post(f"/demo/sink/{name}", json={"n": 1}, headers=key)
    # a retry (even one whose body changed, e.g. a re-rendered timestamp) stores nothing
    again = await asyncio.gather(*(
        matrix_stack.http.post(f"/demo/sink/{name}", json={"n": 2}, headers=key)
        for _ in range(5)))
    other = await matrix_stack.http.post(f"/demo/sink/{name}", json={"n": 3},
                                         headers={"Idempotency-Key": "inc-1:other"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    assert first.json() == {"name": name, "stored": 2}
    assert all(r.json() == first.json() for r in again)
    assert all(r.headers["idempotent-replayed"] == "true" for r in again)
    assert other.json()["stored"] == 3
    listed = await matrix_stack.http.get(f"/demo/sink/{name}")
    assert [i["body"]["n"] for i in listed.json()["items"]] == [0, 1, 3]


async def test_no_demo_sink_outside_demo_mode() -> None:
    from api.main import create_app
    from core.config import Settings

    app = create_app(Settings())
    assert not [p for p in app.openapi()["paths"] if p.startswith("/demo")]
    # no lifespan: nothing is routed there, so nothing is needed
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1") as client:
        assert (await client.post("/demo/sink/publish", json={"text": "hi"})).status_code == 404
        assert (await client.get("/demo/sink/publish")).status_code == 404


async def test_web_ui_is_served(matrix_stack: ApiStack) -> None:
    root = await matrix_stack.http.get("/")
    assert root.status_code == 303 and root.headers["location"] == "/ui/login"
    page = await matrix_stack.http.get("/ui/login")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'name="token"' in page.text and "localStorage" not in page.text
    # a page behind the login sends the browser there, and back afterwards
    task = await matrix_stack.http.get("/ui/tasks/inc-abcd-0.sign-off.1")
    assert task.status_code == 303
    assert task.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%2Finc-abcd-0.sign-off.1"


# ---- OpenAPI --------------------------------------------------------------------------

async def test_openapi_documents_every_operation(matrix_stack: ApiStack) -> None:
    spec = (await matrix_stack.http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    operations = [(path, method, op) for path, item in spec["paths"].items()
                  for method, op in item.items()]
    assert len(operations) >= 18
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert ok, where
        content = op["responses"][ok[0]].get("content", {})
        assert content, f"{where}: no response body documented"
        media = next(iter(content.values()))
        ref = media.get("schema", {}).get("$ref", "")
        example = media.get("example") or schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples")
        assert example, f"{where}: no response example"
        if method == "post":
            request = op.get("requestBody", {}).get("content", {})
            assert request, f"{where}: no request body"
            media = next(iter(request.values()))
            ref = media.get("schema", {}).get("$ref", "")
            example = media.get("example") or schemas.get(ref.rsplit("/", 1)[-1], {}).get(
                "examples")
            assert example, f"{where}: no request example"
        if path not in ("/healthz", "/readyz", "/"):
            assert {"401", "422"} & set(op["responses"]), f"{where}: errors undocumented"
