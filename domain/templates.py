"""Message and payload templates: ``{{ incident.title }}`` placeholders, nothing else.

Deliberately tiny: no expressions, no filters, no attribute access on arbitrary objects,
so a playbook author can't run code, and every placeholder can be checked when the
playbook is validated.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][\w-]*(?:\.[\w-]+)*)\s*\}\}")
_ANY_BRACES = re.compile(r"\{\{(.*?)\}\}", re.S)

# The names a template may use. `steps.<id>.outcome` and `steps.<id>.content` are checked
# separately against the playbook's step ids.
INCIDENT_FIELDS = frozenset(
    {"id", "title", "summary", "severity", "source_url", "dedup_key", "opened_by", "opened_at",
     "status", "playbook_id", "playbook_version", "reports", "url"}
)
STEP_FIELDS = frozenset({"outcome", "content"})


def placeholders(template: Any) -> Iterator[str]:
    """Every placeholder path in a template (a string, or nested lists and dicts of strings)."""
    if isinstance(template, str):
        for match in PLACEHOLDER.finditer(template):
            yield match.group(1)
    elif isinstance(template, Mapping):
        for value in template.values():
            yield from placeholders(value)
    elif isinstance(template, list):
        for value in template:
            yield from placeholders(value)


def unsupported(template: Any) -> Iterator[str]:
    """Every ``{{ ... }}`` that is not a plain placeholder (filters, expressions, typos such
    as ``{{ incident title }}``): `render` would leave it in the text as is."""
    if isinstance(template, str):
        for match in _ANY_BRACES.finditer(template):
            if not PLACEHOLDER.fullmatch(match.group(0)):
                yield match.group(0)
    elif isinstance(template, Mapping):
        for value in template.values():
            yield from unsupported(value)
    elif isinstance(template, list):
        for value in template:
            yield from unsupported(value)


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest known name, or "" if nothing is close."""
    close = difflib.get_close_matches(value, sorted(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_placeholder(path: str, step_ids: set[str]) -> str | None:
    """Return an error message if `path` can't be resolved in a running incident."""
    parts = path.split(".")
    if parts[0] == "incident":
        if len(parts) != 2 or parts[1] not in INCIDENT_FIELDS:
            return f"unknown placeholder {{{{{path}}}}}: incident fields are " + ", ".join(
                sorted(INCIDENT_FIELDS)
            )
        return None
    if parts[0] == "steps":
        if len(parts) != 3 or parts[2] not in STEP_FIELDS:
            return f"unknown placeholder {{{{{path}}}}}: use steps.<step id>.outcome or .content"
        if parts[1] not in step_ids:
            return (f"placeholder {{{{{path}}}}} names unknown step {parts[1]!r}"
                    + did_you_mean(parts[1], step_ids))
        return None
    return f"unknown placeholder {{{{{path}}}}}: it must start with incident. or steps."


def _lookup(path: str, context: Mapping[str, Any]) -> str:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ""
        value = value[part]
    return "" if value is None else str(value)


def render_url(template: str, context: Mapping[str, Any]) -> str:
    """Fill a URL template's placeholders, each value percent-encoded as one component: a
    title such as "Refunds & more?" stays inside its query parameter (or path segment)
    instead of adding parameters or changing the path."""
    return PLACEHOLDER.sub(lambda m: quote(_lookup(m.group(1), context), safe=""), template)


def render(template: Any, context: Mapping[str, Any]) -> Any:
    """Fill placeholders; strings inside lists and dicts are rendered recursively."""
    if isinstance(template, str):
        return PLACEHOLDER.sub(lambda m: _lookup(m.group(1), context), template)
    if isinstance(template, Mapping):
        return {key: render(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, context) for value in template]
    return template
