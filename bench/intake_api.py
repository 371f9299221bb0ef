"""`python -m bench.intake_api --port N [--path P]`: the API for the intake storm bench.

Configured by `CRISIS_*` like `crisis api`. `--path per-report` swaps in the previous intake
path, one update-with-start per report with no single-flight, for comparison;
`signals` and `batch-signal` are the shipped intake (which sends one `add_reports` signal per
batch when the workflow has that handler: the `batch-signal` path's worker runs the
prototype in `bench.batch_workflow`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from api.intake import Intake, IntakeResult, _Pending
from api.main import create_app
from core.config import get_settings
from core.logging import configure_logging
from domain.incident import Report, StartIncident


class PerReportIntake(Intake):
    """The intake before single-flight: every report is its own update-with-start."""

    async def submit(self, key: str, report: Report, build_start: Callable[[str], StartIncident],
                     keyed: bool = False, ack: bool = False) -> IntakeResult:
        future: asyncio.Future[IntakeResult] = asyncio.get_running_loop().create_future()
        result, _ = await self._open(key, _Pending(report, build_start, keyed, future))
        return result


INTAKES: dict[str, type[Intake]] = {"per-report": PerReportIntake}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake_api")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", choices=["signals", "batch-signal", *INTAKES],
                        default="signals")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    chosen = INTAKES.get(args.path)
    if chosen is not None:
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
            async with inner(app_):
                s = app_.state.services
                s.intake = chosen(s.temporal, s.redis, s.settings, s.registry,
                                           s.routing)
                yield

        app.router.lifespan_context = lifespan
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
