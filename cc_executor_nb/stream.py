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
import os
import struct
import tempfile
import time
from collections.abc import Callable

__all__ = [
    "STREAMS",
    "LineAligner",
    "OutputSpool",
    "RunOutput",
    "StreamHandler",
    "coalesce",
]

STREAMS = ("stdout", "stderr")
_HEADER = struct.Struct(">BI")

Record = tuple[str, str]


def _pieces(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters, at newlines if possible."""
    pieces, start = [], 0
    while len(text) - start > limit:
        cut = text.rfind("\n", start, start + limit) + 1
        end = cut if cut > start else start + limit
        pieces.append(text[start:end])
        start = end
    if start < len(text):
        pieces.append(text[start:])
    return pieces


class LineAligner:
    """Bytes in, line-aligned text out, for one stream. Pure: no I/O, no clock.

    Decodes UTF-8 incrementally with replacement (a character split across reads is
    decoded whole). ``feed`` returns complete lines, in pieces of at most ``limit``
    characters; a partial line waits in ``partial`` until more text, ``flush`` or
    ``finish``. A line longer than ``limit`` leaves in ``limit``-sized pieces.
    """

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[str]:
        """Decode ``data`` and return the complete pieces it finishes."""
        text = self.partial + self._decoder.decode(data)
        cut = text.rfind("\n") + 1
        pieces = _pieces(text[:cut], self.limit) if cut else []
        rest = text[cut:]
        whole = len(rest) - len(rest) % self.limit
        pieces.extend(rest[i : i + self.limit] for i in range(0, whole, self.limit))
        self.partial = rest[whole:]
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
    appended to an anonymous temporary file until the reader has drained it, so order
    is kept and memory stays bounded however far the reader falls behind.
    """

    def __init__(self, memory_limit: int = 8 << 20, spool_dir: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.spool_dir = spool_dir
        self._memory: collections.deque[Record] = collections.deque()
        self._memory_chars = 0
        self._file: int | None = None
        self._write_pos = 0
        self._read_pos = 0
        self.spilled_bytes = 0

    @property
    def empty(self) -> bool:
        """True when nothing is waiting."""
        return not self._memory and self._write_pos == self._read_pos

    @property
    def memory_chars(self) -> int:
        """Characters held in memory right now."""
        return self._memory_chars

    def append(self, stream: str, text: str) -> None:
        """Queue one record."""
        if self._write_pos > self._read_pos or self._memory_chars + len(text) > self.memory_limit:
            self._spill(stream, text)
            return
        self._memory.append((stream, text))
        self._memory_chars += len(text)

    def pop(self, max_chars: int) -> list[Record]:
        """Take the oldest records, about ``max_chars`` characters (at least one record)."""
        records: list[Record] = []
        taken = 0
        while self._memory and (not records or taken + len(self._memory[0][1]) <= max_chars):
            record = self._memory.popleft()
            self._memory_chars -= len(record[1])
            taken += len(record[1])
            records.append(record)
        if not self._memory and taken < max_chars:
            records.extend(self._read_file(max_chars - taken, bool(records)))
        return records

    def close(self) -> None:
        """Release the spool file."""
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _spill(self, stream: str, text: str) -> None:
        if self._file is None:
            self._file, path = tempfile.mkstemp(prefix="ccexec-spool-", dir=self.spool_dir)
            os.unlink(path)
        body = text.encode("utf-8", "surrogatepass")
        header = _HEADER.pack(STREAMS.index(stream), len(body))
        os.pwrite(self._file, header + body, self._write_pos)
        self._write_pos += len(header) + len(body)
        self.spilled_bytes += len(body)

    def _read_file(self, max_chars: int, have_some: bool) -> list[Record]:
        records: list[Record] = []
        taken = 0
        while self._read_pos < self._write_pos and (not (records or have_some) or taken < max_chars):
            assert self._file is not None
            kind, size = _HEADER.unpack(os.pread(self._file, _HEADER.size, self._read_pos))
            body = os.pread(self._file, size, self._read_pos + _HEADER.size)
            self._read_pos += _HEADER.size + size
            text = body.decode("utf-8", "surrogatepass")
            records.append((STREAMS[kind], text))
            taken += len(text)
        if self._read_pos == self._write_pos and self._file is not None:
            # Drained: start the file over so it never outgrows the backlog.
            os.ftruncate(self._file, 0)
            self._read_pos = self._write_pos = 0
        return records


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
        self.bytes_read = {name: 0 for name in STREAMS}
        self.eof = asyncio.Event()

    async def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        """Start reading both pipes (takes ownership of the fds)."""
        for name, fd in zip(STREAMS, (stdout_fd, stderr_fd)):
            pipe = os.fdopen(fd, "rb", buffering=0)
            self._open.add(name)
            transport, _ = await self._loop.connect_read_pipe(
                lambda name=name: _PipeProtocol(
                    lambda data: self._on_data(name, data), lambda: self._on_eof(name)
                ),
                pipe,
            )
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
        chunk_limit: int = 65536,
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
