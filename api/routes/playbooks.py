"""Playbooks: list the active ones, read one (with a Mermaid graph), validate a draft, and
the reviewed version store: propose, history, one version, diff, approve, reject, roll back.

Writes need the admin role; the change-approval workflow checks each reviewer again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError
from temporalio.service import RPCError

from domain.directory import IDENT_PATTERN
from domain.incident import PlaybookSnapshot
from domain.loader import parse_yaml, snapshot_playbook
from domain.playbook import Playbook
from domain.playbook_diff import VersionDiff
from domain.policy_versions import (
    ALREADY_DECIDED,
    AUTHOR_CANNOT_APPROVE,
    CATALOG_FULL,
    DRY_RUN_FAILED,
    DRY_RUN_PENDING,
    NO_CHANGE,
    NOT_AN_ADMIN,
    NOT_AN_APPROVER,
    POLICY_UNSATISFIABLE,
    PROPOSAL_CLOSED,
    PROPOSAL_OPEN,
    ROLLBACK_INVALID,
    STORE_NOT_SEEDED,
    TEXT_UNAVAILABLE,
    VERSION_NOT_FOUND,
    VERSION_OUTDATED,
    VERSION_TAKEN,
    PolicyError,
    VersionStatus,
    playbook_subject,
    renumber,
)
from domain.validation import PlaybookInvalid

from ..deps import PlaybookAdmin, PlaybookReader, RegistryDep, ServicesDep
from ..errors import ApiError, responses
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
from ..schemas import (
    MAX_YAML,
    PlaybookDetail,
    PlaybookList,
    PlaybookSummary,
    ValidateBody,
    ValidateOut,
    ValidationIssue,
)

router = APIRouter(prefix="/playbooks", tags=["playbooks"])

PROPOSE_ERRORS = (VERSION_TAKEN, VERSION_OUTDATED, PROPOSAL_OPEN, NO_CHANGE, STORE_NOT_SEEDED,
                  POLICY_UNSATISFIABLE, CATALOG_FULL, NOT_AN_ADMIN)
DECIDE_ERRORS = (VERSION_NOT_FOUND, PROPOSAL_CLOSED, DRY_RUN_PENDING, DRY_RUN_FAILED,
                 AUTHOR_CANNOT_APPROVE, NOT_AN_APPROVER, ALREADY_DECIDED)
VersionNumber = Annotated[int, Path(ge=1, examples=[3])]

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml",
                        "text/plain"})
PlaybookId = Annotated[str, Path(pattern=IDENT_PATTERN, examples=["viral-complaint"])]


def _summary(snapshot: PlaybookSnapshot) -> dict[str, Any]:
    definition = snapshot.definition
    return {"id": snapshot.id, "name": definition.name, "version": snapshot.version,
            "sha256": snapshot.sha256, "description": definition.description,
            "severities": list(definition.severities)}


def _mermaid_renderer() -> Callable[[Playbook], str] | None:
    """`domain.graph.mermaid`, if this build has it."""
    try:
        module = importlib.import_module("domain.graph")
    except ModuleNotFoundError as exc:
        if exc.name == "domain.graph":
            return None
        raise
    render: Callable[[Playbook], str] | None = getattr(module, "mermaid", None)
    return render


class ActivePlaybookList(PlaybookList):
    source: str = Field(description="`store`: the active reviewed versions; `files`: the "
                                    "version store is not seeded yet, files are served")


@router.get("", response_model=ActivePlaybookList, operation_id="listPlaybooks",
            summary="Every active playbook (the version new incidents take)",
            responses=responses(401, 403))
async def list_playbooks(user: PlaybookReader, registry: RegistryDep) -> ActivePlaybookList:
    return ActivePlaybookList(items=[PlaybookSummary(**_summary(s)) for s in registry.all()],
                              source=registry.source)


@router.get("/{playbook_id}", response_model=PlaybookDetail, operation_id="getPlaybook",
            summary="One playbook (active, or `?version=N`): definition and Mermaid flowchart",
            responses=responses(401, 403, 404, 422, 501))
async def get_playbook(playbook_id: PlaybookId, user: PlaybookReader, registry: RegistryDep,
                       services: ServicesDep,
                       version: Annotated[int | None, Query(ge=1)] = None) -> PlaybookDetail:
    snapshot = registry.get(playbook_id)
    if version is not None and (snapshot is None or snapshot.version != version):
        try:
            record = await store_of(services).version(playbook_subject(playbook_id), version)
        except PolicyError as exc:
            raise policy_error(exc) from None
        definition = Playbook.model_validate(parse_yaml(record.text(), "version"))
        snapshot = PlaybookSnapshot(id=playbook_id, version=record.number,
                                    sha256=record.sha256, definition=definition)
    if snapshot is None:
        raise ApiError(404, f"no playbook {playbook_id!r}")
    render = _mermaid_renderer()
    if render is None:
        raise ApiError(501, "this build cannot draw playbook graphs (domain.graph missing)")
    return PlaybookDetail(**_summary(snapshot), definition=snapshot.definition,
                          mermaid=render(snapshot.definition))


async def _yaml_text(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type == "application/json":
        try:
            return ValidateBody.model_validate_json(raw).yaml
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None
    if content_type in YAML_TYPES:
        if len(raw) > MAX_YAML:
            raise ApiError(422, f"the YAML text is longer than {MAX_YAML} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "the YAML text is not UTF-8") from None
    raise ApiError(415, "send the playbook as application/yaml, or JSON {\"yaml\": \"...\"}")


VALIDATE_BODY_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/yaml": {"schema": {"type": "string"}, "example": (
            "id: viral-complaint\nname: Viral complaint\nversion: 2\nsteps:\n"
            "  - id: tell-social\n    notify:\n      to: [{role: social}]\n"
            "      message: \"{{ incident.title }}\"\n")},
        "application/json": {"schema": ValidateBody.model_json_schema(),
                             "example": {"yaml": "id: x\nname: X\nversion: 1\nsteps: []\n"}},
    }}}


@router.post("/validate", response_model=ValidateOut, openapi_extra=VALIDATE_BODY_DOC,
             operation_id="validatePlaybook",
             summary="Validate a playbook against the directory; errors carry their paths",
             responses=responses(401, 403, 413, 415, 422))
async def validate_playbook(request: Request, user: PlaybookAdmin,
                            registry: RegistryDep) -> ValidateOut:
    text = await _yaml_text(request)
    try:
        snapshot = snapshot_playbook(text.encode(), registry.directory, "request")
    except PlaybookInvalid as exc:
        return ValidateOut(valid=False, playbook=None, errors=[
            ValidationIssue(path=i.path, message=i.message) for i in exc.issues])
    taken = await _number_taken(registry, snapshot)
    if taken is not None:
        return ValidateOut(valid=False, playbook=snapshot.ref(),
                           errors=[ValidationIssue(path="version", message=taken)])
    return ValidateOut(valid=True, errors=[], playbook=snapshot.ref())


async def _number_taken(registry: RegistryDep, snapshot: PlaybookSnapshot) -> str | None:
    """Why this text can't be published under its number, if the store already has it."""
    if registry.store is None or registry.source != "store":
        return None
    try:
        versions = await registry.store.versions(playbook_subject(snapshot.id))
    except RPCError:
        return None  # the store is unreachable: validation still answers
    same = next((v for v in versions if v.number == snapshot.version), None)
    if same is None or same.sha256 == snapshot.sha256:
        return None
    highest = max(v.number for v in versions)
    return (f"{snapshot.id} v{snapshot.version} already exists ({same.status}) with a "
            f"different text: bump `version` to {highest + 1}")


