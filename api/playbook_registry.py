"""The playbooks and the directory as the API sees them: the active versions of the store.

**Store mode.** The version store (`workflows.catalog`, in Temporal) says which version of
each playbook and of the directory is active. The registry keeps that set in memory,
re-reads it every `policy_refresh_seconds` (and at once after a write through this API),
and caches each version's parsed snapshot by sha256 (a version never changes). New
incidents take the active version; running incidents keep the snapshot they started with.

**File mode (fallback).** Until the store answers with an active directory (not seeded yet,
or Temporal unreachable since this process started), the registry serves the files, as
before: each `playbooks_dir/*.yaml` is parsed and validated against the directory file, and
re-read when its mtime or size changes; a file that fails validation is skipped (and
reported in `problems`). `source` says which mode is in use, and the switch is logged.
Once the store has answered, the registry never falls back to unreviewed files: if Temporal
goes away it keeps the last active set it read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import structlog
from pydantic import ValidationError
from temporalio.service import RPCError

from domain.directory import Directory, Person
from domain.incident import DirectorySnapshot, PlaybookSnapshot
from domain.incident_directory import incident_snapshot
from domain.loader import load_directory, load_playbook, parse_yaml, sha256, snapshot_playbook
from domain.policy_versions import DIRECTORY, PLAYBOOK_PREFIX, ActiveSet
from domain.validation import PlaybookInvalid, issues_from_validation_error

if TYPE_CHECKING:
    from core.policy_store import PolicyStore

Source = Literal["store", "files"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _Stamp(stat.st_mtime_ns, stat.st_size)


@dataclass
class _Entry:
    stamp: _Stamp
    directory_sha: str
    snapshot: PlaybookSnapshot | None
    problem: str | None = None


def directory_from_text(raw: bytes, source: str = "directory") -> DirectorySnapshot:
    try:
        definition = Directory.model_validate(parse_yaml(raw, source))
    except ValidationError as exc:
        raise PlaybookInvalid(issues_from_validation_error(exc), source) from None
    return DirectorySnapshot(sha256=sha256(raw), definition=definition)


@dataclass
class _Active:
    """The store's active set, parsed."""

    revision: int
    directory: DirectorySnapshot
    playbooks: dict[str, PlaybookSnapshot]
    problems: dict[str, str]


