"""The client side of the version store: calls into `PolicyCatalogWorkflow` and reviews.

Used by the API (routes and registry), the CLI and the worker's first start. The catalog is
created on first use (update-with-start), so nothing needs to exist beforehand.

`seed_shipped_versions(client, settings)` publishes the shipped directory and
`playbooks/*.yaml` as the active first version of each subject (bootstrap: no review,
recorded as such). Later starts change nothing: a shipped file that differs from the active
version is reported, never activated; propose it for review instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings
from core.with_start import settle_start
from domain.loader import load_directory, parse_yaml, sha256
from domain.policy_versions import (
    DIRECTORY,
    HTTP_STATUS,
    TEXT_UNAVAILABLE,
    VERSION_NOT_FOUND,
    ActiveSet,
    BootstrapRequest,
    CatalogStart,
    ChangeDecision,
    PolicyError,
    ProposeRequest,
    ReviewState,
    VersionRecord,
    describe_subject,
    pack_text,
    playbook_subject,
    unpack_text,
)
from domain.validation import PlaybookInvalid

log = structlog.get_logger("crisis.policy")
KEPT_TEXTS_CACHED = 64  # texts read from PolicyText workflows, kept per process


def catalog_id(settings: Settings) -> str:
    return settings.policy_catalog_id or f"policy-catalog-{settings.task_queue}"


def _translate(exc: WorkflowUpdateFailedError) -> Exception:
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in HTTP_STATUS:
        return PolicyError(cause.type, cause.message)
    return exc


def _not_found(exc: RPCError) -> bool:
    return exc.status == RPCStatusCode.NOT_FOUND


class PolicyStore:
    def __init__(self, client: Client, settings: Settings, *,
                 continue_as_new_after_events: int = 4000) -> None:
        self.client = client
        self.continue_after = continue_as_new_after_events
        self.catalog_id = catalog_id(settings)
        self.task_queue = settings.task_queue
        self.policy = settings.change_policy
        self.public_url = settings.public_url
        self._texts: dict[str, str] = {}  # sha256 -> text kept by a PolicyText workflow

    def _catalog(self) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(self.catalog_id)

    def _start(self) -> WithStartWorkflowOperation[Any, Any]:
        return WithStartWorkflowOperation(
            "PolicyCatalog", CatalogStart(catalog_id=self.catalog_id,
                                          continue_as_new_after_events=self.continue_after),
            id=self.catalog_id,
            task_queue=self.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)

    async def _update(self, name: str, arg: Any) -> VersionRecord:
        operation = self._start()
        try:
            result = await self.client.execute_update_with_start_workflow(
                name, arg, start_workflow_operation=operation, result_type=VersionRecord)
        except BaseException as exc:
            await settle_start(operation)
            if isinstance(exc, WorkflowUpdateFailedError):
                raise _translate(exc) from None
            raise
        assert isinstance(result, VersionRecord)
        return result

    # ---- writes -------------------------------------------------------------------------

    async def propose(self, subject: str, raw: bytes, author: str, *, number: int | None,
                      note: str = "", rollback_of: int | None = None) -> VersionRecord:
        return await self._update("propose", ProposeRequest(
            subject=subject, number=number, sha256=sha256(raw), text_z=pack_text(raw),
            author=author, note=note, rollback_of=rollback_of, policy=self.policy,
            public_url=self.public_url))

    async def bootstrap(self, subject: str, raw: bytes, number: int) -> VersionRecord:
        return await self._update("bootstrap", BootstrapRequest(
            subject=subject, number=number, sha256=sha256(raw), text_z=pack_text(raw)))

    async def decide(self, proposal_id: str, actor: str, approve: bool,
                     comment: str = "") -> ReviewState:
        handle = self.client.get_workflow_handle(proposal_id)
        try:
            result = await handle.execute_update(
                "decide", ChangeDecision(actor=actor, approve=approve, comment=comment),
                result_type=ReviewState)
        except WorkflowUpdateFailedError as exc:
            raise _translate(exc) from None
        except RPCError as exc:
            if _not_found(exc):
                raise PolicyError(VERSION_NOT_FOUND, f"no review {proposal_id}") from None
            raise
        assert isinstance(result, ReviewState)
        return result

    # ---- reads ----------------------------------------------------------------------------

    async def _query(self, handle: WorkflowHandle[Any, Any], name: str, args: list[Any],
                     result_type: type) -> Any:
        try:
            return await handle.query(name, args=args, result_type=result_type)
        except RPCError as exc:
            if _not_found(exc):
                return None
            raise
        except WorkflowQueryFailedError as exc:
            if "not found" in str(exc).lower():
                return None
            raise

    async def active(self) -> ActiveSet | None:
        """The active version of every subject; None if the catalog doesn't exist yet."""
        result: ActiveSet | None = await self._query(self._catalog(), "active", [], ActiveSet)
        return result

    async def versions(self, subject: str) -> list[VersionRecord]:
        result: list[VersionRecord] | None = await self._query(
            self._catalog(), "versions", [subject], list[VersionRecord])
        return result or []

    async def version(self, subject: str, number: int) -> VersionRecord:
        """One version with its text (`number` 0: the active one), read from the workflow
        that keeps it when the catalog keeps only its reference."""
        result: VersionRecord | None = await self._query(
            self._catalog(), "version", [subject, number], VersionRecord)
        if result is None:
            which = f"v{number}" if number else "an active version"
            raise PolicyError(VERSION_NOT_FOUND, f"{describe_subject(subject)} has no {which}")
        if not result.text_z and result.text_ref:
            result = result.model_copy(update={"text_z": await self._kept_text(result)})
        return result

    async def _kept_text(self, record: VersionRecord) -> str:
        """The text a `PolicyText` workflow keeps for `record`, checked against its sha256
        (texts never change, so each is read once per process)."""
        assert record.text_ref is not None
        cached = self._texts.get(record.sha256)
        if cached is not None:
            return cached
        text_z: str | None = await self._query(
            self.client.get_workflow_handle(record.text_ref), "text", [], str)
        if text_z is None or sha256(unpack_text(text_z)) != record.sha256:
            raise PolicyError(TEXT_UNAVAILABLE, (
                f"the text of {describe_subject(record.subject)} v{record.number} is missing "
                f"or altered in {record.text_ref}"))
        if len(self._texts) >= KEPT_TEXTS_CACHED:
            self._texts.pop(next(iter(self._texts)))
        self._texts[record.sha256] = text_z
        return text_z

    async def review(self, proposal_id: str) -> ReviewState | None:
        """The live state of a review (dry run, votes); None once the review is gone."""
        result: ReviewState | None = await self._query(
            self.client.get_workflow_handle(proposal_id), "review", [], ReviewState)
        return result


