"""The web app's server side on a real uvicorn: sessions and CSRF, live events (SSE with
Last-Event-ID resume and per-subscriber authorization), signed action links, /reports/summary.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from core.action_links import ActionLinks, content_sha256
from core.secrets import signing_keys
from tests.web_stack import WebStack, web_stack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack(dev_env: WorkflowEnvironment, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    target = dev_env.client.service_client.config.target_host
    with web_stack(target, redis_url.rsplit("/", 1)[0] + "/5",
                   tmp_path_factory.mktemp("web-live")) as running:
        yield running


class SseReader:
    """Reads an SSE stream in a thread; events land in a queue."""

    def __init__(self, stack: WebStack, path: str, as_: str,
                 last_event_id: str | None = None) -> None:
        self.events: queue.Queue[dict[str, str]] = queue.Queue()
        self.status: int | None = None
        self._ready = threading.Event()
        headers = stack.auth(as_)
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self._stop = False

        def run() -> None:
            try:
                read()
            except httpx.HTTPError:
                if not self._stop:  # the server went away while the test still listened
                    raise

        def read() -> None:
            with httpx.Client(base_url=stack.base_url, timeout=None) as http, \
                    http.stream("GET", path, headers=headers) as response:
                self.status = response.status_code
                self._ready.set()
                if response.status_code != 200:
                    return
                event: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if not line:
                        if event:
                            self.events.put(event)
                        event = {}
                        continue
                    key, _, value = line.partition(":")
                    event[key] = value.strip()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def next(self, kind: str = "change", within: float = 10.0,
             where: Any = None) -> dict[str, str]:
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} event within {within}s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event.get("event") == kind and (where is None or where(event)):
                return event

    def close(self) -> None:
        self._stop = True


def data(event: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(event["data"])
    return parsed


def login(stack: WebStack, person: str) -> tuple[httpx.Client, str]:
    """A browser-like client signed in through the login form; returns it and its CSRF token."""
    http = stack.client()
    response = http.post("/ui/login", data={"token": stack.tokens[person]})
    assert response.status_code == 303, response.text
    assert "ce_session" in http.cookies
    page = http.get(response.headers["location"])
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    return http, csrf.group(1)


def test_login_sets_an_httponly_samesite_cookie_and_forms_need_csrf(stack: WebStack) -> None:
    with stack.client() as http:
        response = http.post("/ui/login", data={"token": stack.tokens["cora"]})
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert stack.tokens["cora"] not in cookie
        assert response.headers["location"] == "/ui/board"
        incident_id = stack.open_incident()
        # cookie alone, no CSRF token: refused, and nothing was posted
        refused = http.post(f"/incidents/{incident_id}/status-updates",
                            json={"message": "forged"})
        assert refused.status_code == 403 and refused.json()["error"] == "CsrfFailed"
        page = http.get("/ui/board")
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert csrf
        posted = http.post(f"/incidents/{incident_id}/status-updates",
                           json={"message": "real"}, headers={"X-CSRF-Token": csrf.group(1)})
        assert posted.status_code == 201, posted.text
        timeline = stack.api("GET", f"/incidents/{incident_id}/timeline", "cora").json()
        messages = [e["details"].get("message") for e in timeline["entries"]]
        assert "real" in messages and "forged" not in messages


def test_bad_token_and_logout(stack: WebStack) -> None:
    with stack.client() as http:
        foreign = http.post("/ui/login", data={"token": stack.tokens["cora"]},
                            headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "ce_session" not in http.cookies
        bad = http.post("/ui/login", data={"token": "nope"})
        assert bad.status_code == 401 and "unknown or revoked" in bad.text
        assert http.get("/ui/board").status_code == 303  # to the login page
    http, csrf = login(stack, "cora")
    with contextlib.closing(http):
        assert http.post("/ui/logout", data={"csrf_token": csrf}).status_code == 303
        assert http.get("/ui/board").headers["location"].startswith("/ui/login")


def test_reporter_lands_on_report_page_and_sees_nothing_else(stack: WebStack) -> None:
    http, _ = login(stack, "rita")
    with contextlib.closing(http):
        assert http.get("/ui").headers["location"] == "/ui/report"
        assert http.get("/ui/board").status_code == 403
        assert http.get("/ui/inbox").status_code == 403
    assert stack.api("GET", "/events", "rita").status_code == 403


def test_incident_events_resume_with_last_event_id(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    stack.wait_tasks(incident_id, 2)
    reader = SseReader(stack, f"/incidents/{incident_id}/events", "cora")
    assert reader.status == 200
    ready = reader.next("ready")
    stack.api("POST", f"/incidents/{incident_id}/status-updates", "cora",
              json={"message": "one"})
    first = reader.next(where=lambda e: "status_update" in data(e)["kinds"])
    reader.close()
    stack.api("POST", f"/incidents/{incident_id}/status-updates", "cora",
              json={"message": "two"})
    time.sleep(0.3)
    resumed = SseReader(stack, f"/incidents/{incident_id}/events", "cora",
                        last_event_id=first["id"])
    missed = resumed.next(where=lambda e: "status_update" in data(e)["kinds"])
    assert missed["id"] > first["id"] > ready["id"]
    assert data(missed)["incident_id"] == incident_id
    resumed.close()
    bad = stack.api("GET", f"/incidents/{incident_id}/events", "cora",
                    headers={"Last-Event-ID": "garbage"})
    assert bad.status_code == 422


def test_events_are_authorized_per_subscriber(stack: WebStack) -> None:
    theirs = SseReader(stack, "/events", "dora")  # approver with no task anywhere yet
    mine = SseReader(stack, "/events", "alex")
    for reader in (theirs, mine):
        reader.next("ready")
    incident_id = stack.open_incident()
    tasks = stack.wait_tasks(incident_id, 2)
    mine.next(where=lambda e: data(e)["incident_id"] == incident_id)
    stack.api("POST", f"/tasks/{tasks['abby']['id']}/decision", "abby",
              json={"decision": "approve"})
    decided = mine.next(where=lambda e: "decision" in data(e)["kinds"])
    # what changed, never which command asked for it (the API's own read-your-writes signal)
    assert set(data(decided)) == {"id", "incident_id", "rev", "kinds", "assignees", "tasks"}
    with pytest.raises(AssertionError):
        theirs.next(where=lambda e: data(e)["incident_id"] == incident_id, within=1.0)
    # as for an unknown incident (no existence oracle)
    assert stack.api("GET", f"/incidents/{incident_id}/events", "dora").status_code == 404
    theirs.close()
    mine.close()


# ---- signed action links ---------------------------------------------------------------


def links_of(stack: WebStack) -> ActionLinks:
    return ActionLinks(signing_keys(stack.settings))


def link_for(stack: WebStack, task: dict[str, Any], action: str = "approve",
             expires: datetime | None = None, assignee: str | None = None,
             content: str | None = None) -> str:
    return links_of(stack).issue_link(
        task["id"], assignee or task["assignee"], content_sha256(content or task["content"]),
        action, expires or datetime.now(UTC) + timedelta(hours=1))  # type: ignore[arg-type]


def confirm_value(page: str) -> str:
    found = re.search(r'name="confirm" value="([^"]+)"', page)
    assert found, page[:800]
    return found.group(1)


def task_state(stack: WebStack, task_id: str) -> str:
    return str(stack.api("GET", f"/tasks/{task_id}", "cora").json()["task"]["state"])


def decisions(stack: WebStack, incident_id: str) -> int:
    entries = stack.api("GET", f"/incidents/{incident_id}/timeline", "cora").json()["entries"]
    return sum(1 for e in entries if e["kind"] == "decision")


def test_a_link_approval_counts_once_and_get_changes_nothing(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    task = stack.wait_tasks(incident_id, 2)["abby"]
    path = link_for(stack, task)
    assert path.startswith("/ui/act/")
    with stack.client() as http:
        for _ in range(3):  # a mail scanner following the link
            page = http.get(path)
            assert page.status_code == 200 and task["content"] in page.text
        assert task_state(stack, task["id"]) == "open"
        done = http.post(path, data={"confirm": confirm_value(page.text)})
        assert done.status_code == 200 and "Approved" in done.text, done.text
        again = http.post(path, data={"confirm": confirm_value(page.text)})
        assert again.status_code == 409 and "already used" in again.text
        assert "already used" in http.get(path).text
    assert task_state(stack, task["id"]) == "approved"
    assert decisions(stack, incident_id) == 1


def test_expired_tampered_foreign_and_stale_links_change_nothing(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    tasks = stack.wait_tasks(incident_id, 2)
    task = tasks["abby"]
    expired = link_for(stack, task, expires=datetime.now(UTC) - timedelta(seconds=1))
    good = link_for(stack, task)
    payload, _, mac = good.removeprefix("/ui/act/").partition(".")
    tampered = f"/ui/act/{payload[:-2]}xx.{mac}"
    foreign = link_for(stack, task, assignee="alex")  # signed, but alex doesn't hold it
    other_key = ActionLinks([b"some-other-servers-key-0123456"]).issue_link(
        task["id"], "abby", content_sha256(task["content"]), "approve",
        datetime.now(UTC) + timedelta(hours=1))
    stale = link_for(stack, task, content="an older draft")
    cases = {expired: (410, "expired"), tampered: (400, "not valid"),
             foreign: (403, "not yours"), other_key: (400, "not valid"),
             stale: (409, "text changed")}
    with stack.client() as http:
        for path, (status, text) in cases.items():
            for method in ("GET", "POST"):
                response = http.request(method, path, data={"confirm": "x"})
                assert response.status_code == status, (path, method, response.text[:300])
                assert text in response.text
        # a valid link, but the form's confirm value is missing: nothing happens
        assert http.post(good, data={}).status_code == 403
    assert task_state(stack, task["id"]) == "open"
    assert decisions(stack, incident_id) == 0


def test_link_for_a_delegated_task_says_so(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    task = stack.wait_tasks(incident_id, 2)["alex"]
    path = link_for(stack, task, action="reject")
    moved = stack.api("POST", f"/tasks/{task['id']}/delegate", "alex", json={"to": "dora"})
    assert moved.status_code == 200, moved.text
    with stack.client() as http:
        page = http.get(path)
    assert page.status_code == 409 and "delegated" in page.text


def test_a_reject_link_needs_a_reason_and_a_veto_confirmation(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    task = stack.wait_tasks(incident_id, 2)["alex"]
    path = link_for(stack, task, action="reject")
    with stack.client() as http:
        page = http.get(path)
        assert "veto" in page.text
        confirm = confirm_value(page.text)
        assert http.post(path, data={"confirm": confirm}).status_code == 422
        assert http.post(path, data={"confirm": confirm, "comment": "no"}).status_code == 422
        assert task_state(stack, task["id"]) == "open"
        done = http.post(path, data={"confirm": confirm, "comment": "Not true",
                                     "confirm_veto": "yes"})
        assert done.status_code == 200, done.text
    view = stack.api("GET", f"/incidents/{incident_id}", "cora").json()
    assert view["nodes"][0]["outcome"] == "vetoed"


def test_report_summary_matches_incident_metrics(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    tasks = stack.wait_tasks(incident_id, 2)
    stack.api("POST", f"/tasks/{tasks['abby']['id']}/decision", "abby",
              json={"decision": "approve"})
    stack.api("POST", f"/incidents/{incident_id}/resolve", "cora", json={"summary": "ok"})
    metrics = stack.api("GET", f"/incidents/{incident_id}/metrics", "cora").json()
    opened = datetime.fromisoformat(metrics["opened_at"])
    start = (opened - timedelta(microseconds=1)).isoformat()
    end = (opened + timedelta(microseconds=1)).isoformat()
    summary = stack.api("GET", "/reports/summary", "liam",
                        params={"start": start, "end": end})
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["incidents"] == 1
    assert body["mtta"] == pytest.approx(metrics["time_to_first_ack"])
    assert body["mttr"] == pytest.approx(metrics["time_to_resolution"])
    assert stack.api("GET", "/reports/summary", "abby").status_code == 403
    assert stack.api("GET", "/reports/summary", "liam",
                     params={"start": end, "end": start}).status_code == 422


def test_docs_are_served_from_local_assets(stack: WebStack) -> None:
    with stack.client() as http:
        for path in ("/docs", "/redoc"):
            page = http.get(path).text
            assert "/static/vendor/" in page and "cdn" not in page.lower()
            for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
                assert http.get(asset).status_code == 200, asset




def test_delegation_from_the_page_offers_and_accepts_only_eligible_people(
        stack: WebStack) -> None:
    incident_id = stack.open_incident()
    task = stack.wait_tasks(incident_id, 2)["alex"]
    http, csrf = login(stack, "alex")
    with contextlib.closing(http):
        page = http.get(f"/ui/tasks/{task['id']}").text
        offered = re.findall(r'<option value="([a-z]+)">', page)
        assert offered == ["dora", "olga"]  # legal's other member, the legal on-call roster
        headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
        refused = http.post(f"/ui/tasks/{task['id']}/delegate", data={"to": "abby"},
                            headers=headers)
        assert "choose someone from the list" in refused.text
        assert task_state(stack, task["id"]) == "open"
        moved = http.post(f"/ui/tasks/{task['id']}/delegate", data={"to": "dora"},
                          headers=headers)
        assert "Delegated" in moved.text and "Dora Deputy" in moved.text
    assert task_state(stack, task["id"]) == "delegated"


def test_pages_apply_the_api_rules_to_other_peoples_tasks(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    task = stack.wait_tasks(incident_id, 2)["abby"]
    http, csrf = login(stack, "dora")  # an approver without a task here
    with contextlib.closing(http):
        # the answer an unknown task and incident get (no existence oracle)
        assert http.get(f"/ui/tasks/{task['id']}").status_code == 404
        assert http.get(f"/ui/incidents/{incident_id}").status_code == 404
        http.post(f"/ui/tasks/{task['id']}/decide", data={"decision": "approve"},
                  headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert task_state(stack, task["id"]) == "open"


def test_a_stale_csrf_token_is_refused_with_a_message_on_the_page(stack: WebStack) -> None:
    incident_id = stack.open_incident()
    task = stack.wait_tasks(incident_id, 2)["abby"]
    http, _ = login(stack, "abby")
    with contextlib.closing(http):
        refused = http.post(f"/ui/tasks/{task['id']}/decide", data={"decision": "approve"},
                            headers={"X-CSRF-Token": "stale", "HX-Request": "true"})
        assert refused.headers["HX-Retarget"] == "#feedback"
        assert "CSRF" in refused.text
    assert task_state(stack, task["id"]) == "open"


def test_task_urls_give_the_page_and_both_signed_actions() -> None:
    from core.action_links import task_urls
    links = ActionLinks([b"key-0123456789abcdef-key"])
    deadline = datetime(2026, 3, 6, 21, 40, tzinfo=UTC)
    urls = task_urls(links, "https://crisis.example/", "inc-abcd-0.x.1", "alex", "Text",
                     deadline, now=datetime(2026, 3, 6, 17, 40, tzinfo=UTC))
    assert urls["page"] == "https://crisis.example/ui/tasks/inc-abcd-0.x.1"
    for action in ("approve", "reject"):
        claims = links.verify(urls[action].removeprefix("https://crisis.example/ui/act/"))
        assert (claims.action, claims.assignee, claims.expires_at) == (action, "alex", deadline)
        assert claims.content_sha256 == content_sha256("Text")


def test_keys_rotate_the_first_signs_and_every_one_verifies() -> None:
    old, new = b"old-key-0123456789abcdef", b"new-key-0123456789abcdef"
    path = ActionLinks([old]).issue_link("inc-abcd-0.x.1", "alex", "0" * 64, "approve",
                                         datetime.now(UTC) + timedelta(hours=1))
    token = path.removeprefix("/ui/act/")
    assert ActionLinks([new, old]).verify(token).assignee == "alex"
    from core.action_links import LinkInvalid
    with pytest.raises(LinkInvalid):
        ActionLinks([new]).verify(token)


def open_tasks(stack: WebStack, incident_id: str) -> dict[str, dict[str, Any]]:
    view = stack.api("GET", f"/incidents/{incident_id}", "cora").json()
    return {t["assignee"]: t for t in view["open_tasks"]}


def test_a_veto_then_a_redraft_from_the_page_starts_a_round_on_exactly_that_text(
        stack: WebStack) -> None:
    """Scenario 7 from the incident page: legal vetoes v1, the communicator submits v2 in
    the page's draft form, and the same approvers get tasks on v2's exact text."""
    incident_id = stack.open_incident(playbook="redraft")
    first = stack.wait_tasks(incident_id, 2)
    http, csrf = login(stack, "cora")
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    with contextlib.closing(http):
        page = http.get(f"/ui/incidents/{incident_id}").text
        assert 'data-testid="draft-form"' in page
        assert 'name="node" value="approve-statement"' in page
        assert first["alex"]["content"] in page  # the form starts from the text under approval

        vetoed = stack.api("POST", f"/tasks/{first['alex']['id']}/decision", "alex",
                           json={"decision": "reject", "comment": "Admits fault; rephrase."})
        assert vetoed.status_code == 200, vetoed.text
        page = http.get(f"/ui/incidents/{incident_id}").text
        assert "the approvers wait for a new version" in page

        text = "We're sorry <b>this</b> happened. We'll update by 20:00 & not before."
        sent = http.post(f"/ui/incidents/{incident_id}/drafts", headers=headers,
                         data={"node": "approve-statement", "text": text, "link": ""})
        assert sent.status_code == 200 and sent.headers["HX-Retarget"] == "#feedback"
        assert "Draft v2 of “Approve the statement” submitted" in sent.text
        second = open_tasks(stack, incident_id)
        assert set(second) == {"alex", "abby"}
        assert {t["content"] for t in second.values()} == {text}
        assert {t["draft_version"] for t in second.values()} == {2}
        page = http.get(f"/ui/incidents/{incident_id}").text
        assert "We&#39;re sorry &lt;b&gt;this&lt;/b&gt; happened" in page  # escaped, exact
    drafts = stack.api("GET", f"/incidents/{incident_id}/drafts", "cora").json()
    versions = drafts["nodes"]["approve-statement"]
    assert [(v["version"], v["author"]) for v in versions] == [(1, "playbook"), (2, "cora")]


def test_the_draft_form_shows_errors_in_place_and_changes_nothing(stack: WebStack) -> None:
    incident_id = stack.open_incident(playbook="redraft")
    before = stack.wait_tasks(incident_id, 2)
    http, csrf = login(stack, "cora")
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    with contextlib.closing(http):
        empty = http.post(f"/ui/incidents/{incident_id}/drafts", headers=headers,
                          data={"node": "approve-statement", "text": "", "link": ""})
        assert empty.status_code == 422 and 'data-testid="error-draft-text"' in empty.text
        assert 'data-testid="draft-form"' in empty.text  # the form again, not a feedback
        bad_link = http.post(f"/ui/incidents/{incident_id}/drafts", headers=headers,
                             data={"node": "approve-statement", "text": "Fine words",
                                   "link": "javascript:alert(1)"})
        assert bad_link.status_code == 422 and 'data-testid="error-draft-link"' in bad_link.text
        assert "Fine words" in bad_link.text  # what was typed is kept
        no_drafts = http.post(f"/ui/incidents/{incident_id}/drafts", headers=headers,
                              data={"node": "done", "text": "Words", "link": ""})
        assert no_drafts.headers["HX-Retarget"] == "#feedback" and "bad" in no_drafts.text
    approver, approver_csrf = login(stack, "abby")
    with contextlib.closing(approver):
        refused = approver.post(f"/ui/incidents/{incident_id}/drafts",
                                headers={"X-CSRF-Token": approver_csrf, "HX-Request": "true"},
                                data={"node": "approve-statement", "text": "Mine", "link": ""})
        assert "bad" in refused.text
        assert 'data-testid="draft-form"' not in approver.get(
            f"/ui/incidents/{incident_id}").text  # approvers get no form
    assert open_tasks(stack, incident_id) == before  # nothing moved


def wait_kind(stack: WebStack, incident_id: str, kind: str, within: float = 20.0
              ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        entries = stack.api("GET", f"/incidents/{incident_id}/timeline", "cora").json()[
            "entries"]
        if any(e["kind"] == kind for e in entries):
            return list(entries)
        assert time.monotonic() < deadline, f"no {kind} in {[e['kind'] for e in entries]}"
        time.sleep(0.1)


def test_an_unknown_action_is_answered_from_the_incident_page(stack: WebStack) -> None:
    """The opener is told to check the receiver and answer "on the incident": the page
    asks, and "it was sent" ends the step without calling the receiver again."""
    stack.receiver.answer(500)
    try:
        incident_id = stack.open_incident(playbook="post-once")
        wait_kind(stack, incident_id, "action_outcome_unknown")
    finally:
        stack.receiver.answer(200)
    calls = [r for r in stack.receiver.requests
             if r.headers.get("idempotency-key") == f"{incident_id}:post"]
    assert len(calls) == 1
    http, csrf = login(stack, "cora")
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    with contextlib.closing(http):
        page = http.get(f"/ui/incidents/{incident_id}").text
        assert 'data-testid="unknown-action" data-step="post"' in page and "HTTP 500" in page
        bad = http.post(f"/ui/incidents/{incident_id}/actions/post/resolve-unknown",
                        headers=headers, data={"outcome": "maybe"})
        assert "outcome" in bad.text and "bad" in bad.text  # refused, nothing recorded
        sent = http.post(f"/ui/incidents/{incident_id}/actions/post/resolve-unknown",
                         headers=headers, data={"outcome": "sent", "comment": "It is live"})
        assert "it was sent" in sent.text
        again = http.post(f"/ui/incidents/{incident_id}/actions/post/resolve-unknown",
                          headers=headers, data={"outcome": "sent"})
        assert "bad" in again.text and "not unknown" in again.text
        assert 'data-testid="unknown-action"' not in http.get(
            f"/ui/incidents/{incident_id}").text
    entries = stack.api("GET", f"/incidents/{incident_id}/timeline", "cora").json()["entries"]
    resolved = [e for e in entries if e["kind"] == "action_outcome_resolved"]
    assert [(e["actor"], e["details"]["resolution"], e["details"]["comment"])
            for e in resolved] == [("cora", "sent", "It is live")]
    assert len([r for r in stack.receiver.requests
                if r.headers.get("idempotency-key") == f"{incident_id}:post"]) == 1


def test_paused_posts_are_kept_paused_from_the_incident_page(stack: WebStack) -> None:
    incident_id = stack.open_incident(playbook="pause")
    wait_kind(stack, incident_id, "posts_paused")
    http, csrf = login(stack, "cora")
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    with contextlib.closing(http):
        page = http.get(f"/ui/incidents/{incident_id}").text
        assert "resume when the incident resolves" in page
        no_reason = http.post(f"/ui/incidents/{incident_id}/keep-paused", headers=headers,
                              data={"keep": "true", "reason": ""})
        assert "reason" in no_reason.text and "bad" in no_reason.text
        kept = http.post(f"/ui/incidents/{incident_id}/keep-paused", headers=headers,
                         data={"keep": "true", "reason": "A second wave of posts"})
        assert "stay paused after resolution" in kept.text
        page = http.get(f"/ui/incidents/{incident_id}").text
        assert "stay paused" in page and "A second wave of posts" in page
        assert "Let them resume on resolution" in page
        resolved = http.post(f"/ui/incidents/{incident_id}/resolve", headers=headers,
                             data={"summary": "Handled"})
        assert "resolved" in resolved.text
    entries = wait_kind(stack, incident_id, "posts_resume_skipped")
    assert "posts_resumed" not in [e["kind"] for e in entries]
    scheduler = [r for r in stack.receiver.requests
                 if r.path == "/scheduler" and incident_id in r.headers.get(
                     "idempotency-key", "")]
    assert [r.json()["command"] for r in scheduler] == ["pause"]  # never resumed


def test_an_approver_marks_themselves_away_and_on_call_gets_the_next_task(
        stack: WebStack) -> None:
    """Scenario 4's other half: before boarding, Alex marks a period away on /ui/away; the
    next incident's legal task goes to the legal on-call (Olga). Removing it gives Alex
    tasks again."""
    http, csrf = login(stack, "alex")
    now = datetime.now(UTC)
    local = "%Y-%m-%dT%H:%M"
    with contextlib.closing(http):
        page = http.get("/ui/away").text
        assert 'data-testid="away-none"' in page and ">UTC<" in page
        backwards = http.post("/ui/away", data={
            "csrf_token": csrf, "start": (now + timedelta(hours=2)).strftime(local),
            "end": (now + timedelta(hours=1)).strftime(local), "reason": ""})
        assert backwards.status_code == 422 and "the end must come after the start" in \
            backwards.text
        garbled = http.post("/ui/away", data={"csrf_token": csrf, "start": "soon",
                                              "end": "later"})
        assert garbled.status_code == 422 and 'data-testid="error-away-start"' in garbled.text
        assert 'data-testid="away-none"' in http.get("/ui/away").text  # nothing saved
        added = http.post("/ui/away", data={
            "csrf_token": csrf, "start": (now - timedelta(hours=1)).strftime(local),
            "end": (now + timedelta(days=1)).strftime(local), "reason": "on a flight"})
        assert added.status_code == 303
        page = http.get(added.headers["location"]).text
        assert "your away period applies now" in page and "on a flight" in page
        try:
            incident_id = stack.open_incident(title="While Alex flies")
            tasks = stack.wait_tasks(incident_id, 2)
            assert "alex" not in tasks and tasks["olga"]["replaces"] == "alex"
        finally:
            start = re.search(r'name="start" value="([^"]+)"', page)
            end = re.search(r'name="end" value="([^"]+)"', page)
            assert start and end
            removed = http.post("/ui/away/remove", data={
                "csrf_token": csrf, "start": start.group(1), "end": end.group(1)})
            assert removed.status_code == 303
        assert 'data-testid="away-none"' in http.get("/ui/away").text
    back = stack.wait_tasks(stack.open_incident(title="Alex has landed"), 2)
    assert "alex" in back
    overlay = stack.api("GET", "/directory/time-off", "alex").json()["overlay"]
    assert overlay["away"] == {}
