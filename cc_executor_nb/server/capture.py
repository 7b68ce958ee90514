"""Where a child's stdout and stderr go: regular files that we follow, or pipes.

Some CLIs (the ``claude`` CLI 2.1.197 for one, and Node/Bun programs in general) make
their stdout non-blocking, keep in memory what a full pipe refuses, and exit without
waiting for it to drain. With a pipe, a reader that falls behind for a moment (a
kernel holding the GIL) loses the end of the output, silently. A write to a regular
file is never refused, so by default (``capture="file"``) each stream is an unlinked,
append-only file in the spool directory, which the server follows:

* one inotify instance per server wakes the reader on every write (``IN_MODIFY``),
  as fast as a pipe wakes it;
* the end of the output comes from inotify's open and close events. The child and
  all its descendants share one open file description; its last close is one
  ``IN_CLOSE_WRITE``, the moment a pipe would give end of file. A reopen by path
  (``/dev/stdout``) counts as one more writer until its own close;
* ranges already read are punched out (``fallocate``), so a file holds about its
  unread part only;
* without inotify (not Linux, no instance left) or after a queue overflow, a timer
  (or inotify's wake-ups without the count) follows the files, and the run decides
  where the output ends: leader gone, group gone, marked processes gone, a last read.

The one hazard of files: a child that reopens its own stdout by path for writing
(``echo x > /dev/stdout``) truncates the capture file and writes over its start, so
what was not yet read is lost. Every such reopen is seen (a second writer's close)
and reported; such programs can ask for ``capture="pipe"``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Callable

from ..protocol import CAPTURE_MODES
from .files import release
from .linuxio import (
    IN_CLOSE_NOWRITE,
    IN_CLOSE_WRITE,
    IN_MODIFY,
    IN_OPEN,
    IN_Q_OVERFLOW,
    Inotify,
    punch_hole,
)

__all__ = [
    "CAPTURE_MODES",
    "CaptureFile",
    "ChildOutput",
    "FileOutput",
    "Follower",
    "PipeOutput",
    "Span",
]

logger = logging.getLogger("cc_executor_nb.server.capture")

PIPE_SIZE = 1 << 20
"""Pipes (``capture="pipe"``) are enlarged to this many bytes where the system allows."""
PUNCH_EVERY = 4 << 20
"""Bytes read from a capture file between two hole punches behind the reader."""
POLL_INTERVAL = 0.025
"""Seconds between two looks at a capture file that inotify does not watch."""
_WATCH = IN_MODIFY | IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
_PAGE = 4096
SPAN_LOOK = 4096
"""Bytes at the end of a span's window searched for its last newline: a window whose last
SPAN_LOOK bytes hold none is read as before (a long line)."""


class Span:
    """Whole lines of a capture file, not read: (offset, length), sent from the file.

    While a span is held (from its cut until the client acknowledged it, or it was read
    or copied out) the capture file is not punched from its offset on: a socket that
    ``sendfile``s it refers to the file's pages until the client has read them.
    """

    __slots__ = ("capture", "length", "offset", "released")

    def __init__(self, capture: CaptureFile, offset: int, length: int) -> None:
        self.capture = capture
        self.offset = offset
        self.length = length
        self.released = False

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        """The span's bytes (a copy; the span stays held); fewer when the child truncated
        its capture file meanwhile (a reopen by path: that output is lost, and reported)."""
        return self.capture.read_span(self)

    def read_from(self, start: int) -> bytes:
        """The span's bytes from ``start`` on, exactly as many as it holds (for a frame whose
        length is already written): what a truncation lost comes as NUL bytes."""
        return self.capture.read_span(Span(self.capture, self.offset + start, self.length - start), pad=True)

    def release(self, *, punch: bool = True) -> None:
        """Nobody needs the span's bytes in the file any more: it may be punched (``punch``
        False: not yet, a socket may still refer to its pages until the client read them)."""
        if not self.released:
            self.released = True
            self.capture.span_released(punch=punch)

    def take_text(self) -> str:
        """The span's bytes as text (UTF-8 with replacement, as the line aligner decodes whole
        lines), released."""
        text = str(self.read(), "utf-8", "replace")
        self.release()
        return text


class ChildOutput:
    """The descriptors a child writes its stdout and stderr to, made before the spawn.

    ``child_fds`` go to the child; ``close_child_ends`` closes our copies once it has
    them; ``close`` releases everything that is still ours (after a failed spawn, or
    when the reader is done).
    """

    mode = ""

    def child_fds(self) -> tuple[int, int]:
        """stdout and stderr for the child."""
        raise NotImplementedError

    def close_child_ends(self) -> None:
        """The child has its copies: close ours (so its last close is the end of output)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every descriptor still ours."""
        raise NotImplementedError


class PipeOutput(ChildOutput):
    """Two pipes (``capture="pipe"``): the read ends are ours, the write ends the child's."""

    mode = "pipe"

    def __init__(self) -> None:
        self.read_fds: list[int] = []
        self._write_fds: list[int] = []
        try:
            for _ in range(2):
                read, write = os.pipe2(os.O_CLOEXEC)
                self.read_fds.append(read)
                self._write_fds.append(write)
                _enlarge_pipe(write)
        except BaseException:
            self.close()
            raise

    def child_fds(self) -> tuple[int, int]:
        """The write ends."""
        return self._write_fds[0], self._write_fds[1]

    def close_child_ends(self) -> None:
        """Close our copies of the write ends."""
        _close_all(self._write_fds)

    def close(self) -> None:
        """Close both ends of both pipes (the reader owns the read ends once it attached)."""
        _close_all(self._write_fds)
        _close_all(self.read_fds)


