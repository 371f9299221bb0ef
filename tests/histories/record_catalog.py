"""Record a policy catalog's history for `tests/test_replay.py` (versions superseded by
reviewed proposals, a directory change, a rollback):

    CRISIS_RECORD_TAG=v1-inline-texts pytest -q tests/histories/record_catalog.py

writes `tests/histories/catalog.<TAG>.json` on the real stack (dev server, worker, API). The
file name does not match `test_*.py`, so CI never runs it. Never re-record or delete a
committed history: record a new tag beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.api_fixtures import ApiStack
from tests.test_policy_versions import (
    AUTHOR,
    BEN,
    CAT,
    DAN,
    DIRECTORY,
    approved,
    decide,
    new_playbook,
    playbook_text,
    policy_stack,
    reviewed,
    store,
)

pytest_plugins = ["tests.api_fixtures"]
__all__ = ["policy_stack"]  # the fixture, imported so pytest finds it here

HERE = Path(__file__).parent


async def test_record_a_catalog_history(policy_stack: ApiStack) -> None:
    tag = os.environ.get("CRISIS_RECORD_TAG", "")
    if not tag:
        pytest.skip("set CRISIS_RECORD_TAG to record")
    out = HERE / f"catalog.{tag}.json"
    assert not out.exists(), f"refusing to overwrite {out}"
    stack = policy_stack
    await new_playbook(stack, "recorded")
    await approved(stack, "recorded", playbook_text("recorded", 2, quorum="quorum: all"), 2)

    number = (await stack.call("GET", "/directory/versions", BEN)).json()["active"]
    bigger = {**DIRECTORY, "people": [*DIRECTORY["people"], {
        "id": "liv", "name": "Liv Legal", "roles": ["legal"], "access": ["approver"]}]}
    assert (await stack.call("POST", "/directory/versions", AUTHOR, json={
        "yaml": yaml.safe_dump(bigger), "note": "Liv joins legal"})).status_code == 202
    path = f"/directory/versions/{number + 1}"
    await reviewed(stack, path)
    for admin in (BEN, CAT):
        assert (await decide(stack, path, admin)).status_code == 200

    back = await stack.call("POST", "/playbooks/recorded/rollback", AUTHOR,
                            json={"to": 1, "note": "quorum: all was too strict"})
    assert back.status_code == 202, back.text
    path = "/playbooks/recorded/versions/3"
    await reviewed(stack, path)
    for admin in (BEN, DAN):
        assert (await decide(stack, path, admin)).status_code == 200
    assert (await stack.call("GET", path, BEN)).json()["status"] == "active"

    handle = stack.env.client.get_workflow_handle(store(stack).catalog_id)
    history = await handle.fetch_history()
    out.write_text(history.to_json())
    print(f"recorded {out.name}: {len(history.events)} events")
