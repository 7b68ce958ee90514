"""The server's temporary disk, bounded: a limit per session and one for the whole server.

A session keeps three things on disk: its replay log (what was sent, for resume), its
run's capture files (what the child wrote and the server has not read yet: with a slow
client, what waits for it) and, for a run with ``capture="pipe"``, its output spool
(what waits for a slow client). Each
session's :class:`DiskUse` is told of every change; the :class:`DiskBudget` adds them
up. When a session, or the server as a whole, reaches its high mark (the limit less a
quarter of it, or less 48 MiB if that is more, up to half of it: room for what a
child writes in the moments the server takes to stop it), or the disk itself runs
low on free space:

1. the oldest replay is dropped (the session's own first, for a session limit; the
   oldest of any session, for the server limit), and that session is told with a
   ``process.notice``: resuming from before it then gets -32003 (never a silent gap);
2. if that is not enough, the growing run is *held*: its process group is stopped
   (SIGSTOP), as a full pipe would stop a writer, and told with a notice. It goes on
   (SIGCONT) once what cannot be dropped (its spool and capture files) is back under
   the low mark (half the high mark); replay is then dropped as needed to get the
   whole under it.

Nothing is ever dropped that the client has not received, and the disk never fills.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "DISK_WINDOW",
    "FILE_CAPTURE_ROOM",
    "FREE_SPACE_RESERVE",
    "HEADROOM",
    "DiskBudget",
    "DiskUse",
    "Replay",
    "high_mark",
    "limit_reached",
    "low_mark",
]

HEADROOM = 48 << 20
"""At least this much of a limit (up to half of it) is kept free for what a child writes
before it stops: a flood of 500 MB/s fills it in about 0.1 s of the server not running."""
FREE_SPACE_RESERVE = 256 << 20
"""Free bytes the spool directory's file system keeps whatever the limits say."""
DISK_WINDOW = 16 << 20
"""With less than the reserve free, how much output a run may have waiting on disk before
it is held (it goes on once the client has read all of it). Holding it until the disk has
room again instead froze it for good when that room was taken by something else."""
FILE_CAPTURE_ROOM = 2 * DISK_WINDOW
"""Free bytes under which a run not asking for a capture gets pipes: a capture file could
fill the disk before the run is held, and its child would get ENOSPC (output cut, and the
error saying so with it); a pipe holds the child instead."""
_FREE_SPACE_TTL = 0.5


def limit_reached(scope: str) -> str:
    """What a notice says of the limit ``scope`` ("session", "server" or "disk") reached."""
    if scope == "disk":
        return f"the spool directory's disk has less than {FREE_SPACE_RESERVE >> 20} MiB free"
    return f"the {scope} disk limit is reached"


