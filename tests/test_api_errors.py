"""Errors in one tree, mapped to HTTP in one place, documented per endpoint; and bounded
parsing: JSON or YAML nested absurdly deep is a 422, never a 500."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from api.errors import status_for, status_for_code
from domain import errors

if TYPE_CHECKING:
    from tests.api_fixtures import ApiStack

pytest_plugins = ["tests.api_fixtures"]

DEEP = 10_000


# ---- the tree -------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "family", "status"), [
    (errors.TASK_NOT_FOUND, errors.NotFoundError, 404),
    (errors.NOT_YOUR_TASK, errors.PermissionDenied, 403),
    (errors.FORBIDDEN, errors.PermissionDenied, 403),
    (errors.TASK_CLOSED, errors.ConflictError, 409),
    (errors.INCIDENT_CLOSED, errors.ConflictError, 409),
    (errors.INVALID_DELEGATE, errors.InvalidCommand, 422),
    (errors.REQUEST_CONFLICT, errors.InvalidCommand, 422),
    (errors.UNKNOWN_PLAYBOOK, errors.InvalidCommand, 422),
    (errors.SEVERITY_NOT_SUPPORTED, errors.InvalidCommand, 422),
    (errors.NO_ROUTE, errors.InvalidCommand, 422),
])
def test_each_code_has_one_class_family_and_status(
        code: str, family: type[errors.LedgerError], status: int) -> None:
    # the aggregate's `LedgerError(code, message)` builds the leaf class of the code
    error = errors.LedgerError(code, "why")
    assert type(error).__name__ == code and isinstance(error, family)
    assert isinstance(error, errors.CrisisError)
    assert (error.code, error.message, str(error)) == (code, "why", "why")
    assert errors.error_for(code, "why").code == code
    assert status_for(error) == status_for_code(code) == status
    leaf = type(error)("raised directly")
    assert leaf.code == code  # a leaf knows its code


def test_an_unknown_code_keeps_its_code() -> None:
    error = errors.LedgerError("SomethingNew", "from a newer worker")
    assert type(error) is errors.LedgerError and error.code == "SomethingNew"
    assert status_for(error) == 422


# ---- the OpenAPI ----------------------------------------------------------------------

async def test_every_operation_has_a_short_camel_case_id(matrix_stack: ApiStack) -> None:
    spec = (await matrix_stack.http.get("/openapi.json")).json()
    ids = [op["operationId"] for path, item in spec["paths"].items() for op in item.values()
           if not path.startswith("/playbooks")]  # named by the playbooks change
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", i) and len(i) <= 20 for i in ids), ids
    assert {"openIncident", "decideTask", "delegateTask", "listTasks", "postReport",
            "getIncident", "resolveIncident", "postStatusUpdate"} <= set(ids)


async def test_each_endpoint_lists_the_business_codes_it_can_answer(
        matrix_stack: ApiStack) -> None:
    spec = (await matrix_stack.http.get("/openapi.json")).json()

    def codes(path: str, method: str, status: str) -> set[str]:
        response = spec["paths"][path][method]["responses"][status]
        assert response["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
        return set(response["content"]["application/json"]["examples"])

    decide = "/tasks/{task_id}/decision"
    assert codes(decide, "post", "404") == {"NotFound", "TaskNotFound"}
    assert {"NotYourTask", "Forbidden"} <= codes(decide, "post", "403")
    assert {"TaskClosed", "IncidentClosed", "RequestInFlight"} <= codes(decide, "post", "409")
    assert {"RequestConflict", "IdempotencyKeyReused"} <= codes(decide, "post", "422")
    assert "InvalidDelegate" in codes("/tasks/{task_id}/delegate", "post", "422")
    assert {"UnknownPlaybook", "SeverityNotSupported"} <= codes("/incidents", "post", "422")
    assert "NoRoute" in codes("/reports", "post", "422")
    assert "IncidentClosed" in codes("/incidents/{incident_id}/status-updates", "post", "409")
    described = spec["paths"][decide]["post"]["responses"]["409"]["description"]
    assert "`TaskClosed`" in described and "`IncidentClosed`" in described
    unavailable = spec["paths"][decide]["post"]["responses"]["503"]
    assert "Retry-After" in unavailable["headers"]


async def test_a_405_allows_every_method_of_the_path(matrix_stack: ApiStack) -> None:
    response = await matrix_stack.call("DELETE", "/incidents", "cora")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["error"] == "MethodNotAllowed"
    task = await matrix_stack.call("PUT", "/tasks/inc-0000-0.sign-off.1/decision", "cora")
    assert task.status_code == 405 and task.headers["allow"] == "POST"
    # `/playbooks/{playbook_id}` also matches this path, but the path has only POST
    validate = await matrix_stack.call("OPTIONS", "/playbooks/validate", "adam")
    assert validate.status_code == 405 and validate.headers["allow"] == "POST"


# ---- bounded parsing ------------------------------------------------------------------

def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(("path", "key"), [
    ("/incidents", None), ("/incidents", "deep-1"), ("/reports", "deep-2"),
    ("/demo/sink/deep", None), ("/playbooks/validate", None)])
async def test_json_nested_10000_deep_is_a_422(matrix_stack: ApiStack, path: str,
                                               key: str | None) -> None:
    headers = {"Content-Type": "application/json",
               **({"Idempotency-Key": f"{key}-{uuid.uuid4().hex}"} if key else {})}
    response = await matrix_stack.call("POST", path, "adam", content=deep_json(DEEP),
                                       headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "BodyTooDeep"
    assert "64 levels" in response.json()["detail"]


PATH_VALUES = {"incident_id": "inc-00000000000000000000-0",
               "task_id": "inc-00000000000000000000-0.sign-off.1", "playbook_id": "matrix",
               "number": "1", "name": "deep", "step_id": "publish"}
WEB_POSTS = ["/ui/login", "/ui/logout", "/ui/report", "/ui/incidents",
             "/ui/incidents/inc-00000000000000000000-0/status",
             "/ui/incidents/inc-00000000000000000000-0/resolve",
             "/ui/tasks/inc-00000000000000000000-0.sign-off.1/decide",
             "/ui/tasks/inc-00000000000000000000-0.sign-off.1/delegate", "/ui/act/some-token"]


async def test_json_nested_10000_deep_is_a_422_on_every_post_route(
        matrix_stack: ApiStack) -> None:
    """Every POST the API documents, and every form the web app posts, with and without an
    Idempotency-Key: the body scan refuses the nesting before anything parses it."""
    paths = [re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
             for path, ops in matrix_stack.app.openapi()["paths"].items() if "post" in ops]
    assert len(paths) >= 20, paths
    wrong = []
    for path in [*paths, *WEB_POSTS]:
        for key in (None, f"deep-{uuid.uuid4().hex}"):
            response = await matrix_stack.call(
                "POST", path, "adam", content=deep_json(DEEP),
                headers={"Content-Type": "application/json",
                         **({"Idempotency-Key": key} if key else {})})
            if response.status_code != 422 or response.json().get("error") != "BodyTooDeep":
                wrong.append(f"{path} (key: {bool(key)}): {response.status_code} "
                             f"{response.text[:120]}")
    assert not wrong, "\n".join(wrong)


async def test_deep_json_is_refused_whatever_its_declared_type(matrix_stack: ApiStack) -> None:
    for path, key in (("/demo/sink/deep", None), ("/incidents", f"deep-{uuid.uuid4().hex}")):
        response = await matrix_stack.call(
            "POST", path, "cora", content=deep_json(DEEP),
            headers={"Content-Type": "text/plain", **({"Idempotency-Key": key} if key else {})})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "BodyTooDeep"


async def test_yaml_nested_10000_deep_is_refused_with_its_reason(
        matrix_stack: ApiStack) -> None:
    flow = "steps: " + "[" * DEEP + "]" * DEEP + "\n"
    block = "steps:\n" + "".join("  " * i + "-\n" for i in range(1, 200))  # no brackets
    as_yaml = await matrix_stack.call("POST", "/playbooks/validate", "adam", content=flow,
                                      headers={"Content-Type": "application/yaml"})
    assert as_yaml.status_code == 422 and as_yaml.json()["error"] == "BodyTooDeep"
    for text in (flow, block):
        # inside JSON the YAML is one string: the YAML reader's own limit answers
        response = await matrix_stack.call("POST", "/playbooks/validate", "adam",
                                           json={"yaml": text})
        assert response.status_code in (200, 422), response.text
        body: dict[str, Any] = response.json()
        assert body.get("valid") is False or body.get("error") == "ValidationError"
        assert "nested deeper than 64 levels" in response.text


async def test_block_yaml_nested_deep_is_a_422_on_every_yaml_route(
        matrix_stack: ApiStack) -> None:
    """Block-style YAML has no brackets for the body scan: the YAML reader's limit answers
    wherever YAML is posted: a 422 for a proposed playbook or directory, an invalid report
    from validate, never a 500."""
    block = "steps:\n" + "".join("  " * i + "-\n" for i in range(1, 300))
    mapping = "".join("  " * i + f"k{i}:\n" for i in range(300))
    for path in ("/playbooks/validate", "/playbooks", "/directory/versions"):
        for text in (block, mapping):
            response = await matrix_stack.call("POST", path, "adam", content=text,
                                               headers={"Content-Type": "application/yaml"})
            if path == "/playbooks/validate":  # its answer to any bad playbook: a report
                assert response.status_code == 200 and response.json()["valid"] is False
            else:
                assert response.status_code == 422, f"{path}: {response.text[:300]}"
            assert "nested deeper than 64 levels" in response.text, response.text[:300]


async def test_reasonable_nesting_and_strings_full_of_brackets_pass(
        matrix_stack: ApiStack) -> None:
    name = f"sink-{uuid.uuid4().hex[:8]}"
    nested: Any = "leaf"
    for _ in range(30):
        nested = {"n": nested}
    brackets = {"text": "[" * 5000 + "{" * 5000}  # inside a string: no nesting at all
    for body in (nested, brackets):
        response = await matrix_stack.call("POST", f"/demo/sink/{name}", json=body)
        assert response.status_code == 200, response.text
    listed = await matrix_stack.call("GET", f"/demo/sink/{name}")
    assert [i["body"] for i in listed.json()["items"]] == [nested, brackets]


async def test_a_body_that_is_not_text_is_a_validation_error(matrix_stack: ApiStack) -> None:
    response = await matrix_stack.call("POST", "/incidents", "cora", content=b"\xff\xfe\x00",
                                       headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"
