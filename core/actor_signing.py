"""Signed actors: every workflow update and every workflow start carries an HMAC of who
sends it, checked by the worker.

The API (and every other process that holds the key: the worker's own seeding, the CLI, the
dry run and the test harness) signs each update it sends with `ActorSigner`, a Temporal
client interceptor. The signature travels in the update's `crisis-actor` header and covers:

- the key id and the signature version,
- the workflow id (the incident id, or the catalog / review id) and the update's name,
  so a signature cannot be moved onto another incident or another command,
- the actor and the request id the command names (`actor`/`request_id`, a report's
  `reported_by`/`id`, a proposal's `author`), and the roles the sender saw for the actor,
- the sha256 of the command's canonical JSON, so no field can be changed under it.

Starts are signed the same way (command `start:<workflow type>`, the start input as the
body), so nobody who merely reaches Temporal can start an incident with a playbook and
directory of their own (its messages would go out in the company's name, its actions call
the company's webhooks), a policy catalog with versions nobody reviewed, or a time-off
overlay. The worker checks a start on its first execution, before the run's first command;
a run that fails the check fails at once (`UnsignedCommand` / `ForgedCommand`). Not checked:
a run continued as new (its input came from the run before it) and a child workflow (only a
checked workflow starts children); and never on replay, so histories from before starts
were signed, and incidents opened under a key since retired, replay as they ran.

Signals that a workflow takes at their word (`SIGNED_SIGNALS`: the incident's reports, which
put a reporter's name and words on the timeline) are signed the same way (command: the
signal's name). Other signals are prompts whose handlers read the truth from the workflow
that holds it (`time_off`, `proposal_closed`) or change nothing anyone sees (`recorded`). A
signal has no validator and is written to history before any code sees it, so the worker
checks it when it first arrives and, when it refuses one, records that as a patch marker
(`crisis-refused-signal-<n>`, n counting the run's checked signals); a replay never checks
again, it drops exactly the signals whose marker it finds. So a forged report is dropped
now and on every replay, while histories from before signals were signed, and signals
signed with a key since retired, replay as they ran.

`ActorVerifier` is a worker interceptor: before any update validator runs, it recomputes the
MAC from the update's own arguments and refuses (as the validator would: the update is
rejected, nothing is written to history, the workflow changes nothing) a command that is
unsigned, signed with an unknown (retired) key, or forged. The keys live in the
interceptor class the worker hands to the sandbox, never in a workflow input or in history;
HMAC and sha256 are pure, so checking is deterministic and needs no I/O. Validators do not
run on replay (the SDK skips them: `run_validator` is false for replayed updates), so a
retired key never breaks the replay of an old history.

Keys (`core.config.Settings`): `CRISIS_ACTOR_KEYS`, a JSON object `{"<key id>": "<secret>"}`:
the first key signs, every key verifies. Rotate by (1) adding the new key *second* on every
worker and API, (2) moving it first on every API (the senders), (3) dropping the old key
once every sender signs with the new one (a signature is checked once, when its command
arrives, so nothing signed lives longer than a request). Unset: one random key in
`CRISIS_ACTOR_KEY_FILE` (default `actor.key` next to `CRISIS_TOKENS_FILE`, mode 0600), key id
`local`, shared by every process on the machine that reads it (`make run`, `crisis stack run`).
Secrets are never logged; refusals name only the key id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    StartWorkflowUpdateWithStartInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    HandleSignalInput,
    HandleUpdateInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)
from temporalio.worker import Interceptor as WorkerInterceptor

from core.config import Settings
from core.secret_file import read_or_create

HEADER = "crisis-actor"
VERSION = 1
MIN_KEY_CHARS = 16
FILE_KEY_ID = "local"
KEY_ID_CHARS = 64
UNSIGNED = "UnsignedCommand"  # the ApplicationError type of a refusal (never retried)
FORGED = "ForgedCommand"
# signals whose handlers take the sender's word (see the module docstring)
SIGNED_SIGNALS = frozenset({"add_report", "add_reports"})
REFUSED_SIGNAL_MARKER = "crisis-refused-signal"

RolesOf = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class Keyring:
    """The signing key id and every key that verifies, by id."""

    signing_id: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.signing_id not in self.keys:
            raise ValueError("the signing key must be one of the keys")
        for key_id, key in self.keys.items():
            if not key_id or len(key_id) > KEY_ID_CHARS:
                raise ValueError(f"actor key ids need 1-{KEY_ID_CHARS} characters")
            if len(key) < MIN_KEY_CHARS:
                raise ValueError(f"actor key {key_id!r} needs {MIN_KEY_CHARS}+ characters")

    def __repr__(self) -> str:  # never the secrets
        return f"Keyring(signing_id={self.signing_id!r}, ids={list(self.keys)!r})"

    def only(self, *key_ids: str) -> Keyring:
        """The same keyring limited to `key_ids` (the first signs): rotation in tests."""
        return Keyring(key_ids[0], {k: self.keys[k] for k in key_ids})


def ephemeral_keyring(key_id: str) -> Keyring:
    """A fresh random key held only in memory (the dry run's private server and worker)."""
    return Keyring(key_id, {key_id: secrets.token_urlsafe(32).encode()})


def key_file(settings: Settings) -> Path:
    """Where the key of `settings` is kept when `CRISIS_ACTOR_KEYS` is empty."""
    return settings.actor_key_file or settings.tokens_file.parent / "actor.key"


def actor_keyring(settings: Settings) -> Keyring:
    """The keys of `settings`: `CRISIS_ACTOR_KEYS`, else the key file (created if absent)."""
    if settings.actor_keys:
        keys = {k: v.get_secret_value().encode() for k, v in settings.actor_keys.items()}
        return Keyring(next(iter(keys)), keys)
    return Keyring(FILE_KEY_ID, {FILE_KEY_ID: read_or_create(key_file(settings)).encode()})


# ---- the claim ----------------------------------------------------------------------------

def _who(arg: Any) -> tuple[str, str]:
    """(actor, request id) a command names: every update argument names one or the other."""
    actor = next((str(v) for name in ("actor", "reported_by", "author")
                  if isinstance(v := getattr(arg, name, None), str)), "")
    request = next((str(v) for name in ("request_id", "id")
                    if isinstance(v := getattr(arg, name, None), str)), "")
    return actor, request


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list | tuple):  # a batch of models (`add_reports`)
        return [_canonical(v) for v in value]
    return to_jsonable_python(value)


