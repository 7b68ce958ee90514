"""The replay buffer behind ``resume``: every seq'd notification not yet acknowledged, bounded.

The newest notifications are kept in memory, up to ``memory_limit`` bytes (the *tail*).
Past it, the oldest MiB of the tail is spilled to segment files (anonymous temporary
files) in one write. A client's ``ack`` (:meth:`ReplayLog.ack`) says it holds everything
up to a seq: those notifications are forgotten, from the tail or whole segments, so a
client that keeps up acknowledging makes the log write nothing to disk. When the kept
size passes ``limit`` bytes, whole old segments are dropped and ``first_seq`` moves on;
asking for anything older is an ``OutputGap`` (-32003) that names the first seq still
available. The disk budget may drop the oldest segment earlier
(:meth:`ReplayLog.drop_oldest`). With ``memory_limit=0`` every notification is written
at once. Memory holds the tail and a small index per spilled notification.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import OutputGap
from .files import anonymous_file, pwritev_all, release

if TYPE_CHECKING:
    from .capture import Span
    from .disk import DiskUse

__all__ = ["MEMORY_TAIL", "SERVER_MEMORY_TAIL", "WINDOW_MIN", "ReplayLog", "TailPool"]

MEMORY_TAIL = 16 << 20
"""A session's replay tail in memory, in bytes: a client that acknowledges at least every
MiB and keeps up within a few socket buffers never makes its replay touch the disk."""
WINDOW_MIN = 4 << 20
"""The least an acknowledging client may have unacknowledged before the server waits for
it: well above the client library's ``ACK_EVERY`` (1 MiB), so a client that reads always
reaches its next ``ack`` (a smaller tail spills to disk instead of waiting)."""
SPILL_BATCH = 1 << 20
"""Bytes a memory tail past its limit writes to disk at once (at most half the limit)."""
SERVER_MEMORY_TAIL = 256 << 20
"""The memory tails of all of a server's sessions together, in bytes."""


BLOCK = 1 << 20
"""Bytes of one block of a memory tail."""


class TailPool:
    """The memory the replay tails of many sessions share: past ``limit``, a log appending spills.

    It also keeps up to ``spare`` empty blocks for reuse, so that a tail cycling through
    blocks does not ask the allocator for new ones.
    """

    def __init__(self, limit: int = SERVER_MEMORY_TAIL, spare: int = 8) -> None:
        self.limit = limit
        self.used = 0
        self.spare = spare
        self.allocated = 0
        """Blocks made so far (the rest were reused)."""
        self._spares: list[bytearray] = []

    @property
    def full(self) -> bool:
        return self.used > self.limit

    def take(self, size: int) -> bytearray:
        """A block for at least ``size`` bytes (a spare one when it fits)."""
        if size <= BLOCK and self._spares:
            return self._spares.pop()
        self.allocated += 1
        return bytearray(max(size, BLOCK))

    def give(self, block: bytearray) -> None:
        """Take an emptied block back (kept while fewer than ``spare`` are kept)."""
        if len(block) == BLOCK and len(self._spares) < self.spare:
            self._spares.append(block)


class _Block:
    __slots__ = ("data", "live", "used")

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.used = 0
        self.live = 0


