"""How a failed delivery is reported to Temporal: retry it, or give up at once.

- `DeliveryFailed` is retryable: the channel itself answered "not now" (HTTP 5xx/408/429,
  SMTP 4xx, a receiver that is down).
- `InfrastructureUnavailable` is retryable: *our* side could not work (Redis for the
  idempotency record, the SMTP relay refused/timed out/failed TLS or login). Nothing is
  wrong with the recipient; retry for as long as the incident is open, show "delayed".
- `DeliveryRejected` is not retryable: the channel refused the request itself (HTTP 4xx,
  SMTP 5xx, an unusable address or URL).
- `ActionOutcomeUnknown` is not retryable: an at-most-once action may have reached its
  receiver, so it must not be sent again; the workflow asks a human.
The number and spacing of attempts is the workflow's RetryPolicy, never decided here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

from domain.effects import (
    ACTION_OUTCOME_UNKNOWN,
    DELIVERY_FAILED,
    DELIVERY_REJECTED,
    INFRASTRUCTURE_UNAVAILABLE,
)


def failed(message: str, *, retry_after: timedelta | None = None,
           **details: Any) -> ApplicationError:
    """A temporary failure: 5xx, 408, 429, timeouts, refused connections, SMTP 4xx."""
    return ApplicationError(message, details, type=DELIVERY_FAILED, non_retryable=False,
                            next_retry_delay=retry_after)


def infrastructure(message: str, *, retry_after: timedelta | None = None,
                   **details: Any) -> ApplicationError:
    """Our own dependency is down (Redis, SMTP relay): always retryable."""
    return ApplicationError(message, details, type=INFRASTRUCTURE_UNAVAILABLE,
                            non_retryable=False, next_retry_delay=retry_after)


def is_infrastructure(error: ApplicationError) -> bool:
    return error.type == INFRASTRUCTURE_UNAVAILABLE


def rejected(message: str, **details: Any) -> ApplicationError:
    """A permanent refusal: HTTP 4xx (but 408/429), SMTP 5xx, unusable address."""
    return ApplicationError(message, details, type=DELIVERY_REJECTED, non_retryable=True)


def outcome_unknown(message: str, **details: Any) -> ApplicationError:
    """An at-most-once call may have reached its receiver (a timeout after sending, a 5xx
    that doesn't say nothing was done, a retry after a crash): never retried."""
    return ApplicationError(message, details, type=ACTION_OUTCOME_UNKNOWN, non_retryable=True)


def combine(failures: dict[str, ApplicationError], delivered: list[str],
            **extra: Any) -> ApplicationError:
    """One error for several failed channels: retryable if any of them is; of type
    `InfrastructureUnavailable` if only our infrastructure failed."""
    summary = "; ".join(f"{channel}: {error.message}" for channel, error in failures.items())
    details = {"channels": {channel: error.message for channel, error in failures.items()},
               "delivered": delivered, **extra}
    retryable = [error for error in failures.values() if not error.non_retryable]
    if not retryable:
        return rejected(summary, **details)
    delays = [error.next_retry_delay for error in retryable if error.next_retry_delay]
    delay = max(delays) if delays else None
    if all(is_infrastructure(error) for error in retryable):
        return infrastructure(summary, retry_after=delay, **details)
    return failed(summary, retry_after=delay, **details)
