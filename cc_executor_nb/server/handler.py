"""The enhanced handler: a WebSocket JSON-RPC 2.0 server that runs and streams CLIs.

Usage, as in the original design::

    handler = EnhancedWebSocketHandler(
        SessionManager(), ProcessManager(), StreamHandler(), heartbeat_interval=20
    )
    await handler.start("127.0.0.1", 8003)
    ...
    await handler.close()

The handler is a thin adapter: it moves text between the socket and the pure core in
``protocol``, and hands runs to ``Execution``. It never times out a stream; it sends a
heartbeat every ``heartbeat_interval`` seconds and ``process.status`` while a child is
silent for ``inactivity_threshold`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from ssl import SSLContext
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from .. import __version__, methods, protocol
from ..errors import (
    AlreadyRunning,
    InternalError,
    InvalidParams,
    InvalidRequest,
    LimitReached,
    MethodNotFound,
    NoProcessRunning,
    OutputGap,
    ProtocolError,
    UnknownSession,
)
from ..protocol import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_INACTIVITY_THRESHOLD, MIN_INTERVAL
from ..redaction import SecretRedactor, hold_secret, release_secret
from .access import WS_PATHS, FailureTable, address_key, check_handshake, is_loopback
from .admission import Admission
from .capture import Span
from .config import ServerSettings
from .disk import DiskBudget, DiskUse
from .execution import EOF_GRACE, Execution, Notify
from .heartbeat import MODES, BeatPolicy
from .jobs import Job, JobDesk, JobStore, RunOwner
from .linuxio import sendfile_some
from .progress import HistoryStore, ProgressEstimator, default_history_path, fingerprint
from .replay import MEMORY_TAIL, ReplayLog, TailPool
from .resources import ResourceSampler
from .session import SendSpan, Session, SessionManager
from .stdin import ChildInput
from .streams import RunOutput, StreamHandler
from .supervisor import ManagedProcess, ProcessManager

__all__ = ["CAPABILITIES", "EnhancedWebSocketHandler", "SecretRedactor"]

logger = logging.getLogger("cc_executor_nb.server")

CAPABILITIES = [
    methods.EXECUTE, methods.CONTROL, methods.STATUS, methods.RESUME, methods.HEARTBEAT,
    methods.PROCESS_STATUS, methods.PROCESS_METRICS, methods.PONG, methods.INPUT, methods.INPUT_CLOSE,
    methods.PROCESS_NOTICE, methods.ACK, methods.EXECUTE_INPUT, methods.SERVER_PYTHON, methods.INPUT_TURN,
    methods.INPUT_DRAINED,
    methods.INPUT_CLOSE_AFTER_TURN,
]
_DEFAULT = "default"


class EnhancedWebSocketHandler:
    """Serves sessions over WebSocket; each runs CLI processes and streams them."""

    def __init__(
        self,
        session_manager: SessionManager,
        process_manager: ProcessManager,
        stream_handler: StreamHandler,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        *,
        # Timing
        inactivity_threshold: float = DEFAULT_INACTIVITY_THRESHOLD,
        min_interval: float = MIN_INTERVAL,
        heartbeat_mode: str = "fixed",
        min_heartbeat_interval: float = 1.0,
        metrics_interval: float = 1.0,
        # Access
        token: str | None = None,
        allow_no_token: bool = False,
        allowed_origins: Collection[str] = (),
        # Reliability
        detach_ttl: float = 600.0,
        replay_limit: int = 256 << 20,
        replay_memory: int = MEMORY_TAIL,
        disk: DiskBudget | None = None,
        # Limits
        max_connections: int | None = None,
        max_message_size: int = 1 << 20,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 1.0,
        # Progress
        history_path: str | None = _DEFAULT,
        # Durable jobs (server/jobs.py); None: this server keeps none
        jobs: JobStore | None = None,
        settings: ServerSettings | None = None,
    ) -> None:
        if heartbeat_mode not in MODES:
            raise ValueError(f"heartbeat_mode must be one of {MODES}")
        for name, value in (("heartbeat_interval", heartbeat_interval),
                            ("inactivity_threshold", inactivity_threshold), ("min_interval", min_interval)):
            _check_interval(name, value)
        if not (metrics_interval >= 0 and math.isfinite(metrics_interval)):
            raise ValueError(f"metrics_interval must be a finite number >= 0, not {metrics_interval!r}")
        self.settings = settings
        """What :func:`~cc_executor_nb.server.config.build_server` made this from (else None)."""
        self.sessions = session_manager
        self.processes = process_manager
        self.streams = stream_handler
        self.heartbeat_interval = heartbeat_interval
        self.inactivity_threshold = inactivity_threshold
        self.min_interval = min_interval
        self.beat_policy = BeatPolicy(heartbeat_mode, min_heartbeat_interval)
        self.metrics_interval = metrics_interval
        path = default_history_path() if history_path == _DEFAULT else history_path
        self.history = HistoryStore(path) if path else None
        self.resources = ResourceSampler()
        self.token = None if allow_no_token else (token or secrets.token_hex(32))
        self.allowed_origins = frozenset(allowed_origins)
        self.max_message_size = max_message_size
        self.detach_ttl = detach_ttl
        self.replay_limit = replay_limit
        self.replay_memory = replay_memory
        self.replay_pool = TailPool()
        """The memory the sessions' replay tails share (256 MiB; past it they spill to disk)."""
        self.disk = disk or DiskBudget(spool_dir=stream_handler.spool_dir)
        self.max_connections = max_connections
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.processes.add_secret(self.token)
        # A wrong token's 401 waits longer per failure in a row from its source (never past
        # half the handshake timeout, which would drop it unanswered).
        self.auth_failures = FailureTable(cap=min(5.0, open_timeout / 2))
        self._refusal_wait: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.admission = Admission()
        self.jobs = JobDesk(
            jobs,
            launch=self._launch,
            timers=lambda owner: [self._activity_loop(owner), self._metrics_loop(owner)],
            heartbeat_interval=heartbeat_interval,
            inactivity_threshold=inactivity_threshold,
            min_interval=min_interval,
            stop_grace=self.processes.kill_grace + 10.0,
        )
        self.capabilities = [*CAPABILITIES, *self.jobs.methods]
        self.server: Server | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._loopback = True
        self.tls = False
        """Whether the server speaks TLS (``wss://``)."""
        self._closing = False
        self._saying: set[asyncio.Task[None]] = set()
        """``input.drained`` notifications on their way (kept from the garbage collector)."""
        self._secret_held = False

    # -- Lifecycle ------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8003, *, ssl: SSLContext | None = None) -> Server:
        """Bind and start serving; ``port=0`` picks a free port (see ``self.port``).

        With ``ssl`` (a server-side TLS context) the server speaks ``wss://``.
        """
        self._loopback = is_loopback(host)
        if self.token is None and not self._loopback:
            raise ValueError("refusing to serve without a token on a non-loopback address")
        self.jobs.open()
        try:
            self.server = await serve(
                self._serve_connection,
                host,
                port,
                process_request=self._process_request,
                select_subprotocol=_select_subprotocol,
                compression=None,
                max_size=self.max_message_size,
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                # A dead peer never answers our close frame: do not wait long for it.
                close_timeout=self.close_timeout,
                server_header=f"cc_executor_nb/{__version__}",
                ssl=ssl,
                create_connection=self.admission.connection_class(),
            )
        except BaseException:
            await self.jobs.shutdown()  # releases the jobs directory
            raise
        if not self._secret_held:  # held once serving (a start that failed never closes)
            hold_secret(self.token)
            self._secret_held = True
        self.host, self.port = self.server.sockets[0].getsockname()[:2]
        self.tls = ssl is not None
        logger.info("[ENHANCED] listening on %s", self.url)
        return self.server

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}/ws"

    async def wait_idle(self) -> None:
        """Return once no session is open (a retired in-kernel server then closes)."""
        await self.sessions.idle.wait()

    async def close(self) -> None:
        """Kill every run's group, close every connection, stop listening. Idempotent."""
        if self._closing:
            return
        self._closing = True
        logger.info("x [ENHANCED] shutting down: %d sessions", len(self.sessions.sessions))
        await self.jobs.shutdown()
        running = [s.execution for s in self.sessions.sessions.values() if s.execution is not None and s.running]
        for execution in running:
            execution.stopped_by_shutdown()  # it ends "cancelled: the server stopped"
        await self.processes.shutdown()
        await self._ends_sent(running)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for session in list(self.sessions.sessions.values()):
            await self._end_session(session)  # detached ones have no connection to close
        self.streams.close()
        if self._secret_held:
            release_secret(self.token)  # a dead token: no log record need scan for it
            self._secret_held = False

    async def _ends_sent(self, executions: list[Execution]) -> None:
        """Give the runs the stop ended time to read their last output and send their end
        (a child that had exited while a grandchild held its output: its end was lost
        with the connection, closed right after the kill)."""
        waits = [asyncio.ensure_future(execution.finished.wait()) for execution in executions]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=EOF_GRACE + 1.0)
        for task in pending:
            task.cancel()

    # -- Handshake ------------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path not in (*WS_PATHS, "/health"):
            # Said in the body, which clients show: a URL without its path is the usual slip.
            where = f"Not Found: this server's WebSocket is at {WS_PATHS[0]}\n"
            return connection.respond(http.HTTPStatus.NOT_FOUND, where)
        try:
            refusal = check_handshake(
                request.headers,
                token=None if path == "/health" else self.token,
                allowed_origins=self.allowed_origins,
                loopback_bind=self._loopback,
            )
        except MultipleValuesError as exc:
            # websockets refuses to pick one of several values; neither do we.
            logger.info("! [ENHANCED] refused %s: 400 (duplicate %s header)", path, exc)
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"Bad Request: duplicate {exc} header\n")
        if refusal is not None:
            logger.info("! [ENHANCED] refused %s: %d", path, refusal.status)
            if refusal.status == http.HTTPStatus.UNAUTHORIZED:
                await self._slow_down(connection)
            return connection.respond(refusal.status, refusal.reason + "\n")
        self.admission.prove(connection)
        if path == "/health":
            return self._health()
        if self._too_many_connections(connection):
            logger.info("! [ENHANCED] refused %s: 503 (more than %d connections)", path, self.max_connections)
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections\n")
        return None

    async def _slow_down(self, connection: ServerConnection) -> None:
        """Make a wrong token cost its sender: the answer waits (see :class:`FailureTable`)."""
        peer = connection.remote_address
        source = address_key(str(peer[0])) if peer else "?"
        delay = self.auth_failures.fail(source, time.monotonic())
        if delay > 0:
            logger.info("! [ENHANCED] %s: wrong token again, answered in %g s", source, delay)
            # Stop waiting once the connection is gone (the client left, or a client with
            # the token took its place): it holds a connection slot while it waits.
            wait = asyncio.ensure_future(self._refusal_wait(delay))
            try:
                await asyncio.wait([wait, connection.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED)
            finally:
                wait.cancel()  # also when the handshake timeout cancels us

    def _too_many_connections(self, connection: ServerConnection) -> bool:
        if self.max_connections is None or self.server is None:
            return False
        # Handshakes under way count too (each holds a descriptor): websockets keeps one
        # handler task per connection from its accept, this one's included. Past the cap,
        # this connection (which showed the token) takes the place of unproven ones.
        tasks = getattr(self.server, "handler_tasks", None)
        count = len(tasks) if isinstance(tasks, set) else len(self.server.connections) + 1
        while count > self.max_connections and self.admission.evict_oldest(keep=connection):
            logger.info("! [ENHANCED] full: dropped a handshake without the token for one with it")
            count -= 1
        return count > self.max_connections

    def _health(self) -> Response:
        body = json.dumps(
            {
                "status": "healthy",
                "version": __version__,
                "sessions": len(self.sessions.sessions),
                "running": self.sessions.running_count + self.jobs.running_count,
                "jobs": self.jobs.running_count,
            }
        ).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return Response(200, "OK", headers, body)

    # -- Connection -----------------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        try:
            session = self._open_session(ws)
        except LimitReached as exc:
            await ws.send(protocol.dumps(protocol.error_response(None, exc)))
            await ws.close(1013, "session limit reached")
            return
        link = _Link(ws, session)
        try:
            hello = session.connected_params(__version__, self.capabilities, self.max_message_size)
            await session.send(protocol.notification(methods.CONNECTED, hello))
            async for frame in ws:
                await self._handle_frame(link, frame)
        except ConnectionClosed:
            pass
        finally:
            await self._connection_lost(link)

    def _open_session(self, ws: ServerConnection) -> Session:
        disk = self.disk.use()
        replay = None
        if self.detach_ttl > 0:
            limits = [limit for limit in (self.disk.session_limit, self.disk.limit) if limit is not None]
            replay = ReplayLog(
                self.replay_limit,
                self.streams.spool_dir,
                segment_limit=min(limits, default=None),
                disk=disk,
                memory_limit=self.replay_memory,
                pool=self.replay_pool,
            )
        try:
            session = self.sessions.create(
                _frame_sender(ws),
                heartbeat_interval=self.heartbeat_interval,
                inactivity_threshold=self.inactivity_threshold,
                replay=replay,
                disk=disk,
            )
        except LimitReached:
            disk.close()
            raise
        session.connection = ws
        session.binary_output = _speaks_binary_output(ws)
        session.send_span = _span_sender(ws)
        session.tasks = [
            asyncio.ensure_future(self._heartbeat_loop(session)),
            asyncio.ensure_future(self._activity_loop(session)),
            asyncio.ensure_future(self._metrics_loop(session)),
        ]
        logger.info("= [ENHANCED] session %s opened", session.id)
        return session

    async def _connection_lost(self, link: _Link) -> None:
        self.jobs.leave(link)
        session = link.session
        if session.connection is not link.ws:
            return  # the session moved to another connection (resume)
        clean = _closed_on_purpose(link.ws.protocol.close_rcvd)
        never_ran = session.execution is None  # nothing to resume
        if clean or never_ran or self.detach_ttl <= 0 or self._closing:
            await self._end_session(session)
            return
        session.detach()
        logger.info("= [ENHANCED] session %s detached: kept for %g s", session.id, self.detach_ttl)
        session.tasks.append(asyncio.ensure_future(self._expire_detached(session)))

    async def _expire_detached(self, session: Session) -> None:
        while session.detached_at is not None:
            left = session.detached_at + self.detach_ttl - time.monotonic()
            if left <= 0:
                logger.info("x [ENHANCED] session %s not resumed within %g s", session.id, self.detach_ttl)
                await self._end_session(session)
                return
            await asyncio.sleep(left)

    async def _end_session(self, session: Session) -> None:
        session.mark_ending()  # a resume arriving while the run is killed must not attach to it
        if session.execution is not None and session.running:
            logger.info("x [ENHANCED] session %s ended mid-run: killing its group", session.id)
            await session.execution.abort()
        current = asyncio.current_task()
        timers = [task for task in session.tasks if task is not current]
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        self.sessions.remove(session)
        logger.info("x [ENHANCED] session %s closed", session.id)

    async def _handle_frame(self, link: _Link, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            refusal = InvalidRequest("Invalid Request: binary frames are not accepted")
            incoming = protocol.Incoming([protocol.ErrorResponse(None, refusal.to_error_object())])
        else:
            incoming = protocol.parse_incoming(frame)
        replies: list[dict[str, Any]] = []
        deferred: list[Callable[[], Awaitable[Any]]] = []
        session = link.session
        if incoming.batch:
            session.hold(deferred)  # what the batch causes is told after its response
        session.answered.clear()
        try:
            for item in incoming.items:
                reply = await self._answer(link, item, deferred)
                if reply is not None:
                    replies.append(reply)
            if replies:
                await link.reply(replies if incoming.batch else replies[0])
        finally:
            # Even when the reply could not be sent (the connection dropped): a run
            # that was started must begin, or it would never end.
            session.unhold()
            session.answered.set()
            await _run_all(deferred)

    async def _answer(
        self,
        link: _Link,
        item: protocol.Request | protocol.ErrorResponse,
        deferred: list[Callable[[], Awaitable[Any]]],
    ) -> dict[str, Any] | None:
        if isinstance(item, protocol.ErrorResponse):
            return protocol.error_response(item.id, item.error)
        try:
            result = await self._dispatch(link, item, deferred)
        except ProtocolError as exc:
            error: ProtocolError = exc
        except Exception:
            logger.exception("! [ENHANCED] fault while handling %s", item.method)
            error = InternalError()
        else:
            return None if item.is_notification else protocol.response(item.id, result)
        return None if item.is_notification else protocol.error_response(item.id, error)

    # -- Methods --------------------------------------------------------------------

    async def _dispatch(
        self,
        link: _Link,
        request: protocol.Request,
        deferred: list[Callable[[], Awaitable[Any]]],
    ) -> Any:
        method, session = request.method, link.session
        if self.jobs.claims(method, request.params):
            return await self.jobs.answer(link, method, request.params, deferred)
        # A connection attached to a durable job controls that job.
        owner: RunOwner = link.job if link.job is not None else session
        if method == methods.RESUME:
            return await self._resume(link, request.params, deferred)
        if method == methods.EXECUTE:
            if link.job is not None:
                raise AlreadyRunning(f"this connection follows job {link.job.id}; execute on another")
            return await self._execute(session, request.params, deferred)
        if method == methods.CONTROL:
            return await self._control(owner, request.params, deferred)
        if method == methods.STATUS:
            return await self._status(owner) | self.jobs.status_fields(link)
        if method == methods.INPUT:
            return self._input(link, owner, request.params)
        if method == methods.INPUT_CLOSE:
            return self._close_input(link, owner, request.params)
        if method == methods.PONG:
            return {"status": "ok"}
        if method == methods.ACK:
            return self._ack(link, request.params)
        raise MethodNotFound(f"Method not found: {method[:100]}")

    async def _execute(
        self, session: Session, params: Any, deferred: list[Callable[[], Awaitable[Any]]]
    ) -> dict[str, Any]:
        spec = protocol.validate_execute(params, self.min_interval)
        if session.running:
            raise AlreadyRunning()
        session.update_settings(spec.heartbeat_interval, spec.inactivity_threshold)
        timing = {
            "heartbeat_interval": session.heartbeat_interval,
            "inactivity_threshold": session.inactivity_threshold,
        }
        execution = await self._launch(spec, session.notify, timing, session.disk)
        if session.replay is not None:
            execution.send_spans(session.notify_span, session.takes_spans, session.replay.copy_out_spans)
        session.execution = execution
        deferred.append(execution.begin)
        return {"status": "started", **execution.pid_fields}

    async def _launch(
        self,
        spec: protocol.ExecuteParams,
        notify: Notify,
        announce: dict[str, Any],
        disk: DiskUse | None = None,
    ) -> Execution:
        """Spawn the run's process and wrap it (not begun); ``announce`` goes into process.started.

        ``disk`` is the share of the disk budget its spool and capture files count against
        (a session's; None for a durable job, bounded by the job storage limit).
        """
        capture = spec.capture or self.streams.capture
        if spec.capture is None and capture == "file" and not self.disk.room_for_files():
            # A child writing to a capture file on a full disk gets ENOSPC and its output
            # (and the error saying so) is cut; a pipe holds it until the server has room.
            capture = "pipe"
        # The run's clock starts here: the output files, stdin and the history lookup below
        # happen while the child already runs (a slow lookup made `sleep 0.5` read 0.2 s).
        spawning = time.monotonic()
        process = await self.processes.spawn(
            spec.argv,
            spec.cwd,
            spec.env,
            output=lambda: self.streams.child_output(capture),
            stdin_pipe=spec.stdin == "pipe",
        )
        output: RunOutput | None = None
        stdin: ChildInput | None = None
        input_fd = process.stdin_fd  # ours to close until _open_input takes it (it closes it on failure)
        try:
            output = await self.streams.open(process.output, disk)
            taken, input_fd = input_fd, None  # _open_input owns it from here, even when it fails
            stdin = await _open_input(taken)
            if stdin is not None and spec.input is not None:
                # Queued now, by the server that owns the child: it does not depend on the
                # client staying connected (a durable job outlives its kernel).
                stdin.write(spec.input)
                stdin.close()
            # The run history is read once the child is on its way. Before, the lookup (about
            # a millisecond) delayed the start; alongside, its worker thread held the GIL the
            # spawn needed (up to a 5 ms switch interval).
            key = fingerprint(spec.argv, spec.cwd, spec.input)
            # A run fed on stdin does what it is sent, not what its argv says (every Claude
            # conversation shares one argv), so earlier runs of that argv predict nothing;
            # unless execute's input is all it is sent (a one-shot prompt): it is in the key.
            history = self.history if spec.stdin != "pipe" or spec.input is not None else None
            past = await asyncio.to_thread(history.durations, key) if history else []
            return Execution(
                process,
                output,
                notify,
                kill_grace=self.processes.kill_grace if spec.kill_grace is None else spec.kill_grace,
                chunk_limit=self.streams.chunk_limit,
                timeout=spec.timeout,
                estimator=ProgressEstimator(spec.argv, past, spec.progress_target),
                on_success=self._recorder(key) if history else None,
                settings={**announce, "timeout": spec.timeout, "stdin": spec.stdin, "capture": capture},
                stdin=stdin,
                disk=disk,
                started_at=spawning,
            )
        except BaseException:
            # Nothing will follow or stop this child: it must not outlive the failed start
            # (it ran on, unsupervised, until the server stopped).
            await _abandon_launch(process, output, stdin, input_fd)
            raise

    def _ack(self, link: _Link, params: Any) -> dict[str, Any]:
        """Forget what the client holds; a job's follower changes nothing (a job keeps its log)."""
        seq = protocol.validate_ack(params)
        if link.job is not None:
            return {"status": "acked", "first_available_seq": 1}
        if seq > link.session.last_seq:
            raise InvalidParams("seq is ahead of the session", "seq")
        return {"status": "acked", "first_available_seq": link.session.ack(seq)}

    async def _resume(
        self, link: _Link, params: Any, deferred: list[Callable[[], Awaitable[Any]]]
    ) -> dict[str, Any]:
        spec = protocol.validate_resume(params)
        target = self.sessions.get(spec.session_id)
        if target is None or target.ending or not hmac.compare_digest(
            target.resume_token.encode(), spec.resume_token.encode()
        ):
            raise UnknownSession()
        if spec.last_seq > target.last_seq:
            raise InvalidParams("last_seq is ahead of the session", "last_seq")
        if target.replay is not None and spec.last_seq + 1 < target.replay.first_seq:
            raise OutputGap(data={"first_available_seq": target.replay.first_seq})
        if link.session is not target and link.session.running:
            raise AlreadyRunning("this connection already runs a process; resume on a new one")
        previous, old_ws = link.session, target.connection
        target.detach()
        if old_ws is not None and old_ws is not link.ws:
            await old_ws.close(4000, "session resumed on another connection")
        link.session = target
        if previous is not target:
            await self._end_session(previous)
        deferred.append(lambda: self._replay(link, target, spec.last_seq))
        logger.info("= [ENHANCED] session %s resumed after seq %d", target.id, spec.last_seq)
        return {"status": "resumed", "session_id": target.id, "last_seq": target.last_seq}

    async def _replay(self, link: _Link, session: Session, last_seq: int) -> None:
        try:
            session.binary_output = _speaks_binary_output(link.ws)
            count = await session.attach(_frame_sender(link.ws), link.ws, last_seq, _span_sender(link.ws))
        except OutputGap as exc:
            # The log moved on between the check and the replay: say so, never skip.
            await link.ws.send(protocol.dumps(protocol.error_response(None, exc)))
            return
        logger.info("= [ENHANCED] session %s replayed %d notifications", session.id, count)

    async def _control(
        self, session: RunOwner, params: Any, deferred: list[Callable[[], Awaitable[Any]]]
    ) -> dict[str, Any]:
        kind = protocol.validate_control(params).type
        execution = session.execution
        if execution is None or not session.running:
            raise NoProcessRunning()
        if isinstance(session, Session):
            # The notification (process.paused...) is told after this answer, as a job's is.
            with session.deferring(deferred):
                return await self._signal(execution, kind)
        return await self._signal(execution, kind)

    @staticmethod
    async def _signal(execution: Execution, kind: str) -> dict[str, Any]:
        if kind == "PAUSE":
            _require_state(execution, "running", "the process is already paused")
            await execution.pause()
            return {"status": "paused"}
        if kind == "RESUME":
            _require_state(execution, "paused", "the process is not paused")
            await execution.resume()
            return {"status": "resumed"}
        await execution.cancel()
        return {"status": "cancelled"}

    def _input(self, link: _Link, session: RunOwner, params: Any) -> dict[str, Any]:
        given = protocol.validate_input(params)
        stdin = self._piped_input(session)
        try:
            return self._queue_input(link, stdin, given)
        except LimitReached:
            if stdin.refused:  # by the process's queue: say when it has room
                stdin.when_room(link, lambda: self._say_room(link, stdin))
            elif link.job is not None:  # by the turns the job holds: say when they shrink
                link.job.when_room(link, lambda: self._say_room(link, stdin))
            raise

    def _say_room(self, link: _Link, stdin: ChildInput) -> None:
        """``input.drained`` to ``link``, an ``input`` of which the full queue of ``stdin`` refused."""
        message = protocol.notification(
            methods.INPUT_DRAINED, {"queued_bytes": stdin.queued_bytes, "limit": stdin.limit})
        saying = asyncio.ensure_future(_reply_if_open(link, message))
        self._saying.add(saying)
        saying.add_done_callback(self._saying.discard)

    @staticmethod
    def _queue_input(link: _Link, stdin: ChildInput, given: protocol.InputParams) -> dict[str, Any]:
        data = given.data
        if link.job is not None and given.turn and link.job.takes_turns(stdin):
            held = link.job.begin_turn(stdin, data, given.ok_exit_codes)
            return {"status": "queued", "bytes": len(data), "queued_bytes": stdin.queued_bytes, "held": held}
        queued = stdin.write(data)
        if link.job is not None and given.ok_exit_codes is not None:
            link.job.ok_exit_codes = given.ok_exit_codes
        if link.job is not None and data:
            # Logged before the child can read it: whatever it answers comes later in the log.
            link.job.record_input(data.decode("utf-8"))
        return {"status": "queued", "bytes": len(data), "queued_bytes": queued}

    def _close_input(self, link: _Link, session: RunOwner, params: Any) -> dict[str, Any]:
        after_turn = protocol.validate_input_close(params)
        stdin = self._piped_input(session)
        if link.job is not None and link.job.close_after_turns(stdin, after_turn=after_turn):
            return {"status": "closing", "queued_bytes": stdin.queued_bytes, "held": True}
        if link.job is not None and not stdin.closing:
            link.job.record_input_closed("input.close")
        stdin.close()
        return {"status": "closing", "queued_bytes": stdin.queued_bytes}

    @staticmethod
    def _piped_input(session: RunOwner) -> ChildInput:
        execution = session.execution
        if execution is None or not session.running:
            raise NoProcessRunning()
        if execution.stdin is None:
            raise InvalidParams('this run reads /dev/null: execute it with stdin "pipe"', "stdin")
        return execution.stdin

    async def _status(self, session: RunOwner) -> dict[str, Any]:
        execution = session.execution if session.running else None
        result: dict[str, Any] = {
            "session_id": session.id,
            "state": execution.state if execution else "idle",
            "pid": execution.process.pid if execution else None,
            "pgid": execution.process.pgid if execution else None,
            "elapsed_seconds": execution.elapsed_seconds() if execution else None,
            "inactive_seconds": execution.inactive_seconds() if execution else None,
            "last_seq": session.last_seq,
            "stdin": ("pipe" if execution.stdin is not None else "null") if execution else None,
        }
        if execution is not None:
            result.update(await self._measures(execution))
        return result

    async def _measures(self, execution: Execution) -> dict[str, Any]:
        """Progress and resources of a live run."""
        return {
            "progress": execution.progress().to_dict(),
            "resources": await self.resources.figures(execution.process.pgid),
        }

    def _recorder(self, key: str) -> Callable[[float, int], Awaitable[None]]:
        async def record(duration: float, output_bytes: int) -> None:
            if self.history is not None:
                await asyncio.to_thread(self.history.record, key, duration, output_bytes)

        return record

    # -- Timers ---------------------------------------------------------------------

    async def _heartbeat_loop(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        interval = session.heartbeat_interval
        next_beat = loop.time() + interval
        while True:
            session.settings_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(session.settings_changed.wait(), max(0.0, next_beat - loop.time()))
                interval = session.heartbeat_interval
                next_beat = loop.time() + interval
                continue
            execution = session.execution if session.running else None
            silence = execution.inactive_seconds() if execution is not None else None
            policy = self.beat_policy
            interval = policy.interval(session.heartbeat_interval, silence, session.inactivity_threshold)
            if policy.due(interval, time.monotonic() - session.last_sent_at) and session.attached:
                with contextlib.suppress(ConnectionClosed):
                    await session.heartbeat(interval)
                logger.debug("[HEARTBEAT] session %s seq %d", session.id, session.last_seq)
            next_beat = policy.next_wait(
                interval,
                previous=next_beat,
                now=loop.time(),
                since_last_message=time.monotonic() - session.last_sent_at,
                live=session.running,
            )

    async def _activity_loop(self, session: RunOwner) -> None:
        last_report = 0.0
        while True:
            execution = session.execution if session.running else None
            wait = session.inactivity_threshold
            if execution is not None:
                silent_since = max(execution.output.last_output_at, last_report)
                wait = silent_since + session.inactivity_threshold - time.monotonic()
                if wait <= 0:
                    execution.output.notice_unread()
                    if execution.output.last_output_at > silent_since:
                        continue  # not silent: the child wrote while the server did not run
                    await self._report_silence(session, execution)
                    last_report = time.monotonic()
                    continue
            # Re-evaluate at least every second: the threshold may change mid-sleep.
            await asyncio.sleep(min(wait, 1.0))

    async def _report_silence(self, session: RunOwner, execution: Execution) -> None:
        inactive = round(execution.inactive_seconds(), 3)
        paused = execution.state == "paused"
        stopped = execution.process.stopped
        logger.info("[ACTIVITY] pid %d silent for %.1f s%s", execution.process.pid, inactive, " (stopped)" * stopped)
        await session.notify(
            methods.PROCESS_STATUS,
            {
                "status": execution.state,
                **execution.pid_fields,
                "inactive_seconds": inactive,
                "no_output_for": inactive,
                "stopped": stopped,
                "elapsed_seconds": round(execution.elapsed_seconds(), 3),
                "message": _silence_message(
                    paused, execution.output.bytes_read, inactive, execution.process.holds, stopped
                ),
                **await self._measures(execution),
            },
        )

    async def _metrics_loop(self, session: RunOwner) -> None:
        """``process.metrics`` (progress and resources) every ``metrics_interval`` s of a run."""
        if self.metrics_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.metrics_interval)
            execution = session.execution if session.running else None
            if execution is not None:
                await session.notify(
                    methods.PROCESS_METRICS,
                    {
                        "status": execution.state,
                        **execution.pid_fields,
                        "elapsed_seconds": round(execution.elapsed_seconds(), 3),
                        "inactive_seconds": round(execution.inactive_seconds(), 3),
                        "stopped": execution.process.stopped,
                        **await self._measures(execution),
                    },
                )


def _require_state(execution: Execution, state: str, refusal: str) -> None:
    """PAUSE needs a running process, RESUME a paused one: otherwise nothing is done or
    told (no second ``process.paused``, no ``process.resumed`` of a running process)."""
    if execution.state != state:
        raise InvalidParams(refusal, "type")


def _silence_message(
    paused: bool, bytes_read: dict[str, int], inactive: float, holds: Collection[str] = (), stopped: bool = False
) -> str:
    if paused:
        return "Process is paused"
    if "disk" in holds:
        return "Process is held until the client reads more of its output (disk limit)"
    if holds:  # a backlog: the child wrote far more than the client has taken yet
        return "Process is held until the client reads more of its output"
    if not any(bytes_read.values()):
        silence = "no output yet"
    else:
        silence = f"no output for {inactive:.1f} s" if inactive < 10 else f"no output for {inactive:.0f} s"
    # Someone else's SIGSTOP: the process is not thinking, it cannot run until a SIGCONT.
    return f"Process is stopped (SIGSTOP/SIGTSTP), {silence}" if stopped else f"Process is thinking... ({silence})"


class _Link:
    """One WebSocket connection and the session it carries (which resume can change)."""

    def __init__(self, ws: ServerConnection, session: Session) -> None:
        self.ws = ws
        self.session = session
        self.job: Job | None = None
        """The durable job this connection follows (and controls), if any."""

    async def reply(self, message: Any) -> None:
        """Answer on this connection (through the session while it is attached here)."""
        if self.session.connection is self.ws:
            await self.session.send(message)
        else:
            await self.ws.send(protocol.dumps_bytes(message), text=True)


async def _reply_if_open(link: _Link, message: Any) -> None:
    """``link.reply(message)``, or nothing once its connection is closed."""
    with contextlib.suppress(ConnectionClosed):
        await link.reply(message)


_DELIBERATE_CLOSES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY})


