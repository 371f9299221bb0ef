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
import json
from datetime import UTC, datetime, timedelta

import httpx
import redis.asyncio as aioredis
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import delivery, mail, webhooks
from activities.mail import SmtpSettings
from activities.metrics import observe_batch
from domain.effects import (
    ActionRequest,
    ActionResult,
    NotifyRequest,
    NotifyResult,
    ProjectionBatch,
)
from domain.playbook import Channel
from readmodel import keys
from readmodel.writer import ProjectionWriter

IDEMPOTENCY_TTL = timedelta(days=30)
NOTIFICATION_FEED_SIZE = 200

log = structlog.get_logger("crisis.activities")


def _attempt() -> int | None:
    return activity.info().attempt if activity.in_activity() else None


class IncidentActivities:
    """Activities bound to their clients; register `notify`, `run_action` and `project`."""

    def __init__(self, redis: aioredis.Redis, http: httpx.AsyncClient,
                 smtp: SmtpSettings) -> None:
        self._redis = redis
        self._http = http
        self._smtp = smtp
        self._writer = ProjectionWriter(redis)

    # ---- notify -----------------------------------------------------------------------

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        """Deliver one message to one recipient on each requested channel, once."""
        with structlog.contextvars.bound_contextvars(
                incident_id=req.incident_id, step_id=req.step_id,
                idempotency_key=req.idempotency_key, attempt=_attempt()):
            channels: list[Channel] = list(dict.fromkeys(req.channels))
            done = await self._redis.mget(
                [keys.idem_notify(req.idempotency_key, channel) for channel in channels])
            refused = await self._redis.mget(
                [keys.idem_notify_rejected(req.idempotency_key, channel) for channel in channels])
            result = NotifyResult()
            failures: dict[str, ApplicationError] = {}
            for channel, was_done, refusal in zip(channels, done, refused, strict=True):
                if was_done is not None:
                    result.already_done.append(channel)
                elif refusal is not None:
                    reason = refusal.decode() if isinstance(refusal, bytes) else refusal
                    result.skipped[channel] = f"rejected on an earlier attempt: {reason}"
                elif (missing := req.missing_address(channel)) is not None:
                    result.skipped[channel] = missing
                else:
                    try:
                        await self._deliver(req, channel)
                    except ApplicationError as error:
                        failures[channel] = error
                        await self._record_failure(req, channel, error)
                        continue
                    result.delivered.append(channel)
            if failures:
                raise delivery.combine(failures, delivered=[*result.already_done,
                                                            *result.delivered])
            log.info("notify_done", person_id=req.recipient.person_id,
                     delivered=result.delivered, already_done=result.already_done,
                     skipped=result.skipped)
            return result

    async def _deliver(self, req: NotifyRequest, channel: Channel) -> None:
        done_key = keys.idem_notify(req.idempotency_key, channel)
        ttl = int(IDEMPOTENCY_TTL.total_seconds())
        if channel == "log":
            await self._log(req, done_key, ttl)
            return
        if channel == "webhook":
            assert req.recipient.webhook is not None
            headers = httpx.Headers({"Idempotency-Key": req.idempotency_key})
            body = webhooks.slack_message(
                req.subject, req.message, f"incident {req.incident_id} · {req.kind}")
            await webhooks.send(self._http, "POST", req.recipient.webhook, body, headers)
        else:
            assert req.recipient.email is not None
            message = mail.build_message(
                self._smtp.sender, req.recipient.name, req.recipient.email, req.subject,
                req.message, req.idempotency_key, req.incident_id)
            await asyncio.to_thread(mail.send, self._smtp, message)
        await self._redis.set(done_key, datetime.now(UTC).isoformat(), ex=ttl)
        log.info("notification_delivered", channel=channel, person_id=req.recipient.person_id)

    async def _log(self, req: NotifyRequest, done_key: str, ttl: int) -> None:
        """The `log` channel: a JSON log line plus the person's notification feed."""
        entry = {"at": datetime.now(UTC).isoformat(), "incident_id": req.incident_id,
                 "step_id": req.step_id, "kind": req.kind, "subject": req.subject,
                 "message": req.message, "idempotency_key": req.idempotency_key}
        feed = keys.notifications(req.recipient.person_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(feed, json.dumps(entry))
            pipe.ltrim(feed, 0, NOTIFICATION_FEED_SIZE - 1)
            pipe.set(done_key, entry["at"], ex=ttl)
            await pipe.execute()
        log.info("notification", channel="log", person_id=req.recipient.person_id,
                 kind=req.kind, subject=req.subject, message=req.message)

    async def _record_failure(self, req: NotifyRequest, channel: Channel,
                              error: ApplicationError) -> None:
        log.warning("notification_failed", channel=channel, person_id=req.recipient.person_id,
                    error=error.message, retryable=not error.non_retryable)
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
            done_key = keys.idem_action(req.idempotency_key)
            stored = await self._redis.get(done_key)
            if stored is not None:
                log.info("action_already_done")
                return ActionResult.model_validate_json(stored).model_copy(
                    update={"already_done": True})
            headers = httpx.Headers(req.headers)
            headers["Idempotency-Key"] = req.idempotency_key
            try:
                response = await webhooks.send(self._http, req.method, req.url, req.payload,
                                               headers)
            except ApplicationError as error:
                log.warning("action_failed", url=req.url, error=error.message,
                            retryable=not error.non_retryable)
                raise
            result = ActionResult(status_code=response.status_code,
                                  body_excerpt=response.text[:webhooks.EXCERPT_CHARS])
            await self._redis.set(done_key, result.model_dump_json(),
                                  ex=int(IDEMPOTENCY_TTL.total_seconds()))
            log.info("action_done", url=req.url, status_code=response.status_code)
            return result

    # ---- project ----------------------------------------------------------------------

    @activity.defn(name="project")
    async def project(self, batch: ProjectionBatch) -> None:
        """Write a batch of incident changes to the Redis read model."""
        with structlog.contextvars.bound_contextvars(incident_id=batch.incident.id):
            await self._writer.apply(batch)
            observe_batch(batch)
