"""Playbooks and the directory as reviewed policy: immutable versions and their review.

Pure (no Temporal, no I/O), so the catalog and change-approval workflows and the API share
one set of rules:

- A *subject* is `playbook:<id>` or `directory`. Each subject has numbered versions; a
  number is bound to one text (sha256 of its bytes) forever, whatever its status.
- A new version starts `proposed`; a change-approval review makes it `active` (the previous
  active one becomes `superseded`) or `rejected`. Rejected versions keep their record.
- The *first* version of a subject may be bootstrapped (`make run` publishes the shipped
  files once): it is active at once and marked `bootstrap`, with no review.
- A review needs a passing dry run, then the quorum of `ChangePolicy` (from configuration;
  default "2 admins, not the author"), evaluated with `domain.quorum`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.directory import AccessRole, Directory, Target
from domain.durations import Duration
from domain.playbook import Channel, Requirement
from domain.quorum import Policy, Tally

DIRECTORY: Final = "directory"
PLAYBOOK_PREFIX: Final = "playbook:"
MAX_NOTE = 2000
MAX_STATE_BYTES = 1_500_000  # the catalog's carried state must stay well below 2 MB payloads

# ---- error codes (ApplicationError types) and their HTTP status ------------------------

VERSION_TAKEN: Final = "VersionTaken"
VERSION_OUTDATED: Final = "VersionOutdated"
PROPOSAL_OPEN: Final = "ProposalOpen"
NO_CHANGE: Final = "NoChange"
STORE_NOT_SEEDED: Final = "StoreNotSeeded"
POLICY_UNSATISFIABLE: Final = "PolicyUnsatisfiable"
VERSION_NOT_FOUND: Final = "VersionNotFound"
PROPOSAL_CLOSED: Final = "ProposalClosed"
DRY_RUN_PENDING: Final = "DryRunPending"
DRY_RUN_FAILED: Final = "DryRunFailed"
AUTHOR_CANNOT_APPROVE: Final = "AuthorCannotApprove"
NOT_AN_APPROVER: Final = "NotAnApprover"
ALREADY_DECIDED: Final = "AlreadyDecided"
CATALOG_FULL: Final = "CatalogFull"
NOT_AN_ADMIN: Final = "NotAnAdmin"
ROLLBACK_INVALID: Final = "RollbackInvalid"
TEXT_UNAVAILABLE: Final = "TextUnavailable"  # a kept text is gone or altered: data loss

HTTP_STATUS: Final[dict[str, int]] = {
    VERSION_TAKEN: 409,
    VERSION_OUTDATED: 409,
    PROPOSAL_OPEN: 409,
    NO_CHANGE: 409,
    STORE_NOT_SEEDED: 409,
    POLICY_UNSATISFIABLE: 422,
    VERSION_NOT_FOUND: 404,
    PROPOSAL_CLOSED: 409,
    DRY_RUN_PENDING: 409,
    DRY_RUN_FAILED: 409,
    AUTHOR_CANNOT_APPROVE: 403,
    NOT_AN_APPROVER: 403,
    ALREADY_DECIDED: 409,
    CATALOG_FULL: 409,
    NOT_AN_ADMIN: 403,
    ROLLBACK_INVALID: 422,
    TEXT_UNAVAILABLE: 500,
}


class PolicyError(Exception):
    """A request the version store or a review can't take; `code` is one of the above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def playbook_subject(playbook_id: str) -> str:
    return PLAYBOOK_PREFIX + playbook_id


def describe_subject(subject: str) -> str:
    return "the directory" if subject == DIRECTORY else f"playbook {subject[len(PLAYBOOK_PREFIX):]}"


# ---- texts ----------------------------------------------------------------------------

def pack_text(raw: bytes) -> str:
    """Versions keep their exact bytes, compressed (YAML shrinks 3-5x)."""
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def unpack_text(packed: str) -> bytes:
    return zlib.decompress(base64.b64decode(packed))


_VERSION_LINE = re.compile(r"^version:[ \t]*\d+[ \t]*(#.*)?$", re.MULTILINE)


def renumber(raw: bytes, number: int) -> bytes:
    """The same playbook text with its top-level `version:` set to `number` (rollbacks)."""
    text = raw.decode("utf-8")
    found = _VERSION_LINE.findall(text)
    if len(found) != 1:
        raise PolicyError(ROLLBACK_INVALID, "cannot renumber this text: it needs exactly one "
                          f"top-level `version: N` line (found {len(found)})")
    return _VERSION_LINE.sub(f"version: {number}", text, count=1).encode("utf-8")