@dataclass
class PlaybookRegistry:
    playbooks_dir: Path
    directory_file: Path
    store: PolicyStore | None = None
    refresh_seconds: float = 1.0
    _directory: DirectorySnapshot | None = None
    _directory_stamp: _Stamp | None = None
    _files: dict[Path, _Entry] = field(default_factory=dict)
    _active: _Active | None = None
    _by_sha: dict[str, PlaybookSnapshot | DirectorySnapshot] = field(default_factory=dict)
    # (directory sha256, playbook sha256) -> what an incident of that playbook carries
    _for_incidents: dict[tuple[str, str], DirectorySnapshot] = field(default_factory=dict)
    _people: tuple[DirectorySnapshot, Mapping[str, Person]] | None = None  # by id, per version
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def source(self) -> Source:
        return "store" if self._active is not None else "files"

    # ---- the store ------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Re-read the active set from the store; True if the store has one."""
        if self.store is None:
            return False
        async with self._lock:
            active = await self.store.active()
            if active is None or DIRECTORY not in active.subjects:
                return False
            if self._active is not None and self._active.revision == active.revision:
                return True
            was = self.source
            self._active = await self._load(active)
            if was != "store":
                log.info("playbook_source_store", revision=active.revision,
                         playbooks=sorted(self._active.playbooks))
            return True

    async def _text(self, subject: str, number: int) -> bytes:
        assert self.store is not None
        return (await self.store.version(subject, number)).text()

    async def _load(self, active: ActiveSet) -> _Active:
        ref = active.subjects[DIRECTORY]
        directory = self._by_sha.get(ref.sha256)
        if not isinstance(directory, DirectorySnapshot):
            directory = directory_from_text(await self._text(DIRECTORY, ref.number),
                                            f"directory v{ref.number}")
            self._by_sha[ref.sha256] = directory
        playbooks: dict[str, PlaybookSnapshot] = {}
        problems: dict[str, str] = {}
        for subject, pref in sorted(active.subjects.items()):
            if not subject.startswith(PLAYBOOK_PREFIX):
                continue
            key = f"{pref.sha256}:{directory.sha256}"  # validated against this directory
            cached = self._by_sha.get(key)
            if not isinstance(cached, PlaybookSnapshot):
                raw = await self._text(subject, pref.number)
                try:
                    cached = snapshot_playbook(raw, directory.definition,
                                               f"{subject} v{pref.number}")
                except PlaybookInvalid as exc:
                    log.error("active_playbook_invalid", subject=subject, error=str(exc))
                    problems[f"{subject} v{pref.number}"] = str(exc)
                    continue
                self._by_sha[key] = cached
            playbooks[cached.id] = cached
        return _Active(active.revision, directory, playbooks, problems)

    async def start(self) -> None:
        """Read the store once (briefly: the API starts even if Temporal is down), then keep
        the active set fresh in the background."""
        if self.store is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._refresh_logged(), timeout=3.0)
        if self._active is None:
            log.warning("playbook_source_files", reason="the version store has no active "
                        "directory yet (not seeded or unreachable): serving playbooks and the "
                        "directory from files, unreviewed")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except (RPCError, RuntimeError, OSError) as exc:
            log.debug("policy_store_unreachable", error=str(exc))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self._refresh_logged()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the last active set; never kill the loop
                log.exception("policy_refresh_failed")

    # ---- directory ------------------------------------------------------------------

    def directory_snapshot(self) -> DirectorySnapshot:
        if self._active is not None:
            return self._active.directory
        return self.file_directory_snapshot()

    def incident_directory(self, playbook: PlaybookSnapshot) -> DirectorySnapshot:
        """The active directory as an incident of `playbook` carries it: the people it can
        reach or must authorize, under the full version's sha256
        (`domain.incident_directory`)."""
        full = self.directory_snapshot()
        key = (full.sha256, playbook.sha256)
        found = self._for_incidents.get(key)
        if found is None:
            if len(self._for_incidents) >= 64:  # old versions: start over
                self._for_incidents.clear()
            found = self._for_incidents[key] = incident_snapshot(full, playbook)
        return found

    def file_directory_snapshot(self) -> DirectorySnapshot:
        stamp = _stamp(self.directory_file)
        if stamp is None:
            raise FileNotFoundError(f"directory file {self.directory_file} does not exist")
        if self._directory is None or stamp != self._directory_stamp:
            try:
                self._directory = load_directory(self.directory_file)
                self._directory_stamp = stamp
            except PlaybookInvalid:
                if self._directory is None:
                    raise
                log.error("directory_invalid_keeping_previous", file=str(self.directory_file))
        return self._directory

    @property
    def directory(self) -> Directory:
        return self.directory_snapshot().definition

    def people_by_id(self) -> Mapping[str, Person]:
        """The active directory's people by id, built once per version: every authenticated
        request and every page looks people up, and walking a directory of 5,000 people
        took 0.7-1.4 ms each time."""
        snapshot = self.directory_snapshot()
        if self._people is None or self._people[0] is not snapshot:
            self._people = (snapshot, MappingProxyType(
                {p.id: p for p in snapshot.definition.people}))
        return self._people[1]

    def person(self, person_id: str) -> Person | None:
        """The directory person `person_id` (None if unknown)."""
        return self.people_by_id().get(person_id)

    def access_of(self, person_id: str) -> list[str]:
        """The API roles of a person (everyone is a reporter), as signed into commands."""
        person = self.person(person_id)
        return sorted({"reporter", *(str(a) for a in person.access)}) if person else []

    # ---- playbooks ------------------------------------------------------------------

    def _refresh(self) -> None:
        directory = self.file_directory_snapshot()
        present = set(sorted(self.playbooks_dir.glob("*.yaml")))
        for gone in set(self._files) - present:
            del self._files[gone]
        for path in present:
            stamp = _stamp(path)
            if stamp is None:
                self._files.pop(path, None)
                continue
            entry = self._files.get(path)
            if entry and entry.stamp == stamp and entry.directory_sha == directory.sha256:
                continue
            try:
                snapshot = load_playbook(path, directory.definition)
                self._files[path] = _Entry(stamp, directory.sha256, snapshot)
            except (PlaybookInvalid, OSError) as exc:
                log.error("playbook_invalid", file=str(path), error=str(exc))
                self._files[path] = _Entry(stamp, directory.sha256, None, str(exc))

    def all(self) -> list[PlaybookSnapshot]:
        """Every active playbook, by id (file mode: every valid file; if two files share an id
        the newer version wins)."""
        if self._active is not None:
            return [self._active.playbooks[k] for k in sorted(self._active.playbooks)]
        self._refresh()
        best: dict[str, PlaybookSnapshot] = {}
        for entry in self._files.values():
            snap = entry.snapshot
            if snap is not None and (snap.id not in best or snap.version > best[snap.id].version):
                best[snap.id] = snap
        return [best[k] for k in sorted(best)]

    def get(self, playbook_id: str) -> PlaybookSnapshot | None:
        return next((p for p in self.all() if p.id == playbook_id), None)

    def problems(self) -> dict[str, str]:
        """File name (store mode: subject and version) -> why it was skipped."""
        if self._active is not None:
            return dict(self._active.problems)
        self._refresh()
        return {p.name: e.problem for p, e in sorted(self._files.items()) if e.problem}
