"""Reading a child's output: chunked, decoded, line-aligned, spooled, never stalled.

The pipes are read by asyncio protocols in chunks (never ``readline()``) as fast as
the child writes: the ``claude`` CLI makes its stdout non-blocking and silently drops
output when the pipe is full, so the reader must never wait for the client. Decoded,
line-aligned pieces go into an ``OutputSpool``: a bounded memory queue that spills to
a per-run file, which the sender drains at the client's pace.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import functools
import os
import time
from collections.abc import Callable

from .files import anonymous_file, pread_all, pwritev_all, release

__all__ = [
    "CHUNK_LIMIT",
    "STREAMS",
    "LineAligner",
    "OutputSpool",
    "RunOutput",
    "StreamHandler",
    "coalesce",
]

STREAMS = ("stdout", "stderr")
CHUNK_LIMIT = 160 * 1024
"""Characters per ``process.output`` piece. Even if every one needed a 6-byte JSON escape
(control characters), the message stays under 1 MiB, the default frame limit of
websockets clients; for ordinary text, fewer and larger frames cost less per byte."""
PIPE_READ_SIZE = 1 << 20
"""Bytes asked of a pipe per read: as much as the enlarged pipe holds."""

Record = tuple[str, str]


def _pieces(text: str, limit: int, stop: int | None = None) -> list[str]:
    """Split ``text[:stop]`` into pieces of at most ``limit`` characters, at newlines if possible.

    Each piece is sliced straight from ``text`` (one copy per character).
    """
    stop = len(text) if stop is None else stop
    if stop <= limit and stop == len(text):
        return [text] if text else []
    pieces, start = [], 0
    while stop - start > limit:
        cut = text.rfind("\n", start, start + limit) + 1
        end = cut if cut > start else start + limit
        pieces.append(text[start:end])
        start = end
    if start < stop:
        pieces.append(text[start:stop])
    return pieces


class LineAligner:
    """Bytes in, line-aligned text out, for one stream. Pure: no I/O, no clock.

    Decodes UTF-8 incrementally with replacement (a character split across reads is
    decoded whole). ``feed`` returns complete lines, in pieces of at most ``limit``
    characters; a partial line waits in ``partial`` until more text, ``flush`` or
    ``finish``. A line longer than ``limit`` leaves in ``limit``-sized pieces.
    """

    def __init__(self, limit: int = CHUNK_LIMIT) -> None:
        self.limit = limit
        self.partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[str]:
        """Decode ``data`` and return the complete pieces it finishes."""
        text = self.partial + self._decoder.decode(data)
        cut = text.rfind("\n") + 1
        pieces = _pieces(text, self.limit, cut) if cut else []
        # What follows the last newline: whole pieces of a too-long line leave now.
        whole = cut + (len(text) - cut) // self.limit * self.limit
        pieces.extend(text[i : i + self.limit] for i in range(cut, whole, self.limit))
        self.partial = text[whole:] if whole < len(text) else ""
        return pieces

    def flush(self) -> list[str]:
        """Give up the partial line now (after a quiet period)."""
        partial, self.partial = self.partial, ""
        return [partial] if partial else []

    def finish(self) -> list[str]:
        """End of file: flush the decoder (a truncated character becomes U+FFFD)."""
        tail = self.partial + self._decoder.decode(b"", final=True)
        self.partial = ""
        return _pieces(tail, self.limit) if tail else []


class OutputSpool:
    """A FIFO of (stream, text) records: memory first, spilling to a file when full.

    Memory holds at most about ``memory_limit`` characters. Past that, records are
    gathered into batches of at most ``batch_chars`` and each batch is appended to an
    anonymous temporary file with one write; the reader takes a whole batch back with
    one read. Order is kept (memory, then the file, then the batch being gathered) and
    memory stays bounded however far the reader falls behind.
    """

    def __init__(self, memory_limit: int = 8 << 20, spool_dir: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.spool_dir = spool_dir
        self.batch_chars = max(min(1 << 18, memory_limit // 8), 1)
        self._memory: collections.deque[Record] = collections.deque()
        self._memory_chars = 0
        self._tail: list[Record] = []
        self._tail_chars = 0
        self._file: int | None = None
        self._batches: collections.deque[tuple[int, list[tuple[int, int]]]] = collections.deque()
        self._write_pos = 0
        self.spilled_bytes = 0

    @property
    def empty(self) -> bool:
        """True when nothing is waiting."""
        return not (self._memory or self._batches or self._tail)

    @property
    def memory_chars(self) -> int:
        """Characters held in memory right now (queued and being batched)."""
        return self._memory_chars + self._tail_chars

    def append(self, stream: str, text: str) -> None:
        """Queue one record."""
        if self._batches or self._tail or self._memory_chars + len(text) > self.memory_limit - self.batch_chars:
            self._gather(stream, text)
            return
        self._memory.append((stream, text))
        self._memory_chars += len(text)

    def pop(self, max_chars: int) -> list[Record]:
        """Take the oldest records, about ``max_chars`` characters (at least one record)."""
        if not self._memory:
            self._refill()
        records: list[Record] = []
        taken = 0
        while self._memory and (not records or taken + len(self._memory[0][1]) <= max_chars):
            record = self._memory.popleft()
            taken += len(record[1])
            records.append(record)
        self._memory_chars -= taken
        return records

    def close(self) -> None:
        """Release the spool file."""
        if self._file is not None:
            release(self._file)
            self._file = None

    def _gather(self, stream: str, text: str) -> None:
        if self._tail_chars + len(text) > self.batch_chars:
            self._write_tail()
        self._tail.append((stream, text))
        self._tail_chars += len(text)
        if self._tail_chars >= self.batch_chars:
            self._write_tail()

    def _write_tail(self) -> None:
        if not self._tail:
            return
        if self._file is None:
            self._file = anonymous_file("ccexec-spool-", self.spool_dir)
        bodies = [text.encode("utf-8", "surrogatepass") for _, text in self._tail]
        written = pwritev_all(self._file, bodies, self._write_pos)
        sizes = [(STREAMS.index(stream), len(body)) for (stream, _), body in zip(self._tail, bodies, strict=True)]
        self._batches.append((self._write_pos, sizes))
        self._write_pos += written
        self.spilled_bytes += written
        self._tail, self._tail_chars = [], 0

    def _refill(self) -> None:
        """Memory ran dry: bring back the oldest batch from the file, or the gathering one."""
        if self._batches:
            offset, sizes = self._batches.popleft()
            assert self._file is not None
            data = pread_all(self._file, sum(size for _, size in sizes), offset)
            position = 0
            for kind, size in sizes:
                text = str(data[position : position + size], "utf-8", "surrogatepass")
                self._memory.append((STREAMS[kind], text))
                self._memory_chars += len(text)
                position += size
            if not self._batches:
                # Drained: later batches reuse the file from its start, so it never
                # grows past the largest backlog.
                self._write_pos = 0
        elif self._tail:
            self._memory.extend(self._tail)
            self._memory_chars += self._tail_chars
            self._tail, self._tail_chars = [], 0


def coalesce(records: list[Record], limit: int) -> list[Record]:
    """Join neighbouring records of the same stream into pieces of at most ``limit``."""
    merged: list[Record] = []
    for stream, text in records:
        if merged and merged[-1][0] == stream and len(merged[-1][1]) + len(text) <= limit:
            merged[-1] = (stream, merged[-1][1] + text)
        else:
            merged.append((stream, text))
    return merged


class _PipeProtocol(asyncio.Protocol):
    """Hands every chunk the pipe yields to a callback; reports end of file."""

    def __init__(self, on_data: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self._on_data = on_data
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class RunOutput:
    """The live output of one run: two pipes read into one spool.

    ``last_output_at`` (monotonic) is the time the child last wrote anything;
    ``next_batch`` waits for records and returns None once both pipes hit end of file
    and everything was taken.
    """

    def __init__(self, handler: StreamHandler, loop: asyncio.AbstractEventLoop) -> None:
        self._handler = handler
        self._loop = loop
        self.spool = OutputSpool(handler.memory_limit, handler.spool_dir)
        self._aligners = {name: LineAligner(handler.chunk_limit) for name in STREAMS}
        self._open: set[str] = set()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()
        self._transports: list[asyncio.BaseTransport] = []
        self.last_output_at = time.monotonic()
        self.bytes_read = dict.fromkeys(STREAMS, 0)
        self.eof = asyncio.Event()

    async def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        """Start reading both pipes (takes ownership of the fds)."""
        for name, fd in zip(STREAMS, (stdout_fd, stderr_fd), strict=True):
            pipe = os.fdopen(fd, "rb", buffering=0)
            self._open.add(name)
            transport, _ = await self._loop.connect_read_pipe(functools.partial(self._protocol, name), pipe)
            # asyncio reads 256 KiB per wake-up by default; the pipe holds 1 MiB.
            transport.max_size = PIPE_READ_SIZE  # type: ignore[attr-defined]
            self._transports.append(transport)

    async def next_batch(self, max_chars: int) -> list[Record] | None:
        """Wait for queued output; None when the run's output is complete."""
        while self.spool.empty:
            if not self._open:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self.spool.pop(max_chars)

    def close(self) -> None:
        """Stop reading (if still open) and drop the spool file."""
        for transport in self._transports:
            transport.close()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self.spool.close()

    def _protocol(self, name: str) -> _PipeProtocol:
        """The protocol that feeds pipe ``name`` into this run's output."""
        return _PipeProtocol(functools.partial(self._on_data, name), functools.partial(self._on_eof, name))

    def _push(self, name: str, pieces: list[str]) -> None:
        for piece in pieces:
            self.spool.append(name, piece)
        if pieces:
            self._ready.set()

    def _on_data(self, name: str, data: bytes) -> None:
        self.last_output_at = time.monotonic()
        self.bytes_read[name] += len(data)
        aligner = self._aligners[name]
        self._push(name, aligner.feed(data))
        if aligner.partial and self._flush_timer is None:
            self._flush_timer = self._loop.call_later(
                self._handler.partial_flush_delay, self._flush_partials
            )

    def _flush_partials(self) -> None:
        self._flush_timer = None
        for name, aligner in self._aligners.items():
            self._push(name, aligner.flush())

    def _on_eof(self, name: str) -> None:
        if name not in self._open:
            return
        self._push(name, self._aligners[name].finish())
        self._open.discard(name)
        if not self._open:
            self.eof.set()
        self._ready.set()


class StreamHandler:
    """Configuration and factory for run outputs (one ``RunOutput`` per run)."""

    def __init__(
        self,
        *,
        chunk_limit: int = CHUNK_LIMIT,
        partial_flush_delay: float = 0.05,
        memory_limit: int = 8 << 20,
        spool_dir: str | None = None,
    ) -> None:
        self.chunk_limit = chunk_limit
        self.partial_flush_delay = partial_flush_delay
        self.memory_limit = memory_limit
        self.spool_dir = spool_dir

    async def open(self, stdout_fd: int, stderr_fd: int) -> RunOutput:
        """Start reading a child's pipes; the returned output owns the fds."""
        output = RunOutput(self, asyncio.get_running_loop())
        try:
            await output.attach(stdout_fd, stderr_fd)
        except BaseException:
            for fd in (stdout_fd, stderr_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        return output
