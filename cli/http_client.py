"""The HTTP API as the client commands (`crisis incidents`, `crisis tasks`) use it.

The API's address comes from `--api-url` or `CRISIS_API_URL` (default
`http://127.0.0.1:8000`), the bearer token from `CRISIS_TOKEN` only: never a command-line
flag, which would show in `ps` and shell history. Every failure is a `CommandError` with one
line: no answer, or the API's own `{"error", "detail"}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

import httpx

from cli.errors import CommandError

DEFAULT_API_URL = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 30.0


def add_client_options(parser: argparse.ArgumentParser, *, prints_data: bool = True) -> None:
    parser.add_argument("--api-url", default=None,
                        help=f"the API (default: CRISIS_API_URL, else {DEFAULT_API_URL})")
    if prints_data:
        parser.add_argument("--json", action="store_true",
                            help="print the API's JSON answer instead of a table")


def api_url(args: argparse.Namespace) -> str:
    url: str = args.api_url or os.environ.get("CRISIS_API_URL") or DEFAULT_API_URL
    return url.rstrip("/")


def token() -> str:
    value = os.environ.get("CRISIS_TOKEN", "").strip()
    if not value:
        raise CommandError("set CRISIS_TOKEN to your API token (`make run` prints the demo "
                           "users' tokens; `crisis users issue-tokens` issues them)")
    return value


def call(args: argparse.Namespace, method: str, path: str, *,
         params: dict[str, Any] | None = None, body: dict[str, Any] | None = None) -> Any:
    """One request; the decoded JSON answer, or a `CommandError` naming what went wrong."""
    base = api_url(args)
    headers = {"Authorization": f"Bearer {token()}", "Accept": "application/json"}
    if method == "POST":
        # a retried command (after a timeout) never acts twice
        headers["Idempotency-Key"] = f"cli-{uuid.uuid4().hex}"
    query = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        response = httpx.request(method, f"{base}{path}", params=query, json=body,
                                 headers=headers, timeout=TIMEOUT_SECONDS)
    except httpx.TimeoutException:
        raise CommandError(f"the API at {base} did not answer within "
                           f"{TIMEOUT_SECONDS:.0f}s") from None
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CommandError(f"cannot reach the API at {base}: {reason}") from None
    if response.status_code >= 400:
        raise CommandError(f"{method} {path}: {response.status_code} {_detail(response)}")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise CommandError(f"{method} {path}: the answer is not JSON") from None


def _detail(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(payload, dict):
        detail = payload.get("detail") or payload.get("error") or ""
        errors = payload.get("errors") or []
        text = str(detail)
        if errors and isinstance(errors, list):
            fields = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg', '')}"
                               for e in errors[:3] if isinstance(e, dict))
            text = f"{text} ({fields})" if fields else text
        return " ".join(text.split()) or response.reason_phrase
    return response.reason_phrase


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """`columns` = (header, key); one aligned line per row; `(none)` for an empty list."""
    if not rows:
        print("(none)")
        return
    cells = [[_cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [max(len(header), *(len(c[i]) for c in cells))
              for i, (header, _) in enumerate(columns)]
    print("  ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip())
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "id" in value:
        return str(value["id"])
    text = " ".join(str(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def print_page(args: argparse.Namespace, path: str, params: dict[str, Any],
               columns: list[tuple[str, str]]) -> int:
    """`GET path?params` (a list page) printed as JSON (`--json`) or as a table."""
    page = call(args, "GET", path, params=params)
    if args.json:
        print_json(page)
    else:
        print_table(page["items"], columns)
    return 0
