"""Incidents pinning the same playbook and directory share one decoded copy per worker
(`domain.snapshot_cache`), and never share one whose content differs."""

from __future__ import annotations

from domain.incident import StartIncident
from domain.snapshot_cache import shared
from tests.factories import snapshot, start_input, viral_playbook


def decoded(start: StartIncident) -> StartIncident:
    """What the worker gets: the start input through JSON, a fresh copy each time."""
    return StartIncident.model_validate_json(start.model_dump_json())


def test_incidents_pinning_the_same_versions_share_one_copy() -> None:
    start = start_input(snapshot(viral_playbook("http://127.0.0.1:9/publish")))
    first, second = decoded(start), decoded(start)
    assert first.playbook is not second.playbook  # decoding alone copies
    assert shared(first.playbook) is shared(second.playbook)
    assert shared(first.directory) is shared(second.directory)
    assert shared(second.playbook) == start.playbook  # the content, unchanged


def test_different_content_is_never_shared_even_under_the_same_claimed_hash() -> None:
    one = snapshot(viral_playbook("http://127.0.0.1:9/publish"))
    other = snapshot(viral_playbook("http://127.0.0.1:9/publish", content="Another text"))
    forged = other.model_copy(update={"sha256": one.sha256})  # same id, version, sha256
    assert forged.definition != one.definition
    got_one, got_forged = shared(decoded(start_input(one)).playbook), \
        shared(decoded(start_input(forged)).playbook)
    assert got_one is not got_forged
    assert got_forged.definition == other.definition
