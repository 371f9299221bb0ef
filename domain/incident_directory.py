"""The part of the directory an incident carries: the people it can reach or must authorize.

Every API token maps to a directory person, so the directory lists everyone who may report,
down to the warehouse worker: thousands of people in a real organisation. An incident's
start input carried the whole directory: with 5,000 people who only report, 1.3 MiB in
every incident's first history event (Temporal warns past 512 KiB), decoded again on every
start, replay and continue-as-new (124 ms); with 10,000, 2.5 MiB, which Temporal refuses.

An incident never consults someone who can only report. It looks people up to reach them
(members of a role, rosters and their overrides, deputies, people a playbook names) and to
authorize commands (communicator, approver and admin access). So it carries:

- everyone with a business role, or with access beyond reporting (communicator, approver,
  admin, leader), everyone in a roster or in one of its overrides, and everyone the playbook
  names as a target;
- the deputies of everyone carried, and theirs in turn (a deputy must resolve);
- every role and every roster.

Kept people stay in directory order, so who is reached, in what order, is exactly what the
whole directory gives (`tests/test_incident_directory.py` checks that against the shipped
playbooks). The snapshot keeps the full version's sha256: an incident still pins exactly
which reviewed directory it started from. Roster overrides set through the API must name a
person incidents carry (`carried_by_incidents`), or they could never take effect.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from domain.directory import AccessRole, Directory, Person, Target
from domain.incident import DirectorySnapshot, PlaybookSnapshot

REACHED_ACCESS = frozenset({AccessRole.communicator, AccessRole.approver, AccessRole.admin,
                            AccessRole.leader})


def named_people(model: BaseModel) -> set[str]:
    """Every person a `Target` anywhere inside `model` (a playbook) names."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, Target):
            if value.person is not None:
                found.add(value.person)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return found


def _rostered(directory: Directory) -> set[str]:
    return {member for roster in directory.rosters
            for member in [*roster.members, *(o.member for o in roster.overrides)]}


def carried_by_incidents(directory: Directory, person: Person) -> bool:
    """True if every incident carries `person`, whatever its playbook."""
    return (bool(person.roles) or bool(REACHED_ACCESS & set(person.access))
            or person.id in _rostered(directory))


def carried_people(directory: Directory, named: Iterable[str] = ()) -> list[Person]:
    """The people an incident carries, in directory order (see the module docstring)."""
    by_id = {p.id: p for p in directory.people}
    rostered = _rostered(directory)
    keep = {p.id for p in directory.people
            if p.roles or REACHED_ACCESS & set(p.access) or p.id in rostered}
    keep |= {pid for pid in named if pid in by_id}
    pending = list(keep)
    while pending:  # deputies of everyone carried, transitively
        for deputy in by_id[pending.pop()].deputies:
            if deputy in by_id and deputy not in keep:
                keep.add(deputy)
                pending.append(deputy)
    return [p for p in directory.people if p.id in keep]


def for_incident(directory: Directory, named: Iterable[str] = ()) -> Directory:
    """`directory` with only the people an incident carries (itself if that is everyone)."""
    people = carried_people(directory, named)
    if len(people) == len(directory.people):
        return directory
    return Directory(people=people, roles=directory.roles, rosters=directory.rosters)


def incident_snapshot(directory: DirectorySnapshot, playbook: PlaybookSnapshot
                      ) -> DirectorySnapshot:
    """What an incident of `playbook` pins: the carried people, under the full version's
    sha256."""
    definition = for_incident(directory.definition, named_people(playbook.definition))
    if definition is directory.definition:
        return directory
    return DirectorySnapshot(sha256=directory.sha256, definition=definition)
