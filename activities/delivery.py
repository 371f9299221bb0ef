"""How a failed delivery is reported to Temporal: retry it, or give up at once.

`DeliveryFailed` is retryable (the workflow's RetryPolicy bounds the attempts);
`DeliveryRejected` is not, because the receiver said the request itself is wrong.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

DELIVERY_FAILED = "DeliveryFailed"
DELIVERY_REJECTED = "DeliveryRejected"


def failed(message: str, *, retry_after: timedelta | None = None,
           **details: Any) -> ApplicationError:
    """A temporary failure: 5xx, 408, 429, timeouts, refused connections, SMTP 4xx."""
    return ApplicationError(message, details, type=DELIVERY_FAILED, non_retryable=False,
                            next_retry_delay=retry_after)


def rejected(message: str, **details: Any) -> ApplicationError:
    """A permanent refusal: HTTP 4xx (but 408/429), SMTP 5xx, unusable address."""
    return ApplicationError(message, details, type=DELIVERY_REJECTED, non_retryable=True)


def combine(failures: dict[str, ApplicationError], delivered: list[str]) -> ApplicationError:
    """One error for several failed channels: retryable if any of them is."""
    summary = "; ".join(f"{channel}: {error.message}" for channel, error in failures.items())
    details = {"channels": {channel: error.message for channel, error in failures.items()},
               "delivered": delivered}
    retryable = [error for error in failures.values() if not error.non_retryable]
    if not retryable:
        return rejected(summary, **details)
    delays = [error.next_retry_delay for error in retryable if error.next_retry_delay]
    return failed(summary, retry_after=max(delays) if delays else None, **details)
