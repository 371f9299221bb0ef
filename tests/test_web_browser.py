"""The web app in a real browser: Debian's chromium driven by pytest-playwright (its asyncio
flavour, `pytest-playwright-asyncio`, so it shares the suite's event loop), on the real
stack (uvicorn + worker + Temporal dev server + Redis, `tests.web_stack`).

The browser is never downloaded: it is `/usr/bin/chromium` (or `CRISIS_CHROMIUM`). Without it
the tests skip, except when `CI` is set: then they fail, so CI never passes without them.
Screenshots of every page at 1400 px and 390 px go to `.artifacts/screenshots/`.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, expect
from temporalio.testing import WorkflowEnvironment

from core.action_links import ActionLinks, content_sha256
from core.secrets import signing_keys
from domain.metrics import duration
from tests.web_stack import WebStack, web_stack

pytestmark = pytest.mark.stack

CHROMIUM = os.environ.get("CRISIS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parent.parent / ".artifacts" / "screenshots"
WIDTHS = {"wide": 1400, "narrow": 390}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        message = (f"no chromium at {CHROMIUM}: `apt-get install -y chromium` "
                   "(.ci/run does this as root)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True,
            "args": CHROMIUM_ARGS}


@pytest.fixture(scope="module")
def stack(dev_env: WorkflowEnvironment, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    target = dev_env.client.service_client.config.target_host
    with web_stack(target, redis_url.rsplit("/", 1)[0] + "/6",
                   tmp_path_factory.mktemp("web-browser")) as running:
        yield running


async def signed_in(browser: Browser, stack: WebStack, person: str, next_path: str = "",
              width: int = 1400) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport={"width": width, "height": 900},
                                  base_url=stack.base_url)
    page = await context.new_page()
    await page.goto(next_path or "/ui/login")
    await expect(page.locator("#token")).to_be_visible()
    await page.fill("#token", stack.tokens[person])
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    return context, page


async def live(page: Page) -> None:
    """Wait until the page's EventSource is open, so no change can slip past it."""
    await page.wait_for_function(
        "() => [...document.querySelectorAll('[sse-connect]')].every("
        "el => el['htmx-internal-data'] && el['htmx-internal-data'].sseEventSource && "
        "el['htmx-internal-data'].sseEventSource.readyState === 1)", timeout=5000)


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": 900})
        await page.wait_for_timeout(150)
        await page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
    await page.set_viewport_size({"width": 1400, "height": 900})


async def test_a_new_incident_appears_on_another_board_without_reload(
        browser: Browser, stack: WebStack) -> None:
    watcher_context, watcher = await signed_in(browser, stack, "liam", "/ui/board")
    opener_context, opener = await signed_in(browser, stack, "cora")
    assert urlparse(opener.url).path == "/ui/board"  # a communicator lands on the board
    await live(watcher)
    await expect(opener.get_by_test_id("whoami")).to_contain_text("Cora Communicator")

    # severity choices follow the playbook
    await opener.select_option("#playbook", "heads-up")
    await expect(opener.locator("#severity option")).to_have_text(["low", "critical"])
    await opener.select_option("#playbook", "holding")
    await expect(opener.locator("#severity option")).to_have_text(["medium", "high"])
    # a validation error shows next to its field
    await opener.click("#open-form button[type=submit]")
    await expect(opener.get_by_test_id("error-title")).to_be_visible()

    title = f"Viral post {int(time.time() * 1000) % 100000}"
    await opener.fill("#title", title)
    await opener.fill("#summary", "A parent's post about our ad has 40k shares.")
    await opener.select_option("#severity", "high")
    started = time.monotonic()
    await opener.click("#open-form button[type=submit]")
    await opener.wait_for_url(re.compile(r"/ui/incidents/inc-"))
    row = watcher.get_by_test_id("board-row").filter(has_text=title)
    await expect(row).to_be_visible(timeout=2000)
    assert time.monotonic() - started < 4  # opening + the board update
    await expect(row).to_contain_text("Alex Lawyer")  # who it waits on, by name
    # the timeline reads as sentences with names; the raw entry is one click away
    first = opener.get_by_test_id("timeline").locator("li").first
    await expect(first).to_contain_text(f"Cora Communicator opened the incident “{title}”")
    await first.locator("summary").click()
    await expect(first.locator("pre")).to_contain_text('"kind": "opened"')
    await shot(watcher, "board")
    await shot(opener, "incident")
    await watcher_context.close()
    await opener_context.close()


