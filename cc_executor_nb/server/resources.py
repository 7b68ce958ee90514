"""CPU, memory and process counts per process group, sampled without blocking the loop.

One sampler serves every run: a single walk of the process table (in a worker thread)
yields the figures of all watched groups at once, so a hundred runs cost one scan, not
a hundred. ``cpu_percent`` is measured between two samples of the same process, as
psutil does, so the first sample of a new process reads 0. A group found empty is no
longer watched (asked about again, it is watched again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import psutil

__all__ = ["ResourceSampler", "empty_resources"]


def empty_resources() -> dict[str, Any]:
    """The figures of a group with nothing left in it."""
    return {"cpu_percent": 0.0, "rss_bytes": 0, "num_processes": 0}


class ResourceSampler:
    """Latest resource figures per process group, refreshed at most every ``max_age`` s."""

    def __init__(self, max_age: float = 0.5) -> None:
        self.max_age = max_age
        self._procs: dict[int, psutil.Process] = {}
        self._latest: dict[int, dict[str, Any]] = {}
        self._taken_at = 0.0
        self._lock = asyncio.Lock()
        self.watched: set[int] = set()

    async def figures(self, pgid: int) -> dict[str, Any]:
        """Resources of ``pgid`` (sampling again if the last sample is too old)."""
        self.watched.add(pgid)
        async with self._lock:
            if time.monotonic() - self._taken_at > self.max_age or pgid not in self._latest:
                self._latest = await asyncio.to_thread(self.sample, set(self.watched))
                self._taken_at = time.monotonic()
                # A group found empty ended with its run: nothing forgets it otherwise, and
                # every later sample of a long-lived server would carry every group it ever ran.
                self.watched -= {group for group, entry in self._latest.items() if not entry["num_processes"]}
        return dict(self._latest.get(pgid) or empty_resources())

    def sample(self, pgids: set[int]) -> dict[int, dict[str, Any]]:
        """One walk of the process table (blocking)."""
        figures = {pgid: empty_resources() for pgid in pgids}
        seen: dict[int, psutil.Process] = {}
        for pid in psutil.pids():
            with contextlib.suppress(psutil.Error, OSError):
                pgid = os.getpgid(pid)
                if pgid not in figures:
                    continue
                proc = self._procs.get(pid) or psutil.Process(pid)
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu, rss = proc.cpu_percent(None), proc.memory_info().rss
                seen[pid] = proc
                entry = figures[pgid]
                entry["cpu_percent"] = round(entry["cpu_percent"] + cpu, 1)
                entry["rss_bytes"] += rss
                entry["num_processes"] += 1
        self._procs = seen
        return figures