class CaptureFile:
    """One stream as an append-only regular file, read back from where we stopped.

    ``writers`` counts the open file descriptions that may write: 1 for the one the
    child gets, plus one per reopen by path, minus one per last close (inotify tells).
    It is only meaningful while ``counted``.
    """

    def __init__(self, name: str, spool_dir: str | None) -> None:
        self.name = name
        fd, path = tempfile.mkstemp(prefix=f"ccexec-{name}-", dir=spool_dir)
        self.child_fd: int | None = fd
        self.path: str | None = path
        self.read_fd = -1
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            # A second description, read and write (fallocate needs write access):
            # opened before any watch, so it never counts as the child's.
            self.read_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        self.offset = 0
        self.punched = 0
        self.can_punch = True
        self.writers = 1
        self.counted = False
        self.reopened = False
        """Somebody opened the file by path (any mode)."""
        self.rewritten = False
        """Somebody else than the child's own description wrote to it (seen at its close)."""
        self.wd: int | None = None
        self.listener: Callable[[], None] | None = None
        """Called when the file may have changed (the reader attaches it)."""
        self.held: collections.deque[Span] = collections.deque()
        """Spans cut and not yet released, in order: nothing from the first one's offset on
        is punched."""

    def wake(self) -> None:
        """Something happened to the file: let the reader look."""
        if self.listener is not None:
            self.listener()

    def unlink(self) -> None:
        """Remove the name: the file now lives as long as a descriptor holds it."""
        path, self.path = self.path, None
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes from where the last read stopped."""
        data = os.pread(self.read_fd, size, self.offset)
        self.offset += len(data)
        return data

    def line_span(self, limit: int) -> Span | None:
        """Whole lines from where the last read stopped, not read: up to ``limit`` bytes, cut
        after the last newline of the window's last SPAN_LOOK bytes (so never inside a
        character); None when there is nothing, no such newline, or the file was reopened."""
        if self.reopened or self.read_fd < 0:
            return None
        size = min(os.fstat(self.read_fd).st_size - self.offset, limit)
        if size <= 0:
            return None
        look = min(size, SPAN_LOOK)
        newline = os.pread(self.read_fd, look, self.offset + size - look).rfind(b"\n")
        if newline < 0:
            return None
        span = Span(self, self.offset, size - look + newline + 1)
        self.offset += span.length
        self.held.append(span)
        return span

    def read_span(self, span: Span, *, pad: bool = False) -> bytes:
        """The bytes of ``span`` (never punched while it is held). A file that ends inside it
        (truncated by a reopen) gives fewer, or with ``pad`` NUL bytes for the rest."""
        chunks, at, end = [], span.offset, span.offset + span.length
        while at < end:
            chunk = os.pread(self.read_fd, end - at, at)
            if not chunk:
                if pad:
                    chunks.append(bytes(end - at))
                break
            chunks.append(chunk)
            at += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def span_released(self, *, punch: bool = True) -> None:
        """A span was released: forget the released ones at the front; punch behind."""
        held = self.held
        while held and held[0].released:
            held.popleft()
        if punch:
            self.punch_behind()
        else:
            self.can_punch = False  # nothing more is punched: the file is closing

    def truncated(self) -> bool:
        """Whether the file is now shorter than what we read (a reopen with O_TRUNC)."""
        return os.fstat(self.read_fd).st_size < self.offset

    def restart(self) -> None:
        """Read again from the start: everything in the file came after the truncation."""
        self.offset = self.punched = 0

    def usage(self) -> tuple[int, int]:
        """(bytes of disk the file holds, bytes written and not yet read) now."""
        try:
            info = os.fstat(self.read_fd)
        except OSError:
            return 0, 0
        return info.st_blocks * 512, max(info.st_size - self.offset, 0)

    def punch_behind(self) -> None:
        """Give back the disk blocks of what was read, every ``PUNCH_EVERY`` bytes, never
        from the first held span on."""
        end = min(self.held[0].offset, self.offset) if self.held else self.offset
        end -= end % _PAGE
        if not self.can_punch or self.read_fd < 0 or end - self.punched < PUNCH_EVERY:
            return
        try:
            self.can_punch = punch_hole(self.read_fd, self.punched, end - self.punched)
        except OSError as exc:
            logger.warning("! [ENHANCED] cannot punch holes in the capture file: %s", exc)
            self.can_punch = False
        if self.can_punch:
            self.punched = end

    def close_child_end(self) -> None:
        """Close our copy of the child's descriptor."""
        fd, self.child_fd = self.child_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Close both descriptors and remove the name if still there."""
        self.close_child_end()
        self.unlink()
        fd, self.read_fd = self.read_fd, -1
        if fd >= 0:
            release(fd)


class FileOutput(ChildOutput):
    """stdout and stderr as two capture files, watched by the server's follower."""

    mode = "file"

    def __init__(self, follower: Follower, spool_dir: str | None) -> None:
        self.follower = follower
        self.files: list[CaptureFile] = []
        try:
            for name in ("stdout", "stderr"):
                capture = CaptureFile(name, spool_dir)
                self.files.append(capture)
                follower.watch(capture)  # before the child exists: every open is counted
                capture.unlink()
        except BaseException:
            self.close()
            raise

    def child_fds(self) -> tuple[int, int]:
        """The descriptors the child writes to."""
        out, err = (capture.child_fd for capture in self.files)
        assert out is not None and err is not None
        return out, err

    def close_child_ends(self) -> None:
        """Close our copies of the child's descriptors."""
        for capture in self.files:
            capture.close_child_end()

    def close(self) -> None:
        """Stop watching and close both files."""
        for capture in self.files:
            self.follower.forget(capture)
            capture.close()


