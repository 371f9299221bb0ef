"""The incident workflow's activities: notify people, run playbook actions, project state.

Each is idempotent under Temporal's retries and replays, keyed by the request's
`idempotency_key` (`workflow_id:step_id[:suffix]`):
- `notify` records each channel once delivered, so a retry delivers only what is missing;
- `run_action` stores its result, returns it on a repeat, and sends `Idempotency-Key`;
- `project` writes the Redis read model, which is idempotent by construction.
Failures raise `DeliveryFailed` (retryable) or `DeliveryRejected` (non-retryable); the
number of attempts is the workflow's RetryPolicy, never decided here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import delivery, mail, render, webhooks
from activities.apprise_channel import AppriseChannel, AppriseTarget
from activities.mail import SmtpSettings
from activities.metrics import observe_batch
from core.background import every
from domain.effects import (
    ActionRequest,
    ActionResult,
    ChannelReceipt,
    NotifyBatchRequest,
    NotifyBatchResult,
    NotifyOutcome,
    NotifyRequest,
    NotifyResult,
    ProjectionBatch,
)
from domain.playbook import Channel
from readmodel import keys
from readmodel.writer import ProjectionWriter

# Signed action links for a request, as (label, url) pairs, e.g. from core.action_links:
# lambda req: [("Approve", issue_link(req.task_id, ...)), ...] if req.task_id else []
ActionLinkHook = Callable[[NotifyRequest], Sequence[tuple[str, str]]]

IDEMPOTENCY_TTL = timedelta(days=30)
NOTIFICATION_FEED_SIZE = 200
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"

log = structlog.get_logger("crisis.activities")


def _attempt() -> int | None:
    return activity.info().attempt if activity.in_activity() else None


HEARTBEAT_EVERY = 1.0  # seconds; the workflow's heartbeat timeout is a few of these


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a call is in flight, so a worker that dies mid-call is noticed
    within the activity's heartbeat timeout, not its (longer) start-to-close timeout."""
    if not activity.in_activity():
        yield
        return
    async with every(HEARTBEAT_EVERY, activity.heartbeat):
        yield


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_at(value: str | bytes) -> datetime | None:
    try:
        return datetime.fromisoformat(_text(value))
    except ValueError:
        return None