async def test_an_approver_follows_a_link_approves_and_the_incident_page_updates_live(
        browser: Browser, stack: WebStack) -> None:
    incident_id = stack.open_incident(title="Link journey")
    task = stack.wait_tasks(incident_id, 2)["alex"]
    viewer_context, viewer = await signed_in(browser, stack, "cora",
                                             f"/ui/incidents/{incident_id}")
    await live(viewer)
    row = viewer.get_by_test_id("task-row").filter(has_text="Alex Lawyer")
    await expect(row).to_contain_text("open")

    # the notification's link: not signed in yet, so via the login page, then back
    context, page = await signed_in(browser, stack, "alex", f"/ui/tasks/{task['id']}")
    assert urlparse(page.url).path == f"/ui/tasks/{task['id']}"
    await expect(page.get_by_test_id("exact-text")).to_have_text(task["content"])
    await shot(page, "task")
    await page.get_by_test_id("approve").click()
    await expect(page.get_by_test_id("feedback")).to_contain_text("Approved")
    await expect(row).to_contain_text("approved", timeout=2000)
    await expect(page.get_by_test_id("feedback")).to_be_visible()  # feedback stays
    await page.goto("/ui/inbox")
    await shot(page, "inbox")
    await context.close()
    await viewer_context.close()


async def test_a_legal_reject_asks_for_confirmation_then_shows_vetoed(
        browser: Browser, stack: WebStack) -> None:
    incident_id = stack.open_incident(title="Veto journey")
    stack.wait_tasks(incident_id, 2)
    context, page = await signed_in(browser, stack, "alex")
    assert urlparse(page.url).path == "/ui/inbox"  # an approver lands on the inbox
    card = page.get_by_test_id("task-card").filter(has_text="Veto journey")
    await expect(card).to_contain_text("veto")
    await card.get_by_test_id("reject").click()
    await expect(card.get_by_test_id("error-comment")).to_be_visible()  # a reason is required
    await card.get_by_test_id("reject-reason").fill("The claim in the draft is not accurate.")
    await card.get_by_test_id("reject").click()
    await expect(card.get_by_test_id("veto-confirm")).to_be_visible()
    await shot(page, "inbox-veto-confirm")
    assert stack.api("GET", f"/incidents/{incident_id}", "cora").json()[
        "nodes"][0]["outcome"] == "pending"  # asking changed nothing
    await card.get_by_test_id("confirm-veto").click()
    await expect(page.get_by_test_id("feedback").first).to_contain_text("vetoed")
    await page.goto(f"/ui/incidents/{incident_id}")
    await expect(page.get_by_test_id("node-outcome")).to_have_text("vetoed")
    await context.close()


async def test_a_communicator_redrafts_from_the_incident_page_and_sees_the_new_round(
        browser: Browser, stack: WebStack) -> None:
    incident_id = stack.open_incident(playbook="redraft", title="Redraft journey")
    first = stack.wait_tasks(incident_id, 2)
    context, page = await signed_in(browser, stack, "cora", f"/ui/incidents/{incident_id}")
    await live(page)
    draft = page.locator("details.draft blockquote")
    await expect(draft).to_have_text(first["alex"]["content"])
    form = page.get_by_test_id("draft-form")
    await expect(form.locator("#draft-text")).to_have_value(first["alex"]["content"])
    await form.locator("#draft-text").fill("")
    await form.locator("button[type=submit]").click()
    await expect(page.get_by_test_id("error-draft-text")).to_be_visible()  # nothing sent

    text = "We're sorry. We'll post an update by 20:00."
    await page.get_by_test_id("draft-form").locator("#draft-text").fill(text)
    await page.get_by_test_id("draft-form").locator("button[type=submit]").click()
    await expect(page.get_by_test_id("feedback").first).to_contain_text("Draft v2")
    await expect(draft).to_have_text(text, timeout=3000)  # the live region, no reload
    form = page.get_by_test_id("draft-form")  # drawn afresh: no stale error, the new text
    await expect(form.get_by_test_id("error-draft-text")).to_have_count(0)
    await expect(form.locator("#draft-text")).to_have_value(text)
    rows = page.get_by_test_id("task-row")
    await expect(rows.filter(has_text="cancelled")).to_have_count(2)  # v1's round
    await expect(rows.filter(has_text="open")).to_have_count(2)  # v2's round
    await shot(page, "incident-redraft")
    await context.close()


async def test_an_unknown_action_is_answered_with_one_click_and_leaves_the_page(
        browser: Browser, stack: WebStack) -> None:
    stack.receiver.answer(500)
    try:
        incident_id = stack.open_incident(playbook="post-once", title="Unknown journey")
        context, page = await signed_in(browser, stack, "cora", f"/ui/incidents/{incident_id}")
        await live(page)
        card = page.get_by_test_id("unknown-action")
        await expect(card).to_contain_text("HTTP 500", timeout=10000)  # appears live
    finally:
        stack.receiver.answer(200)
    await shot(page, "incident-unknown-action")
    await card.locator("input[name=comment]").fill("Checked: not on the newsroom page")
    await card.get_by_test_id("unknown-resend").click()  # the clicked button's value counts
    await expect(page.get_by_test_id("feedback").first).to_contain_text("send it again")
    await expect(card).to_have_count(0, timeout=5000)
    timeline = page.get_by_test_id("timeline")
    await expect(timeline.locator("li[data-kind=action_run]")).to_have_count(1, timeout=5000)
    await context.close()


