"""Pinned "todays" for every test whose outcome depends on the date.

The time-skipping server starts at the wall clock and can only move forward, so the pinned
days lie far in the future; a test moves the virtual clock to one of them before it starts
(`run_dry_run(today=...)`, `crisis dry-run --today`, `Harness.advance_to_today`). The demo
rosters rotate weekly from Monday 2026-01-05 09:00 UTC, so these three cover:

- an even roster week (eve-exec is the executive on call),
- an odd roster week (vera-vp is on call),
- a week in which New York changes to daylight-saving time (Sunday 2090-03-12).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

EVEN_WEEK = datetime(2090, 2, 22, 12, 0, tzinfo=UTC)
ODD_WEEK = datetime(2090, 3, 1, 12, 0, tzinfo=UTC)
DST_WEEK = datetime(2090, 3, 8, 12, 0, tzinfo=UTC)

PINNED_TODAYS = [
    pytest.param(EVEN_WEEK, id="even-roster-week"),
    pytest.param(ODD_WEEK, id="odd-roster-week"),
    pytest.param(DST_WEEK, id="dst-change-week"),
]
