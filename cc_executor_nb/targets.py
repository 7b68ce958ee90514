"""Progress against a target the prompt names ("a 5000 word story", "3 haikus", "20 items").

Pure: no I/O, no clock of its own. Shared by the server (which counts a plain command's
output) and the Claude interpreter on the kernel side (which counts the answer text,
not the stream-json around it), so the server never needs to know about Claude.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["UNITS", "Progress", "Target", "count_units", "progress_toward", "prompt_target", "target_from_wire"]

UNITS = ("word", "item", "haiku", "line")
_TARGET = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d{1,6})[\s-]*(words?|items?|haikus?|lines?)\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Progress:
    """A progress estimate as it travels in ``process.status`` and ``process.metrics``."""

    fraction: float | None = None
    eta_seconds: float | None = None
    basis: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"fraction": self.fraction, "eta_seconds": self.eta_seconds, "basis": self.basis}


@dataclass(frozen=True)
class Target:
    """What the prompt asks for: ``count`` of ``unit`` (word, item, haiku, line)."""

    count: int
    unit: str

    def to_dict(self) -> dict[str, Any]:
        """The wire form (``execute``'s ``progress_target``)."""
        return {"count": self.count, "unit": self.unit}


_MAX_DIGITS = 9
"""The longest count read as a target (999,999,999): a prompt may hold any text."""


def prompt_target(texts: list[str]) -> Target | None:
    """The last "N words/items/haikus/lines" among ``texts`` (later ones win), if any."""
    for text in reversed(texts):
        match = _TARGET.search(text)
        if match:
            digits = match.group(1).replace(",", "")
            if len(digits) > _MAX_DIGITS:  # no real target; and int() refuses 4300 digits
                return None
            count = int(digits)
            unit = match.group(2).lower().rstrip("s")
            return Target(count, unit) if count > 0 else None
    return None


def target_from_wire(value: Any) -> Target | None:
    """A :class:`Target` from ``{"count": N, "unit": U}``; ValueError when malformed."""
    if not isinstance(value, dict):
        raise ValueError("must be an object with count and unit, or null")
    count, unit = value.get("count"), value.get("unit")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError("count must be a positive integer")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}")
    return Target(count, str(unit))


RATE_WINDOW = 0.5
"""Seconds of output before its rate gives an ETA."""


def count_units(text: str, unit: str) -> int:
    """How many words, items, haikus or lines ``text`` holds."""
    if unit == "word":
        return len(text.split())
    if unit == "line":
        return sum(1 for line in text.splitlines() if line.strip())
    if unit == "item":
        return sum(1 for line in text.splitlines() if re.match(r"\s*(?:[-*+]|\d+[.)])\s+\S", line))
    blocks = [b for b in re.split(r"\n\s*\n", text) if len(b.strip().splitlines()) >= 3]
    return len(blocks)


def progress_toward(
    target: Target, text: str, *, first_output_at: float | None, now: float, finished: bool
) -> Progress:
    """How far ``text`` is toward ``target``, with an ETA from the rate since the first output."""
    done = count_units(text, target.unit)
    fraction = 1.0 if finished else min(done / target.count, 1.0)
    eta = None
    # A rate needs time to measure: the first piece of output alone made "ETA 0 s" at 20 %.
    if first_output_at is not None and done and not finished and now - first_output_at >= RATE_WINDOW:
        rate = done / (now - first_output_at)
        eta = round(max(target.count - done, 0) / rate, 1)
    return Progress(round(fraction, 4), eta, f"prompt:{target.unit}s")
