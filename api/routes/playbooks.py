"""Playbooks: list, read (with a Mermaid graph), and validate a draft."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from domain.directory import IDENT_PATTERN
from domain.incident import PlaybookSnapshot
from domain.loader import snapshot_playbook
from domain.playbook import Playbook
from domain.validation import PlaybookInvalid

from ..deps import PlaybookAdmin, PlaybookReader, RegistryDep
from ..errors import ApiError, responses
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


@router.get("", response_model=PlaybookList, summary="Every valid playbook (newest version)",
            responses=responses(401, 403))
async def list_playbooks(user: PlaybookReader, registry: RegistryDep) -> PlaybookList:
    return PlaybookList(items=[PlaybookSummary(**_summary(s)) for s in registry.all()])


@router.get("/{playbook_id}", response_model=PlaybookDetail,
            summary="One playbook: its definition and a Mermaid flowchart",
            responses=responses(401, 403, 404, 422, 501))
async def get_playbook(playbook_id: PlaybookId, user: PlaybookReader,
                       registry: RegistryDep) -> PlaybookDetail:
    snapshot = registry.get(playbook_id)
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
    return ValidateOut(valid=True, errors=[], playbook=snapshot.ref())
