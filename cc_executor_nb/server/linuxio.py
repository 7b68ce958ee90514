"""Linux file primitives through ctypes: inotify, hole punching, and who holds a file;
``sendfile`` from a file to a socket.

Each has a portable way out that the caller chooses: :class:`Inotify` raises OSError
where inotify is missing (the caller then polls), :func:`punch_hole` returns False
where the file system cannot punch (the file then keeps its blocks until it is
closed), and :func:`holders_of` returns [] without ``/proc``. Nothing here runs on
import except looking up the C library.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct

__all__ = [
    "IN_CLOSE_NOWRITE",
    "IN_CLOSE_WRITE",
    "IN_IGNORED",
    "IN_MODIFY",
    "IN_OPEN",
    "IN_Q_OVERFLOW",
    "Inotify",
    "holders_of",
    "punch_hole",
    "sendfile_some",
]

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_CLOSE_NOWRITE = 0x010
IN_OPEN = 0x020
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - every Unix has a C library in the process
    _LIBC = None


def _function(name: str, *argtypes: type) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    """A C library function, or OSError(ENOSYS) where this system has none."""
    function = getattr(_LIBC, name, None)
    if function is None:
        raise OSError(errno.ENOSYS, f"{name} is not available on this system")
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


def _checked(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class Inotify:
    """One non-blocking inotify instance; give ``fd`` to ``loop.add_reader``.

    Raises OSError when inotify is unavailable (not Linux) or exhausted (EMFILE: the
    per-user instance limit).
    """

    def __init__(self) -> None:
        init = _function("inotify_init1", ctypes.c_int)
        self._add = _function("inotify_add_watch", ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._remove = _function("inotify_rm_watch", ctypes.c_int, ctypes.c_int)
        self.fd = _checked(init(os.O_NONBLOCK | os.O_CLOEXEC))

    def add_watch(self, path: str, mask: int) -> int:
        """Watch the file at ``path`` (its inode: the watch outlives an unlink); the wd."""
        return _checked(self._add(self.fd, os.fsencode(path), mask))

    def remove_watch(self, wd: int) -> None:
        """Stop watching (a watch already gone is fine)."""
        self._remove(self.fd, wd)

    def read_events(self) -> list[tuple[int, int]]:
        """Every pending event as ``(wd, mask)``; [] when none is pending."""
        try:
            buffer = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events, position = [], 0
        while position + _EVENT.size <= len(buffer):
            wd, mask, _cookie, length = _EVENT.unpack_from(buffer, position)
            events.append((wd, mask))
            position += _EVENT.size + length
        return events

    def close(self) -> None:
        """Close the instance (every watch goes with it)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the blocks of ``[offset, offset + length)``, keeping the file's size.

    Returns False where the system or file system cannot punch holes (the caller
    stops trying); other errors raise OSError.
    """
    if length <= 0:
        return True
    try:
        fallocate = _function("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    except OSError:
        return False
    if fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code))


def sendfile_some(out_fd: int, in_fd: int, offset: int, count: int) -> int:
    """Send up to ``count`` bytes of file ``in_fd`` from ``offset`` to the non-blocking socket
    ``out_fd``, without reading them: as much as the socket takes now (0 when it is full or
    ``sendfile`` cannot be used here; the caller writes the rest itself)."""
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(out_fd, in_fd, offset + sent, count - sent)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                break  # not for this file or socket: the caller writes it all
            raise
        if n == 0:
            break
        sent += n
    return sent


def holders_of(fd: int) -> list[int]:
    """Pids of other processes that hold the file (or pipe) behind ``fd`` open.

    Scans ``/proc/*/fd`` (Linux; only processes we may inspect, which includes all
    our children): a few milliseconds for a hundred processes, so callers on an
    event loop run it in a worker thread. [] where there is no ``/proc``.
    """
    try:
        info = os.fstat(fd)
        names = os.listdir("/proc")
    except OSError:
        return []
    key, me = (info.st_dev, info.st_ino), os.getpid()
    return [int(name) for name in names if name.isdigit() and int(name) != me and _holds(name, key)]


def _holds(pid: str, key: tuple[int, int]) -> bool:
    base = f"/proc/{pid}/fd"
    try:
        entries = os.listdir(base)
    except OSError:
        return False
    for entry in entries:
        with contextlib.suppress(OSError):
            found = os.stat(f"{base}/{entry}")
            if (found.st_dev, found.st_ino) == key:
                return True
    return False