# ---- the version store ------------------------------------------------------------------

PROPOSE_BODY_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/yaml": {"schema": {"type": "string"},
                             "example": VALIDATE_BODY_DOC["requestBody"]["content"][
                                 "application/yaml"]["example"]},
        "application/json": {"schema": ProposeBody.model_json_schema()},
    }}}


def _invalid(exc: PlaybookInvalid) -> RequestValidationError:
    """422 `ValidationError` with one `{path, message}` per problem, as validate shows."""
    return RequestValidationError([{"loc": (i.path,), "msg": i.message, "type": "playbook"}
                                   for i in exc.issues])


@router.post("", response_model=VersionOut, status_code=202, operation_id="proposePlaybook",
             openapi_extra=PROPOSE_BODY_DOC,
             summary="Propose a playbook version (its `version:` is its number); review "
                     "starts with a dry run",
             responses={**responses(401, 403, 413, 415, 422), **error_doc(*PROPOSE_ERRORS),
                        200: {"model": VersionOut,
                              "description": "the same text again: the existing version"}})
async def propose_playbook(request: Request, response: Response, user: PlaybookAdmin,
                           registry: RegistryDep, services: ServicesDep) -> VersionOut:
    raw, note = await read_yaml(request)
    try:
        snapshot = snapshot_playbook(raw, registry.directory, "request")
    except PlaybookInvalid as exc:
        raise _invalid(exc) from None
    if snapshot.id == "directory":
        raise ApiError(422, "`directory` is reserved for the directory: choose another id")
    try:
        record = await store_of(services).propose(
            playbook_subject(snapshot.id), raw, user.id, number=snapshot.version, note=note)
    except PolicyError as exc:
        raise policy_error(exc) from None
    if record.status is not VersionStatus.proposed or record.author != user.id:
        response.status_code = 200
    return version_out(record)


