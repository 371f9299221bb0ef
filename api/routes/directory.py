"""The directory (people, roles, rosters) as reviewed policy: the same flow as playbooks.

A directory text has no `version:` key, so the store numbers versions itself (the next
number); give `?version=N` (or JSON `"version"`) to insist on a number, which is refused
if another text holds it. The dry run checks every active playbook against the proposed
directory and runs their scenarios with it; reviewers come from the *active* directory.
Reads are for admins only: the directory holds contact addresses and webhook URLs.

Time off (`PUT /directory/people/{id}/away`, `PUT /directory/rosters/{id}/overrides`,
`GET /directory/time-off`) is not reviewed: it is an operational overlay that applies at
once, with a revision, author and time per change, and reaches running incidents the next
time they resolve assignments (see `domain.time_off`). Admins set anyone's away periods
and any roster's overrides; a person sets their own away periods; others get 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from domain.directory import (
    IDENT_PATTERN,
    AccessRole,
    Directory,
    Period,
    RosterOverride,
    TimeOff,
)
from domain.incident_directory import carried_by_incidents
from domain.playbook_diff import VersionDiff
from domain.policy_versions import (
    DIRECTORY,
    ROLLBACK_INVALID,
    TEXT_UNAVAILABLE,
    VERSION_NOT_FOUND,
    PolicyError,
    VersionStatus,
)
from domain.time_off import SetAway, SetOverrides, TimeOffRefused
from domain.validation import PlaybookInvalid

from ..auth import Principal
from ..deps import CurrentUser, PlaybookAdmin, Services, ServicesDep
from ..errors import ApiError, responses
from ..playbook_registry import directory_from_text
from ..policy_views import (
    ProposeBody,
    ReviewVoteBody,
    RollbackBody,
    VersionList,
    VersionOut,
    decide,
    diff,
    error_doc,
    get_version,
    list_versions,
    policy_error,
    read_yaml,
    store_of,
    version_out,
)
from .playbooks import DECIDE_ERRORS, PROPOSE_ERRORS, VersionNumber

router = APIRouter(prefix="/directory", tags=["directory"])

PROPOSE_BODY_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/yaml": {"schema": {"type": "string"},
                             "example": "people:\n  - id: ada-admin\n    name: Ada\n"
                                        "    access: [admin]\n"},
        "application/json": {"schema": ProposeBody.model_json_schema()},
    }}}


def _invalid(exc: PlaybookInvalid) -> RequestValidationError:
    return RequestValidationError([{"loc": (i.path,), "msg": i.message, "type": "directory"}
                                   for i in exc.issues])


@router.post("/versions", response_model=VersionOut, status_code=202,
             operation_id="proposeDirectory", openapi_extra=PROPOSE_BODY_DOC,
             summary="Propose a directory version; review starts with a dry run of every "
                     "active playbook against it",
             responses={**responses(401, 403, 413, 415, 422), **error_doc(*PROPOSE_ERRORS),
                        200: {"model": VersionOut,
                              "description": "the same text and number again"}})
async def propose_directory(request: Request, response: Response, user: PlaybookAdmin,
                            services: ServicesDep,
                            version: Annotated[int | None, Query(ge=1)] = None) -> VersionOut:
    raw, note = await read_yaml(request)
    try:
        directory_from_text(raw, "request")
    except PlaybookInvalid as exc:
        raise _invalid(exc) from None
    try:
        record = await store_of(services).propose(DIRECTORY, raw, user.id, number=version,
                                                  note=note)
    except PolicyError as exc:
        raise policy_error(exc) from None
    if record.status is not VersionStatus.proposed or record.author != user.id:
        response.status_code = 200
    return version_out(record)


@router.get("/versions", response_model=VersionList, operation_id="listDirVersions",
            summary="Every directory version, newest first",
            responses={**responses(401, 403), **error_doc(VERSION_NOT_FOUND)})
async def list_directory_versions(user: PlaybookAdmin, services: ServicesDep) -> VersionList:
    return await list_versions(store_of(services), DIRECTORY)


@router.get("/versions/{number}", response_model=VersionOut,
            operation_id="getDirectoryVersion",
            summary="One directory version: its text, status, dry-run report and votes",
            responses={**responses(401, 403, 422),
                       **error_doc(VERSION_NOT_FOUND, TEXT_UNAVAILABLE)})
async def get_directory_version(number: Annotated[int, Path(ge=1)], user: PlaybookAdmin,
                                services: ServicesDep) -> VersionOut:
    return await get_version(store_of(services), DIRECTORY, number)


@router.get("/diff", response_model=VersionDiff, operation_id="diffDirectory",
            summary="What changed between two directory versions: people, roles, rosters",
            responses={**responses(401, 403, 422),
                       **error_doc(VERSION_NOT_FOUND, TEXT_UNAVAILABLE)})
async def diff_directory_versions(user: PlaybookAdmin, services: ServicesDep,
                                  from_: Annotated[int, Query(alias="from", ge=1)],
                                  to: Annotated[int, Query(ge=1)]) -> VersionDiff:
    return await diff(store_of(services), DIRECTORY, from_, to)


@router.post("/versions/{number}/approve", response_model=VersionOut,
             operation_id="approveDirectory",
             summary="Approve a proposed directory version",
             responses={**responses(401, 403, 422), **error_doc(*DECIDE_ERRORS)})
async def approve_directory(number: VersionNumber, body: ReviewVoteBody, user: PlaybookAdmin,
                            services: ServicesDep) -> VersionOut:
    return await decide(services, DIRECTORY, number, user.id, True, body.comment)


@router.post("/versions/{number}/reject", response_model=VersionOut,
             operation_id="rejectDirectory",
             summary="Reject a proposed directory version (its author: withdraw it)",
             responses={**responses(401, 403, 422), **error_doc(*DECIDE_ERRORS)})
async def reject_directory(number: VersionNumber, body: ReviewVoteBody, user: PlaybookAdmin,
                           services: ServicesDep) -> VersionOut:
    return await decide(services, DIRECTORY, number, user.id, False, body.comment)


@router.post("/rollback", response_model=VersionOut, status_code=202,
             operation_id="rollbackDirectory",
             summary="Propose an earlier directory text again, as the next number",
             responses={**responses(401, 403, 422),
                        **error_doc(VERSION_NOT_FOUND, ROLLBACK_INVALID, TEXT_UNAVAILABLE,
                                  *PROPOSE_ERRORS)})
async def rollback_directory(body: RollbackBody, user: PlaybookAdmin,
                             services: ServicesDep) -> VersionOut:
    store = store_of(services)
    try:
        earlier = await store.version(DIRECTORY, body.to)
        record = await store.propose(DIRECTORY, earlier.text(), user.id, number=None,
                                     rollback_of=body.to,
                                     note=body.note or f"roll back to v{body.to}")
    except PolicyError as exc:
        raise policy_error(exc) from None
    return version_out(record)


# ---- time off: an operational overlay, applied at once ---------------------------------

PersonId = Annotated[str, Path(pattern=IDENT_PATTERN, examples=["lena-legal"])]
RosterId = Annotated[str, Path(pattern=IDENT_PATTERN, examples=["legal-oncall"])]
_TRIP: dict[str, Any] = {"start": "2026-12-24T00:00:00Z", "end": "2026-12-28T00:00:00Z",
         "reason": "holiday"}
_COVER: dict[str, Any] = {"start": "2026-12-26T18:00:00Z", "end": "2026-12-28T09:00:00Z",
          "member": "leo-legal", "reason": "Leo covers legal on-call this weekend"}


class AwayBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"periods": [_TRIP]}]})

    periods: list[Period] = Field(max_length=100,
                                  description="replaces the person's API-set away periods")


class OverridesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"overrides": [_COVER]}]})

    overrides: list[RosterOverride] = Field(
        max_length=100, description="replaces the roster's API-set overrides")


class TimeOffOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "overlay": {"revision": 2, "away": {"lena-legal": [_TRIP]},
                    "overrides": {"legal-oncall": [_COVER]},
                    "changes": [
                        {"revision": 1, "at": "2026-12-20T10:02:00Z", "actor": "lena-legal",
                         "what": "away lena-legal: 1 period(s)"},
                        {"revision": 2, "at": "2026-12-20T10:05:00Z", "actor": "ada-admin",
                         "what": "overrides legal-oncall: 1 override(s)"}]},
        "incidents_updated": 3}]})

    overlay: TimeOff = Field(description="admins: everything; others: their own away "
                                         "periods and every roster override")
    incidents_updated: int | None = Field(
        default=None, description="running incidents that received this revision")


def _is_admin(user: Principal) -> bool:
    return AccessRole.admin in user.access


def require_away_setter(services: Services, user: Principal, person_id: str) -> None:
    """403 unless `user` may set `person_id`'s time away (themselves, or an admin); 404 for
    someone the directory doesn't know."""
    if not _is_admin(user) and user.id != person_id:
        raise ApiError(403, f"only an admin or {person_id} may set {person_id}'s time off")
    if services.registry.person(person_id) is None:
        raise ApiError(404, f"the directory has no person {person_id!r}")


