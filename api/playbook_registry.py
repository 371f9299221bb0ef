"""The playbooks and the directory as the API sees them, re-read when their files change.

Each `playbooks_dir/*.yaml` file is parsed and validated against the directory with
`domain.loader`. Before every use the registry compares each file's mtime and size with the
last read, so an admin's edit applies to the *next* incident: running incidents keep the
snapshot they started with. A file that fails validation is skipped (and reported in
`problems`), so one bad edit never takes the other playbooks down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from domain.directory import Directory, Person
from domain.incident import DirectorySnapshot, PlaybookSnapshot
from domain.loader import load_directory, load_playbook
from domain.validation import PlaybookInvalid

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


@dataclass
class PlaybookRegistry:
    playbooks_dir: Path
    directory_file: Path
    _directory: DirectorySnapshot | None = None
    _directory_stamp: _Stamp | None = None
    _files: dict[Path, _Entry] = field(default_factory=dict)

    # ---- directory ------------------------------------------------------------------

    def directory_snapshot(self) -> DirectorySnapshot:
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

    def person(self, person_id: str) -> Person | None:
        directory = self.directory
        return directory.person(person_id) if directory.has_person(person_id) else None

    # ---- playbooks ------------------------------------------------------------------

    def _refresh(self) -> None:
        directory = self.directory_snapshot()
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
        """Every valid playbook, by id; if two files share an id the newer version wins."""
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
        """File name -> why it was skipped."""
        self._refresh()
        return {p.name: e.problem for p, e in sorted(self._files.items()) if e.problem}
