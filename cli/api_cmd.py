"""`crisis api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

from core.config import get_settings
from core.logging import configure_logging


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("api", help="serve the HTTP API")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level)
    # uvicorn's own access log would duplicate the API's one JSON line per request
    uvicorn.run(create_app(settings), host=args.host, port=args.port, access_log=False,
                log_level=settings.log_level.lower(), proxy_headers=False)
    return 0
