"""The Claude interpreter of a run: stream-json in, a consistent snapshot out.

:class:`ClaudeInterpreter` is fed every output piece of a run on the kernel's loop
thread and read from the widget's and the user's threads, so it holds its
:class:`~cc_executor_nb.claude.streamjson.ClaudeRun` behind a lock. Readers take a
:class:`ClaudeView`: an immutable snapshot of every field, taken under the lock (and
cached until the next line is applied), so ``run.claude.text`` and
``run.claude.cost_usd`` always come from the same moment.

It also counts the answer against the prompt's target ("a 500 word story") for the
progress bar: the server counts nothing for Claude runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ..targets import Progress, Target, progress_toward, prompt_target
from .compat import too_old_for
from .limits import UsageLimit
from .permissions import PermissionRequest
from .streamjson import ApiRetry, ClaudeRun, FrozenToolCall, Phase, Signal, ToolCall

_T = TypeVar("_T")

__all__ = ["MAX_STDERR_CHARS", "ClaudeInterpreter", "ClaudeView"]

MAX_STDERR_CHARS = 64_000
"""How much of the CLI's stderr the interpreter keeps (the tail)."""


@dataclass(frozen=True)
class ClaudeView:
    """Everything known about a Claude run at one moment (``run.claude``)."""

    text: str = ""
    """The assistant's text so far."""
    answer: str = ""
    """The result text, the error in plain words, or the text so far."""
    thinking: str = ""
    """The assistant's thinking so far."""
    result: dict[str, Any] | None = None
    """The final ``result`` event, None until it arrives."""
    cost_usd: float | None = None
    """The run's cost in US dollars, as reported by the CLI."""
    usage: dict[str, Any] = field(default_factory=dict)
    """Token usage from the result."""
    session_id: str | None = None
    """Claude's session id (for ``--resume``)."""
    session_begun: bool = False
    """Whether the CLI began the session (its ``system``/``init`` came), so ``--resume`` finds
    it: a CLI that refused its arguments (a ``--resume`` of no session) names a session id in
    its error result that it never kept."""
    model: str | None = None
    """The model the CLI reported."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls in the order they started."""
    is_error: bool = False
    """Whether Claude reported an error (an API failure included)."""
    interrupted: bool = False
    """Whether the latest turn ended because it was interrupted (``is_error`` is then True)."""
    api_error_status: int | None = None
    """The HTTP status of an API failure, e.g. 529."""
    usage_limit: UsageLimit | None = None
    """The usage or rate limit refusing the run now (with its reset time), else None."""
    usage_limits: tuple[UsageLimit, ...] = ()
    """Every limit that refused the run, oldest first."""
    waiting_until: float | None = None
    """When an auto-resumed run will resume (epoch seconds) while it waits for a reset."""
    resumes: int = 0
    """How many times the run resumed its session after a limit (``auto_resume``)."""
    resume_note: str | None = None
    """The auto-resume wrapper's last word (waiting, resuming, or why it stopped)."""
    cost_estimate_reason: str | None = None
    """Why ``cost_usd`` is an estimate, not the bill (``custom endpoint``, ``subscription``)."""
    retries: tuple[ApiRetry, ...] = ()
    """The API retries announced so far."""
    num_turns: int | None = None
    """Agent turns, from the result."""
    phase: Phase = "starting"
    """starting, thinking, writing, tool or done."""
    stderr: str = ""
    """The tail of the CLI's stderr."""
    turns: int = 0
    """Turns begun in a conversation (host mode); 0 for a one-shot run."""
    permission_requests: tuple[PermissionRequest, ...] = ()
    """The conversation's permission questions (host mode), oldest first."""
    turn_open: bool = False
    """Whether the latest turn has no result yet."""
    version: int = 0
    """Grows with every applied line; unchanged means nothing new."""


