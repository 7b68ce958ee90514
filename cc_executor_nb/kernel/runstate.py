"""The state of one run, as a plain object driven by protocol notifications.

:class:`RunState` knows nothing about widgets, sockets or event loops. The owner
feeds it every server notification with :meth:`RunState.apply`, passing the
method name, the params and the current time (any monotonic clock; the state
only ever subtracts two of these values). Views read the state and the pure
helpers below; they never change it.

A conversation with an interactive CLI (several turns in one process) adds local
``conversation.*`` events: a turn's end sets the status to ``completed`` (or
``failed``, ``cancelled``) while the process stays :attr:`RunState.alive`;
:attr:`RunState.finished` means the process is gone too.

Example::

    state = RunState()
    state.apply(methods.PROCESS_STARTED, {"pid": 7, "pgid": 7, "argv": ["ls"], "seq": 1}, now=0.0)
    state.apply(methods.PROCESS_OUTPUT, {"type": "stdout", "data": "a\\n", "seq": 2}, now=0.5)
    assert state.stdout == "a\\n"
    assert inactive_for(state, now=3.0) == 2.5
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal, NamedTuple

from .. import methods
from ..claude.render import format_duration as format_milliseconds
from ..events import ACTIVE_STATUSES, FINAL_STATUSES
from .output import OutputStore

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "STOPPED_WORDS",
    "Health",
    "RunState",
    "Status",
    "Stream",
    "Tail",
    "elapsed",
    "escaped_note",
    "format_duration",
    "format_took",
    "heartbeat_health",
    "inactive_for",
    "next_beat_in",
    "turn_took_text",
]

Status = Literal[
    "starting",
    "running",
    "thinking",
    "paused",
    "completed",
    "failed",
    "cancelled",
    "timeout",
    "reconnecting",
    "error",
    "detached",
]
Stream = Literal["stdout", "stderr"]
Health = Literal["ok", "overdue", "lost", "waiting"]

_COMPLETION_STATUSES = frozenset({"completed", "failed", "cancelled", "timeout"})
_TURN_STATUSES = frozenset({"running", "completed", "failed", "cancelled"})
# Events made on this side (the client's, a conversation's): they prove nothing about the server.
_LOCAL_PREFIXES = ("client.", "conversation.")

STOPPED_WORDS = "stopped (SIGSTOP/SIGTSTP)"
"""How a silence is said while the process is stopped by a signal not of ours."""

# Heartbeat thresholds, in heartbeat intervals.
OVERDUE_AFTER = 1.5
LOST_AFTER = 3.0


class Tail(NamedTuple):
    """The last output pieces that fit a character budget."""

    pieces: list[tuple[str, str]]
    """``(stream, text)`` pairs in output order; the first one may be cut at its start."""
    cut_chars: int
    """How many earlier characters were left out (0 when everything fits)."""

    @property
    def cut(self) -> bool:
        """Whether anything was left out."""
        return self.cut_chars > 0


HISTORY = 60
"""How many resource samples a RunState keeps for the sparkline."""

@dataclass
class RunState:
    """Everything a view needs to show one run, updated by :meth:`apply`.

    Times (``*_at``) are values of the caller's clock passed as ``now``.
    Notifications carrying a ``seq`` not above :attr:`last_seq` are replays of
    ones already applied and are ignored, so applying a resumed stream twice is
    harmless.
    """

    status: Status = "starting"
    pid: int | None = None
    pgid: int | None = None
    argv: list[str] | None = None
    exit_code: int | None = None
    error: str | None = None
    turn_error: bool = False
    """The error is a conversation's last turn's own (Claude's message): a record shows it
    once, with that turn, not again beside the exit code."""
    started_at: float | None = None
    ended_at: float | None = None
    duration: float | None = None
    """Run time reported by the server in ``process.completed``."""
    session_id: str | None = None
    job_id: str | None = None
    """The durable job this run is (from ``process.started``): the handle to attach to it."""
    connected_at: float | None = None
    heartbeat_interval: float | None = None
    inactivity_threshold: float | None = None
    last_heartbeat_at: float | None = None
    heartbeat_count: int = 0
    last_output_at: float | None = None
    status_count: int = 0
    """How many ``process.status`` (silence) notifications were seen."""
    inactive_seconds: float | None = None
    """The server's silence figure from the latest ``process.status``."""
    stopped: bool = False
    """The server's latest ``process.status`` or ``process.metrics`` found the process
    stopped by a signal not of ours (``kill -STOP``, Ctrl-Z): it is not thinking."""
    last_seq: int = 0
    output: OutputStore = field(default_factory=OutputStore, repr=False, compare=False)
    """The full output, in arrival order: memory first, a file past a few MiB."""
    output_chars: int = 0
    last_message_at: float | None = None
    """When the server last sent anything: any message proves the connection alive."""
    progress: dict[str, Any] | None = None
    """The latest ``{"fraction", "eta_seconds", "basis"}`` from the server."""
    resources: dict[str, Any] | None = None
    """The latest ``{"cpu_percent", "rss_bytes", "num_processes"}`` of the run's group."""
    cpu_history: list[float] = field(default_factory=list, repr=False)
    """Recent CPU figures (at most ``HISTORY``), oldest first, for a sparkline."""
    # Conversations (several turns in one process)
    alive: bool = False
    """Whether the process runs (from ``process.started`` to its end)."""
    turns: int = 0
    """Turns begun in a conversation."""
    turn_status: Status | None = None
    """How the latest turn ended (None while it runs, or without a conversation)."""
    pending_questions: int = 0
    """Permission questions waiting for a person."""
    waiting_since: float | None = None
    """When the oldest pending question came (None while none waits)."""
    ending: bool = False
    """The conversation's input is being closed: the process is expected to exit."""
    between_turns: bool = False
    """A turn ended and the process waits for a follow-up: the status is final, the run is not."""
    turn_started_at: float | None = None
    """When the latest turn began (a conversation)."""
    turn_ended_at: float | None = None
    """When the latest turn ended (the process then waits for a follow-up)."""
    escaped_pids: list[int] = field(default_factory=list)
    """Processes that left the run's group (``setsid``), from ``process.completed``: the
    run's end did not stop them unless it was cancelled or timed out (a notice says so)."""
    lost_notifications: int = 0
    """Notifications the server no longer kept when the client resumed (``client.output_gap``)."""
    notices: list[str] = field(default_factory=list)
    """What the server said of the run's output being lost or held (``process.notice``
    messages, untrusted text), each once, in the order first said; of the session's
    ``replay_dropped`` (a new seq each time) only the newest, in the first one's place."""
    _dropped_notice: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """Where in :attr:`notices` each scope's ``replay_dropped`` message is."""
    unreachable: str | None = None
    """While reconnecting: why the last dial failed ("Connection refused"), None before one did."""
    reconnect_gives_up_at: float | None = None
    """While reconnecting, once a dial failed: when the client stops trying."""
    _status_before_reconnect: Status | None = field(default=None, init=False, repr=False)
    _status_before_pause: Status | None = field(default=None, init=False, repr=False)
    _heard_before_drop: float | None = field(default=None, init=False, repr=False)
    """When the server last spoke before the connection dropped (while reconnecting)."""
    _job_started_at: float | None = field(default=None, init=False, repr=False)
    _job_ended_at: float | None = field(default=None, init=False, repr=False)
    _job_output_at: float | None = field(default=None, init=False, repr=False)
    """When a followed job last had output, from the attach (its replayed output is older)."""
    _replayed_until: int = field(default=0, init=False, repr=False)

    # Reading the output

    @property
    def stdout(self) -> str:
        """Everything the child wrote to standard output."""
        return self.output.text("stdout")

    @property
    def stderr(self) -> str:
        """Everything the child wrote to standard error."""
        return self.output.text("stderr")

    @property
    def pieces(self) -> list[tuple[str, str]]:
        """The full output as ``(stream, text)`` pairs in order (neighbours of a stream joined)."""
        return list(self.output.iter_pieces())

    @property
    def finished(self) -> bool:
        """Whether the run has reached a final status and its process is gone.

        Between the turns of a conversation the status is final (``completed``) but the
        process lives on: not finished.
        """
        return self.status in FINAL_STATUSES and not self.between_turns

    @property
    def needs_you(self) -> bool:
        """Whether a live run waits for a person's answer."""
        return self.pending_questions > 0 and self.alive

    @property
    def active(self) -> bool:
        """Whether a child process is alive (running, thinking or paused)."""
        return self.status in ACTIVE_STATUSES

    def tail(self, max_chars: int) -> Tail:
        """Return the last pieces holding at most ``max_chars`` characters."""
        kept = self.output.tail_pieces(max_chars)
        shown = sum(len(text) for _, text in kept)
        return Tail(_merge(kept), self.output_chars - shown)

    # Changing the state

    def apply(self, method: str, params: Mapping[str, Any], now: float) -> None:
        """Fold one server notification (or local event) into the state; unknown methods are ignored."""
        if not method.startswith(_LOCAL_PREFIXES):
            self.last_message_at = now
        handler = _HANDLERS.get(method)
        if handler is None or self._is_replay(params):
            return
        handler(self, params, now)
        self._take_measures(params)

    def _take_measures(self, params: Mapping[str, Any]) -> None:
        progress, resources = params.get("progress"), params.get("resources")
        if isinstance(progress, Mapping):
            self.progress = dict(progress)
        if isinstance(resources, Mapping):
            self.resources = dict(resources)
            cpu = _num(resources.get("cpu_percent"), None)
            if cpu is not None:
                self.cpu_history = [*self.cpu_history[-(HISTORY - 1) :], cpu]

    def mark_reconnecting(self, params: Mapping[str, Any] | None = None, now: float = 0.0) -> None:
        """Record that the connection dropped; the next ``connected`` restores the status.

        ``params`` of a later ``client.reconnecting`` say why the server could not be
        reached (``unreachable``) and for how long the client goes on (``gives_up_in``)."""
        if self.status != "reconnecting" and not self.finished:
            self._status_before_reconnect = self.status
            self._heard_before_drop = self.last_message_at
            self.status = "reconnecting"
        if params is None:
            return
        reason, left = params.get("unreachable"), _num(params.get("gives_up_in"), None)
        # Each notice says what the last dial met: none unreachable (yet, or any more) clears it.
        self.unreachable = reason if isinstance(reason, str) and reason else None
        self.reconnect_gives_up_at = None if self.unreachable is None or left is None else now + left

    def take_job_times(self, started_at: float | None, ended_at: float | None) -> None:
        """A followed job's own start and, once it ended, its end (in this state's clock).

        A job's log replays its start (and end) when it is attached, at the attach's time:
        the run's times are the job's. Either order works: before the replay or after it.
        """
        if started_at is not None:
            self._job_started_at = started_at
            if self.started_at is not None:
                self.started_at = started_at
        if ended_at is not None:
            self._job_ended_at = ended_at
            if self.ended_at is not None:
                self.ended_at = ended_at

    def take_job_silence(self, output_at: float | None, replayed_until: int) -> None:
        """When a followed job last had output (this state's clock), and the last seq of its
        replay: replayed output is as old as the job's last output, not the attach's time, so
        "no output for N s" counts the job's silence. Either order works, as for the times."""
        self._job_output_at, self._replayed_until = output_at, replayed_until
        if output_at is not None and self.last_output_at is not None:
            self.last_output_at = output_at
        if output_at is not None and self.between_turns and self.turn_ended_at is not None:
            # A turn that ended in the replay ended before the job's last output, not at the attach.
            self.turn_ended_at = min(self.turn_ended_at, output_at)

    def _replaying(self) -> bool:
        """The latest output folded is a followed job's replay (dated by its last output)."""
        return self._job_output_at is not None and self.last_output_at == self._job_output_at

    def mark_gap(self, missing_from: object, missing_to: object) -> None:
        """Notifications ``missing_from``..``missing_to`` were lost while the connection was down."""
        first, last = _int(missing_from), _int(missing_to)
        if first is not None and last is not None and last >= first:
            self.lost_notifications += last - first + 1

    @property
    def lost_note(self) -> str:
        """"output incomplete: ..." when notifications were lost, else ""."""
        count = self.lost_notifications
        if not count:
            return ""
        return f"output incomplete: {count:,} notification{'s' if count > 1 else ''} lost while disconnected"

    def _on_notice(self, params: Mapping[str, Any], now: float) -> None:
        # Once each: a run held and released by the disk limit again and again says so twice,
        # not once a time.
        message = _str(params.get("message"))
        if not message or message in self.notices:
            return
        if params.get("action") == "replay_dropped":
            # Each names a newer first seq: one line per scope, the newest (not one per drop).
            key = f"replay_dropped:{params.get('scope')}"
            at = self._dropped_notice.get(key)
            if at is not None:
                self.notices[at] = message
                return
            self._dropped_notice[key] = len(self.notices)
        self.notices.append(message)

    def mark_detached(self, reason: str, now: float) -> None:
        """This handle stopped following a durable job that goes on elsewhere (final here)."""
        if not self.finished:
            self.status, self.error = "detached", reason
            self.ended_at = now

    def break_off(self, error: str, now: float) -> None:
        """End the run ``error`` whatever it read: its end could not be taken in."""
        self.alive, self.pending_questions, self.waiting_since = False, 0, None
        self.between_turns = False
        self.status, self.error = "error", error
        if self.ended_at is None:
            self.ended_at = self._known_end(now)

    def _is_replay(self, params: Mapping[str, Any]) -> bool:
        seq = _int(params.get("seq"))
        if seq is None:
            return False
        if seq <= self.last_seq:
            return True
        self.last_seq = seq
        return False

    def _on_connected(self, params: Mapping[str, Any], now: float) -> None:
        session_id = _str(params.get("session_id"))
        if session_id is not None and self.session_id not in (None, session_id):
            self.last_seq = 0  # A new session numbers its notifications from 1 again.
        self.session_id = session_id or self.session_id
        self.connected_at = now
        self.heartbeat_interval = _num(params.get("heartbeat_interval"), self.heartbeat_interval)
        self.inactivity_threshold = _num(
            params.get("inactivity_threshold"), self.inactivity_threshold
        )
        if self.status == "reconnecting":
            self.status = self._status_before_reconnect or "starting"
            self._status_before_reconnect = None
        self.unreachable = self.reconnect_gives_up_at = None

    def _on_heartbeat(self, params: Mapping[str, Any], now: float) -> None:
        self.last_heartbeat_at = now
        self.heartbeat_count += 1
        # Adaptive servers say the current interval in each beat.
        self.heartbeat_interval = _num(params.get("interval"), self.heartbeat_interval)

    def _on_started(self, params: Mapping[str, Any], now: float) -> None:
        self.status = "running"
        self.alive = True
        self.ending, self.turn_status, self.pending_questions = False, None, 0
        self.between_turns = False
        self.pid = _int(params.get("pid"))
        self.pgid = _int(params.get("pgid"))
        job_id = params.get("job_id")
        if isinstance(job_id, str) and job_id:
            self.job_id = job_id
        argv = params.get("argv")
        if isinstance(argv, list):
            self.argv = [str(a) for a in argv]
        self.started_at = now if self._job_started_at is None else self._job_started_at
        # The run's own timing (execute may override the session's defaults).
        self.heartbeat_interval = _num(params.get("heartbeat_interval"), self.heartbeat_interval)
        self.inactivity_threshold = _num(params.get("inactivity_threshold"), self.inactivity_threshold)

    def _on_output(self, params: Mapping[str, Any], now: float) -> None:
        data = params.get("data")
        if not isinstance(data, str) or not data:
            return
        stream = "stderr" if params.get("type") == "stderr" else "stdout"
        self.output.append(stream, data)
        self.output_chars += len(data)
        replayed = self._job_output_at is not None and (_int(params.get("seq")) or 0) <= self._replayed_until
        self.last_output_at = self._job_output_at if replayed else now
        self.stopped = False  # it wrote: it runs
        if self.status == "thinking":
            self.status = "running"

    def _on_status(self, params: Mapping[str, Any], now: float) -> None:
        self.status_count += 1
        inactive = params.get("inactive_seconds", params.get("no_output_for"))
        self.inactive_seconds = _num(inactive, None)
        self._take_stopped(params)
        # A silence while a question waits is the person's, not Claude's thinking: the run
        # stays "running" (it read "thinking" 30 s into a question; the badge says "needs you").
        # Nor does a process stopped by a signal think: it stays "running" (the footer says stopped).
        if self.status == "running" and params.get("status", "running") == "running" and not (
            self.pending_questions or self.stopped
        ):
            self.status = "thinking"

    def _take_stopped(self, params: Mapping[str, Any], now: float = 0.0) -> None:
        """``stopped`` of a ``process.status`` or ``process.metrics`` (absent: an older server's,
        not stopped); a stopped process thinks nothing: a "thinking" run is "running" again."""
        self.stopped = params.get("stopped") is True
        if self.stopped and self.status == "thinking":
            self.status = "running"

    def _on_paused(self, params: Mapping[str, Any], now: float) -> None:
        if not self.finished and self.status != "paused":
            self._status_before_pause = self.status
            self.status = "paused"

    def _on_resumed(self, params: Mapping[str, Any], now: float) -> None:
        if not self.finished:
            # Between two turns a resumed process is idle again, not running.
            before = self._status_before_pause
            self.status = before if before in FINAL_STATUSES else "running"
            self._status_before_pause = None

    def _on_cancelled(self, params: Mapping[str, Any], now: float) -> None:
        # The process may still be exiting; process.completed will follow.
        if self.status not in _COMPLETION_STATUSES or self.between_turns:
            self.status = "cancelled"
        self.between_turns = False

    def _on_completed(self, params: Mapping[str, Any], now: float) -> None:
        self.exit_code = _int(params.get("exit_code"))
        status = _completion_status(params.get("status"), self.exit_code)
        # A conversation we ended: the CLI's exit code follows its last turn, so that turn's
        # status is the run's; but an interrupted last turn (exit 1) was ended as asked.
        if self.ending and self.turn_status is not None and status in ("completed", "failed"):
            status = "completed" if self.turn_status == "cancelled" else self.turn_status
        self.status = status
        self.alive, self.pending_questions, self.waiting_since = False, 0, None
        self.between_turns = False
        self.duration = _num(params.get("duration_seconds"), None)
        self.error = _str(params.get("error")) or self.error
        self.turn_error = params.get("turn_error") is True
        self.ended_at = now if self._job_ended_at is None else self._job_ended_at
        self._take_escaped(params.get("escaped_pids"), params.get("escaped_killed"))

    def _take_escaped(self, pids: object, killed: object) -> None:
        """The server named them in its log only: the run's record says so too."""
        self.escaped_pids = escaped_pids(pids)
        note = escaped_note(self.escaped_pids, self.status, killed)
        if note and note not in self.notices:
            self.notices.append(note)

    def _on_error(self, params: Mapping[str, Any], now: float) -> None:
        self.alive, self.pending_questions, self.waiting_since = False, 0, None
        self.between_turns = False
        self.error, self.turn_error = _str(params.get("error")) or "unknown server error", False
        if self.ended_at is None:
            self.ended_at = self._known_end(now)
        if self.status not in _COMPLETION_STATUSES:
            self.status = "error"

    def _known_end(self, now: float) -> float:
        """When the run ended as far as this side knows: the job's end if its server said;
        for a run that ends while its connection is down (the reconnects gave up), when the
        server last spoke, not the end of the reconnect wait."""
        if self._job_ended_at is not None:
            return self._job_ended_at
        if self.status == "reconnecting" and self._heard_before_drop is not None:
            return self._heard_before_drop
        return now


    # Conversations (local events)

    def _on_turn(self, params: Mapping[str, Any], now: float) -> None:
        status = params.get("status")
        if status not in _TURN_STATUSES:
            return
        if status == "running":
            self.turns += 1
            self.turn_status = None
            self.between_turns = False
            self.turn_started_at = now
        elif self.alive:
            self.turn_status = status
            self.between_turns = True
            self.turn_ended_at = self._job_output_at if self._replaying() else now
        if self.alive:
            self._set_live_status(status)

    def _set_live_status(self, status: Status) -> None:
        if self.status == "reconnecting":
            self._status_before_reconnect = status
        elif self.status == "paused":
            self._status_before_pause = status
        else:
            self.status = status

    def _on_question(self, params: Mapping[str, Any], now: float) -> None:
        pending = _int(params.get("pending"))
        if pending is not None and pending >= 0:
            if pending and not self.pending_questions:
                self.waiting_since = now
            elif not pending:
                self.waiting_since = None
            self.pending_questions = pending

    def _on_follow_up(self, params: Mapping[str, Any], now: float) -> None:
        """A follow-up is on its way to the CLI (a durable job's server writes it when no turn is
        under way): the run is running again, though its turn has not begun yet."""
        if self.alive and self.between_turns:
            self.between_turns = False
            self._set_live_status("running")

    def _on_ending(self, params: Mapping[str, Any], now: float) -> None:
        if self.alive:
            self.ending = True


_HANDLERS: dict[str, Callable[[RunState, Mapping[str, Any], float], None]] = {
    methods.CONNECTED: RunState._on_connected,
    methods.HEARTBEAT: RunState._on_heartbeat,
    methods.PROCESS_STARTED: RunState._on_started,
    methods.PROCESS_OUTPUT: RunState._on_output,
    methods.PROCESS_STATUS: RunState._on_status,
    methods.PROCESS_PAUSED: RunState._on_paused,
    methods.PROCESS_RESUMED: RunState._on_resumed,
    methods.PROCESS_CANCELLED: RunState._on_cancelled,
    methods.PROCESS_COMPLETED: RunState._on_completed,
    methods.PROCESS_ERROR: RunState._on_error,
    methods.PROCESS_NOTICE: RunState._on_notice,
    methods.PROCESS_METRICS: RunState._take_stopped,  # and the measures (taken by apply)
    methods.CONVERSATION_TURN: RunState._on_turn,
    methods.CONVERSATION_QUESTION: RunState._on_question,
    methods.CONVERSATION_ENDING: RunState._on_ending,
    methods.CONVERSATION_FOLLOW_UP: RunState._on_follow_up,
}


# Pure helpers for views


def heartbeat_health(state: RunState, now: float) -> tuple[Health, float | None]:
    """Judge the connection from the age of the last heartbeat (or of the connection).

    Returns the verdict and the age in seconds (None when there is nothing to
    measure from). "overdue" past 1.5 intervals, "lost" past 3; "waiting" before
    the first beat while not yet overdue, or while the interval is unknown.
    """
    beat = state.last_heartbeat_at
    # Any message proves the connection alive; "ok" needs at least one real beat.
    reference = _latest(beat, state.last_message_at) or state.connected_at
    if reference is None:
        return "waiting", None
    age = max(0.0, now - reference)
    interval = state.heartbeat_interval
    if not interval or interval <= 0:
        return "waiting", age
    if age > LOST_AFTER * interval:
        return "lost", age
    if age > OVERDUE_AFTER * interval:
        return "overdue", age
    return ("ok" if beat is not None else "waiting"), age


def next_beat_in(state: RunState, now: float) -> float | None:
    """Seconds until the next heartbeat is due, or None.

    One interval after the last beat (or the connection, before the first), as a server
    on its fixed clock sends them; once that has passed (an adaptive server skips beats
    while other messages flow), one interval after the last message of any kind.
    """
    interval = state.heartbeat_interval
    if not interval or state.finished:
        return None
    scheduled = state.last_heartbeat_at if state.last_heartbeat_at is not None else state.connected_at
    if scheduled is not None and scheduled + interval > now:
        return scheduled + interval - now
    reference = _latest(state.last_heartbeat_at, state.last_message_at) or state.connected_at
    if reference is None:
        return None
    return max(0.0, reference + interval - now)


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def inactive_for(state: RunState, now: float) -> float | None:
    """Seconds since the last output (or the start) while the process is alive, else None."""
    if not state.active:
        return None
    reference = state.last_output_at if state.last_output_at is not None else state.started_at
    if reference is None:
        return None
    return max(0.0, now - reference)


def elapsed(state: RunState, now: float) -> float | None:
    """Seconds the run has taken so far, or in total once it ended; None before the start."""
    if state.ended_at is not None and state.duration is not None:
        return state.duration
    if state.started_at is None:
        return None
    end = state.ended_at if state.ended_at is not None else now
    return max(0.0, end - state.started_at)


def turn_took_text(state: RunState) -> str:
    """How long the latest turn took, for a conversation between turns: ``took 5.1 s`` for the
    first (from the start, as a run of one prompt counts), ``turn 2 took 3.2 s`` for a
    follow-up; "" when no turn has ended."""
    if state.turn_ended_at is None:
        return ""
    first = state.turns <= 1 or state.turn_started_at is None
    start = state.started_at if first else state.turn_started_at
    if start is None:
        return ""
    seconds = format_took(state.turn_ended_at - start)
    return f"took {seconds}" if first else f"turn {state.turns} took {seconds}"


def took_words(state: RunState) -> str:
    """How an ended run's time reads: "took", or "followed for" where the run goes on
    without this handle (a durable job left behind: its own time is not over)."""
    return "followed for" if state.status == "detached" else "took"


def format_duration(seconds: float, *, whole: bool = False) -> str:
    """Format seconds for people: "0.4 s", "45 s", "3 min 05 s", "1 h 02 min".

    Under ten seconds one decimal is shown unless ``whole`` is true; live
    timers pass ``whole=True`` so their text changes at most once a second.
    """
    seconds = max(0.0, seconds)
    if not whole:
        seconds = round(seconds, 1)  # 9.96 s is "10 s", not "10.0 s"
        if seconds < 10:
            return f"{seconds:.1f} s"
    total = int(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(total, 3600)
    return f"{hours} h {rest // 60:02d} min"


def format_took(seconds: float) -> str:
    """How long a run or a turn took, as Claude's footer writes its own duration: ``78 ms``,
    ``12.3 s``, ``2 min 05 s``, ``1 h 02 min``. One formatter for both, so a header never
    reads ``took 0.0 s`` above a footer's ``78 ms``."""
    return format_milliseconds(max(0.0, seconds) * 1000)


# Private helpers


def _merge(pieces: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join neighbouring pieces of the same stream."""
    return [
        (stream, "".join(t for _, t in group))
        for stream, group in groupby(pieces, key=lambda p: p[0])
    ]


def _completion_status(value: object, exit_code: int | None) -> Status:
    if isinstance(value, str) and value in _COMPLETION_STATUSES:
        return value  # type: ignore[return-value]
    return "completed" if exit_code == 0 else "failed"


def escaped_pids(value: object) -> list[int]:
    """The ``escaped_pids`` of a ``process.completed`` (an older server sends none)."""
    return [pid for pid in value if _int(pid) is not None] if isinstance(value, list) else []


def escaped_note(pids: list[int], status: str, killed: object = None) -> str:
    """What a run says of processes that left its group (``setsid``), "" for none.

    ``killed``: the ``escaped_killed`` of the ``process.completed`` (the server killed them: it
    stopped the run, on a cancel, a timeout, its shutdown or a job's log it could not write);
    an older server sends none, and kills them on a cancel or a timeout only."""
    if not pids:
        return ""
    one = len(pids) == 1
    named = ("pid " if one else "pids ") + ", ".join(map(str, pids))
    if killed is True or (not isinstance(killed, bool) and status in ("cancelled", "timeout")):
        return f"{named} left the run's process group (setsid) and {'was' if one else 'were'} killed with the run."
    them, they = ("it", "it") if one else ("them", "they")
    return (f"{named} left the run's process group (setsid), so the run's end did not stop {them}: "
            f"{they} may still be running (kill {' '.join(map(str, pids))}).")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: object, default: float | None) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


_REFUSAL = "_cc_executor_refusal"


def wait_seconds(timeout: object) -> float | None:
    """A ``wait(timeout)``'s seconds (None: no limit), checked: NaN, which no deadline compares
    with, waited for ever as None did; it, a bool and what is no number are a ValueError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or math.isnan(timeout):  # numpy's too
        raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}")
    return float(timeout)


def refusal(kind: type[Exception], words: str) -> Exception:
    """A refusal of the caller's request (``kind(words)``), marked as such: the caller's
    thread raises it again without the loop's frames, which say nothing to the user."""
    exc = kind(words)
    setattr(exc, _REFUSAL, True)
    return exc


def shown_in_one_line(interrupt: KeyboardInterrupt, words: str) -> None:
    """Let IPython show ``interrupt`` as the line ``KeyboardInterrupt: words``, without the
    frames of the wait it stopped (down to a ``select`` or a lock, they say nothing to the
    person who pressed Ctrl-C or interrupted the kernel). ``_render_traceback_`` is IPython's
    hook for exceptions that render themselves; the type stays KeyboardInterrupt, and a
    plain script prints the whole traceback as usual."""
    vars(interrupt)["_render_traceback_"] = lambda: [f"KeyboardInterrupt: {words}"]


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` was made by :func:`refusal`."""
    return getattr(exc, _REFUSAL, False) is True
