"""Anonymous temporary files and whole-buffer positional I/O (spool and replay log)."""

from __future__ import annotations

import os
import tempfile

_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16

__all__ = ["anonymous_file", "pread_all", "pwritev_all"]


def anonymous_file(prefix: str, directory: str | None) -> int:
    """A new temporary file already unlinked: it vanishes with its descriptor."""
    fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.unlink(path)
    return fd


def pwritev_all(fd: int, buffers: list[bytes], offset: int) -> int:
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