def _visible(overlay: TimeOff, user: Principal) -> TimeOff:
    if _is_admin(user):
        return overlay
    own = {user.id: overlay.away[user.id]} if user.id in overlay.away else {}
    return overlay.model_copy(update={"away": own, "changes": []})


async def _change(services: ServicesDep, req: SetAway | SetOverrides) -> TimeOffOut:
    try:
        overlay, sent = await services.intake.time_off.change(req)
    except TimeOffRefused as exc:
        raise ApiError(403, str(exc)) from None
    return TimeOffOut(overlay=overlay, incidents_updated=sent)


@router.get("/time-off", response_model=TimeOffOut, operation_id="getTimeOff",
            summary="The time-off overlay: away periods and roster overrides set through "
                    "the API, with who changed what and when",
            responses=responses(401, 403))
async def get_time_off(user: CurrentUser, services: ServicesDep) -> TimeOffOut:
    overlay = await services.intake.time_off.read()
    return TimeOffOut(overlay=_visible(overlay, user))


@router.put("/people/{person_id}/away", response_model=TimeOffOut, operation_id="setAway",
            summary="Set a person's away periods (admins: anyone; others: themselves); "
                    "applies at once, also to running incidents",
            responses=responses(401, 403, 404, 413, 422))
async def set_away(person_id: PersonId, body: AwayBody, user: CurrentUser,
                   services: ServicesDep) -> TimeOffOut:
    require_away_setter(services, user, person_id)
    return await _change(services, SetAway(actor=user.id, admin=_is_admin(user),
                                           person_id=person_id, periods=body.periods))