async def _all(calls: list[Coroutine[Any, Any, None]]) -> None:
    """Run all; once every one has finished, raise the first exception any of them raised."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _failed_receipt(channel: Channel, target: str | None,
                    error: ApplicationError) -> ChannelReceipt:
    return ChannelReceipt(channel=channel, target=target, status="failed",
                          permanent=error.non_retryable,
                          infrastructure=delivery.is_infrastructure(error),
                          reason=error.message)


class IncidentActivities:
    """Activities bound to their clients; register `notify`, `notify_batch`, `run_action`
    and `project` (`activities` lists them)."""

    def __init__(self, redis: aioredis.Redis, http: httpx.AsyncClient,
                 smtp: SmtpSettings, *, apprise: AppriseChannel | None = None,
                 public_url: str | None = None,
                 action_links: ActionLinkHook | None = None) -> None:
        self._redis = redis
        self._http = http
        self._smtp = smtp
        self._apprise = apprise or AppriseChannel(None)
        self._action_links = action_links
        # links in messages point at the web UI; the worker's client has it as base_url
        self._public_url = (public_url or str(http.base_url) or DEFAULT_PUBLIC_URL).rstrip("/")
        self._writer = ProjectionWriter(redis)

    @property
    def activities(self) -> list[Callable[..., Any]]:
        """Every activity to register on the worker."""
        return [self.notify, self.notify_batch, self.run_action, self.project]

    # ---- notify -----------------------------------------------------------------------

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        """Deliver one message to one recipient on each requested channel, once per target.

        Returns receipts per target. Raises `DeliveryRejected` when every failure is a
        permanent refusal, `InfrastructureUnavailable` when only our Redis / SMTP relay
        failed, `DeliveryFailed` otherwise; the error details carry the partial result
        (`NotifyResult.from_failure_details`).
        """
        with structlog.contextvars.bound_contextvars(
                incident_id=req.incident_id, step_id=req.step_id,
                idempotency_key=req.idempotency_key, attempt=_attempt()):
            try:
                return await self._notify(req)
            except RedisError as exc:
                log.warning("notify_redis_unavailable", error=type(exc).__name__)
                raise delivery.infrastructure(
                    f"Redis unavailable for the idempotency record: {type(exc).__name__}: "
                    f"{exc}") from exc

    @activity.defn(name="notify_batch")
    async def notify_batch(self, batch: NotifyBatchRequest) -> NotifyBatchResult:
        """`notify` for every recipient of one step, at once, in one activity.

        Never raises for a delivery failure: each recipient's outcome (result, or error with
        its partial result) comes back in request order, and the workflow retries only the
        recipients that failed for now, through `notify`, with the same idempotency keys,
        so nothing already delivered is sent again.
        """
        async def one(req: NotifyRequest) -> NotifyOutcome:
            try:
                return NotifyOutcome(result=await self.notify(req))
            except ApplicationError as error:
                return NotifyOutcome(error=error.message, error_type=error.type,
                                     partial=NotifyResult.from_failure_details(
                                         list(error.details)))

        projected = batch.projection is not None and await self._project_first(
            batch.projection)
        return NotifyBatchResult(projected=projected, outcomes=list(await asyncio.gather(
            *(one(req) for req in batch.requests))))

    async def _project_first(self, projection: ProjectionBatch) -> bool:
        """Write a batch that rides with messages or an action call, before they go out.
        While Redis is down they still go (as they would after a failed `project`): the
        workflow hears `projected=False`, and its projector writes the batch again later."""
        try:
            await self.project(projection)
        except RedisError as exc:
            log.warning("projection_not_written", incident_id=projection.incident.id,
                        error=type(exc).__name__)
            return False
        return True

    async def _notify(self, req: NotifyRequest) -> NotifyResult:
        channels: list[Channel] = list(dict.fromkeys(req.channels))
        simple = [channel for channel in channels if channel != "apprise"]
        done = await self._redis.mget(
            [keys.idem_notify(req.idempotency_key, channel) for channel in simple]) \
            if simple else []
        refused = await self._redis.mget(
            [keys.idem_notify_rejected(req.idempotency_key, channel) for channel in simple]) \
            if simple else []
        earlier = {channel: (was_done, refusal)
                   for channel, was_done, refusal in zip(simple, done, refused, strict=True)}
        # HOOK: signed one-click links (approve / reject) are made here, in the activity, so
        # these bearer links never enter the workflow history.
        actions = self._action_links(req) if self._action_links is not None else ()
        message = render.compose(req, self._public_url, action_links=actions)
        # Every channel at once (a slow mail relay must not hold up the pager), each into
        # its own part; parts are merged in the requested order.
        parts = [(NotifyResult(), dict[str, ApplicationError]()) for _ in channels]
        await _all([
            self._notify_apprise(req, message, part, part_failures) if channel == "apprise"
            else self._notify_channel(req, message, channel, earlier[channel], part,
                                      part_failures)
            for channel, (part, part_failures) in zip(channels, parts, strict=True)])
        result = NotifyResult()
        failures: dict[str, ApplicationError] = {}
        for part, part_failures in parts:
            result.delivered += part.delivered
            result.already_done += part.already_done
            result.skipped.update(part.skipped)
            result.receipts += part.receipts
            failures.update(part_failures)
        if failures:
            raise delivery.combine(failures, delivered=[*result.already_done,
                                                        *result.delivered],
                                   result=result.model_dump(mode="json"))
        log.info("notify_done", person_id=req.recipient.person_id,
                 delivered=result.delivered, already_done=result.already_done,
                 skipped=result.skipped)
        return result

    async def _notify_channel(self, req: NotifyRequest, message: render.Message,
                              channel: Channel, earlier: tuple[Any, Any], result: NotifyResult,
                              failures: dict[str, ApplicationError]) -> None:
        was_done, refusal = earlier
        if was_done is not None:
            result.already_done.append(channel)
            result.receipts.append(ChannelReceipt(
                channel=channel, status="already_delivered", at=_parse_at(was_done)))
        elif refusal is not None:
            reason = f"rejected on an earlier attempt: {_text(refusal)}"
            result.skipped[channel] = reason
            result.receipts.append(ChannelReceipt(
                channel=channel, status="failed", permanent=True, reason=reason))
        elif (missing := req.missing_address(channel)) is not None:
            result.skipped[channel] = missing
            result.receipts.append(ChannelReceipt(channel=channel, status="skipped",
                                                  reason=missing))
        else:
            try:
                await self._deliver(req, channel, message)
            except ApplicationError as error:
                failures[channel] = error
                result.receipts.append(_failed_receipt(channel, None, error))
                await self._record_failure(req, channel, error)
                return
            result.delivered.append(channel)
            result.receipts.append(ChannelReceipt(channel=channel, status="delivered",
                                                  at=datetime.now(UTC)))

    async def _notify_apprise(self, req: NotifyRequest, message: render.Message,
                              result: NotifyResult,
                              failures: dict[str, ApplicationError]) -> None:
        """One receipt per Apprise service; each service delivered once per key."""
        if (missing := req.missing_address("apprise")) is not None:
            result.skipped["apprise"] = missing
            result.receipts.append(ChannelReceipt(channel="apprise", status="skipped",
                                                  reason=missing))
            return
        if not self._apprise.configured:
            reason = "Apprise is not configured (set CRISIS_APPRISE_CONFIG)"
            result.skipped["apprise"] = reason
            result.receipts.append(ChannelReceipt(channel="apprise", status="skipped",
                                                  reason=reason))
            return
        try:
            targets, unknown = self._apprise.targets(req.recipient.apprise_tags)
        except ApplicationError as error:  # config file unreadable: our infrastructure
            failures["apprise"] = error
            result.receipts.append(_failed_receipt("apprise", None, error))
            return
        for tag in unknown:
            result.receipts.append(ChannelReceipt(
                channel="apprise", target=f"apprise:{tag}", status="skipped",
                reason=f"no Apprise service is tagged {tag!r}"))
        if not targets:
            result.skipped["apprise"] = "no Apprise service matches the recipient's tags"
            return
        subkeys = [f"apprise:{target.url_id}" for target in targets]
        done = await self._redis.mget(
            [keys.idem_notify(req.idempotency_key, sub) for sub in subkeys])
        refused = await self._redis.mget(
            [keys.idem_notify_rejected(req.idempotency_key, sub) for sub in subkeys])
        ttl = int(IDEMPOTENCY_TTL.total_seconds())
        errors: dict[str, ApplicationError] = {}
        receipts: list[ChannelReceipt | None] = [None] * len(targets)

        async def one(index: int, target: AppriseTarget, sub: str, was_done: Any,
                      refusal: Any) -> None:
            if was_done is not None:
                receipts[index] = ChannelReceipt(
                    channel="apprise", target=target.label, status="already_delivered",
                    at=_parse_at(was_done))
                return
            if refusal is not None:
                reason = f"rejected on an earlier attempt: {_text(refusal)}"
                errors[target.label] = delivery.rejected(reason)
                receipts[index] = ChannelReceipt(channel="apprise", target=target.label,
                                                 status="failed", permanent=True,
                                                 reason=reason)
                return
            try:
                await self._apprise.send(target, message)
            except ApplicationError as error:
                errors[target.label] = error
                receipts[index] = _failed_receipt("apprise", target.label, error)
                await self._record_failure(req, sub, error, target=target.label)
                return
            at = datetime.now(UTC)
            await self._redis.set(keys.idem_notify(req.idempotency_key, sub), at.isoformat(),
                                  ex=ttl)
            receipts[index] = ChannelReceipt(channel="apprise", target=target.label,
                                             status="delivered", at=at)
            log.info("notification_delivered", channel="apprise", target=target.label,
                     person_id=req.recipient.person_id)

        await _all([one(index, *row) for index, row in enumerate(
            zip(targets, subkeys, done, refused, strict=True))])
        result.receipts += [receipt for receipt in receipts if receipt is not None]
        fresh = sum(1 for r in receipts if r is not None and r.status == "delivered")
        if errors:  # in target order, whatever order they finished in
            failures["apprise"] = delivery.combine(
                {t.label: errors[t.label] for t in targets if t.label in errors}, delivered=[])
        elif fresh:
            result.delivered.append("apprise")
        else:
            result.already_done.append("apprise")

    async def _deliver(self, req: NotifyRequest, channel: Channel,
                       message: render.Message) -> None:
        done_key = keys.idem_notify(req.idempotency_key, channel)
        ttl = int(IDEMPOTENCY_TTL.total_seconds())
        if channel == "log":
            await self._log(req, message, done_key, ttl)
            return
        if channel == "webhook":
            assert req.recipient.webhook is not None
            headers = httpx.Headers({"Idempotency-Key": req.idempotency_key})
            await webhooks.send(self._http, "POST", req.recipient.webhook,
                                render.slack(message), headers)
        else:
            assert req.recipient.email is not None
            email = mail.build_message(
                self._smtp.sender, req.recipient.name, req.recipient.email, message.subject,
                render.text_body(message), req.idempotency_key, req.incident_id,
                html=render.html_body(message))
            await asyncio.to_thread(mail.send, self._smtp, email)
        await self._redis.set(done_key, datetime.now(UTC).isoformat(), ex=ttl)
        log.info("notification_delivered", channel=channel, person_id=req.recipient.person_id)

    async def _log(self, req: NotifyRequest, message: render.Message, done_key: str,
                   ttl: int) -> None:
        """The `log` channel: a JSON log line plus the person's notification feed."""
        at = datetime.now(UTC).isoformat()
        entry = {"at": at, "incident_id": req.incident_id,
                 "step_id": req.step_id, "kind": req.kind, "subject": req.subject,
                 "message": req.message, "idempotency_key": req.idempotency_key,
                 "task_id": req.task_id,
                 "links": [{"label": link.label, "url": link.url} for link in message.links],
                 "actions": [{"label": link.label, "url": link.url}
                             for link in message.actions]}
        feed = keys.notifications(req.recipient.person_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(feed, json.dumps(entry))
            pipe.ltrim(feed, 0, NOTIFICATION_FEED_SIZE - 1)
            pipe.set(done_key, at, ex=ttl)
            await pipe.execute()
        log.info("notification", channel="log", person_id=req.recipient.person_id,
                 kind=req.kind, subject=req.subject, message=req.message)

    async def _record_failure(self, req: NotifyRequest, channel: str,
                              error: ApplicationError, target: str | None = None) -> None:
        log.warning("notification_failed", channel=channel.split(":")[0], target=target,
                    person_id=req.recipient.person_id, error=error.message,
                    error_type=error.type, retryable=not error.non_retryable)
        if error.non_retryable:  # never knock on that door again for this key
            await self._redis.set(keys.idem_notify_rejected(req.idempotency_key, channel),
                                  error.message, ex=int(IDEMPOTENCY_TTL.total_seconds()))

    # ---- run_action -------------------------------------------------------------------

    @activity.defn(name="run_action")
    async def run_action(self, req: ActionRequest) -> ActionResult:
        """Call the action's URL once; a repeated key returns the stored result unsent."""
        with structlog.contextvars.bound_contextvars(
                incident_id=req.incident_id, step_id=req.step_id,
                idempotency_key=req.idempotency_key, attempt=_attempt()):
            projected = req.projection is not None and await self._project_first(
                req.projection)
            try:
                result = await self._run_action(req)
                return result.model_copy(update={"projected": True}) if projected else result
            except RedisError as exc:
                log.warning("action_redis_unavailable", error=type(exc).__name__)
                raise delivery.infrastructure(
                    f"Redis unavailable for the idempotency record: {type(exc).__name__}: "
                    f"{exc}") from exc

    async def _run_action(self, req: ActionRequest) -> ActionResult:
        done_key = keys.idem_action(req.idempotency_key)
        stored = await self._redis.get(done_key)
        if stored is not None:
            log.info("action_already_done")
            return ActionResult.model_validate_json(stored).model_copy(
                update={"already_done": True})
        attempt = _attempt() or 1
        if req.at_most_once and attempt > 1:
            # an earlier attempt may have reached the receiver (it crashed or timed out
            # in flight): sending again could publish twice
            log.warning("action_outcome_unknown", url=req.url, attempt=attempt)
            raise delivery.outcome_unknown(
                f"attempt {attempt - 1} of {req.method} {req.url} ended without an answer; "
                "it may have reached the receiver, so it is not sent again", url=req.url)
        headers = httpx.Headers(req.headers)
        headers["Idempotency-Key"] = req.idempotency_key
        try:
            async with _heartbeating():
                response = await webhooks.send(self._http, req.method, req.url, req.payload,
                                               headers, at_most_once=req.at_most_once)
        except ApplicationError as error:
            log.warning("action_failed", url=req.url, error=error.message,
                        error_type=error.type, retryable=not error.non_retryable)
            raise
        result = ActionResult(status_code=response.status_code,
                              body_excerpt=response.text[:webhooks.EXCERPT_CHARS])
        try:
            await self._redis.set(done_key, result.model_dump_json(),
                                  ex=int(IDEMPOTENCY_TTL.total_seconds()))
        except RedisError as exc:
            # it was sent: the workflow's history records the result; failing here would
            # only make a retry send it again
            log.warning("action_record_failed", error=type(exc).__name__)
        log.info("action_done", url=req.url, status_code=response.status_code)
        return result

    # ---- project ----------------------------------------------------------------------

    @activity.defn(name="project")
    async def project(self, batch: ProjectionBatch) -> None:
        """Write a batch of incident changes to the Redis read model."""
        with structlog.contextvars.bound_contextvars(incident_id=batch.incident.id):
            await self._writer.apply(batch)
            observe_batch(batch)