async def test_the_dashboard_matches_the_incident_metrics(browser: Browser,
                                                          stack: WebStack) -> None:
    incident_id = stack.open_incident(title="Metrics journey")
    tasks = stack.wait_tasks(incident_id, 2)
    stack.api("POST", f"/tasks/{tasks['abby']['id']}/decision", "abby",
              json={"decision": "approve"})
    stack.api("POST", f"/incidents/{incident_id}/resolve", "cora", json={"summary": "done"})
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=1), today
    listed = stack.api("GET", "/incidents", "liam", params={
        "opened_after": f"{start.isoformat()}T00:00:00Z", "limit": 200}).json()["items"]
    metrics = [stack.api("GET", f"/incidents/{i['id']}/metrics", "liam").json()
               for i in listed]
    acks = [m["time_to_first_ack"] for m in metrics if m["time_to_first_ack"] is not None]
    fixes = [m["time_to_resolution"] for m in metrics if m["time_to_resolution"] is not None]
    assert acks and fixes
    context, page = await signed_in(browser, stack, "liam")
    assert urlparse(page.url).path == "/ui/dashboard"  # a leader lands on the dashboard
    await page.goto(f"/ui/dashboard?start={start.isoformat()}&end={end.isoformat()}")
    mtta, mttr = page.get_by_test_id("mtta"), page.get_by_test_id("mttr")
    assert float(await mtta.get_attribute("data-seconds") or "nan") == pytest.approx(
        sum(acks) / len(acks))
    assert float(await mttr.get_attribute("data-seconds") or "nan") == pytest.approx(
        sum(fixes) / len(fixes))
    await expect(mtta).to_have_text(duration(sum(acks) / len(acks)))
    await expect(page.locator("#chart canvas")).to_be_visible()
    await shot(page, "dashboard")
    await page.goto(f"/ui/incidents/{incident_id}/report")
    await expect(page.get_by_test_id("report-mtta")).to_have_text(
        duration(next(m for m in metrics if m["incident_id"] == incident_id)[
            "time_to_first_ack"]))
    await shot(page, "post-incident-report")
    await page.goto(f"/ui/incidents/{incident_id}/report?print=true")
    await shot(page, "post-incident-report-print")
    await context.close()


async def test_a_reporter_sees_only_the_report_page(browser: Browser, stack: WebStack) -> None:
    context, page = await signed_in(browser, stack, "rita")
    assert urlparse(page.url).path == "/ui/report"
    await expect(page.locator("header nav a")).to_have_text(["Report a signal"])
    await page.fill("#summary", "Someone filmed a prank in one of our kitchens.")
    await page.click("form[action='/ui/report'] button[type=submit]")
    await expect(page.get_by_test_id("receipt")).to_be_visible()
    await shot(page, "report-a-signal")
    await page.goto("/ui/board")
    await expect(page.locator("h1")).to_have_text("Not for your role")
    await page.goto("/ui/inbox")
    await expect(page.locator("h1")).to_have_text("Not for your role")
    await context.close()


async def test_docs_render_with_the_network_blocked(browser: Browser, stack: WebStack) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 900},
                                  base_url=stack.base_url)
    blocked: list[str] = []

    async def only_loopback(route: Route) -> None:
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_loopback)
    page = await context.new_page()
    await page.goto("/docs")
    # a 1.7 MB bundle on a busy 2-core machine: allow it time to parse
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
        "crisis-engine", timeout=30000)
    await expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=30000)
    await shot(page, "docs")
    await page.goto("/redoc")
    await expect(page.locator("redoc h1, [role=main] h1").first).to_contain_text(
        "crisis-engine", timeout=30000)
    await shot(page, "redoc")
    await context.close()
    assert not [u for u in blocked if "/static/" in u]


async def test_an_approver_marks_a_flight_away_in_the_browser(browser: Browser,
                                                              stack: WebStack) -> None:
    context, page = await signed_in(browser, stack, "dora", "/ui/away")
    await expect(page.get_by_test_id("away-none")).to_be_visible()
    # the form starts at now in the person's zone and runs a day: change only the reason
    await page.fill("#away-reason", "Flight LH 400")
    await page.get_by_test_id("away-form").locator("button[type=submit]").click()
    await expect(page.get_by_test_id("away-saved")).to_contain_text("applies now")
    row = page.get_by_test_id("away-row")
    await expect(row).to_contain_text("Flight LH 400")
    await expect(row).to_contain_text("now")
    await shot(page, "away")
    await row.get_by_test_id("away-remove").click()
    await expect(page.get_by_test_id("away-none")).to_be_visible()
    await context.close()


