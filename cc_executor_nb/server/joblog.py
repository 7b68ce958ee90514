"""A durable job's notification log on disk, and the scanner that keeps its summary.

:class:`JobLog` holds every seq'd notification of one job, serialized, one per line:
line N is seq N, because a job numbers its notifications 1, 2, 3 ... with no gap and
appends each one as it is made. Memory holds only the start offset of each line, so
any range of seqs is read back with one ``pread``; a log written by an earlier server
is indexed on first use (one pass over the file). A write that fails (a full disk, a
quota, an I/O error) leaves the file cut at its last whole line; that line and every
later one are then kept in memory only, still read back as their seqs, and ``error``
says why, for the job to end.

:class:`SummaryScanner` watches a job's stdout for JSON lines that match what the
client asked for (``summary`` in ``execute``) and keeps the named members of the last
one. It knows nothing of what the members mean.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from pathlib import Path
from typing import Any

from .. import protocol
from ..errors import ProtocolError
from ..protocol import SummarySpec
from . import files

__all__ = ["MAX_SUMMARY_LINE", "MAX_SUMMARY_VALUE", "JobLog", "SummaryScanner"]

MAX_SUMMARY_LINE = 16 << 20
"""Characters of one candidate line the scanner will hold; longer lines are skipped."""
MAX_SUMMARY_VALUE = 4096
"""Bytes of one kept member (serialized); bigger members are left out of the summary."""
_INDEX_CHUNK = 1 << 20


class JobLog:
    """Append-only lines (one serialized notification each) with an in-memory line index."""

    def __init__(self, path: Path, *, fresh: bool = False) -> None:
        self.path = path
        self._fd: int | None = None
        self._offsets: array[int] | None = None
        self._size = 0
        self._unwritten: list[bytes] = []
        self.error: OSError | None = None
        """Why a write failed; from then on lines are kept in memory only."""
        if fresh:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(path, flags, 0o600)
            self._offsets = array("q")

    @property
    def last_seq(self) -> int:
        """The seq of the last line (0 when empty)."""
        return len(self._index()) + len(self._unwritten)

    @property
    def size(self) -> int:
        """Bytes on disk."""
        if self._offsets is not None:
            return self._size
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    @property
    def modified_at(self) -> float | None:
        """When the file last changed (seconds since the epoch), None if it cannot be told."""
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    def append(self, line: bytes) -> None:
        """Add one line (``line`` ends with a newline and holds no other); never raises
        for a failed write, which sets ``error`` instead."""
        offsets = self._index()
        if self.error is None:
            try:
                files.append_all(self._open(), line)
            except OSError as exc:
                self._fail(exc)
        if self.error is not None:
            self._unwritten.append(line)
            return
        offsets.append(self._size)
        self._size += len(line)

    def read(self, after: int, budget: int) -> list[bytes]:
        """Lines of seq ``after + 1`` on, about ``budget`` bytes of them (at least one)."""
        offsets = self._index()
        count = len(offsets)
        if after >= count:
            return self._unwritten[after - count :]
        start = offsets[after]
        last = after + 1  # the seq of the last line taken
        while last < count and offsets[last] - start < budget:
            last += 1
        end = offsets[last] if last < count else self._size
        data = files.pread_all(self._open(), end - start, start)
        bounds = [*offsets[after + 1 : last], end]
        lines, position = [], start
        for bound in bounds:
            lines.append(bytes(data[position - start : bound - start]))
            position = bound
        return lines

    def close(self) -> None:
        """Close the file (it is reopened on the next use)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        """Close and remove the file."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _fail(self, error: OSError) -> None:
        """Cut what the failed write left of its line: the file ends on a whole line."""
        self.error = error
        with contextlib.suppress(OSError):
            os.ftruncate(self._open(), self._size)

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        return self._fd

    def _index(self) -> array[int]:
        if self._offsets is not None:
            return self._offsets
        fd = self._open()
        offsets: array[int] = array("q")
        position = line_start = 0
        while chunk := os.pread(fd, _INDEX_CHUNK, position):
            start = 0
            while (newline := chunk.find(b"\n", start)) >= 0:
                offsets.append(line_start)
                line_start = position + newline + 1
                start = newline + 1
            position += len(chunk)
        if line_start < position:
            # A line cut short by a crash mid-write is not a notification: drop it.
            os.ftruncate(fd, line_start)
        self._offsets, self._size = offsets, line_start
        return offsets


class SummaryScanner:
    """Keeps the ``fields`` of the last stdout line that is a JSON object matching ``match``.

    Fed the stdout pieces in order. Only lines that start with ``{`` and contain every
    string value of ``match`` in its JSON spelling are parsed, so a stream of other
    lines costs a ``find`` per line.
    """

    def __init__(self, spec: SummarySpec) -> None:
        self.spec = spec
        self.summary: dict[str, Any] | None = None
        self.matches = 0
        """How many lines matched so far."""
        self._needles = [protocol.dumps(v) for v in spec.match.values() if isinstance(v, str)]
        self._parts: list[str] = []
        self._chars = 0
        self._verdict: bool | None = None  # None: the line has not shown its first character

    def feed(self, text: str) -> None:
        """Take the next piece of stdout."""
        start = 0
        while (newline := text.find("\n", start)) >= 0:
            self._take(text[start:newline])
            self._end_line()
            start = newline + 1
        self._take(text[start:])

    def finish(self) -> None:
        """The output ended: a last line without a newline counts too."""
        self._end_line()

    def _take(self, piece: str) -> None:
        if not piece:
            return
        if self._verdict is None:
            self._verdict = piece.lstrip()[:1] == "{"
        if not self._verdict:
            return
        self._chars += len(piece)
        if self._chars > MAX_SUMMARY_LINE:
            self._verdict, self._parts = False, []
            return
        self._parts.append(piece)

    def _end_line(self) -> None:
        line, self._parts, self._chars, self._verdict = "".join(self._parts), [], 0, None
        if line and all(needle in line for needle in self._needles):
            found = self._summarize(line)
            if found is not None:
                self.summary = found
                self.matches += 1

    def _summarize(self, line: str) -> dict[str, Any] | None:
        try:
            value = protocol.loads(line)
        except ProtocolError:
            return None
        if not isinstance(value, dict) or not all(_same(value.get(k, _ABSENT), v) for k, v in self.spec.match.items()):
            return None
        return {name: value[name] for name in self.spec.fields if name in value and _small(value[name])}


_ABSENT = object()


def _same(found: object, wanted: object) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    return (type(found) is type(wanted) and found == wanted) or (
        isinstance(found, (int, float)) and isinstance(wanted, (int, float))
        and not isinstance(found, bool) and not isinstance(wanted, bool) and found == wanted
    )


def _small(value: object) -> bool:
    return len(protocol.dumps_bytes(value)) <= MAX_SUMMARY_VALUE
