"""HTTP adapter for the demo Messages API, and `DemoBackend` to run it.

The handler only moves bytes: it decodes the request, asks
:mod:`.scenarios` what to answer and :mod:`.messages` how to encode it, and
writes the result at the planned times. Log lines use ``<`` for received,
``>`` for sent, ``=`` for state and ``!`` for errors.
"""

from __future__ import annotations

import collections
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from .limits import LimitRefusal, LimitWindows
from .messages import Step, count_tokens, message_json, stream_steps
from .scenarios import ApiError, DemoSettings, Reply, conversation_name, is_auxiliary, plan_reply, prompt_text

__all__ = ["DemoBackend", "RequestRecord"]

Logger = Callable[[str], None]

_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request the backend answered, for tests and diagnostics."""

    method: str
    path: str
    scenario: str
    stream: bool
    status: int
    # The user's text as the scenario rules saw it; empty for other calls.
    prompt: str = ""


class _Server(ThreadingHTTPServer):
    """A threading server that carries the backend's shared state."""

    daemon_threads = True
    # Many short CLI runs in a row must not wait for TIME_WAIT sockets.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: DemoBackend) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.backend = backend
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away (an interrupted turn drops its request, even during a
        # "think" silence before any byte) is normal here, not a traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError)):
            self.backend.log(f"! client went away: {error!r}")
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes Messages API calls; everything else gets an Anthropic 404."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        request = self._read_json()
        if request is None:
            return
        if path == "/v1/messages":
            self._messages(request)
        elif path == "/v1/messages/count_tokens":
            self._count_tokens(request)
        else:
            self._not_found("POST")

    def do_GET(self) -> None:
        if urlsplit(self.path).path in ("/", "/health"):
            self._send_json(200, {"status": "ok"})
            self._record(RequestRecord("GET", "/health", "health", False, 200))
        else:
            self._not_found("GET")

    def log_message(self, format: str, *args: Any) -> None:
        # http.server writes every request to stderr; the backend logs its own
        # lines only when asked to, so the default is quiet.
        return

    def _backend(self) -> DemoBackend:
        return self.server.backend

    def _read_json(self) -> dict[str, Any] | None:
        length = _content_length(self.headers.get("Content-Length"))
        if length is None or length > _MAX_BODY_BYTES:
            # The body stays unread, so this connection cannot carry another
            # request.
            self.close_connection = True
            if length is None:
                self._send_error(ApiError(400, "invalid_request_error", "Bad Content-Length"))
            else:
                self._send_error(ApiError(413, "request_too_large", "Request too large"))
            return None
        try:
            decoded = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            self._send_error(ApiError(400, "invalid_request_error", "Body is not a JSON object"))
            return None
        return decoded

    def _messages(self, request: dict[str, Any]) -> None:
        backend = self._backend()
        backend.enter_request()
        try:
            self._answer_messages(backend, request)
        finally:
            backend.exit_request()

    def _answer_messages(self, backend: DemoBackend, request: dict[str, Any]) -> None:
        if not isinstance(request.get("messages"), list):
            self._send_error(ApiError(400, "invalid_request_error", "messages: Field required"))
            return
        refusal = self._limit_refusal(backend, request)
        if refusal is not None:
            self._refuse(refusal, request)
            return
        reply = plan_reply(request, backend.settings)
        stream = bool(request.get("stream"))
        backend.log(f"< POST {self.path} scenario={reply.scenario} stream={stream}")
        # The silence comes before any byte, headers included, so the client
        # sees nothing at all until the reply is "ready".
        if reply.delay and backend.wait_stopping(reply.delay):
            return
        status = reply.error.status if reply.error else 200
        self._record(RequestRecord("POST", "/v1/messages", reply.scenario, stream, status, reply.prompt))
        if reply.error:
            self._send_error(reply.error)
        elif stream:
            self._stream(request, reply)
        else:
            self._send_json(200, message_json(request, reply, backend.next_message_id()))

    def _limit_refusal(self, backend: DemoBackend, request: dict[str, Any]) -> LimitRefusal | None:
        if is_auxiliary(request):
            return None
        messages = request.get("messages") or []
        # The CLI names its session in every request; a resumed session keeps the name.
        conversation = self.headers.get("X-Claude-Code-Session-Id") or conversation_name(messages)
        return backend.limits.check(conversation, prompt_text(messages))

    def _refuse(self, refusal: LimitRefusal, request: dict[str, Any]) -> None:
        prompt = prompt_text(request.get("messages") or [])
        self._backend().log(f"< POST {self.path} refused: {refusal.kind} limit for {refusal.retry_after} s")
        self._record(RequestRecord("POST", "/v1/messages", f"{refusal.kind}_limit", bool(request.get("stream")),
                                   429, prompt))
        self._send_error(ApiError(429, "rate_limit_error", refusal.message), refusal.headers())

    def _count_tokens(self, request: dict[str, Any]) -> None:
        self._backend().log(f"< POST {self.path}")
        self._record(RequestRecord("POST", "/v1/messages/count_tokens", "count_tokens", False, 200))
        self._send_json(200, count_tokens(request))

    def _stream(self, request: dict[str, Any], reply: Reply) -> None:
        backend = self._backend()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", backend.next_request_id())
        # Without a length the end of the body is the end of the connection.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        steps = stream_steps(request, reply, backend.next_message_id())
        try:
            self._write_paced(steps)
        except (BrokenPipeError, ConnectionResetError) as error:
            backend.log(f"! client went away mid-stream: {error!r}")

    def _write_paced(self, steps: Iterable[Step]) -> None:
        backend = self._backend()
        started = time.monotonic()
        sent = 0
        for step in steps:
            if not self._wait_until(started + step.at):
                return
            self.wfile.write(step.data)
            sent += len(step.data)
        backend.log(f"> stream done, {sent} bytes")

    def _wait_until(self, deadline: float) -> bool:
        """Sleep until ``deadline``; False if the backend is stopping."""
        delay = deadline - time.monotonic()
        if delay <= 0:
            return True
        return not self._backend().wait_stopping(delay)

    def _not_found(self, method: str) -> None:
        self._backend().log(f"! {method} {self.path}: no such endpoint")
        self._record(RequestRecord(method, urlsplit(self.path).path, "not_found", False, 404))
        self._send_error(ApiError(404, "not_found_error", f"Not found: {self.path}"))

    def _send_error(self, error: ApiError, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._backend().log(f"> {error.status} {error.type}")
        self._send_json(error.status, error.body(), headers)

    def _send_json(self, status: int, body: dict[str, Any], headers: Iterable[tuple[str, str]] = ()) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        # http.server knows no phrase for 529; the real API says "Overloaded".
        phrase = "Overloaded" if status == 529 else None
        self.send_response(status, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", self._backend().next_request_id())
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _record(self, record: RequestRecord) -> None:
        self._backend().record(record)


def _content_length(header: str | None) -> int | None:
    """The declared body length, or None if it is not a sane number."""
    try:
        length = int(header or 0)
    except ValueError:
        return None
    return length if length >= 0 else None


class DemoBackend:
    """A local mock of the Anthropic Messages API for the real ``claude`` CLI.

    ``start()`` binds ``host:port`` (port 0 picks a free one), serves from a
    daemon thread and returns once connections are accepted; ``stop()`` is
    idempotent. Use it as a context manager::

        with DemoBackend() as backend:
            env = demo_environment(backend.url, config_dir)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        settings: DemoSettings | None = None,
        log: Logger | None = None,
        keep_requests: int = 256,
    ) -> None:
        self._address = (host, port)
        self.settings = settings or DemoSettings()
        self._log = log
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counters = {"msg": 0, "req": 0}
        self._in_flight = 0
        self.keep_requests = keep_requests
        """How many of the newest requests :attr:`requests` keeps: a kernel's shared
        backend answers every demo turn of the day, and each record holds its prompt."""
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=keep_requests)
        self.limits = LimitWindows()
        """The account's usage and rate limit windows (see :mod:`.limits`)."""

    # Lifecycle

    def start(self) -> DemoBackend:
        """Bind and serve in a daemon thread; return once accepting."""
        if self._server is not None:
            return self
        self._stopping.clear()
        # Binding happens here, in the caller's thread, so an address in use
        # raises to the caller instead of dying in the server thread.
        self._server = _Server(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # shutdown() waits up to one poll interval; keep stop() snappy.
            kwargs={"poll_interval": 0.05},
            name="cc-demo-backend",
            daemon=True,
        )
        self._thread.start()
        self.log(f"= listening on {self.url}")
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None
        self.log("x stopped")

    def __enter__(self) -> DemoBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL such as ``http://127.0.0.1:PORT``; only while started."""
        if self._server is None:
            raise RuntimeError("DemoBackend is not started")
        host, port = self._server.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        if ":" in text:
            text = f"[{text}]"
        return f"http://{text}:{port}"

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the newest ``keep_requests`` requests answered, oldest first."""
        with self._lock:
            return list(self._records)

    # Used by the request handler threads

    def log(self, line: str) -> None:
        """Pass ``line`` to the logger given at construction, if any."""
        if self._log is not None:
            self._log(line)

    def requests_in_flight(self) -> int:
        """How many ``/v1/messages`` requests are being answered right now."""
        with self._lock:
            return self._in_flight

    def enter_request(self) -> None:
        """Count a ``/v1/messages`` request as started."""
        with self._lock:
            self._in_flight += 1

    def exit_request(self) -> None:
        """Count a ``/v1/messages`` request as finished."""
        with self._lock:
            self._in_flight -= 1

    def record(self, record: RequestRecord) -> None:
        """Remember one answered request."""
        with self._lock:
            self._records.append(record)

    def next_message_id(self) -> str:
        """A fresh ``msg_demo_NNNN`` id, numbered in answer order."""
        return f"msg_demo_{self._next_number('msg'):04d}"

    def next_request_id(self) -> str:
        """A fresh ``req_demo_NNNN`` id for the ``request-id`` header."""
        return f"req_demo_{self._next_number('req'):04d}"

    def _next_number(self, kind: str) -> int:
        with self._lock:
            self._counters[kind] += 1
            return self._counters[kind]

    def wait_stopping(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (early) if the backend is stopping."""
        return self._stopping.wait(seconds)
