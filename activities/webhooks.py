"""HTTP delivery for webhooks and actions, with the failure rules of `activities.delivery`.

(The Slack-shaped webhook body is rendered, and escaped, by `activities.render.slack`.)

2xx succeeds. 408, 429, 5xx and transport errors are retryable; any other status, a bad
URL or an unsupported scheme is a permanent rejection. A 429's `Retry-After` (in seconds)
becomes the delay before Temporal's next attempt. A request that carries an
`Idempotency-Key` also retries a 409: by the IETF idempotency-key draft that is the
receiver saying "a request with this key is still being processed".

`at_most_once=True` (an action whose receiver can't deduplicate): only a failure that
proves nothing was processed stays retryable (the connection was never made, 408, 429,
503); anything that may have reached the receiver (a timeout or a broken connection after
sending, any other 5xx) is `ActionOutcomeUnknown`, which is never retried.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from activities import delivery

RETRYABLE_STATUSES = frozenset({408, 429})
IN_FLIGHT_STATUS = 409  # with an Idempotency-Key: the receiver is still on the first request
# answers that say the receiver did nothing with the request (safe to send again)
NOT_PROCESSED_STATUSES = frozenset({408, 429, 503})
# transport errors raised before any byte of the request left
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
MAX_RETRY_AFTER = timedelta(hours=1)
EXCERPT_CHARS = 500


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("retry-after", "")
    if not value.isdigit():
        return None
    return min(timedelta(seconds=int(value)), MAX_RETRY_AFTER)


async def send(client: httpx.AsyncClient, method: str, url: str, payload: dict[str, Any],
               headers: httpx.Headers, *, at_most_once: bool = False) -> httpx.Response:
    """Send one JSON request; return the 2xx response or raise a classified ApplicationError."""
    try:
        response = await client.request(method, url, json=payload, headers=headers)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise delivery.rejected(f"unusable URL {url!r}: {exc}", url=url) from exc
    except httpx.TransportError as exc:  # connect/read/write errors and timeouts
        reason = f"{method} {url} failed: {type(exc).__name__}: {exc}"
        if at_most_once and not isinstance(exc, NOT_SENT_ERRORS):
            raise delivery.outcome_unknown(
                f"{reason}; the request may have reached the receiver", url=url) from exc
        raise delivery.failed(reason, url=url) from exc
    if response.is_success:
        return response
    status = response.status_code
    excerpt = response.text[:EXCERPT_CHARS]
    reason = f"{method} {url} answered HTTP {status}"
    details: dict[str, Any] = {"url": url, "status_code": status, "body": excerpt}
    if at_most_once and status >= 500 and status not in NOT_PROCESSED_STATUSES:
        raise delivery.outcome_unknown(
            f"{reason}, which doesn't say whether it was done", **details)
    keyed = "idempotency-key" in headers
    if status >= 500 or status in RETRYABLE_STATUSES or (keyed and status == IN_FLIGHT_STATUS):
        raise delivery.failed(reason, retry_after=_retry_after(response), **details)
    raise delivery.rejected(reason, **details)
