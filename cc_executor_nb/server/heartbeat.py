"""The heartbeat schedule, as pure functions of numbers (tested without a clock or a socket).

``fixed`` mode: a beat every ``interval`` seconds. ``adaptive`` mode: a beat is skipped
when other traffic went out within the interval (traffic already proves liveness), and
while a run has been silent for a threshold or more the interval halves per threshold of
silence, down to ``minimum``, so the user sees life most when nothing else moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..protocol import MIN_INTERVAL

__all__ = ["MODES", "BeatPolicy"]

Mode = Literal["fixed", "adaptive"]
MODES: tuple[Mode, ...] = ("fixed", "adaptive")


@dataclass(frozen=True)
class BeatPolicy:
    """How one server schedules beats: its mode and the adaptive floor (seconds)."""

    mode: Mode = "fixed"
    minimum: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"heartbeat mode must be one of {MODES}, not {self.mode!r}")
        minimum = self.minimum
        if isinstance(minimum, bool) or not isinstance(minimum, (int, float)) or not math.isfinite(minimum):
            raise ValueError(f"min_heartbeat_interval must be a finite number of seconds, not {minimum!r}")
        if minimum < MIN_INTERVAL:
            # A floor of 0 would make a silent session beat in a busy loop.
            raise ValueError(f"min_heartbeat_interval must be at least {MIN_INTERVAL:g} s, not {minimum!r}")

    def interval(self, base: float, silence: float | None, threshold: float) -> float:
        """The interval now: ``base``, or halved per ``threshold`` of ``silence`` (adaptive).

        ``silence`` is None when no run is live.
        """
        if self.mode == "fixed" or silence is None or silence < threshold:
            return base
        halvings = 1 + int((silence - threshold) // threshold)
        # ldexp halves exactly and underflows to 0.0 where base / 2**halvings would overflow.
        return max(min(self.minimum, base), math.ldexp(base, -halvings))

    def due(self, interval: float, since_last_message: float) -> bool:
        """Whether to send the beat now (adaptive skips it after recent traffic)."""
        return self.mode == "fixed" or since_last_message >= interval * 0.999

    def next_wait(
        self, interval: float, *, previous: float, now: float, since_last_message: float, live: bool
    ) -> float:
        """When to look again, as an absolute time on the caller's clock.

        Fixed: one interval after the previous beat. Adaptive: one interval after the
        last message of any kind (what the client saw), and while a run is live at least
        every ``minimum`` seconds, since silence shortens the interval.
        """
        if self.mode == "fixed":
            return max(previous + interval, now)
        wait = max(interval - since_last_message, 0.0)
        if live:
            wait = min(wait, self.minimum)
        return now + wait