class ClaudeInterpreter:
    """Reads a run's stream-json into a :class:`ClaudeRun`; safe across threads.

    Implements the kernel's ``Interpreter``: stdout goes to :meth:`ClaudeRun.feed`,
    stderr is kept aside (its last :data:`MAX_STDERR_CHARS` characters), :meth:`finish`
    applies an unterminated last line. Read with :meth:`snapshot`, or hold
    :meth:`locked` to render the run itself consistently.
    """

    def __init__(self, run: ClaudeRun | None = None, *, prompt: str = "") -> None:
        self._lock = threading.RLock()
        self._run = run if run is not None else ClaudeRun(clock=time.time)
        self._stderr: list[str] = []
        self._stderr_chars = 0
        self._stderr_version = 0
        self._view: ClaudeView | None = None
        # Copies of the run's calls, kept from one snapshot to the next: only the calls started or
        # changed since (the run's mark) are copied again (see _tool_copies).
        self._copies: list[ToolCall] = []
        self._copy_at: dict[str, int] = {}
        self._copies_shown: tuple[ToolCall, ...] = ()
        self._tools_mark = 0
        # The run's retries and usage limits as the last snapshot copied them (both lists only grow).
        self._retries_shown: tuple[ApiRetry, ...] = ()
        self._limits_shown: tuple[UsageLimit, ...] = ()
        self._stderr_shown = (0, "")
        self.target: Target | None = prompt_target([prompt]) if prompt else None
        self._first_answer_at: float | None = None
        self._text_before_turn = 0
        self._requests: tuple[PermissionRequest, ...] = ()
        self._requests_version = 0
        self.finished = False

    def __repr__(self) -> str:
        with self._lock:
            return f"<ClaudeInterpreter {self._run!r}>"

    # Feeding (loop thread)

    def feed(self, stream: str, text: str) -> None:
        """Take one output piece of ``stream`` ("stdout" or "stderr")."""
        with self._lock:
            if stream == "stdout":
                self._run.feed(text)
                if self._first_answer_at is None and len(self._run.text) > self._text_before_turn:
                    self._first_answer_at = time.monotonic()
            else:
                self._keep_stderr(text)
            self._view = None

    def begin_turn(self, prompt: str) -> int:
        """A user message goes to the CLI: what follows is a new turn (host mode).

        Progress then counts this turn's answer against this prompt's target.
        """
        with self._lock:
            self._view = None
            if self._run.turns:  # the first prompt's target was taken at construction
                self.target = prompt_target([prompt]) if prompt else None
                self._first_answer_at = None
                self._text_before_turn = len(self._run.text)
            return self._run.begin_turn(prompt)

    def note_interrupt(self) -> None:
        """The current turn is being interrupted by us."""
        with self._lock:
            self._run.note_interrupt()
            self._view = None

    def set_permission_requests(self, requests: tuple[PermissionRequest, ...]) -> None:
        """The conversation's questions as they are now (text views and the record show them)."""
        with self._lock:
            if requests != self._requests:
                self._requests = requests
                self._requests_version += 1
                self._view = None

    def take_signals(self) -> list[Signal]:
        """Control messages and turn ends read since the last call (see ClaudeRun.take_signals)."""
        with self._lock:
            return self._run.take_signals()

    def finish(self) -> None:
        """The run is over: apply a last line that had no newline. Idempotent."""
        with self._lock:
            if not self.finished:
                self._run.feed_eof()
                self.finished = True
                self._view = None

    def _keep_stderr(self, text: str) -> None:
        self._stderr.append(text)
        self._stderr_chars += len(text)
        self._stderr_version += 1
        if self._stderr_chars > 2 * MAX_STDERR_CHARS:
            tail = "".join(self._stderr)[-MAX_STDERR_CHARS:]
            self._stderr, self._stderr_chars = [tail], len(tail)

    # Reading (any thread)

    def snapshot(self) -> ClaudeView:
        """Every field at this moment, consistent (cached until the next piece)."""
        with self._lock:
            if self._view is None:
                self._view = self._take_view()
            return self._view

    @property
    def cost_usd(self) -> float | None:
        """The cost the CLI last reported, without taking a snapshot (a batch reads it at each output piece)."""
        with self._lock:
            return self._run.cost_usd

    def stderr(self) -> str:
        """The CLI's stderr as a snapshot holds it (its end), without taking a snapshot."""
        with self._lock:
            if self._stderr_shown[0] != self._stderr_version:
                self._stderr_shown = (self._stderr_version, "".join(self._stderr)[-MAX_STDERR_CHARS:])
            return self._stderr_shown[1]

    def _take_view(self) -> ClaudeView:
        run = self._run
        self._retries_shown = _grown(self._retries_shown, run.retries)
        self._limits_shown = _grown(self._limits_shown, run.usage_limits)
        return ClaudeView(
            text=run.text,
            answer=run.answer,
            thinking=run.thinking,
            result=None if run.result is None else dict(run.result),
            cost_usd=run.cost_usd,
            usage=dict(run.usage),
            session_id=run.session_id,
            session_begun=run.init is not None,
            model=run.model,
            tool_calls=self._tool_copies(),
            is_error=run.is_error,
            interrupted=run.interrupted,
            api_error_status=run.api_error_status,
            usage_limit=run.usage_limit,
            usage_limits=self._limits_shown,
            waiting_until=run.waiting_until,
            resumes=run.resumes,
            resume_note=run.resume_note,
            cost_estimate_reason=run.cost_estimate_reason,
            retries=self._retries_shown,
            num_turns=run.num_turns,
            phase=run.phase,
            stderr=self.stderr(),
            turns=len(run.turns),
            turn_open=run.turn_open,
            permission_requests=self._requests,
            version=run.version + self._stderr_version + self._requests_version,
        )

    def _tool_copies(self) -> tuple[ToolCall, ...]:
        """Read-only copies of the run's calls (a snapshot's: the live ones change under the readers,
        and a reader's change reached the run's records: the input was the run's own dict), copying
        only those started or changed since the last snapshot. Copying every call at each snapshot,
        taken at each line in text mode, was quadratic (4,000 calls: 55 s)."""
        mark, changed = self._run.changed_tools(self._tools_mark)
        if changed is None:  # a call was forgotten: the places moved
            self._copies, self._copy_at = [], {}
            changed = self._run.tool_calls
        for call in changed:
            at = self._copy_at.get(call.id)
            if at is None:  # started since: after every call copied before
                self._copy_at[call.id] = len(self._copies)
                self._copies.append(FrozenToolCall.of(call))
            else:
                self._copies[at] = FrozenToolCall.of(call)
        if mark != self._tools_mark:
            self._copies_shown = tuple(self._copies)
        self._tools_mark = mark
        return self._copies_shown

    def incomplete(self) -> str | None:
        """Why the stream cannot be whole: it ended without Claude's ``result`` event.

        A CLI that exits while its output is still queued (2.1.197 does when its stdout
        pipe is full) leaves exactly that: a prefix, exit code 0, no ``result``.
        """
        with self._lock:
            if self._run.result is not None:
                return None
        return "the output was incomplete: Claude's stream ended without a result event"

    def refused(self) -> str | None:
        """Why the CLI refused to run, when it was too old for an option it was given
        (:func:`~cc_executor_nb.claude.compat.too_old_for`); None otherwise."""
        with self._lock:
            if self._run.result is not None:
                return None
            stderr = "".join(self._stderr)
        return too_old_for(stderr)

    def progress(self, now: float, finished: bool) -> Progress | None:
        """Progress of the answer toward the prompt's target; None without a target.

        A later turn without a target has no estimate (``Progress()``): the bar of the turn
        before is not this one's. An answer cut short has no time left.
        """
        with self._lock:
            run, target = self._run, self.target
            if target is None:
                return Progress() if len(run.turns) > 1 else None
            # In a conversation the answer is the current turn's text, or its result.
            text = run.answer if len(run.turns) > 1 or run.result is not None else run.text
            first = self._first_answer_at
            # Only an answer that ended well is all its prompt asked for: an interrupted or
            # failed one keeps its real fraction (a story stopped at 4 % read 100 %).
            complete = finished and not run.is_error
        progress = progress_toward(target, text, first_output_at=first, now=now, finished=complete)
        return replace(progress, eta_seconds=None) if finished and not complete else progress

    @contextmanager
    def locked(self) -> Iterator[ClaudeRun]:
        """Hold the lock and give the run itself, e.g. to render it consistently."""
        with self._lock:
            yield self._run

    @property
    def version(self) -> int:
        """Grows with every applied line; unchanged means nothing new to show."""
        with self._lock:
            return self._run.version + self._stderr_version + self._requests_version


def _grown(shown: tuple[_T, ...], items: list[_T]) -> tuple[_T, ...]:
    """``items``, a list that only grows, as a snapshot holds it: ``shown``, the last snapshot's
    copy, while it has not grown (a snapshot copied the run's retries and usage limits at every line)."""
    unchanged = len(shown) == len(items) and (not items or shown[-1] is items[-1])
    return shown if unchanged else tuple(items)
