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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from . import protocol
from .errors import ConnectionLost, ProtocolError
from .events import Completed, Connected, Event, make_event

__all__ = ["Client", "connect"]

logger = logging.getLogger("cc_executor_nb.client")

Listener = Callable[[Event], None]
_CLOSED = object()


class Client:
    """One session with a server. Create it with ``connect``."""

    def __init__(
        self, ws: ClientConnection, *, max_events: int = 4096, buffer_events: bool = True
    ) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue(max_events)
        self._listeners: list[Listener] = []
        self._connected: asyncio.Future[Connected] = asyncio.get_running_loop().create_future()
        self._buffer_events = buffer_events
        self._end_marker: asyncio.Future[None] | None = None
        self._reader = asyncio.ensure_future(self._read_loop())
        self.close_reason: str | None = None

    # -- Session ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
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
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                return
            yield item

    async def close(self) -> None:
        """Close the connection cleanly (the server then ends any run at once)."""
        await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

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
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(protocol.dumps(protocol.request(request_id, method, params)))
        except ConnectionClosed as exc:
            self._pending.pop(request_id, None)
            raise ConnectionLost(str(exc)) from None
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
    ) -> dict[str, Any]:
        """Start a process: give ``command`` (split with shlex) or ``argv``."""
        params: dict[str, Any] = {"command": command} if command is not None else {"argv": argv}
        optional = {
            "cwd": cwd,
            "env": env,
            "timeout": timeout,
            "heartbeat_interval": heartbeat_interval,
            "inactivity_threshold": inactivity_threshold,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return dict(await self.call("execute", params))

    async def control(self, kind: str) -> dict[str, Any]:
        """PAUSE, RESUME or CANCEL the running process."""
        return dict(await self.call("control", {"type": kind}))

    async def pause(self) -> dict[str, Any]:
        """SIGSTOP the run's process group."""
        return await self.control("PAUSE")

    async def resume(self) -> dict[str, Any]:
        """SIGCONT the run's process group."""
        return await self.control("RESUME")

    async def cancel(self) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after the grace, the run's process group."""
        return await self.control("CANCEL")

    async def status(self) -> dict[str, Any]:
        """The session's state, pid, timings and resources."""
        return dict(await self.call("status"))

    async def run_events(self, command: str | None = None, **kwargs: Any) -> AsyncIterator[Event]:
        """Execute and yield this run's events up to and including ``process.completed``."""
        await self.execute(command, **kwargs)
        async for event in self.events():
            yield event
            if isinstance(event, Completed):
                return
        raise ConnectionLost(self.close_reason or "connection closed during the run")

    # -- Reading ---------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                await self._dispatch(frame)
        except ConnectionClosed as exc:
            self.close_reason = str(exc)
        finally:
            self.close_reason = self.close_reason or _describe_close(self._ws)
            self._fail_pending()

    async def _dispatch(self, frame: str | bytes) -> None:
        try:
            items = protocol.parse_server_message(frame)
        except ProtocolError:
            logger.warning("! ignoring an unreadable frame from the server")
            return
        for item in items:
            if isinstance(item, protocol.Notification):
                await self._deliver(make_event(item.method, item.params))
            else:
                self._settle(item)

    def _settle(self, item: protocol.Response | protocol.ErrorResponse) -> None:
        future = self._pending.pop(item.id, None) if isinstance(item.id, int) else None
        if future is None:
            if isinstance(item, protocol.ErrorResponse):
                logger.warning("! server error: %s", item.error)
            return
        if future.done():
            return
        if isinstance(item, protocol.Response):
            future.set_result(item.result)
        else:
            future.set_exception(protocol.remote_error(item.error))

    async def _deliver(self, event: Event) -> None:
        if isinstance(event, Connected) and not self._connected.done():
            self._connected.set_result(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("! event listener failed")
        if self._buffer_events:
            await self._queue.put(event)

    def _fail_pending(self) -> None:
        error = ConnectionLost(self.close_reason or "connection closed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if not self._connected.done():
            self._connected.set_exception(error)
            self._connected.exception()  # retrieved: a caller may never ask
        try:
            self._queue.put_nowait(_CLOSED)
        except asyncio.QueueFull:
            # The consumer is behind: the end marker goes in once it makes room.
            self._end_marker = asyncio.ensure_future(self._queue.put(_CLOSED))


def _describe_close(ws: ClientConnection) -> str:
    code = ws.close_code
    return f"connection closed (code {code}: {ws.close_reason or 'no reason'})"


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
) -> Client:
    """Open a session. ``token`` goes in ``Authorization: Bearer``; no Origin is sent."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    ws = await ws_connect(
        url,
        additional_headers=headers,
        compression=None,
        max_size=max_size,
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        proxy=None,
    )
    client = Client(ws, max_events=max_events, buffer_events=buffer_events)
    await client.wait_connected(open_timeout)
    return client
