"""The leadership review over HTTP: `/incidents/{id}/metrics` and `/incidents/{id}/report`.

Runs on the matrix stack: each of six people holds one task in the `matrix` approval
(quorum "all"), so one approval leaves the node pending and five approvers unanswered.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.api_fixtures import ApiStack

# registered once as a plugin, so each stack is shared by every module of the session
pytest_plugins = ["tests.api_fixtures"]

UNKNOWN = "inc-00000000000000000000-9"


async def decided_incident(stack: ApiStack) -> tuple[str, dict[str, Any]]:
    """A matrix incident in which alex approved; returns its id and the approved task."""
    incident = await stack.matrix_incident()
    decided = await stack.call("POST", f"/tasks/{incident['tasks']['alex']}/decision", "alex",
                               json={"decision": "approve", "comment": "fine"})
    assert decided.status_code == 200, decided.text
    task: dict[str, Any] = decided.json()["task"]
    return incident["id"], task


async def metrics_after_decision(stack: ApiStack, incident_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await stack.call("GET", f"/incidents/{incident_id}/metrics", "liam")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["decisions"] else None
    return await stack.eventually(probe, what="the decision in the metrics")


def seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


async def test_metrics_after_one_decision(matrix_stack: ApiStack) -> None:
    incident_id, task = await decided_incident(matrix_stack)
    metrics = await metrics_after_decision(matrix_stack, incident_id)
    view = await matrix_stack.view(incident_id, "liam")

    [decision] = metrics["decisions"]
    assert (decision["person"], decision["task_id"], decision["decision"]) == (
        "alex", task["id"], "approve")
    assert decision["latency"] == seconds(task["decided_at"], task["created_at"])
    opened_at = view["incident"]["opened_at"]
    assert metrics["time_to_first_ack"] == seconds(task["decided_at"], opened_at)
    assert metrics["time_to_resolution"] is None

    [node] = metrics["nodes"]
    assert (node["node"], node["outcome"], node["time_to_outcome"]) == ("sign-off", "pending",
                                                                        None)
    # five approvers never answered: the slowest is one of them, not alex
    slowest = metrics["slowest_person"]
    assert slowest["pending"] is True and slowest["name"] != "alex"
    assert slowest["seconds"] == seconds(metrics["as_of"], view["tasks"][0]["created_at"])
    assert metrics["counts"]["tasks_by_state"]["open"] == 5
    assert metrics["counts"]["tasks_by_state"]["approved"] == 1
    assert metrics["counts"]["reports"] == 1


async def test_report_is_markdown_with_the_timeline(matrix_stack: ApiStack) -> None:
    incident_id, task = await decided_incident(matrix_stack)
    await metrics_after_decision(matrix_stack, incident_id)
    response = await matrix_stack.call("GET", f"/incidents/{incident_id}/report", "cora")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/markdown")
    report = response.text
    assert report.startswith("# Post-incident report: Test incident\n")
    assert "**Severity:** high" in report
    assert "`matrix` version 1 (sha256 `" in report
    assert "| Sign off (`sign-off`) |" in report
    assert f"| decision | alex | task_id={task['id']};" in report
    assert "| 1 | " in report and "| opened | cora |" in report


async def test_reporter_only_user_is_refused_and_unknown_incident_is_404(
        matrix_stack: ApiStack) -> None:
    incident = await matrix_stack.matrix_incident()  # rita holds a task, yet only reports
    for suffix in ("metrics", "report"):
        refused = await matrix_stack.call("GET", f"/incidents/{incident['id']}/{suffix}", "rita")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "Forbidden"
        missing = await matrix_stack.call("GET", f"/incidents/{UNKNOWN}/{suffix}", "liam")
        assert missing.status_code == 404, missing.text
        anonymous = await matrix_stack.call("GET", f"/incidents/{incident['id']}/{suffix}")
        assert anonymous.status_code == 401
