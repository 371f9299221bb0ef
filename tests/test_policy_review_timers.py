"""A change review in virtual time: reviewers are told when the dry run has passed, and an
undecided review escalates like a statement (durable timers), then stops once decided."""

from __future__ import annotations

import uuid
from datetime import timedelta

import yaml

from core.config import Settings
from core.policy_store import PolicyStore
from domain.directory import Target
from domain.policy_versions import (
    DIRECTORY,
    ChangePolicy,
    ChangeTier,
    ReviewState,
    playbook_subject,
)
from tests.workflow_harness import eventually, fresh_time_env, harness

PEOPLE = {
    "people": [
        {"id": "ada", "name": "Ada Admin", "access": ["admin"]},
        {"id": "ben", "name": "Ben Admin", "access": ["admin"]},
        {"id": "cat", "name": "Cat Admin", "access": ["admin"]},
        {"id": "eve", "name": "Eve Exec", "access": ["leader"]},
        {"id": "lee", "name": "Lee Legal", "roles": ["legal"], "access": ["approver"]},
    ],
    "roles": [{"id": "legal"}],
}


def playbook(version: int, quorum: str) -> bytes:
    return (f"id: timed\nname: Timed\nversion: {version}\nsteps:\n  - id: sign-off\n"
            f"    approval:\n      content: Approve\n      approvers: [{{role: legal}}]\n"
            f"      quorum: {quorum}\n  - id: done\n    resolution: {{}}\n").encode()


async def test_an_undecided_review_escalates_like_a_statement(redis_url: str) -> None:
    async with fresh_time_env() as env, harness(env, redis_url) as h:
        policy = ChangePolicy(escalation=[ChangeTier(
            name="Tell the COO", after=timedelta(hours=4), notify=[Target(person="eve")])])
        settings = Settings(task_queue=h.task_queue, change_policy=policy,
                            policy_catalog_id=f"catalog-{uuid.uuid4().hex[:6]}")
        store = PolicyStore(env.client, settings)
        await store.bootstrap(DIRECTORY, yaml.safe_dump(PEOPLE).encode(), 1)
        await store.bootstrap(playbook_subject("timed"), playbook(1, "any"), 1)
        proposed = await store.propose(playbook_subject("timed"), playbook(2, "all"), "ada",
                                       number=2, note="everyone signs")
        proposal_id = proposed.proposal_id or ""

        async def review() -> ReviewState:
            state = await store.review(proposal_id)
            assert state is not None
            return state

        told = await eventually(review, lambda r: len(r.notified) == 2)
        assert told.dry_run is not None and told.dry_run.passed
        assert [(n.to, n.purpose, n.channels) for n in told.notified] == [
            ("ben", "review", ["log"]), ("cat", "review", ["log"])]

        await env.sleep(timedelta(hours=3, minutes=50))
        assert (await review()).tiers_fired == []
        await env.sleep(timedelta(minutes=20))
        escalated = await eventually(review, lambda r: r.tiers_fired == [0])
        assert [(n.to, n.purpose, n.tier) for n in escalated.notified][-1] == (
            "eve", "escalation", 0)

        await store.decide(proposal_id, "ben", True)
        decided = await store.decide(proposal_id, "cat", True)
        assert decided.outcome == "approved"
        active = await store.active()
        assert active is not None and active.subjects[playbook_subject("timed")].number == 2


async def test_a_review_nobody_decides_expires_and_frees_the_playbook(redis_url: str) -> None:
    async with fresh_time_env() as env, harness(env, redis_url) as h:
        settings = Settings(task_queue=h.task_queue,
                            change_policy=ChangePolicy(deadline=timedelta(days=2)),
                            policy_catalog_id=f"catalog-{uuid.uuid4().hex[:6]}")
        store = PolicyStore(env.client, settings)
        await store.bootstrap(DIRECTORY, yaml.safe_dump(PEOPLE).encode(), 1)
        await store.bootstrap(playbook_subject("timed"), playbook(1, "any"), 1)
        proposed = await store.propose(playbook_subject("timed"), playbook(2, "all"), "ada",
                                       number=2)

        async def review() -> ReviewState:
            state = await store.review(proposed.proposal_id or "")
            assert state is not None
            return state

        await eventually(review, lambda r: len(r.notified) == 2)
        await env.sleep(timedelta(days=2, minutes=1))
        expired = await eventually(review, lambda r: r.outcome == "rejected")
        assert expired.reason == "expired: no decision within 2d"

        async def closed() -> str:
            return (await store.version(playbook_subject("timed"), 2)).status
        assert await eventually(closed, lambda s: s == "rejected") == "rejected"
        again = await store.propose(playbook_subject("timed"), playbook(3, "all"), "ada",
                                    number=3)
        assert again.status == "proposed"
