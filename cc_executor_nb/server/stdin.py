"""Writing to a child's stdin without ever stalling the server.

``input`` requests must not wait for a child that does not read (a CANCEL on the same
connection has to get through), so :class:`ChildInput` queues what a client sends and
one writer task moves it into the pipe at the child's pace, in order. The queue is
bounded (``limit`` bytes): past it, ``input`` is refused with -32000 instead of growing
without end. ``close()`` closes the pipe once everything queued before it was written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable

from ..errors import LimitReached, NoProcessRunning

__all__ = ["INPUT_QUEUE_LIMIT", "ChildInput"]

logger = logging.getLogger("cc_executor_nb.server.stdin")

INPUT_QUEUE_LIMIT = 8 << 20
"""Bytes of input a run may have queued and not yet taken by the child."""


class _WriteProtocol(asyncio.BaseProtocol):
    """Flow control for a write pipe: ``wait_writable`` blocks while the pipe is full."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = asyncio.Event()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self._writable.set()

    async def wait_writable(self) -> None:
        await self._writable.wait()


class ChildInput:
    """The write end of one child's stdin, fed from a bounded queue by one task."""

    def __init__(self, limit: int = INPUT_QUEUE_LIMIT) -> None:
        self.limit = limit
        self.queued_bytes = 0
        self.written_bytes = 0
        self.closing = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()
        self._transport: asyncio.WriteTransport | None = None
        self._protocol: _WriteProtocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._refused = 0
        """The largest piece refused since the queue last had room again (0: none)."""
        self._on_room: dict[object, Callable[[], None]] = {}

    async def open(self, fd: int) -> None:
        """Take ownership of ``fd`` (the pipe's write end) and start the writer task."""
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(fd, "wb", buffering=0)
        transport, protocol = await loop.connect_write_pipe(_WriteProtocol, pipe)
        self._transport, self._protocol = transport, protocol
        self._task = asyncio.ensure_future(self._pump())

    @property
    def closed(self) -> bool:
        """True once close() was asked or the child stopped reading."""
        return self.closing or (self._protocol is not None and self._protocol.lost.is_set())

    def write(self, data: bytes) -> int:
        """Queue ``data`` for the child; returns the bytes now queued and not yet written.

        Raises NoProcessRunning when the input is closed (by us or by the child), and
        LimitReached when the queue would pass its limit.
        """
        if self.closed:
            raise NoProcessRunning("the process's input is closed")
        if self.queued_bytes + len(data) > self.limit:
            self._refused = max(self._refused, len(data))
            raise LimitReached(
                f"input queue full: {self.queued_bytes} bytes not yet read by the process "
                f"(limit {self.limit})",
                # The client compares it between two refusals: a process that read nothing
                # meanwhile is asked again later and later, not every 0.5 s.
                {"queued_bytes": self.queued_bytes, "limit": self.limit},
            )
        if data:
            self._chunks.append(data)
            self.queued_bytes += len(data)
            self._ready.set()
        return self.queued_bytes

    @property
    def refused(self) -> bool:
        """Whether a write was refused (the queue full) since the queue last had room again."""
        return self._refused > 0

    def when_room(self, key: object, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the queue that refused a write has room again: at most
        half its limit queued (so that the writer that was refused can send several pieces
        before the next refusal), and room for the largest piece refused; or when the input
        closes. One callback per ``key`` (a connection); now, if there is room already."""
        self._on_room[key] = callback
        self._tell_room()

    def _tell_room(self) -> None:
        if not self._on_room:
            return
        mark = min(self.limit // 2, self.limit - self._refused)
        if self.queued_bytes <= mark or self.closed:
            callbacks = list(self._on_room.values())
            self._on_room.clear()
            self._refused = 0
            for callback in callbacks:
                callback()

    def close(self) -> None:
        """Close the child's stdin after everything queued so far was written."""
        self.closing = True
        self._ready.set()
        self._tell_room()  # a writer waiting for room hears at once that the input is closed

    async def aclose(self) -> None:
        """Drop anything queued and close the pipe now (the run is over)."""
        self._chunks.clear()
        self.queued_bytes = 0
        self.closing = True
        self._tell_room()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()

    async def _pump(self) -> None:
        assert self._transport is not None and self._protocol is not None
        transport, protocol = self._transport, self._protocol
        while not protocol.lost.is_set():
            if not self._chunks:
                if self.closing:
                    break
                self._ready.clear()
                await self._ready.wait()
                continue
            await protocol.wait_writable()
            if protocol.lost.is_set():
                break
            chunk = self._chunks.popleft()
            transport.write(chunk)
            self.queued_bytes -= len(chunk)
            self.written_bytes += len(chunk)
            self._tell_room()
        self._tell_room()  # the child stopped reading: a writer waiting for room hears it now
        # Closing waits for the transport's buffer to flush; a vanished reader drops it.
        transport.close()
        if protocol.lost.is_set() and self._chunks:
            logger.info("[ENHANCED] the process stopped reading its input; %d bytes dropped", self.queued_bytes)
