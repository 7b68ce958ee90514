"""A run's whole output at a bounded memory cost: the first MiBs in memory, the rest on disk.

:class:`OutputStore` keeps every piece of a run's stdout and stderr, in arrival order,
as one append-only UTF-8 log: in memory up to ``memory_limit`` bytes, then in a file
(``path``) in a private temporary directory, which goes when the store is collected
or the process exits. An index of stream switches (one entry per change of stream,
not per piece) tells the streams apart, and the latest output stays in memory for
views. So a 5 GB build log costs the kernel a few MiB, and ``run.stdout`` still
returns the whole text when asked. When the file cannot be written (a full disk), what
does not fit stays in memory: nothing is lost, and ``disk_error`` says why::

    run.output.tail(20)                        # the last 20 lines (both streams)
    for chunk in run.output.iter_chunks("stdout"):
        handle.write(chunk)                    # stdout in ~1 MiB pieces
    run.output.path                            # a file holding all of it (both streams)

The loop thread appends; any thread reads (a lock keeps them apart).
"""

from __future__ import annotations

import array
import atexit
import codecs
import collections
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from ..events import Event, Output

__all__ = ["CHUNK_BYTES", "MEMORY_LIMIT", "RECENT_CHARS", "OutputStore"]

logger = logging.getLogger(__name__)

MEMORY_LIMIT = 4 << 20
"""Bytes of output a store keeps in memory before it moves everything to a file."""
RECENT_CHARS = 1 << 18
"""Characters of the latest output always kept in memory, for views."""
CHUNK_BYTES = 1 << 20
"""About how many bytes each :meth:`OutputStore.iter_chunks` piece holds."""
STREAMS = ("stdout", "stderr")
_ENCODING = ("utf-8", "surrogatepass")
_CONTINUATION = bytes(range(0x80, 0xC0))
"""UTF-8 continuation bytes: what a cut character leaves at the start of a range."""


