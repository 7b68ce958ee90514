"""The handle of one run: state, output, control, waiting and display.

A :class:`Run` is made on the caller's thread (a cell), then driven on the kernel's
background loop (:mod:`cc_executor_nb.kernel.loop`) through one connection of its
own (one connection is one session, and a session runs one process at a time)::

    client listener (loop thread) -> RunState.apply -> interpreter.feed -> presenter.update

The presenter (:mod:`cc_executor_nb.kernel.presenter`) coalesces widget renders to a few a
second; the Run keeps the full output and every event. Control methods and
:meth:`Run.wait` may be called from any thread except the loop's; ``await run``
waits on the awaiting loop without blocking it.

A *durable* run (``RunSpec.job``) is a job of the user's job server: the run's process
belongs to the server, not to this handle. Stopping the background loop (a kernel
shutdown, ``%unload_ext``) then leaves the job running and the handle ``detached``. A
Run made with ``job_id`` *attaches* to an existing job instead of starting anything:
it replays the job's notifications (the job's own seq numbering) and then follows it.

An interactive Claude run also has a *conversation*
(:mod:`cc_executor_nb.kernel.conversation`): the process takes several turns, asks
permission questions (``run.permission_requests``, ``run.approve()``, ``run.deny()``)
and takes follow-ups (``run.send()``) until ``run.end()``. :meth:`Run.wait` and
``await run`` return when the current turn ends; the process may live on
(``run.alive``), and ``run.done`` becomes true only when it is gone.

The loop holds the Run it drives; ``run()`` gives its user another object of the same run
(:meth:`Run.user_handle`, the same attributes), which the loop never holds: when it is gone
and no widget shows the run, nobody can answer the run's questions any more, and its
conversation ends (:meth:`Conversation.nobody_left`); a durable one's job is let go instead
(this kernel stops following it; any kernel may attach to it).

For Claude runs an optional *interpreter* (see :class:`Interpreter`) is fed every
output piece; the fields ``text``, ``result``, ``cost_usd``, ``usage``,
``session_id``, ``model``, ``tool_calls`` and ``is_error`` read from it and are
None (or empty) without one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from .. import methods
from ..claude.permissions import Answer, PermissionRequest
from ..claude.streamjson import FrozenList
from ..client import Client, Locator, connect, os_reason, shown_url
from ..errors import (
    CCExecError,
    ConnectionLost,
    HandshakeRefused,
    InvalidParams,
    NoProcessRunning,
    ServerUnresponsive,
)
from ..events import Completed, Event, Output, ProcessError, make_event
from ..protocol import CANCELLED_BY_CLIENT, FROM_ARGUMENTS, check_utf8, command_line
from ..targets import Progress
from .loop import KernelLoop, LoopStopped
from .output import OutputStore
from .runstate import (
    RunState,
    elapsed,
    format_duration,
    format_took,
    is_refusal,
    shown_in_one_line,
    wait_seconds,
)

if TYPE_CHECKING:
    from .conversation import Conversation
    from .presenter import Presenter
    from .prompter import Prompter
    from .views import RunView

T = TypeVar("T")

__all__ = [
    "TOKEN_HINT", "Interpreter", "Run", "RunSpec", "Target", "call_back", "judged", "os_reason", "token_from_env",
    "token_hint", "unreachable",
]

logger = logging.getLogger("cc_executor_nb.kernel.run")

CONTROL_TIMEOUT = 10.0
LOOP_STOPPED = "cancelled: the background loop was stopped"
"""Why a run ends when the loop stops under it (a kernel's shutdown, ``%unload_ext``)."""
NOBODY_FOLLOWS = "nobody held or showed this run any more; its job goes on in the job server (attach to it)"
"""Why a durable run nobody can reach any more stopped following its job (``run.error``)."""
CANCELLED_BY_YOU = "cancelled by you"
"""Why a run ends that this handle's :meth:`Run.cancel` (a button, a kernel interrupt) cancelled."""
# Notifications that carry the server's progress figures: the interpreter's take over.
_MEASURED = frozenset({methods.PROCESS_STATUS, methods.PROCESS_METRICS, methods.PROCESS_COMPLETED})


@runtime_checkable
class Interpreter(Protocol):
    """Reads a run's output as it arrives (e.g. Claude's stream-json).

    ``feed`` is called on the loop thread for every output piece, in order, and
    ``finish`` once when the run ends. ``snapshot`` gives an immutable view of what it
    understood (``run.claude``); ``progress`` an estimate toward a target the
    interpreter knows (None when it knows none). An interpreter may also have
    ``incomplete() -> str | None``: why the output it read cannot be whole (a Claude
    stream without its ``result``), which turns a ``completed`` run into a ``failed`` one;
    and ``refused() -> str | None``: why the program refused to run (a claude CLI too old
    for an option), the error of a run that failed with only its exit code to say.
    """

    def feed(self, stream: str, text: str) -> object:
        """Take one piece of ``stream`` ("stdout" or "stderr")."""
        ...

    def finish(self) -> object:
        """The run is over."""
        ...

    def snapshot(self) -> Any:
        """What the interpreter understood so far, as one consistent value."""
        ...

    def progress(self, now: float, finished: bool) -> Progress | None:
        """Progress toward the interpreter's target, or None."""
        ...


@dataclass(frozen=True)
class RunSpec:
    """What to run, in the terms of the protocol's ``execute`` params."""

    command: str | None = None
    """A command line, split with shlex by the server; or"""
    argv: list[str] | None = None
    """an argument vector run as is."""
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    timeout: float | None = None
    heartbeat_interval: float | None = None
    inactivity_threshold: float | None = None
    kill_grace: float | None = None
    progress_target: Any = FROM_ARGUMENTS
    """``{"count", "unit"}``, None (the server counts nothing) or FROM_ARGUMENTS."""
    stdin: str | None = None
    """``"pipe"`` to write to the process with ``input``; default: /dev/null."""
    capture: str | None = None
    """``"file"`` or ``"pipe"``: how the server captures the output (None: its default)."""
    job: Mapping[str, Any] | None = None
    """A durable job's ``label``, ``meta`` and ``summary``; None: an ordinary run."""
    input: str | None = None
    """Text written to the process's stdin once it started, which is then closed (needs
    ``stdin="pipe"``): a one-shot prompt, never on the command line. Up to one request's
    size it goes in ``execute`` when the server offers ``execute.input`` (its server writes
    it: a durable job outlives this kernel); a longer one goes in ``input`` requests right
    after the start (``execute`` is one frame), as host mode sends its prompts."""
    server_python: bool = False
    """``argv`` is ``python3 -m`` one of the package's wrappers, which a remote server runs
    with its own interpreter (its ``python3`` on ``PATH`` may lack this package)."""

    def __post_init__(self) -> None:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of command and argv")

    @property
    def label(self) -> str:
        """The command as one line."""
        return self.command if self.command is not None else command_line(self.argv or [])

    def execute_params(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`Client.execute`."""
        return {
            "command": self.command,
            "argv": self.argv,
            "cwd": self.cwd,
            "env": dict(self.env) if self.env is not None else None,
            "timeout": self.timeout,
            "heartbeat_interval": self.heartbeat_interval,
            "inactivity_threshold": self.inactivity_threshold,
            "kill_grace": self.kill_grace,
            "progress_target": self.progress_target,
            "stdin": self.stdin,
            "capture": self.capture,
            **({"server_python": True} if self.server_python else {}),
            **({"durable": True, **self.job} if self.job is not None else {}),
        }


TOKEN_HINT = ("give the server's token, in the environment variable --token-env or CCExec.token_env names "
              "(CC_EXECUTOR_TOKEN by default) or as token=...")
"""What a notebook, IPython or the Python API gives a server that refused its token."""


def token_hint(*, token: str | None, named: str | None, configured: str | None) -> str:
    """Where a notebook, IPython or API run's token came from, for a server that refused it.

    ``token`` is a ``token=`` given, ``named`` a variable given with ``--token-env`` /
    ``token_env=``, ``configured`` the variable ``CCExec.token_env`` names (read otherwise).
    Whether that one is set is read now, when the token is.
    """
    if token:
        return "the token was given as token=: give the server's token"
    if named:
        return f"the token was read from {named} (--token-env, token_env=): give the server's token there"
    if not configured:
        return ("no token was sent (CCExec.token_env is empty): give the server's token in a variable "
                "named with --token-env (token_env=), or as token=")
    unset = "" if configured in os.environ else ", which is not set"
    return (f"the token was read from {configured} (CCExec.token_env){unset}: give the server's token there, "
            "or name another variable with --token-env (token_env=)")


@dataclass(frozen=True)
class Target:
    """Where a run goes: a server URL and its token (never shown in reprs)."""

    url: str
    token: str | None = field(default=None, repr=False)
    ssl: Any = field(default=None, repr=False, compare=False)
    """The client TLS context of a ``wss://`` server (an ``ssl.SSLContext``), if it needs one."""
    locate: Locator | None = field(default=None, repr=False, compare=False)
    """Where the server is now, asked before each reconnect of a run following a job: set
    for the user's job server, whose address and token change when it is started again."""
    token_hint: str = field(default=TOKEN_HINT, repr=False, compare=False)
    """What to give a server that refuses the token: where it came from (see :func:`token_hint`)."""
    reconnect_timeout: float = field(default=300.0, repr=False, compare=False)
    """How long a run's client goes on reconnecting before the run ends ``error`` (``CCExec.reconnect_timeout``)."""


def _claude_field(name: str, doc: str, *, sequence: bool = False) -> Any:
    """A read-only attribute of :class:`Run` taken from ``run.claude`` (None without one); a
    ``sequence`` as a read-only list (:func:`_shown_list`)."""

    def read(self: Run) -> Any:
        view = self.claude
        value = getattr(view, name, None) if view is not None else None
        return _shown_list(self._shown_lists, name, value or ()) if sequence else value

    return property(read, doc=doc)


def _shown_list(kept: dict[str, tuple[tuple[Any, ...], FrozenList]], name: str, items: tuple[Any, ...]) -> FrozenList:
    """The snapshot's ``items`` as a read-only list: the one made at an earlier read while they are
    the same (a snapshot keeps its tuple while nothing in it changed), so reading again builds
    nothing (each read built a list of every call: a loop over ``run.tool_calls[i]`` was quadratic).
    Read-only since every read shares it: ``list(run.tool_calls)`` is a copy to change."""
    shown = kept.get(name)
    if shown is None or shown[0] is not items:
        shown = kept[name] = (items, FrozenList(items))
    return shown[1]


def call_back(callback: Callable[[T], object], value: T) -> None:
    """Call a user's done callback, logging whatever it raises: it runs on the background
    loop thread, which a SystemExit or KeyboardInterrupt ended (every run then hung)."""
    try:
        callback(value)
    except BaseException:
        logger.exception("! a done callback raised (ignored)")


class Run:
    """One run of a command or of a Claude prompt: live state, output and control.

    Attributes: ``state`` (the :class:`RunState`), ``events`` (every event received,
    in order: the server's notifications, the client's ``client.*`` connection events,
    and local ones without ``seq`` such as a failure to connect),
    ``options`` (what the caller asked for), ``view`` (the widget view, if any),
    ``interpreter`` (see :class:`Interpreter`).
    """

    def __init__(
        self,
        spec: RunSpec,
        target: Target,
        *,
        label: str | None = None,
        options: Mapping[str, Any] | None = None,
        interpreter: Interpreter | None = None,
        settle_timeout: float = 15.0,
        job_id: str | None = None,
        conversation: Conversation | None = None,
        prompter: Prompter | None = None,
    ) -> None:
        self.spec = spec
        self.target = target
        self.label = label or spec.label
        self.options: dict[str, Any] = dict(options or {})
        self.interpreter = interpreter
        self.settle_timeout = settle_timeout
        self.state = RunState()
        self.events: list[Event] = []
        self.view: RunView | None = None
        self.presenter: Presenter | None = None
        self._kernel_loop: KernelLoop | None = None
        self._queued = False  # waits in a queue until start() (enqueue())
        self._client: Client | None = None
        self._cancel_requested = threading.Event()  # set by any thread, read on the loop
        self._cancel_reason = CANCELLED_BY_YOU  # the first cancel()'s reason: its end says it
        self._ended: asyncio.Event | None = None
        self._done: concurrent.futures.Future[Run] = concurrent.futures.Future()
        self._done.set_running_or_notify_cancel()  # nobody may cancel the run's outcome
        self._finished = threading.Event()
        self._shown_in: object = None
        self.job_id = job_id
        """The durable job's id (None for an ordinary run; known once a durable run started)."""
        self.attached = job_id is not None
        """True when this handle follows an existing job (``attach``) rather than starting one."""
        self.conversation = conversation
        self.prompter = prompter
        self.one_shot = False
        """Used one-shot (``--wait``, ``wait=True``, ``arun``): at the end of each turn of a
        conversation its record takes the widget's place, as when the process ends."""
        self._idle = threading.Event()  # no turn runs: what wait() and await wait for
        self._idle_lock = threading.Lock()
        self._idle_waiters: list[concurrent.futures.Future[Run]] = []
        # While an attach waits for its answer, the replay's "between turns" is held: the
        # job's own times come with the answer, and wait() must not return before them.
        self._attaching = False
        self._held_idle: bool | None = None
        self._attached_to_ended_job = False  # its replayed turn ends are history
        self._cancel_undelivered = False  # cancelled while reconnecting: sent once back
        self._loop_stopping = False  # cancelled by us because the loop stops: its end says so
        self._settled_here = False  # ended here without the server's word: it says nothing more
        self._user: weakref.ref[Run] | None = None  # the user's handle (user_handle), never held here
        self._shown_lists: dict[str, tuple[tuple[Any, ...], FrozenList]] = {}  # see _shown_list
        self._writing_input = False  # a one-shot input goes from here after the start (see accepted)

    # -- Reading ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        """starting, running, thinking, paused, completed, failed, cancelled, timeout or error."""
        return self.state.status

    @property
    def exit_code(self) -> int | None:
        """The exit code (negative signal number when killed); None until the end."""
        return self.state.exit_code

    @property
    def escaped_pids(self) -> list[int]:
        """Processes that left the run's process group (``setsid``), named by the server at
        the end ([] until then, and for none); a notice in the record says whether they still run."""
        return list(self.state.escaped_pids)

    @property
    def error(self) -> str | None:
        """Why the run failed or stopped early, if the server or the client said; between the
        turns of a conversation, why its latest turn failed (Claude's message)."""
        state = self.state
        if state.error is None and state.between_turns and state.turn_status == "failed":
            return self._turn_failure() or "the turn failed"  # a failed turn's answer is its error
        return state.error

    def _turn_failure(self) -> str:
        """Why the latest Claude turn failed, in Claude's words ("" if it did not)."""
        view = self.claude
        if view is None or getattr(view, "is_error", False) is not True:
            return ""
        answer = getattr(view, "answer", "")
        return answer.strip() if isinstance(answer, str) else ""

    @property
    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.state.stdout

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.state.stderr

    @property
    def output(self) -> OutputStore:
        """The whole output, for huge runs: ``iter_chunks()``, ``tail(n)``, ``path``.

        The first few MiB stay in memory, the rest on disk; ``stdout`` and ``stderr``
        read from it.
        """
        return self.state.output

    @property
    def duration(self) -> float | None:
        """Seconds the run took (the server's figure), or has taken so far.

        An attached run counts from its job's start (not the attach) to its job's end. A
        run whose reconnects gave up counts to the last message it had from the server.
        """
        return elapsed(self.state, time.monotonic())

    @property
    def done(self) -> bool:
        """Whether the run is over and its handle will not change any more."""
        return self._done.done()

    @property
    def queued(self) -> bool:
        """Whether the run waits in a queue to be started (:meth:`enqueue`; a batch's queue)."""
        return self._queued and self._kernel_loop is None and not self.done

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called (the run may not have ended yet)."""
        return self._cancel_requested.is_set()

    @property
    def durable(self) -> bool:
        """Whether the run is a job of a job server (started durable, or attached)."""
        return self.attached or self.spec.job is not None

    # -- Claude (from the interpreter) -------------------------------------------------

    @property
    def claude(self) -> Any:
        """A consistent snapshot of everything Claude reported so far
        (:class:`~cc_executor_nb.claude.interpreter.ClaudeView`); None for commands.

        ``run.text``, ``run.cost_usd`` and the other Claude attributes read from it.
        """
        interpreter = self.interpreter
        return interpreter.snapshot() if interpreter is not None else None

    text = _claude_field("text", "Claude's answer text so far.")
    answer = _claude_field("answer", "Claude's final answer (the result text; for an API error, its message).")
    result = _claude_field("result", "Claude's final ``result`` event.")
    cost_usd = _claude_field("cost_usd", "The run's cost in US dollars, as reported by Claude.")
    usage = _claude_field("usage", "Token usage, as reported by Claude.")
    session_id = _claude_field("session_id", "Claude's session id (not the executor's; see ``state.session_id``).")
    model = _claude_field("model", "The model Claude used.")
    is_error = _claude_field("is_error", "Whether Claude reported an error.")
    api_error_status = _claude_field("api_error_status", "The HTTP status of an API error Claude reported (e.g. 529).")
    thinking = _claude_field("thinking", "Claude's thinking text, when the model streamed it.")
    num_turns = _claude_field("num_turns", "Agent turns Claude took.")
    tool_calls = _claude_field(
        "tool_calls", "Claude's tool calls so far: a read-only list of read-only calls, shared by every read "
        "while no call changed (``list(run.tool_calls)`` is a copy to change).", sequence=True)
    retries = _claude_field("retries", "API retries Claude reported (attempt, delay, status), a read-only list.",
                            sequence=True)

    # -- A conversation (interactive Claude runs) ----------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the process runs (between turns of a conversation too)."""
        return self.state.alive

    @property
    def interactive(self) -> bool:
        """Whether the run takes questions and follow-ups (host mode, not one-shot)."""
        return self.conversation is not None and self.conversation.interactive

    @property
    def permission_requests(self) -> list[PermissionRequest]:
        """Every permission question of the run, oldest first (each an immutable value)."""
        return list(self.conversation.view().requests) if self.conversation is not None else []

    @property
    def pending(self) -> PermissionRequest | None:
        """The first question still waiting for an answer, or None."""
        pending = self.conversation.view().pending if self.conversation is not None else ()
        return pending[0] if pending else None

    def approve(self, request: PermissionRequest | str | None = None, *, always: bool = False) -> Run:
        """Allow a question (default: the first pending one). Returns self.

        ``always``: allow such calls for the rest of this run (the CLI's "don't ask
        again", kept in the process, never in your settings). ValueError when nothing
        is pending or the question was already decided.
        """
        try:
            self.decide(_request_id(request), True, always=always, via="code", strict=True)
        except Exception as exc:
            if is_refusal(exc):  # from here: the caller's frames end on the method called
                raise exc.with_traceback(None) from None
            raise
        return self

    def deny(self, request: PermissionRequest | str | None = None, message: str = "") -> Run:
        """Refuse a question (default: the first pending one); ``message`` reaches the model.

        ValueError, the question left pending, when ``message`` is not valid UTF-8."""
        if isinstance(message, str):
            check_utf8("the message", message)
        try:
            self.decide(_request_id(request), False, message=message, via="code", strict=True)
        except Exception as exc:
            if is_refusal(exc):
                raise exc.with_traceback(None) from None
            raise
        return self

    def decide(
        self,
        request_id: str | None,
        allow: bool,
        *,
        always: bool = False,
        message: str = "",
        via: str = "widget",
        strict: bool = False,
    ) -> PermissionRequest | None:
        """Answer a question on behalf of a front end (``via``: who answered).

        Not strict (the default): a question already decided is ignored (a late click).
        ValueError, the question left pending, when ``message`` is not valid UTF-8 (the
        widget's card shows it).
        """
        if isinstance(message, str):
            check_utf8("the message", message)
        answer = Answer(allow, always=always, message=message)
        try:
            return self._converse(lambda c: c.decide(request_id, answer, via=via, strict=strict))
        except Exception as exc:
            if is_refusal(exc):
                raise exc.with_traceback(None) from None
            raise

    def send(self, prompt: str) -> Run:
        """A follow-up in the same process (same Claude session): a new turn. Returns self.

        Sent at once when the last turn is over, else after it. ``wait()`` then waits
        for this turn. RuntimeError when the conversation is over or the run is one-shot.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"a follow-up must be a string, not {prompt!r}")
        if not prompt.strip():
            raise ValueError("the follow-up is empty")
        check_utf8("the follow-up", prompt)
        was_idle = self._idle.is_set()
        self._idle.clear()
        try:
            self._converse(lambda c: c.send(prompt))
        except BaseException as exc:
            if was_idle:
                self._idle.set()
            if is_refusal(exc):
                raise exc.with_traceback(None) from None
            raise
        return self

    def interrupt(self) -> Run:
        """Stop the current turn gracefully: it ends with a result, the process stays.

        SIGTERM follows only if no result comes within the kill grace. Between turns, or
        once the conversation is over, there is nothing to interrupt: nothing is sent and a
        notice says so, once: in the run's view, or printed here (``[note] ...``) when no
        view shows it (the widget was never shown, or its record took its place). Returns self.
        """
        try:
            said = self._converse(_interrupt_saying)
        except Exception as exc:
            if is_refusal(exc):
                raise exc.with_traceback(None) from None
            raise
        presenter = self.presenter
        if said is not None and (presenter is None or not presenter.shows_notices()):
            print(f"[note] {said}", flush=True)
        return self

    def end(self) -> Run:
        """Close the conversation's input: the current turn (if any) finishes, then the
        process exits. ``wait()`` then waits for the exit. Returns self."""
        if self.conversation is None:
            raise RuntimeError("this run has no conversation (a command, or a one-shot Claude run)")
        if not self.done:
            self._idle.clear()
        self._converse(lambda c: c.end())
        if self.done:
            self._set_idle(True)
        return self

    def _converse(self, action: Callable[[Conversation], T], timeout: float | None = CONTROL_TIMEOUT) -> T:
        """Run ``action`` on the conversation, on the loop thread.

        A refusal (:func:`~cc_executor_nb.kernel.runstate.refusal`) comes without the loop's
        frames; each public method raises it again from its own frame, so that a traceback
        ends on the method the user called, not on this one."""
        conversation = self.conversation
        if conversation is None:
            raise RuntimeError("this run has no conversation (a command, or a one-shot Claude run)")
        loop = self._kernel_loop
        if loop is None:
            raise RuntimeError("this run was never started")
        if loop.on_loop_thread():
            return action(conversation)

        async def act() -> T:
            return action(conversation)

        try:
            return loop.submit(act()).result(timeout)
        except Exception as exc:
            if is_refusal(exc):
                raise exc.with_traceback(None) from None
            raise

    # -- The user's handle -------------------------------------------------------------

    def user_handle(self, widget_shown: Callable[[], bool], *, let_go: bool = True) -> Run:
        """This run as an object the background loop never holds, to give its user.

        It is the same run in every respect (its class; its attributes are this object's),
        so the loop's own references do not keep it alive and its loss can be seen: once the
        last reference to it is gone and no widget shows the run (``widget_shown()``, asked on
        the loop thread), nobody can answer its questions or follow it up any more, and an
        interactive conversation that is not durable ends (:meth:`Conversation.nobody_left`).
        A durable one is let go (``let_go``): this kernel stops following its job, which goes
        on in the job server (its idle timeout counts from then), for any kernel to attach to.
        """
        handle = object.__new__(type(self))
        handle.__dict__ = self.__dict__
        self._user = weakref.ref(handle)
        weakref.finalize(handle, self.nobody_holds, widget_shown, let_go=let_go).atexit = False
        return handle

    def _for_user(self) -> Run:
        """The user's handle on this run while it lives (what callbacks are given), else this object."""
        handle = self._user() if self._user is not None else None
        return handle if handle is not None else self

    def nobody_holds(self, widget_shown: Callable[[], bool], *, let_go: bool = True) -> None:
        """The user's handle is gone (on whichever thread let go of it): judge on the loop
        whether anyone can still reach the run (a started one: a batch asks again at the start
        of a run whose handle went while it was queued). A durable one is let go if ``let_go``."""
        loop = self._kernel_loop
        if loop is None or self.done or self.conversation is None or (self.durable and not let_go):
            return
        if _ipython_exiting():
            return  # its last reset drops every handle; the loop's end closes the run, quietly
        with contextlib.suppress(LoopStopped):
            loop.submit(self._nobody_holds(widget_shown))

    async def _nobody_holds(self, widget_shown: Callable[[], bool]) -> None:
        conversation = self.conversation
        if conversation is None or self.state.finished or widget_shown():
            return
        if self.durable:
            await self._stop_following(conversation)
        else:
            conversation.nobody_left()

    async def _stop_following(self, conversation: Conversation) -> None:
        """Stop following a durable job nobody here can reach: its connection closes, so the
        job server counts one follower less (at none its ``stdin_idle_timeout`` counts), and
        the run ends ``detached``. A job still being handed its prompt, or being attached to, is
        let go once it has it, or is followed. So is one that owes its job something asked here
        (:attr:`Conversation.owes_the_job`: a follow-up queued for the turn's end, ``end()``'s
        close of the input, a line not yet written): once the job has it."""
        while not ((self.accepted and self._client is not None and not conversation.owes_the_job)
                   or self.state.finished):
            await asyncio.sleep(_ACCEPT_POLL)
        client = self._client
        if self.state.finished or client is None:
            return
        self._detach(NOBODY_FOLLOWS)
        conversation.stop_following()
        await _close(client)

    # -- Starting (caller's thread) -----------------------------------------------------

    def enqueue(self) -> Run:
        """Mark the run as waiting in a queue until :meth:`start` (a batch's queue does): its
        record then says it is queued, not running. Returns self."""
        self._queued = True
        return self

    def start(self, kernel_loop: KernelLoop) -> Run:
        """Drive the run on ``kernel_loop``; returns at once."""
        if self._kernel_loop is not None:
            raise RuntimeError("this run was already started")
        self._kernel_loop = kernel_loop
        try:
            if self.presenter is not None:
                self.presenter.attach(kernel_loop.loop)
            kernel_loop.submit(self._drive())
        except Exception:
            # Nothing was started (the loop stopped, or the view failed to attach): its owner
            # can still end it with abandon() (a batch's queue does), which a run marked
            # started ignored, leaving it "starting" for good.
            self._kernel_loop = None
            raise
        return self

    # -- Control (any thread but the loop's) ---------------------------------------------

    def cancel(self, timeout: float | None = CONTROL_TIMEOUT, *, reason: str = CANCELLED_BY_YOU) -> Run:
        """Cancel the run (SIGTERM, then SIGKILL after the grace). Returns self.

        Raises ServerUnresponsive (a TimeoutError) when the server does not answer within
        ``timeout`` seconds: the cancel is not withdrawn, and ends the run here once the
        connection is found lost.

        ``reason``: why, as ``run.error`` and its record say it once it ended (for owners that
        cancel on their own account, as a batch whose budget is spent).
        """
        if not self._cancel_requested.is_set():
            self._cancel_reason = reason
        self._cancel_requested.set()
        return self._control("CANCEL", timeout)

    def pause(self, timeout: float | None = CONTROL_TIMEOUT) -> Run:
        """Pause the process group (SIGSTOP). Returns self."""
        return self._control("PAUSE", timeout)

    def resume(self, timeout: float | None = CONTROL_TIMEOUT) -> Run:
        """Resume the process group (SIGCONT). Returns self."""
        return self._control("RESUME", timeout)

    def abandon(self, reason: str, *, status: str = "error") -> Run:
        """End a run that was never started, without starting it: ``status`` ``error`` (or
        ``cancelled``) with ``reason`` as its error. Returns self; no-op once started or over.

        For owners of runs that decide not to run them after all (a batch's queue).
        """
        if self._kernel_loop is not None or self.done:
            return self
        if status == "cancelled":
            self._settle_locally(reason)
        else:
            self._fail(reason)
        self._finish()
        return self

    def lose(self, reason: str) -> Run:
        """End a started run whose server is gone for good (its Dask worker left the cluster):
        ``error`` with ``reason``, without waiting for its reconnects to give up. Returns self;
        no-op before the start and once over. For owners that know more than the connection."""
        loop = self._kernel_loop
        if loop is None or self.done:
            return self
        loop.submit(self._lose(reason))
        return self

    async def _lose(self, reason: str) -> None:
        self._fail(reason)  # the run's drive sees its end and closes the connection, its reconnects too

    def _control(self, kind: str, timeout: float | None) -> Run:
        loop = self._kernel_loop
        if loop is None or self.done:
            return self
        future = loop.submit(self._send_control(kind))
        if not loop.on_loop_thread():
            try:
                future.result(timeout)
            except TimeoutError:
                raise ServerUnresponsive(_unanswered(kind, shown_url(self.target.url), timeout)) from None
        return self

    async def _send_control(self, kind: str) -> None:
        client = self._client
        if client is None or self.done:
            return  # not started yet: _drive sends a pending CANCEL itself
        if kind == "CANCEL" and self.state.status == "reconnecting":
            self._cancel_when_back()
            return
        try:
            if kind == "CANCEL" and self.conversation is not None:
                await self.conversation.cancel()  # interrupts the turn first
            else:
                await client.control(kind)
        except NoProcessRunning:
            pass
        except ConnectionLost as exc:
            # Lost before the server answered (a frozen server found dead meanwhile): it may
            # never have had the request. A cancel, while the client reconnects, as above; a
            # pause or resume is not done for the caller, who is told.
            if kind != "CANCEL":
                raise ConnectionLost(_lost(kind, exc)) from None
            if not client.closed:
                self._cancel_when_back()
        except InvalidParams as exc:
            # PAUSE of a paused run, RESUME of a running one: it already is as asked.
            if kind == "CANCEL":
                raise
            logger.debug("control %s: %s", kind, exc)

    def _cancel_when_back(self) -> None:
        """The server cannot be reached (it died, froze, or its machine or Dask worker did):
        the run ends here, cancelled, and the cancel goes to the server if the connection
        comes back (a durable job has no detach TTL to end it otherwise)."""
        self._cancel_undelivered = True
        reason = self._cancel_reason  # an owner's (a batch's spent budget) is kept: why, then how
        self._settle_locally(UNREACHABLE_CANCEL if reason == CANCELLED_BY_YOU else f"{reason}, {_UNREACHABLE}")

    # -- Waiting ---------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Run:
        """Block the calling thread until the run ends, or its current turn; returns self.

        For a conversation, "the current turn": the process may live on for a follow-up
        (``alive``). A permission question that comes meanwhile is asked here, in the
        cell's input box or on the terminal, when nobody could click the widget.
        Raises TimeoutError when ``timeout`` seconds pass first (the run goes on).
        A KeyboardInterrupt (a kernel interrupt) cancels the run, waits for it to
        end, then propagates.
        """
        timeout = wait_seconds(timeout)
        if self._kernel_loop is None:
            if self.done:  # ended without starting (abandon)
                return self
            raise RuntimeError("this run was never started")
        if self.done or self._idle.is_set():
            return self  # nothing to wait for, wherever it is called from (a done callback)
        if self._kernel_loop.on_loop_thread():
            raise RuntimeError("Run.wait() would block the loop thread; use 'await run'")
        try:
            with self.prompter.waiting() if self.prompter is not None else contextlib.nullcontext():
                idle = self._wait_idle(timeout)
            if not idle:
                raise TimeoutError(f"run still {self.status} after {timeout} s")
        except KeyboardInterrupt as interrupt:
            if self.prompter is not None:
                # No input box while the run is cancelled; its question asked now reads cancelled by you.
                self.prompter.cell_interrupted(owner=self.conversation)
            from .presenter import terminal_interrupted

            terminal_interrupted()
            self._cancel_after_interrupt()
            shown_in_one_line(interrupt, "the run was cancelled")
            raise
        return self

    def wait_accepted(self, timeout: float) -> Run:
        """Block until a durable run's job server has its job (``job_id`` known) and its
        prompt (:attr:`accepted`), or the run is over, at most ``timeout`` s; returns self.
        From then on the job outlives this process: a script may exit at once. Polls (the
        start takes milliseconds, or a job server's start)."""
        deadline = time.monotonic() + timeout
        while not self.accepted and not self.done and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    @property
    def accepted(self) -> bool:
        """Whether a durable run's job has all it needs from this process: the job server has
        it (``job_id`` known) and its prompt reached it: a conversation's (host mode sends the
        prompt after the start), or a one-shot input too big for ``execute`` (sent after the
        start, then closed)."""
        conversation = self.conversation
        return (self.job_id is not None and not self._writing_input
                and (conversation is None or conversation.prompt_sent))

    def _wait_idle(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._idle.is_set():
            if self.prompter is not None:
                self.prompter.while_waiting(deadline)  # may ask a question here, until the deadline
                if self._idle.is_set():
                    return True  # the answer (or the question's withdrawal) let the turn end
            remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._idle.wait(remaining)
        return True

    def _wait_finished(self, timeout: float | None) -> bool:
        # Waiting in slices keeps the main thread responsive to signals on every platform.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.is_set():
            remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._finished.wait(remaining)
        return True

    def _cancel_after_interrupt(self) -> None:
        try:
            self.cancel()
            self._wait_finished(self.settle_timeout)
        except (CCExecError, TimeoutError, concurrent.futures.TimeoutError):
            logger.warning("! could not confirm the cancellation of %s", self.label)

    def __await__(self) -> Generator[Any, None, Run]:
        return self._wait_async().__await__()

    async def _wait_async(self) -> Run:
        with self._idle_lock:
            if self._idle.is_set():
                return self
            waiter: concurrent.futures.Future[Run] = concurrent.futures.Future()
            self._idle_waiters.append(waiter)
        # shield: cancelling the awaiting task must not cancel the run's shared outcome.
        outcome = asyncio.shield(asyncio.wrap_future(waiter))
        prompter = self.prompter
        if prompter is None or prompter.in_kernel:
            await _woken(outcome)  # a kernel asks in the busy cell's input box, or the card
            return self
        # Outside a kernel nobody can click a card and ``run`` is not bound until this
        # returns: the awaiting caller asks on the terminal, or denies, as wait() does.
        # Cancelling the await cancels only the wait for the thread: ``stop`` ends its asking.
        stop = _LoopStop(asyncio.get_running_loop())
        try:
            with prompter.waiting(awaited=True):
                while not outcome.done():
                    await asyncio.wait({outcome}, timeout=_AWAIT_POLL)
                    if not outcome.done() and prompter.asks:
                        await _woken(asyncio.ensure_future(
                            asyncio.to_thread(prompter.while_waiting, awaited=True, stop=stop)))
        finally:
            stop.set()
        outcome.result()
        return self  # the handle awaited (the loop's own object is not the user's: see user_handle)

    def _set_turn_idle(self, idle: bool) -> None:
        """The conversation's word on idleness (loop thread); held while an attach is answered.

        Attached to a job that already ended, the replay's turn ends are history: wait()
        waits for the replayed end of the process (its exit code, its status).
        """
        if self._attaching:
            self._held_idle = idle
            return
        if self._attached_to_ended_job:
            return
        self._set_idle(idle)

    def _set_idle(self, idle: bool) -> None:
        """No turn runs (or the run is over): wake wait() and await; or a turn runs again."""
        if not idle:
            self._idle.clear()
            return
        with self._idle_lock:
            self._idle.set()
            waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(self)

    def add_done_callback(self, callback: Callable[[Run], object]) -> None:
        """Call ``callback(run)`` once the run is over (at once if it is); what it raises is logged."""
        self._done.add_done_callback(lambda future: call_back(callback, future.result()._for_user()))

    # -- The record --------------------------------------------------------------------

    def transcript(self) -> str:
        """The run's record as Markdown: what a saved notebook shows of it.

        For Claude: the prompt, a note on the thinking, the tool log, retries, the answer
        and the footer (status, cost, tokens, turns, duration, model, session id). For a
        command: its whole line (when the label cuts it), status, exit code and the output
        tail. Model and child text is made inert (see
        :func:`~cc_executor_nb.kernel.transcript.safe_markdown`).
        """
        from .transcript import Transcript

        return Transcript(self).markdown()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record to ``path``: Markdown (``.md``) or a standalone HTML page (``.html``).

        Returns the path. Raises ValueError for another suffix.
        """
        from .transcript import Transcript

        return Transcript(self).save(path)

    # -- Display ---------------------------------------------------------------------

    def show(self) -> None:
        """Display the run in the current cell, at most once per cell."""
        cell = _current_cell()
        if self.presenter is None or (cell is not None and cell == self._shown_in):
            return
        self._shown_in = cell
        self.presenter.show()

    def _ipython_display_(self) -> None:
        from .presenter import name_in_terminal

        self.show()
        name_in_terminal(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if self.presenter is None:
            return {"text/plain": repr(self)}
        return dict(self.presenter.mimebundle())

    def __repr__(self) -> str:
        parts = [f"<Run {self.label!r}: {self.status}"]
        if self.job_id is not None:
            parts.append(f"job {self.job_id}")
        if self.exit_code is not None:
            parts.append(f"exit {self.exit_code}")
        duration = self.duration
        if duration is not None:
            parts.append(format_took(duration) if self.state.finished else format_duration(duration))
        return ", ".join(parts) + ">"

    # -- Driving (loop thread) ----------------------------------------------------------

    async def _drive(self) -> None:
        self._ended = asyncio.Event()
        client: Client | None = None
        try:
            target = self.target
            client = await self._spare(target) or await connect(
                target.url, target.token, buffer_events=False, ssl=target.ssl, locate=target.locate,
                reconnect_timeout=target.reconnect_timeout,
            )
            await self._execute(client)
        except asyncio.CancelledError:
            if self.durable:
                try:
                    if self.conversation is not None:
                        await self.conversation.hand_over()  # what was asked of the job goes first
                finally:
                    self._detach("the background loop was stopped; the job goes on in the job server")
                raise
            await self._cancel_on_shutdown(client)
            self._settle_locally(LOOP_STOPPED)
            raise
        except Exception as exc:
            hint = self.target.token_hint
            self._fail(_describe(exc) if client is not None else unreachable(self.target.url, exc, token_hint=hint))
        finally:
            try:
                if self._cancel_undelivered and client is not None and not client.closed:
                    client.remove_listener(self._from_server)  # the run is over here; the rest is the server's
                    task = asyncio.ensure_future(_cancel_when_back(client, self.label))
                    _CANCELS_IN_FLIGHT.add(task)  # held: the loop keeps only weak references to tasks
                    task.add_done_callback(_CANCELS_IN_FLIGHT.discard)
                else:
                    await _close(client)
            finally:
                self._client = None  # a finished run holds no connection (the output cache keeps runs)
                if self.conversation is not None:
                    self.conversation.release()
                self._finish()  # also when the loop's stop cancels the close: the run is over
                kernel_loop = self._kernel_loop
                if kernel_loop is not None and self._in_kernel(self.target):
                    kernel_loop.refill_spare()  # for the next run

    def _in_kernel(self, target: Target) -> bool:
        """Whether ``target`` is the in-kernel server of the loop this run is driven on."""
        server = self._kernel_loop.server if self._kernel_loop is not None else None
        return (server is not None and target.ssl is None and target.locate is None
                and (target.url, target.token) == (server.url, server.token))

    async def _spare(self, target: Target) -> Client | None:
        """The loop's spare connection, when ``target`` is its server (None: dial one)."""
        if not self._in_kernel(target):
            return None
        assert self._kernel_loop is not None
        return await self._kernel_loop.spare.take(target.url, target.token, reconnect_timeout=target.reconnect_timeout)

    async def _execute(self, client: Client) -> None:
        self._on_event(await client.wait_connected())
        client.add_listener(self._from_server)
        closed = asyncio.ensure_future(_until_closed(client))
        try:
            if self._cancel_requested.is_set() and not self.attached:
                # An owner's reason (a batch's spent budget) says why; a plain cancel, when.
                reason = self._cancel_reason
                self._settle_locally("cancelled before it started" if reason == CANCELLED_BY_YOU else reason)
                return
            conversation = self.conversation
            if conversation is not None and conversation.attached:
                conversation.bind(client, self._hooks())  # the job's replay comes with the attach
            spec: RunSpec | None = self.spec
            while spec is not None:
                await self._start_or_attach(client, spec)
                self._client = client
                if self._cancel_requested.is_set():
                    if conversation is not None:
                        # Cancelled while the start was under way: the conversation never
                        # started, but its cancel needs the connection (it was lost, and the
                        # CLI waited on its input for ever).
                        conversation.bind(client, self._hooks())
                    await self._send_control("CANCEL")
                elif conversation is not None and conversation.interactive and not conversation.attached:
                    conversation.start(client, self._hooks())
                await self._until_ended(closed)
                spec = self._fallback()
        finally:
            closed.cancel()
        if not self.state.finished:
            self._fail(f"connection lost: {client.close_reason or 'closed'}")

    async def _start_or_attach(self, client: Client, spec: RunSpec) -> None:
        if self.job_id is not None:
            self._attaching = True
            try:
                attached = await client.attach(self.job_id)
                job = attached.get("job")
                self._attached_to_ended_job = isinstance(job, Mapping) and job.get("ended_at") is not None
                self._take_job_times(job)
                self._take_job_silence(job, attached.get("last_seq"))
                if self.conversation is not None:
                    self.conversation.replayed_until(int(attached.get("last_seq") or 0))
            finally:
                self._attaching = False
                held, self._held_idle = self._held_idle, None
                if held is not None and not self._attached_to_ended_job:
                    self._set_idle(held)
            return
        params = spec.execute_params()
        # The server writes an input that fits one request at the start (a job outlives this
        # kernel; the CLI fails when its stdin stays empty 3 s, e.g. while a cell holds the
        # GIL). A server too old for it, or an input the request cannot hold within the
        # server's frame limit, gets it from here.
        server_writes = spec.input is not None and await client.takes_input_in_execute(spec.input, **params)
        if server_writes:
            params["input"] = spec.input
        # Set before job_id: a durable run is not accepted (a script may not exit) while its
        # job's input still goes from here; the loop's stop would cancel the job half-fed.
        self._writing_input = spec.input is not None and not server_writes
        try:
            started = await client.execute(**params)
            self.job_id = started.get("job_id")
            if self._writing_input:
                await self._write_input(client, spec.input or "")
        finally:
            self._writing_input = False

    async def _write_input(self, client: Client, text: str) -> None:
        """Write ``text`` to the started process's stdin and close it.

        A durable job cut off from it (a lost connection, a piece refused for good) has at
        most part of it and would wait for the rest for ever (a one-shot job has no idle
        timeout): it is cancelled. A piece refused while the CLI has not read the 8 MiB its
        queue holds is no cut: ``Client.input`` sends it again as the CLI reads. So is a
        write stopped by the loop's stop (the kernel's exit or restart, ``%reload_ext``)
        before all of it was sent and the input closed: the job is cancelled on the way out.
        """
        sent = False
        try:
            # A CLI that exited (or closed its input) before reading says why by its exit
            # code and stderr: the refused write is no error of the run.
            with contextlib.suppress(NoProcessRunning):
                await client.input(text)
                sent = True
                await client.close_input()
        except asyncio.CancelledError:
            if self.job_id is not None:
                await _end_input_on_the_way_out(client, sent)
            raise
        except ConnectionLost as exc:
            if self.job_id is None:
                raise  # the session's process ends with the session
            done = await _cancel_job(self.target, self.job_id)
            raise ConnectionLost(f"{exc}; its input was cut off: its job {done}") from exc
        except CCExecError as exc:
            if self.job_id is None:
                raise  # the session's process ends with the session
            # Still connected: cancel it here, the reason its end's error.
            if not self._cancel_requested.is_set():
                self._cancel_reason = f"{exc}; its input was cut off, so its job was cancelled"
            self._cancel_requested.set()
            await client.control("CANCEL")

    def _take_job_times(self, job: object) -> None:
        """The job's start and end (a ``jobs.list`` entry, times since the epoch) become
        the run's, in its monotonic clock: an attached run lasted what its job did."""
        if not isinstance(job, Mapping):
            return
        wall, now = time.time(), time.monotonic()
        started, ended = _epoch(job.get("started_at")), _epoch(job.get("ended_at"))
        self.state.take_job_times(
            None if started is None else now - max(0.0, wall - started),
            None if ended is None else now - max(0.0, wall - ended),
        )
        if self.presenter is not None:
            self.presenter.refresh()

    def _take_job_silence(self, job: object, last_seq: object) -> None:
        """A running job's silence (``inactive_seconds`` of its entry) dates its replayed output."""
        silent = job.get("inactive_seconds") if isinstance(job, Mapping) else None
        if isinstance(silent, (int, float)) and not isinstance(silent, bool) and silent >= 0:
            seq = last_seq if isinstance(last_seq, int) and not isinstance(last_seq, bool) else 0
            self.state.take_job_silence(time.monotonic() - float(silent), seq)

    def _hooks(self) -> Any:
        from .conversation import Hooks

        presenter = self.presenter
        return Hooks(
            emit=lambda method, params: self._on_event(make_event(method, params)),
            set_idle=self._set_turn_idle,
            changed=presenter.refresh if presenter is not None else lambda: None,
        )

    def _fallback(self) -> RunSpec | None:
        """The one-shot run to start when the CLI turned out to lack host mode."""
        spec = self.conversation.take_fallback() if self.conversation is not None else None
        if spec is not None and self._ended is not None:
            self.spec = spec
            self._ended.clear()
        return spec

    async def _until_ended(self, closed: asyncio.Future[None]) -> None:
        assert self._ended is not None
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            waiters: list[asyncio.Future[Any]] = [ended, closed]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()

    async def _cancel_on_shutdown(self, client: Client | None) -> None:
        """The loop is stopping: end the process and give it a moment to report.

        A conversation between turns is ended (its input closed: the CLI exits by itself,
        ``completed``); one in a turn is interrupted, then cancelled; any other run is
        cancelled. Whatever is left, the server's close kills.
        """
        if client is None or self._client is None or self.state.finished:
            return
        self._loop_stopping = True
        try:
            await asyncio.wait_for(self._stop_and_settle(client), self.settle_timeout)
        except (TimeoutError, CCExecError) as exc:
            logger.warning("! could not confirm the end of %s: %s", self.label, _describe(exc))

    async def _stop_and_settle(self, client: Client) -> None:
        assert self._ended is not None
        conversation = self.conversation
        if conversation is not None and conversation.interactive:
            await conversation.close("shutdown")
        else:
            with contextlib.suppress(NoProcessRunning):
                await client.cancel()
        await self._ended.wait()

    def _on_event(self, event: Event) -> None:
        """Take one event (loop thread, in order): server notifications, client and local events.

        A conversation may hold the process's first output back (until it proves host
        mode) and acts on each event once it is folded in.
        """
        ending = isinstance(event, (Completed, ProcessError))
        try:
            self._take(event)
        except Exception as exc:
            if not ending:
                raise
            self._break_off(event, exc)
        if ending and self._ended is not None:
            self._ended.set()

    def _take(self, event: Event) -> None:
        conversation = self.conversation
        admitted = conversation.admit(event) if conversation is not None else [event]
        for item in admitted:
            self._fold(item)
            if conversation is not None:
                conversation.react(item)

    def _break_off(self, event: Event, exc: Exception) -> None:
        """Taking in the run's end raised (a custom interpreter or view): the run ends
        ``error`` saying so and how the process ended, rather than ``running`` for ever."""
        logger.exception("! could not take in the end of %s", self.label)
        message = f"could not take in the run's end ({_describe(exc)}); {_ending_words(event)}"
        self.state.break_off(message, time.monotonic())
        failure = make_event(methods.PROCESS_ERROR, {"error": message})
        self.events.append(failure)
        presenter = self.presenter
        if presenter is not None:
            _log_errors(lambda: presenter.update(failure))

    def _fold(self, event: Event) -> None:
        """Fold one event into the state, the interpreter and the view."""
        if isinstance(event, Completed) and self.interpreter is not None:
            event = ended_after_interrupt(judged(event, self.interpreter), self.state)
            event = ended_after_failed_turn(event, self.state, self._turn_failure)
            event = self._timed_out_between_turns(event)
        if self._cancel_requested.is_set():
            event = cancelled_as_asked(event, self._cancel_reason)
        elif self._loop_stopping:
            event = cancelled_as_the_loop_stopped(event)
        now = time.monotonic()
        self.state.apply(event.method, event.params, now)
        self.events.append(self.state.output.keep(event))  # output text lives in the store
        _fold_connection_event(self.state, event, now)
        if event.method == methods.CLIENT_RECONNECTED:
            self._take_job_times(event.params.get("job"))  # attached again: maybe to a new server
        interpreter = self.interpreter
        if interpreter is not None:
            if isinstance(event, Output):
                _log_errors(lambda: interpreter.feed(event.stream, event.data))
            elif event.method in _MEASURED or event.method == methods.CONVERSATION_TURN:
                self._take_progress(interpreter, now)
        if self.presenter is not None:
            self.presenter.update(event)

    def _timed_out_between_turns(self, event: Event) -> Event:
        """A conversation whose timeout passed while it waited for a follow-up, its last turn
        answered: nothing was cut, so it ends ``completed`` with a note, as an idle end does. It
        read ``timeout``, "timed out after 3 s", under a whole answer (``--timeout`` bounds the
        run; the process lives on between turns). The exit code stays the CLI's (143)."""
        # (The server's process.cancelled came first and ended between_turns; turn_status stays
        # the latest turn's until a next one begins.)
        if not (isinstance(event, Completed) and event.status == "timeout" and self.state.turn_status == "completed"):
            return event
        if self.conversation is not None:
            self.conversation.ended_at_timeout(self.spec.timeout)
        return make_event(event.method, {**event.params, "status": "completed", "error": None})

    def _take_progress(self, interpreter: Interpreter, now: float) -> None:
        """The interpreter's estimate, when it has one, replaces the server's."""
        # A turn's end is the end of what its prompt asked for.
        progress = interpreter.progress(now, self.state.finished or self.state.between_turns)
        if progress is not None:
            self.state.progress = progress.to_dict()

    def _fail(self, message: str) -> None:
        if not self.state.finished:
            self._on_event(make_event(methods.PROCESS_ERROR, {"error": message}))

    def _detach(self, message: str) -> None:
        """Stop following a durable job that goes on without this handle."""
        if not self.state.finished:
            self._on_event(make_event(methods.CLIENT_DETACHED, {"job_id": self.job_id, "reason": message}))

    def _settle_locally(self, message: str) -> None:
        """End the run as cancelled without the server's word (it never started, or is gone).

        The server's later notifications are not taken: a stop of the loop while the start
        was under way ended the run before its ``process.started`` came, which printed
        ``[started]`` after ``[cancelled]`` and made the run ``running`` again.
        """
        if not self.state.finished:
            self._settled_here = True
            params = {"status": "cancelled", "exit_code": None, "error": message}
            self._on_event(make_event(methods.PROCESS_COMPLETED, params))

    def _from_server(self, event: Event) -> None:
        """A notification of the run's connection (the client's listener), unless the run was
        ended here (:meth:`_settle_locally`): its end is then the last word."""
        if not self._settled_here:
            self._on_event(event)

    def _finish(self) -> None:
        interpreter = self.interpreter
        if interpreter is not None:
            _log_errors(interpreter.finish)
            _log_errors(lambda: self._take_progress(interpreter, time.monotonic()))
        if self.presenter is not None:
            _log_errors(self.presenter.finish)
        self._done.set_result(self)
        self._finished.set()
        self._set_idle(True)


_ACCEPT_POLL = 0.05
"""Seconds between looks at whether a durable run nobody holds has handed its job its prompt."""

_AWAIT_POLL = 0.1
"""Seconds between looks for an open question while ``await run`` waits outside a kernel."""


async def _woken(future: asyncio.Future[T]) -> T:
    """``await future``, the loop waking every ``_AWAIT_POLL`` meanwhile (cancelling this leaves
    ``future`` alone).

    A Ctrl-C that the kernel hands to a thread other than the main one (any thread may take a
    process's SIGINT) only flags the interrupt; the main thread raises it when it next runs
    Python. Terminal IPython's loop has no wakeup fd: with nothing else scheduled it slept in
    its selector, and the interrupt (and the run's cancel) waited for the run's end, or for ever
    while a question was asked.
    """
    while not future.done():
        await asyncio.wait({future}, timeout=_AWAIT_POLL)
    return future.result()


class _LoopStop(threading.Event):
    """Set, or the awaiting loop no longer runs: a Ctrl-C in terminal IPython's ``await``
    stops its loop without cancelling the task (no ``finally`` runs), and a thread that
    went on asking would take the lines typed at IPython's prompt as answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop

    def is_set(self) -> bool:
        return super().is_set() or not self.loop.is_running()


def _unanswered(kind: str, url: str, timeout: float | None) -> str:
    """Why a control call timed out: the request is not withdrawn, only no longer waited for."""
    then = ("and a cancel ends the run here once the connection is found lost" if kind == "CANCEL"
            else "so look at run.status before asking again")
    return (f"{kind.lower()}: {url} did not answer within {timeout:g} s (a frozen or unreachable "
            f"server?); the request is still on its way, {then}")


def _lost(kind: str, exc: ConnectionLost) -> str:
    """Why a pause or resume failed: its connection was lost before the answer."""
    return (f"{kind.lower()}: the connection was lost before the server answered ({exc}); the "
            f"{kind.lower()} may not have reached the server: ask again once the run is back")


_UNREACHABLE = "while the server could not be reached (the cancel is sent to it if the connection comes back)"
UNREACHABLE_CANCEL = f"cancelled {_UNREACHABLE}"


def _request_id(request: PermissionRequest | str | None) -> str | None:
    if request is None or isinstance(request, str):
        return request
    if isinstance(request, PermissionRequest):
        return request.id
    raise TypeError(f"not a permission request: {request!r}")


def _interrupt_saying(conversation: Conversation) -> str | None:
    """Interrupt the conversation; the notice this said (None: it interrupted, or said it before)."""
    before = len(conversation.view().notices)
    conversation.interrupt()
    notices = conversation.view().notices
    return notices[-1] if len(notices) > before else None


def judged(event: Completed, interpreter: Interpreter) -> Event:
    """A ``completed`` whose output the interpreter finds incomplete becomes ``failed``.

    The interpreter is finished first (a last line without a newline counts); its
    ``incomplete()`` (when it has one) gives the reason, put in ``error`` with the exit code.
    A ``failed`` one whose error only restates its exit code takes the interpreter's
    ``refused()`` instead, when it has one that says why (a claude CLI too old for an option).
    """
    if event.status == "failed":
        return _refusal_explained(event, interpreter)
    incomplete = getattr(interpreter, "incomplete", None)
    if event.status != "completed" or incomplete is None:
        return event
    _log_errors(interpreter.finish)  # a last line without a newline counts
    reason = incomplete()
    if not isinstance(reason, str):
        return event
    error = f"{reason} (exit code {event.exit_code})"
    return make_event(event.method, {**event.params, "status": "failed", "error": error, "incomplete": True})


def _refusal_explained(event: Completed, interpreter: Interpreter) -> Event:
    refused = getattr(interpreter, "refused", None)
    if refused is None or event.params.get("error") != f"exited with code {event.exit_code}":
        return event
    reason = refused()
    return make_event(event.method, {**event.params, "error": reason}) if isinstance(reason, str) else event


def cancelled_as_asked(event: Event, reason: str) -> Event:
    """A run cancelled from this handle: the server's "cancelled by the client" (its words for
    any client, another kernel's too) beside "killed by SIGTERM" read as a kill, not the cancel
    you asked for; it reads ``reason`` (:data:`CANCELLED_BY_YOU` unless its canceller said why)."""
    cancelled = isinstance(event, Completed) and event.status == "cancelled"
    if cancelled and event.params.get("error") == CANCELLED_BY_CLIENT:
        return make_event(event.method, {**event.params, "error": reason})
    return event


def cancelled_as_the_loop_stopped(event: Event) -> Event:
    """A run we cancelled because the loop stopped (a kernel's shutdown, ``%unload_ext``): the
    server's "cancelled by the client" read as a person's cancel; it says why, as a run the
    server never answered does (:data:`LOOP_STOPPED`)."""
    cancelled = isinstance(event, Completed) and event.status == "cancelled"
    if cancelled and event.params.get("error") == CANCELLED_BY_CLIENT:
        return make_event(event.method, {**event.params, "error": LOOP_STOPPED})
    return event


def ended_after_interrupt(event: Event, state: RunState) -> Event:
    """A conversation we ended after an interrupted turn: the CLI exits 1 for that turn.

    That is how the interrupted turn ended, not a failure of the process, and the
    conversation was ended as asked (``end()``, the idle timeout): the run ends
    ``completed`` without "exited with code 1" (it read ``[failed]``, then ``cancelled``).
    The exit code stays the CLI's; the turn stays ``cancelled`` (its record says
    "Interrupted").
    """
    if (isinstance(event, Completed) and state.ending and state.turn_status == "cancelled"
            and event.exit_code == 1 and event.status == "failed"):
        return make_event(event.method, {**event.params, "status": "completed", "error": None})
    return event


def ended_after_failed_turn(event: Event, state: RunState, failure: Callable[[], str]) -> Event:
    """A conversation we ended after a failed turn: the CLI exits 1 for that turn, and the
    run's error is the turn's (``failure()``: ``Reached maximum number of turns (1)``), not
    "exited with code 1", which says nothing of why. ``failure`` is asked only then.
    ``turn_error`` marks it as the turn's, which the record shows with that turn (it read a
    second time beside the exit code)."""
    if not (isinstance(event, Completed) and state.ending and state.turn_status == "failed"
            and event.status == "failed" and event.exit_code == 1 and not event.params.get("incomplete")):
        return event
    reason = failure()
    return make_event(event.method, {**event.params, "error": reason, "turn_error": True}) if reason else event


def _ending_words(event: Event) -> str:
    """How the process ended, as its end event says."""
    if isinstance(event, Completed):
        return f"the process ended {event.status}, exit code {event.exit_code}"
    return f"the run ended with the error: {event.params.get('error')}"


def _fold_connection_event(state: RunState, event: Event, now: float) -> None:
    """The client's own events: a dropped connection being re-established, or back."""
    if event.method == "client.reconnecting":
        state.mark_reconnecting(event.params, now)
    elif event.method == "client.reconnected":
        state.apply(methods.CONNECTED, {"session_id": event.params.get("session_id")}, now)
    elif event.method == methods.CLIENT_DETACHED:
        state.mark_detached(str(event.params.get("reason") or "detached"), now)
    elif event.method == methods.CLIENT_OUTPUT_GAP:
        state.mark_gap(event.params.get("missing_from"), event.params.get("missing_to"))


def _epoch(value: object) -> float | None:
    """Seconds since the epoch from a job record, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


_CANCELS_IN_FLIGHT: set[asyncio.Future[None]] = set()
"""Cancels made while reconnecting, waiting for the connection to come back."""


async def _cancel_when_back(client: Client, label: str) -> None:
    """Send a cancel made while ``client`` was reconnecting once its connection is back
    (its process, or durable job, then ends on the server), then close it."""
    back = asyncio.Event()

    def on_event(event: Event) -> None:
        if event.method == methods.CLIENT_RECONNECTED:
            back.set()

    client.add_listener(on_event)
    closed = asyncio.ensure_future(_until_closed(client))
    waiting = asyncio.ensure_future(back.wait())
    try:
        await asyncio.wait({closed, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if back.is_set() and not client.closed:
            with contextlib.suppress(NoProcessRunning):
                await client.control("CANCEL")
            logger.info("= %s: the cancel made while the server could not be reached was sent", label)
        else:
            logger.warning("! %s: the server was not reached again; the cancel was never sent (%s)",
                           label, client.close_reason or "closed")
    except (CCExecError, OSError) as exc:
        logger.warning("! %s: the cancel made while the server could not be reached failed: %s", label, exc)
    finally:
        waiting.cancel()
        closed.cancel()
        await _close(client)


async def _end_input_on_the_way_out(client: Client, sent: bool) -> None:
    """The loop stops while a durable job's input is written: its input closed if all of
    it was sent (asking again is harmless), else the job cancelled (its CLI would wait for
    the rest for ever). Best effort, within CONTROL_TIMEOUT."""
    step = client.close_input() if sent else client.control("CANCEL")
    with contextlib.suppress(CCExecError, TimeoutError):
        await asyncio.wait_for(step, CONTROL_TIMEOUT)


async def _cancel_job(target: Target, job_id: str) -> str:
    """Cancel ``job_id`` from a connection of its own; what became of it, in words."""
    client: Client | None = None
    try:
        client = await connect(target.url, target.token, ssl=target.ssl, locate=target.locate, auto_reconnect=False)
        await client.attach(job_id)
        await client.control("CANCEL")
    except NoProcessRunning:
        return "had ended"
    except (CCExecError, OSError) as exc:
        return f"could not be cancelled ({exc}): cancel it with cc_executor_nb.attach({job_id!r}).cancel()"
    finally:
        await _close(client)
    return "was cancelled"


async def _until_closed(client: Client) -> None:
    """Return when the connection closes (the event iterator ends then)."""
    async for _event in client.events():
        pass


async def _close(client: Client | None) -> None:
    if client is not None:
        try:
            await client.close()
        except (OSError, CCExecError) as exc:  # the connection was already broken
            logger.debug("closing the run's connection: %s", exc)


def _describe(exc: Exception) -> str:
    if isinstance(exc, CCExecError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def unreachable(url: str, exc: Exception, *, token_hint: str = TOKEN_HINT) -> str:
    """Why a connection to ``url`` could not be opened, and what to check (no secret of the URL).

    ``token_hint`` says where the token comes from, in the words of the caller's front end.
    """
    if isinstance(exc, HandshakeRefused) and exc.status == 401:
        return f"{exc}: {token_hint}"
    if isinstance(exc, OSError):
        return f"cannot reach {shown_url(url)}: {os_reason(url, exc)}"
    return _describe(exc)


def token_from_env(name: str, spelled: str) -> str:
    """The token in the environment variable ``name``, which the user gave as ``spelled``
    (e.g. ``--token-env NAME``); a ValueError naming both when it is not set."""
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"{spelled}: the environment variable {name} is not set")
    return value


def _log_errors(func: Callable[[], object]) -> None:
    try:
        func()
    except Exception:
        logger.exception("! run clean-up step failed")


def _ipython_exiting() -> bool:
    """Whether IPython is exiting: terminal IPython clears the user's namespace once its main
    loop ends (``_atexit_once``, its flag set first), which lets go of every handle while this
    package's loop still runs; that is no user dropping a run nobody can reach any more."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return bool(getattr(get_ipython(), "_atexit_once_called", False))


def _current_cell() -> object:
    """An id of the cell being run (kernel message id, else execution count), or None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None:
        return None
    get_parent = getattr(getattr(shell, "kernel", None), "get_parent", None)
    if callable(get_parent):
        parent = get_parent()
        header = parent.get("header") if isinstance(parent, dict) else None
        if isinstance(header, dict):
            return header.get("msg_id")
    return shell.execution_count
