"""A live conversation with the claude CLI in host mode: turns, questions, interrupt and end.

One :class:`Conversation` drives one claude process started with
:func:`~cc_executor_nb.claude.options.claude_host_argv` and ``stdin: "pipe"``. It lives
on the kernel's background loop; :class:`~cc_executor_nb.kernel.run.Run` hands it every
event and exposes its actions as methods (``run.approve()``, ``run.send()``, ...)::

    start    write ``initialize`` and the prompt (the first user message) to stdin
    admit    hold the process's output until a stream-json line proves host mode; a CLI
             that ends first (no host mode) is retried with the one-shot command line
    react    a question -> the policy -> a person (the card, the cell's input box, the
             terminal; see :mod:`~cc_executor_nb.kernel.prompter`) -> allow/deny on stdin;
             a ``result`` ends the turn; the process's end cancels what is pending

A *durable* conversation (a job of the job server) is told what the job's stdin was
sent (``process.input``, whoever wrote it): its own lines come back and confirm its
answers; lines from another kernel attached to the same job are followed (a turn, an
interrupt, the input's close) and the first answer to a question in the job's log is the
one that counts (another kernel's answer replaces ours if it came first). Its follow-ups go
with ``turn`` (``Client.input``): a job server that holds them (``input.turn``) writes each
once the turn under way ends, so a follow-up begins its turn here when the job's log shows
it written, after any turn another kernel's follow-up began first. An *attached*
conversation (``replay_until``) starts in the middle: it writes nothing at start, follows
the job's replay silently (up to the job's last ``seq`` as the attach reply gives it), and
once the replay is read asks the questions still pending.

Turns: the run is ``running`` while a turn runs and ``completed`` (``failed``,
``cancelled`` when interrupted) after its result, while the process stays alive for a
follow-up; a follow-up sent during a turn waits for its end. Nothing here has a timeout
on a question; a process idle between turns is ended after ``idle_timeout`` seconds, and
one nobody can reach any more (:meth:`Conversation.nobody_left`) has its questions denied and ends.
Everything written goes through one ordered writer (``Client.input``), only after the
CLI's last result is its input closed (older CLIs lose buffered output otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import itertools
import json
import logging
import re
import time
import traceback
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import methods
from ..claude import control
from ..claude.control import (
    POLICY_DENY_MESSAGE,
    UNREACHABLE_MESSAGE,
    AnswerSent,
    ControlAnswer,
    InitializeSent,
    InterruptSent,
    PermissionAsked,
    RequestWithdrawn,
    SentMessage,
    TurnSent,
    UnsupportedRequest,
)
from ..claude.interpreter import ClaudeInterpreter
from ..claude.options import STREAM_ARGS
from ..claude.permissions import Answer, ConversationMode, ConversationView, PermissionRequest, RequestStatus
from ..claude.streamjson import LineSplitter, Signal, TurnEnded
from ..client import Client
from ..errors import CCExecError, ConnectionLost, InvalidParams, NoProcessRunning
from ..events import Completed, Event, Output, ProcessError
from ..protocol import check_utf8, one_line
from .prompter import Prompter, Question
from .runstate import format_duration, refusal

if TYPE_CHECKING:
    from .run import RunSpec

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "POLICY_DENY_MESSAGE",
    "Conversation",
    "Hooks",
    "Policy",
]

logger = logging.getLogger("cc_executor_nb.kernel.conversation")

Policy = Callable[[PermissionRequest], Any] | str
"""``"ask"``, ``"all"``, ``"none"``, or ``callable(request) -> "allow" | "always" | "deny" | None``."""

# Timeouts (seconds)
HANDSHAKE_TIMEOUT = 30.0
"""Without one stream-json line by then, the CLI is taken to lack host mode."""
CANCEL_INTERRUPT_WAIT = 2.0
"""Cancel interrupts the turn first and waits this long for its result."""
EXIT_AFTER_END = 10.0
"""After the input is closed, the process gets this long (plus the kill grace) to exit."""

NO_PROMPT_WAIT = 5.0
"""An attached job whose input holds half a line (its starter still sending the prompt) is said to
have had no prompt once that half line has lain unchanged this long."""

SHUTDOWN_EXIT_WAIT = 2.0
"""When the kernel goes away, the process gets this long to exit after its input is
closed, then it is cancelled: a CLI that hangs on its closed input does not hold up the exit."""

_WRITE_RETRY = 0.1

HAND_OVER_WAIT = 2.0
"""When the kernel goes away, what a durable job is owed from here (:meth:`Conversation.hand_over`)
gets this long to reach its job server."""

_CLOSE_AFTER_TURN = "close-after-turn"
"""The writer's item for ``input.close`` with ``after_turn`` (None: a plain ``input.close``)."""

_PROMPT_START = 60
"""How much of a follow-up a notice that it was not sent shows (one line)."""


@dataclasses.dataclass
class Hooks:
    """What the conversation may do to its run (all called on the loop thread)."""

    emit: Callable[[str, dict[str, Any]], None]
    """Fold a local ``conversation.*`` event into the run (state, view, events)."""
    set_idle: Callable[[bool], None]
    """No turn runs (True) or one runs again (False): what ``run.wait()`` waits for."""
    changed: Callable[[], None]
    """Something shown changed: ask the view for a render."""


