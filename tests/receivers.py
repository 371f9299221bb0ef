"""Real loopback receivers for delivery tests: a counting HTTP server and an SMTP server.

Both run in background threads, so the code under test talks to them over real sockets
from the test's event loop. Use them as context managers.
"""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers import free_port


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float = 0.0  # time.perf_counter() when it arrived (for latency figures)

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """Records every request and answers with a status sequence whose last value repeats:
    (500,) fails forever, (500, 500, 200) succeeds on the third request."""

    def __init__(self, statuses: Sequence[int] = (200,), *,
                 response_headers: dict[str, str] | None = None,
                 response_body: str = '{"ok": true}') -> None:
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._statuses = list(statuses) or [200]
        self._answered = 0  # requests answered since the sequence was last set
        self._response_headers = dict(response_headers or {})
        self._response_body = response_body.encode()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def answer(self, *statuses: int) -> None:
        """Answer the next requests with this sequence (the last value repeats)."""
        with self._lock:
            self._statuses = list(statuses) or [200]
            self._answered = 0

    def _record(self, request: ReceivedRequest) -> int:
        with self._lock:
            self._requests.append(request)
            index = self._answered
            self._answered += 1
            return self._statuses[min(index, len(self._statuses) - 1)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = receiver._record(ReceivedRequest(
                    method=self.command, path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body, received_at=time.perf_counter()))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver._response_body)))
                for name, value in receiver._response_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(receiver._response_body)

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _StoringHandler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        return self._receiver._receive(envelope.mail_from, list(envelope.rcpt_tos),
                                       bytes(envelope.original_content or envelope.content),
                                       login=login, tls=session.ssl is not None or
                                       server.transport.get_extra_info("ssl_object") is not None)


class SmtpReceiver:
    """An aiosmtpd server that stores accepted messages; `reply` sets its answer to DATA
    (e.g. "451 try later" or "550 no such user") to exercise failures.

    `security="starttls"` requires STARTTLS before anything else, `"tls"` is implicit TLS;
    both use a certificate from a throwaway CA (`ca_file`). `credentials` makes AUTH
    (PLAIN/LOGIN, over TLS only) mandatory. Stored messages get `X-Received-Login` and
    `X-Received-TLS` headers saying how they arrived."""

    def __init__(self, reply: str = "250 Message accepted for delivery", *,
                 security: Literal["none", "starttls", "tls"] = "none",
                 credentials: tuple[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._reply = reply
        self.attempts = 0
        self.auth_failures = 0
        self._messages: list[EmailMessage] = []
        self.port = free_port()
        self._credentials = credentials
        self._tmp = tempfile.TemporaryDirectory(prefix="smtp-ca-")
        self.ca_file = Path(self._tmp.name) / "ca.pem"
        kwargs: dict[str, Any] = {}
        if security != "none":
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(self.ca_file))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            if security == "tls":
                kwargs["ssl_context"] = context
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        if credentials is not None:
            # aiosmtpd only counts STARTTLS as TLS; implicit TLS is TLS from the first byte
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=security == "starttls")
        self._controller = Controller(_StoringHandler(self), hostname="127.0.0.1",
                                      port=self.port, **kwargs)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert self._credentials is not None
        if isinstance(auth_data, LoginPassword) and (
                auth_data.login.decode(), auth_data.password.decode()) == self._credentials:
            return AuthResult(success=True, auth_data=auth_data.login)
        with self._lock:
            self.auth_failures += 1
        return AuthResult(success=False, handled=False)

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    def reply_with(self, reply: str) -> None:
        with self._lock:
            self._reply = reply

    def _receive(self, mail_from: str, rcpt_tos: list[str], content: bytes, *,
                 login: str | None = None, tls: bool = False) -> str:
        with self._lock:
            self.attempts += 1
            if self._reply.startswith("250"):
                message = email.message_from_bytes(content, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                message["X-Envelope-From"] = mail_from
                message["X-Envelope-To"] = ", ".join(rcpt_tos)
                message["X-Received-Login"] = login or ""
                message["X-Received-TLS"] = "yes" if tls else "no"
                self._messages.append(message)
            return self._reply

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._controller.stop()
        self._tmp.cleanup()


class SlowIdempotentReceiver:
    """A publish endpoint that takes `delay` seconds per new request, like a CMS.

    `/dedup/...` honours `Idempotency-Key` as the IETF draft says a receiver should: the
    first request with a key is processed (stored after `delay`) and its answer kept; a
    repeat gets that answer at once with `Idempotent-Replayed: true`; a repeat while the
    first is still being processed gets 409. `/plain/...` can't deduplicate: it stores
    every request it processes. `stored` is what was published; `requests` every arrival.
    """

    def __init__(self, delay: float = 3.0) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._stored: list[ReceivedRequest] = []
        self._answers: dict[str, bytes] = {}
        self._in_flight: set[str] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def stored(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._stored)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: bytes, replayed: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = ReceivedRequest(
                    method=self.command, path=self.path,
                    headers={n.lower(): v for n, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    received_at=time.perf_counter())
                key = request.headers.get("idempotency-key")
                dedup = self.path.startswith("/dedup") and key is not None
                with receiver._lock:
                    receiver._requests.append(request)
                    if dedup and key in receiver._answers:
                        action = "replay"
                    elif dedup and key in receiver._in_flight:
                        action = "conflict"
                    else:
                        action = "process"
                        if dedup:
                            receiver._in_flight.add(str(key))
                    answer = receiver._answers.get(str(key), b"")
                if action == "replay":
                    self._reply(200, answer, replayed=True)
                    return
                if action == "conflict":
                    self._reply(409, b'{"error": "a request with this key is in flight"}')
                    return
                time.sleep(receiver.delay)  # the work: only then is it published
                with receiver._lock:
                    receiver._stored.append(request)
                    answer = json.dumps({"id": len(receiver._stored)}).encode()
                    if dedup:
                        receiver._answers[str(key)] = answer
                        receiver._in_flight.discard(str(key))
                self._reply(200, answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
