"""One-line errors for every `crisis` command: `crisis: error: <what>`, exit status 1.

`CommandError` is what a command raises for a problem the person at the terminal can fix
(a server that doesn't answer, a refused request); `cli.main` prints it on one line and
exits 1. Unreachable Temporal and Redis are turned into one too, wherever they surface.
"""

from __future__ import annotations


class CommandError(Exception):
    """A failure worded for the terminal; `cli.main` prints it as one line, exit 1."""


def one_line(exc: BaseException) -> str | None:
    """The one-line message for a failure to reach a server, or None if it is a bug."""
    from core.temporal_client import TemporalUnavailable
    from core.tracing import TracingUnavailable

    if isinstance(exc, CommandError | TemporalUnavailable | TracingUnavailable):
        return str(exc)
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a runtime dependency
        return None
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        from core.config import get_settings

        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"cannot reach Redis at {_without_password(get_settings().redis_url)}: {reason}"
    return None


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url
