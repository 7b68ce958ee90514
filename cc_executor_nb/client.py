"""An asyncio client for the enhanced handler.

::

    async with await connect(url, token=token) as client:
        await client.execute(argv=["echo", "hi"])
        async for event in client.events():
            ...

Replies are matched to requests through a ``dict[id, Future]``; every pending request
fails with ``ConnectionLost`` when the connection closes. Notifications become typed
``Event`` objects, delivered to listeners (called on the loop, in order) and to the
``events()`` iterator. The iterator's buffer is bounded (``max_events``): a consumer
that stops reading makes the client stop reading the socket, which in turn makes the
server spool the output, so nothing piles up in memory on either side.

Reconnection: when the connection drops without a close frame (network loss, a
sleeping laptop) or three heartbeats in a row are missed, the client reconnects with
backoff and sends ``resume`` with the last ``seq`` it saw; the server replays what was
missed, so listeners see no gap and no duplicate. Listeners are told with synthetic
events: ``client.reconnecting``, ``client.reconnected``, ``client.output_gap`` (the
server no longer had part of the output; never skipped silently) and
``client.disconnected`` (gave up). After every MiB of frames received, the client sends
an ``ack`` notification with its ``last_seq`` (servers that list ``ack`` in their
capabilities): the server keeps only what was not acknowledged, in memory, so a client
that keeps up makes the server write nothing for resume to disk.

Durable jobs: ``execute(..., durable=True)`` starts a job the server keeps when this
connection goes; ``attach(job_id)`` follows one from the start (or after a seq);
``jobs()`` lists them. A client following a job reconnects by attaching again after
the last ``seq`` it saw (a job's seq numbering belongs to the job, not the session).
Given ``locate``, it asks it before each attempt where the server is now: a job server
that died and was started again listens on another port with another token.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import re
import socket
import ssl as ssl_module
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus, InvalidURI
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from . import methods, protocol
from .declare import OptionError
from .errors import ConnectionLost, HandshakeRefused, LimitReached, OutputGap, ProtocolError, UnknownSession
from .events import Completed, Connected, Event, make_event
from .protocol import FROM_ARGUMENTS, MAX_EXECUTE_INPUT_BYTES, MAX_INPUT_BYTES
from .redaction import keep_out_of_logs

__all__ = ["Client", "Locator", "Opened", "check_server_url", "connect", "dial", "os_reason", "shown_url"]

logger = logging.getLogger("cc_executor_nb.client")

T = TypeVar("T")

Listener = Callable[[Event], None]
Locator = Callable[[], tuple[str, str | None, ssl_module.SSLContext | None] | None]
"""Where the server is now, ``(url, token, tls)`` (``tls``: how to verify a ``wss://`` server,
None for ``ws://`` or the default context), or None when that is not known."""
_CLOSED = object()
_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
_INPUT_BACKOFF = (0.02, 0.05, 0.1, 0.2, 0.5)
"""Seconds before an ``input`` piece refused for a full queue is sent again: the process
reads on meanwhile, so the wait stays short (each retry resends the piece, at most 256 KiB)."""
INPUT_STALLED_WAIT = 5.0
"""The longest wait before an ``input`` piece is sent again to a process that read nothing
since the last refusal (the refusal's ``queued_bytes`` did not drop): the wait doubles up
to it, instead of resending up to 256 KiB every 0.5 s for as long as the process stalls."""
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ACK_EVERY = 1 << 20
"""Bytes of frames received between two ``ack`` notifications (on servers that take them)."""
UNREACHED_NOTE_AFTER = 30.0
"""Seconds a reconnecting client fails to reach its server before it says, once, that the
server may be gone (``still_unreached`` on ``client.reconnecting``)."""


class _InputBackoff:
    """How long to wait before an ``input`` piece the server refused (its queue full) is sent
    again: short while the process reads (``_INPUT_BACKOFF``), doubling up to
    ``INPUT_STALLED_WAIT`` while it reads nothing (two refusals in a row with as many bytes
    queued; a server that does not say how many keeps the short schedule)."""

    def __init__(self) -> None:
        self._attempt = 0
        self._wait = 0.0
        self._queued: int | None = None

    def after(self, refusal: Any) -> float:
        """Seconds to wait after a refusal whose ``data`` is ``refusal``."""
        queued = refusal.get("queued_bytes") if isinstance(refusal, dict) else None
        stalled = isinstance(queued, int) and self._queued is not None and queued >= self._queued
        self._queued = queued if isinstance(queued, int) else None
        if stalled:
            self._wait = min(self._wait * 2, INPUT_STALLED_WAIT)
        else:
            self._wait = _INPUT_BACKOFF[min(self._attempt, len(_INPUT_BACKOFF) - 1)]
            self._attempt += 1
        return self._wait


@dataclass(frozen=True)
class _Dialer:
    """How to open (and re-open) the WebSocket."""

    url: str
    token: str | None
    open_timeout: float
    max_size: int | None
    ping_interval: float | None
    ping_timeout: float | None
    ssl: ssl_module.SSLContext | None = None

    async def dial(self) -> ClientConnection:
        keep_out_of_logs(self.token)  # websockets logs the Authorization header and frames at DEBUG
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        # websockets refuses ssl=None for wss:// (it means "no TLS"): leave it out then.
        tls: dict[str, Any] = {"ssl": self.ssl} if self.ssl is not None else {}
        try:
            return await ws_connect(
                _without_user_info(self.url),  # websockets would send it as a second Authorization
                additional_headers=headers,
                subprotocols=[Subprotocol(protocol.BINARY_OUTPUT)],
                **tls,
                compression=None,
                max_size=self.max_size,
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                proxy=None,
            )
        except InvalidStatus as exc:
            raise _refused(shown_url(self.url), exc) from None
        except InvalidURI as exc:  # its message is the whole URL, a query's token too
            raise ValueError(f"{shown_url(self.url)} is not a valid server URL: {exc.msg}") from None
        except InvalidMessage:
            raise ConnectionError(_no_http_answer(self.url)) from None


_NO_JOB_SERVER = "no job server of ours runs (its runtime file names none that is alive and listening)"
"""Why a job follower does not dial: its locator found no server to give the token to."""


def _no_http_answer(url: str) -> str:
    """Why the handshake got no HTTP answer, in words: the connection was closed (a TLS
    server closes a ws:// URL's, a full server may close one) or the answer was no HTTP."""
    if url.lower().startswith("ws://"):
        return ("the connection closed without an HTTP answer to the handshake "
                "(a server that speaks TLS needs a wss:// URL; a full server may close it too)")
    return "no valid HTTP answer to the handshake (is it a cc_executor_nb server?)"


class Client:
    """One session with a server. Create it with ``connect``."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        dialer: _Dialer | None = None,
        max_events: int = 4096,
        buffer_events: bool = True,
        auto_reconnect: bool = True,
        reconnect_timeout: float = 300.0,
        locate: Locator | None = None,
        received: Sequence[str | bytes] = (),
    ) -> None:
        self._ws = ws
        self._received = list(received)
        """Frames of ``ws`` read before this client had it (an :class:`Opened`'s ``connected``)."""
        self._dialer = dialer
        self._locate = locate
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue(max_events)
        self._listeners: list[Listener] = []
        self._connected: asyncio.Future[Connected] = asyncio.get_running_loop().create_future()
        self._buffer_events = buffer_events
        self._room = asyncio.Event()
        """Set when events() took an event (or close() was called): the reader may go on."""
        self._parked: collections.deque[Any] = collections.deque()
        """Events (and the end marker) that found the queue full after close(): events()
        gives them once the queue is empty (no task waits for room, so none is left pending
        when nobody reads)."""
        self._closing = False
        self._input_room = asyncio.Event()
        """Set, then replaced, when the server says a run's input queue has room again
        (``input.drained``) or the connection ends: an ``input`` waiting for room sends now."""
        self._reconnecting = False
        self.auto_reconnect = auto_reconnect and dialer is not None
        self.reconnect_timeout = reconnect_timeout
        self.unreached_note_after = UNREACHED_NOTE_AFTER
        self.heartbeat_interval: float | None = None
        self.last_seq = 0
        self.job_id: str | None = None
        """The durable job this client follows (started or attached), if any."""
        self.reconnects = 0
        self.acked = 0
        """The highest seq this client acknowledged to the server."""
        self._max_message_size: int | None = None
        """The frame limit of the server on the connection now, as its ``connected`` said
        (None: it said none): a reconnect may reach a server started again with another."""
        self._capabilities: frozenset[str] = frozenset()
        """The ``capabilities`` of the server on the connection now, as its ``connected`` said:
        a reconnect may reach a server started again as another version."""
        self._unacked_bytes = 0
        self._last_frame_at = time.monotonic()
        self._reader = asyncio.ensure_future(self._run())
        self.close_reason: str | None = None

    # -- Session ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is gone for good."""
        return self._reader.done()

    async def wait_connected(self, timeout: float | None = 10.0) -> Connected:
        """The ``connected`` notification (waits for it)."""
        return await asyncio.wait_for(asyncio.shield(self._connected), timeout)

    @property
    def session_id(self) -> str | None:
        """The server's session id, once connected."""
        done = self._connected.done() and not self._connected.exception()
        return self._connected.result().session_id if done else None
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every notification, on the loop, in order."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def events(self) -> AsyncIterator[Event]:
        """Every notification in arrival order, until the connection closes."""
        while True:
            if self._queue.empty() and self._parked:
                item = self._parked.popleft()
            else:
                item = await self._queue.get()
            self._room.set()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                return
            yield item

    async def close(self) -> None:
        """Close the connection cleanly (the server then ends any run at once).

        It does not wait for a consumer of :meth:`events` that stopped reading: past a
        full queue, the events still to come wait in the background, in order, and
        ``events()`` ends after them. A caller cancelled while it waits is cancelled (and
        the reader with it).
        """
        self._closing = True
        self._room.set()  # a reader waiting for room in the queue parks what it holds
        reader = self._reader
        try:
            if self._reconnecting:
                self._reader.cancel()  # no connection to close: stop dialling (a new one is aborted)
            else:
                await self._ws.close()
            await asyncio.wait((reader,))
        except asyncio.CancelledError:
            # Cancelled half-way through the closing handshake: the socket is closed here,
            # not left open for the garbage collector (an unclosed-socket ResourceWarning).
            self._ws.transport.abort()
            reader.cancel()
            raise
        if not reader.cancelled():
            reader.result()  # a fault of the reader's own is not swallowed

    def _abandon(self) -> None:
        """Drop a connection that never became a session: no closing handshake to wait for."""
        self._closing = True
        self._ws.transport.abort()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- Requests --------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request and return its result, or raise the server's error."""
        if self.closed:
            raise ConnectionLost(self.close_reason or "connection closed")
        request_id = next(self._ids)
        # Encoded first: params JSON cannot hold (a TypeError) leave no answer pending.
        frame = protocol.dumps(protocol.request(request_id, method, params))
        _check_utf8(method, frame)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            self._pending.pop(request_id, None)
            raise ConnectionLost(str(exc)) from None
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        return await future

    async def execute(
        self,
        command: str | None = None,
        *,
        argv: list[str] | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        heartbeat_interval: float | None = None,
        inactivity_threshold: float | None = None,
        kill_grace: float | None = None,
        progress_target: dict[str, Any] | Any | None = FROM_ARGUMENTS,
        stdin: str | None = None,
        capture: str | None = None,
        durable: bool = False,
        label: str | None = None,
        meta: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        stdin_idle_timeout: float | None = None,
        stdin_close_on_summary: bool = False,
        summary_ends_turn: bool = False,
        input: str | None = None,
        server_python: bool = False,
    ) -> dict[str, Any]:
        """Start a process: give ``command`` (split with shlex) or ``argv``.

        ``progress_target`` (``{"count", "unit"}`` or None to count nothing) replaces the
        target the server would find in the arguments; ``capture`` ("file" or "pipe")
        chooses how the server captures the output (None: its default, "file").
        ``durable`` makes it a job the server keeps (``label``, ``meta`` and ``summary``
        describe it; see the README's protocol section); the result then carries its
        ``job_id``. ``stdin_idle_timeout`` (a durable job with ``stdin="pipe"``): its stdin
        closes after that many seconds without input while nobody follows the job;
        ``stdin_close_on_summary``: once a stdout line matches ``summary``.
        ``summary_ends_turn``: a line matching ``summary`` ends a turn, an ``input`` begins
        one, and a ``timeout`` between turns lists the job ``completed``.
        ``input`` (with ``stdin="pipe"``): text the server writes to the process's stdin
        once it started and then closes it, whatever becomes of this connection.
        ``server_python``: ``argv`` is ``PYTHON -m`` one of this package's wrappers
        (``protocol.SERVER_PYTHON_MODULES``), and the server runs it with its own interpreter
        (a server that does not offer ``execute.server_python`` runs ``argv[0]`` as given).
        """
        params = _execute_params(
            command, argv=argv, progress_target=progress_target, durable=durable, label=label, meta=meta,
            summary=summary, stdin_idle_timeout=stdin_idle_timeout, stdin_close_on_summary=stdin_close_on_summary,
            summary_ends_turn=summary_ends_turn, cwd=cwd, env=env, timeout=timeout,
            heartbeat_interval=heartbeat_interval, inactivity_threshold=inactivity_threshold,
            kill_grace=kill_grace, stdin=stdin, capture=capture, input=input,
            server_python=server_python or None,
        )
        result = dict(await self.call(methods.EXECUTE, params))
        if heartbeat_interval is not None:
            self.heartbeat_interval = heartbeat_interval
        if durable:
            self.job_id = str(result["job_id"])
        return result

    async def attach(self, job_id: str, last_seq: int = 0) -> dict[str, Any]:
        """Follow a durable job: its notifications after ``last_seq`` arrive, then live ones.

        Returns ``{"status": "attached", "job_id", "last_seq", "job"}``; control,
        ``status`` and input on this client then act on the job.
        """
        # Set before the call: the replay may be read before this coroutine resumes.
        previous, self.last_seq = self.last_seq, last_seq
        try:
            result = dict(await self.call(methods.JOBS_ATTACH, {"job_id": job_id, "last_seq": last_seq}))
        except BaseException:
            self.last_seq = previous
            raise
        self.job_id = job_id
        return result

    async def jobs(self) -> list[dict[str, Any]]:
        """The server's durable jobs, newest first."""
        return list((await self.call(methods.JOBS_LIST))["jobs"])

    async def removed_jobs(self) -> list[dict[str, Any]]:
        """The jobs the server deleted lately (``job_id``, ``ended_at``, ``removed_at``,
        ``reason``), newest first: what it remembers of them since it started."""
        return list((await self.call(methods.JOBS_LIST, {"removed": True})).get("removed", []))

    async def control(self, kind: str) -> dict[str, Any]:
        """PAUSE, RESUME or CANCEL the running process."""
        return dict(await self.call(methods.CONTROL, {"type": kind}))

    async def pause(self) -> dict[str, Any]:
        """SIGSTOP the run's process group."""
        return await self.control("PAUSE")

    async def resume(self) -> dict[str, Any]:
        """SIGCONT the run's process group."""
        return await self.control("RESUME")

    async def cancel(self) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after the grace, the run's process group."""
        return await self.control("CANCEL")

    async def input(
        self, data: str, *, ok_exit_codes: Sequence[int] | None = None, turn: bool = False
    ) -> dict[str, Any]:
        """Queue ``data`` for the running process's stdin (the run needs ``stdin="pipe"``).

        Text longer than the protocol's per-request limit (256 KiB), or than fits the
        server's frame limit (its ``connected`` says how big), goes in several requests, in
        order; the result is the last one's. ``ok_exit_codes`` (sent with the last piece)
        tells a durable job which exit codes, once its input is closed, are an end as asked.
        A piece the server refuses because the process has not yet read what it holds (its
        input queue full, -32000) is sent again once it has read some, however long that
        takes: only the process's end (NoProcessRunning) or the connection's (ConnectionLost)
        stops it.

        ``turn``: ``data`` (whole lines) begins a turn of a durable job with ``summary_ends_turn``:
        the server holds it while a turn is under way (:attr:`holds_turns`). A text that takes
        more than one request, or a server that does not hold turns, gets it written at once.
        """
        result: dict[str, Any] = {}
        pieces = _input_pieces(data, budget=self._input_budget(ok_exit_codes, turn))
        held = turn and len(pieces) == 1 and self.holds_turns
        for index, piece in enumerate(pieces):
            params: dict[str, Any] = {"data": piece}
            if ok_exit_codes is not None and index == len(pieces) - 1:
                params["ok_exit_codes"] = list(ok_exit_codes)
            if held:
                params["turn"] = True
            result = await self._input_piece(params)
        return result

    @property
    def holds_turns(self) -> bool:
        """Whether the server on the connection now holds an ``input`` with ``turn`` while a
        turn of its job is under way (its ``connected`` lists ``input.turn``)."""
        return methods.INPUT_TURN in self._capabilities

    async def _input_piece(self, params: dict[str, Any]) -> dict[str, Any]:
        """One ``input`` request, sent again while the process's queue is full: when the
        server says it has room (``input.drained``), or after a backoff. A server that says
        so is waited for up to ``INPUT_STALLED_WAIT`` (should its word be lost), others are
        asked again on the backoff's schedule."""
        backoff = _InputBackoff()
        while True:
            room = self._input_room  # before the request: its answer may come after the notification
            try:
                return dict(await self.call(methods.INPUT, params))
            except LimitReached as exc:
                wait = backoff.after(exc.data)
                if methods.INPUT_DRAINED in self._capabilities:
                    wait = INPUT_STALLED_WAIT
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(room.wait(), wait)

    def _wake_input(self) -> None:
        """Every ``input`` waiting for room sends again now."""
        self._input_room.set()
        self._input_room = asyncio.Event()

    async def takes_input_in_execute(self, text: str, **execute: Any) -> bool:
        """Whether ``execute`` should carry ``text`` as its ``input``: the server offers it
        (``execute.input``) and the whole request, ``text`` with the other arguments of that
        ``execute`` (``execute``), fits the server's frame limit (its ``connected`` says it;
        an older server's: the text fits one ``input`` request). The server then writes it at
        the start, whatever this client does meanwhile (``claude -p`` waits only 3 s for its
        stdin, then fails; a durable job outlives its kernel). A longer text goes in ``input``
        requests right after the start, as host mode sends its prompts (``execute`` is one
        frame: a 1.2 MB one was refused as too big, and a 150 KiB prompt by a server started
        with ``--max-message-size 200000``)."""
        await self.wait_connected()
        if methods.EXECUTE_INPUT not in self._capabilities:
            return False
        if len(text.encode("utf-8", "surrogatepass")) > MAX_EXECUTE_INPUT_BYTES:
            return False  # execute's own bound, whatever frames the server takes
        if self._max_message_size is None:
            return len(_input_pieces(text)) == 1  # one piece: it fits the default frame once escaped
        request = _execute_params(**{**execute, "input": text})
        return _request_bytes(methods.EXECUTE, request) <= self._max_message_size

    def _input_budget(self, ok_exit_codes: Sequence[int] | None, turn: bool = False) -> int:
        """The most bytes an ``input`` piece may take as a JSON string: what the server's frame
        limit leaves beside the rest of the request (``ok_exit_codes`` rides on the last one)."""
        limit = self._max_message_size
        if limit is None:
            return INPUT_FRAME_BUDGET  # an older server: its default frame limit
        params: dict[str, Any] = {"data": ""}
        if ok_exit_codes is not None:
            params["ok_exit_codes"] = list(ok_exit_codes)
        if turn:
            params["turn"] = True
        return limit - _request_bytes(methods.INPUT, params) + len('""')

    async def close_input(self, *, after_turn: bool = False) -> dict[str, Any]:
        """Close the running process's stdin after everything sent before was written.

        ``after_turn``: a durable job with ``summary_ends_turn`` closes it once the turn under way,
        and those it holds, ended; sent only to a server that lists ``input.close.after_turn``
        (:attr:`closes_after_turn`), an older one would close at once.
        """
        params = {"after_turn": True} if after_turn and self.closes_after_turn else None
        return dict(await self.call(methods.INPUT_CLOSE, params))

    @property
    def closes_after_turn(self) -> bool:
        """Whether the server on the connection takes ``input.close``'s ``after_turn``."""
        return methods.INPUT_CLOSE_AFTER_TURN in self._capabilities

    async def status(self) -> dict[str, Any]:
        """The session's state, pid, timings and resources."""
        return dict(await self.call(methods.STATUS))

    async def run_events(self, command: str | None = None, **kwargs: Any) -> AsyncIterator[Event]:
        """Execute and yield this run's events up to and including ``process.completed``."""
        await self.execute(command, **kwargs)
        async for event in self.events():
            yield event
            if isinstance(event, Completed):
                return
        raise ConnectionLost(self.close_reason or "connection closed during the run")

    # -- Reading ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                clean = await self._read_connection()
                self._fail_pending()
                if clean or not self._may_resume():
                    return
                self._reconnecting = True
                try:
                    if not await self._reconnect():
                        return
                finally:
                    self._reconnecting = False
                self._wake_input()  # the old connection's input.drained will not come: ask the new one
        finally:
            self._finish()

    async def _read_connection(self) -> bool:
        """Read until the connection closes; True when it closed cleanly."""
        watchdog = asyncio.ensure_future(self._watch_heartbeats(self._ws))
        try:
            received, self._received = self._received, []
            for frame in received:
                await self._dispatch(frame)
            while True:
                frame, binary = await _receive(self._ws)
                self._last_frame_at = time.monotonic()
                await self._dispatch(frame, binary)
                # Bytes, as the server's window counts them (text frames come as str with
                # the binary-output subprotocol: characters would undercount non-ASCII).
                self._unacked_bytes += len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8"))
                if self._unacked_bytes >= ACK_EVERY:
                    await self._ack()
        except ConnectionClosed as exc:
            self.close_reason = _closed_reason(exc)
        finally:
            watchdog.cancel()
        self.close_reason = self.close_reason or _describe_close(self._ws)
        return self._closing or self._ws.protocol.close_rcvd is not None

    async def _ack(self) -> None:
        """Tell the server it may forget what this client holds (a notification, no reply)."""
        self._unacked_bytes = 0
        if self.last_seq <= self.acked or self.job_id is not None or not self._may_ack():
            return  # a followed job keeps its log whatever its followers hold
        self.acked = self.last_seq
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close next
            await self._ws.send(protocol.dumps(protocol.notification(methods.ACK, {"seq": self.acked})))

    def _may_ack(self) -> bool:
        done = self._connected.done() and not self._connected.exception()
        return done and methods.ACK in self._capabilities

    async def _watch_heartbeats(self, ws: ClientConnection) -> None:
        """Three missed heartbeats count as a dropped connection."""
        while True:
            interval = self.heartbeat_interval or 20.0
            # Re-read the interval at least every second: execute() may shorten it.
            await asyncio.sleep(min(interval / 2, 1.0))
            if time.monotonic() - self._last_frame_at > 3 * interval:
                logger.warning("! no heartbeat for %.1f s: dropping the connection", 3 * interval)
                ws.transport.abort()
                return

    def _may_resume(self) -> bool:
        if not self.auto_reconnect or self._closing or not self._connected.done():
            return False
        needed = methods.JOBS_ATTACH if self.job_id is not None else methods.RESUME
        return not self._connected.exception() and needed in self._capabilities

    async def _reconnect(self) -> bool:
        """Dial again with backoff and resume; False when it gave up."""
        assert self._dialer is not None
        started = time.monotonic()
        deadline = started + self.reconnect_timeout
        unreached: str | None = None
        noted = False
        for attempt in itertools.count(1):
            params: dict[str, Any] = {"attempt": attempt, "reason": self.close_reason}
            if unreached is not None:
                params.update(self._unreached_params(unreached, started, deadline, noted))
                noted = noted or bool(params.get("still_unreached"))
            await self._notify_local(methods.CLIENT_RECONNECTING, params)
            await asyncio.sleep(_BACKOFF[min(attempt - 1, len(_BACKOFF) - 1)])
            if not await self._relocate():
                if time.monotonic() > deadline:
                    return await self._give_up(f"reconnect failed for {self.reconnect_timeout:g} s: {_NO_JOB_SERVER}")
                unreached = _NO_JOB_SERVER
                continue
            try:
                ws = await self._dialer.dial()
            except HandshakeRefused as exc:
                if self._may_be_stale(exc) and time.monotonic() <= deadline:
                    unreached = None  # it answered: reachable, only not yet ready for us
                    continue  # the job server's next one may not have said where it is yet
                return await self._give_up(self._refused_again(exc))
            except Exception as exc:  # network errors of every kind: try again
                if time.monotonic() > deadline:
                    return await self._give_up(f"reconnect failed: {self._unreached(exc)}")
                unreached = self._reason(exc)
                continue
            unreached = None  # reached: a resume that fails next is no unreachable server
            try:
                outcome = await self._resume_on(ws)
            except BaseException:  # cancelled mid-resume (the loop is stopping): the new connection too
                ws.transport.abort()
                raise
            if outcome is not None:
                return outcome
            ws.transport.abort()  # not resumed on it: the next attempt dials a new one
            if time.monotonic() > deadline:
                return await self._give_up("reconnect timed out")
        return False

    def _unreached(self, exc: Exception) -> str:
        """Why the last reconnect failed, in words: the URL, the reason, the time tried."""
        assert self._dialer is not None
        return f"cannot reach {shown_url(self._dialer.url)} for {self.reconnect_timeout:g} s: {self._reason(exc)}"

    def _reason(self, exc: Exception) -> str:
        """A failed dial's reason in words ("Connection refused")."""
        assert self._dialer is not None
        return os_reason(self._dialer.url, exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__

    def _unreached_params(self, reason: str, started: float, deadline: float, noted: bool) -> dict[str, Any]:
        """What ``client.reconnecting`` says of a server the last dial could not reach: the
        reason, how long it has been down, how long the client goes on trying; and, once it
        has been unreachable for ``unreached_note_after`` seconds, ``still_unreached`` (once)."""
        assert self._dialer is not None
        now = time.monotonic()
        params: dict[str, Any] = {"unreachable": reason, "url": shown_url(self._dialer.url),
                                  "down_for": now - started, "gives_up_in": max(0.0, deadline - now)}
        if not noted and now - started >= self.unreached_note_after:
            params["still_unreached"] = True
        return params

    def _may_be_stale(self, exc: HandshakeRefused) -> bool:
        """A job follower's token refused: a restarted job server can listen on the old port
        before its runtime file names its new token, so the follower looks again."""
        return exc.status == 401 and self._locate is not None and self.job_id is not None

    def _refused_again(self, exc: HandshakeRefused) -> str:
        """Why a reconnect the server refused gives up, and how to go on."""
        if exc.status != 401:
            return f"reconnect refused: HTTP {exc.status}"
        how = (f"attach to job {self.job_id} with the server's new token" if self.job_id is not None
               else "a run that was not durable ended with that server: run it again with the new token")
        return ("reconnect refused: the server no longer accepts this run's token (HTTP 401; "
                f"it may have restarted with a new one): {how}")

    async def _relocate(self) -> bool:
        """A job follower dials wherever ``locate`` says the server is now (a resumed
        session lives in one server process only, so only a job is looked for elsewhere).
        The locator runs off the loop: it may start the next job server.

        False when the locator names no server: then nothing is dialled, since whatever
        took the port of a job server that died would be given its token.
        """
        if self._locate is None or self.job_id is None or self._dialer is None:
            return True
        try:
            found = await _off_loop(self._locate)
        except Exception:  # a locator that fails leaves the last known address
            logger.exception("! finding the job server again failed")
            return True
        if found is None:
            return False
        url, token, tls = found
        if (url, token) != (self._dialer.url, self._dialer.token):
            logger.info("= the job server is now at %s", shown_url(url))
            # Its own TLS context: a job server started again may serve another certificate
            # (one started by a kernel speaks ws://, where none goes).
            self._dialer = replace(self._dialer, url=url, token=token, ssl=tls)
        return True

    async def _resume_on(self, ws: ClientConnection) -> bool | None:
        """Resume on a fresh connection: True resumed, False fatal, None retry later."""
        session = self._connected.result()
        last_seq = self.last_seq
        try:
            hello = await asyncio.wait_for(ws.recv(), self._dialer.open_timeout if self._dialer else 10)
            while True:
                try:
                    result = await self._resume_call(ws, session, last_seq, hello)
                    break
                except OutputGap as gap:
                    first = int((gap.data or {}).get("first_available_seq", last_seq + 1))
                    missing = {"missing_from": last_seq + 1, "missing_to": first - 1}
                    await self._notify_local(methods.CLIENT_OUTPUT_GAP, missing)
                    last_seq = self.last_seq = first - 1
        except ProtocolError as exc:
            await ws.close()
            return await self._give_up(_resume_refused(exc))
        except (TimeoutError, ConnectionClosed, OSError):
            return None
        self._ws = ws
        self._hello(_connected_of(hello))  # this server's, which may be another
        self._last_frame_at = time.monotonic()
        self.reconnects += 1
        reconnected = {"session_id": result.get("session_id"), "last_seq": last_seq}
        if isinstance(result.get("job"), dict):
            reconnected["job"] = result["job"]  # the job as attached again: its times, its status
        await self._notify_local(methods.CLIENT_RECONNECTED, reconnected)
        return True

    async def _resume_call(
        self, ws: ClientConnection, session: Connected, last_seq: int, hello: str | bytes
    ) -> dict[str, Any]:
        """Resume the session, or attach to the followed job again, after ``last_seq``."""
        if self.job_id is not None:
            result = await self._call_on(ws, methods.JOBS_ATTACH, {"job_id": self.job_id, "last_seq": last_seq})
            return {**result, "session_id": _session_of(hello)}
        params = {
            "session_id": session.session_id,
            "resume_token": session.params.get("resume_token", ""),
            "last_seq": last_seq,
        }
        return await self._call_on(ws, methods.RESUME, params)

    async def _call_on(self, ws: ClientConnection, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request on a connection not yet read by the reader task."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await ws.send(protocol.dumps(protocol.request(request_id, method, params)))
            while not future.done():
                frame = await ws.recv()  # text frames as str: bytes are binary frames
                await self._dispatch(frame, isinstance(frame, bytes))
        finally:
            # Lost with its connection, it is no request of the next one: left pending, it
            # was failed at the next close with nobody waiting ("never retrieved"). Failed by a
            # close while it waited, its error is read here: the connection's own goes up.
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()
        return dict(future.result())

    async def _give_up(self, reason: str) -> bool:
        self.close_reason = reason
        await self._notify_local(methods.CLIENT_DISCONNECTED, {"reason": reason})
        return False

    async def _notify_local(self, method: str, params: dict[str, Any]) -> None:
        await self._deliver(make_event(method, params))

    async def _dispatch(self, frame: str | bytes, binary: bool = False) -> None:
        if binary:
            output = protocol.parse_output_frame(cast(bytes, frame))
            if output is None:
                logger.warning("! ignoring an unreadable binary frame from the server")
                return
            await self._deliver(make_event(output.method, output.params))
            return
        try:
            items = protocol.parse_server_message(frame)
        except ProtocolError:
            logger.warning("! ignoring an unreadable frame from the server")
            return
        for item in items:
            if isinstance(item, protocol.Notification) and item.method == methods.INPUT_DRAINED:
                self._wake_input()  # flow control, as ``ack``: no event of the run
            elif isinstance(item, protocol.Notification):
                await self._deliver(make_event(item.method, item.params))
            else:
                self._settle(item)

    def _settle(self, item: protocol.Response | protocol.ErrorResponse) -> None:
        future = self._pending.pop(item.id, None) if isinstance(item.id, int) else None
        if future is None:
            if isinstance(item, protocol.ErrorResponse) and not self._connected.done():
                # Refused before a session (the session limit): that is why connect() fails.
                self._connected.set_exception(protocol.remote_error(item.error))
                self._connected.exception()  # retrieved: a caller may never ask
            elif isinstance(item, protocol.ErrorResponse):
                logger.warning("! server error: %s", item.error)
            return
        if future.done():
            return
        if isinstance(item, protocol.Response):
            future.set_result(item.result)
        else:
            future.set_exception(protocol.remote_error(item.error))

    def _hello(self, connected: Connected | None) -> None:
        """Take the frame limit and the capabilities of the server just reached (a frame that is
        no ``connected`` changes nothing: every server sends it first)."""
        if connected is not None:
            self._max_message_size = connected.max_message_size
            self._capabilities = frozenset(connected.capabilities)

    async def _deliver(self, event: Event) -> None:
        seq = event.seq
        if seq is not None:
            if seq <= self.last_seq:
                return  # already delivered before a reconnect
            self.last_seq = seq
        if isinstance(event, Connected):
            if self._connected.done():
                return
            self._connected.set_result(event)
            self._hello(event)
            self.heartbeat_interval = float(event.params.get("heartbeat_interval") or 20.0)
        elif event.method == methods.HEARTBEAT and isinstance(event.params.get("interval"), (int, float)):
            self.heartbeat_interval = float(event.params["interval"])
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("! event listener failed")
        if not self._buffer_events:
            return
        while self._queue.full() and not self._closing:
            self._room.clear()
            await self._room.wait()  # the consumer is behind: hold the connection
        self._enqueue(event)  # after close(), nobody need read for the reader to end

    def _enqueue(self, item: Any) -> None:
        """Put ``item`` in the queue, or after the queue's items once it is full."""
        if self._parked or self._queue.full():
            self._parked.append(item)
        else:
            self._queue.put_nowait(item)

    def _fail_pending(self) -> None:
        error = ConnectionLost(self.close_reason or "connection closed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _finish(self) -> None:
        self._wake_input()  # it learns at once that the connection is gone
        self._fail_pending()
        if not self._connected.done():
            self._connected.set_exception(ConnectionLost(self.close_reason or "connection closed"))
            self._connected.exception()  # retrieved: a caller may never ask
        self._enqueue(_CLOSED)  # a consumer behind gets the end marker after what it has yet to read


INPUT_FRAME_BUDGET = 768 << 10
"""The most bytes an ``input`` piece may take as a JSON string on a server that does not say
its frame limit (an older one: 1 MiB by default)."""


async def _receive(ws: ClientConnection) -> tuple[str | bytes, bool]:
    """The next frame, and whether it is a binary output frame.

    Without the ``ccx.binary-output`` subprotocol, text frames come as raw UTF-8 bytes
    (the JSON parser validates them itself); with it, text frames come as ``str`` so that
    bytes are the binary frames."""
    if ws.subprotocol == protocol.BINARY_OUTPUT:
        frame = await ws.recv()
        return frame, isinstance(frame, bytes)
    return await ws.recv(decode=False), False


def _input_pieces(data: str, limit: int = MAX_INPUT_BYTES, budget: int = INPUT_FRAME_BUDGET) -> list[str]:
    """``data`` in pieces of at most ``limit`` UTF-8 bytes, never splitting a character, and
    each small enough once JSON-escaped (a control character takes 6 bytes) to take at most
    ``budget`` bytes as a JSON string (the default: what the server's default 1 MiB frame
    leaves)."""
    try:
        raw = data.encode("utf-8")
    except UnicodeEncodeError:
        return [data]  # not valid Unicode: the server names the problem (-32602)
    limit = max(4, min(limit, budget - len('""')))  # plain text needs no halving; 4: a character
    pieces: list[str] = []
    start = 0
    while start < len(raw) or not pieces:
        end = min(start + limit, len(raw))
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:  # a continuation byte
            end -= 1
        pieces += _escaped_within(raw[start:end].decode("utf-8"), budget)
        start = end
    return pieces


def _escaped_within(piece: str, budget: int) -> list[str]:
    """``piece``, halved until each part's JSON string takes at most ``budget`` bytes."""
    if len(piece) < 2 or len(protocol.dumps_bytes(piece)) <= budget:
        return [piece]
    middle = len(piece) // 2
    return _escaped_within(piece[:middle], budget) + _escaped_within(piece[middle:], budget)


_WIDEST_ID = 1 << 53
"""A request id at least as long as any this client sends (they count up from 1)."""


def _request_bytes(method: str, params: dict[str, Any]) -> int:
    """The bytes of the text frame a request of ``method`` with ``params`` takes."""
    frame = protocol.dumps(protocol.request(_WIDEST_ID, method, params))
    return len(frame.encode("utf-8", "surrogatepass"))


def _execute_params(
    command: str | None = None,
    *,
    argv: list[str] | None = None,
    progress_target: Any = FROM_ARGUMENTS,
    durable: bool = False,
    label: str | None = None,
    meta: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    stdin_idle_timeout: float | None = None,
    stdin_close_on_summary: bool = False,
    summary_ends_turn: bool = False,
    **optional: Any,
) -> dict[str, Any]:
    """The params of an ``execute`` request from :meth:`Client.execute`'s arguments
    (``optional``: the fields sent only when not None, as ``cwd`` or ``input``)."""
    params: dict[str, Any] = {"command": command} if command is not None else {"argv": argv}
    params.update({k: v for k, v in optional.items() if v is not None})
    if progress_target is not FROM_ARGUMENTS:
        params["progress_target"] = progress_target
    # The durable-only actions go even without ``durable``, so that the server refuses them
    # by name rather than the run going on without them; a label or summary only describes.
    job: dict[str, Any] = {
        "stdin_idle_timeout": stdin_idle_timeout, "stdin_close_on_summary": stdin_close_on_summary or None,
        "summary_ends_turn": summary_ends_turn or None,
    }
    if durable:
        job.update(durable=True, label=label, meta=meta, summary=summary)
    params.update({k: v for k, v in job.items() if v is not None})
    return params


def _connected_of(hello: str | bytes) -> Connected | None:
    """The ``connected`` notification of a server's first frame (None if it is something else)."""
    try:
        items = protocol.parse_server_message(hello)
    except ProtocolError:
        return None
    for item in items:
        if isinstance(item, protocol.Notification) and item.method == methods.CONNECTED:
            return Connected(item.method, item.params)
    return None


def _session_of(hello: str | bytes) -> str | None:
    """The session id from a ``connected`` frame (None if it is something else)."""
    connected = _connected_of(hello)
    return str(connected.params.get("session_id") or "") or None if connected is not None else None


def _resume_refused(exc: ProtocolError) -> str:
    """Why a resume was refused, in a user's terms."""
    if isinstance(exc, UnknownSession):
        return ("the server no longer has this session: it restarted, or the connection was away "
                "longer than its detach TTL (either way it stopped the session's process)")
    return f"resume refused: {exc}"


def _closed_reason(exc: ConnectionClosed) -> str:
    """Why the connection closed, in a user's terms where websockets' are obscure."""
    if exc.rcvd is not None and exc.rcvd.code == CloseCode.MESSAGE_TOO_BIG:
        return (f"the server refused a message too big for it ({exc.rcvd.reason or 'code 1009'}): pass "
                "large data in a file or on stdin, not in the arguments or the environment")
    if exc.rcvd is not None and exc.rcvd.code == CloseCode.GOING_AWAY:
        return "the server is shutting down (close code 1001, going away)"
    return str(exc)


def _describe_close(ws: ClientConnection) -> str:
    code = ws.close_code
    return f"connection closed (code {code}: {ws.close_reason or 'no reason'})"


def _check_utf8(method: str, frame: str) -> None:
    """ValueError when ``frame`` cannot be a text frame: websockets' own encoding would fail
    mid-send and drop the connection. A byte that was not UTF-8 (in an argument, a file
    name, a prompt read from stdin) reaches Python as a lone surrogate."""
    try:
        frame.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(exc.object[exc.start])
        byte = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"U+{char:04X}"
        raise ValueError(f"{method}: its text is not valid UTF-8 ({byte}); the protocol carries UTF-8 text") from None


def _without_user_info(url: str) -> str:
    """``url`` without ``user:password@``: the token goes in the Bearer header, never there."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url  # websockets names what is wrong with it
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def check_server_url(server: object, name: str = "server") -> None:
    """``server`` (None: the in-kernel server) must be a ``ws://`` or ``wss://`` URL; the error names ``name``."""
    if server is not None and not (isinstance(server, str) and server.lower().startswith(("ws://", "wss://"))):
        shown = shown_url(server) if isinstance(server, str) else server  # never a password or token
        raise OptionError("{0} must be a ws:// or wss:// URL, not {1!r}", [name], shown)
    if isinstance(server, str) and "#" in server:  # websockets' refusal would print it whole, query and all
        raise OptionError("{0} URL {1!r} must not have a fragment ('#...')", [name], shown_url(server))
    if isinstance(server, str):
        problem = _url_problem(server)
        if problem:
            raise OptionError("{0} {1!r} is not a usable URL: {2}", [name], _scheme_and_host(server), problem)


def _url_problem(url: str) -> str | None:
    """What keeps ``url`` from being dialled (a bad port, no host, a broken IPv6 address), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it (an int in 0-65535)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("Port could not be cast"):
            return "its port is not a number"
        if text.startswith("Port out of range"):
            return "its port is not in 0-65535"
        return "its IPv6 address is malformed" if "IPv6" in text else text
    if not parts.hostname:
        return "it names no host"
    return None


def _scheme_and_host(url: str) -> str:
    """The part of a URL that may be printed when the URL does not parse: its scheme and
    what follows up to the first '/', without user info (never the query)."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    return f"{scheme}://{netloc}"


def shown_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may be printed (never a secret)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "the server"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _refused(url: str, exc: InvalidStatus) -> HandshakeRefused:
    """The handshake's HTTP error as a :class:`HandshakeRefused` with the server's reason."""
    response = exc.response
    lines = (response.body or b"").decode("utf-8", "replace").strip().splitlines()
    reason = lines[0] if lines else response.reason_phrase
    return HandshakeRefused(url, response.status_code, _CONTROLS.sub("", reason)[:200])


async def _off_loop(call: Callable[[], T]) -> T:
    """``call()`` on a daemon thread of its own, awaited: a slow one never holds the loop, nor
    its stop (the default executor is waited for when a loop closes)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def work() -> None:
        try:
            result, error = call(), None
        except Exception as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="cc_executor_nb-locate", daemon=True).start()
    return await future


class Opened:
    """A connection dialled ahead of its use (:func:`dial`): the server made its session and
    sent ``connected``, which is kept; what the idle session is sent meanwhile (heartbeats)
    is read and dropped, so the connection stays healthy however long it waits. Give it to
    :func:`connect` (``opened=``), or :meth:`close` it unused."""

    def __init__(self, ws: ClientConnection, dialer: _Dialer) -> None:
        self._ws = ws
        self.dialer = dialer
        self._hello: asyncio.Future[str | bytes] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @property
    def closed(self) -> bool:
        """True once the connection is gone (or handed over, or closed)."""
        return self._reader.done()

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self._hello.set_result(await self._ws.recv(decode=False))
            while True:
                await self._ws.recv(decode=False)  # an idle session's heartbeat

    async def hand_over(self, timeout: float) -> tuple[ClientConnection, list[str | bytes]]:
        """Stop reading: the connection and the frames kept (the server's first). Raises
        ConnectionLost when it closed before the server's first frame came."""
        try:
            await asyncio.wait((self._hello, self._reader), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            self._reader.cancel()  # recv() is cancellation-safe: nothing unread is lost
            await asyncio.wait((self._reader,))
        except BaseException:  # cancelled: nobody would hold the connection, nor read it
            self._reader.cancel()
            self._ws.transport.abort()
            raise
        if not self._hello.done():
            self._ws.transport.abort()
            raise ConnectionLost("the connection dialled ahead closed before the server's first message")
        return self._ws, [self._hello.result()]

    async def close(self) -> None:
        """Close it unused."""
        self._reader.cancel()
        await asyncio.wait((self._reader,))
        await self._ws.close()


async def dial(
    url: str,
    token: str | None = None,
    *,
    open_timeout: float = 10.0,
    max_size: int | None = 64 << 20,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    ssl: ssl_module.SSLContext | None = None,
) -> Opened:
    """Open a connection ahead of its use; :func:`connect` takes it (``opened=``) without
    dialling. Raises as :func:`connect` does for a server that refuses or cannot be reached."""
    dialer = _Dialer(url, token, open_timeout, max_size, ping_interval, ping_timeout, ssl)
    return Opened(await dialer.dial(), dialer)


async def connect(
    url: str,
    token: str | None = None,
    *,
    open_timeout: float = 10.0,
    max_size: int | None = 64 << 20,
    max_events: int = 4096,
    buffer_events: bool = True,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    auto_reconnect: bool = True,
    reconnect_timeout: float = 300.0,
    ssl: ssl_module.SSLContext | None = None,
    locate: Locator | None = None,
    opened: Opened | None = None,
) -> Client:
    """Open a session. ``token`` goes in ``Authorization: Bearer``; no Origin is sent.

    ``ssl`` is the TLS context of a ``wss://`` URL (default: the system's trust store for
    ``wss://``, none for ``ws://``). ``locate``, if given, is called before each reconnect
    of a client that follows a job and returns the server's ``(url, token)`` now (or None:
    try the last one again). Raises :class:`~cc_executor_nb.errors.HandshakeRefused`
    when the server answers with an HTTP error (401: no or a wrong token), ``OSError``
    when it cannot be reached. Given ``opened`` (:func:`dial` to the same ``url``), that
    connection is the session's, and its dial's settings are the reconnects'.
    """
    if opened is None:
        dialer = _Dialer(url, token, open_timeout, max_size, ping_interval, ping_timeout, ssl)
        ws, received = await dialer.dial(), list[str | bytes]()
    else:
        dialer = opened.dialer
        ws, received = await opened.hand_over(open_timeout)
    client = Client(
        ws,
        received=received,
        dialer=dialer,
        max_events=max_events,
        buffer_events=buffer_events,
        auto_reconnect=auto_reconnect,
        reconnect_timeout=reconnect_timeout,
        locate=locate,
    )
    try:
        await client.wait_connected(open_timeout)
    except BaseException:  # no session (timed out, refused, cancelled): nobody else can close it
        client._abandon()
        raise
    return client


def os_reason(url: str, exc: OSError) -> str:
    """An OSError of a connection attempt in words (a name lookup's code is no errno)."""
    if isinstance(exc, socket.gaierror):
        return f"{exc.strerror or exc} (is the host name right?)"
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return (f"the server's TLS certificate is not trusted ({exc.verify_message}): "
                "set SSL_CERT_FILE to its certificate or its CA's")
    if isinstance(exc, ssl_module.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, ConnectionResetError) and url.lower().startswith("wss://"):
        return "the connection was reset (a wss:// URL needs a server that speaks TLS)"
    return str(exc) or type(exc).__name__