class OutputStore:
    """Every piece of one run's output, in order, whole, in bounded memory.

    ``chars`` counts the characters of each stream; ``size`` the bytes of the log.
    """

    def __init__(self, memory_limit: int = MEMORY_LIMIT, directory: str | None = None) -> None:
        self.memory_limit = memory_limit
        self._directory = directory
        self._lock = threading.RLock()
        self._memory: bytearray | None = bytearray()
        self._fd: int | None = None
        self._path: str | None = None
        self.size = 0
        self.chars = dict.fromkeys(STREAMS, 0)
        self.pieces = 0
        self._starts = array.array("q")
        self._kinds = bytearray()
        self._recent: collections.deque[tuple[str, str]] = collections.deque()
        self._recent_chars = 0
        self._last: tuple[str, int, int] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._stored = 0
        """Bytes of the log in the file; the rest (``_overflow``) waits in memory."""
        self._overflow = bytearray()
        self.disk_error: OSError | None = None
        """Why output past the memory limit is held in memory (a full disk), or None."""

    def __repr__(self) -> str:
        where = self._path or "memory"
        return f"<OutputStore {self.chars['stdout']} + {self.chars['stderr']} chars in {where}>"

    # Writing (the loop thread)

    def append(self, stream: str, text: str) -> None:
        """Add one piece of ``stream`` ("stdout" or "stderr")."""
        if not text:
            return
        data = text.encode(*_ENCODING)
        kind = STREAMS.index(stream)
        with self._lock:
            if not self._kinds or self._kinds[-1] != kind:
                self._starts.append(self.size)
                self._kinds.append(kind)
            self._last = (text, self.size, len(data))
            self._write(data)
            self.size += len(data)
            self.chars[stream] += len(text)
            self.pieces += 1
            self._remember(stream, text)

    def keep(self, event: Event) -> Event:
        """The form of ``event`` to keep in ``run.events``.

        An output event whose text this store just took comes back with its text read
        from the store on demand, so the list of events holds no second copy.
        """
        last = self._last
        if not isinstance(event, Output) or last is None or event.params.get("data") is not last[0]:
            return event
        return Output(event.method, _StoredParams(self, event.params, last[1], last[2]))

    def _write(self, data: bytes) -> None:
        if self._memory is not None and (self.disk_error or self.size + len(data) <= self.memory_limit):
            self._memory += data
            return
        if self._fd is None:
            try:
                self._spill()
            except OSError as exc:
                self._disk_failed(exc)
                self._memory = (self._memory or bytearray()) + data
                return
        if self._overflow:  # an earlier write failed: keep the order, try the file again
            self._overflow += data
            self._store_overflow()
            return
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
                self._stored += done
        except OSError as exc:
            self._overflow += view  # what the file did not take waits in memory
            self._disk_failed(exc)

    def _spill(self) -> None:
        """Move the log from memory to a file (first write past the memory limit); on
        OSError the log stays in memory and no file is left."""
        directory = self._directory or _private_directory()
        fd, path = tempfile.mkstemp(prefix="run-", suffix=".log", dir=directory)
        try:
            _write_all(fd, self._memory or b"")
        except OSError:
            _remove(fd, path)
            raise
        self._fd, self._path, self._stored = fd, path, len(self._memory or b"")
        self._finalizer = weakref.finalize(self, _remove, fd, path)
        self._memory = None

    def _store_overflow(self) -> None:
        """Append what waits in memory to the file, as far as the disk lets it."""
        assert self._fd is not None
        try:
            while self._overflow:
                done = os.write(self._fd, self._overflow)
                del self._overflow[:done]
                self._stored += done
        except OSError as exc:
            self._disk_failed(exc)

    def _disk_failed(self, exc: OSError) -> None:
        if self.disk_error is None:
            where = self._path or self._directory or tempfile.gettempdir()
            logger.warning("! run output past %d bytes stays in memory: cannot write %s: %s", self.size, where, exc)
        self.disk_error = exc

    def _remember(self, stream: str, text: str) -> None:
        self._recent.append((stream, text))
        self._recent_chars += len(text)
        while len(self._recent) > 1 and self._recent_chars - len(self._recent[0][1]) >= RECENT_CHARS:
            self._recent_chars -= len(self._recent.popleft()[1])

    # Reading (any thread)

    def text(self, stream: str | None = None) -> str:
        """All the text of ``stream`` ("stdout" or "stderr"), or of both in order."""
        return "".join(self.iter_chunks(stream))

    def iter_chunks(self, stream: str | None = None, size: int = CHUNK_BYTES) -> Iterator[str]:
        """The text of ``stream`` (or of both, in arrival order) in pieces of about ``size`` bytes.

        Gives the output as it was when the iteration began.
        """
        decoder = codecs.getincrementaldecoder(_ENCODING[0])(_ENCODING[1])
        with self._lock:
            spans = self._spans(stream)
        for start, end in spans:
            for position in range(start, end, max(size, 1)):
                with self._lock:
                    data = self._read(position, min(end, position + max(size, 1)))
                text = decoder.decode(data)
                if text:
                    yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def tail(self, lines: int = 10, stream: str | None = None) -> str:
        """The last ``lines`` lines of ``stream`` (or of both, in order), like ``tail -n``."""
        if lines <= 0:
            return ""
        with self._lock:
            spans = self._spans(stream)
            found = bytearray()
            for start, stop in reversed(spans):
                for end in range(stop, start, -CHUNK_BYTES):
                    found[:0] = self._read(max(start, end - CHUNK_BYTES), end)
                    if _enough_lines(found, lines):
                        return _last_lines(found, lines)
        return _last_lines(found, lines)

    def last(self, max_chars: int, stream: str | None = None) -> str:
        """The last ``max_chars`` characters of ``stream`` (or of both, in order).

        Reads at most four bytes per character from the end, however long the output.
        """
        if max_chars <= 0:
            return ""
        budget = 4 * max_chars
        chunks = []
        with self._lock:
            for start, end in reversed(self._spans(stream)):
                take = min(end - start, budget)
                chunks.append(self._read(end - take, end))
                budget -= take
                if budget <= 0:
                    break
        data = b"".join(reversed(chunks)).lstrip(_CONTINUATION)  # a character cut at the start
        return data.decode(*_ENCODING)[-max_chars:]

    def tail_pieces(self, max_chars: int) -> list[tuple[str, str]]:
        """The last pieces holding at most ``max_chars`` characters (the first may be cut)."""
        with self._lock:
            if max_chars <= self._recent_chars or self._recent_chars == sum(self.chars.values()):
                pieces = list(self._recent)
            else:
                # A character takes at most four bytes: this much holds max_chars of them.
                pieces = list(self._pieces_from(max(0, self.size - 4 * max_chars)))
        kept: list[tuple[str, str]] = []
        budget = max(0, max_chars)
        for stream, text in reversed(pieces):
            if budget <= 0:
                break
            piece = text[-budget:]
            kept.append((stream, piece))
            budget -= len(piece)
        kept.reverse()
        return kept

    def iter_pieces(self) -> Iterator[tuple[str, str]]:
        """Every run of one stream as ``(stream, text)``, in order (neighbours of a stream joined)."""
        return self._pieces_from(0)

    @property
    def path(self) -> str:
        """A file holding the whole output (both streams, in order); made on first use.

        OSError when the disk has no room for it (``disk_error``).

        It is removed when the store goes (with its run) or the process exits.
        """
        with self._lock:
            if self._path is None:
                self._spill()
            self._store_overflow()
            if self._overflow and self.disk_error is not None:
                raise self.disk_error  # the file would lack the output's end
            assert self._path is not None
            return self._path

    def read(self, start: int, length: int) -> str:
        """The text of the log's bytes ``[start, start + length)`` (a whole piece)."""
        with self._lock:
            return self._read(start, start + length).decode(*_ENCODING)

    def close(self) -> None:
        """Drop the file now (the store reads nothing afterwards)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._fd, self._memory, self._overflow = None, bytearray(), bytearray()

    # Helpers (hold the lock)

    def _read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if self._memory is not None:
            return bytes(self._memory[start:end])
        if self._fd is None:
            return b""
        stored = os.pread(self._fd, min(end, self._stored) - start, start) if start < self._stored else b""
        return stored + bytes(self._overflow[max(start - self._stored, 0) : max(end - self._stored, 0)])

    def _spans(self, stream: str | None) -> list[tuple[int, int]]:
        """Byte ranges of ``stream`` in the log (the whole log for None)."""
        if stream is None:
            return [(0, self.size)] if self.size else []
        if stream not in STREAMS:
            raise ValueError(f"stream must be 'stdout', 'stderr' or None (both), not {stream!r}")
        kind = STREAMS.index(stream)
        return [(start, end) for start, end, k in self._runs() if k == kind]

    def _runs(self) -> list[tuple[int, int, int]]:
        """(start, end, stream index) of every run of one stream."""
        ends = [*self._starts[1:], self.size] if self._starts else []
        return list(zip(self._starts, ends, self._kinds, strict=True))

    def _pieces_from(self, offset: int) -> Iterator[tuple[str, str]]:
        """Runs of one stream from byte ``offset`` on (a cut character at the start dropped)."""
        with self._lock:
            texts = []
            for start, end, kind in self._runs():
                if end > offset:
                    data = self._read(max(start, offset), end)
                    if start < offset:
                        data = data.lstrip(_CONTINUATION)
                    texts.append((STREAMS[kind], data.decode(*_ENCODING)))
        return iter(texts)


class _StoredParams(Mapping[str, Any]):
    """The params of a ``process.output`` event whose text lives in an OutputStore."""

    def __init__(self, store: OutputStore, params: Mapping[str, Any], start: int, length: int) -> None:
        self._store = store
        self._params = {key: value for key, value in params.items() if key != "data"}
        self._span = (start, length)

    def __getitem__(self, key: str) -> Any:
        if key == "data":
            return self._store.read(*self._span)
        return self._params[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._params
        yield "data"

    def __len__(self) -> int:
        return len(self._params) + 1

    def __repr__(self) -> str:
        return f"{{...{len(self)} params, data: {self._span[1]} bytes in the run's output}}"


def _enough_lines(data: bytearray, lines: int) -> bool:
    # One more newline than lines: the first line in view is then whole.
    return data.count(b"\n") > lines


def _last_lines(data: bytearray, lines: int) -> str:
    text = bytes(data).decode(_ENCODING[0], "replace")
    end = "\n" if text.endswith("\n") else ""
    parts = text[: len(text) - len(end)].split("\n")
    return "\n".join(parts[-lines:]) + end


class _Directory:
    """This process's directory of output files: made on first use, removed at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: str | None = None

    def __call__(self) -> str:
        with self._lock:
            if self._path is None or not os.path.isdir(self._path):
                self._path = tempfile.mkdtemp(prefix="ccexec-output-")
                atexit.register(shutil.rmtree, self._path, True)
            return self._path


_private_directory = _Directory()


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove(fd: int, path: str) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