class Conversation:
    """The turns, questions and input of one claude process in host mode (loop thread).

    Readers on other threads use :meth:`view` (an immutable snapshot). Actions run on
    the loop thread; :class:`~cc_executor_nb.kernel.run.Run` hops there.
    """

    _interrupt_noted: tuple[int, str] | None = None
    """The turn after which "nothing to interrupt" was said, and the words (said once a turn)."""
    _exit_wait: float | None = None
    """How long the process gets to exit once its input is closed (None: the usual wait)."""
    _nobody_left = False
    """Nobody can reach the run any more: its questions are denied (:meth:`nobody_left`)."""
    _asked_at_prompt = False
    """Nobody holds the run, but its questions are asked at terminal IPython's prompt (:meth:`nobody_left`)."""
    _queued = _written = 0
    """Lines queued for the CLI, and lines the writer handed to the server (or gave up on)."""
    _input_close_queued = False
    """Whether the writer was handed the input's close (see :attr:`owes_the_job`)."""
    _start_lines: int | None = None
    """How many lines start() had queued (``initialize`` and the prompt): see :attr:`prompt_sent`."""
    line_label: Callable[[], str] | None = None
    """The label that starts the run's text lines now (``2│ ``, text mode): its questions
    asked on the terminal or in a cell's input box carry it too."""

    def __init__(
        self,
        prompt: str,
        interpreter: ClaudeInterpreter,
        *,
        policy: Policy = "ask",
        idle_timeout: float | None = 600.0,
        max_idle: int | None = None,
        grace: float = 5.0,
        fallback: RunSpec | None = None,
        prompter: Prompter | None = None,
        on_turn_end: Callable[[], object] | None = None,
        handshake_timeout: float | None = None,
        durable: bool = False,
        replay_until: int | None = None,
    ) -> None:
        self.prompt = prompt
        self.interpreter = interpreter
        self.policy = policy
        # max_idle: how many conversations of this loop may wait for a follow-up at once (None: any).
        self.idle_timeout, self.max_idle = idle_timeout or None, max_idle
        self.grace = grace
        self.fallback = fallback
        self.prompter = prompter
        self.on_turn_end = on_turn_end
        self.handshake_timeout = HANDSHAKE_TIMEOUT if handshake_timeout is None else handshake_timeout
        self.cli_info: dict[str, Any] = {}
        """The CLI's answer to ``initialize`` (``claude_code_version``, ``pid``, ...)."""
        self.durable = durable or replay_until is not None
        """Its writes come back as ``process.input`` (a job of a job server)."""
        self.attached = replay_until is not None
        """It follows a job that was started elsewhere (or before this kernel)."""
        self._replay_until = replay_until or 0
        self._replay_known = not self.attached
        """Where the replay ends is known: an attached conversation learns it from the
        attach reply (:meth:`replayed_until`); the job list it was built from can be older."""
        self._caught_up = not self.attached
        self._seen_seq = 0
        self._mode: ConversationMode = "live" if self.attached else "starting"
        self._one_shot = False
        self._requests: dict[str, PermissionRequest] = {}
        # Follow-ups sent during a turn (queued here for its end), and ours a job server holds until
        # the turn under way ends (``input`` with ``turn``), in the order sent: each of these begins
        # its turn here when the job's log shows it written (process.input); those still awaited
        # when the process ends were never written.
        self._queue, self._awaited = deque[str](), deque[str]()
        self._sent = 0
        self._turn_running = False
        # An interrupt was asked; end() was asked during a turn; cancel() was asked (the process is being stopped).
        self._interrupting = self._close_after_turn = self._cancelled = self._interrupt_when_live = False
        self._end_when_live: str | None = None
        self._ended_because: str | None = None  # the reason end() was given ("idle": the timeout; "refused": the start)
        self._idle_since: float | None = None
        self._notices: list[str] = []
        # Questions asked in an input box now; questions offered to people (not in a policy's hands)
        self._on_stdin, self._with_people = set[str](), set[str]()
        self._view = ConversationView(idle_timeout=self.idle_timeout)
        self._ids = itertools.count(1)
        self._init_id = ""
        # Wiring, set by start()
        self._client: Client | None = None
        self._hooks: Hooks | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[tuple[str, tuple[int, ...] | None, bool] | str | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._turn_ended = asyncio.Event()
        # The handshake
        self._held: list[Event] = []
        self._splitter = LineSplitter()
        self._fallback_reason: str | None = None
        # What the job's stdin was sent (durable): our lines not yet seen back, and the
        # questions whose first answer in the job's log is known
        self._input_lines = LineSplitter()
        self._echoes: deque[str] = deque()
        self._confirmed: set[str] = set()
        self._turns_seen: deque[str] = deque()  # turns another kernel sent during a turn

    def __repr__(self) -> str:
        view = self._view
        return f"<Conversation {view.mode} turns={view.sent} pending={len(view.pending)}>"

    # -- Reading (any thread) -------------------------------------------------------------

    def view(self) -> ConversationView:
        """Everything a person sees of the conversation now (immutable)."""
        return self._view

    @property
    def prompt_sent(self) -> bool:
        """Whether ``initialize`` and the prompt reached the server (or never will: the writer
        gave up); a durable job then runs its first turn without this process (any thread)."""
        if self.attached:
            return True  # it writes nothing at start: its job's starter sent the prompt
        return self._start_lines is not None and self._written >= self._start_lines

    @property
    def interactive(self) -> bool:
        """False once the run fell back to the one-shot mode."""
        return not self._one_shot

    # -- Wiring (loop thread) -----------------------------------------------------------------

    def bind(self, client: Client, hooks: Hooks) -> None:
        """Wire the conversation to its run (an attached one before the replay comes)."""
        if self._writer is not None:
            return
        self._client, self._hooks = client, hooks
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.ensure_future(self._write_all())

    def release(self) -> None:
        """The run is over: drop the connection (a finished run, which IPython's output cache
        may keep, holds no client); nothing more is written."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._client = None

    @property
    def owes_the_job(self) -> bool:
        """Whether something asked here has not reached a durable job's input yet: a follow-up
        queued for the turn's end (``send()`` during a turn), the input's close after the turn
        (``end()`` during it), or a line the writer has not handed to the server. Letting go of
        the job before would lose it: this kernel's queue and writer go with its connection (a
        user message written during a turn is no turn of its own for the CLI)."""
        closing = self._close_after_turn or (
            self._input_close_queued and self._writer is not None and not self._writer.done()
        )
        return bool(self._queue) or closing or self._written < self._queued

    async def hand_over(self) -> None:
        """The kernel goes away from a durable job it still owes something asked here (see
        :attr:`owes_the_job`): its follow-ups queued for the turn's end go to the job server now,
        which holds them for the turn under way (``input.turn``), and ``end()``'s close after the
        turn goes as ``input.close`` with ``after_turn`` (closed once that turn, and those held,
        ended); then waits, at most :data:`HAND_OVER_WAIT` s, for the writer to deliver them. With
        a job server that takes neither, they are lost, as they always were: the job's idle timeout
        closes its input."""
        client = self._client
        if not self.durable or client is None or self._mode not in ("starting", "live", "ending") or self._cancelled:
            return  # (a durable conversation still starting has no one-shot retry: its CLI is in host mode)
        if self._end_when_live is not None:
            self._end_when_live, self._close_after_turn = None, True  # end() during the start: after the first turn
        if self._queue and client.holds_turns:
            for prompt in self._queue:
                self._write(control.user_message(prompt), ok_exit_codes=(), turn=True)
            self._queue.clear()
        if self._close_after_turn and client.closes_after_turn:
            self._close_after_turn = False
            self._input_close_queued = True
            self._outbox.put_nowait(_CLOSE_AFTER_TURN)
        if self._queue or self._close_after_turn:
            logger.warning("! an older job server (no input.turn or input.close.after_turn): a follow-up or end() "
                           "asked here is lost as this kernel goes; the job ends at its idle timeout")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._delivered(), HAND_OVER_WAIT)

    async def _delivered(self) -> None:
        """Return once the writer handed every line to the server (and the input's close, if queued)."""
        while self._written < self._queued or (self._input_close_queued and not self._outbox.empty()):
            if self._writer is None or self._writer.done():
                return
            await asyncio.sleep(0.01)
        if self._input_close_queued and self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    def stop_following(self) -> None:
        """This kernel lets go of a durable job (nobody holds or shows its run): no timer of its
        own runs any more and nothing more is written; its questions and its input are the job
        server's (its ``stdin_idle_timeout``) and those of any kernel that attaches."""
        self._stop_waiting()
        for name in list(self._timers):
            self._cancel_timer(name)
        self.release()

    def start(self, client: Client, hooks: Hooks) -> None:
        """The process runs: send ``initialize`` and the prompt; wait for a sign of host mode."""
        self.bind(client, hooks)
        self._init_id = self._next_id("init")
        self._write(control.initialize(self._init_id))
        self._begin_turn(self.prompt)
        self._start_lines = self._queued
        self._timer("handshake", self.handshake_timeout, self._handshake_expired)

    def admit(self, event: Event) -> list[Event]:
        """The events to fold now: the process's output is held until it proves host mode."""
        if self._mode != "starting":
            return [event]
        if isinstance(event, Output):
            self._held.append(event)
            if event.stream == "stdout" and _has_stream_json(self._splitter.feed(event.data)):
                return self._go_live()
            return []
        if isinstance(event, Completed):
            # Only a CLI that ended by itself lacks host mode; a timeout or a cancel does not say.
            ended_by_itself = event.params.get("status") in ("completed", "failed")
            if not (ended_by_itself or self._fallback_reason):
                return [*self._go_live(), event]
            if not self._fallback_reason and _refused_a_shared_option(self._held_stderr()):
                # An option both modes pass (a bad --permission-mode value, say): a one-shot
                # retry would be refused the same way; the CLI's own message says why.
                return [*self._go_live(), event]
            if self.fallback is None:
                # A durable job cannot be run again on its connection: say why it ended.
                self._notice(
                    f"This claude CLI did not start in host mode ({self._why_not_host_mode(event)}); a "
                    "durable run has no one-shot retry. Run it with --no-interactive "
                    "(interactive=False, CCExec.interactive = False)."
                )
                return [*self._go_live(), event]
            self._held.append(event)
            self._prepare_fallback(event)
            return []
        if isinstance(event, ProcessError):
            return [*self._go_live(), event]
        return [event]

    def take_fallback(self) -> RunSpec | None:
        """After the process ended: the one-shot run to start instead, or None."""
        if self._mode != "fallback" or self.fallback is None:
            return None
        self._one_shot = True
        self._set_mode("one-shot")
        self._turn_running = False
        self._notice(self._fallback_reason or "This claude CLI has no host mode: it ran one-shot.")
        return self.fallback

    def react(self, event: Event) -> None:
        """After ``event`` was folded (the interpreter has read it): act on what it means."""
        if isinstance(event, Output) and event.stream == "stdout":
            signals = self.interpreter.take_signals()
            if self._mode in ("live", "ending"):
                for signal in signals:
                    self._handle(signal)
        elif event.method == methods.PROCESS_INPUT and self.durable:
            self._input_seen(event.params)
        elif isinstance(event, (Completed, ProcessError)) and self._mode not in ("fallback", "starting"):
            self._process_ended(str(event.params.get("status") or "error") if isinstance(event, Completed) else "error")
        self._seen_seq = max(self._seen_seq, event.seq or 0)
        if not self._caught_up and self._replay_known and self._seen_seq >= self._replay_until:
            self._catch_up()

    # -- Actions (loop thread) -----------------------------------------------------------

    def decide(
        self, request_id: str | None, answer: Answer, *, via: str, strict: bool = True
    ) -> PermissionRequest | None:
        """Answer a question (the first pending one when ``request_id`` is None).

        ``strict``: an unknown or already decided question raises ValueError; otherwise
        (a late click, a stale prompt) it is ignored and None is returned.
        """
        request = self._find(request_id, strict=strict)
        if request is None:
            return None
        if not request.pending:
            if strict:
                raise refusal(ValueError, f"the question {request.id} was already {request.status}")
            return None
        if answer.allow:
            rules = (
                control.session_permissions(request.tool, request.input, request.suggestions)
                if answer.always else []
            )
            self._write(control.allow(request.id, request.input, rules))
            decided = dataclasses.replace(request, status="allowed", decided_by=via, always=answer.always)
        else:
            message = _passable(answer.message.strip() or control.DEFAULT_DENY_MESSAGE)
            self._write(control.deny(request.id, message))
            decided = dataclasses.replace(request, status="denied", decided_by=via, message=message)
        self._update_request(decided)
        return decided

    def send(self, prompt: str) -> None:
        """A follow-up turn: sent now, or after the current turn's result."""
        if self._one_shot:
            raise refusal(
                RuntimeError, "this run is one-shot (no host mode): start a new run with --continue to follow up"
            )
        if self._cancelled:
            raise refusal(RuntimeError, "the run was cancelled: no more input goes to this process")
        if self._mode not in ("starting", "live"):
            raise refusal(RuntimeError, self._over_words())
        if self._turn_running or self._mode == "starting":
            self._queue.append(prompt)
            self._publish()
            return
        self._follow_up(prompt)

    def _over_words(self) -> str:
        """Why a follow-up is refused once the conversation ended, and how to go on."""
        why = _ENDED_BECAUSE.get(self._ended_because or "", "")
        mode = "over" if self._ended_because == "refused" else self._mode  # it exits now
        words = f"the conversation is {mode}{why}: no more input goes to this process"
        view = self.interpreter.snapshot()
        if view.session_id and view.session_begun:
            words += f"; follow up in a new run with --resume {view.session_id} (resume='{view.session_id}')"
        return words

    def interrupt(self) -> bool:
        """Stop the current turn (the CLI ends it with a result); False when none runs.

        If no result comes within the grace, the process is cancelled (SIGTERM). During the
        start it is sent once the CLI is in host mode (the first turn runs from the start).
        Between turns, once the conversation is over, or while it is being cancelled, nothing
        is sent and a notice says so (the run's view, text mode, its ``conversation.notice``
        event), once between two turns (once when over) however often it is asked. A run that
        fell back to one-shot (no host mode) cannot be interrupted: RuntimeError, as ``send()``.
        """
        if self._one_shot:
            raise refusal(
                RuntimeError, "this run is one-shot (no host mode): it cannot be interrupted; cancel() stops it"
            )
        if self._interrupt_turn():
            return True
        words = self._nothing_to_interrupt()
        if words is not None and self._interrupt_noted != (self._sent, words):
            self._interrupt_noted = (self._sent, words)
            self._notice(words)
        return False

    def _nothing_to_interrupt(self) -> str | None:
        """Why an interrupt finds no turn, in the notice's words (None: say nothing)."""
        if self._mode == "over":
            return "Nothing to interrupt: the conversation is over."
        if self._cancelled:
            return "Nothing to interrupt: the run is being cancelled."
        if self._mode not in ("live", "ending"):
            return None
        why = "the conversation waits for a follow-up" if self._mode == "live" else "the conversation is ending"
        return f"Nothing to interrupt: no turn is running ({why})."

    def _interrupt_turn(self) -> bool:
        if self._mode == "starting" and not self._cancelled:
            self._interrupt_when_live = True
            return True
        if not self._turn_running or self._mode not in ("live", "ending"):
            return False
        if not self._interrupting:
            self._interrupting = True
            self.interpreter.note_interrupt()
            # The CLI exits 1 after an interrupted last turn: the job server is told that,
            # once the input is closed, this is an end as asked (until the next turn).
            self._write(control.interrupt(self._next_id("interrupt")), ok_exit_codes=(1,))
            self._timer("interrupt", self.grace, self._interrupt_expired)
        return True

    def end(self, reason: str = "end") -> None:
        """Close the input once the current turn (if any) has its result; the process exits."""
        if self._mode == "starting":
            self._end_when_live = reason  # the handshake decides between host mode and one-shot first
            return
        if self._mode != "live":
            return
        self._ended_because = reason
        dropped = len(self._queue)
        self._queue.clear()
        self._set_mode("ending")
        self._cancel_timer("idle")
        self._stop_waiting()
        self._emit(methods.CONVERSATION_ENDING, {"reason": reason})
        if dropped:
            self._notice(f"{dropped} follow-up{'s' if dropped > 1 else ''} not sent: the conversation was ended")
        if self._turn_running or self._awaited:
            self._close_after_turn = True  # after the last turn's result (a follow-up the server holds: after its turn)
        else:
            self._close_input()

    def nobody_left(self) -> None:
        """Nobody can answer a question or send a follow-up any more: the run was shown in no
        widget and its handle is gone. An open question is denied (``auto``), so is any that
        comes later, and the conversation ends after its current turn as an idle one does (its
        CLI exits). A durable one is left alone: any kernel may attach to its job and answer."""
        if self.durable or self._nobody_left or self._mode in ("over", "fallback", "one-shot"):
            return
        self._nobody_left = True
        self._asked_at_prompt = self.prompter is not None and self.prompter.asks_at_prompt(self)
        if self._asked_at_prompt:  # terminal IPython: the terminal asks its questions, at the prompt
            logger.info("= a conversation nobody can follow up any more (its handle was dropped) ends after its "
                        "turn; its questions are asked at the terminal's prompt")
        else:
            logger.info("= a conversation nobody can answer any more (its handle was dropped, no widget shows it) ends")
            for request in list(self._requests.values()):
                if request.pending and request.id in self._with_people:
                    self._deny_unreachable(request)
        if self._mode == "ending" or self._end_when_live is not None:
            return  # ended already (run.end()): only its questions were left to deny
        if self._asked_at_prompt:
            self._notice("Ends after this turn: nobody can follow up this run any more (no widget shows it and its "
                         "handle was dropped); its questions are asked on the terminal; everything is kept.")
        else:
            self._notice("Ended: nobody can answer or follow up this run any more (no widget shows it and its "
                         "handle was dropped); everything is kept.")
        self.end("unreachable")

    def _deny_unreachable(self, request: PermissionRequest) -> None:
        self.decide(request.id, Answer(False, message=UNREACHABLE_MESSAGE), via="auto", strict=False)

    async def close(self, reason: str) -> None:
        """Stop the conversation for good (the kernel goes away): between turns its input
        is closed and the CLI exits by itself; during a turn, see :meth:`cancel`."""
        self._exit_wait = SHUTDOWN_EXIT_WAIT
        if self._mode == "live" and not self._turn_running:
            self.end(reason)
        elif self._mode == "ending" and not self._turn_running:
            if "exit" in self._timers:  # end() was called before: its wait is shortened
                self._timer("exit", SHUTDOWN_EXIT_WAIT, self._exit_expired)
        elif self._mode != "over":
            with contextlib.suppress(ConnectionLost):
                await self.cancel()

    async def cancel(self) -> None:
        """Interrupt the turn (if one runs), give it a moment to end, then cancel the process.

        Raises ConnectionLost when the connection is lost before the server answers the cancel.
        """
        if self._mode in ("over", "fallback"):
            return
        self.fallback = None  # a cancelled start is not a CLI without host mode
        self._not_sent(list(self._queue), "the run was cancelled before")
        self._queue.clear()
        # From here wait() and await wait for the process's end, not the turn's, and
        # send() is refused: a follow-up would go to a process being stopped.
        self._cancelled = True
        self._set_idle(False)
        if self._interrupt_turn():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._turn_ended.wait(), CANCEL_INTERRUPT_WAIT)
        client = self._client
        if client is not None:
            # ConnectionLost goes to the run, which sends the cancel again once reconnected.
            with contextlib.suppress(NoProcessRunning):
                await client.cancel()

    # -- The handshake --------------------------------------------------------------------

    def _go_live(self) -> list[Event]:
        self._cancel_timer("handshake")
        self._set_mode("live")
        held, self._held = self._held, []
        if self._interrupt_when_live:
            self._interrupt_when_live = False
            self._interrupt_turn()
        if self._end_when_live is not None:
            self.end(self._end_when_live)
        return held

    def _prepare_fallback(self, completed: Completed) -> None:
        self._cancel_timer("handshake")
        self._set_mode("fallback")
        why = self._why_not_host_mode(completed)
        self._fallback_reason = (
            f"This claude CLI did not start in host mode ({why}), so it ran one-shot: no "
            "permission question reaches the notebook and run.send() cannot follow up. "
            "Use --no-interactive (CCExec.interactive = False) to skip the attempt."
        )
        logger.warning("! %s", self._fallback_reason)
        self._held.clear()
        if self._writer is not None:
            self._writer.cancel()  # nothing more goes to that process

    def _held_stderr(self) -> str:
        return "".join(e.data for e in self._held if isinstance(e, Output) and e.stream == "stderr")

    def _why_not_host_mode(self, completed: Completed) -> str:
        """The handshake's timeout, or how the CLI exited (with the first line of its stderr)."""
        stderr = self._held_stderr()
        first = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
        return self._fallback_reason or (
            f"it exited with code {completed.params.get('exit_code')}" + (f": {first[:200]}" if first else "")
        )

    def _handshake_expired(self) -> None:
        if self._mode != "starting":
            return
        self._fallback_reason = f"no stream-json answer within {self.handshake_timeout:g} s"
        logger.warning("! claude did not answer in host mode within %g s: cancelling it", self.handshake_timeout)
        self._spawn(self._control_cancel())

    # -- Signals from the CLI ------------------------------------------------------------

    def _handle(self, signal: Signal) -> None:
        if isinstance(signal, PermissionAsked):
            self._asked(signal)
        elif isinstance(signal, RequestWithdrawn):
            self._withdrawn(signal.request_id)
        elif isinstance(signal, TurnEnded):
            self._turn_end(signal.result)
        elif isinstance(signal, ControlAnswer):
            if signal.request_id == self._init_id and signal.ok:
                self.cli_info = dict(signal.response)
        elif isinstance(signal, UnsupportedRequest):
            logger.info("claude sent a control request this notebook does not serve: %s", signal.subtype)
            self._write(control.failure(signal.request_id, f"{signal.subtype} is not supported by cc_executor_nb"))

    def _asked(self, asked: PermissionAsked) -> None:
        request = PermissionRequest.from_asked(asked)
        self._requests[request.id] = request
        to_policy = self._caught_up and (self.policy in ("all", "none") or callable(self.policy))
        self._question_changed(request, to_policy=to_policy)
        if self._caught_up:
            self._offer(request)

    def _offer(self, request: PermissionRequest) -> None:
        """A pending question goes to the policy, else to people."""
        policy = self.policy
        if policy == "all":
            self.decide(request.id, Answer(True), via="policy", strict=False)
        elif policy == "none":
            self.decide(request.id, Answer(False, message=POLICY_DENY_MESSAGE), via="policy", strict=False)
        elif callable(policy):
            self._spawn(self._ask_policy(policy, request))
        else:
            self._ask_people(request)

    async def _ask_policy(self, policy: Callable[[PermissionRequest], Any], request: PermissionRequest) -> None:
        loop = asyncio.get_running_loop()
        try:
            verdict = await loop.run_in_executor(None, _call_policy, policy, request)
        except Exception as exc:
            logger.warning("! the permission policy failed on %s: %s; asking a person", request.tool, _failure(exc))
            logger.debug("the permission policy's traceback", exc_info=exc)
            verdict = None
        answer = _policy_answer(verdict, request.tool)
        if answer is not None:
            self.decide(request.id, answer, via="policy", strict=False)
        elif self._requests[request.id].pending:
            self._question_changed(self._requests[request.id])  # now it is a question for people
            self._ask_people(self._requests[request.id])

    def _ask_people(self, request: PermissionRequest) -> None:
        if self._nobody_left and not self._asked_at_prompt:
            self._deny_unreachable(request)
            return
        self._with_people.add(request.id)
        if self.prompter is None:
            return  # answered from code (run.approve / run.deny) or the card
        loop = self._loop
        assert loop is not None

        # The loop may be gone with the question still pending: a durable run detached
        # (the kernel's loop stopped) leaves its job, and its questions, to others.
        def on_loop(action: Callable[[], object]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(action)

        def answer(given: Answer, via: str) -> None:
            on_loop(lambda: self.decide(request.id, given, via=via, strict=False))

        def is_open() -> bool:
            # A question of a turn being interrupted or a run being cancelled is about to be
            # withdrawn by the CLI: nobody is asked it any more (nor denied it for nobody).
            if self._interrupting or self._cancelled:
                return False
            current = self._view.requests
            pending = any(r.id == request.id and r.pending for r in current)
            return pending and self._mode in ("live", "ending") and not loop.is_closed()

        def asking(on: bool) -> None:
            on_loop(lambda: self._mark_stdin(request.id, on))

        def interrupted(via: str) -> None:
            on_loop(lambda: self._interrupted_while_asked(request.id, via))

        self.prompter.offer(Question(
            request, answer, is_open, asking=asking, interrupted=interrupted, owner=self, label=self.line_label,
        ))

    def _mark_stdin(self, request_id: str, on: bool) -> None:
        (self._on_stdin.add if on else self._on_stdin.discard)(request_id)
        self._publish()

    def _interrupted_while_asked(self, request_id: str, via: str) -> None:
        """The person asked pressed Ctrl-C (or interrupted the kernel) instead of answering: the
        run is cancelled next, and the CLI's withdrawal of the question that follows would read
        ``cancelled by Claude``; it reads cancelled by the person."""
        request = self._requests.get(request_id)
        if request is not None and request.pending:
            self._update_request(dataclasses.replace(request, status="cancelled", decided_by=via,
                                                     message="interrupted"))

    def _withdrawn(self, request_id: str) -> None:
        request = self._requests.get(request_id)
        if request is not None and request.pending:
            self._update_request(dataclasses.replace(request, status="cancelled", decided_by="cli"))

    def _turn_end(self, result: Mapping[str, Any]) -> None:
        if not self._turn_running:
            return
        self._turn_running = False
        self._cancel_timer("interrupt")
        # An interrupt that came after the turn had finished leaves it completed.
        failed = _is_error(result)
        status = "cancelled" if self._interrupting and failed else "failed" if failed else "completed"
        self._interrupting = False
        self._cancel_pending("the turn ended")
        # An error result with no session begun (no init line): the CLI refused its arguments.
        # (Read from an attached job's replay, it is history: nothing is written to that job.)
        refused = failed and self._mode == "live" and self._caught_up and not self.interpreter.snapshot().session_begun
        if refused:
            self._refused_at_start()
        last = self._close_after_turn or self._mode == "ending" or self._cancelled  # no follow-up after a cancel
        # Published before the turn's end is announced: the widget renders at once on it, and
        # its follow-up row read "Claude is working" under the turn's footer until the next render.
        self._publish()
        self._emit(methods.CONVERSATION_TURN, {"status": status, "turn": self._sent, "last": last})
        self._turn_ended.set()
        self._call_turn_end()
        if self._turns_seen and self._mode == "live":
            self._turn_begun(self._turns_seen.popleft())  # another kernel's follow-up, already sent
            return
        if self._queue and self._mode == "live":
            self._follow_up(self._queue.popleft())
            return
        if self._awaited and self._mode in ("live", "ending") and not refused:
            # Our follow-up the server holds is next: no wait for a follow-up (nor a close) in between.
            self._emit(methods.CONVERSATION_FOLLOW_UP, {"queued": len(self._awaited)})
            return
        if self._close_after_turn or refused:
            self._close_input()  # end() was asked during the turn (or the CLI exits): wait() waits for the exit
            self._publish()
            return
        self._go_idle()
        self._publish()
        # (cancelled: idle once the process is gone; in an attach's replay: once it is read,
        # a turn it ends is history and the job may have ended after it)
        if not self._cancelled and self._caught_up:
            self._set_idle(True)

    def _refused_at_start(self) -> None:
        """The CLI refused its arguments (a --resume of no session): it began no session and
        exits after this error result, so its only turn is the last one and nothing more may
        go to it (a follow-up written now would be lost without a word): the conversation is
        ending (no follow-up box, no hint), and the follow-ups that waited are dropped, saying so."""
        self._ended_because = "refused"
        self._mode = "ending"
        dropped = len(self._queue)
        self._queue.clear()
        if dropped:
            self._notice(f"{dropped} follow-up{'s' if dropped > 1 else ''} not sent: the CLI refused its start")

    def _go_idle(self) -> None:
        if self._mode == "live" and self._caught_up:
            self._idle_since = time.monotonic()
            if self.idle_timeout:
                self._timer("idle", self.idle_timeout, self._idle_expired)
            if not self.durable and self._loop is not None:
                _waiting(self._loop)[self] = None
                _end_longest_waiting(self._loop, self.max_idle)

    def _stop_waiting(self) -> None:
        if self._loop is not None:
            _waiting(self._loop).pop(self, None)

    def _too_many_waiting(self, limit: int) -> None:
        self._stop_waiting()
        self._notice(
            f"Ended: more than {limit} conversation{'s' if limit > 1 else ''} waited for a follow-up "
            "(max_idle_conversations); everything is kept."
        )
        self.end("max_idle_conversations")

    def _call_turn_end(self) -> None:
        if self.on_turn_end is not None:
            try:
                self.on_turn_end()
            except Exception:
                logger.exception("! a turn-end callback failed")

    def _process_ended(self, status: str) -> None:
        if self._mode == "over":
            return
        self._not_sent([*self._awaited, *self._queue], f"the process ended ({status}) before")
        self._set_mode("over")
        self._stop_waiting()
        self._turn_running = False
        for name in list(self._timers):
            self._cancel_timer(name)
        self._cancel_pending("the process ended")
        self._turn_ended.set()
        self._queue.clear()
        self._awaited.clear()
        self._publish()
        if self._writer is not None:
            self._writer.cancel()

    # -- Turns and input -------------------------------------------------------------------

    def _begin_turn(self, prompt: str) -> None:
        self._write(control.user_message(prompt), ok_exit_codes=(), turn=True)
        self._turn_begun(prompt)

    def _follow_up(self, prompt: str) -> None:
        """Send a follow-up. A job server that holds turns (``input.turn``) writes it once the turn
        under way ends, whoever began that one (another kernel's follow-up may have come first):
        its turn begins here when the job's log shows it written, in the log's order of turns."""
        client = self._client
        if not (self.durable and client is not None and client.holds_turns):
            self._begin_turn(prompt)
            return
        self._write(control.user_message(prompt), ok_exit_codes=(), turn=True)
        self._awaited.append(prompt)
        self._idle_since = None
        self._cancel_timer("idle")
        self._stop_waiting()
        self._set_idle(False)
        self._publish()
        self._emit(methods.CONVERSATION_FOLLOW_UP, {"queued": len(self._awaited)})

    def _turn_begun(self, prompt: str) -> None:
        """A user message went to the CLI (from here, or seen in a durable job's input)."""
        self.interpreter.begin_turn(prompt)
        self._sent += 1
        self._turn_running = True
        self._turn_ended.clear()
        self._idle_since = None
        self._cancel_timer("idle")
        self._stop_waiting()
        self._set_idle(False)
        self._emit(methods.CONVERSATION_TURN, {"status": "running", "turn": self._sent})
        self._publish()

    def _close_input(self) -> None:
        self._close_after_turn = False
        self._input_close_queued = True
        self._outbox.put_nowait(None)
        wait = EXIT_AFTER_END + self.grace if self._exit_wait is None else self._exit_wait
        self._timer("exit", wait, self._exit_expired)

    def _idle_expired(self) -> None:
        if self._mode == "live" and not self._turn_running:
            spent = format_duration(self.idle_timeout or 0, whole=True)
            self._notice(f"Ended after {spent} without a follow-up (idle_timeout); everything is kept.")
            self.end("idle")

    def ended_at_timeout(self, timeout: float | None) -> None:
        """The run's timeout ended the process while it waited for a follow-up: say so."""
        spent = f" ({format_duration(timeout, whole=True)})" if timeout else ""
        self._notice(f"Ended at its timeout{spent} without a follow-up; everything is kept.")

    def _interrupt_expired(self) -> None:
        if self._turn_running and self._interrupting:
            self._notice(f"No result {self.grace:g} s after the interrupt: the process was cancelled.")
            self._spawn(self._control_cancel())

    def _exit_expired(self) -> None:
        if self._mode == "ending":
            self._notice("The process did not exit after its input was closed: it was cancelled.")
            self._spawn(self._control_cancel())

    async def _control_cancel(self) -> None:
        """The cancel of this conversation's own timers (handshake, interrupt, exit): one lost
        with its connection (a frozen server found dead) is sent again once the client has
        reconnected, as a line of input is; nothing else would end that process."""
        client = self._client
        if client is None:
            return
        await self._deliver(client.cancel)

    def _write(
        self, message: Mapping[str, Any], ok_exit_codes: tuple[int, ...] | None = None, *, turn: bool = False
    ) -> None:
        """Queue one line for the CLI; ``ok_exit_codes``: what a durable job is told an exit
        after its input's close means from this line on; ``turn``: the line begins a turn (a
        durable job's server holds it while one is under way; see ``Client.input``)."""
        text = control.line(message)
        if self.durable:
            self._echoes.append(text.rstrip("\n"))  # the job's process.input will show it
        self._queued += 1
        self._outbox.put_nowait((text, ok_exit_codes if self.durable else None, turn and self.durable))

    # -- What a durable job's stdin was sent (process.input) -------------------------------

    def _input_seen(self, params: Mapping[str, Any]) -> None:
        if params.get("closed") is True:
            self._closed_elsewhere(str(params.get("reason") or "closed"))
            return
        data = params.get("data")
        for text in self._input_lines.feed(data if isinstance(data, str) else ""):
            mine = text in self._echoes
            if mine:
                self._echoes.remove(text)
            try:
                message = json.loads(text)
            except (ValueError, RecursionError):
                continue
            sent = control.parse_sent(message) if isinstance(message, dict) else None
            if sent is not None:
                self._sent_seen(sent, mine)

    def _sent_seen(self, sent: SentMessage, mine: bool) -> None:
        if isinstance(sent, AnswerSent):
            self._answer_seen(sent, mine)
        elif mine and isinstance(sent, TurnSent) and self._awaited:
            self._awaited.popleft()  # our follow-up the server held: written now, its turn begins
            self._turn_seen(sent.prompt)
        elif mine:
            return
        elif isinstance(sent, TurnSent):
            self._turn_seen(sent.prompt)
        elif isinstance(sent, InterruptSent) and self._turn_running and not self._interrupting:
            self._interrupting = True
            self.interpreter.note_interrupt()
        elif isinstance(sent, InitializeSent):
            self._init_id = sent.request_id

    def _answer_seen(self, sent: AnswerSent, mine: bool) -> None:
        """The first answer to a question in the job's log is the one the CLI took."""
        if sent.request_id in self._confirmed:
            return
        self._confirmed.add(sent.request_id)
        request = self._requests.get(sent.request_id)
        if mine or request is None or request.status == "cancelled":
            return
        status: RequestStatus = "allowed" if sent.allow else "denied"
        if (request.status, request.message, request.always) == (status, sent.message, sent.always):
            return  # the same answer (two kernels clicked alike)
        self._update_request(dataclasses.replace(
            request, status=status, decided_by="elsewhere", message=sent.message, always=sent.always
        ))

    def _turn_seen(self, prompt: str) -> None:
        """Another kernel (or this job's starter, before we attached) sent a turn."""
        if self._mode not in ("live", "ending"):
            return
        if self._turn_running:
            self._turns_seen.append(prompt)
            return
        self._turn_begun(prompt)

    def _closed_elsewhere(self, reason: str) -> None:
        """The job's input was closed (by another kernel, the job server's idle timeout, or us)."""
        if self._mode != "live":
            return
        self._not_sent(list(self._queue), f"the job's input was closed ({reason}) before")
        self._queue.clear()
        self._set_mode("ending")
        self._cancel_timer("idle")
        self._stop_waiting()
        self._emit(methods.CONVERSATION_ENDING, {"reason": reason})

    def replayed_until(self, last_seq: int) -> None:
        """The attach reply: the job's log ended at ``last_seq`` when this run attached, so
        everything up to it is replay (a question asked and answered after the job list
        was read is history, not a question to ask again)."""
        if self._caught_up:
            return
        self._replay_until, self._replay_known = last_seq, True
        if self._seen_seq >= last_seq:
            self._catch_up()

    def _catch_up(self) -> None:
        """An attached conversation has read the job's replay: ask what is still pending."""
        self._caught_up = True
        if self._mode == "live" and not self._sent and self._input_lines.pending:
            self._no_prompt_yet(-1)  # half a line: the starter is still sending the prompt (wait() waits for it)
        elif not self._turn_running and self._mode != "over":
            self._go_idle()
            self._set_idle(True)  # wait() returns at once: no turn runs (an ended job's: once the run is over)
            if self._mode == "live" and not self._sent:
                self._notice(self._no_prompt_words())
        for request in list(self._requests.values()):
            if request.pending:
                self._question_changed(request)
                self._offer(request)
        self._publish()

    def _no_prompt_yet(self, seen: int) -> None:
        """An attached job with no turn whose input holds half a line (``seen``: its length at the last
        look) has a starter still sending the prompt, whose turn is about to begin: the run said there
        was no prompt (and to send one) and its wait() returned. Once that half line lies unchanged for
        :data:`NO_PROMPT_WAIT` s (a starter that died halfway), the run is idle and says so."""
        if self._mode != "live" or self._sent:
            return
        pending = self._input_lines.pending
        if pending and pending != seen:
            self._timer("no-prompt", NO_PROMPT_WAIT, functools.partial(self._no_prompt_yet, pending))
            return
        self._go_idle()
        self._set_idle(True)
        self._notice(self._no_prompt_words())

    def _no_prompt_words(self) -> str:
        """What an attached run says of a job whose log holds no turn: nothing runs and nothing
        will until someone sends a prompt (its starter died between the job's start and the prompt)."""
        words = ("This job has had no prompt: its starter stopped before sending it (or is still sending "
                 "it). run.send(prompt) sends one; run.end() ends the job")
        if self.idle_timeout:
            words += f"; left so, it ends after {format_duration(self.idle_timeout, whole=True)} (idle_timeout)"
        return words + "."

    async def _write_all(self) -> None:
        """The one writer: lines in order, then (None) closing the input."""
        while True:
            item = await self._outbox.get()
            client = self._client
            assert client is not None
            if item is None or isinstance(item, str):  # the input's close (str: _CLOSE_AFTER_TURN)
                await self._deliver(functools.partial(client.close_input, after_turn=item is not None))
                return
            text, ok_exit_codes, turn = item
            await self._deliver(functools.partial(client.input, text, ok_exit_codes=ok_exit_codes, turn=turn))
            self._written += 1

    async def _deliver(self, call: Callable[[], Any]) -> None:
        client = self._client
        assert client is not None
        while True:
            try:
                await call()
                return
            except ConnectionLost:
                if client.closed:
                    return
                await asyncio.sleep(_WRITE_RETRY)  # the client reconnects and resumes the session
            except (NoProcessRunning, InvalidParams) as exc:
                logger.debug("the process no longer reads its input: %s", exc)
                return
            except CCExecError:
                logger.exception("! writing to claude's input failed")
                return

    # -- Bookkeeping -------------------------------------------------------------------------

    def _find(self, request_id: str | None, *, strict: bool) -> PermissionRequest | None:
        if request_id is None:
            request = next((r for r in self._requests.values() if r.pending), None)
            if request is None and strict:
                raise refusal(ValueError, "no permission question is pending")
            return request
        request = self._requests.get(request_id)
        if request is None and strict:
            raise refusal(ValueError, f"no permission question {request_id!r} in this run")
        return request

    def _update_request(self, request: PermissionRequest) -> None:
        self._requests[request.id] = request
        self._question_changed(request)

    def _question_changed(self, request: PermissionRequest, *, to_policy: bool = False) -> None:
        """Publish the change; ``to_policy``: a pending question the policy answers, not people."""
        self._publish()
        pending = sum(1 for r in self._requests.values() if r.pending)
        params = {"pending": pending, "request": _summary(request)}
        self._emit(methods.CONVERSATION_QUESTION, {**params, "policy": True} if to_policy else params)

    def _cancel_pending(self, why: str) -> None:
        for request in list(self._requests.values()):
            if request.pending:
                self._update_request(dataclasses.replace(request, status="cancelled", message=why))

    def _not_sent(self, prompts: list[str], why: str) -> None:
        """Say which follow-ups never reached the CLI (``why``: "the process ended (timeout) before"),
        each by its start: they were queued here for the turn's end, or held by the job server."""
        if not prompts:
            return
        named = ", ".join(repr(one_line(prompt, _PROMPT_START)) for prompt in prompts)
        count = f"{len(prompts)} follow-ups" if len(prompts) > 1 else "Follow-up"
        words = f"{count} not sent: {named} ({why} {'their turns' if len(prompts) > 1 else 'its turn'})"
        view = self.interpreter.snapshot()
        if view.session_id and view.session_begun:
            words += f"; send {'them' if len(prompts) > 1 else 'it'} in a new run with --resume {view.session_id}"
        self._notice(words + ".")

    def _notice(self, message: str) -> None:
        self._notices.append(message)
        self._publish()
        self._emit(methods.CONVERSATION_NOTICE, {"message": message})

    def _set_mode(self, mode: ConversationMode) -> None:
        self._mode = mode
        self._publish()

    def _publish(self) -> None:
        self.interpreter.set_permission_requests(tuple(self._requests.values()))
        self._view = ConversationView(
            mode=self._mode,
            requests=tuple(self._requests.values()),
            turn_running=self._turn_running,
            queued=len(self._queue) + len(self._awaited),
            sent=self._sent,
            idle_since=self._idle_since,
            idle_timeout=self.idle_timeout,
            notices=tuple(self._notices),
            asked_on_stdin=tuple(sorted(self._on_stdin)),
            version=self._view.version + 1,
        )
        if self._hooks is not None:
            self._hooks.changed()

    def _emit(self, method: str, params: dict[str, Any]) -> None:
        if self._hooks is not None:
            # Read from an attached job's replay: history, not news (no prompt, no display update).
            self._hooks.emit(method, params if self._caught_up else {**params, "replay": True})

    def _set_idle(self, idle: bool) -> None:
        if self._hooks is not None:
            self._hooks.set_idle(idle)

    def _spawn(self, work: Any) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next_id(self, kind: str) -> str:
        return f"ccx-{kind}-{next(self._ids)}"

    def _timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer(name)
        loop = self._loop or asyncio.get_running_loop()
        self._timers[name] = loop.call_later(delay, callback)

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()


def _has_stream_json(lines: list[str]) -> bool:
    """Whether any of ``lines`` is a stream-json event (a JSON object with a type)."""
    for text in lines:
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            return True
    return False


def _passable(message: str) -> str:
    """A denial's message as it can reach the model: a reason that is not valid UTF-8 (typed
    at a prompt that read bytes of another encoding) would reach it with U+FFFD in place of
    each bad character, so the denial says that instead. Code's run.decide() and run.deny()
    refuse such a message before it comes here."""
    try:
        check_utf8("the reason given", message)
    except ValueError as exc:
        return f"Denied; the reason given could not be passed on: {str(exc).partition(';')[0]}."
    return message


def _is_error(result: Mapping[str, Any]) -> bool:
    return result.get("is_error") is True or result.get("subtype") not in (None, "success")


def _call_policy(policy: Callable[[PermissionRequest], Any], request: PermissionRequest) -> Any:
    """The policy's verdict, on a worker thread; an ``async def`` policy runs on a loop of its own."""
    verdict = policy(request)
    if inspect.isawaitable(verdict):
        return asyncio.run(_awaited(verdict))
    return verdict


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _failure(exc: BaseException) -> str:
    """One line for a failed callable: the exception and the line that raised it
    (``ZeroDivisionError: division by zero (policy.py:3 in decide)``)."""
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    place = f" ({Path(where[0].filename).name}:{where[0].lineno} in {where[0].name})" if where else ""
    return f"{type(exc).__name__}: {exc}{place}" if str(exc) else f"{type(exc).__name__}{place}"


def _policy_answer(verdict: Any, tool: str) -> Answer | None:
    # Compared by identity and type: 1 == True and 0 == False must not pass for answers.
    if verdict is True or (isinstance(verdict, str) and verdict == "allow"):
        return Answer(True)
    if isinstance(verdict, str) and verdict == "always":
        return Answer(True, always=True)
    if verdict is False or (isinstance(verdict, str) and verdict == "deny"):
        return Answer(False, message=POLICY_DENY_MESSAGE)
    if verdict is not None:
        logger.warning(
            "! the permission policy answered %r on %s (not allow, always, deny or None); asking a person",
            verdict, tool,
        )
    return None


_ENDED_BECAUSE = {
    "refused": " (the CLI refused its start)",
    "idle": " (ended after its idle timeout without a follow-up)",
    "max_idle_conversations": " (ended: more conversations than max_idle_conversations waited for a follow-up)",
    "unreachable": " (ended: no widget showed it and its handle was dropped, so nobody could answer it)",
}
"""What a refused follow-up says of why the conversation ended, by the reason end() was given."""

_WAITING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Conversation, None]] = weakref.WeakKeyDictionary()
"""Per loop, its conversations that wait for a follow-up, longest-waiting first."""