async def seed_shipped_versions(client: Client, settings: Settings) -> list[str]:
    """Publish the shipped directory and playbooks as the first, active version of each
    subject that has none yet (bootstrap: no review). Returns one line per file."""
    store = PolicyStore(client, settings)
    lines: list[str] = []
    directory_raw = settings.directory_file.read_bytes()
    directory = load_directory(settings.directory_file)
    # Playbooks first, the directory last: the API switches from files to the store once
    # the store has an active directory, so every shipped playbook must already be there
    # (seen: a first start answering `UnknownPlaybook viral-complaint` in between).
    for path in sorted(settings.playbooks_dir.glob("*.yaml")):
        raw = path.read_bytes()
        try:
            from domain.loader import snapshot_playbook

            snapshot = snapshot_playbook(raw, directory.definition, str(path))
        except PlaybookInvalid as exc:
            lines.append(f"{path.name}: skipped, invalid: {exc}")
            continue
        record = await store.bootstrap(playbook_subject(snapshot.id), raw, snapshot.version)
        lines.append(_seed_line(path, record, snapshot.sha256))
    record = await store.bootstrap(DIRECTORY, directory_raw, 1)
    lines.insert(0, _seed_line(settings.directory_file, record, directory.sha256))
    for line in lines:
        log.info("policy_seed", result=line)
    return lines


def _seed_line(path: Path, record: VersionRecord, file_sha: str) -> str:
    what = describe_subject(record.subject)
    if record.sha256 == file_sha and record.bootstrap and record.status == "active":
        return f"{path.name}: {what} v{record.number} active (sha256 {record.sha256[:12]})"
    if record.sha256 == file_sha:
        return f"{path.name}: {what} v{record.number} is {record.status}"
    return (f"{path.name}: differs from {what} v{record.number} ({record.status}); not "
            "activated: propose it for review (`crisis playbook publish`)")


def parse_number(raw: bytes) -> int | None:
    """The `version:` of a playbook text, if it has a readable one."""
    try:
        data = parse_yaml(raw, "playbook")
    except PlaybookInvalid:
        return None
    value = data.get("version") if isinstance(data, dict) else None
    return value if isinstance(value, int) else None