class _MemoryTail:
    """Notifications kept in memory, in order, copied into blocks that are reused.

    Not one bytes object each: ~100 KB objects that live long, among short-lived ones of
    the same size, fragment the C heap (a 16 MiB tail grew the server by 130-190 MiB in a
    1 GiB flood, against 16 MiB with blocks).
    """

    def __init__(self, pool: TailPool) -> None:
        self.size = 0
        self._pool = pool
        self._blocks: collections.deque[_Block] = collections.deque()
        # seq, block, at, n, and the span of a capture file that follows those n bytes (or None)
        self._entries: collections.deque[tuple[int, _Block, int, int, Span | None]] = collections.deque()
        self.spans = 0
        """How many entries refer to a span of a capture file."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def first_seq(self) -> int:
        return self._entries[0][0]

    def push(self, seq: int, body: bytes, span: Span | None = None) -> None:
        """Keep ``body`` (followed by the bytes of ``span``, which stay in the capture file)."""
        size = len(body)
        block = self._blocks[-1] if self._blocks else None
        if block is None or len(block.data) - block.used < size:
            block = _Block(self._pool.take(size))
            self._blocks.append(block)
        block.data[block.used : block.used + size] = body
        self._entries.append((seq, block, block.used, size, span))
        block.used += size
        block.live += 1
        self._grow(size, span)

    def pop(self) -> tuple[int, memoryview | bytes]:
        """The oldest notification; its view stays valid until the next ``push`` (a span's
        bytes are read from its capture file, and the span released)."""
        seq, view, span = self._take()
        if span is None:
            return seq, view
        body = b"".join((view, span.read()))
        span.release()
        return seq, body

    def drop(self) -> None:
        """Forget the oldest notification (a span is released, never read)."""
        _, _, span = self._take()
        if span is not None:
            span.release()

    def _take(self) -> tuple[int, memoryview, Span | None]:
        seq, block, at, size, span = self._entries.popleft()
        self._grow(-size, span, -1)
        block.live -= 1
        view = memoryview(block.data)[at : at + size]
        if block.live == 0:
            self._blocks.popleft()  # entries go in order: it is the oldest block
            if self._blocks:
                self._pool.give(block.data)
            else:
                self._blocks.append(block)  # the only block: fill it again from its start
                block.used = 0
        return seq, view, span

    def copies(self) -> list[tuple[int, bytes]]:
        """Every notification kept, as its own bytes (for a replay)."""
        return [
            (seq, bytes(block.data[at : at + size]) + (span.read() if span is not None else b""))
            for seq, block, at, size, span in self._entries
        ]

    def materialize(self) -> int:
        """Read every span into memory (the entries stay, in order); returns the bytes read."""
        if not self.spans:
            return 0
        spans = [span for *_, span in self._entries if span is not None]
        kept = self.copies()
        for span in spans:
            # Not punched: the socket may still refer to their pages (the file's close
            # does not clear them, a punch does).
            span.release(punch=False)
        self.clear()
        for seq, body in kept:
            self.push(seq, body)
        return sum(span.length for span in spans)

    def clear(self) -> None:
        while self._entries:
            self.drop()
        while self._blocks:
            self._pool.give(self._blocks.popleft().data)

    def _grow(self, change: int, span: Span | None = None, sign: int = 1) -> None:
        """The tail's size counts a span's bytes (what the client has in flight); the memory
        pool only what is in memory."""
        self._pool.used += change
        if span is not None:
            change += sign * span.length
            self.spans += sign
        self.size += change


@dataclass(eq=False)
class _Segment:
    fd: int
    first_seq: int
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # seq, offset, length
    size: int = 0
    created_at: float = field(default_factory=time.monotonic)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)


class ReplayLog:
    """Append-only log of (seq, serialized notification), bounded to about ``limit`` bytes.

    Segments hold a quarter of ``limit`` or an eighth of ``segment_limit`` (the disk
    limit), whichever is less, so dropping the oldest frees a bounded part. The memory
    tail holds at most ``memory_limit`` bytes (and at most a quarter of ``limit``); with a
    ``pool`` that is over its limit, an append spills as much as it adds.
    ``disk`` is told of every byte written to a segment.
    """

    def __init__(
        self,
        limit: int = 256 << 20,
        spool_dir: str | None = None,
        *,
        segment_limit: int | None = None,
        disk: DiskUse | None = None,
        memory_limit: int = 0,
        pool: TailPool | None = None,
    ) -> None:
        self.limit = limit
        self.spool_dir = spool_dir
        self.segment_size = max(min(limit // 4, (segment_limit or limit) // 8), 1)
        self.memory_limit = max(min(memory_limit, limit // 4), 0)
        self.disk = disk
        self._segments: collections.deque[_Segment] = collections.deque()
        self._size = 0
        self._pool = pool if pool is not None else TailPool(limit=1 << 62)
        self._tail = _MemoryTail(self._pool)
        self.last_seq = 0
        self.acked = 0
        """The highest seq the client acknowledged (everything up to it is forgotten)."""
        self.spilled = 0
        """Bytes written to segment files so far (what reached the disk)."""

    @property
    def size(self) -> int:
        """Bytes kept on disk now (the memory tail is not counted)."""
        return self._size

    @property
    def over_window(self) -> bool:
        """True when what an acknowledging client may have in flight is in the memory tail:
        half of it, and never under ``WINDOW_MIN``."""
        return self.memory_limit > 0 and self._tail.size >= max(self.memory_limit // 2, WINDOW_MIN)

    @property
    def over_detached_window(self) -> bool:
        """True when the log (memory and disk) holds half its limit: past it, a client away
        could only be kept by dropping what it has not received."""
        return self._size + self._tail.size >= self.limit // 2

    @property
    def memory_size(self) -> int:
        """Bytes kept in the memory tail now."""
        return self._tail.size

    @property
    def segments(self) -> int:
        """How many segment files are kept."""
        return len(self._segments)

    @property
    def oldest_at(self) -> float | None:
        """When the oldest kept segment was started (monotonic), None when nothing is kept."""
        return self._segments[0].created_at if self._segments else None

    @property
    def first_seq(self) -> int:
        """The oldest seq still available (``last_seq + 1`` when nothing is kept)."""
        if self._segments:
            first = self._segments[0].first_seq
        elif self._tail:
            first = self._tail.first_seq
        else:
            first = self.last_seq + 1
        return max(first, self.acked + 1)

    def append(self, seq: int, body: bytes) -> None:
        """Record the serialized notification with this seq (seqs must rise)."""
        self.last_seq = seq
        if self.memory_limit == 0:
            self._spill_one(seq, body)
            return
        self._tail.push(seq, body)
        # Spills are small, so that none holds the loop up for long (a write into fresh page
        # cache can run at 200 MB/s): when the server's tails together are full, this one
        # stops growing; past its own limit, it spills about a MiB.
        if self._pool.full:
            self._spill(len(body))
        elif self._tail.size > self.memory_limit:
            self._spill(self._tail.size - self.memory_limit + min(SPILL_BATCH, self.memory_limit // 2))

    def append_span(self, seq: int, header: bytes, span: Span) -> None:
        """Record a notification made of ``header`` and the bytes of ``span``, which stay in
        their capture file (held there until the entry is acknowledged, spilled or copied
        out). Only with a memory tail."""
        assert self.memory_limit > 0
        self.last_seq = seq
        self._tail.push(seq, header, span)
        if self._pool.full:
            self._spill(len(header) + span.length)
        elif self._tail.size > self.memory_limit:
            self._spill(self._tail.size - self.memory_limit + min(SPILL_BATCH, self.memory_limit // 2))

    def copy_out_spans(self) -> None:
        """The capture files are closing: the bytes of every span still kept are copied into
        the memory tail (its size does not change: it counted them already); a server whose
        tails are full spills as much."""
        read = self._tail.materialize()
        if read and self._pool.full:
            self._spill(read)

    def ack(self, seq: int) -> None:
        """The client holds everything up to ``seq``: forget it (never beyond ``last_seq``)."""
        seq = min(seq, self.last_seq)
        if seq <= self.acked:
            return
        self.acked = seq
        while self._tail and self._tail.first_seq <= seq:
            self._tail.drop()
        while self._segments and self._segments[0].entries and self._segments[0].entries[-1][0] <= seq:
            self._drop(self._segments.popleft())

    def since(self, last_seq: int) -> Iterator[bytes]:
        """The serialized form of every notification with seq > ``last_seq``, in order.

        Raises OutputGap when some of them are no longer kept.
        """
        if last_seq + 1 < self.first_seq:
            raise OutputGap(data={"first_available_seq": self.first_seq})
        return self._iter_since(last_seq)

    def drop_oldest(self, *, complete_only: bool = False) -> bool:
        """Drop the oldest segment; False when there is none to drop.

        With ``complete_only`` the segment being written is kept (so that notifications
        recorded under pressure are not dropped one by one); ``first_seq`` moves on.
        """
        if len(self._segments) <= (1 if complete_only else 0):
            return False
        self._drop(self._segments.popleft())
        return True

    def close(self) -> None:
        """Drop everything and close the files."""
        self._tail.clear()
        while self._segments:
            self._drop(self._segments.popleft())

    def _drop(self, segment: _Segment) -> None:
        self._size -= segment.size
        fd, segment.fd = segment.fd, -1
        release(fd)
        if self.disk is not None:
            self.disk.change(-segment.size)

    def _iter_since(self, last_seq: int) -> Iterator[bytes]:
        tail = self._tail.copies()  # taken now: a spill while the replay goes on cannot skip
        for segment in list(self._segments):
            if segment.entries and segment.entries[-1][0] <= last_seq:
                continue
            for seq, offset, length in segment.entries:
                if seq > last_seq:
                    if segment.fd < 0:
                        # Dropped while this replay went on (the disk budget): say so.
                        raise OutputGap(data={"first_available_seq": self.first_seq})
                    yield segment.read(offset, length)
        for seq, body in tail:
            if seq > last_seq:
                yield body

    def _spill(self, amount: int) -> None:
        """Write the oldest ``amount`` bytes (or more, whole notifications) of the tail to segments."""
        written = 0
        while self._tail and written < amount:
            segment = self._writable_segment(self._tail.first_seq)
            start, bodies = segment.size, []
            while self._tail and written < amount and segment.size < self.segment_size:
                seq, body = self._tail.pop()
                self._place(segment, seq, len(body))
                bodies.append(body)
                written += len(body)
            # One write per segment; a short write is carried on, not left as a hole.
            pwritev_all(segment.fd, bodies, start)
        self._written(written)

    def _spill_one(self, seq: int, body: bytes) -> None:
        """Without a memory tail: straight to the segment being written."""
        segment = self._writable_segment(seq)
        pwritev_all(segment.fd, [body], segment.size)
        self._place(segment, seq, len(body))
        self._written(len(body))

    @staticmethod
    def _place(segment: _Segment, seq: int, size: int) -> None:
        segment.entries.append((seq, segment.size, size))
        segment.size += size

    def _written(self, size: int) -> None:
        self._size += size
        self.spilled += size
        self._trim()
        if self.disk is not None:
            self.disk.change(size)  # last: the budget may drop segments right away

    def _writable_segment(self, seq: int) -> _Segment:
        if not self._segments or self._segments[-1].size >= self.segment_size:
            self._segments.append(_Segment(anonymous_file("ccexec-replay-", self.spool_dir), seq))
        return self._segments[-1]

    def _trim(self) -> None:
        while self._size > self.limit and len(self._segments) > 1:
            self._drop(self._segments.popleft())
