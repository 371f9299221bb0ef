"""Playbooks as reviewed policy (issue 12), on the real stack: a Temporal dev server, Redis,
the worker with the catalog and change-approval workflows, and the API.

Each test works on a playbook id of its own, bootstrapped as v1 the way `make run` seeds
the shipped files, so the tests don't depend on each other's order.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from core.policy_store import PolicyStore, catalog_id, seed_shipped_versions
from domain.loader import sha256
from domain.policy_versions import playbook_subject
from tests.api_fixtures import ApiStack, _run_stack, eventually, with_db

pytest_plugins = ["tests.api_fixtures"]

AUTHOR, BEN, CAT, DAN, COMMS = "ada", "ben", "cat", "dan", "cora"

DIRECTORY: dict[str, Any] = {
    "people": [
        {"id": "ada", "name": "Ada Admin", "access": ["admin", "communicator"]},
        {"id": "ben", "name": "Ben Admin", "access": ["admin"]},
        {"id": "cat", "name": "Cat Admin", "access": ["admin"]},
        {"id": "dan", "name": "Dan Admin", "access": ["admin"]},
        {"id": "cora", "name": "Cora Communicator", "access": ["communicator"]},
        {"id": "lee", "name": "Lee Legal", "roles": ["legal"], "access": ["approver"]},
        {"id": "lou", "name": "Lou Legal", "roles": ["legal"], "access": ["approver"]},
    ],
    "roles": [{"id": "legal"}],
}


def playbook_text(playbook_id: str, version: int, *, quorum: str = "quorum: {k: 1}",
                  severities: str = "[high, critical]", tiers: list[str] | None = None) -> str:
    lines = [
        f"id: {playbook_id}",
        f"name: Policy test {playbook_id}",
        f"version: {version}",
        f"severities: {severities}",
        "defaults: {channels: [log], respect_working_hours: false}",
        "steps:",
        "  - id: sign-off",
        "    approval:",
        "      title: Sign off",
        '      content: "Approve {{ incident.title }}"',
        "      approvers: [{role: legal}]",
        f"      {quorum}",
        "      deadline: 4h",
    ]
    if tiers:
        lines += ["      escalation:", *(f"        - {tier}" for tier in tiers)]
    lines += ["  - id: done", "    resolution: {}"]
    return "\n".join(lines) + "\n"


def scenario_text(playbook_id: str) -> str:
    return textwrap.dedent(f"""\
        playbook: ../{playbook_id}.yaml
        incident: {{title: Policy dry run, severity: high}}
        events:
          - at: 5m
            decide: {{role: legal, decision: approve}}
        until: 1h
        """)


@pytest.fixture(scope="session")
async def policy_stack(dev_env: WorkflowEnvironment, redis_url: str,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    workdir = tmp_path_factory.mktemp("policy-stack")
    (workdir / "config").mkdir()
    playbooks = workdir / "playbooks"
    (playbooks / "scenarios").mkdir(parents=True)
    directory_file = workdir / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(DIRECTORY))
    (workdir / "config" / "routing.yaml").write_text(yaml.safe_dump(
        {"routes": {s: {"playbook": "shipped"} for s in ("low", "medium", "high", "critical")}}))
    (playbooks / "shipped.yaml").write_text(playbook_text("shipped", 1))
    async for stack in _run_stack(dev_env, with_db(redis_url, 5), workdir, directory_file,
                                  playbooks):
        # what `make run` does on first start (the worker calls the same function)
        lines = await seed_shipped_versions(dev_env.client, stack.settings)
        assert any("shipped v1 active" in line for line in lines), lines
        await stack.app.state.services.registry.refresh()
        yield stack


def store(stack: ApiStack) -> PolicyStore:
    result: PolicyStore = stack.app.state.services.registry.store
    return result


async def new_playbook(stack: ApiStack, playbook_id: str) -> str:
    """A playbook whose v1 is active (bootstrapped) and which has a dry-run scenario."""
    text = playbook_text(playbook_id, 1)
    playbooks: Path = stack.settings.playbooks_dir
    (playbooks / f"{playbook_id}.yaml").write_text(text)
    (playbooks / "scenarios" / f"{playbook_id}.yaml").write_text(scenario_text(playbook_id))
    await store(stack).bootstrap(playbook_subject(playbook_id), text.encode(), 1)
    await stack.app.state.services.registry.refresh()
    return text


async def propose(stack: ApiStack, text: str, as_: str = AUTHOR, note: str = "") -> Any:
    return await stack.call("POST", "/playbooks", as_, content=text.encode(),
                            params={"note": note} if note else None,
                            headers={"Content-Type": "application/yaml"})


async def reviewed(stack: ApiStack, path: str) -> dict[str, Any]:
    """The version once its dry run has finished (and, if it failed, the review closed)."""
    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = (await stack.call("GET", path, AUTHOR)).json()
        review = body.get("review")
        if review is None or review["dry_run"] is None:
            return None
        if not review["dry_run"]["passed"] and body["status"] == "proposed":
            return None
        return body
    return await eventually(probe, within=90, what=f"the dry run of {path}")


async def decide(stack: ApiStack, path: str, as_: str, verdict: str = "approve",
                 comment: str = "") -> Any:
    return await stack.call("POST", f"{path}/{verdict}", as_, json={"comment": comment})


async def approved(stack: ApiStack, playbook_id: str, text: str, number: int,
                   admins: tuple[str, ...] = (BEN, CAT)) -> dict[str, Any]:
    """Propose `text` as v`number`, wait for its dry run, approve it by `admins`."""
    assert (await propose(stack, text)).status_code == 202
    path = f"/playbooks/{playbook_id}/versions/{number}"
    await reviewed(stack, path)
    for admin in admins:
        response = await decide(stack, path, admin)
        assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def incident_playbook(stack: ApiStack, playbook_id: str) -> tuple[str, dict[str, Any]]:
    opened = await stack.open_incident(COMMS, playbook_id)
    return opened["id"], opened["playbook"]


async def opened_entry(stack: ApiStack, incident_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await stack.call("GET", f"/incidents/{incident_id}/timeline", COMMS)
        if response.status_code != 200:
            return None
        entries = [e for e in response.json()["entries"] if e["kind"] == "opened"]
        return entries[0] if entries else None
    return await eventually(probe, what="the opened entry")


# ---- the version store ---------------------------------------------------------------

async def test_the_same_version_number_with_another_text_is_refused(
        policy_stack: ApiStack) -> None:
    stack = policy_stack
    original = await new_playbook(stack, "pv-number")
    edited = original.replace("deadline: 4h", "deadline: 2h")  # still says version: 1

    response = await propose(stack, edited)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "VersionTaken"
    assert "pv-number v1 already exists" in body["detail"] and "bump `version` to 2" in body[
        "detail"]

    checked = await stack.call("POST", "/playbooks/validate", AUTHOR, json={"yaml": edited})
    assert checked.json()["valid"] is False
    assert checked.json()["errors"] == [{"path": "version", "message": (
        "pv-number v1 already exists (active) with a different text: bump `version` to 2")}]

    same = await propose(stack, original)  # the very same text: the existing version
    assert same.status_code == 200 and same.json()["status"] == "active"
    assert same.json()["sha256"] == sha256(original.encode())

    history = (await stack.call("GET", "/playbooks/pv-number/versions", COMMS)).json()
    assert [(v["number"], v["sha256"]) for v in history["items"]] == [
        (1, sha256(original.encode()))]


async def test_a_proposal_is_reviewed_by_two_other_admins_and_pins_stay_exact(
        policy_stack: ApiStack) -> None:
    stack = policy_stack
    v1 = await new_playbook(stack, "pv-review")
    running_id, running_ref = await incident_playbook(stack, "pv-review")
    assert running_ref["version"] == 1

    v2 = playbook_text("pv-review", 2, quorum="require: [{role: legal, min: 2}]",
                       tiers=["{after: 15m, notify: [{person: dan}]}"])
    proposed = await propose(stack, v2, note="two lawyers must sign")
    assert proposed.status_code == 202, proposed.text
    assert proposed.json()["status"] == "proposed"
    assert proposed.json()["policy"] == "2 of admin, not the author"
    path = "/playbooks/pv-review/versions/2"

    version = await reviewed(stack, path)
    dry_run = version["review"]["dry_run"]
    assert dry_run["passed"] is True
    assert [s["scenario"] for s in dry_run["scenarios"]] == ["pv-review.yaml"]
    assert "DRY RUN of pv-review v2" in dry_run["scenarios"][0]["report"]
    assert version["review"]["eligible"] == ["ben", "cat", "dan"]

    own = await decide(stack, path, AUTHOR)
    assert own.status_code == 403, own.text
    assert own.json()["error"] == "AuthorCannotApprove"
    not_admin = await decide(stack, path, COMMS)
    assert not_admin.status_code == 403

    first = await decide(stack, path, BEN, comment="fine by me")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "proposed"
    twice = await decide(stack, path, BEN, "reject")
    assert twice.status_code == 409 and twice.json()["error"] == "AlreadyDecided"
    _, still_v1 = await incident_playbook(stack, "pv-review")
    assert still_v1["version"] == 1  # one approval is not the quorum

    second = await decide(stack, path, CAT)
    assert second.status_code == 200, second.text
    active = second.json()
    assert active["status"] == "active"
    assert active["review"]["reason"].startswith("approved by ben, cat")

    new_id, new_ref = await incident_playbook(stack, "pv-review")
    assert new_ref == {"id": "pv-review", "version": 2, "sha256": sha256(v2.encode())}
    entry = await opened_entry(stack, new_id)
    assert entry["details"]["playbook_version"] == 2
    assert entry["details"]["playbook_sha256"] == sha256(v2.encode())
    running = await stack.view(running_id, COMMS)
    assert running["playbook"]["version"] == 1  # the running incident keeps its snapshot
    assert running["playbook"]["sha256"] == sha256(v1.encode())

    history = (await stack.call("GET", "/playbooks/pv-review/versions", COMMS)).json()
    assert history["active"] == 2
    assert [(v["number"], v["status"], v["sha256"]) for v in history["items"]] == [
        (2, "active", sha256(v2.encode())), (1, "superseded", sha256(v1.encode()))]
    old = (await stack.call("GET", "/playbooks/pv-review?version=1", COMMS)).json()
    assert old["version"] == 1 and old["sha256"] == sha256(v1.encode())

    diff = (await stack.call("GET", "/playbooks/pv-review/diff", COMMS,
                             params={"from": 1, "to": 2})).json()
    assert diff["quorum_rules"] == [{"step": "sign-off", "before": "1 approvals; deadline 4h",
                                     "after": "2 of legal; deadline 4h"}]
    assert diff["tiers"][0]["after"] == ["after 15m notify person:dan"]
    assert "-      quorum: {k: 1}\n+      require: [{role: legal, min: 2}]\n" in diff["unified"]
    assert "quorum rule of sign-off: 1 approvals; deadline 4h -> 2 of legal; deadline 4h" in \
        diff["summary"]


async def test_a_proposal_whose_dry_run_fails_cannot_be_activated(
        policy_stack: ApiStack) -> None:
    stack = policy_stack
    v1 = await new_playbook(stack, "pv-failing")
    narrowed = playbook_text("pv-failing", 2, severities="[low]")  # the scenario is `high`
    assert (await propose(stack, narrowed)).status_code == 202
    path = "/playbooks/pv-failing/versions/2"

    version = await reviewed(stack, path)
    assert version["status"] == "rejected"
    assert version["review"]["dry_run"]["passed"] is False
    assert "is for low, not high" in version["review"]["dry_run"]["scenarios"][0]["error"]
    assert version["review"]["reason"].startswith("the dry run failed")
    for admin in (BEN, CAT):
        refused = await decide(stack, path, admin)
        assert refused.status_code == 409 and refused.json()["error"] == "ProposalClosed"
    _, ref = await incident_playbook(stack, "pv-failing")
    assert ref["sha256"] == sha256(v1.encode())

    history = (await stack.call("GET", "/playbooks/pv-failing/versions", COMMS)).json()
    assert [(v["number"], v["status"]) for v in history["items"]] == [
        (2, "rejected"), (1, "active")]  # the rejected proposal keeps its history
    again = await propose(stack, playbook_text("pv-failing", 2, severities="[low, high]"))
    assert again.status_code == 409 and again.json()["error"] == "VersionTaken"


async def test_a_rollback_goes_through_the_same_review(policy_stack: ApiStack) -> None:
    stack = policy_stack
    v1 = await new_playbook(stack, "pv-rollback")
    v2 = playbook_text("pv-rollback", 2, quorum="quorum: all")
    assert (await propose(stack, v2)).status_code == 202
    await reviewed(stack, "/playbooks/pv-rollback/versions/2")
    for admin in (BEN, CAT):
        assert (await decide(stack, "/playbooks/pv-rollback/versions/2", admin)).status_code \
            == 200

    back = await stack.call("POST", "/playbooks/pv-rollback/rollback", AUTHOR,
                            json={"to": 1, "note": "quorum: all was too strict"})
    assert back.status_code == 202, back.text
    assert back.json()["number"] == 3 and back.json()["rollback_of"] == 1
    assert back.json()["status"] == "proposed"
    path = "/playbooks/pv-rollback/versions/3"
    version = await reviewed(stack, path)
    assert version["yaml"] == v1.replace("version: 1", "version: 3")
    assert (await decide(stack, path, AUTHOR)).json()["error"] == "AuthorCannotApprove"
    assert (await decide(stack, path, BEN)).json()["status"] == "proposed"
    _, ref = await incident_playbook(stack, "pv-rollback")
    assert ref["version"] == 2  # not yet: the rollback needs the same quorum
    assert (await decide(stack, path, DAN)).json()["status"] == "active"
    _, ref = await incident_playbook(stack, "pv-rollback")
    assert ref["version"] == 3
    diff = (await stack.call("GET", "/playbooks/pv-rollback/diff", COMMS,
                             params={"from": 1, "to": 3})).json()
    assert diff["quorum_rules"] == [] and diff["steps"] == []
    assert diff["summary"] == ["version: 1 -> 3"]



async def test_a_rejected_proposal_keeps_its_votes_and_a_withdrawal_frees_the_slot(
        policy_stack: ApiStack) -> None:
    stack = policy_stack
    await new_playbook(stack, "pv-reject")
    assert (await propose(stack, playbook_text("pv-reject", 2, quorum="quorum: any"))
            ).status_code == 202
    busy = await propose(stack, playbook_text("pv-reject", 3))
    assert busy.status_code == 409 and busy.json()["error"] == "ProposalOpen"
    path = "/playbooks/pv-reject/versions/2"
    await reviewed(stack, path)
    assert (await decide(stack, path, BEN, "reject", "no")).json()["status"] == "proposed"
    closed = (await decide(stack, path, CAT, "reject", "no")).json()
    assert closed["status"] == "rejected"  # 2 of 3 can no longer be met
    assert [(d["actor"], d["decision"], d["comment"]) for d in closed["review"]["decisions"]
            ] == [("ben", "reject", "no"), ("cat", "reject", "no")]

    assert (await propose(stack, playbook_text("pv-reject", 3))).status_code == 202
    withdrawn = (await decide(stack, "/playbooks/pv-reject/versions/3", AUTHOR, "reject",
                              "wrong file")).json()
    assert withdrawn["status"] == "rejected"
    assert withdrawn["review"]["reason"] == "withdrawn by its author ada"


async def test_directory_changes_take_the_same_review(policy_stack: ApiStack) -> None:
    stack = policy_stack
    await new_playbook(stack, "pv-directory")
    hidden = await stack.call("GET", "/directory/versions", COMMS)
    assert hidden.status_code == 403  # addresses and webhook URLs: admins only
    current = (await stack.call("GET", "/directory/versions", BEN)).json()
    number = current["active"]
    bigger = {**DIRECTORY, "people": [*DIRECTORY["people"], {
        "id": "liv", "name": "Liv Legal", "roles": ["legal"], "access": ["approver"]}]}
    response = await stack.call("POST", "/directory/versions", AUTHOR,
                                json={"yaml": yaml.safe_dump(bigger), "note": "Liv joins legal"})
    assert response.status_code == 202, response.text
    path = f"/directory/versions/{number + 1}"
    version = await reviewed(stack, path)
    assert version["review"]["dry_run"]["passed"] is True
    assert "pv-directory.yaml" in [s["scenario"] for s in version["review"]["dry_run"][
        "scenarios"]]
    assert (await decide(stack, path, AUTHOR)).json()["error"] == "AuthorCannotApprove"
    assert (await decide(stack, path, BEN)).status_code == 200
    assert (await decide(stack, path, CAT)).json()["status"] == "active"
    diff = (await stack.call("GET", "/directory/diff", BEN,
                             params={"from": number, "to": number + 1})).json()
    assert diff["summary"] == ["person liv added"]

    no_legal = {"people": [p for p in bigger["people"] if not p.get("roles")], "roles": []}
    response = await stack.call("POST", "/directory/versions", AUTHOR,
                                json={"yaml": yaml.safe_dump(no_legal)})
    assert response.status_code == 202, response.text
    failed = await reviewed(stack, f"/directory/versions/{number + 2}")
    assert failed["status"] == "rejected"
    assert any("unknown role 'legal'" in p for p in failed["review"]["dry_run"]["problems"])
    listed = (await stack.call("GET", "/directory/versions", BEN)).json()
    assert listed["active"] == number + 1


async def test_every_playbook_route_has_an_operation_id_and_documents_its_errors(
        policy_stack: ApiStack) -> None:
    spec = (await policy_stack.http.get("/openapi.json")).json()
    operations = {op["operationId"]: (path, method, op) for path, item in spec["paths"].items()
                  for method, op in item.items()
                  if path.startswith(("/playbooks", "/directory"))}
    assert set(operations) >= {
        "listPlaybooks", "getPlaybook", "validatePlaybook", "proposePlaybook",
        "listPlaybookVersions", "getPlaybookVersion", "diffPlaybookVersions",
        "approvePlaybookProposal", "rejectPlaybookProposal", "rollbackPlaybook",
        "proposeDirectory", "listDirVersions", "getDirectoryVersion",
        "diffDirectory", "approveDirectory", "rejectDirectory",
        "rollbackDirectory"}
    _, _, propose_op = operations["proposePlaybook"]
    assert "VersionTaken" in propose_op["responses"]["409"]["description"]
    _, _, approve_op = operations["approvePlaybookProposal"]
    assert "AuthorCannotApprove" in approve_op["responses"]["403"]["description"]
    _, _, validate_op = operations["validatePlaybook"]
    assert set(validate_op["requestBody"]["content"]) >= {"application/yaml",
                                                          "application/json"}


# ---- durability, seeding, fallback, command line ---------------------------------------------

async def test_the_catalog_continues_as_new_with_a_review_open(policy_stack: ApiStack) -> None:
    """Versions survive continue-as-new, and a review started in an earlier run still
    activates its version in the current one."""
    stack = policy_stack
    settings = stack.settings.model_copy(update={"policy_catalog_id": "policy-can-test"})
    small = PolicyStore(stack.env.client, settings, continue_as_new_after_events=40)
    directory = stack.settings.directory_file.read_bytes()
    await small.bootstrap("directory", directory, 1)
    await small.bootstrap(playbook_subject("pv-can"), playbook_text("pv-can", 1).encode(), 1)
    (stack.settings.playbooks_dir / "scenarios" / "pv-can.yaml").write_text(
        scenario_text("pv-can"))
    (stack.settings.playbooks_dir / "pv-can.yaml").write_text(playbook_text("pv-can", 1))
    v2 = playbook_text("pv-can", 2, quorum="quorum: any").encode()
    proposed = await small.propose(playbook_subject("pv-can"), v2, AUTHOR, number=2)
    assert proposed.proposal_id is not None
    for n in range(12):  # enough history for a few runs
        await small.bootstrap(playbook_subject(f"pv-can-{n}"),
                              playbook_text(f"pv-can-{n}", 1).encode(), 1)

    async def review_ready() -> bool:
        review = await small.review(proposed.proposal_id or "")
        return review is not None and review.dry_run is not None
    await eventually(review_ready, within=90, what="the dry run")
    await small.decide(proposed.proposal_id, BEN, True)
    review = await small.decide(proposed.proposal_id, CAT, True)
    assert review.outcome == "approved"

    handle = stack.env.client.get_workflow_handle("policy-can-test")
    stats = await handle.query("stats", result_type=dict)
    assert stats["runs"] >= 2 and stats["subjects"] == 14
    active = await small.active()
    assert active is not None
    assert active.subjects[playbook_subject("pv-can")].number == 2
    assert [v.status for v in await small.versions(playbook_subject("pv-can"))] == [
        "superseded", "active"]


async def test_seeding_is_a_first_start_only_and_never_activates_an_edit(
        policy_stack: ApiStack) -> None:
    stack = policy_stack
    shipped = stack.settings.playbooks_dir / "shipped.yaml"
    original = shipped.read_text()
    try:
        shipped.write_text(original.replace("deadline: 4h", "deadline: 1h"))  # no bump
        lines = await seed_shipped_versions(stack.env.client, stack.settings)
    finally:
        shipped.write_text(original)
    assert any(line.startswith("shipped.yaml: differs from playbook shipped v1 (active); not "
                               "activated") for line in lines), lines
    history = (await stack.call("GET", "/playbooks/shipped/versions", COMMS)).json()
    assert [(v["number"], v["bootstrap"], v["sha256"]) for v in history["items"]] == [
        (1, True, sha256(original.encode()))]
    listed = (await stack.call("GET", "/playbooks", COMMS)).json()
    assert listed["source"] == "store"


async def test_before_seeding_the_api_serves_files_and_says_so(matrix_stack: ApiStack) -> None:
    listed = await matrix_stack.call("GET", "/playbooks", "adam")
    assert listed.json()["source"] == "files"
    refused = await matrix_stack.call(
        "POST", "/playbooks", "adam", headers={"Content-Type": "application/yaml"},
        content=(matrix_stack.settings.playbooks_dir / "matrix.yaml").read_bytes())
    assert refused.status_code == 409 and refused.json()["error"] == "StoreNotSeeded"


async def test_the_command_line_publishes_and_approves(
        policy_stack: ApiStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    import httpx

    from cli import playbook_cmd

    stack = policy_stack
    await new_playbook(stack, "pv-cli")

    def client(person: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app),
                                 base_url="http://testserver", headers=stack.auth(person),
                                 timeout=60)

    edited = tmp_path / "pv-cli.yaml"
    edited.write_text(playbook_text("pv-cli", 2, quorum="quorum: all"))
    args = argparse.Namespace(file=edited, note="everyone signs", no_wait=False,
                              wait_seconds=90.0)
    async with client(AUTHOR) as http:
        assert await playbook_cmd._publish(args, http) == 0
    out = capsys.readouterr().out
    assert f"proposed {edited}" in out
    assert "pv-cli v2 proposed" in out and "everyone signs" in out
    assert "review: 2 of admin, not the author; reviewers: ben, cat, dan" in out
    assert "dry run: passed (1 scenario(s) run)" in out
    assert "pv-cli.yaml (pv-cli): ok" in out

    for person in (BEN, CAT):
        decide = argparse.Namespace(playbook_command="approve", subject="pv-cli", number=2,
                                    comment=f"ok from {person}")
        async with client(person) as http:
            assert await playbook_cmd._decide(decide, http) == 0
    out = capsys.readouterr().out
    assert "pv-cli v2 active" in out and "approve by cat: ok from cat" in out

    async with client(COMMS) as http:
        assert await playbook_cmd._diff(argparse.Namespace(subject="pv-cli", a=1, b=2),
                                        http) == 0
        assert await playbook_cmd._versions(
            argparse.Namespace(subject="pv-cli", number=None, text=False), http) == 0
    out = capsys.readouterr().out
    assert "* quorum rule of sign-off: 1 approvals; deadline 4h -> all approvers; " \
           "deadline 4h" in out
    assert "+      quorum: all" in out
    assert out.splitlines()[-2].startswith("pv-cli v2 active (sha256 ")
    assert out.splitlines()[-1].startswith("pv-cli v1 superseded (sha256 ")

    async with client(AUTHOR) as http:  # the same number with another text
        edited.write_text(playbook_text("pv-cli", 2, quorum="quorum: any"))
        assert await playbook_cmd._publish(args, http) == 1
    assert "refused (409 VersionTaken): playbook pv-cli v2 already exists" in \
        capsys.readouterr().err


async def test_the_catalog_and_review_histories_replay(policy_stack: ApiStack) -> None:
    """Both workflows are deterministic: their real histories replay without error."""
    from temporalio.worker import Replayer

    from core.payloads import DATA_CONVERTER
    from worker.main import workflow_runner
    from workflows.catalog import PolicyCatalogWorkflow
    from workflows.change_approval import ChangeApprovalWorkflow

    stack = policy_stack
    await new_playbook(stack, "pv-replay")
    assert (await propose(stack, playbook_text("pv-replay", 2, quorum="quorum: all"))
            ).status_code == 202
    path = "/playbooks/pv-replay/versions/2"
    await reviewed(stack, path)
    assert (await decide(stack, path, BEN, "reject", "not yet")).status_code == 200
    closed = (await decide(stack, path, DAN)).json()
    assert closed["status"] == "proposed"  # ben's reject leaves cat and dan: 2 still possible
    closed = (await decide(stack, path, CAT)).json()
    assert closed["status"] == "active"

    replayer = Replayer(workflows=[PolicyCatalogWorkflow, ChangeApprovalWorkflow],
                        workflow_runner=workflow_runner(strict=True),
                        data_converter=DATA_CONVERTER)
    client = stack.env.client
    for workflow_id in (store(stack).catalog_id, closed["proposal_id"]):
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
        assert result.replay_failure is None, workflow_id


async def test_a_new_playbook_is_reviewed_before_incidents_can_use_it(
        policy_stack: ApiStack) -> None:
    stack = policy_stack
    text = playbook_text("pv-brand-new", 1)
    response = await stack.call("POST", "/playbooks", AUTHOR,
                                json={"yaml": text, "note": "a playbook for recalls"})
    assert response.status_code == 202, response.text
    unknown = await stack.call("POST", "/incidents", COMMS, json={
        "title": "Recall", "summary": "A batch is faulty", "severity": "high",
        "playbook": "pv-brand-new"})
    assert unknown.status_code == 422 and unknown.json()["error"] == "UnknownPlaybook"

    path = "/playbooks/pv-brand-new/versions/1"
    version = await reviewed(stack, path)
    assert version["review"]["dry_run"]["note"] == (
        "no scenario file names pv-brand-new: only validation was checked")
    assert version["note"] == "a playbook for recalls"
    for admin in (BEN, DAN):
        assert (await decide(stack, path, admin)).status_code == 200
    _, ref = await incident_playbook(stack, "pv-brand-new")
    assert ref == {"id": "pv-brand-new", "version": 1, "sha256": sha256(text.encode())}


async def test_a_forged_signal_that_a_review_ended_activates_nothing(
        policy_stack: ApiStack) -> None:
    """Anyone who can reach Temporal can signal the catalog "the review approved v2". The
    catalog reads the review from the review workflow it started, finds it pending, and
    changes nothing; the real review still decides."""
    from temporalio.api.enums.v1 import EventType

    from domain.policy_versions import ProposalClosed, ReviewOutcome

    stack = policy_stack
    await new_playbook(stack, "pv-forged")
    v2 = playbook_text("pv-forged", 2, quorum="quorum: any")
    proposed = await propose(stack, v2)
    assert proposed.status_code == 202, proposed.text
    path = "/playbooks/pv-forged/versions/2"
    await reviewed(stack, path)
    proposal_id = proposed.json()["proposal_id"]
    pending = await store(stack).review(proposal_id)
    assert pending is not None and pending.outcome is ReviewOutcome.pending

    catalog = stack.env.client.get_workflow_handle(catalog_id(stack.settings))
    before = len((await catalog.fetch_history()).events)
    forged = pending.model_copy(update={"outcome": ReviewOutcome.approved,
                                        "reason": "approved by ben, cat"})
    await catalog.signal("proposal_closed", ProposalClosed(review=forged))

    async def read_and_handled() -> bool:
        events = (await catalog.fetch_history()).events[before:]
        kinds = [e.event_type for e in events]
        done = EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        return done in kinds and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in \
            kinds[kinds.index(done):]
    await eventually(read_and_handled, what="the catalog to read the review and go on")
    version = (await stack.call("GET", path, AUTHOR)).json()
    assert version["status"] == "proposed", version
    _, ref = await incident_playbook(stack, "pv-forged")
    assert ref["version"] == 1

    assert (await decide(stack, path, BEN)).status_code == 200
    second = await decide(stack, path, CAT)
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "active"


async def test_old_versions_keep_their_text_in_workflows_of_their_own(
        policy_stack: ApiStack) -> None:
    """A superseded version's text leaves the catalog's state for a `PolicyText` workflow
    (by content), and every reader still gets the exact bytes: the version, a diff, a
    rollback to it."""
    from temporalio.client import WorkflowExecutionStatus

    from domain.policy_versions import VersionRecord, policy_text_id

    stack = policy_stack
    v1 = await new_playbook(stack, "pv-kept")
    subject = playbook_subject("pv-kept")
    await approved(stack, "pv-kept", playbook_text("pv-kept", 2, quorum="quorum: all"), 2)

    catalog = stack.env.client.get_workflow_handle(store(stack).catalog_id)

    async def kept_elsewhere(number: int) -> VersionRecord | None:
        record: VersionRecord = await catalog.query("version", args=[subject, number],
                                                    result_type=VersionRecord)
        return record if record.text_ref else None
    record = await eventually(lambda: kept_elsewhere(1), what="v1's text kept elsewhere")
    assert record.text_z == "" and record.status == "superseded"
    assert record.text_ref == policy_text_id(store(stack).catalog_id, sha256(v1.encode()))
    keeper = await stack.env.client.get_workflow_handle(record.text_ref).describe()
    assert keeper.status == WorkflowExecutionStatus.RUNNING
    active: VersionRecord = await catalog.query("version", args=[subject, 2],
                                                result_type=VersionRecord)
    assert active.text_z and active.text_ref is None  # the active text stays inline

    shown = (await stack.call("GET", "/playbooks/pv-kept/versions/1", COMMS)).json()
    assert shown["yaml"] == v1 and shown["sha256"] == sha256(v1.encode())
    assert "text_ref" not in shown
    diff = (await stack.call("GET", "/playbooks/pv-kept/diff", COMMS,
                             params={"from": 1, "to": 2})).json()
    assert "version: 1 -> 2" in diff["summary"]
    back = await stack.call("POST", "/playbooks/pv-kept/rollback", AUTHOR,
                            json={"to": 1, "note": "back to any"})
    assert back.status_code == 202, back.text
    version = await reviewed(stack, "/playbooks/pv-kept/versions/3")
    assert version["yaml"] == v1.replace("version: 1", "version: 3")


async def test_the_catalog_state_stays_small_however_often_a_big_directory_changes(
        policy_stack: ApiStack) -> None:
    """Each version of a 3,000-person directory is tens of KB compressed; the catalog carries
    only the active one, so its state (which must fit Temporal's 2 MB payloads across
    continue-as-new) no longer grows by a whole directory per change."""
    import uuid

    from domain.policy_versions import DIRECTORY as DIRECTORY_SUBJECT
    from domain.policy_versions import pack_text

    stack = policy_stack
    catalog_name = f"policy-big-{uuid.uuid4().hex[:6]}"
    big = PolicyStore(stack.env.client,
                      stack.settings.model_copy(update={"policy_catalog_id": catalog_name}))

    def company(version: int) -> bytes:
        staff = [{"id": f"emp-{n:05d}", "name": f"Employee {n} (v{version})",
                  "access": ["reporter"]} for n in range(3000)]
        return yaml.safe_dump({**DIRECTORY, "people": [*DIRECTORY["people"], *staff]}).encode()

    (stack.settings.playbooks_dir / "scenarios" / "pv-big.yaml").write_text(
        scenario_text("pv-big"))
    (stack.settings.playbooks_dir / "pv-big.yaml").write_text(playbook_text("pv-big", 1))
    await big.bootstrap(DIRECTORY_SUBJECT, company(1), 1)
    await big.bootstrap(playbook_subject("pv-big"), playbook_text("pv-big", 1).encode(), 1)
    handle = stack.env.client.get_workflow_handle(catalog_name)
    for version in (2, 3, 4):
        proposed = await big.propose(DIRECTORY_SUBJECT, company(version), AUTHOR,
                                     number=version)
        proposal = proposed.proposal_id or ""

        async def review_ready(proposal: str = proposal) -> bool:
            review = await big.review(proposal)
            return review is not None and review.dry_run is not None
        await eventually(review_ready, within=90, what=f"the dry run of v{version}")
        await big.decide(proposal, BEN, True)
        assert (await big.decide(proposal, CAT, True)).outcome == "approved"

    async def settled() -> dict[str, int] | None:
        stats: dict[str, int] = await handle.query("stats", result_type=dict)
        versions = await big.versions(DIRECTORY_SUBJECT)
        return stats if all(v.text_ref for v in versions if v.status != "active") else None
    stats = await eventually(settled, what="the superseded texts kept elsewhere")
    one_text = len(pack_text(company(4)))
    assert one_text > 20_000
    # inline: the active directory and the playbook, plus reviews and references (before:
    # all four directory texts, over 4 x one_text)
    assert stats["state_bytes"] < one_text + 30_000, (stats, one_text)
    for version in (1, 2, 3, 4):  # every version still reads back exactly
        assert (await big.version(DIRECTORY_SUBJECT, version)).text() == company(version)