# ---- the change policy --------------------------------------------------------------------

def _log_only() -> list[Channel]:
    return ["log"]


class ChangeTier(BaseModel):
    """Like a statement's escalation tier: `after` the review opened with no outcome,
    notify these targets (resolved against the active directory, on-call stand-ins included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, max_length=100)
    after: Duration
    notify: list[Target] = Field(min_length=1, max_length=50)


class ChangePolicy(BaseModel):
    """Who must approve a policy change. Default: 2 admins, not the author.

    `require` (per directory role, combined with AND) replaces `approvals` when given;
    a reject from someone with a `veto` role ends the review at once. Reviewers are told on
    `channels` when the dry run has passed; `escalation` tiers fire while no outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[Channel] = Field(default_factory=_log_only, min_length=1)
    escalation: list[ChangeTier] = Field(default_factory=list, max_length=10)
    deadline: Duration = timedelta(days=30)  # then the review ends `rejected` (expired)

    access: list[AccessRole] = Field(default_factory=lambda: [AccessRole.admin], min_length=1)
    approvals: int = Field(default=2, ge=1, le=20)
    require: list[Requirement] = Field(default_factory=list, max_length=10)
    veto: list[str] = Field(default_factory=list, max_length=10)
    author_may_approve: bool = False

    def quorum(self) -> Policy:
        veto = frozenset(self.veto)
        if self.require:
            return Policy("require", require=tuple((r.role, r.min) for r in self.require),
                          veto=veto)
        return Policy("k", k=self.approvals, veto=veto)

    def describe(self) -> str:
        who = " or ".join(a.value for a in self.access)
        if self.require:
            text = " AND ".join(f"{r.min} of {r.role}" for r in self.require) + f" ({who})"
        else:
            text = f"{self.approvals} of {who}"
        if not self.author_may_approve:
            text += ", not the author"
        if self.veto:
            text += "; veto: " + ", ".join(self.veto)
        return text

    def eligible(self, directory: Directory, author: str) -> dict[str, str | None]:
        """Person id -> the role their vote counts toward (None: any)."""
        counted = [r.role for r in self.require] + list(self.veto)
        allowed = set(self.access)
        out: dict[str, str | None] = {}
        for person in directory.people:
            if allowed.isdisjoint(person.access):
                continue
            if person.id == author and not self.author_may_approve:
                continue
            out[person.id] = next((r for r in person.roles if r in counted), None)
        return out

    def tally(self, directory: Directory, author: str) -> Tally:
        """A fresh approval node for a change by `author`; PolicyError if it can't pass."""
        tally = Tally(policy=self.quorum())
        for person_id, role in self.eligible(directory, author).items():
            tally.add_slot(person_id, role)
        probe = Tally(policy=tally.policy, slots=dict(tally.slots))
        if probe.check() != "pending":
            people = ", ".join(sorted(tally.slots)) or "nobody"
            raise PolicyError(POLICY_UNSATISFIABLE, f"the change policy ({self.describe()}) "
                              f"cannot be met: the active directory has {people} to approve "
                              f"a change by {author}")
        return tally


# ---- records --------------------------------------------------------------------------------

class VersionStatus(StrEnum):
    proposed = "proposed"
    active = "active"
    rejected = "rejected"
    superseded = "superseded"


class DecisionRecord(BaseModel):
    actor: str
    decision: Literal["approve", "reject", "withdraw"]
    comment: str = ""
    at: datetime


class ScenarioResult(BaseModel):
    scenario: str
    playbook: str
    passed: bool
    error: str | None = None
    report: str = ""  # the rendered dry-run report (timeline, nodes, would-have-sent)


class DryRunSummary(BaseModel):
    passed: bool
    scenarios: list[ScenarioResult] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)  # validation failures
    note: str = ""


