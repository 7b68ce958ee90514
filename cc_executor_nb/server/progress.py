"""Progress estimation for a run: from a target (the prompt's own), or from history.

Bases, best first:

- ``"prompt:words"`` (or ``items``, ``haikus``, ``lines``): the run has a target of N of
  something, found in its arguments ("write a 5000 word story", "list 20 items") or
  given by the client in ``execute`` (``progress_target``), and the output so far is
  counted against N. A client that interprets the output itself (the Claude interpreter
  counts the answer, not the stream-json around it) sends ``progress_target: null``:
  the server then counts nothing and knows nothing of Claude.
- ``"history"``: the same command (argv and cwd, fingerprinted) completed successfully
  at least ``MIN_HISTORY`` times before; the median duration gives the fraction and
  the ETA. Kept in an SQLite database in the user's cache directory. A corrupt, locked
  or unwritable database means no estimate, never a failure.
- ``"none"``: no estimate, and no fake bar: ``fraction`` and ``eta_seconds`` are null.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import stat
import statistics
import time
from pathlib import Path
from typing import Any

from ..protocol import FROM_ARGUMENTS
from ..targets import Progress, Target, progress_toward, prompt_target

__all__ = [
    "MIN_HISTORY",
    "HistoryStore",
    "ProgressEstimator",
    "default_history_path",
    "fingerprint",
]

logger = logging.getLogger("cc_executor_nb.progress")

MIN_HISTORY = 3


def fingerprint(argv: list[str], cwd: str | None, given: bytes | None = None) -> str:
    """A stable key for "the same command" (argv and working directory, and ``given``: the
    whole input of a run whose stdin is only that, ``execute``'s ``input``)."""
    key: list[object] = [argv, cwd or ""]
    if given is not None:
        key.append(hashlib.sha256(given).hexdigest())
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


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

    def _create(self) -> None:
        """Make the file, the owner's alone (0600 in a 0700 folder), if it is missing; one
        that others may read (an earlier version's: 0644) is made the owner's alone.

        Its fingerprints confirm a guessed command, and its times say when the user ran
        what: no reason for other users to read it (sqlite would make it 0644). SQLite's
        journal files take the database's mode.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            if mode & 0o077:
                with contextlib.suppress(OSError):  # not ours to change: it is still read
                    os.chmod(self.path, mode & 0o700)

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        db = None
        try:
            self._create()
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

    def __init__(
        self, argv: list[str], history: list[float] | None = None, target: Target | Any | None = FROM_ARGUMENTS
    ) -> None:
        self.target: Target | None = prompt_target(argv[1:]) if target is FROM_ARGUMENTS else target
        self._plain: list[str] = []
        self._history = sorted(history or [])
        self._first_output: float | None = None

    def feed(self, stream: str, text: str, now: float) -> None:
        """Take a piece of the run's output."""
        if stream != "stdout" or self.target is None:
            return
        if self._first_output is None:
            self._first_output = now
        self._plain.append(text)

    def estimate(self, elapsed: float, now: float, finished: bool = False) -> Progress:
        """The best estimate available now."""
        if self.target is not None:
            self._plain = ["".join(self._plain)]
            return progress_toward(
                self.target, self._plain[0], first_output_at=self._first_output, now=now, finished=finished
            )
        if len(self._history) >= MIN_HISTORY:
            return self._from_history(elapsed, finished)
        return Progress()

    def _from_history(self, elapsed: float, finished: bool) -> Progress:
        expected = statistics.median(self._history)
        if finished:
            return Progress(1.0, 0.0, "history")
        fraction = min(elapsed / expected, 0.99) if expected > 0 else 0.99
        return Progress(round(fraction, 4), round(max(expected - elapsed, 0.0), 1), "history")
