"""`crisis worker`: run the Temporal worker (workflow + activities) until SIGINT/SIGTERM.

Before polling it checks that Temporal and Redis answer; if one doesn't, it exits 1 with one
line naming it (`crisis: error: cannot reach Temporal at ...`).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.errors import CommandError
from core.config import get_settings
from core.logging import configure_logging


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("worker", help="run the Temporal worker")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Temporal SDK and domain metrics (Prometheus) on this port "
                             "(default: CRISIS_WORKER_METRICS_PORT; 0 = off)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    settings = get_settings()
    if args.metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": args.metrics_port})
    configure_logging(settings.log_level)
    try:
        asyncio.run(run_worker(settings))
    except ValueError as exc:
        if "Prometheus" not in str(exc):
            raise
        raise CommandError(
            f"cannot serve worker metrics on {settings.worker_metrics_host}:"
            f"{settings.worker_metrics_port}: {' '.join(str(exc).split())}") from None
    return 0