def high_mark(limit: int) -> int:
    """Bytes at which replay is dropped, then the run held."""
    return limit - min(max(limit // 4, HEADROOM), limit // 2)


def low_mark(limit: int) -> int:
    """Bytes under which a held run goes on."""
    return high_mark(limit) // 2


class Replay(Protocol):
    """What the budget needs of a replay log."""

    @property
    def size(self) -> int:
        """Bytes kept."""
        ...

    @property
    def first_seq(self) -> int:
        """The oldest seq still available."""
        ...

    @property
    def segments(self) -> int:
        """How many parts are kept (the last one is being written)."""
        ...

    @property
    def oldest_at(self) -> float | None:
        """When the oldest kept part was written (monotonic), None when empty."""
        ...

    def drop_oldest(self, *, complete_only: bool = False) -> bool:
        """Drop the oldest part (not the one being written with ``complete_only``)."""
        ...


class DiskUse:
    """One session's share of the budget: replay, spool and capture, in bytes.

    The session fills in the hooks: ``replay`` (its log), and while a run goes,
    ``hold`` and ``release`` (stop and continue the run's group, telling the client),
    and ``replay_dropped(first_available_seq, scope)`` (tell the client).
    """

    def __init__(self, budget: DiskBudget) -> None:
        self.budget = budget
        self.used = 0
        self.held: str | None = None
        """Why the run is held ("session", "server" or "disk"), None while it is not."""
        self.replay: Replay | None = None
        self.hold: Callable[[str], None] | None = None
        self.release: Callable[[], None] | None = None
        self.replay_dropped: Callable[[int, str], None] | None = None

    def change(self, delta: int) -> None:
        """``delta`` bytes more (or fewer) on disk."""
        self.used += delta
        self.budget.changed(self, delta)

    def out_of_space(self) -> None:
        """A write of this session's failed for want of space: hold its run; it goes on
        once it has nothing unread on disk (see :meth:`DiskBudget.changed`)."""
        if self.held is None and self.hold is not None:
            self.held = "disk"
            self.hold("disk")

    def run_ended(self) -> None:
        """The run is over: forget its hooks (its process is gone)."""
        self.hold = self.release = None
        self.held = None

    def close(self) -> None:
        """The session ended and dropped its files."""
        self.run_ended()
        self.budget.forget(self)


class DiskBudget:
    """Every session's use, against ``session_limit`` each and ``limit`` together.

    ``None`` means no limit of that kind (the free-space reserve still holds).
    """

    def __init__(
        self,
        limit: int | None = None,
        session_limit: int | None = None,
        spool_dir: str | None = None,
        *,
        reserve: int = FREE_SPACE_RESERVE,
    ) -> None:
        self.limit = limit
        self.session_limit = session_limit
        self.spool_dir = spool_dir
        self.reserve = reserve
        self.used = 0
        self.peak = 0
        self.uses: set[DiskUse] = set()
        self._free_checked_at = -_FREE_SPACE_TTL
        self._free: int | None = None
        self._busy = False

    def use(self) -> DiskUse:
        """A new session's share."""
        use = DiskUse(self)
        self.uses.add(use)
        return use

    def forget(self, use: DiskUse) -> None:
        """Drop a session's share (its files are gone)."""
        if use in self.uses:
            self.uses.discard(use)
            self.changed(use, -use.used)
            use.used = 0

    def changed(self, use: DiskUse, delta: int) -> None:
        """A session's use changed by ``delta``: relieve pressure or release held runs."""
        self.used += delta
        if delta > 0:
            self.peak = max(self.peak, self.used)
        if self._busy:
            return  # a drop made by the budget itself: it goes on checking
        self._busy = True
        try:
            if delta > 0:
                scope = self._over(use, "high")
                if scope is not None:
                    self._relieve(use, scope)
            elif any(other.held for other in self.uses):
                self._release_held()
        finally:
            self._busy = False

    def _over(self, use: DiskUse, mark: str, *, soft: bool = True) -> str | None:
        """Which limit ``use`` is at its ``mark`` ("high" or "low") of: "session",
        "server", "disk" or None. With ``soft=False`` replay is not counted (it can
        always be dropped)."""
        at = high_mark if mark == "high" else low_mark
        if self.session_limit is not None and use.used - (
            0 if soft else _replay_size(use)
        ) >= at(self.session_limit):
            return "session"
        if self.limit is not None:
            droppable = 0 if soft else sum(_replay_size(other) for other in self.uses)
            if self.used - droppable >= at(self.limit):
                return "server"
        if self._space_low(mark):
            return "disk"
        return None

    def _relieve(self, use: DiskUse, scope: str | None) -> None:
        """Over the high mark: drop whole old replay segments down to the low mark (so the
        next pressure is far off); if still over the high mark, hold the run."""
        dropped: dict[DiskUse, str] = {}
        low = self._over(use, "low")
        while low is not None:
            victim = use if low == "session" else self._oldest_replay(complete_only=True)
            if victim is None or victim.replay is None or not victim.replay.drop_oldest(complete_only=True):
                break
            dropped[victim] = low
            low = self._over(use, "low")
        _tell(dropped)
        scope = self._over(use, "high")
        if scope == "disk" and _unread(use) < DISK_WINDOW:
            return
        if scope is not None and use.held is None and use.hold is not None:
            use.held = scope
            use.hold(scope)

    def _oldest_replay(self, *, complete_only: bool = False) -> DiskUse | None:
        least = 2 if complete_only else 1
        kept = [
            use for use in self.uses
            if use.replay is not None and use.replay.oldest_at is not None and _segments(use) >= least
        ]
        return min(kept, key=lambda use: use.replay.oldest_at or 0.0, default=None)  # type: ignore[union-attr]

    def _release_held(self) -> None:
        for use in list(self.uses):
            if use.held is None or not self._may_go_on(use, soft=False):
                continue
            self._shed(use)
            if self._may_go_on(use):
                use.held = None
                if use.release is not None:
                    use.release()

    def _may_go_on(self, use: DiskUse, *, soft: bool = True) -> bool:
        """Whether a held ``use`` is under every low mark, or only the disk is short of
        free space and the client has read all the run wrote (holding it frees nothing)."""
        scope = self._over(use, "low", soft=soft)
        return scope is None or (scope == "disk" and _unread(use) == 0)

    def _shed(self, use: DiskUse) -> None:
        """Drop replay (the newest segment too) until ``use`` is under the low mark."""
        dropped: dict[DiskUse, str] = {}
        scope = self._over(use, "low")
        while scope in ("session", "server"):
            victim = use if scope == "session" else self._oldest_replay()
            if victim is None or victim.replay is None or not victim.replay.drop_oldest():
                break
            dropped[victim] = scope
            scope = self._over(use, "low")
        _tell(dropped)

    def room_for_files(self) -> bool:
        """Whether the spool's file system has FILE_CAPTURE_ROOM free (or cannot tell)."""
        self._space_low("high")  # refreshes the cached figure
        return self._free is None or self._free >= FILE_CAPTURE_ROOM

    def _space_low(self, mark: str) -> bool:
        """Whether the spool's file system has less than the reserve free (cached briefly)."""
        now = time.monotonic()
        if now - self._free_checked_at >= _FREE_SPACE_TTL:
            self._free_checked_at = now
            with contextlib.suppress(OSError):
                stats = os.statvfs(self.spool_dir or tempfile.gettempdir())
                self._free = stats.f_bavail * stats.f_frsize
        if self._free is None:
            return False
        # Under pressure the reserve must be met; to release, twice the reserve.
        return self._free < (self.reserve if mark == "high" else 2 * self.reserve)


def _replay_size(use: DiskUse) -> int:
    return use.replay.size if use.replay is not None else 0


def _unread(use: DiskUse) -> int:
    """Bytes of ``use`` that cannot be dropped: output the client has not read yet."""
    return use.used - _replay_size(use)


def _segments(use: DiskUse) -> int:
    return use.replay.segments if use.replay is not None else 0


def _tell(dropped: dict[DiskUse, str]) -> None:
    """Tell each session whose replay was dropped, once, with its first seq still kept."""
    for use, scope in dropped.items():
        if use.replay_dropped is not None and use.replay is not None:
            use.replay_dropped(use.replay.first_seq, scope)