class ReviewOutcome(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class NotifiedRecord(BaseModel):
    at: datetime
    to: str
    purpose: Literal["review", "escalation"]
    tier: int | None = None
    channels: list[str] = Field(default_factory=list)
    error: str | None = None


class ReviewState(BaseModel):
    """A change-approval workflow's state: the dry run, the votes, the outcome."""

    proposal_id: str
    subject: str
    number: int
    sha256: str
    author: str
    policy: str
    eligible: list[str]
    dry_run: DryRunSummary | None = None  # None while it runs
    decisions: list[DecisionRecord] = Field(default_factory=list)
    notified: list[NotifiedRecord] = Field(default_factory=list)
    tiers_fired: list[int] = Field(default_factory=list)
    outcome: ReviewOutcome = ReviewOutcome.pending
    reason: str = ""
    decided_at: datetime | None = None


class VersionRecord(BaseModel):
    subject: str
    number: int
    sha256: str
    author: str
    created_at: datetime
    note: str = ""
    status: VersionStatus
    bootstrap: bool = False
    rollback_of: int | None = None
    proposal_id: str | None = None
    policy: str | None = None
    review: ReviewState | None = None  # copied from the review when it ends
    activated_at: datetime | None = None
    superseded_at: datetime | None = None
    superseded_by: int | None = None
    text_z: str = Field(default="", repr=False)
    # a version no longer active or proposed keeps its text in a workflow of its own (its id),
    # so the catalog's state stays small however many versions it keeps (`texts_to_store`)
    text_ref: str | None = None

    def text(self) -> bytes:
        if not self.text_z and self.text_ref:
            raise ValueError(f"{describe_subject(self.subject)} v{self.number} keeps its text "
                             f"in workflow {self.text_ref}: read it through PolicyStore")
        return unpack_text(self.text_z)

    def without_text(self) -> VersionRecord:
        return self.model_copy(update={"text_z": ""})


class SubjectState(BaseModel):
    versions: list[VersionRecord] = Field(default_factory=list)
    active: int | None = None

    def find(self, number: int) -> VersionRecord | None:
        return next((v for v in self.versions if v.number == number), None)

    def open_proposal(self) -> VersionRecord | None:
        return next((v for v in self.versions if v.status is VersionStatus.proposed), None)

    def highest(self) -> int:
        return max((v.number for v in self.versions), default=0)


class ActiveRef(BaseModel):
    number: int
    sha256: str


class ActiveSet(BaseModel):
    revision: int
    subjects: dict[str, ActiveRef]


class CatalogState(BaseModel):
    subjects: dict[str, SubjectState] = Field(default_factory=dict)
    revision: int = 0
    runs: int = 1

    def subject(self, subject: str) -> SubjectState:
        return self.subjects.get(subject) or SubjectState()

    def active_record(self, subject: str) -> VersionRecord | None:
        state = self.subjects.get(subject)
        if state is None or state.active is None:
            return None
        return state.find(state.active)

    def active_set(self) -> ActiveSet:
        out: dict[str, ActiveRef] = {}
        for name in self.subjects:
            record = self.active_record(name)
            if record is not None:
                out[name] = ActiveRef(number=record.number, sha256=record.sha256)
        return ActiveSet(revision=self.revision, subjects=out)


# ---- requests ---------------------------------------------------------------------------------

class ProposeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=80)
    number: int | None = Field(default=None, ge=1)  # None: the next number (directory only)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    text_z: str = Field(min_length=1)
    author: str = Field(min_length=1, max_length=64)
    note: str = Field(default="", max_length=MAX_NOTE)
    rollback_of: int | None = None
    policy: ChangePolicy = Field(default_factory=ChangePolicy)
    public_url: str = "http://127.0.0.1:8000"  # base of the review link in notifications


class BootstrapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=80)
    number: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    text_z: str = Field(min_length=1)
    author: str = "bootstrap"
    note: str = "shipped version, published on first start (no review)"


class ProposalClosed(BaseModel):
    """The change-approval workflow tells the catalog how its review ended. A signal is its
    sender's word, so the catalog acts on the review as the review workflow itself holds it
    (`ReadReview`), never on this copy."""

    review: ReviewState


class ReadReview(BaseModel):
    """The catalog asks for a review's state from the `PolicyChange` workflow it started."""

    catalog_id: str
    proposal_id: str


class ReviewRead(BaseModel):
    """The review as its workflow holds it; None if the id is not a review this catalog
    started (a signal that named another workflow)."""

    review: ReviewState | None = None


def confirms(record: VersionRecord, review: ReviewState | None) -> bool:
    """True if `review` (read from the review workflow) closed the review of `record`."""
    return (review is not None and review.outcome is not ReviewOutcome.pending
            and (review.proposal_id, review.number, review.sha256)
            == (record.proposal_id, record.number, record.sha256))


class ChangeDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str = Field(min_length=1, max_length=64)
    approve: bool
    comment: str = Field(default="", max_length=MAX_NOTE)


# ---- catalog rules ------------------------------------------------------------------------------

def check_propose(state: CatalogState, req: ProposeRequest) -> VersionRecord | None:
    """None if `req` makes a new proposal; the existing record if it repeats one exactly.

    Raises PolicyError for everything the store refuses."""
    if req.subject != DIRECTORY and state.active_record(DIRECTORY) is None:
        raise PolicyError(STORE_NOT_SEEDED, "the version store has no active directory yet: "
                          "publish the shipped versions first (`crisis playbook seed`; "
                          "`make run` does it on first start)")
    if req.subject == DIRECTORY and state.active_record(DIRECTORY) is None:
        raise PolicyError(STORE_NOT_SEEDED, "the version store has no active directory yet, "
                          "so nobody could review a change: run `crisis playbook seed`")
    check_author(state, req)
    subject = state.subject(req.subject)
    what = describe_subject(req.subject)
    if req.number is not None:
        existing = subject.find(req.number)
        if existing is not None:
            if existing.sha256 == req.sha256:
                return existing
            raise PolicyError(VERSION_TAKEN, (
                f"{what} v{req.number} already exists ({existing.status}, sha256 "
                f"{existing.sha256[:12]}) with a different text: a version number names one "
                f"text forever; bump `version` to {subject.highest() + 1}"))
        if req.number <= subject.highest():
            raise PolicyError(VERSION_OUTDATED, (
                f"{what} is already at v{subject.highest()}: a new version needs a higher "
                f"number ({subject.highest() + 1})"))
    active = state.active_record(req.subject)
    if active is not None and active.sha256 == req.sha256:
        raise PolicyError(NO_CHANGE, f"this text is {what} v{active.number}, already active")
    open_ = subject.open_proposal()
    if open_ is not None:
        raise PolicyError(PROPOSAL_OPEN, (
            f"{what} v{open_.number} (by {open_.author}) is still under review: approve, "
            "reject or withdraw it before proposing another version"))
    if req.rollback_of is not None and subject.find(req.rollback_of) is None:
        raise PolicyError(VERSION_NOT_FOUND, f"{what} has no v{req.rollback_of} to roll back to")
    if len(state.model_dump_json()) + len(req.text_z) > MAX_STATE_BYTES:
        raise PolicyError(CATALOG_FULL, "the version catalog is full (its state would pass "
                          f"{MAX_STATE_BYTES} bytes with this text): the active versions and "
                          "open proposals take the room (see docs/scaling.md)")
    return None


def directory_of(text_z: str) -> Directory:
    """The directory a stored text holds, parsed once per worker process
    (`domain.snapshot_cache`): the catalog checks every proposal's author against the active
    directory, and each review reads who may approve, inside workflow tasks (a 5,000-person
    directory takes ~0.5 s to parse). Keyed by the text itself; the copy is read-only."""
    from domain.loader import parse_yaml  # pure; imported here to keep this module light
    from domain.snapshot_cache import shared_from

    return shared_from(
        Directory, hashlib.sha256(text_z.encode("ascii")).hexdigest(),
        lambda: Directory.model_validate(parse_yaml(unpack_text(text_z), "directory")))


def active_directory(state: CatalogState) -> Directory:
    record = state.active_record(DIRECTORY)
    if record is None:
        raise PolicyError(STORE_NOT_SEEDED, "the version store has no active directory yet")
    return directory_of(record.text_z)


def check_author(state: CatalogState, req: ProposeRequest) -> None:
    """The author is an admin of the active directory, and the change policy can be met
    by the others (checked here too, so it holds even if the API is bypassed)."""
    directory = active_directory(state)
    if not directory.has_person(req.author) or \
            AccessRole.admin not in directory.person(req.author).access:
        raise PolicyError(NOT_AN_ADMIN, f"{req.author} is not an admin in the active "
                          "directory, so cannot propose a policy change")
    req.policy.tally(directory, req.author)


def add_proposal(state: CatalogState, req: ProposeRequest, now: datetime,
                 proposal_id: str) -> VersionRecord:
    """Record a checked proposal (call `check_propose` first)."""
    subject = state.subjects.setdefault(req.subject, SubjectState())
    number = req.number if req.number is not None else subject.highest() + 1
    record = VersionRecord(
        subject=req.subject, number=number, sha256=req.sha256, author=req.author,
        created_at=now, note=req.note, status=VersionStatus.proposed,
        rollback_of=req.rollback_of, proposal_id=proposal_id.format(number=number),
        policy=req.policy.describe(), text_z=req.text_z)
    subject.versions.append(record)
    state.revision += 1
    return record