@router.get("/{playbook_id}/versions", response_model=VersionList,
            operation_id="listPlaybookVersions",
            summary="Every version of a playbook, newest first, with sha256, status and review",
            responses={**responses(401, 403, 422), **error_doc(VERSION_NOT_FOUND)})
async def list_playbook_versions(playbook_id: PlaybookId, user: PlaybookReader,
                                 services: ServicesDep) -> VersionList:
    return await list_versions(store_of(services), playbook_subject(playbook_id))


@router.get("/{playbook_id}/versions/{number}", response_model=VersionOut,
            operation_id="getPlaybookVersion",
            summary="One version: its exact text, status, dry-run report and votes",
            responses={**responses(401, 403, 422),
                       **error_doc(VERSION_NOT_FOUND, TEXT_UNAVAILABLE)})
async def get_playbook_version(playbook_id: PlaybookId, number: VersionNumber,
                               user: PlaybookReader, services: ServicesDep) -> VersionOut:
    return await get_version(store_of(services), playbook_subject(playbook_id), number)


@router.get("/{playbook_id}/diff", response_model=VersionDiff,
            operation_id="diffPlaybookVersions",
            summary="What changed between two versions: unified diff, steps, quorum rules, "
                    "escalation tiers",
            responses={**responses(401, 403, 422),
                       **error_doc(VERSION_NOT_FOUND, TEXT_UNAVAILABLE)})
async def diff_playbook_versions(
        playbook_id: PlaybookId, user: PlaybookReader, services: ServicesDep,
        from_: Annotated[int, Query(alias="from", ge=1)],
        to: Annotated[int, Query(ge=1)]) -> VersionDiff:
    return await diff(store_of(services), playbook_subject(playbook_id), from_, to)


@router.post("/{playbook_id}/versions/{number}/approve", response_model=VersionOut,
             operation_id="approvePlaybookProposal",
             summary="Approve a proposed version (the change policy's quorum activates it)",
             responses={**responses(401, 403, 422), **error_doc(*DECIDE_ERRORS)})
async def approve_playbook(playbook_id: PlaybookId, number: VersionNumber, body: ReviewVoteBody,
                           user: PlaybookAdmin, services: ServicesDep) -> VersionOut:
    return await decide(services, playbook_subject(playbook_id), number, user.id, True,
                        body.comment)


@router.post("/{playbook_id}/versions/{number}/reject", response_model=VersionOut,
             operation_id="rejectPlaybookProposal",
             summary="Reject a proposed version (its author: withdraw it)",
             responses={**responses(401, 403, 422), **error_doc(*DECIDE_ERRORS)})
async def reject_playbook(playbook_id: PlaybookId, number: VersionNumber, body: ReviewVoteBody,
                          user: PlaybookAdmin, services: ServicesDep) -> VersionOut:
    return await decide(services, playbook_subject(playbook_id), number, user.id, False,
                        body.comment)


@router.post("/{playbook_id}/rollback", response_model=VersionOut, status_code=202,
             operation_id="rollbackPlaybook",
             summary="Propose an earlier version's text again, as the next number, for review",
             responses={**responses(401, 403, 422),
                        **error_doc(VERSION_NOT_FOUND, ROLLBACK_INVALID, TEXT_UNAVAILABLE,
                                  *PROPOSE_ERRORS)})
async def rollback_playbook(playbook_id: PlaybookId, body: RollbackBody, user: PlaybookAdmin,
                            registry: RegistryDep, services: ServicesDep) -> VersionOut:
    store = store_of(services)
    subject = playbook_subject(playbook_id)
    try:
        earlier = await store.version(subject, body.to)
        highest = max(v.number for v in await store.versions(subject))
        raw = renumber(earlier.text(), highest + 1)
        try:
            snapshot_playbook(raw, registry.directory, f"v{body.to}")
        except PlaybookInvalid as exc:
            raise _invalid(exc) from None
        record = await store.propose(
            subject, raw, user.id, number=highest + 1, rollback_of=body.to,
            note=body.note or f"roll back to v{body.to}")
    except PolicyError as exc:
        raise policy_error(exc) from None
    return version_out(record)