def _closed_on_purpose(close: Close | None) -> bool:
    """Whether the client ended the connection on purpose (1000, 1001): its session ends.

    A close frame with another code is a failure the client reports as it gives up, e.g.
    1011 when its keepalive ping timed out because this server was stopped a while: the
    run is kept for ``--detach-ttl``, as after a drop without any close frame.
    """
    return close is not None and close.code in _DELIBERATE_CLOSES


def _frame_sender(ws: ServerConnection) -> Callable[[bytes], Awaitable[None]]:
    """Send serialized JSON (UTF-8 bytes) as a text frame, without a decode round trip, and
    a binary output frame as a binary frame (as JSON text to a client without the
    subprotocol: a session's replay may hold frames made for the connection before)."""
    binary = _speaks_binary_output(ws)
    write = _frame_writer(ws)

    async def send(data: bytes) -> None:
        if protocol.is_output_frame(data):
            if binary:
                await write(data, False)
                return
            data = protocol.output_frame_as_text(data)
        await write(data, True)

    return send


def _frame_writer(ws: ServerConnection) -> Callable[[bytes, bool], Awaitable[None]]:
    """``ws.send(data, text=...)``, with the common case written straight to the transport.

    An open connection with nothing else under way (no fragmented message, no frame of
    websockets' own waiting, no flow-control pause, no extension, no frame logging) takes
    one whole frame, exactly the bytes websockets would write, in one ``transport.write``:
    a line's send then costs one call, not websockets' ``send_context`` (an async generator,
    a context manager and a drain per frame): 9-17 % of the server's CPU a line less
    (benchmarks/HISTORY.md, 7 Dec 2026). Everything else goes through ``ws.send``, which
    also raises ``ConnectionClosed``; a write that leaves the transport paused is drained by
    the next send, through ``ws.send``.
    """
    state = ws.protocol

    async def send(data: bytes, text: bool) -> None:
        await ws.send(data, text=text)

    if state.extensions or not all(hasattr(ws, name) for name in ("send_in_progress", "paused")):
        return send  # another version of websockets: its own path only
    transport = ws.transport
    opened = State.OPEN

    async def write(data: bytes, text: bool) -> None:
        if (
            ws.send_in_progress is None
            and not ws.paused
            and state.state is opened
            and not state.writes
            and not state.expect_continuation_frame
            and not state.debug
            and not transport.is_closing()
        ):
            transport.write(_frame_head(_OP_TEXT if text else _OP_BINARY, len(data)) + data)
            return
        await ws.send(data, text=text)

    return write


