"""`crisis stack run`: the whole system on one machine (Temporal, Redis, worker, API).

The process management lives in `core.devstack`; this module parses the options and prints
what a newcomer needs once the stack is ready: the URLs, the demo users and their tokens,
and where the logs go.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import get_settings

if TYPE_CHECKING:
    from core.devstack import Stack


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("stack", help="run the embedded development stack")
    actions = parser.add_subparsers(dest="stack_command", required=True)
    run = actions.add_parser(
        "run", help="start Temporal, Redis, the worker and the API; Ctrl-C stops them all",
        description="Start the Temporal dev server, Redis, the worker and the API on this "
                    "machine, with their data under --data-dir, and print the demo users' "
                    "tokens. Ctrl-C (or SIGTERM) stops everything; data persists across runs.")
    run.add_argument("--data-dir", type=Path, default=Path(".data"),
                     help="where Temporal's SQLite file, Redis's AOF, tokens and logs live "
                          "(default: .data)")
    run.add_argument("--host", default="127.0.0.1",
                     help="address the API binds (default: %(default)s)")
    run.add_argument("--api-port", type=_port, default=8000, help="default: %(default)s")
    run.add_argument("--temporal-port", type=_port, default=7233, help="default: %(default)s")
    run.add_argument("--temporal-ui-port", type=_port, default=8233, help="default: %(default)s")
    run.add_argument("--redis-port", type=_port, default=6379, help="default: %(default)s")
    run.add_argument("--smtp-port", type=_port, default=1025,
                     help="the SMTP sink that keeps emails in <data-dir>/mail "
                          "(default: %(default)s)")
    run.add_argument("--worker-metrics-port", type=_port_or_off, default=0,
                     help="serve the worker's Prometheus metrics on this port "
                          "(default: 0, off)")
    run.add_argument("--startup-timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long each server may take to become ready (default: %(default)s)")
    run.set_defaults(handler=run_stack)


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def _port_or_off(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def run_stack(args: argparse.Namespace) -> int:
    from core.devstack import Stack, StackConfig  # heavy imports only for this command

    config = StackConfig(
        data_dir=args.data_dir.resolve(), host=args.host, api_port=args.api_port,
        temporal_port=args.temporal_port, temporal_ui_port=args.temporal_ui_port,
        redis_port=args.redis_port, smtp_port=args.smtp_port,
        worker_metrics_port=args.worker_metrics_port,
        namespace=get_settings().temporal_namespace, startup_timeout=args.startup_timeout,
    )
    return Stack(config).run(on_ready=print_banner)


def print_banner(stack: Stack) -> None:
    from core.devstack import load_demo_users, smtp_sink_available

    cfg = stack.config
    users = load_demo_users(cfg.demo_tokens_file)
    width = max([len(u.id) for u in users] + [2])
    roles_width = max([len(",".join(u.roles)) for u in users] + [5])
    lines = [
        "",
        "crisis-engine is running.",
        f"  API          {cfg.api_url}   (OpenAPI docs: {cfg.api_url}/docs)",
        f"  Web UI       {cfg.api_url}/",
        f"  Temporal UI  {cfg.temporal_ui_url}",
        f"  Temporal     {cfg.temporal_address} (namespace {cfg.namespace})",
        f"  Redis        {cfg.redis_url} (Valkey)",
        f"  Metrics      {cfg.api_url}/metrics"
        + (f", worker {cfg.worker_metrics_url}" if cfg.worker_metrics_url else ""),
        f"  Emails       {cfg.mail_dir}/new/ (SMTP sink on 127.0.0.1:{cfg.smtp_port})"
        if smtp_sink_available() else "  Emails       not caught (aiosmtpd is not installed)",
        f"  Data         {cfg.data_dir}",
        f"  Logs         {cfg.logs_dir}/{{temporal,redis,smtp,users,worker,api}}.log",
        "",
        f"Demo users (tokens also in {cfg.demo_tokens_file}):",
        f"  {'id':<{width}}  {'roles':<{roles_width}}  token",
        *(f"  {u.id:<{width}}  {','.join(u.roles):<{roles_width}}  {u.token}   ({u.name})"
          for u in users),
        "",
        "Try:",
        f"  curl -H 'Authorization: Bearer <token>' {cfg.api_url}/incidents",
        "",
        "Press Ctrl-C to stop everything.",
    ]
    print("\n".join(lines), flush=True)
