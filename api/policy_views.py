"""HTTP shapes and shared steps of the version routes (playbooks and the directory).

Routes map HTTP to store calls: the rules (numbers, reviews, quorum) live in
`domain.policy_versions` and the workflows; errors come back as `PolicyError` codes and
are answered as `{"error": code, "detail": text}` with the status of `HTTP_STATUS`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.service import RPCError

from core.policy_store import PolicyStore
from domain.playbook_diff import VersionDiff, directory_diff, playbook_diff
from domain.policy_versions import (
    DIRECTORY,
    HTTP_STATUS,
    MAX_NOTE,
    PROPOSAL_CLOSED,
    PolicyError,
    ReviewState,
    VersionRecord,
    VersionStatus,
    describe_subject,
)

from .deps import Services
from .errors import ApiError, ErrorBody
from .schemas import MAX_YAML

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml",
                        "text/plain"})


class ProposeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"yaml": "id: viral-complaint\nname: Viral complaint\nversion: 3\nsteps: ...\n",
         "note": "Legal may now approve alone after 30 minutes"}]})

    yaml: str = Field(min_length=1, max_length=MAX_YAML)
    note: str = Field(default="", max_length=MAX_NOTE)


_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
_VERSION_EXAMPLE: dict[str, Any] = {
    "subject": "playbook:viral-complaint", "number": 3, "sha256": _SHA, "author": "ada-admin",
    "created_at": "2026-03-06T10:00:00Z", "note": "legal may approve alone after 30m",
    "status": "proposed", "bootstrap": False, "rollback_of": None,
    "proposal_id": "policy-catalog-crisis-incidents/change/playbook:viral-complaint/v3",
    "policy": "2 of admin, not the author", "activated_at": None, "superseded_at": None,
    "superseded_by": None, "review": {
        "proposal_id": "policy-catalog-crisis-incidents/change/playbook:viral-complaint/v3",
        "subject": "playbook:viral-complaint", "number": 3, "sha256": _SHA,
        "author": "ada-admin", "policy": "2 of admin, not the author",
        "eligible": ["ben-admin", "cat-admin"],
        "dry_run": {"passed": True, "scenarios": [{
            "scenario": "legal-silent-exec-rejects.yaml", "playbook": "viral-complaint",
            "passed": True, "error": None, "report": "DRY RUN of viral-complaint v3 ..."}],
            "problems": [], "note": "1 scenario(s) run"},
        "decisions": [{"actor": "ben-admin", "decision": "approve", "comment": "",
                       "at": "2026-03-06T10:05:00Z"}],
        "outcome": "pending", "reason": "", "decided_at": None},
    "yaml": "id: viral-complaint\nname: Viral complaint\nversion: 3\n...",
}


class ReviewVoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"comment": "checked the dry run: legal still vetoes"}]})

    comment: str = Field(default="", max_length=MAX_NOTE)


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"to": 2, "note": "v3 escalates too late"}]})

    to: int = Field(ge=1, description="the earlier version whose text is proposed again")
    note: str = Field(default="", max_length=MAX_NOTE)


class VersionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_VERSION_EXAMPLE]})

    subject: str
    number: int
    sha256: str
    author: str
    created_at: datetime
    note: str
    status: VersionStatus
    bootstrap: bool = Field(description="the shipped first version, active without review")
    rollback_of: int | None
    proposal_id: str | None
    policy: str | None = Field(description="who must approve, e.g. '2 of admin, not the "
                                           "author'")
    activated_at: datetime | None
    superseded_at: datetime | None
    superseded_by: int | None
    review: ReviewState | None = Field(
        description="the dry-run report, the votes and the outcome (live while proposed)")
    yaml: str | None = Field(default=None, description="the exact text (single version only)")


class VersionList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "subject": "playbook:viral-complaint", "active": 2,
        "items": [{**_VERSION_EXAMPLE, "yaml": None}]}]})

    subject: str
    active: int | None
    items: list[VersionOut]


def version_out(record: VersionRecord, *, with_text: bool = False,
                review: ReviewState | None = None) -> VersionOut:
    data = record.model_dump(exclude={"text_z", "text_ref", "review"})
    return VersionOut(**data, review=review or record.review,
                      yaml=record.text().decode("utf-8", "replace") if with_text else None)


def policy_error(exc: PolicyError) -> ApiError:
    return ApiError(HTTP_STATUS.get(exc.code, 409), exc.message, exc.code)


def store_of(services: Services) -> PolicyStore:
    store = services.registry.store
    if store is None:
        raise ApiError(501, "this API has no version store")
    return store


async def read_yaml(request: Request) -> tuple[bytes, str]:
    """The proposed text and change note: `application/yaml` (note in `?note=`) or JSON
    `{"yaml": ..., "note": ...}`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type == "application/json":
        try:
            body = ProposeBody.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None
        return body.yaml.encode("utf-8"), body.note
    if content_type in YAML_TYPES:
        if len(raw) > MAX_YAML:
            raise ApiError(422, f"the YAML text is longer than {MAX_YAML} bytes")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "the YAML text is not UTF-8") from None
        note = request.query_params.get("note", "")
        if len(note) > MAX_NOTE:
            raise ApiError(422, f"the note is longer than {MAX_NOTE} characters")
        return raw, note
    raise ApiError(415, "send the text as application/yaml, or JSON {\"yaml\": \"...\", "
                        "\"note\": \"...\"}")


async def list_versions(store: PolicyStore, subject: str) -> VersionList:
    records = await store.versions(subject)
    if not records:
        raise ApiError(404, f"{describe_subject(subject)} has no versions in the store",
                       "VersionNotFound")
    active = next((r.number for r in records if r.status is VersionStatus.active), None)
    return VersionList(subject=subject, active=active,
                       items=[version_out(r) for r in reversed(records)])


async def get_version(store: PolicyStore, subject: str, number: int) -> VersionOut:
    try:
        record = await store.version(subject, number)
    except PolicyError as exc:
        raise policy_error(exc) from None
    review = None
    if record.status is VersionStatus.proposed and record.proposal_id:
        review = await store.review(record.proposal_id)
    return version_out(record, with_text=True, review=review)


async def decide(services: Services, subject: str, number: int, actor: str, approve: bool,
                 comment: str) -> VersionOut:
    store = store_of(services)
    try:
        record = await store.version(subject, number)
        if record.status is not VersionStatus.proposed or record.proposal_id is None:
            raise PolicyError(PROPOSAL_CLOSED, f"{describe_subject(subject)} v{number} is "
                              f"{record.status}, not under review")
        await store.decide(record.proposal_id, actor, approve, comment)
    except PolicyError as exc:
        raise policy_error(exc) from None
    with contextlib.suppress(RPCError):  # the vote is in; the loop refreshes later anyway
        await services.registry.refresh()  # an activation applies to this API's next incident
    return await get_version(store, subject, number)


async def diff(store: PolicyStore, subject: str, from_: int, to: int) -> VersionDiff:
    try:
        a, b = await store.version(subject, from_), await store.version(subject, to)
    except PolicyError as exc:
        raise policy_error(exc) from None
    numbers, shas = (a.number, b.number), (a.sha256, b.sha256)
    if subject == DIRECTORY:
        return directory_diff(numbers, shas, a.text(), b.text())
    return playbook_diff(subject, numbers, shas, a.text(), b.text())


def error_doc(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the business codes a route answers, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS[code], []).append(code)
    return {status: {"model": ErrorBody, "description": "codes: " + ", ".join(names),
                     "content": {"application/json": {"example": {
                         "error": names[0], "detail": "..."}}}}
            for status, names in by_status.items()}
