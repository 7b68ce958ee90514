"""Reading a child's output: chunked, decoded, line-aligned, bounded in memory.

What the child writes goes to capture files or pipes (see
:mod:`~cc_executor_nb.server.capture`), read in chunks (never ``readline()``).
Decoded, line-aligned pieces go into an ``OutputSpool``, a bounded memory queue that
the sender drains at the client's pace. The child never waits for the client (only
for the disk budget):

* a capture file is its own spool: when the queue is full, its reader stops and the
  backlog stays in the file (which is on disk anyway, and punched behind the reader);
  it reads on once the sender has taken records;
* a pipe must be read as fast as the child writes, so its queue spills to a per-run
  file past its memory limit.
"""

from __future__ import annotations

import array
import asyncio
import codecs
import collections
import contextlib
import fcntl
import functools
import logging
import os
import termios
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .capture import CAPTURE_MODES, CaptureFile, ChildOutput, FileOutput, Follower, PipeOutput, Span
from .files import anonymous_file, pread_all, pwritev_all, release
from .linuxio import holders_of, punch_hole

if TYPE_CHECKING:
    from .disk import DiskUse

__all__ = [
    "CHUNK_LIMIT",
    "STREAMS",
    "LineAligner",
    "OutputSpool",
    "RunOutput",
    "StreamHandler",
    "coalesce",
]

logger = logging.getLogger("cc_executor_nb.server.streams")

STREAMS = ("stdout", "stderr")
CHUNK_LIMIT = 160 * 1024
"""Characters per ``process.output`` piece. Even if every one needed a 6-byte JSON escape
(control characters), the message stays under 1 MiB, the default frame limit of
websockets clients; for ordinary text, fewer and larger frames cost less per byte."""
PIPE_READ_SIZE = 1 << 20
"""Bytes asked of a pipe per read: as much as the enlarged pipe holds."""
FILE_READ_SIZE = 1 << 20
"""Bytes asked of a capture file per read, once a read came back full."""
FIRST_READ_SIZE = 64 << 10
"""Bytes asked of a capture file by the first read of a wake-up: what waits is mostly a
line or two, and a 1 MiB buffer for them costs 20 times a 64 KiB one (12 vs 0.6 us)."""
READ_BUDGET = 8 << 20
"""Bytes read from one capture file before the reader yields to the loop."""
BACKLOG_LIMIT = 16 << 20
"""Unread bytes in a capture file past which the child is held until the reader has
caught up (to a quarter of it): the back-pressure a full pipe would give, when the
server cannot read as fast as the child writes. A backlog left while the reader waits
for a slow client holds nobody; the disk budget bounds it."""
PARTIAL_SETTLE = 0.001
"""Seconds a partial line waits, once everything written was read, for the rest of its
line: ``print()`` in an unbuffered Python child writes the text and the newline in two
writes, which a reader woken at once would otherwise send as two pieces."""
SPOOL_PUNCH_EVERY = 1 << 20
"""Bytes of spool file taken back between two hole punches."""
SPANS_OFF, SPANS_TAKE, SPANS_ALIGN = 0, 1, 2
"""What a capture file's reader does with whole lines (see ``_FileReader``)."""

