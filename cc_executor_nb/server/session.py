"""Sessions: one per connection, each with its own ``seq`` counter and settings.

A session can outlive its connection: after an abrupt drop it is *detached* (no
``send``), its run goes on, and every seq'd notification is kept in its replay log
until a new connection resumes it or the detach TTL runs out. What the client
acknowledges (``ack``, or the ``last_seq`` of a ``resume``) is no longer kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import methods, protocol
from ..errors import LimitReached
from .disk import DiskUse, limit_reached
from .execution import Execution
from .replay import ReplayLog

if TYPE_CHECKING:
    from .capture import Span

__all__ = ["Session", "SessionManager"]

logger = logging.getLogger("cc_executor_nb.server.session")

Send = Callable[[bytes], Awaitable[None]]
"""Sends one serialized message: UTF-8 JSON as a text frame, a binary output frame
(``protocol.output_frame``) as a binary frame, or as JSON text to a client without the
subprotocol."""
SendSpan = Callable[[bytes, "Span"], Awaitable[int]]
"""Sends one binary output frame made of a header (JSON and newline) and the bytes of a
span of a capture file, sent from the file (``sendfile``); returns how many of the span's
bytes the socket took that way (the rest was read and written)."""


class Session:
    """The server's side of one connection: numbering, settings, the current run."""

    def __init__(
        self,
        send: Send | None,
        *,
        heartbeat_interval: float,
        inactivity_threshold: float,
        replay: ReplayLog | None = None,
        disk: DiskUse | None = None,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.resume_token = secrets.token_urlsafe(24)
        self.heartbeat_interval = heartbeat_interval
        self.inactivity_threshold = inactivity_threshold
        self.execution: Execution | None = None
        self.replay = replay
        self.last_seq = 0
        self.last_sent_at = time.monotonic()
        self.detached_at: float | None = None
        self.ending = False
        """Set once the session is being ended: it can no longer be resumed."""
        self.settings_changed = asyncio.Event()
        self.connection: Any = None
        self.binary_output = False
        """Whether output is serialized as binary frames (the connection that carries the
        session, or carried it last, speaks the ``ccx.binary-output`` subprotocol)."""
        self.send_span: SendSpan | None = None
        """How the connection sends a span from its capture file: set for a plain (not TLS)
        connection with the ``ccx.binary-output`` subprotocol, None otherwise."""
        self.spans_sent = 0
        """Output notifications sent as spans (see :meth:`notify_span`)."""
        self.span_bytes = 0
        """Bytes of output sent as spans."""
        self.bytes_sendfiled = 0
        """Bytes of those spans the socket took by ``sendfile`` (the rest was read and written)."""
        self.tasks: list[asyncio.Task[Any]] = []
        self.disk = disk
        """This session's share of the server's disk budget (replay, spool, capture)."""
        if disk is not None:
            disk.replay, disk.replay_dropped = replay, self._replay_dropped
        self._send = send
        self._lock = asyncio.Lock()
        self._held: list[Callable[[], Awaitable[Any]]] | None = None
        self._posted: set[asyncio.Task[Any]] = set()
        self.acking = False
        """True once the client sent an ``ack``: it is then sent at most a window ahead."""
        self._acked = asyncio.Event()
        self.answered = asyncio.Event()
        """Set unless a request of this session's connection is being answered: what a
        followed job logs meanwhile is sent after the answer (see ``jobs._follow``)."""
        self.answered.set()

    @property
    def attached(self) -> bool:
        """True while a connection carries this session."""
        return self._send is not None

    @property
    def running(self) -> bool:
        """True while a process runs (or is paused) in this session."""
        return self.execution is not None and not self.execution.finished.is_set()

    def hold(self, queue: list[Callable[[], Awaitable[Any]]]) -> None:
        """Queue notifications in ``queue`` (numbered when sent) until :meth:`unhold`.

        A batch holds them, so that what its requests cause is told after the batch's
        response and after the ``process.started`` of an ``execute`` earlier in it.
        """
        self._held = queue

    def unhold(self) -> None:
        """Stop queueing; the holder sends what was queued, in order."""
        self._held = None

    @contextlib.contextmanager
    def deferring(self, queue: list[Callable[[], Awaitable[Any]]]) -> Iterator[None]:
        """Hold the notifications sent within into ``queue``, unless a batch holds them already.

        For what a single request causes (``control``'s ``process.paused``): told after the
        request's response, as in a batch. Only for code that does not yield while it holds,
        so no output of the run is caught in the queue.
        """
        if self._held is not None:
            yield
            return
        self.hold(queue)
        try:
            yield
        finally:
            self.unhold()

    async def notify(self, method: str, params: dict[str, Any]) -> int:
        """Send a run-related notification with the next ``seq``; return that seq (0: held)."""
        if self._held is not None:
            self._held.append(functools.partial(self.notify, method, params))
            return 0
        if method == methods.PROCESS_OUTPUT:
            # Only output waits for the client's acks, and outside the send lock: responses
            # and the notifications that requests cause (sent from the connection's frame
            # loop) must never wait, or the acks queued behind them would never be read.
            await self._within_window()
        async with self._lock:
            self.last_seq += 1
            seq = self.last_seq
            text = self._serialize(method, {**params, "seq": seq})
            if self.replay is None:
                await self._send_text(text)
            else:
                # Kept first, so a send lost with a dying connection can be replayed.
                self.replay.append(seq, text)
                await self._send_kept(text)
        return seq

    def takes_spans(self) -> bool:
        """Whether output may now go as spans sent from the capture file: an attached plain
        connection with binary frames, a client that acknowledges (a span stays in the
        capture file, unpunched, until its ``ack``), a replay log with a memory tail."""
        return (
            self.send_span is not None
            and self.acking
            and not self.ending
            and self._held is None
            and self.replay is not None
            and self.replay.memory_limit > 0
        )

    async def notify_span(self, stream: str, span: Span) -> bool:
        """Send whole lines of a capture file as one ``process.output`` binary frame, from the
        file; False (nothing sent, the caller sends the text) when the session cannot, or
        the child reopened the file by path (it may have truncated it under the span)."""
        if not self.takes_spans() or span.capture.reopened:
            return False
        await self._within_window()
        async with self._lock:
            if not self.takes_spans():
                return False
            assert self.replay is not None and self.send_span is not None
            self.last_seq += 1
            seq = self.last_seq
            header = protocol.output_header(
                methods.PROCESS_OUTPUT, {"type": stream, "truncated": False, "seq": seq}
            )
            self.replay.append_span(seq, header, span)  # kept first, as in notify
            try:
                self.bytes_sendfiled += await self.send_span(header, span)
                self.spans_sent += 1
                self.span_bytes += span.length
                self.last_sent_at = time.monotonic()
            except Exception:
                self._send = self.send_span = None  # the handler detaches the session
        return True

    def _serialize(self, method: str, params: dict[str, Any]) -> bytes:
        """A notification as its frame: output as a binary frame for a client that speaks
        the ``ccx.binary-output`` subprotocol, everything else as JSON text."""
        if self.binary_output and method == methods.PROCESS_OUTPUT:
            frame = protocol.output_frame(method, params)
            if frame is not None:
                return frame
        return protocol.dumps_bytes(protocol.notification(method, params))

    def post(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification soon, from code that must not wait (or is inside a send)."""
        task = asyncio.ensure_future(self.notify(method, params))
        self._posted.add(task)
        task.add_done_callback(self._posted.discard)

    def _replay_dropped(self, first_available: int, scope: str) -> None:
        logger.warning(
            "! [ENHANCED] session %s: %s disk limit reached, replay before seq %d dropped",
            self.id, scope, first_available,
        )
        execution = self.execution if self.running else None
        pids = execution.pid_fields if execution is not None else {}
        self.post(
            methods.PROCESS_NOTICE,
            {
                "kind": "disk_limit",
                "action": "replay_dropped",
                "scope": scope,
                "first_available_seq": first_available,
                "message": f"{limit_reached(scope)}: notifications before seq "
                f"{first_available} are no longer kept for resume",
                **pids,
            },
        )

    async def send(self, message: Any) -> None:
        """Send a message that carries no seq (responses, heartbeats)."""
        async with self._lock:
            if self._send is not None:
                await self._send_text(protocol.dumps_bytes(message))

    def detach(self) -> None:
        """The connection is gone: keep running, keep recording, send nothing."""
        self._send = self.send_span = None
        self.connection = None
        self.detached_at = time.monotonic()
        self._acked.set()  # an output waiting for acks looks again, with the detached window

    def mark_ending(self) -> None:
        """The session is being ended: not resumable, and its output no longer waits for acks."""
        self.ending = True
        self._acked.set()

    async def attach(self, send: Send, connection: Any, last_seq: int, send_span: SendSpan | None = None) -> int:
        """Carry on over a new connection: replay everything after ``last_seq``.

        Raises OutputGap when part of it is no longer kept. Returns how many
        notifications were replayed.
        """
        async with self._lock:
            if self.replay is not None:
                self.replay.ack(last_seq)  # the new connection holds everything up to it
            texts = self.replay.since(last_seq) if self.replay is not None else iter(())
            count = 0
            for text in texts:
                await send(text)
                count += 1
            self._send, self.send_span = send, send_span
            self.connection = connection
            self.detached_at = None
        self._acked.set()  # an output held while detached goes on
        return count

    def ack(self, seq: int) -> int:
        """The client holds every notification up to ``seq``; returns the first seq still kept.

        Not under the send lock: a send that waits for a slow reader must not hold up the
        requests behind an ``ack`` (a CANCEL). A replay going on is not disturbed: the
        client can only acknowledge what the replay has already sent.
        """
        if self.replay is None:
            return self.last_seq + 1
        self.acking = True
        self.replay.ack(seq)
        self._acked.set()
        return self.replay.first_seq

    async def _within_window(self) -> None:
        """A client that acknowledges gets at most half the replay's memory tail unacknowledged.

        So the tail never spills to disk because of what is in flight (socket buffers can
        hold tens of MiB), and a run's backlog waits where it already is (its capture
        file). While such a client is away (detached), output waits once the log holds
        half its limit: what it has not received is never dropped to make room, it is
        still in the capture file when the client resumes. A client that never sent
        ``ack`` is never waited for; nor is a session being ended.
        """
        while self.acking and not self.ending and self.replay is not None and self._over_window(self.replay):
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), 1.0)  # and look again: a detach ends the wait

    def _over_window(self, replay: ReplayLog) -> bool:
        return replay.over_window if self.attached else replay.over_detached_window

    async def heartbeat(self, interval: float | None = None) -> None:
        """Send one heartbeat carrying ``last_seq`` and the current beat interval."""
        params = {
            "timestamp": time.time(),
            "session_id": self.id,
            "status": "alive",
            "last_seq": self.last_seq,
            "interval": interval or self.heartbeat_interval,
        }
        await self.send(protocol.notification(methods.HEARTBEAT, params))

    def update_settings(self, heartbeat: float | None, inactivity: float | None) -> None:
        """Per-session overrides from ``execute``; wakes the timers to pick them up."""
        changed = False
        if heartbeat is not None and heartbeat != self.heartbeat_interval:
            self.heartbeat_interval, changed = heartbeat, True
        if inactivity is not None and inactivity != self.inactivity_threshold:
            self.inactivity_threshold, changed = inactivity, True
        if changed:
            # Only a real change restarts the beat timer: an execute that repeats the
            # interval must not push the next beat back (up to two intervals late).
            self.settings_changed.set()

    def connected_params(self, version: str, capabilities: list[str], max_message_size: int) -> dict[str, Any]:
        """The params of the ``connected`` notification (``max_message_size``: the largest
        frame the server takes, in bytes, so that a client sizes its requests to fit)."""
        return {
            "session_id": self.id,
            "version": version,
            "protocol_version": protocol.PROTOCOL_VERSION,
            "capabilities": capabilities,
            "heartbeat_interval": self.heartbeat_interval,
            "inactivity_threshold": self.inactivity_threshold,
            "resume_token": self.resume_token,
            "max_message_size": max_message_size,
        }

    async def _send_text(self, text: bytes) -> None:
        if self._send is not None:
            await self._send(text)
            self.last_sent_at = time.monotonic()

    async def _send_kept(self, text: bytes) -> None:
        try:
            await self._send_text(text)
        except Exception:
            # The connection died mid-send; the text is in the replay log and the
            # connection handler detaches the session.
            self._send = self.send_span = None


class SessionManager:
    """Creates and tracks sessions, enforcing the session limit."""

    def __init__(self, *, max_sessions: int | None = None) -> None:
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}
        self.idle = asyncio.Event()
        """Set while no session is open."""
        self.idle.set()

    def create(
        self,
        send: Send,
        *,
        heartbeat_interval: float,
        inactivity_threshold: float,
        replay: ReplayLog | None = None,
        disk: DiskUse | None = None,
    ) -> Session:
        """Open a session, or raise LimitReached."""
        if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
            raise LimitReached(f"session limit reached ({self.max_sessions})")
        session = Session(
            send,
            heartbeat_interval=heartbeat_interval,
            inactivity_threshold=inactivity_threshold,
            replay=replay,
            disk=disk,
        )
        self.sessions[session.id] = session
        self.idle.clear()
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id, if any."""
        return self.sessions.get(session_id)

    def remove(self, session: Session) -> None:
        """Forget a session and drop its replay log."""
        self.sessions.pop(session.id, None)
        if session.replay is not None:
            session.replay.close()
        if session.disk is not None:
            session.disk.close()
        if not self.sessions:
            self.idle.set()

    @property
    def running_count(self) -> int:
        """How many sessions run a process now."""
        return sum(1 for session in self.sessions.values() if session.running)
