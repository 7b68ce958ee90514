"""The replay buffer behind ``resume``: every seq'd notification, bounded, on disk.

Notifications are appended as serialized text to segment files (anonymous temporary
files). When the kept size passes ``limit`` bytes, whole old segments are dropped and
``first_seq`` moves on; asking for anything older is an ``OutputGap`` (-32003) that
names the first seq still available. The disk budget may drop the oldest segment
earlier (:meth:`ReplayLog.drop_oldest`). Memory holds only a small index per
notification.
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
    from .disk import DiskUse

__all__ = ["ReplayLog"]


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
    limit), whichever is less, so dropping the oldest frees a bounded part. ``disk`` is
    told of every byte.
    """

    def __init__(
        self,
        limit: int = 256 << 20,
        spool_dir: str | None = None,
        *,
        segment_limit: int | None = None,
        disk: DiskUse | None = None,
    ) -> None:
        self.limit = limit
        self.spool_dir = spool_dir
        self.segment_size = max(min(limit // 4, (segment_limit or limit) // 8), 1)
        self.disk = disk
        self._segments: collections.deque[_Segment] = collections.deque()
        self._size = 0
        self.last_seq = 0

    @property
    def size(self) -> int:
        """Bytes kept now."""
        return self._size

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
        return self._segments[0].first_seq if self._segments else self.last_seq + 1

    def append(self, seq: int, body: bytes) -> None:
        """Record the serialized notification with this seq (seqs must rise)."""
        segment = self._writable_segment(seq)
        pwritev_all(segment.fd, [body], segment.size)  # a short write is carried on, not left as a hole
        segment.entries.append((seq, segment.size, len(body)))
        segment.size += len(body)
        self._size += len(body)
        self.last_seq = seq
        self._trim()
        if self.disk is not None:
            self.disk.change(len(body))  # last: the budget may drop segments right away

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
        while self._segments:
            self._drop(self._segments.popleft())

    def _drop(self, segment: _Segment) -> None:
        self._size -= segment.size
        fd, segment.fd = segment.fd, -1
        release(fd)
        if self.disk is not None:
            self.disk.change(-segment.size)

    def _iter_since(self, last_seq: int) -> Iterator[bytes]:
        for segment in list(self._segments):
            if segment.entries and segment.entries[-1][0] <= last_seq:
                continue
            for seq, offset, length in segment.entries:
                if seq > last_seq:
                    if segment.fd < 0:
                        # Dropped while this replay went on (the disk budget): say so.
                        raise OutputGap(data={"first_available_seq": self.first_seq})
                    yield segment.read(offset, length)

    def _writable_segment(self, seq: int) -> _Segment:
        if not self._segments or self._segments[-1].size >= self.segment_size:
            self._segments.append(_Segment(anonymous_file("ccexec-replay-", self.spool_dir), seq))
        return self._segments[-1]

    def _trim(self) -> None:
        while self._size > self.limit and len(self._segments) > 1:
            self._drop(self._segments.popleft())
