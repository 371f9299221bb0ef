"""HTTP delivery for webhooks and actions, with the failure rules of `activities.delivery`.

(The Slack-shaped webhook body is rendered, and escaped, by `activities.render.slack`.)

2xx succeeds. 408, 429, 5xx and transport errors are retryable; any other status, a bad
URL or an unsupported scheme is a permanent rejection. A 429's `Retry-After` (in seconds)
becomes the delay before Temporal's next attempt.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from activities import delivery

RETRYABLE_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER = timedelta(hours=1)
EXCERPT_CHARS = 500


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("retry-after", "")
    if not value.isdigit():
        return None
    return min(timedelta(seconds=int(value)), MAX_RETRY_AFTER)


async def send(client: httpx.AsyncClient, method: str, url: str, payload: dict[str, Any],
               headers: httpx.Headers) -> httpx.Response:
    """Send one JSON request; return the 2xx response or raise a classified ApplicationError."""
    try:
        response = await client.request(method, url, json=payload, headers=headers)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise delivery.rejected(f"unusable URL {url!r}: {exc}", url=url) from exc
    except httpx.TransportError as exc:  # connect/read/write errors and timeouts
        raise delivery.failed(f"{method} {url} failed: {type(exc).__name__}: {exc}",
                              url=url) from exc
    if response.is_success:
        return response
    excerpt = response.text[:EXCERPT_CHARS]
    reason = f"{method} {url} answered HTTP {response.status_code}"
    if response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES:
        raise delivery.failed(reason, retry_after=_retry_after(response), url=url,
                              status_code=response.status_code, body=excerpt)
    raise delivery.rejected(reason, url=url, status_code=response.status_code, body=excerpt)
