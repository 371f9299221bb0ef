"""Redis key layout of the read model, the activities' idempotency records and live events.

Everything lives under the `ce:` prefix. The read-model keys (incidents, tasks, inboxes and
their indexes) can be deleted and rebuilt from Temporal at any time; idempotency records
(`ce:idem:*`), auth (`ce:auth*`), intake dedup (`ce:dedup*`), notification feeds
(`ce:notifications:*`) and answered-command marks (`ce:answered:*`, short-lived) are not
part of the read model and survive `ProjectionWriter.clear`.
"""

from __future__ import annotations

from datetime import UTC, datetime

PREFIX = "ce:"

# ---- incidents ------------------------------------------------------------------------

INCIDENTS = "ce:incidents"  # zset: opened_at epoch -> incident id (every incident)


def incident(incident_id: str) -> str:
    """JSON of `domain.incident.Incident`."""
    return f"ce:incident:{incident_id}"


def answered(incident_id: str, request_id: str) -> str:
    """String (the incident rev that carried it), kept `ANSWERED_TTL_SECONDS`: the command
    `request_id` was answered and its changes are in the read model."""
    return f"ce:answered:{incident_id}:{request_id}"


# long enough for a client's retry of the same command (same request id) to find it
ANSWERED_TTL_SECONDS = 600


def incident_nodes(incident_id: str) -> str:
    """Hash: step id -> `NodeState` JSON."""
    return f"ce:incident:{incident_id}:nodes"


def incident_node_revs(incident_id: str) -> str:
    """Hash: step id -> incident rev of the batch that last wrote that node."""
    return f"ce:incident:{incident_id}:nodes:rev"


def incident_timeline(incident_id: str) -> str:
    """Zset: seq -> `TimelineEntry` JSON (one member per seq)."""
    return f"ce:incident:{incident_id}:timeline"


def incident_tasks(incident_id: str) -> str:
    """Zset: created_at epoch -> task id, for the tasks of one incident."""
    return f"ce:incident:{incident_id}:tasks"


def incidents_by_status(status: str) -> str:
    """Zset like `INCIDENTS`, holding only incidents whose current status is `status`."""
    return f"ce:incidents:status:{status}"


def incidents_by_severity(severity: str) -> str:
    return f"ce:incidents:severity:{severity}"


def incidents_by_playbook(playbook_id: str) -> str:
    return f"ce:incidents:playbook:{playbook_id}"


def incident_index(status: str | None = None, severity: str | None = None,
                   playbook_id: str | None = None) -> str:
    """The zset (scored like `INCIDENTS`) of exactly the incidents with these values; None
    leaves a field open. One key per combination, so every list filter reads one index:
    `incident_index()` is `INCIDENTS`, `incident_index(status=s)` is `incidents_by_status(s)`,
    and a combination such as status + severity is `ce:incidents:status:{s}:severity:{v}`.
    (Ids and enum values have no `:`, so no two combinations share a key.)"""
    parts = [f"{name}:{value}" for name, value in
             (("status", status), ("severity", severity), ("playbook", playbook_id))
             if value is not None]
    return ":".join(["ce:incidents", *parts]) if parts else INCIDENTS


# ---- tasks ----------------------------------------------------------------------------

TASKS = "ce:tasks"  # zset: created_at epoch -> task id (every task)


def task(task_id: str) -> str:
    """JSON of `domain.incident.Task`."""
    return f"ce:task:{task_id}"


def tasks_by_state(state: str) -> str:
    """Zset like `TASKS`, holding only tasks whose current state is `state`."""
    return f"ce:tasks:state:{state}"


def inbox(person_id: str) -> str:
    """Zset: created_at epoch -> task id, every task the person was ever assigned."""
    return f"ce:inbox:{person_id}"


def task_index(state: str | None = None, assignee: str | None = None,
               incident_id: str | None = None) -> str:
    """The zset (scored like `TASKS`) of exactly the tasks with these values; None leaves a
    field open. `task_index()` is `TASKS`, `task_index(state=s)` is `tasks_by_state(s)`,
    `task_index(assignee=p)` is `inbox(p)`, `task_index(incident_id=i)` is
    `incident_tasks(i)`; `state` narrows the inbox (`ce:inbox:{p}:state:{s}`) and an
    incident's tasks (`ce:incident:{i}:tasks:state:{s}`). An assignee within one incident
    has no index of its own: the incident's (or its state's) index is walked, which is
    bounded by the tasks of one incident."""
    if incident_id is not None:
        base = incident_tasks(incident_id)
    elif assignee is not None:
        base = inbox(assignee)
    elif state is not None:
        return tasks_by_state(state)
    else:
        return TASKS
    return base if state is None else f"{base}:state:{state}"


# ---- live events ----------------------------------------------------------------------

EVENTS = "ce:events"


def incident_events(incident_id: str) -> str:
    return f"ce:events:{incident_id}"


# ---- not read model: activity idempotency and notification feeds -----------------------


def idem_notify(idempotency_key: str, channel: str) -> str:
    """Set once `channel` delivered for this notify call."""
    return f"ce:idem:notify:{idempotency_key}:{channel}"


def idem_notify_rejected(idempotency_key: str, channel: str) -> str:
    """Set once the receiver refused `channel` for good; the value is the reason."""
    return f"ce:idem:notify:{idempotency_key}:{channel}:rejected"


def idem_action(idempotency_key: str) -> str:
    """JSON of the `ActionResult` of a completed action."""
    return f"ce:idem:action:{idempotency_key}"


def notifications(person_id: str) -> str:
    """List, newest first, of the notifications sent to a person on the `log` channel."""
    return f"ce:notifications:{person_id}"


# Patterns `clear()` deletes. Deliberately exact, so other `ce:` keys are never matched.
READ_MODEL_PATTERNS = (
    "ce:incident:*", INCIDENTS, "ce:incidents:*",
    "ce:task:*", TASKS, "ce:tasks:*",
    "ce:inbox:*",
)


def epoch(moment: datetime) -> float:
    """Sorted-set score of a datetime; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