Record = tuple[str, "str | Span"]
"""(stream, piece): text, or whole lines left in the capture file (see ``RunOutput.spans``)."""


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
    characters; a partial line waits in ``partial`` until more text, ``flush`` (the
    reader found nothing more to read) or ``finish``. A line longer than ``limit``
    leaves in ``limit``-sized pieces.
    """

    def __init__(self, limit: int = CHUNK_LIMIT) -> None:
        self.limit = limit
        self.partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[str]:
        """Decode ``data`` and return the complete pieces it finishes."""
        if data.isascii() and not self._decoder.getstate()[0]:
            return self._feed_ascii(data)
        return self._feed_text(data)

    def _feed_text(self, data: bytes) -> list[str]:
        """``feed`` for any bytes: decode, join to the partial line, cut."""
        text = self.partial + self._decoder.decode(data)
        cut = text.rfind("\n") + 1
        pieces = _pieces(text, self.limit, cut) if cut else []
        # What follows the last newline: whole pieces of a too-long line leave now.
        whole = cut + (len(text) - cut) // self.limit * self.limit
        pieces.extend(text[i : i + self.limit] for i in range(cut, whole, self.limit))
        self.partial = text[whole:] if whole < len(text) else ""
        return pieces

    def _feed_ascii(self, data: bytes) -> list[str]:
        """``feed`` for ASCII with no character pending: the same pieces, each decoded
        straight from ``data`` (a character is a byte), without first decoding, joining and
        slicing the whole read (three copies of it, where this makes one)."""
        partial, limit = self.partial, self.limit
        view, before = memoryview(data), len(partial)  # position p of the text is data[p - before]
        size = before + len(data)
        cut = data.rfind(b"\n") + 1
        cut = cut + before if cut else 0
        pieces, start = [], 0
        while cut - start > limit:  # as _pieces: at the last newline within the limit, if any
            newline = data.rfind(b"\n", max(start - before, 0), start + limit - before) + 1
            end = newline + before if newline else start + limit
            pieces.append(self._ascii(partial, view, start, end))
            start = end
        if start < cut:
            pieces.append(self._ascii(partial, view, start, cut))
        whole = cut + (size - cut) // limit * limit  # whole pieces of a too-long last line
        pieces.extend(self._ascii(partial, view, i, i + limit) for i in range(cut, whole, limit))
        self.partial = self._ascii(partial, view, whole, size) if whole < size else ""
        return pieces

    @staticmethod
    def _ascii(partial: str, view: memoryview, start: int, end: int) -> str:
        """Characters ``start:end`` of ``partial`` followed by the ASCII bytes of ``view``."""
        if start >= len(partial):
            return str(view[start - len(partial) : end - len(partial)], "ascii")
        return partial[start:end] + str(view[: max(end - len(partial), 0)], "ascii")

    @property
    def idle(self) -> bool:
        """Whether nothing waits in the aligner (no partial line, no character begun)."""
        return not self.partial and not self._decoder.getstate()[0]

    def flush(self) -> list[str]:
        """Give up the partial line now (the reader has read all there is)."""
        partial, self.partial = self.partial, ""
        return [partial] if partial else []

    def finish(self) -> list[str]:
        """End of file: flush the decoder (a truncated character becomes U+FFFD)."""
        tail = self.partial + self._decoder.decode(b"", final=True)
        self.partial = ""
        return _pieces(tail, self.limit) if tail else []


class OutputSpool:
    """A FIFO of (stream, text) records: memory first, spilling to a file when full.

    With ``spill=False`` it never spills: the writer promises to stop appending while
    :attr:`full` (a capture file's reader does), so memory stays about the limit.

    Memory holds at most about ``memory_limit`` characters. Past that, records are
    gathered into batches of at most ``batch_chars`` and each batch is appended to an
    anonymous temporary file with one write; the reader takes a whole batch back with
    one read. Order is kept (memory, then the file, then the batch being gathered) and
    memory stays bounded however far the reader falls behind. Batches taken back are
    punched out of the file, so it holds about what is still to be sent; ``disk``
    (the session's share of the disk budget) is told of every byte on disk.
    """

    def __init__(
        self,
        memory_limit: int = 8 << 20,
        spool_dir: str | None = None,
        *,
        disk: DiskUse | None = None,
        spill: bool = True,
    ) -> None:
        self.memory_limit = memory_limit
        self.spill = spill
        self.spool_dir = spool_dir
        self.disk = disk
        self.batch_chars = max(min(1 << 18, memory_limit // 8), 1)
        self._memory: collections.deque[Record] = collections.deque()
        self._memory_chars = 0
        self._tail: list[tuple[str, str]] = []
        self._tail_chars = 0
        self._file: int | None = None
        self._batches: collections.deque[tuple[int, list[tuple[int, int]]]] = collections.deque()
        self._write_pos = 0
        self._punched = 0
        self._read_back = 0
        self._can_punch = True
        self.spilled_bytes = 0
        self.disk_error: OSError | None = None
        """Why the last write to the file failed (a full disk), or None."""
        self._retry_chars = 0
        self.disk_bytes = 0
        """Bytes written to the file and not yet taken back."""

    @property
    def empty(self) -> bool:
        """True when nothing is waiting."""
        return not (self._memory or self._batches or self._tail)

    @property
    def memory_chars(self) -> int:
        """Characters held in memory right now (queued and being batched)."""
        return self._memory_chars + self._tail_chars

    @property
    def full(self) -> bool:
        """Whether memory holds the limit or more (a non-spilling writer waits)."""
        return self.memory_chars >= self.memory_limit

    def append(self, stream: str, text: str | Span) -> None:
        """Queue one record (a span only into a spool that does not spill)."""
        if self.spill:
            if isinstance(text, Span):
                text = text.take_text()
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
        """Release the spool file (and its share of the disk budget)."""
        if self._file is not None:
            release(self._file)
            self._file = None
        self._account(-self.disk_bytes)

    def _gather(self, stream: str, text: str) -> None:
        # After a failed write the batch waits in memory and is tried again at twice its size.
        goal = max(self.batch_chars, self._retry_chars)
        if self._tail_chars + len(text) > goal:
            self._write_tail()
        self._tail.append((stream, text))
        self._tail_chars += len(text)
        if self._tail_chars >= goal:
            self._write_tail()

    def _write_tail(self) -> None:
        if not self._tail:
            return
        if self._file is None:
            self._file = anonymous_file("ccexec-spool-", self.spool_dir)
        bodies = [text.encode("utf-8", "surrogatepass") for _, text in self._tail]
        try:
            written = pwritev_all(self._file, bodies, self._write_pos)
        except OSError as exc:  # a full disk: keep the batch, and stop the writer
            self._write_failed(exc)
            return
        self._retry_chars = 0
        sizes = [(STREAMS.index(stream), len(body)) for (stream, _), body in zip(self._tail, bodies, strict=True)]
        self._batches.append((self._write_pos, sizes))
        self._write_pos += written
        self.spilled_bytes += written
        self._tail, self._tail_chars = [], 0
        self._account(written)

    def _write_failed(self, exc: OSError) -> None:
        if self.disk_error is None:
            logger.warning("! spool write failed, its output waits in memory: %s", exc)
        self.disk_error = exc
        self._retry_chars = 2 * self._tail_chars
        if self.disk is not None:
            self.disk.out_of_space()

    def _refill(self) -> None:
        """Memory ran dry: bring back the oldest batch from the file, or the gathering one."""
        if self._batches:
            offset, sizes = self._batches.popleft()
            assert self._file is not None
            total = sum(size for _, size in sizes)
            data = pread_all(self._file, total, offset)
            position = 0
            for kind, size in sizes:
                text = str(data[position : position + size], "utf-8", "surrogatepass")
                self._memory.append((STREAMS[kind], text))
                self._memory_chars += len(text)
                position += size
            self._taken_back(offset + total)
        elif self._tail:
            self._memory.extend(self._tail)
            self._memory_chars += self._tail_chars
            self._tail, self._tail_chars, self._retry_chars = [], 0, 0
            if self.disk is not None and self.disk.held:
                self.disk.change(0)  # nothing waits on disk: a run held for want of space goes on

    def _taken_back(self, end: int) -> None:
        """Everything up to ``end`` was read back: give its blocks back (in steps)."""
        self._account(-(end - self._read_back))
        self._read_back = end
        if end - self._punched >= SPOOL_PUNCH_EVERY:
            self._punch(end)
        if not self._batches:
            # Drained: later batches reuse the file from its start, so it never grows
            # past the largest backlog (less what was punched).
            self._write_pos = self._punched = self._read_back = 0

    def _punch(self, end: int) -> None:
        assert self._file is not None
        if self._can_punch and end > self._punched:
            try:
                self._can_punch = punch_hole(self._file, self._punched, end - self._punched)
            except OSError:
                self._can_punch = False
        self._punched = end

    def _account(self, delta: int) -> None:
        delta = max(delta, -self.disk_bytes)
        if delta:
            self.disk_bytes += delta
            if self.disk is not None:
                self.disk.change(delta)


def coalesce(records: list[Record], limit: int) -> list[Record]:
    """Join neighbouring records of the same stream into pieces of at most ``limit``."""
    merged: list[Record] = []
    for stream, text in records:
        last = merged[-1][1] if merged else None
        if (
            isinstance(last, str)
            and isinstance(text, str)
            and merged[-1][0] == stream
            and len(last) + len(text) <= limit
        ):
            merged[-1] = (stream, last + text)
        else:
            merged.append((stream, text))
    return merged


class _PipeProtocol(asyncio.Protocol):
    """Hands every chunk the pipe yields to a callback; reports end of file.

    asyncio reads the pipe once per wake-up, ``max_size`` bytes at most: a shorter
    chunk means the pipe was empty after it, which ``on_drained`` is told.
    """

    def __init__(
        self, on_data: Callable[[bytes], None], on_drained: Callable[[], None], on_eof: Callable[[], None]
    ) -> None:
        self._on_data = on_data
        self._on_drained = on_drained
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        self._on_data(data)
        if len(data) < PIPE_READ_SIZE:
            self._on_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class _FileReader:
    """Reads one capture file as it grows, in bounded steps, at its consumer's pace.

    Woken by the follower (inotify or a timer). Each wake-up reads at most
    ``READ_BUDGET`` bytes, then yields to the loop and goes on, so a backlog (after the
    loop was held) never stalls heartbeats. While ``room()`` says the consumer is full
    it reads nothing (``paused``): the backlog waits in the file until :meth:`resume`.
    Two ends, apart: ``on_closed`` once nobody can write any more (the count fell to 0,
    or :meth:`finish` said so), ``on_eof`` once, after that, a read found nothing.
    """

    def __init__(
        self,
        capture: CaptureFile,
        loop: asyncio.AbstractEventLoop,
        *,
        room: Callable[[], bool],
        on_data: Callable[[bytes], None],
        on_drained: Callable[[], None],
        on_closed: Callable[[], None],
        on_eof: Callable[[], None],
        on_written: Callable[[], None],
        on_rewritten: Callable[[bool], None],
        on_disk: Callable[[int], None],
        on_backlog: Callable[[bool], None],
        spans: Callable[[], int] | None = None,
        on_span: Callable[[Span], None] | None = None,
        span_limit: int = CHUNK_LIMIT,
    ) -> None:
        self.capture = capture
        self._spans = spans
        """SPANS_OFF, SPANS_TAKE (whole lines are taken as spans) or SPANS_ALIGN (spans
        are wanted, but the aligner holds part of a line: a read stops after its first
        newline, so that the next one can be a span)."""
        self._on_span = on_span
        self._span_limit = span_limit
        self._loop = loop
        self._room = room
        self._on_data = on_data
        self._on_drained = on_drained
        self._on_closed = on_closed
        self._on_eof = on_eof
        self._on_written = on_written
        self._on_rewritten = on_rewritten
        self._on_disk = on_disk
        self._on_backlog = on_backlog
        self.behind = False
        self.allocated = 0
        """The file's disk blocks as last told to ``on_disk``."""
        self.paused = False
        """Stopped until :meth:`resume`: the consumer has no room."""
        self.client_bound = False
        """The reader stopped for its consumer since it last caught up with the child:
        the backlog is the client's, which the disk budget bounds, not BACKLOG_LIMIT."""
        self._size = 0
        self._later: asyncio.Handle | None = None
        self._told = False
        self._closed_told = False
        self.forced = False
        self.done = False
        capture.listener = self.wake

    @property
    def writers_gone(self) -> bool:
        """Whether nobody can write any more (by the count, or as :meth:`finish` said)."""
        return self.forced or (self.capture.counted and self.capture.writers <= 0)

    def wake(self) -> None:
        """The file may have changed: read now (unless paused, or a read is scheduled)."""
        self._check_writers()
        if self.paused:
            self._account()  # the file grows while we wait: the disk budget hears of it
        elif self._later is None and not self.done:
            self._drain()

    def resume(self) -> None:
        """The consumer has room again: read on (soon, not inside the caller)."""
        if self.paused and not self.done:
            self.paused = False
            self._later = self._loop.call_soon(self._drain)

    def finish(self) -> None:
        """Nobody writes any more (the run decided): read what is left, then end."""
        self.forced = True
        self.wake()

    def stop(self) -> None:
        """Read no more (the run's output is being closed)."""
        self.done = True
        if self._later is not None:
            self._later.cancel()
            self._later = None

    def _check_writers(self) -> None:
        if not self._closed_told and self.writers_gone:
            self._closed_told = True
            self._on_closed()

    def _drain(self) -> None:
        self._later = None
        capture = self.capture
        if self.done or capture.read_fd < 0:
            return
        truncated = capture.reopened and capture.truncated()
        if truncated:
            capture.restart()  # what is there now was written after the truncation
        if (truncated or capture.rewritten) and not self._told:
            self._told = True
            # INFO: the run's client is told (process.notice); a WARNING reached a notebook's
            # cell through the kernel's stderr (Python's last-resort handler) as a second,
            # cryptic line under the run's own note.
            logger.info("[ENHANCED] the child reopened its %s by path for writing", capture.name)
            self._on_rewritten(truncated)
        budget, size = READ_BUDGET, FIRST_READ_SIZE
        while budget > 0:
            if not self._room():
                self._pause()
                return
            spans = self._spans() if self._spans is not None else SPANS_OFF
            if spans == SPANS_TAKE and self._on_span is not None:
                span = capture.line_span(self._span_limit)
                if span is not None:
                    self._on_span(span)
                    budget -= span.length
                    capture.punch_behind()
                    self._account()
                    continue
            data = capture.read(size)
            full = len(data) == size
            if spans == SPANS_ALIGN:
                kept = self._to_first_newline(data)
                full = full or len(kept) < len(data)  # the rest is still to read
                data = kept
            if data:
                self._on_data(data)
                budget -= len(data)
                capture.punch_behind()
                self._account()  # a child far ahead is held at once, not after the step
            if not full:
                break
            size = FILE_READ_SIZE
        else:
            self._later = self._loop.call_soon(self._drain)
            return
        self.client_bound = False  # caught up with the child
        self._on_drained()  # everything written so far is read
        if self.writers_gone:
            self._check_writers()
            self.done = True
            self._on_eof()

    def _to_first_newline(self, data: bytes) -> bytes:
        """``data`` up to its first newline; what follows is left in the file (read again)."""
        cut = data.find(b"\n") + 1
        if 0 < cut < len(data):
            self.capture.offset -= len(data) - cut
            return data[:cut]
        return data

    def _pause(self) -> None:
        """The consumer is full: leave the rest in the file (a held child goes on)."""
        self.paused = True
        self.client_bound = True
        self._account()

    def check(self) -> None:
        """Look at the file's size now (between other work on the loop)."""
        if not self.done:
            self._account()

    def _account(self) -> None:
        """Tell the disk budget what the file holds; hold a child that outruns us."""
        allocated, backlog = self.capture.usage()
        if allocated != self.allocated:
            self._on_disk(allocated - self.allocated)
            self.allocated = allocated
        size = self.capture.offset + backlog
        if size != self._size:
            if self.paused and size > self._size:
                self._on_written()  # nothing is read meanwhile: the size tells
            self._size = size
        limit = BACKLOG_LIMIT // 4 if self.behind else BACKLOG_LIMIT
        behind = not self.client_bound and backlog > limit
        if behind != self.behind:
            self.behind = behind
            self._on_backlog(behind)

    def closed(self) -> None:
        """The file is gone: its blocks leave the budget."""
        if self.allocated:
            self._on_disk(-self.allocated)
            self.allocated = 0


def _pipe_unread(transport: asyncio.BaseTransport) -> bool:
    """Whether the pipe of ``transport`` holds bytes not read yet (FIONREAD)."""
    pipe = transport.get_extra_info("pipe")
    unread = array.array("i", [0])
    try:
        fcntl.ioctl(pipe.fileno(), termios.FIONREAD, unread)
    except (AttributeError, OSError, ValueError):  # no pipe, or closed meanwhile
        return False
    return unread[0] > 0


class RunOutput:
    """The live output of one run: two pipes or two capture files, read into one spool.

    ``last_output_at`` (monotonic) is the time the child last wrote anything;
    ``next_batch`` waits for records and returns None once both streams ended and
    everything was taken. The end comes in two steps: ``writers_gone`` once nothing
    can write to either stream any more, ``eof`` once, after that, everything was read
    (capture files are read at the client's pace, so that may be much later).
    """

    def __init__(
        self, handler: StreamHandler, loop: asyncio.AbstractEventLoop, disk: DiskUse | None = None
    ) -> None:
        self._handler = handler
        self._loop = loop
        self.spool = OutputSpool(handler.memory_limit, handler.spool_dir, disk=disk)
        self._aligners = {name: LineAligner(handler.chunk_limit) for name in STREAMS}
        self._open: set[str] = set()
        self._writing: set[str] = set()
        self._settle: dict[str, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()
        self._transports: list[asyncio.BaseTransport] = []
        self._readers: list[_FileReader] = []
        self._child_output: ChildOutput | None = None
        self.last_output_at = time.monotonic()
        self.bytes_read = dict.fromkeys(STREAMS, 0)
        self.writers_gone = asyncio.Event()
        self.eof = asyncio.Event()
        self.on_backlog: Callable[[str, bool], None] | None = None
        """Called with the stream's name and True when its capture file has more than
        BACKLOG_LIMIT unread bytes, and False once the reader caught up."""
        self._on_rewritten: Callable[[str, bool], None] | None = None
        self._rewrites: list[tuple[str, bool]] = []
        """Reopens seen before anyone listened (see :meth:`tell_rewrites`)."""
        self.spans: Callable[[], bool] | None = None
        """Whether the consumer takes spans now (whole lines of a capture file, left in the
        file and sent from it): set by the run for a connection that can ``sendfile``."""

    @property
    def mode(self) -> str:
        """"file" or "pipe"."""
        return self._child_output.mode if self._child_output is not None else "pipe"

    @property
    def counting(self) -> bool:
        """Whether the end of output is known without the run's help.

        True for pipes and for capture files whose writers inotify counts; False when
        the files are polled or the count was lost (then :meth:`finish_capture` ends them).
        """
        return all(reader.capture.counted for reader in self._readers)

    async def attach(self, child_output: ChildOutput) -> None:
        """Start reading what the child writes (takes ownership of ``child_output``)."""
        self._child_output = child_output
        if isinstance(child_output, FileOutput):
            # The files hold the backlog: their readers stop when memory is full.
            self.spool.spill = False
            for name, capture in zip(STREAMS, child_output.files, strict=True):
                self._open.add(name)
                self._writing.add(name)
                self._readers.append(self._file_reader(name, capture))
            for reader in self._readers:
                reader.wake()  # the child may have written (or even ended) already
            return
        assert isinstance(child_output, PipeOutput)
        fds, child_output.read_fds = list(child_output.read_fds), []
        for name, fd in zip(STREAMS, fds, strict=True):
            pipe = os.fdopen(fd, "rb", buffering=0)
            self._open.add(name)
            self._writing.add(name)
            transport, _ = await self._loop.connect_read_pipe(functools.partial(self._protocol, name), pipe)
            # asyncio reads 256 KiB per wake-up by default; the pipe holds 1 MiB.
            transport.max_size = PIPE_READ_SIZE  # type: ignore[attr-defined]
            self._transports.append(transport)

    def finish_capture(self) -> None:
        """Nothing of the run can write any more, or what still could is abandoned:
        read what is there and end both streams."""
        for reader in self._readers:
            reader.finish()
        for transport in self._transports:
            transport.close()

    def holders(self) -> list[int]:
        """Pids of other processes still holding the run's output open (blocking)."""
        fds = [reader.capture.read_fd for reader in self._readers if reader.capture.read_fd >= 0]
        for transport in self._transports:
            pipe = transport.get_extra_info("pipe")
            with contextlib.suppress(ValueError, OSError):
                fds.append(pipe.fileno())
        return sorted({pid for fd in fds for pid in holders_of(fd)})

    def notice_unread(self) -> None:
        """Output the child wrote that the server has not read yet counts as output now: a
        server stopped by SIGSTOP first wakes with no I/O event (epoll_wait is not restarted
        after a stop), so its silence check would see only what it read before the stop."""
        files = any(reader.capture.usage()[1] > 0 for reader in self._readers if not reader.done)
        if files or any(_pipe_unread(transport) for transport in self._transports):
            self.last_output_at = time.monotonic()

    def check_capture(self) -> None:
        """Account for the capture files now and hold a child far ahead of the reader
        (the sender calls this between sends, so a busy loop still notices in time)."""
        for reader in self._readers:
            reader.check()

    async def next_batch(self, max_chars: int) -> list[Record] | None:
        """Wait for queued output; None when the run's output is complete."""
        while self.spool.empty:
            if not self._open:
                return None
            self._ready.clear()
            await self._ready.wait()
        records = self.spool.pop(max_chars)
        if self.spool.memory_chars <= self.spool.memory_limit // 2:
            for reader in self._readers:
                reader.resume()
        return records

    def close(self) -> None:
        """Stop reading (if still open) and drop the spool and capture files."""
        for transport in self._transports:
            transport.close()
        for timer in self._settle.values():
            timer.cancel()
        for reader in self._readers:
            reader.stop()
        if self._child_output is not None:
            self._child_output.close()
        for reader in self._readers:
            reader.closed()
        self.spool.close()

    def _protocol(self, name: str) -> _PipeProtocol:
        """The protocol that feeds pipe ``name`` into this run's output."""
        return _PipeProtocol(
            functools.partial(self._on_data, name),
            functools.partial(self._on_drained, name),
            functools.partial(self._on_eof, name),
        )

    def _file_reader(self, name: str, capture: CaptureFile) -> _FileReader:
        return _FileReader(
            capture,
            self._loop,
            room=self._room,
            on_data=functools.partial(self._on_data, name),
            on_drained=functools.partial(self._on_drained, name),
            on_closed=functools.partial(self._closed, name),
            on_eof=functools.partial(self._on_eof, name),
            on_written=self._written,
            on_rewritten=functools.partial(self._rewritten, name),
            on_disk=self._capture_disk,
            on_backlog=functools.partial(self._backlog, name),
            spans=functools.partial(self._span_state, name),
            on_span=functools.partial(self._on_span, name),
            span_limit=self._handler.chunk_limit,
        )

    def _span_state(self, name: str) -> int:
        if self.spans is None or not self.spans():
            return SPANS_OFF
        return SPANS_TAKE if self._aligners[name].idle else SPANS_ALIGN

    def _on_span(self, name: str, span: Span) -> None:
        self.last_output_at = time.monotonic()
        self.bytes_read[name] += span.length
        self.spool.append(name, span)
        self._ready.set()

    def _room(self) -> bool:
        return not self.spool.full

    def _written(self) -> None:
        self.last_output_at = time.monotonic()

    def _backlog(self, name: str, behind: bool) -> None:
        if self.on_backlog is not None:
            self.on_backlog(name, behind)

    def _capture_disk(self, delta: int) -> None:
        if self.spool.disk is not None:
            self.spool.disk.change(delta)

    def _push(self, name: str, pieces: list[str]) -> None:
        for piece in pieces:
            self.spool.append(name, piece)
        if pieces:
            self._ready.set()

    def _on_data(self, name: str, data: bytes) -> None:
        self.last_output_at = time.monotonic()
        self.bytes_read[name] += len(data)
        self._push(name, self._aligners[name].feed(data))
        timer = self._settle.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _on_drained(self, name: str) -> None:
        """Everything the child wrote to ``name`` so far is read: a partial line (a
        prompt) leaves once nothing more came for PARTIAL_SETTLE seconds."""
        if self._aligners[name].partial and name not in self._settle:
            self._settle[name] = self._loop.call_later(PARTIAL_SETTLE, self._flush_partial, name)

    def _flush_partial(self, name: str) -> None:
        self._settle.pop(name, None)
        self._push(name, self._aligners[name].flush())

    def tell_rewrites(self, listener: Callable[[str, bool], None]) -> None:
        """Call ``listener`` with the stream's name (and whether a truncation was seen)
        when the child reopens its capture file by path for writing (output may be lost),
        at once for each reopen seen before: the readers start with the child, so a short
        one is often done before its run listens."""
        self._on_rewritten = listener
        rewrites, self._rewrites = self._rewrites, []
        for name, truncated in rewrites:
            listener(name, truncated)

    def _rewritten(self, name: str, truncated: bool) -> None:
        if self._on_rewritten is None:
            self._rewrites.append((name, truncated))
        else:
            self._on_rewritten(name, truncated)

    def _closed(self, name: str) -> None:
        """Nothing can write to ``name`` any more (what was written may still be unread)."""
        self._writing.discard(name)
        if not self._writing:
            self.writers_gone.set()

    def _on_eof(self, name: str) -> None:
        if name not in self._open:
            return
        self._closed(name)
        self._push(name, self._aligners[name].finish())
        self._open.discard(name)
        if not self._open:
            self.eof.set()
        self._ready.set()


class StreamHandler:
    """Configuration and factory for run outputs (one ``RunOutput`` per run).

    Owns the server's :class:`~cc_executor_nb.server.capture.Follower` (one inotify
    instance for every capture file); :meth:`close` releases it.
    """

    def __init__(
        self,
        *,
        chunk_limit: int = CHUNK_LIMIT,
        memory_limit: int = 8 << 20,
        spool_dir: str | None = None,
        capture: str = "file",
        follower: Follower | None = None,
    ) -> None:
        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be one of {CAPTURE_MODES}, not {capture!r}")
        self.chunk_limit = chunk_limit
        self.memory_limit = memory_limit
        self.spool_dir = spool_dir
        self.capture = capture
        """The default capture of a run ("file" or "pipe"); ``execute`` may choose."""
        self.follower = follower or Follower()

    def child_output(self, mode: str | None = None) -> ChildOutput:
        """New descriptors for a child's stdout and stderr (``mode`` or the default)."""
        if (mode or self.capture) == "pipe":
            return PipeOutput()
        return FileOutput(self.follower, self.spool_dir)

    async def open(self, child_output: ChildOutput, disk: DiskUse | None = None) -> RunOutput:
        """Start reading what a child writes; the returned output owns the descriptors."""
        output = RunOutput(self, asyncio.get_running_loop(), disk)
        try:
            await output.attach(child_output)
        except BaseException:
            child_output.close()
            raise
        return output

    def close(self) -> None:
        """Release the follower (the server is closing)."""
        self.follower.close()