def _override_problem(directory: Directory, member: str) -> str | None:
    """Why `member` can't stand in on a roster (None if they can). Incidents carry only the
    people they may reach or authorize (`domain.incident_directory`)."""
    if not directory.has_person(member):
        return f"unknown person {member!r}"
    if not carried_by_incidents(directory, directory.person(member)):
        return (f"{member!r} can only report, so incidents never reach them: give them a "
                "role, a roster place or approver access in the directory first")
    return None


@router.put("/rosters/{roster_id}/overrides", response_model=TimeOffOut,
            operation_id="setRosterOverrides",
            summary="Set a roster's temporary overrides (admins); applies at once, also to "
                    "running incidents",
            responses=responses(401, 403, 404, 413, 422))
async def set_overrides(roster_id: RosterId, body: OverridesBody, user: CurrentUser,
                        services: ServicesDep) -> TimeOffOut:
    if not _is_admin(user):
        raise ApiError(403, "only an admin may change roster overrides")
    directory = services.registry.directory
    if not any(r.id == roster_id for r in directory.rosters):
        raise ApiError(404, f"the directory has no roster {roster_id!r}")
    problems = [(i, _override_problem(directory, o.member))
                for i, o in enumerate(body.overrides)]
    if any(problem for _, problem in problems):
        raise RequestValidationError([
            {"loc": ("body", "overrides", i, "member"), "msg": problem, "type": "directory"}
            for i, problem in problems if problem])
    return await _change(services, SetOverrides(actor=user.id, admin=True,
                                                roster_id=roster_id,
                                                overrides=body.overrides))
