"""One message, rendered and escaped per channel format.

A notification is composed from structured parts (`Message`): a subject, body paragraphs of
*untrusted* text (incident titles, reports, draft statements), page links built by the
engine, and optional one-click action links. Each channel renders the parts itself and
escapes the text for its own format, so text typed by any employee can never become markup:

- Slack mrkdwn (webhook channel): `& < >` escaped, so `<!channel>` or `<https://x|label>`
  arrive as literal text; links are the only `<url|label>` tokens in the output.
- HTML email: `html.escape` on every text part, links only from `Message.links/actions`,
  always with a plain-text alternative.
- Markdown (Apprise services that take Markdown): every Markdown metacharacter in user text
  is backslash-escaped, so `[click](https://evil)` stays text.
- Plain text / JSON: text as is; JSON bodies are built with `json` (never by concatenation).

Action links (approve / reject) are signed elsewhere (`core.action_links`); pass them to
`compose(..., action_links=[(label, url), ...])` or in `NotifyRequest.action_links`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from domain.effects import NotifyRequest

SLACK_TEXT_LIMIT = 3000
SLACK_HEADER_LIMIT = 150


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class Message:
    subject: str
    paragraphs: tuple[str, ...]
    links: tuple[Link, ...] = ()
    actions: tuple[Link, ...] = ()
    context: str = ""
    meta: dict[str, str] = field(default_factory=dict)


def safe_url(url: str) -> str | None:
    """The URL if it is an absolute http(s) URL with a host, else None (never `javascript:`)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    # Percent-encode characters that could end a link token in any of the formats.
    return quote(url.strip(), safe=":/?#[]@!$&'*+,;=%-._~")


def _links(pairs: Iterable[tuple[str, str]]) -> tuple[Link, ...]:
    out: list[Link] = []
    for label, url in pairs:
        checked = safe_url(url)
        if checked is not None:
            out.append(Link(label=label, url=checked))
    return tuple(out)


def page_links(public_url: str, incident_id: str, task_id: str | None) -> list[tuple[str, str]]:
    """Links to the web pages (not the JSON API) of the task and its incident."""
    base = public_url.rstrip("/")
    links = []
    if task_id:
        links.append(("Open the task", f"{base}/ui/tasks/{quote(task_id, safe='')}"))
    links.append(("Open the incident", f"{base}/ui/incidents/{quote(incident_id, safe='')}"))
    return links


def _paragraphs(text: str) -> list[str]:
    return [part.strip("\n") for part in re.split(r"\n\s*\n", text) if part.strip()]


def compose(req: NotifyRequest, public_url: str,
            action_links: Sequence[tuple[str, str]] = ()) -> Message:
    """The structured message for `req`. HOOK for signed one-click actions: `action_links`
    (label, url) pairs, e.g. [("Approve", url), ("Reject with a reason", url)], are added to
    those in `req.action_links` and rendered as buttons/links on every channel."""
    body = list(req.body) if req.body else _paragraphs(req.message)
    links = [*page_links(public_url, req.incident_id, req.task_id),
             *((link.label, link.url) for link in req.links)]
    actions = [*((link.label, link.url) for link in req.action_links), *action_links]
    context = f"incident {req.incident_id} · {req.kind}"
    return Message(subject=one_line(req.subject), paragraphs=tuple(body),
                   links=_links(links), actions=_links(actions), context=context)


def one_line(text: str) -> str:
    """Header-safe text: no CR/LF (no header injection in mail, one line in chat)."""
    return re.sub(r"[\r\n\t]+", " ", text).strip()


# ---- Slack mrkdwn ---------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack's own rule: only `&`, `<` and `>` are control characters in mrkdwn text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(link: Link) -> str:
    label = slack_escape(link.label).replace("|", "¦")
    return f"<{link.url}|{label}>"


def slack(message: Message) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body: `text` as fallback, plus `blocks`."""
    body = "\n\n".join(slack_escape(p) for p in message.paragraphs)
    links = " · ".join(_slack_link(link) for link in message.links)
    fallback = "\n".join(part for part in (slack_escape(message.subject), body, links) if part)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": message.subject[:SLACK_HEADER_LIMIT]}},
    ]
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": body[:SLACK_TEXT_LIMIT]}})
    if message.actions:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": link.label[:75]},
             "url": link.url} for link in message.actions]})
    if links:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": links}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": slack_escape(message.context)[:300]}]})
    return {"text": fallback[:SLACK_TEXT_LIMIT], "blocks": blocks}


# ---- HTML and plain text (email) ---------------------------------------------------------


def _html_text(text: str) -> str:
    return html.escape(text, quote=True).replace("\n", "<br>\n")


def _html_link(link: Link) -> str:
    return f'<a href="{html.escape(link.url, quote=True)}">{html.escape(link.label)}</a>'


def html_body(message: Message) -> str:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(message.subject)}</title></head><body>",
             f"<h2>{html.escape(message.subject)}</h2>"]
    parts += [f"<p>{_html_text(p)}</p>" for p in message.paragraphs]
    if message.actions:
        parts.append("<p>" + " &nbsp; ".join(_html_link(a) for a in message.actions) + "</p>")
    if message.links:
        parts.append("<p>" + " &middot; ".join(_html_link(a) for a in message.links) + "</p>")
    parts.append(f"<p><small>{html.escape(message.context)}</small></p></body></html>")
    return "\n".join(parts)


def text_body(message: Message, *, with_subject: bool = False) -> str:
    """Plain text: user text as is (no format interprets it), links spelled out."""
    parts = [message.subject] if with_subject else []
    parts += list(message.paragraphs)
    parts += [f"{link.label}: {link.url}" for link in message.actions]
    parts += [f"{link.label}: {link.url}" for link in message.links]
    parts.append(f"-- {message.context}")
    return "\n\n".join(parts)


# ---- Markdown ------------------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&])")


def markdown_escape(text: str) -> str:
    """Backslash-escape every CommonMark metacharacter (and `<`, `&` for raw HTML)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _markdown_link(link: Link) -> str:
    url = link.url.replace("(", "%28").replace(")", "%29").replace(" ", "%20")
    return f"[{markdown_escape(link.label)}]({url})"


def markdown(message: Message) -> str:
    parts = [markdown_escape(p).replace("\n", "  \n") for p in message.paragraphs]
    if message.actions:
        parts.append(" · ".join(f"**{_markdown_link(a)}**" for a in message.actions))
    if message.links:
        parts.append(" · ".join(_markdown_link(a) for a in message.links))
    parts.append(f"_{markdown_escape(message.context)}_")
    return "\n\n".join(parts)