def bootstrap(state: CatalogState, req: BootstrapRequest, now: datetime) -> VersionRecord:
    """The first version of a subject, active without review; a no-op once one exists."""
    subject = state.subjects.setdefault(req.subject, SubjectState())
    if subject.versions:
        return state.active_record(req.subject) or subject.versions[-1]
    record = VersionRecord(
        subject=req.subject, number=req.number, sha256=req.sha256, author=req.author,
        created_at=now, note=req.note, status=VersionStatus.active, bootstrap=True,
        activated_at=now, text_z=req.text_z)
    subject.versions.append(record)
    subject.active = record.number
    state.revision += 1
    return record


def close_proposal(state: CatalogState, review: ReviewState, now: datetime) -> VersionRecord:
    """Apply a finished review: approved -> active (the old active is superseded)."""
    subject = state.subjects.get(review.subject)
    record = subject.find(review.number) if subject else None
    if subject is None or record is None:
        raise PolicyError(VERSION_NOT_FOUND, f"no proposal {review.subject} v{review.number}")
    if record.status is not VersionStatus.proposed:
        return record  # a repeated signal
    index = subject.versions.index(record)
    if review.outcome is ReviewOutcome.approved:
        previous = state.active_record(review.subject)
        if previous is not None:
            subject.versions[subject.versions.index(previous)] = previous.model_copy(update={
                "status": VersionStatus.superseded, "superseded_at": now,
                "superseded_by": record.number})
        record = record.model_copy(update={"status": VersionStatus.active, "activated_at": now,
                                           "review": review})
        subject.active = record.number
    else:
        record = record.model_copy(update={"status": VersionStatus.rejected, "review": review})
    subject.versions[index] = record
    state.revision += 1
    return record


# ---- texts kept by reference ---------------------------------------------------------------

def texts_to_store(state: CatalogState) -> list[VersionRecord]:
    """Versions whose text the catalog should hand to a workflow of its own: every version
    that is neither active nor proposed (superseded, rejected) and still holds its text. The
    catalog keeps inline only what it works with (the active texts feed dry runs and
    reviews; a proposal's text is being reviewed), so its carried state no longer grows with
    every directory change."""
    return [v for s in state.subjects.values() for v in s.versions
            if v.text_z and v.status in (VersionStatus.superseded, VersionStatus.rejected)]


def policy_text_id(catalog_id: str, text_sha256: str) -> str:
    """The workflow that keeps one text: by content, so the same text is kept once."""
    return f"{catalog_id}/text/{text_sha256}"


def text_stored(state: CatalogState, subject: str, number: int, ref: str) -> None:
    """That version's text now lives in workflow `ref`: the state keeps only the reference."""
    record = state.subject(subject).find(number)
    if record is not None:
        record.text_ref = ref
        record.text_z = ""


class PolicyTextStart(BaseModel):
    """A `PolicyText` workflow's input: one version's exact bytes, compressed."""

    sha256: str
    text_z: str = Field(min_length=1, repr=False)


# ---- workflow inputs ----------------------------------------------------------------------------

class DryRunRequest(BaseModel):
    """What the dry-run activity checks: the proposed text, with the texts it depends on."""

    subject: str
    number: int
    text_z: str
    directory_z: str  # the directory to run against (the proposed one for a directory change)
    playbooks_z: dict[str, str] = Field(default_factory=dict)  # active playbooks (directory)


class ChangeInput(BaseModel):
    catalog_id: str
    proposal_id: str
    subject: str
    number: int
    sha256: str
    author: str
    note: str = ""
    policy: ChangePolicy
    reviewers_directory_z: str  # the active directory: who may approve
    dry_run: DryRunRequest
    public_url: str = "http://127.0.0.1:8000"

    def link(self) -> str:
        if self.subject == DIRECTORY:
            return f"{self.public_url}/directory/versions/{self.number}"
        return (f"{self.public_url}/playbooks/{self.subject[len(PLAYBOOK_PREFIX):]}"
                f"/versions/{self.number}")


class CatalogStart(BaseModel):
    catalog_id: str
    continue_as_new_after_events: int = 4000
    state: CatalogState | None = None
