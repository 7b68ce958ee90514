"""The heartbeat schedule as numbers: fixed and adaptive intervals, skips, next looks."""

from __future__ import annotations

import pytest

from cc_executor_nb.server.heartbeat import BeatPolicy

FIXED = BeatPolicy("fixed", 1.0)
ADAPTIVE = BeatPolicy("adaptive", 1.0)


def test_fixed_mode_ignores_silence() -> None:
    """Fixed: the base interval whatever the silence."""
    assert FIXED.interval(20.0, 500.0, 30.0) == 20.0


@pytest.mark.parametrize(
    ("silence", "expected"),
    [(None, 20.0), (10.0, 20.0), (30.0, 10.0), (59.0, 10.0), (60.0, 5.0), (90.0, 2.5), (10_000.0, 1.0)],
)
def test_adaptive_interval_halves_per_threshold_of_silence(silence: float | None, expected: float) -> None:
    """Adaptive: halved once per threshold (30 s) of silence, never below the minimum."""
    assert ADAPTIVE.interval(20.0, silence, 30.0) == expected


def test_adaptive_minimum_never_raises_a_short_base() -> None:
    """A base interval below the floor stays as short as it was."""
    assert ADAPTIVE.interval(0.5, 100.0, 1.0) == 0.5


def test_adaptive_skips_a_beat_after_recent_traffic() -> None:
    """A message sent 2 s ago already proved liveness for a 5 s interval."""
    assert ADAPTIVE.due(5.0, since_last_message=2.0) is False
    assert ADAPTIVE.due(5.0, since_last_message=5.0) is True
    assert FIXED.due(5.0, since_last_message=0.0) is True


def test_fixed_next_beat_is_one_interval_after_the_previous() -> None:
    """Fixed: previous + interval (never in the past)."""
    assert FIXED.next_wait(20.0, previous=100.0, now=101.0, since_last_message=0.0, live=True) == 120.0
    assert FIXED.next_wait(20.0, previous=100.0, now=130.0, since_last_message=0.0, live=True) == 130.0


def test_adaptive_next_look_counts_from_the_last_message_and_the_floor() -> None:
    """Adaptive: interval after the last message; while live, at least every minimum."""
    idle = ADAPTIVE.next_wait(20.0, previous=0.0, now=100.0, since_last_message=5.0, live=False)
    live = ADAPTIVE.next_wait(20.0, previous=0.0, now=100.0, since_last_message=5.0, live=True)
    assert (idle, live) == (115.0, 101.0)
