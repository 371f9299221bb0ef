"""SMTP delivery with the stdlib `smtplib` (blocking: call it through `asyncio.to_thread`).

SMTP 5xx replies to the recipient or the message are permanent rejections; 4xx replies are
retryable (`DeliveryFailed`). A relay we cannot use at all -- refused or dropped
connections, timeouts, TLS or login failures -- is our infrastructure, not the recipient:
`InfrastructureUnavailable`, retried for as long as the workflow's policy allows.
Message-IDs derive from the idempotency key, so a receiver that deduplicates by Message-ID
also drops a copy sent by a retried attempt.

Security: "starttls" upgrades a plain connection (port 587), "tls" is implicit TLS (465);
both verify the server certificate (against `ca_file` if given). Login (AUTH) is used when
a username is set, and only over TLS unless the relay is on loopback.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Literal

from temporalio.exceptions import ApplicationError

from activities import delivery
from core.config import Settings


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    timeout_seconds: float = 10.0
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: str | None = None  # never logged; repr hides it
    ca_file: Path | None = None

    def __repr__(self) -> str:
        return (f"SmtpSettings(host={self.host!r}, port={self.port}, security={self.security!r},"
                f" username={self.username!r}, password={'***' if self.password else None})")

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSettings:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(host=settings.smtp_host, port=settings.smtp_port,
                   sender=settings.smtp_sender, timeout_seconds=settings.http_timeout_seconds,
                   security=settings.smtp_security, username=settings.smtp_username,
                   password=password, ca_file=settings.smtp_ca_file)

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def build_message(sender: str, to_name: str, to_address: str, subject: str, body: str,
                  idempotency_key: str, incident_id: str,
                  html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = formataddr((to_name, to_address))
    message["Subject"] = subject.replace("\r", " ").replace("\n", " ")
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    message["Message-ID"] = f"<{digest}@crisis-engine>"
    message["X-Crisis-Incident"] = incident_id
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


# "authentication / encryption required", "auth mechanism too weak", "login failed":
# the relay refuses *us*, whatever the recipient; fix the relay settings, then it delivers.
RELAY_REFUSES_US = frozenset({530, 534, 535, 538})


def _classify(code: int, what: str) -> ApplicationError:
    if code in RELAY_REFUSES_US:
        return delivery.infrastructure(
            f"SMTP relay refused us for {what}: {code} (check CRISIS_SMTP_SECURITY and the "
            "login)", smtp_code=code)
    if code >= 500:
        return delivery.rejected(f"SMTP server refused {what}: {code}", smtp_code=code)
    return delivery.failed(f"SMTP server deferred {what}: {code}", smtp_code=code)


def _open(settings: SmtpSettings) -> smtplib.SMTP:
    if settings.security == "tls":
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_seconds,
                                context=settings.tls_context())
    return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)


def _relay(settings: SmtpSettings) -> str:
    return f"SMTP relay {settings.host}:{settings.port}"


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send one message; raise a classified ApplicationError on failure (blocking)."""
    try:
        with _open(settings) as smtp:
            if settings.security == "starttls":
                smtp.starttls(context=settings.tls_context())
            if settings.username:
                if settings.security == "none" and settings.host not in (
                        "127.0.0.1", "localhost", "::1"):
                    raise delivery.infrastructure(
                        f"{_relay(settings)}: refusing to send the SMTP password without "
                        "TLS; set CRISIS_SMTP_SECURITY=starttls or tls")
                smtp.login(settings.username, settings.password or "")
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:  # our credentials, not the recipient
        raise delivery.infrastructure(
            f"{_relay(settings)} refused our login: {exc.smtp_code}",
            smtp_code=exc.smtp_code) from exc
    except smtplib.SMTPNotSupportedError as exc:  # no STARTTLS / AUTH offered
        raise delivery.infrastructure(f"{_relay(settings)}: {exc}") from exc
    except ssl.SSLError as exc:  # handshake or certificate verification failed
        raise delivery.infrastructure(
            f"{_relay(settings)} TLS failed: {type(exc).__name__}: {exc}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise _classify(min(codes, default=550), "the recipient") from exc
    except smtplib.SMTPConnectError as exc:  # a greeting other than 220: try again later
        raise delivery.infrastructure(f"{_relay(settings)} unavailable: {exc.smtp_code}",
                                      smtp_code=exc.smtp_code) from exc
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, HELO...
        raise _classify(exc.smtp_code, "the message") from exc
    except (smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timed out
        raise delivery.infrastructure(
            f"{_relay(settings)} failed: {type(exc).__name__}: {exc}") from exc
