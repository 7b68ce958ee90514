"""Typed views of the server's notifications (pure; no I/O)."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import methods

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "Cancelled",
    "Completed",
    "Connected",
    "Event",
    "Heartbeat",
    "Output",
    "Paused",
    "ProcessError",
    "Resumed",
    "Started",
    "StatusUpdate",
    "exit_words",
    "make_event",
    "stopping_signal",
]


#: Statuses of a run in which a child process is alive and may be controlled.
ACTIVE_STATUSES: frozenset[str] = frozenset({"running", "thinking", "paused"})
#: Statuses after which a run will not produce anything more worth showing.
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "timeout", "error", "detached"})


def stopping_signal(exit_code: int, status: str | None = None) -> str | None:
    """The signal that ended a run, as ``SIGTERM``, or None for a plain exit.

    A negative exit code is the signal the process died of (-15). A run we stopped
    (``cancelled``, ``timeout``) whose process caught the signal and exited with the shell's
    128 + n (the claude CLI: 143) was ended by the same signal: both read ``SIGTERM``."""
    if exit_code < 0:
        number = -exit_code
    elif status in ("cancelled", "timeout") and 128 < exit_code < 128 + signal.NSIG:
        number = exit_code - 128
    else:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_words(exit_code: int, status: str | None = None) -> str:
    """How a run's end reads beside its status: ``exit code 3``, or ``killed by SIGTERM``
    (for -15, and for 143 from a run we stopped; :attr:`Completed.exit_code` keeps the number)."""
    name = stopping_signal(exit_code, status)
    return f"exit code {exit_code}" if name is None else f"killed by {name}"


@dataclass(frozen=True)
class Event:
    """A notification from the server: its method and params."""

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def seq(self) -> int | None:
        """The run-related sequence number (None for heartbeats and ``connected``)."""
        seq = self.params.get("seq")
        return seq if isinstance(seq, int) else None


class Connected(Event):
    """``connected``: the session is open."""

    @property
    def session_id(self) -> str:
        """The server's id for this session."""
        return str(self.params.get("session_id", ""))

    @property
    def capabilities(self) -> list[str]:
        """What the server supports (e.g. ``"resume"``)."""
        return list(self.params.get("capabilities") or [])

    @property
    def max_message_size(self) -> int | None:
        """The largest frame the server takes, in bytes (None: an older server, which does
        not say)."""
        value = self.params.get("max_message_size")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class Heartbeat(Event):
    """``heartbeat``: the server is alive."""

    @property
    def last_seq(self) -> int:
        """The seq of the last run notification sent before this beat."""
        return int(self.params.get("last_seq") or 0)


class Started(Event):
    """``process.started``."""

    @property
    def pid(self) -> int:
        """The child's pid."""
        return int(self.params.get("pid") or 0)


class Output(Event):
    """``process.output``: a piece of stdout or stderr."""

    @property
    def stream(self) -> str:
        """"stdout" or "stderr"."""
        return str(self.params.get("type", "stdout"))

    @property
    def data(self) -> str:
        """The text."""
        data = self.params.get("data", "")
        return data if isinstance(data, str) else str(data)


class StatusUpdate(Event):
    """``process.status``: the child has been silent a while."""

    @property
    def inactive_seconds(self) -> float:
        """Seconds since the child last wrote anything."""
        return float(self.params.get("inactive_seconds") or self.params.get("no_output_for") or 0)


class Paused(Event):
    """``process.paused``."""


class Resumed(Event):
    """``process.resumed``."""


class Cancelled(Event):
    """``process.cancelled``: cancellation started; ``process.completed`` follows."""


class Completed(Event):
    """``process.completed``: the run is over and all output was sent."""

    @property
    def status(self) -> str:
        """completed, failed, cancelled or timeout."""
        return str(self.params.get("status", "failed"))

    @property
    def exit_code(self) -> int | None:
        """Exit code; negative signal number when killed."""
        code = self.params.get("exit_code")
        return code if isinstance(code, int) else None


class ProcessError(Event):
    """``process.error``: the server's own machinery failed."""


_TYPES: dict[str, type[Event]] = {
    methods.CONNECTED: Connected,
    methods.HEARTBEAT: Heartbeat,
    methods.PROCESS_STARTED: Started,
    methods.PROCESS_OUTPUT: Output,
    methods.PROCESS_STATUS: StatusUpdate,
    methods.PROCESS_PAUSED: Paused,
    methods.PROCESS_RESUMED: Resumed,
    methods.PROCESS_CANCELLED: Cancelled,
    methods.PROCESS_COMPLETED: Completed,
    methods.PROCESS_ERROR: ProcessError,
}


def make_event(method: str, params: Mapping[str, Any]) -> Event:
    """The typed event for a notification (plain ``Event`` for unknown methods)."""
    return _TYPES.get(method, Event)(method, params)