def _span_sender(ws: ServerConnection) -> SendSpan | None:
    """How a plain connection with binary output frames sends a span of a capture file: as one
    binary frame, its header written to the transport, then the span ``sendfile``d from the
    file while the transport holds nothing (what the socket does not take is read and
    written), in one step, inside websockets' ``send_context`` (its own frames are whole
    writes). None for TLS (the bytes must pass through Python) or without the subprotocol."""
    transport = ws.transport
    sock = transport.get_extra_info("socket")
    if not _speaks_binary_output(ws) or transport.get_extra_info("sslcontext") is not None or sock is None:
        return None
    sock_fd = sock.fileno()

    async def send(header: bytes, span: Span) -> int:
        async with ws.send_context():
            if transport.is_closing():
                raise ConnectionResetError("the connection is closing")
            transport.write(_frame_head(_OP_BINARY, len(header) + span.length) + header)
            sent = 0
            if transport.get_write_buffer_size() == 0:
                sent = sendfile_some(sock_fd, span.capture.read_fd, span.offset, span.length)
            if sent < span.length:
                transport.write(span.read_from(sent))
        return sent

    return send


_OP_TEXT, _OP_BINARY = 0x1, 0x2
"""WebSocket opcodes (RFC 6455, section 5.2)."""


def _frame_head(opcode: int, size: int) -> bytes:
    """The head of one unmasked, final WebSocket frame of ``opcode`` and ``size`` bytes (RFC 6455)."""
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size))
    if size < 1 << 16:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")


