"""Business errors that cross the workflow boundary, and the HTTP status each maps to.

The workflow raises `temporalio.exceptions.ApplicationError(message, type=<code>)` with one of
these codes (from update validators, so a rejected update leaves no trace in history); the API
maps the code to a status and answers `{"error": code, "detail": message}`.

    TaskNotFound       404  no such task in this incident
    NotYourTask        403  the caller is not the task's assignee or its delegate
    Forbidden          403  the caller's access roles don't allow this
    TaskClosed         409  the task is already decided, delegated, cancelled or expired
    IncidentClosed     409  the incident is resolved
    InvalidDelegate    422  unknown person, or delegating to yourself / to the current holder
    RequestConflict    422  a request id reused with a different payload
    DraftChanged       409  the decision was made on a draft that has since been replaced
    ReasonRequired     422  a reject of a draft needs a reason
    DraftRefused       409  the node takes no (more) drafts: not a drafts node, ended, or
                            out of rounds
    NotAwaitingConfirmation 409  no publish waits for a second person's confirmation
"""

from __future__ import annotations

from typing import Final

TASK_NOT_FOUND: Final = "TaskNotFound"
NOT_YOUR_TASK: Final = "NotYourTask"
FORBIDDEN: Final = "Forbidden"
TASK_CLOSED: Final = "TaskClosed"
INCIDENT_CLOSED: Final = "IncidentClosed"
INVALID_DELEGATE: Final = "InvalidDelegate"
REQUEST_CONFLICT: Final = "RequestConflict"
DRAFT_CHANGED: Final = "DraftChanged"
REASON_REQUIRED: Final = "ReasonRequired"
DRAFT_REFUSED: Final = "DraftRefused"
NOT_AWAITING_CONFIRMATION: Final = "NotAwaitingConfirmation"

HTTP_STATUS: Final[dict[str, int]] = {
    TASK_NOT_FOUND: 404,
    NOT_YOUR_TASK: 403,
    FORBIDDEN: 403,
    TASK_CLOSED: 409,
    INCIDENT_CLOSED: 409,
    INVALID_DELEGATE: 422,
    REQUEST_CONFLICT: 422,
    DRAFT_CHANGED: 409,
    REASON_REQUIRED: 422,
    DRAFT_REFUSED: 409,
    NOT_AWAITING_CONFIRMATION: 409,
}
