"""`crisis worker`: run the Temporal worker (workflow + activities) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from core.config import get_settings
from core.logging import configure_logging


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("worker", help="run the Temporal worker")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    settings = get_settings()
    configure_logging(settings.log_level)
    asyncio.run(run_worker(settings))
    return 0