def _speaks_binary_output(ws: ServerConnection) -> bool:
    return ws.subprotocol == protocol.BINARY_OUTPUT


def _select_subprotocol(_ws: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Binary output frames for a client that offers them; no subprotocol for the others
    (websockets' default would refuse a client that offers none)."""
    return Subprotocol(protocol.BINARY_OUTPUT) if protocol.BINARY_OUTPUT in offered else None


async def _abandon_launch(
    process: ManagedProcess, output: RunOutput | None, stdin: ChildInput | None, input_fd: int | None
) -> None:
    """Undo a spawn whose run could not be set up: kill its group at once, reap it and
    release its output files and input pipe (shielded: a cancelled start cleans up too).

    ``input_fd``: the input pipe's descriptor while nothing else owns it (None once
    ``_open_input`` took it: it closes it itself when it fails, and a second close could
    close a descriptor another run has opened under the same number meanwhile)."""
    logger.warning("! the run of pid %d could not be set up: killing its process group", process.pid)

    async def undo() -> None:
        try:
            await process.terminate(0.0)
            await process.wait()
        finally:  # released even when the kill or the reaping failed
            try:
                if stdin is not None:
                    await stdin.aclose()
                elif input_fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(input_fd)
            finally:
                if output is not None:
                    output.close()
                else:
                    process.output.close()

    with contextlib.suppress(Exception):
        await asyncio.shield(undo())


async def _open_input(fd: int | None) -> ChildInput | None:
    if fd is None:
        return None
    stdin = ChildInput()
    try:
        await stdin.open(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return stdin


async def _run_all(actions: list[Callable[[], Awaitable[Any]]]) -> None:
    """Await each action in order; one that fails does not keep the others from running."""
    for action in actions:
        try:
            await action()
        except (ConnectionClosed, OSError) as exc:
            logger.debug("[ENHANCED] deferred step could not send: %r", exc)


def _check_interval(name: str, value: float) -> None:
    """A heartbeat interval, threshold or floor: finite and at least MIN_INTERVAL."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if value < MIN_INTERVAL:
        raise ValueError(f"{name} must be at least {MIN_INTERVAL:g} s, not {value!r}")
