"""The directory (people, roles, rosters) as reviewed policy: the same flow as playbooks.

A directory text has no `version:` key, so the store numbers versions itself (the next
number); give `?version=N` (or JSON `"version"`) to insist on a number, which is refused
if another text holds it. The dry run checks every active playbook against the proposed
directory and runs their scenarios with it; reviewers come from the *active* directory.
Reads are for admins only: the directory holds contact addresses and webhook URLs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from domain.playbook_diff import VersionDiff
from domain.policy_versions import (
    DIRECTORY,
    ROLLBACK_INVALID,
    VERSION_NOT_FOUND,
    PolicyError,
    VersionStatus,
)
from domain.validation import PlaybookInvalid

from ..deps import PlaybookAdmin, ServicesDep
from ..errors import responses
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
            responses={**responses(401, 403, 422), **error_doc(VERSION_NOT_FOUND)})
async def get_directory_version(number: Annotated[int, Path(ge=1)], user: PlaybookAdmin,
                                services: ServicesDep) -> VersionOut:
    return await get_version(store_of(services), DIRECTORY, number)


@router.get("/diff", response_model=VersionDiff, operation_id="diffDirectory",
            summary="What changed between two directory versions: people, roles, rosters",
            responses={**responses(401, 403, 422), **error_doc(VERSION_NOT_FOUND)})
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
                        **error_doc(VERSION_NOT_FOUND, ROLLBACK_INVALID, *PROPOSE_ERRORS)})
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
