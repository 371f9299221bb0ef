"""Drafts over HTTP on the real stack: draft -> veto with a reason -> redraft -> approve the
exact version -> two-person publish -> exactly that text published once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.factories import sha

if TYPE_CHECKING:
    from tests.api_fixtures import ApiStack

pytest_plugins = ["tests.api_fixtures"]

V1 = "We are looking into it."
V2 = "We are sorry. We are contacting the customer\nand will update by 20:00."


async def open_tasks(stack: ApiStack, incident_id: str, version: int) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        view = await stack.view(incident_id, "adam")
        tasks = {t["assignee"]: t for t in view["open_tasks"] if t["draft_version"] == version}
        return tasks if len(tasks) == 2 else None
    return await stack.eventually(found, what=f"the round for v{version}")


async def test_draft_veto_redraft_approve_and_two_person_publish(matrix_stack: ApiStack) -> None:
    stack = matrix_stack
    incident = await stack.open_incident("cora", "matrix-drafts")
    incident_id = incident["id"]

    async def draft(text: str, as_: str = "cora") -> Any:
        return await stack.call("POST", f"/incidents/{incident_id}/drafts", as_,
                                json={"node": "statement", "text": text})

    refused = await draft(V1, as_="alex")  # an approver may not write the statement
    assert refused.status_code == 403, refused.text
    assert (await draft("")).status_code == 422
    first = await draft(V1)
    assert first.status_code == 201, first.text
    assert (first.json()["draft"]["version"], first.json()["draft"]["sha256"]) == (1, sha(V1))
    round1 = await open_tasks(stack, incident_id, 1)
    assert round1["alex"]["content"] == V1 and round1["alex"]["draft_sha256"] == sha(V1)

    no_reason = await stack.call("POST", f"/tasks/{round1['alex']['id']}/decision", "alex",
                                 json={"decision": "reject"})
    assert no_reason.status_code == 422 and no_reason.json()["error"] == "ReasonRequired"
    veto = await stack.call("POST", f"/tasks/{round1['alex']['id']}/decision", "alex",
                            json={"decision": "reject", "comment": "Admits liability",
                                  "draft_sha256": sha(V1)})
    assert veto.status_code == 200, veto.text
    assert veto.json()["node"]["awaiting_draft"] and veto.json()["node"]["outcome"] == "pending"

    second = await draft(V2)
    assert second.status_code == 201, second.text
    assert second.json()["node"]["round"] == 2
    round2 = await open_tasks(stack, incident_id, 2)
    stale = await stack.call("POST", f"/tasks/{round2['alex']['id']}/decision", "alex",
                             json={"decision": "approve", "draft_sha256": sha(V1)})
    assert stale.status_code == 409 and stale.json()["error"] == "DraftChanged"

    listed = await stack.call("GET", f"/incidents/{incident_id}/drafts", "alex")
    assert listed.status_code == 200, listed.text
    versions = listed.json()["nodes"]["statement"]
    assert [(v["version"], v["sha256"], v["author"]) for v in versions] == [
        (1, sha(V1), "cora"), (2, sha(V2), "cora")]
    assert versions[0]["diff"] == "" and "-We are looking into it." in versions[1]["diff"]
    assert "+and will update by 20:00." in versions[1]["diff"]
    assert (await stack.call("GET", f"/incidents/{incident_id}/drafts", "rita")).status_code == 403

    for who in ("alex", "abby"):
        ok = await stack.call("POST", f"/tasks/{round2[who]['id']}/decision", who,
                              json={"decision": "approve", "draft_sha256": sha(V2)})
        assert ok.status_code == 200, ok.text
    assert ok.json()["node"]["outcome"] == "approved"
    assert ok.json()["node"]["approved_sha256"] == sha(V2)

    async def waiting() -> bool:
        entries = (await stack.call("GET", f"/incidents/{incident_id}/timeline", "adam")).json()
        return any(e["kind"] == "awaiting_publish_confirmation" for e in entries["entries"])
    await stack.eventually(waiting, what="the publish to wait for a second person")

    async def published() -> list[dict[str, Any]]:
        sink = await stack.call("GET", "/demo/sink/publish")
        return [i for i in sink.json()["items"] if i["body"].get("incident") == incident_id]
    assert await published() == []
    by_author = await stack.call("POST", f"/incidents/{incident_id}/publish-confirmations",
                                 "cora", json={"step": "publish"})
    assert by_author.status_code == 403, by_author.text
    confirmed = await stack.call("POST", f"/incidents/{incident_id}/publish-confirmations",
                                 "adam", json={"step": "publish"})
    assert confirmed.status_code == 201, confirmed.text
    sent = await stack.eventually(published, what="the publish")
    assert [s["body"]["text"] for s in sent] == [V2]
    again = await stack.call("POST", f"/incidents/{incident_id}/publish-confirmations",
                             "adam", json={"step": "publish"})
    assert again.status_code == 409, again.text
