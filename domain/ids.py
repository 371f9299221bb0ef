"""Identifier formats: incident ids are workflow ids; task ids embed their incident id."""

from __future__ import annotations

import hashlib
import re

INCIDENT_ID = re.compile(r"^inc-[a-z0-9-]{4,80}$")


def dedup_incident_id(dedup_key: str, epoch: int) -> str:
    """The workflow id of the `epoch`-th incident opened for `dedup_key`.

    Concurrent openers compute the same id, so Temporal's workflow-id uniqueness (not a
    Redis lock) guarantees one open incident per key. A resolved incident's id is never
    reused: the next one for the key gets `epoch + 1`.
    """
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:20]
    return f"inc-{digest}-{epoch}"


def task_id(incident_id: str, step_id: str, n: int) -> str:
    return f"{incident_id}.{step_id}.{n}"


def incident_of_task(task_id_: str) -> str:
    return task_id_.split(".", 1)[0]
