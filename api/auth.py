"""Bearer-token authentication and the access rules every route applies.

A token maps (through its sha256 hash) to a directory person; the person's `access` list
holds their API roles, and everyone is implicitly a `reporter`. The rules, in one place:

| action                                   | who                                                  |
|------------------------------------------|------------------------------------------------------|
| POST /reports                            | anyone authenticated                                 |
| POST /incidents, status-updates, resolve | communicator, admin                                  |
| GET /incidents (list)                    | communicator, leader, admin                          |
| GET /incidents/{id}, its timeline,       | communicator, leader, admin; or an approver who holds |
| metrics and report                       | (or held) a task in that incident                    |
| GET /tasks (own inbox)                   | approver, communicator, leader, admin                |
| GET /tasks?assignee=<someone else>       | leader, admin                                        |
| GET /tasks?incident_id=<id> (all tasks)  | communicator, leader, admin (others: their own only) |
| GET /tasks/{id}                          | its assignee; or communicator, leader, admin         |
| POST /tasks/{id}/decision, /delegate     | the task's current holder (or the delegate it moved  |
|                                          | to), with any role but reporter alone; the workflow's |
|                                          | update validator checks the holder again             |
| GET /playbooks, /playbooks/{id}          | approver, communicator, leader, admin                |
| POST /playbooks/validate                 | admin                                                |
| POST /playbooks, /directory/versions,    | admin; approve: an admin other than the author (the  |
| their approve, reject and rollback       | change-approval workflow checks the reviewer again)  |
| GET /playbooks/{id}/versions, diff       | approver, communicator, leader, admin                |
| GET /directory/versions, diff            | admin (addresses and webhook URLs)                   |
| /demo/sink/{name}                        | loopback clients without a token; others need admin  |

A reporter-only user sees nothing but the receipt that POST /reports returns.
Missing or invalid token: 401 with `WWW-Authenticate: Bearer`. Wrong role: 403. An incident
(or a task) the caller may not see at all is 404, the same answer as for an unknown one (no
existence oracle: `api/lookup.py`); someone else's task in an incident the caller does see
is 403 `NotYourTask`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.directory import AccessRole, Person
from domain.incident import IncidentView, Task

from .errors import ApiError

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}

INCIDENT_READERS = frozenset({AccessRole.communicator, AccessRole.leader, AccessRole.admin})
INCIDENT_WRITERS = frozenset({AccessRole.communicator, AccessRole.admin})
INBOX_USERS = frozenset({AccessRole.approver, AccessRole.communicator, AccessRole.leader,
                         AccessRole.admin})
TASK_SUPERVISORS = frozenset({AccessRole.leader, AccessRole.admin})
TASK_READERS = frozenset({AccessRole.communicator, AccessRole.leader, AccessRole.admin})
PLAYBOOK_READERS = INBOX_USERS
PLAYBOOK_ADMINS = frozenset({AccessRole.admin})
TASK_ADMINS = frozenset({AccessRole.admin})


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    person: Person
    access: frozenset[AccessRole]

    @classmethod
    def of(cls, person: Person) -> Principal:
        return cls(person, frozenset([AccessRole.reporter, *person.access]))

    @property
    def id(self) -> str:
        return self.person.id

    def has_any(self, roles: Iterable[AccessRole]) -> bool:
        return not self.access.isdisjoint(roles)

    def require(self, roles: frozenset[AccessRole], action: str) -> None:
        if not self.has_any(roles):
            needed = " or ".join(sorted(r.value for r in roles))
            raise ApiError(403, f"{action} needs the {needed} role")


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail, headers=BEARER_CHALLENGE)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def can_read_incident(principal: Principal, view: IncidentView) -> bool:
    if principal.has_any(INCIDENT_READERS):
        return True
    return AccessRole.approver in principal.access and any(
        task.assignee == principal.id for task in view.tasks)


def can_read_task(principal: Principal, task: Task) -> bool:
    return task.assignee == principal.id or principal.has_any(TASK_READERS)


def require_task_holder(principal: Principal, task: Task) -> None:
    if task.assignee != principal.id:
        raise ApiError(403, f"task {task.id} is assigned to someone else", "NotYourTask")
