"""The business errors of crisis-engine: one small tree, one stable code per leaf.

A command the incident can't take raises one of these in the domain (the incident
aggregate in `domain.ledger`). The workflow turns it into
`temporalio.exceptions.ApplicationError(message, type=error.code, non_retryable=True)` from
an update validator (so a rejected update leaves no trace in history), and the API turns
the code back into a class with `error_for(code, message)` and the class into an HTTP
status (`api.errors`; the domain knows nothing about HTTP). The codes are part of the
API's contract and of recorded workflow histories: never rename one.

The hierarchy:

* CrisisError                  base of every crisis-engine business error
  * LedgerError                a command the incident refused; `LedgerError(code, message)`
                               builds the leaf class registered for `code`
    * NotFoundError            the command names something that does not exist
      * TaskNotFound             no such task in this incident
    * PermissionDenied         the caller may not do this
      * NotYourTask              the caller is not the task's assignee or its delegate
      * Forbidden                the caller's access roles don't allow this
    * ConflictError            the object's state does not allow it (any more)
      * TaskClosed               the task is already decided, delegated, cancelled or expired
      * IncidentClosed           the incident is resolved
    * InvalidCommand           the command itself is wrong
      * InvalidDelegate          unknown person, or delegating to yourself / the holder
      * RequestConflict          a request id reused with a different payload
      * UnknownPlaybook          opening an incident with a playbook that doesn't exist
      * SeverityNotSupported     ... with a severity its playbook doesn't handle
      * NoRoute                  a report whose severity the routing table doesn't route
      * ReasonRequired           a reject of a draft needs a reason
    * ConflictError (drafts)
      * DraftChanged             the decision was made on a draft since replaced
      * DraftRefused             the node takes no (more) drafts: none, ended, out of rounds
      * NotAwaitingConfirmation  no publish waits for a second person's confirmation
      * NothingToResolve         no action at this step has an unknown outcome to resolve

Raise a leaf (`raise TaskClosed("task ... is approved")`), catch a family
(`except ConflictError`) or everything (`except LedgerError`).
"""

from __future__ import annotations

from typing import Any, Final, overload

TASK_NOT_FOUND: Final = "TaskNotFound"
NOT_YOUR_TASK: Final = "NotYourTask"
FORBIDDEN: Final = "Forbidden"
TASK_CLOSED: Final = "TaskClosed"
INCIDENT_CLOSED: Final = "IncidentClosed"
INVALID_DELEGATE: Final = "InvalidDelegate"
REQUEST_CONFLICT: Final = "RequestConflict"
UNKNOWN_PLAYBOOK: Final = "UnknownPlaybook"
SEVERITY_NOT_SUPPORTED: Final = "SeverityNotSupported"
NO_ROUTE: Final = "NoRoute"
DRAFT_CHANGED: Final = "DraftChanged"
REASON_REQUIRED: Final = "ReasonRequired"
DRAFT_REFUSED: Final = "DraftRefused"
NOT_AWAITING_CONFIRMATION: Final = "NotAwaitingConfirmation"
NOTHING_TO_RESOLVE: Final = "NothingToResolve"
LIBRARY_MISMATCH: Final = "LibraryMismatch"
NO_PAUSED_POSTS: Final = "NoPausedPosts"


class CrisisError(Exception):
    """
    Base class for every crisis-engine business error.

    `code` is the stable, machine-readable name of the error; `message` says what happened
    to a human.
    """

    code: str = "CrisisError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_BY_CODE: dict[str, type[LedgerError]] = {}