def _waiting(loop: asyncio.AbstractEventLoop) -> dict[Conversation, None]:
    return _WAITING.setdefault(loop, {})


def _end_longest_waiting(loop: asyncio.AbstractEventLoop, limit: int | None) -> None:
    """End the longest-waiting conversations beyond ``limit`` (each holds a CLI process)."""
    waiting = _waiting(loop)
    while limit and len(waiting) > limit:
        next(iter(waiting))._too_many_waiting(limit)


_NAMED_OPTION = re.compile(r"option '(--[A-Za-z0-9-]+)")
_HOST_ONLY_OPTIONS = frozenset(arg for arg in control.HOST_ARGS if arg.startswith("--")) - set(STREAM_ARGS)


def _refused_a_shared_option(stderr: str) -> bool:
    """Whether the CLI's complaint names only options that one-shot mode passes too
    (a CLI without host mode names ``--input-format`` or ``--permission-prompt-tool``)."""
    named = _NAMED_OPTION.findall(stderr)
    return bool(named) and not any(option in _HOST_ONLY_OPTIONS for option in named)


def _summary(request: PermissionRequest) -> dict[str, Any]:
    """A question as plain JSON for the run's events and the text view."""
    from ..claude.permissions import printable, readable_input

    return {
        "id": request.id,
        "tool": printable(request.tool),
        "summary": readable_input(request.tool, request.input).summary,
        "status": request.status,
        "decided_by": request.decided_by,
        "message": request.message,
        "always": request.always,
    }
