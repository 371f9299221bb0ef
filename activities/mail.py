"""SMTP delivery with the stdlib `smtplib` (blocking: call it through `asyncio.to_thread`).

SMTP 5xx replies are permanent rejections; 4xx replies, dropped connections and network
errors are retryable. Message-IDs derive from the idempotency key, so a receiver that
deduplicates by Message-ID also drops a copy sent by a retried attempt.
"""

from __future__ import annotations

import hashlib
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr

from temporalio.exceptions import ApplicationError

from activities import delivery
from core.config import Settings


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSettings:
        return cls(host=settings.smtp_host, port=settings.smtp_port,
                   sender=settings.smtp_sender, timeout_seconds=settings.http_timeout_seconds)


def build_message(sender: str, to_name: str, to_address: str, subject: str, body: str,
                  idempotency_key: str, incident_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = formataddr((to_name, to_address))
    message["Subject"] = subject
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    message["Message-ID"] = f"<{digest}@crisis-engine>"
    message["X-Crisis-Incident"] = incident_id
    message.set_content(body)
    return message


def _classify(code: int, what: str) -> ApplicationError:
    if code >= 500:
        return delivery.rejected(f"SMTP server refused {what}: {code}", smtp_code=code)
    return delivery.failed(f"SMTP server deferred {what}: {code}", smtp_code=code)


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send one message; raise a classified ApplicationError on failure (blocking)."""
    try:
        with smtplib.SMTP(settings.host, settings.port,
                          timeout=settings.timeout_seconds) as smtp:
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise _classify(min(codes, default=550), "the recipient") from exc
    except smtplib.SMTPConnectError as exc:  # a greeting other than 220: try again later
        raise delivery.failed(f"SMTP server unavailable: {exc.smtp_code}",
                              smtp_code=exc.smtp_code) from exc
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, HELO...
        raise _classify(exc.smtp_code, "the message") from exc
    except (smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timed out
        raise delivery.failed(
            f"SMTP {settings.host}:{settings.port} failed: {type(exc).__name__}: {exc}") from exc