class Follower:
    """Tells capture files when they change: one inotify instance per server, or a timer.

    The instance is made on first use (on the running loop) and kept until
    :meth:`close`. Where inotify is unavailable, or a file cannot be watched, the file
    is polled every ``poll_interval`` seconds and nobody counts its writers.
    """

    def __init__(self, *, poll_interval: float = POLL_INTERVAL, use_inotify: bool = True) -> None:
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify
        self._inotify: Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: dict[int, CaptureFile] = {}
        self._polled: set[CaptureFile] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.overflows = 0

    def watch(self, capture: CaptureFile) -> None:
        """Follow ``capture`` (its path must still exist); counts its writers if it can."""
        self._loop = asyncio.get_running_loop()
        inotify = self._instance()
        if inotify is not None:
            try:
                capture.wd = inotify.add_watch(capture.path or "", _WATCH)
            except OSError as exc:
                logger.warning("! [ENHANCED] cannot watch a capture file (%s): polling it", exc)
            else:
                capture.counted = True
                self._watched[capture.wd] = capture
                return
        self._polled.add(capture)
        self._schedule_poll()

    def forget(self, capture: CaptureFile) -> None:
        """Stop following ``capture``."""
        self._polled.discard(capture)
        if capture.wd is not None and self._inotify is not None:
            self._watched.pop(capture.wd, None)
            self._inotify.remove_watch(capture.wd)
        capture.wd = None
        capture.listener = None

    def close(self) -> None:
        """Drop the inotify instance and the timer (the server is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        inotify, self._inotify = self._inotify, None
        if inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(inotify.fd)
            inotify.close()
        self._watched.clear()
        self._polled.clear()

    def _instance(self) -> Inotify | None:
        if self._inotify is None and self.use_inotify:
            try:
                self._inotify = Inotify()
            except OSError as exc:
                logger.warning("! [ENHANCED] inotify unavailable (%s): capture files are polled", exc)
                self.use_inotify = False
                return None
            assert self._loop is not None
            self._loop.add_reader(self._inotify.fd, self._on_events)
        return self._inotify

    def _on_events(self) -> None:
        assert self._inotify is not None
        changed: dict[int, CaptureFile] = {}
        for wd, mask in self._inotify.read_events():
            if mask & IN_Q_OVERFLOW:
                self._overflowed()
                continue
            capture = self._watched.get(wd)
            if capture is None:
                continue
            if mask & IN_OPEN:
                capture.writers += 1
                capture.reopened = True
            if mask & IN_CLOSE_WRITE and capture.writers >= 2:
                capture.rewritten = True  # two descriptions wrote: one came by path
            if mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
                capture.writers -= 1
            changed[wd] = capture
        for capture in changed.values():
            capture.wake()

    def _overflowed(self) -> None:
        """Events were lost: no count can be trusted any more; everybody looks now."""
        self.overflows += 1
        logger.warning("! [ENHANCED] inotify queue overflow: capture ends decided by the runs")
        for capture in list(self._watched.values()):
            capture.counted = False
            capture.wake()

    def _schedule_poll(self) -> None:
        if self._timer is None and self._polled and self._loop is not None:
            self._timer = self._loop.call_later(self.poll_interval, self._poll)

    def _poll(self) -> None:
        self._timer = None
        for capture in list(self._polled):
            capture.wake()
        self._schedule_poll()


def _enlarge_pipe(fd: int) -> None:
    """Grow a pipe so a bursty child rarely finds it full (Linux only; best effort)."""
    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setter is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setter, PIPE_SIZE)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
