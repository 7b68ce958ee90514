"""Progress estimation for a run: from the prompt's own target, or from history.

Bases, best first:

- ``"prompt:words"`` (or ``items``, ``haikus``, ``lines``): the prompt asks for N of
  something ("write a 5000 word story", "list 20 items") and the output so far is
  counted against N. For ``claude`` stream-json runs the answer text is counted, not
  the JSON around it.
- ``"history"``: the same command (argv and cwd, fingerprinted) completed successfully
  at least ``MIN_HISTORY`` times before; the median duration gives the fraction and
  the ETA. Kept in an SQLite database in the user's cache directory. A corrupt, locked
  or unwritable database means no estimate, never a failure.
- ``"none"``: no estimate, and no fake bar: ``fraction`` and ``eta_seconds`` are null.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..claude.streamjson import ClaudeRun

__all__ = [
    "MIN_HISTORY",
    "HistoryStore",
    "Progress",
    "ProgressEstimator",
    "Target",
    "default_history_path",
    "fingerprint",
    "prompt_target",
]

logger = logging.getLogger("cc_executor_nb.server.progress")

MIN_HISTORY = 3
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
    """What the prompt asks for: ``count`` of ``unit`` (words, items, haikus, lines)."""

    count: int
    unit: str


def prompt_target(argv: list[str]) -> Target | None:
    """The first "N words/items/haikus/lines" in the arguments, if any."""
    for arg in reversed(argv[1:]):
        match = _TARGET.search(arg)
        if match:
            count = int(match.group(1).replace(",", ""))
            unit = match.group(2).lower().rstrip("s")
            return Target(count, unit) if count > 0 else None
    return None


def _is_stream_json(argv: list[str]) -> bool:
    return os.path.basename(argv[0]) == "claude" and "stream-json" in argv


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


def fingerprint(argv: list[str], cwd: str | None) -> str:
    """A stable key for "the same command" (argv and working directory)."""
    return hashlib.sha256(json.dumps([argv, cwd or ""]).encode()).hexdigest()


def default_history_path() -> Path:
    """``$XDG_CACHE_HOME/cc_executor_nb/history.sqlite3`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cc_executor_nb" / "history.sqlite3"


class HistoryStore:
    """Durations and output sizes of earlier successful runs, per command fingerprint.

    Every method is blocking (call it from a thread) and swallows database errors:
    history is a hint, never a reason for a run to fail.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def record(self, key: str, duration: float, output_bytes: int) -> None:
        """Remember one successful run."""
        self._run(
            "INSERT INTO runs (key, finished, duration, output_bytes) VALUES (?, ?, ?, ?)",
            (key, time.time(), duration, output_bytes),
        )

    def durations(self, key: str, limit: int = 20) -> list[float]:
        """Durations of the latest runs of ``key`` (empty when unknown or unreadable)."""
        rows = self._run(
            "SELECT duration FROM runs WHERE key = ? ORDER BY finished DESC LIMIT ?", (key, limit)
        )
        return [float(row[0]) for row in rows]

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=0.2)
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs "
                "(key TEXT, finished REAL, duration REAL, output_bytes INTEGER)"
            )
            rows = db.execute(sql, args).fetchall()
            db.commit()
            return rows
        except (sqlite3.Error, OSError) as exc:
            logger.info("! progress history unavailable (%s): no estimate", exc)
            return []
        finally:
            if db is not None:
                db.close()


class ProgressEstimator:
    """Follows one run's output and estimates how far along it is."""

    def __init__(self, argv: list[str], history: list[float] | None = None) -> None:
        self.target = prompt_target(argv)
        self._claude = ClaudeRun() if _is_stream_json(argv) else None
        self._plain: list[str] = []
        self._history = sorted(history or [])
        self._first_output: float | None = None

    def feed(self, stream: str, text: str, now: float) -> None:
        """Take a piece of the run's output."""
        if stream != "stdout" or self.target is None:
            return
        if self._first_output is None:
            self._first_output = now
        if self._claude is not None:
            self._claude.feed(text)
        else:
            self._plain.append(text)

    def estimate(self, elapsed: float, now: float, finished: bool = False) -> Progress:
        """The best estimate available now."""
        if self.target is not None:
            return self._from_target(now, finished)
        if len(self._history) >= MIN_HISTORY:
            return self._from_history(elapsed, finished)
        return Progress()

    def _text(self) -> str:
        if self._claude is not None:
            return self._claude.answer if self._claude.result is not None else self._claude.text
        self._plain = ["".join(self._plain)]
        return self._plain[0]

    def _from_target(self, now: float, finished: bool) -> Progress:
        assert self.target is not None
        done = count_units(self._text(), self.target.unit)
        fraction = 1.0 if finished else min(done / self.target.count, 1.0)
        eta = None
        if self._first_output is not None and done and not finished:
            rate = done / max(now - self._first_output, 1e-3)
            eta = round(max(self.target.count - done, 0) / rate, 1)
        return Progress(round(fraction, 4), eta, f"prompt:{self.target.unit}s")

    def _from_history(self, elapsed: float, finished: bool) -> Progress:
        expected = statistics.median(self._history)
        if finished:
            return Progress(1.0, 0.0, "history")
        fraction = min(elapsed / expected, 0.99) if expected > 0 else 0.99
        return Progress(round(fraction, 4), round(max(expected - elapsed, 0.0), 1), "history")