async def test_an_admin_marks_someone_else_away_in_the_browser(browser: Browser,
                                                              stack: WebStack) -> None:
    context, page = await signed_in(browser, stack, "adam", "/ui/away")
    await page.select_option("#away-whose", "alex")
    await page.get_by_test_id("away-show").click()
    await expect(page.get_by_test_id("away-person")).to_have_text("Alex Lawyer")
    await expect(page.get_by_test_id("away-none")).to_contain_text("Alex Lawyer is not")
    await page.fill("#away-reason", "Parental leave")
    await page.get_by_test_id("away-form").locator("button[type=submit]").click()
    await expect(page.get_by_test_id("away-saved")).to_contain_text("applies now")
    await expect(page.get_by_test_id("away-row")).to_contain_text("Parental leave")
    stored = stack.api("GET", "/directory/time-off", "adam").json()
    assert [p["reason"] for p in stored["overlay"]["away"]["alex"]] == ["Parental leave"]
    assert "adam" not in stored["overlay"]["away"]
    await shot(page, "away-admin")
    await page.get_by_test_id("away-row").get_by_test_id("away-remove").click()
    await expect(page.get_by_test_id("away-saved")).to_contain_text("Alex Lawyer gets")
    await expect(page.get_by_test_id("away-none")).to_be_visible()
    await context.close()
    # anyone else may set only their own
    context, page = await signed_in(browser, stack, "dora", "/ui/away?person=alex")
    await expect(page.locator("main")).to_contain_text("only an admin or alex may set")
    await expect(page.locator("#away-whose")).to_have_count(0)
    await context.close()


async def test_an_admin_hands_on_call_to_a_stand_in_in_the_browser(browser: Browser,
                                                                   stack: WebStack) -> None:
    context, page = await signed_in(browser, stack, "adam", "/ui/rosters")
    roster = page.get_by_test_id("roster-legal-oncall")
    await expect(roster.get_by_test_id("on-call")).to_have_text("Olga On-call")
    await expect(roster.get_by_test_id("no-overrides")).to_be_visible()
    # the form starts at now in the admin's zone and runs a day: choose who, say why
    await page.select_option("#override-member", "dora")
    await page.fill("#override-reason", "Dora covers the weekend")
    await page.get_by_test_id("override-form").locator("button[type=submit]").click()
    await expect(page.get_by_test_id("rosters-saved")).to_contain_text("applies now")
    await expect(roster.get_by_test_id("on-call")).to_have_text("Dora Deputy")
    await expect(roster.get_by_test_id("override-row")).to_contain_text(
        "Dora covers the weekend")
    stored = stack.api("GET", "/directory/time-off", "adam").json()
    assert [o["member"] for o in stored["overlay"]["overrides"]["legal-oncall"]] == ["dora"]
    await shot(page, "rosters")
    # someone who only reports is not offered; forced into the form, the page says why
    assert await page.locator("#override-member option[value=rita]").count() == 0
    await page.evaluate(
        "document.querySelector('#override-member').add(new Option('Rita', 'rita'))")
    await page.select_option("#override-member", "rita")
    await page.get_by_test_id("override-form").locator("button[type=submit]").click()
    await expect(page.get_by_test_id("error-override-member")).to_contain_text(
        "can only report")
    await expect(page.get_by_test_id("override-row")).to_have_count(1)
    await page.get_by_test_id("override-row").get_by_test_id("override-remove").click()
    await expect(page.get_by_test_id("rosters-saved")).to_contain_text("rotation answers")
    await expect(roster.get_by_test_id("on-call")).to_have_text("Olga On-call")
    await context.close()

    # an approver may not: the page says so, and the nav never offered it
    context, page = await signed_in(browser, stack, "alex", "/ui/rosters")
    await expect(page.locator("main")).to_contain_text("needs the admin role")
    await expect(page.locator("nav a[href='/ui/rosters']")).to_have_count(0)
    await context.close()


async def test_screenshots_of_the_remaining_pages(browser: Browser, stack: WebStack) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 900},
                                  base_url=stack.base_url)
    page = await context.new_page()
    await page.goto("/ui/login")
    await shot(page, "login")
    incident_id = stack.open_incident(title="Link page")
    task = stack.wait_tasks(incident_id, 2)["alex"]
    link = ActionLinks(signing_keys(stack.settings)).issue_link(
        task["id"], "alex", content_sha256(task["content"]), "reject",
        datetime.now(UTC) + timedelta(hours=1))
    await page.goto(link)
    await expect(page.get_by_test_id("exact-text")).to_have_text(task["content"])
    await shot(page, "action-link-confirm")
    await context.close()