class LedgerError(CrisisError):
    """
    A command (report, decide, delegate, status update, resolve) the incident refused.

    `LedgerError(code, message)` builds the leaf class registered for `code` (an unknown
    code gives a plain `LedgerError` carrying it); leaves take only the message.
    """

    code = "LedgerError"

    def __new__(cls, *args: Any, **kwargs: Any) -> LedgerError:
        if cls is LedgerError and len(args) == 2 and isinstance(args[0], str):
            cls = _BY_CODE.get(args[0], LedgerError)
        instance: LedgerError = super().__new__(cls)
        return instance

    @overload
    def __init__(self, message: str, /) -> None: ...

    @overload
    def __init__(self, code: str, message: str, /) -> None: ...

    def __init__(self, *args: str) -> None:
        if len(args) == 2:
            code, message = args
        elif len(args) == 1:
            code, message = type(self).code, args[0]
        else:
            raise TypeError("LedgerError(message) or LedgerError(code, message)")
        super().__init__(message)
        self.code = code

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE[cls.code] = cls

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return error_for, (self.code, self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


# Families...


class NotFoundError(LedgerError):
    """
    The command names something that does not exist.
    """

    code = "NotFound"


class PermissionDenied(LedgerError):
    """
    The caller may not do this.
    """

    code = "PermissionDenied"


class ConflictError(LedgerError):
    """
    The object's current state does not allow the command.
    """

    code = "Conflict"


class InvalidCommand(LedgerError):
    """
    The command itself is wrong, whatever the state.
    """

    code = "InvalidCommand"


# Leaves: the codes that cross the workflow boundary...


class TaskNotFound(NotFoundError):
    """
    No task with this id in this incident.
    """

    code = TASK_NOT_FOUND


class NotYourTask(PermissionDenied):
    """
    The caller is neither the task's assignee nor the delegate it moved to.
    """

    code = NOT_YOUR_TASK


class Forbidden(PermissionDenied):
    """
    The caller's access roles don't allow this (e.g. only a communicator or an admin
    may post a status update), or the caller is unknown to the directory.
    """

    code = FORBIDDEN


class TaskClosed(ConflictError):
    """
    The task is already decided, delegated, cancelled or expired, or its approval ended.
    """

    code = TASK_CLOSED


class IncidentClosed(ConflictError):
    """
    The incident is resolved.
    """

    code = INCIDENT_CLOSED


class InvalidDelegate(InvalidCommand):
    """
    A delegation to an unknown person, to the caller, or to the task's current holder.
    """

    code = INVALID_DELEGATE


class RequestConflict(InvalidCommand):
    """
    A request id was reused with a different payload.
    """

    code = REQUEST_CONFLICT


class UnknownPlaybook(InvalidCommand):
    """
    An incident was to be opened with a playbook that does not exist (or is invalid).
    """

    code = UNKNOWN_PLAYBOOK


class SeverityNotSupported(InvalidCommand):
    """
    An incident was to be opened with a severity its playbook does not handle.
    """

    code = SEVERITY_NOT_SUPPORTED


class NoRoute(InvalidCommand):
    """
    A report's severity has no playbook in the routing table.
    """

    code = NO_ROUTE


CODES: Final[frozenset[str]] = frozenset({
    TASK_NOT_FOUND, NOT_YOUR_TASK, FORBIDDEN, TASK_CLOSED, INCIDENT_CLOSED, INVALID_DELEGATE,
    REQUEST_CONFLICT})
"""Every code a workflow may answer in `ApplicationError.type` (the others are raised
before a workflow is involved, when an incident is opened)."""


def error_class(code: str) -> type[LedgerError] | None:
    """The class registered for `code`, or None for a code this build does not know."""
    return _BY_CODE.get(code)


def error_for(code: str, message: str) -> LedgerError:
    """The error for `code` (e.g. the `type` of a workflow's `ApplicationError`)."""
    return LedgerError(code, message)


class DraftChanged(ConflictError):
    """
    The decision names a draft sha256 that a newer version has replaced.
    """

    code = DRAFT_CHANGED


class DraftRefused(ConflictError):
    """
    The approval takes no (more) drafts: it has none, it has ended, or it is out of rounds.
    """

    code = DRAFT_REFUSED


class NotAwaitingConfirmation(ConflictError):
    """
    No two-person publish waits for a confirmation at this step.
    """

    code = NOT_AWAITING_CONFIRMATION


class NothingToResolve(ConflictError):
    """
    No at-most-once action at this step is waiting for a human to say whether it was sent.
    """

    code = NOTHING_TO_RESOLVE


class LibraryMismatch(ConflictError):
    """
    A draft asked for the lighter policy of a pre-approved library statement, but its text
    is not byte-identical to that statement (or the statement doesn't exist): an edited
    statement is a new text and needs the full approval.
    """

    code = LIBRARY_MISMATCH


class NoPausedPosts(ConflictError):
    """
    The playbook has no step that pauses scheduled posts, so there is nothing to keep paused.
    """

    code = NO_PAUSED_POSTS


class ReasonRequired(InvalidCommand):
    """
    A reject of a draft needs a reason (the comment), so the redraft knows what to fix.
    """

    code = REASON_REQUIRED
