"""The `apprise` channel: Teams, SMS, PagerDuty, Opsgenie, Google Chat, Matrix, push... via
Apprise (https://github.com/caronc/apprise), one service at a time.

The secret-bearing service URLs live in an Apprise config file (YAML or TEXT format, path in
`CRISIS_APPRISE_CONFIG`), each URL tagged; a person's `apprise_tags` in the directory select
their services. The directory, requests, logs and receipts only ever carry tags, service
names and a short hash of the URL (`url_id`), never a URL.

Each matched service is one delivery target with its own idempotency record, so a retry
re-sends only to the services that have not accepted the message yet. Apprise makes no
retries of its own (`retry=0`, forced even if a URL asks for more): Temporal's RetryPolicy
is in charge. Apprise plugins report success as a bool; a failure is classified from the
HTTP status the plugin logged: 4xx (but 408/429) is a permanent refusal, anything else
(5xx, connection errors, timeouts) is retryable.
"""

from __future__ import annotations

import hashlib
import logging
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apprise
import structlog
from temporalio.exceptions import ApplicationError

from activities import delivery, render

log = structlog.get_logger("crisis.apprise")

# Apprise logs through stdlib logging; keep its chatter (which can name hosts) out of our log
# stream. Its per-call capture (`AppriseResult.logs()`) still sees it: we read status codes.
logging.getLogger("apprise").propagate = False

_HTTP_ERROR = re.compile(r"error=(\d{3})\b")
RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class AppriseTarget:
    tag: str
    url: str  # secret: never log, never put in a result
    service_name: str
    url_id: str  # sha256 of the URL, 12 hex digits: stable and safe to show

    @property
    def label(self) -> str:
        return f"apprise:{self.tag} {self.service_name}#{self.url_id[:8]}"

    def __repr__(self) -> str:  # keep the URL out of tracebacks and reprs
        return f"AppriseTarget({self.label!r})"


def _url_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


class AppriseChannel:
    """Loads the tagged service URLs and delivers one message to one service."""

    def __init__(self, config_path: Path | None, *, timeout_seconds: float = 10.0) -> None:
        self._path = config_path
        self._timeout = timeout_seconds
        self._asset = apprise.AppriseAsset(default_service_retry=0, secure_logging=True)
        self._loaded_mtime: float | None = None
        self._by_tag: dict[str, list[AppriseTarget]] = {}

    @property
    def configured(self) -> bool:
        return self._path is not None

    def _load(self) -> None:
        """(Re)load the config file when it changed; a broken file is our infrastructure."""
        assert self._path is not None
        try:
            info = self._path.stat()
        except OSError as exc:
            raise delivery.infrastructure(
                f"Apprise config {self._path} unreadable: {type(exc).__name__}") from exc
        if self._loaded_mtime == info.st_mtime:
            return
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("apprise_config_not_private", path=str(self._path),
                        mode=oct(stat.S_IMODE(info.st_mode)),
                        hint="it holds secrets: chmod 600")
        config = apprise.AppriseConfig(asset=self._asset, recursion=0)  # no includes
        if not config.add(str(self._path)):
            raise delivery.infrastructure(f"Apprise config {self._path} could not be parsed")
        by_tag: dict[str, list[AppriseTarget]] = {}
        for service in config.services():
            url = str(service.url(privacy=False))  # type: ignore[no-untyped-call]
            for tag in service.tags:
                by_tag.setdefault(str(tag), []).append(AppriseTarget(
                    tag=str(tag), url=url, service_name=str(service.service_name),
                    url_id=_url_id(url)))
        self._by_tag = by_tag
        self._loaded_mtime = info.st_mtime
        log.info("apprise_config_loaded", path=str(self._path), tags=len(by_tag),
                 services=sum(len(t) for t in by_tag.values()))

    def targets(self, tags: Iterable[str]) -> tuple[list[AppriseTarget], list[str]]:
        """The services for `tags` (each URL once) and the tags that matched nothing."""
        if self._path is None:
            return [], list(tags)
        self._load()
        seen: set[str] = set()
        found: list[AppriseTarget] = []
        unknown: list[str] = []
        for tag in tags:
            matched = self._by_tag.get(tag, [])
            if not matched:
                unknown.append(tag)
            for target in matched:
                if target.url_id not in seen:
                    seen.add(target.url_id)
                    found.append(target)
        return found, unknown

    async def send(self, target: AppriseTarget, message: render.Message) -> None:
        """Deliver to one service, or raise a classified ApplicationError."""
        try:
            service = apprise.Apprise.instantiate(target.url, asset=self._asset)
        except Exception as exc:  # a plugin that cannot parse its own URL
            raise delivery.rejected(f"{target.label}: unusable Apprise URL "
                                    f"({type(exc).__name__})", target=target.label) from None
        if not service:
            raise delivery.rejected(f"{target.label}: unusable Apprise URL",
                                    target=target.label)
        service.retry = 0  # Temporal retries, Apprise never does
        body_format = service.resolve_format(None)
        if self._is_slack(service):
            # Apprise's Slack plugin turns `<!channel>` (even escaped) back into a mention in
            # Markdown mode; in text mode it escapes `& < >` itself.
            body_format = apprise.NotifyFormat.TEXT
        title, body = self._body(message, body_format)
        sender = apprise.Apprise(asset=self._asset)
        sender.add(service)
        result = await sender.async_notify(body=body, title=title, body_format=body_format,
                                           timeout=self._timeout, log_level=logging.WARNING)
        if result:
            return
        raise self._classify(target, result)

    @staticmethod
    def _is_slack(service: Any) -> bool:
        protocols = [service.protocol, getattr(service, "secure_protocol", None)]
        flat: list[str] = []
        for proto in protocols:
            flat += list(proto) if isinstance(proto, list | tuple) else [str(proto)]
        return any(p.startswith("slack") for p in flat)

    @staticmethod
    def _body(message: render.Message, body_format: str) -> tuple[str, str]:
        """The body rendered in the format the service takes, so Apprise converts nothing."""
        if body_format == apprise.NotifyFormat.HTML:
            return message.subject, render.html_body(message)
        if body_format == apprise.NotifyFormat.MARKDOWN:
            return render.markdown_escape(message.subject), render.markdown(message)
        return message.subject, render.text_body(message)

    @staticmethod
    def _classify(target: AppriseTarget, result: Any) -> ApplicationError:
        codes = [int(code) for entry in result.logs()
                 for code in _HTTP_ERROR.findall(str(entry.message))]
        status = getattr(result, "status", None)
        if status == apprise.AppriseResultStatus.TIMEOUT:
            return delivery.failed(f"{target.label}: timed out", target=target.label)
        if codes:
            code = codes[-1]
            reason = f"{target.label}: {target.service_name} answered HTTP {code}"
            if 400 <= code < 500 and code not in RETRYABLE_STATUSES:
                return delivery.rejected(reason, target=target.label, status_code=code)
            return delivery.failed(reason, target=target.label, status_code=code)
        return delivery.failed(f"{target.label}: {target.service_name} delivery failed "
                               "(connection error or no answer)", target=target.label)
