"""Anonymous temporary files and whole-buffer positional I/O (spool and replay log)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Sequence

RELEASE_IN_THREAD = 8 << 20
"""Files at least this big are closed in a worker thread (see ``release``)."""

_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16

__all__ = ["anonymous_file", "append_all", "pread_all", "pwritev_all", "release"]


def anonymous_file(prefix: str, directory: str | None) -> int:
    """A new temporary file already unlinked: it vanishes with its descriptor."""
    fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.unlink(path)
    return fd


def append_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the end of a file opened with ``O_APPEND`` (short writes are retried)."""
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def pwritev_all(fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
    """Write the buffers one after another from ``offset``, without joining them first.

    Returns the number of bytes written (all of them; short writes are retried).
    """
    total = 0
    pending = [memoryview(buffer) for buffer in buffers if buffer]
    while pending:
        written = os.pwritev(fd, pending[:_IOV_MAX], offset + total)
        total += written
        while pending and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if written:
            pending[0] = pending[0][written:]
    return total


def pread_all(fd: int, size: int, offset: int) -> memoryview:
    """Read exactly ``size`` bytes at ``offset``; OSError if the file ends first."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return memoryview(data)
    view = memoryview(bytearray(size))
    view[: len(data)] = data
    done = len(data)
    while done < size:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(f"file ended {size - done} bytes early")
        done += got
    return view


def release(fd: int) -> None:
    """Close a temporary file; a big one in a worker thread.

    The last close of an unlinked file frees its blocks, which for hundreds of MiB takes
    tens of milliseconds: on the event loop, that would hold up every heartbeat.
    """
    try:
        big = os.fstat(fd).st_size >= RELEASE_IN_THREAD
    except OSError:
        big = False
    if big:
        threading.Thread(target=_close_quietly, args=(fd,), name="ccexec-release", daemon=True).start()
    else:
        _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