def body_digest(args: Sequence[Any]) -> str:
    """sha256 of the arguments' canonical JSON. Defaults are left out (in lists of models
    too), so a worker that knows a new optional field still agrees with a sender that
    doesn't."""
    data = [_canonical(a) for a in args]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _message(key_id: str, workflow_id: str, command: str, actor: str, request_id: str,
             roles: Sequence[str], digest: str) -> bytes:
    return json.dumps([VERSION, key_id, workflow_id, command, actor, request_id,
                       list(roles), digest], separators=(",", ":")).encode()


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def start_command(workflow_type: str) -> str:
    """What a workflow start's signature names as its command (never an update's name)."""
    return f"start:{workflow_type}"


def signature_header(keyring: Keyring, workflow_id: str, command: str, args: Sequence[Any],
                     roles: Iterable[str] = ()) -> Payload:
    """The `crisis-actor` header for one update."""
    actor, request_id = _who(args[0]) if args else ("", "")
    role_list = sorted(set(roles))
    key_id = keyring.signing_id
    mac = _mac(keyring.keys[key_id], _message(key_id, workflow_id, command, actor, request_id,
                                              role_list, body_digest(args)))
    claim = {"v": VERSION, "kid": key_id, "actor": actor, "roles": role_list, "sig": mac}
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(claim).encode())


def verify(keyring: Keyring, headers: Mapping[str, Payload], workflow_id: str, command: str,
           args: Sequence[Any]) -> tuple[str, list[str]]:
    """(actor, roles) of a correctly signed update; raises ApplicationError otherwise."""
    payload = headers.get(HEADER)
    if payload is None:
        raise ApplicationError(f"{command}: unsigned command refused (send it through the "
                               "API)", type=UNSIGNED, non_retryable=True)
    try:
        claim = json.loads(payload.data)
        key_id, mac, roles = str(claim["kid"]), str(claim["sig"]), claim["roles"]
        if claim["v"] != VERSION or not isinstance(roles, list):
            raise ValueError("version")
        roles = [str(r) for r in roles]
    except (ValueError, KeyError, TypeError):
        raise ApplicationError(f"{command}: unreadable signature refused", type=FORGED,
                               non_retryable=True) from None
    key = keyring.keys.get(key_id)
    if key is None:
        raise ApplicationError(f"{command}: signed with an unknown or retired key "
                               f"{key_id[:KEY_ID_CHARS]!r}", type=FORGED, non_retryable=True)
    actor, request_id = _who(args[0]) if args else ("", "")
    wanted = _mac(key, _message(key_id, workflow_id, command, actor, request_id, roles,
                                body_digest(args)))
    if not hmac.compare_digest(wanted, mac):
        raise ApplicationError(f"{command}: the signature does not match this command "
                               f"(actor {actor!r})", type=FORGED, non_retryable=True)
    return actor, roles


# ---- client side: sign ----------------------------------------------------------------------

class _SigningOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, signer: ActorSigner) -> None:
        super().__init__(next)
        self._signer = signer

    async def start_workflow_update(self, input: StartWorkflowUpdateInput
                                    ) -> WorkflowUpdateHandle[Any]:
        input.headers = {**input.headers,
                         HEADER: self._signer.header(input.id, input.update, input.args)}
        return await self.next.start_workflow_update(input)

    async def start_update_with_start_workflow(self, input: StartWorkflowUpdateWithStartInput
                                               ) -> WorkflowUpdateHandle[Any]:
        update, start = input.update_workflow_input, input.start_workflow_input
        update.headers = {**update.headers, HEADER: self._signer.header(
            start.id, update.update, update.args)}
        start.headers = {**start.headers, HEADER: self._signer.header(
            start.id, start_command(start.workflow), start.args)}
        return await self.next.start_update_with_start_workflow(input)

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        input.headers = {**input.headers, HEADER: self._signer.header(
            input.id, start_command(input.workflow), input.args)}
        return await self.next.start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        if input.signal in SIGNED_SIGNALS:
            input.headers = {**input.headers, HEADER: self._signer.header(
                input.id, input.signal, input.args)}
        await self.next.signal_workflow(input)


class ActorSigner(Interceptor):
    """Client interceptor: signs every update, every workflow start and every signal in
    `SIGNED_SIGNALS` sent through it.

    `roles_of(actor)` gives the roles the sender sees for the actor (the API: the
    directory's); it may be set after the client is made."""

    def __init__(self, keyring: Keyring, roles_of: RolesOf | None = None) -> None:
        self.keyring = keyring
        self.roles_of = roles_of

    def header(self, workflow_id: str, command: str, args: Sequence[Any]) -> Payload:
        actor = _who(args[0])[0] if args else ""
        roles = self.roles_of(actor) if self.roles_of is not None and actor else ()
        return signature_header(self.keyring, workflow_id, command, args, roles)

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _SigningOutbound(next, self)


def signed_client(client: Client, keyring: Keyring, roles_of: RolesOf | None = None) -> Client:
    """A client like `client` (same connection) that signs its updates with `keyring`."""
    config = client.config()
    kept = [i for i in config.get("interceptors", []) if not isinstance(i, ActorSigner)]
    config["interceptors"] = [*kept, ActorSigner(keyring, roles_of)]
    return Client(**config)


def unsigned_client(client: Client) -> Client:
    """A client like `client` that signs nothing (what anyone who reaches Temporal has)."""
    config = client.config()
    config["interceptors"] = [i for i in config.get("interceptors", [])
                              if not isinstance(i, ActorSigner)]
    return Client(**config)


# ---- worker side: verify --------------------------------------------------------------------

class _VerifyingInbound(WorkflowInboundInterceptor):
    keyring: Keyring  # set on the subclass `ActorVerifier` makes; never in workflow state

    def __init__(self, next: WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self._signals_checked = 0  # this run's signals in SIGNED_SIGNALS, in arrival order

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        """A run started from outside (not continued as new, not a child of a checked
        workflow) must carry its sender's signature, or it fails before its first command.
        Checked once, on the first execution: a replay trusts what its history started
        (histories from before starts were signed have no header; a retired key must not
        break an open incident's replay)."""
        info = workflow.info()
        if (not workflow.unsafe.is_replaying() and info.continued_run_id is None
                and info.parent is None):
            try:
                verify(self.keyring, input.headers, info.workflow_id,
                       start_command(info.workflow_type), input.args)
            except ApplicationError as exc:
                workflow.logger.warning("refused start of %s: %s", info.workflow_type,
                                        exc.message)
                raise
        return await super().execute_workflow(input)

    async def handle_signal(self, input: HandleSignalInput) -> None:
        """A signal in `SIGNED_SIGNALS` is handled only if signed. Checked when it first
        arrives; a refusal is recorded as a patch marker, and a replay drops exactly the
        signals whose marker it finds (it never checks again: see the module docstring)."""
        if input.signal not in SIGNED_SIGNALS:
            await super().handle_signal(input)
            return
        self._signals_checked += 1
        refusal = f"{REFUSED_SIGNAL_MARKER}-{self._signals_checked}"
        if workflow.unsafe.is_replaying():
            if workflow.patched(refusal):  # refused when it arrived
                return
        else:
            try:
                verify(self.keyring, input.headers, workflow.info().workflow_id, input.signal,
                       input.args)
            except ApplicationError as exc:
                workflow.logger.warning("refused signal %s: %s", input.signal, exc.message)
                workflow.patched(refusal)  # recorded: every replay drops it too
                return
        await super().handle_signal(input)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        try:
            verify(self.keyring, input.headers, workflow.info().workflow_id, input.update,
                   input.args)
        except ApplicationError as exc:
            workflow.logger.warning("refused update %s: %s", input.update, exc.message)
            raise
        super().handle_update_validator(input)


class ActorVerifier(WorkerInterceptor):
    """Worker interceptor: every update with a validator, and every signal in
    `SIGNED_SIGNALS`, is refused unless signed with one of `keyring`'s keys (each workflow's
    updates all have validators; a test checks it); so is a start from outside."""

    def __init__(self, keyring: Keyring) -> None:
        self._class = type("ActorVerifyingInbound", (_VerifyingInbound,), {"keyring": keyring})

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput
                                   ) -> type[WorkflowInboundInterceptor] | None:
        return self._class
