"""The Python API behind ``%ccexec``: :func:`run` and :func:`arun`.

::

    import cc_executor_nb as ccx

    r = ccx.run("Summarise README.md")                 # a Claude prompt, shown live
    r = ccx.run("pytest -q", command=True, wait=True)  # a command line, blocking
    r.status, r.exit_code, r.stdout

    r = await ccx.arun("make test", command=True)      # in a cell: waits, kernel stays free

The keywords are the fields of :class:`~cc_executor_nb.kernel.options.RunOptions` and
:class:`~cc_executor_nb.claude.options.ClaudeOptions` (also given whole as ``options=``
and ``claude=``). Settings come from the extension's
:class:`~cc_executor_nb.kernel.config.CCExec` (``%config CCExec.x = ...``,
``ipython_config.py``); keywords override them. Without ``server`` (or
``CCExec.default_server``) runs go to a private server on the kernel's background loop
(:mod:`cc_executor_nb.kernel.loop`); ``durable=True`` runs go to the user's job server
(:mod:`cc_executor_nb.kernel.jobserver`) and outlive the kernel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import math
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from .. import shellwords
from ..claude.command import ResumeSettings, claude_command, claude_host_command, runs_a_wrapper
from ..claude.interpreter import ClaudeInterpreter
from ..claude.options import (
    ClaudeOptions,
    places,
    refuse_host_options,
)
from ..claude.render import MAX_RECORD_TEXTS, MAX_RECORD_TURNS
from ..claude.summary import RESULT_SUMMARY
from ..client import check_server_url
from ..declare import OptionError, from_values, keywords
from ..errors import CommandNotAllowed, SpawnFailed
from ..protocol import (
    CAPTURE_MODES,
    MAX_HEARTBEAT_INTERVAL,
    MAX_LABEL_CHARS,
    MAX_TIMEOUT,
    MIN_INTERVAL,
    check_utf8,
    command_line,
    one_line,
)
from ..server.config import DEFAULT_HISTORY, ServerSettings, build_server
from ..server.runtime import client_context
from ..server.supervisor import GUARDED_ENV, ProcessManager
from .claudetext import ClaudeTextView
from .config import CCExec, checked_settings
from .conversation import Conversation
from .jobserver import durable_environment, job_server, job_server_locator, notebook_key, settings_note
from .loop import KernelLoop, shared_loop
from .options import RunOptions
from .presenter import Presenter, TextPresenter, WidgetPresenter, kernel_has_widgets
from .prompter import prompter_for
from .run import Interpreter, Run, RunSpec, Target, token_from_env, token_hint
from .textview import LineRenderer, TextView
from .transcript import MAX_RECORD_ANSWER_CHARS, RecordCache, Transcript

if TYPE_CHECKING:
    from .views import Body

__all__ = [
    "Prepared",
    "arun",
    "check_run_options",
    "check_server_url",
    "current_settings",
    "follow_job",
    "in_kernel_server_settings",
    "job_server_target",
    "output_mode",
    "prepare",
    "refuse_token_without_server",
    "remote_target",
    "resolve_options",
    "resume_settings",
    "run",
    "wait_one_shot",
    "widget_presenter",
]

LABEL_CHARS = 80
META_PROMPT_CHARS = 4000
"""How much of a durable Claude run's prompt its job keeps (to show it again on attach)."""
_RUN_KEYWORDS = keywords(RunOptions)
_CLAUDE_KEYWORDS = keywords(ClaudeOptions)


def run(
    prompt_or_command: str | Sequence[str],
    options: RunOptions | None = None,
    *,
    claude: ClaudeOptions | None = None,
    settings: CCExec | None = None,
    **given: Any,
) -> Run:
    """Start a run and return its :class:`~cc_executor_nb.kernel.run.Run` at once.

    ``prompt_or_command`` is a Claude prompt, or with ``command=True`` a command line
    (split with shlex by the server) or an argv list. Every other keyword is a field of
    :class:`RunOptions` (``wait``, ``server``, ``token``, ``token_env``, ``cwd``, ``env``,
    ``timeout``, ``heartbeat``, ``inactivity``, ``quiet``, ``display``, ``label``) or of
    :class:`ClaudeOptions` (``model``, ``raw``, ``demo``, ``resume``,
    ``continue_session``, ``allowed_tools``, ``permission_mode``, ``max_turns``,
    ``append_system_prompt``, ``claude_args``, ``max_retries``, ``interactive``,
    ``approve``, ``on_permission``, ``idle_timeout``); ``options=`` and ``claude=``
    give them whole. ``wait`` blocks until the run ends (for a Claude conversation, until
    its turn ends: see :func:`wait_one_shot`; a KeyboardInterrupt cancels it);
    ``display=False`` shows
    nothing (``display(run)`` later); ``durable`` makes the run a job of the user's job
    server (see ``cc_executor_nb.jobs``), and returns once that server has the job (its
    ``job_id`` known), so the job outlives this process from then on.

    A Claude run is interactive by default (``interactive=False``: one-shot): its
    permission questions come to the notebook (``on_permission=callable(request) ->
    "allow" | "deny" | None`` or ``approve="all"`` answers them by policy) and
    ``run.send()`` follows up in the same process until ``run.end()``. A durable one too:
    any kernel that attaches to its job takes the conversation over.

    Raises TypeError for an unknown keyword, ValueError for bad values and
    FileNotFoundError when a Claude prompt is given and no claude executable exists.
    """
    prepared = prepare(prompt_or_command, options, claude=claude, settings=settings, **given)
    return _launch(prepared, accept=True)


def _launch(prepared: Prepared, *, accept: bool) -> Run:
    """Show and start a prepared run; ``wait`` it, or with ``accept`` let a durable one's
    job server take it first. Returns the user's handle (:meth:`Run.user_handle`): once it is
    dropped and no widget shows the run, nobody can answer the run any more."""
    driven, run_options = prepared.run, prepared.options  # the object the loop holds
    if run_options.wait and prepared.loop.on_loop_thread():  # refused before anything starts
        raise RuntimeError("run(..., wait=True) would block the loop thread; use 'await arun(...)'")
    if run_options.display:
        driven.show()
    driven.start(prepared.loop)
    handle = driven.user_handle(functools.partial(_shows_widget, driven))
    if run_options.wait:
        return wait_one_shot(handle)
    if accept and run_options.durable and not prepared.loop.on_loop_thread():
        # Returned before its job server had it, a job was lost with a script that ended
        # right after run(): the background loop is a daemon thread.
        handle.wait_accepted(DURABLE_ACCEPT_TIMEOUT)
    return handle


def _shows_widget(driven: Run) -> bool:
    """Whether a cell shows the run's live widget, whose card and follow-up box answer it."""
    presenter = driven.presenter
    return isinstance(presenter, WidgetPresenter) and presenter.shows_notices()


class Prepared:
    """A run built but not started: the handle, the loop to start it on, the options."""

    def __init__(self, run: Run, loop: KernelLoop, options: RunOptions, claude: ClaudeOptions) -> None:
        self.run, self.loop, self.options, self.claude = run, loop, options, claude


def prepare(
    prompt_or_command: str | Sequence[str],
    options: RunOptions | None = None,
    *,
    claude: ClaudeOptions | None = None,
    settings: CCExec | None = None,
    view: bool = True,
    unconfigured: Collection[str] = (),
    **given: Any,
) -> Prepared:
    """Build a run as :func:`run` would, without showing or starting it.

    ``view=False`` makes no view at all (no widget is created, nothing is sent to a front
    end): the caller sets ``run.presenter`` itself (a batch does, and adds a widget later
    with :func:`widget_presenter`). Start it with ``prepared.run.start(prepared.loop)``.
    ``unconfigured`` names ``CCExec`` settings whose configured value does not apply to
    this run (a batch on a cluster leaves ``durable`` and ``default_server`` aside).
    """
    settings = settings or current_settings()
    run_options, claude_options = resolve_options(settings, options, claude, given, unconfigured=unconfigured)
    run_options = _sendable(run_options)
    remote, durable = bool(run_options.server), run_options.durable
    if run_options.command:
        what, extras = _command(prompt_or_command)
    else:
        prompt = _prompt_text(prompt_or_command)
        claude_options = _with_session(settings, claude_options)
        what, extras = _claude(prompt, claude_options, settings, durable=durable, local=not remote)
    spec = _complete(what, settings, run_options, extras)
    _check_text(spec, run_options.label)
    conversation = extras.conversation
    if conversation is not None and conversation.fallback is not None:
        conversation.fallback = _complete(conversation.fallback, settings, run_options, extras)
    label = run_options.label or extras.label
    if durable:
        spec = _durable(spec, label, extras, local=not remote, settings=settings)
    kernel_loop = _kernel_loop(settings, remote=remote or durable)
    handle = Run(
        spec,
        _with_settings(
            _target(kernel_loop, settings, run_options, _values(options).get("token_env") or given.get("token_env")),
            settings,
        ),
        label=label,
        options=extras.options | {
            "quiet": run_options.quiet, "wait": run_options.wait, "server": run_options.server, "durable": durable,
        },
        interpreter=extras.interpreter,
        settle_timeout=settings.kill_grace + 10.0,
        conversation=conversation,
        prompter=conversation.prompter if conversation is not None else None,
    )
    if view:
        handle.presenter = _presenter(handle, settings, quiet=run_options.quiet)
    if not run_options.command:
        _remember_sessions(settings, handle, conversation)
    return Prepared(handle, kernel_loop, run_options, claude_options)


def widget_presenter(handle: Run, settings: CCExec | None = None) -> WidgetPresenter:
    """A live widget view for a run made without one (``prepare(view=False)``), not displayed.

    The view is shown by putting ``presenter.view.widget`` into a widget tree; it has no
    record of its own (the owner of the tree keeps the record).
    """
    return _widget_presenter(handle, settings or current_settings(), record=False)


def wait_one_shot(handle: Run) -> Run:
    """``--wait`` / ``wait=True``, the one-shot use: block until the run ends, or for a
    Claude conversation until its turn ends.

    A conversation still asks its questions (in the cell's input box while this blocks);
    when the turn has its result the run reads as a one-shot run always did (status,
    answer, cost, and the record in place of the widget), while the process stays
    ``alive`` for ``run.send()`` until ``run.end()`` or the idle timeout (``exit_code``
    is None until then).
    """
    handle.one_shot = True
    return handle.wait()


def follow_job(
    job: Mapping[str, Any],
    target: Target,
    *,
    settings: CCExec | None = None,
    quiet: bool = False,
    display: bool = True,
) -> Run:
    """A :class:`Run` that attaches to ``job`` (a ``jobs.list`` entry) on ``target``.

    It is built as a fresh run of the same kind would be: a Claude job gets the Claude
    interpreter and view, so ``text``, ``cost_usd`` and ``session_id`` read the same; a
    Claude job in host mode gets its conversation (questions still pending after the
    replay are asked here, with this kernel's policy; ``send()``, ``end()`` ...). Returns the
    user's handle (:meth:`Run.user_handle`): once it is dropped and no widget shows the run, this
    kernel stops following a Claude conversation's job.
    """
    settings = settings or current_settings()
    given = job.get("meta")
    meta: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    argv = [str(arg) for arg in job.get("argv") or ()] or ["?"]
    if meta.get("kind") == "claude":
        talk = None
        if meta.get("interactive") is True:
            _, claude_options = resolve_options(settings, None, None, {})
            talk = (claude_options, settings)
        extras = _claude_extras(
            str(meta.get("prompt") or ""), {"raw": bool(meta.get("raw")), "interactive": talk is not None},
            conversation=talk, replay_until=int(job.get("last_seq") or 0),
        )
    else:
        extras = _Extras(one_line(command_line(argv), LABEL_CHARS), {"command": argv})
    conversation = extras.conversation
    handle = Run(
        RunSpec(argv=argv, cwd=job.get("cwd")),
        _with_settings(target, settings),
        label=str(job.get("label") or extras.label),
        options=extras.options | {"quiet": quiet, "attached": True},
        interpreter=extras.interpreter,
        settle_timeout=settings.kill_grace + 10.0,
        job_id=str(job["job_id"]),
        conversation=conversation,
        prompter=conversation.prompter if conversation is not None else None,
    )
    handle.presenter = _presenter(handle, settings, quiet=quiet)
    if extras.interpreter is not None:
        _remember_sessions(settings, handle, conversation)
    if display:
        handle.show()
    handle.start(shared_loop())
    return handle.user_handle(functools.partial(_shows_widget, handle))  # ``handle`` is the loop's


async def arun(prompt_or_command: str | Sequence[str], **options: Any) -> Run:
    """Like :func:`run` with ``wait=True`` (the one-shot use), awaiting the end without
    blocking the loop."""
    if "wait" in options:
        raise TypeError("arun() always waits; do not pass wait=")
    # No blocking wait for a durable job's acceptance: this awaits the whole run anyway.
    handle = _launch(prepare(prompt_or_command, **options), accept=False)
    handle.one_shot = True
    awaited = threading.Event()
    prompter = handle.prompter
    cell = _run_until(inspect.currentframe())
    task = asyncio.current_task()
    awaiting: Awaitable[Run] = handle
    if (prompter is None or not prompter.in_kernel) and cell is not None and task is not None:
        _cancel_if_abandoned(handle, asyncio.get_running_loop(), cell, task, awaited)
        awaiting = _interrupts_left_to_the_watch(handle)
    try:
        return await awaiting
    except BaseException:
        # Nobody else holds this run: an arun() cancelled (or timed out), or interrupted (a
        # Ctrl-C's KeyboardInterrupt raised in this await), stops it.
        handle.cancel()
        raise
    finally:
        awaited.set()


async def _interrupts_left_to_the_watch(handle: Run) -> Run:
    """``await handle``, a Ctrl-C raised in this task's own code handed on to the loop.

    Python raises a Ctrl-C's KeyboardInterrupt in whatever code the main thread runs. While
    the loop sleeps, that is the loop: it stops, and the watch of :func:`_cancel_if_abandoned`
    cancels the run if the interrupted cell awaited this task. While this task runs (it polls
    every ``_AWAIT_POLL``), it was this task: arun() ended with it and cancelled the run, also
    when the cell interrupted had not awaited it (``r = await t`` in a later cell than ``t =
    asyncio.ensure_future(arun(...))``: ``t`` then held the KeyboardInterrupt, not the run).
    The interrupt is raised again by the loop, as if it had come while the loop slept, and
    this task goes on awaiting, for the watch to decide (once the cell that started this task
    is done, the run is left to the task)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await handle
        except KeyboardInterrupt:
            loop.call_soon(_raise_keyboard_interrupt)
        await asyncio.sleep(0)  # the loop raises it before this task awaits the run again


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _run_until(frame: FrameType | None) -> asyncio.Future[Any] | None:
    """The future that the ``loop.run_until_complete()`` running ``frame`` runs until (terminal
    IPython's cell, ``asyncio.run()``'s main task), found up the stack; None if there is none (a
    loop run by ``run_forever()``, or one whose ``run_until_complete`` is no Python code)."""
    while frame is not None and frame.f_code is not _RUN_UNTIL_COMPLETE:
        frame = frame.f_back
    future = frame.f_locals.get("future") if frame is not None else None
    return future if isinstance(future, asyncio.Future) else None


_RUN_UNTIL_COMPLETE = asyncio.BaseEventLoop.run_until_complete.__code__


def _waits_for(waiter: asyncio.Future[Any], task: asyncio.Future[Any]) -> bool:
    """Whether cancelling ``waiter`` cancels ``task`` there and then, as asyncio passes a cancel
    on: a task to the future it awaits, ``gather()``'s future to its children. These links are
    asyncio's own attributes (``_fut_waiter``, ``_children``, there since Python 3.4); were they
    gone, a task reached only through them would read as not awaited, and its run would go on."""
    seen: set[int] = set()
    pending: list[Any] = [waiter]
    while pending:
        future = pending.pop()
        if future is task:
            return True
        if future is None or id(future) in seen:
            continue
        seen.add(id(future))
        pending.extend([getattr(future, "_fut_waiter", None), *getattr(future, "_children", ())])
    return False


ABANDON_POLL = 0.1
"""Seconds between the looks of :func:`_cancel_if_abandoned` at the awaiting loop."""


def _cancel_if_abandoned(
    handle: Run, loop: asyncio.AbstractEventLoop, cell: asyncio.Future[Any], task: asyncio.Future[Any],
    awaited: threading.Event,
) -> None:
    """Cancel ``handle`` if ``loop`` is interrupted while ``cell`` awaits ``task``, the task in which
    ``arun()`` awaits the run (until ``awaited`` is set).

    A Ctrl-C at terminal IPython's ``await`` stops its loop by a KeyboardInterrupt without
    cancelling the cell's task: no ``except`` or ``finally`` of arun() runs, the result is not
    assigned (not until a later cell runs the loop again), and the run went on (its question
    open) with no handle to reach it. A
    thread watches the loop instead. The loop stopping before ``cell`` is done is the
    interrupt (at the end of a cell it stops after); the run is then cancelled, as a Ctrl-C
    in ``run.wait()`` cancels it, if the cell awaited ``task`` (itself, or through an awaited
    task or ``gather()``), which is what a kernel's interrupt, cancelling the cell, would cancel.
    Once ``cell`` is done, the run is a task's that someone holds, and the watch ends.
    """

    def watch() -> None:
        while not awaited.wait(ABANDON_POLL):
            if handle.done or cell.done():
                return
            if not loop.is_running():
                if not cell.done() and _waits_for(cell, task):
                    handle.cancel(timeout=None)
                return

    threading.Thread(target=watch, name="cc_executor_nb-arun-watch", daemon=True).start()


DURABLE_ACCEPT_TIMEOUT = 60.0
"""Seconds ``run(..., durable=True)`` waits at most for its job server to take the job."""

_SCRIPT_SETTINGS: list[CCExec] = []
"""Outside IPython: the one settings object of the process (it keeps ``last_session_id``)."""


def current_settings() -> CCExec:
    """The extension's settings if it is loaded, else fresh ones from the shell's config;
    outside IPython (a script), the same settings for the whole process, so that
    ``continue_session`` follows up this script's last Claude run."""
    shell = _shell()
    if shell is None:
        if not _SCRIPT_SETTINGS:
            _SCRIPT_SETTINGS.append(CCExec())
        return _SCRIPT_SETTINGS[0]
    magics = shell.magics_manager.registry.get("CCExecMagics")
    settings = getattr(magics, "settings", None)
    return settings if isinstance(settings, CCExec) else checked_settings(shell)


def resolve_options(
    settings: CCExec,
    options: RunOptions | None,
    claude: ClaudeOptions | None,
    given: Mapping[str, Any],
    *,
    unconfigured: Collection[str] = (),
) -> tuple[RunOptions, ClaudeOptions]:
    """Both option sets from whole values, keywords and the configured defaults.

    Keywords override the whole values; a value still unset takes its ``CCExec``
    default, except for the settings ``unconfigured`` names. Raises TypeError for a keyword neither set declares, and
    :class:`~cc_executor_nb.declare.OptionError` (a ValueError) for options given that the
    run would ignore: Claude's for a command, a conversation's for a one-shot Claude run.
    """
    unknown = set(given) - _RUN_KEYWORDS - _CLAUDE_KEYWORDS
    if unknown:
        raise TypeError(f"run() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    configured = lambda name: None if name in unconfigured else getattr(settings, name)  # noqa: E731 - a one-line reader
    run_values = _values(options) | {k: v for k, v in given.items() if k in _RUN_KEYWORDS}
    claude_values = _values(claude) | {k: v for k, v in given.items() if k in _CLAUDE_KEYWORDS}
    _check_token_env(run_values)
    run_options = from_values(RunOptions, run_values, defaults=configured)
    claude_options = from_values(ClaudeOptions, claude_values, defaults=configured)
    _refuse_ignored(run_options, claude_options, _given(ClaudeOptions, claude_values))
    refuse_token_without_server(run_options.server, run_values)
    return run_options, dataclasses.replace(claude_options, remote=bool(run_options.server))


def refuse_token_without_server(server: str | None, values: Mapping[str, Any]) -> None:
    """A ``token`` or ``token_env`` among ``values`` for a call that goes to no remote server
    (``server`` empty: the in-kernel server, the job server, each with its own token) would be
    ignored: an :class:`~cc_executor_nb.declare.OptionError` instead."""
    given = [name for name in ("token", "token_env") if values.get(name)]
    if given and not server:
        raise OptionError("{0} applies to a remote server only: give {1} too (or set CCExec.default_server)",
                          [given[0], "server"])


def _check_token_env(run_values: Mapping[str, Any]) -> None:
    """A ``token_env`` given (not the configured one) must name a variable that is set: an unset
    one would connect without a token and read as a wrong token."""
    name = run_values.get("token_env")
    if name and not run_values.get("token"):
        token_from_env(name, f"token_env={name!r}")


def _given(cls: type, values: Mapping[str, Any]) -> list[str]:
    """The fields of ``cls`` that ``values`` set (neither None nor the field's default), in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if values.get(f.name, f.default) not in (None, f.default)]


def _refuse_ignored(run_options: RunOptions, claude_options: ClaudeOptions, claude_given: Sequence[str]) -> None:
    """Options the caller gave that this run would silently ignore are an error instead."""
    if "approve" in claude_given and "on_permission" in claude_given:
        # approve= wins over a policy: the policy given with it would never be asked.
        raise OptionError("give either {0} or {1}, not both ({0} would decide every question)",
                          ["approve", "on_permission"])
    if not run_options.command:
        refuse_host_options(claude_given, claude_options)
    elif claude_given:
        template = "a command ({0}) takes no Claude option: " + places(1, len(claude_given))
        raise OptionError(template, ["command=True", *claude_given])


def _values(options: RunOptions | ClaudeOptions | None) -> dict[str, Any]:
    """The fields of an options value that differ from their defaults (None: none)."""
    if options is None:
        return {}
    return {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != f.default
    }


# Building the run


class _Extras:
    """What a run needs besides its RunSpec: label, options, Claude hooks."""

    def __init__(
        self,
        label: str,
        options: dict[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        interpreter: Interpreter | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        self.label, self.options, self.env = label, options, env
        self.interpreter = interpreter
        self.conversation = conversation


def check_run_options(settings: CCExec, keywords: Mapping[str, Any], *, unconfigured: Collection[str] = ()) -> None:
    """Raise as :func:`prepare` would for ``keywords`` (``run()``'s keywords, with ``options=``
    and ``claude=`` as whole values), without preparing a run: for a batch of no items."""
    given = {name: value for name, value in keywords.items() if name not in ("options", "claude")}
    run_options, claude_options = resolve_options(
        settings, keywords.get("options"), keywords.get("claude"), given, unconfigured=unconfigured)
    if not run_options.command:
        claude_options.check()
    _complete(RunSpec(argv=["true"]), settings, run_options, _Extras("", {}))


def _complete(what: RunSpec, settings: CCExec, options: RunOptions, extras: _Extras) -> RunSpec:
    """``what`` with the run's place, environment and timing."""
    return dataclasses.replace(
        what,
        cwd=options.cwd,
        env=_merge_env(options.env, extras.env),
        timeout=None if _no_limit(options.timeout) else _seconds(
            "timeout", options.timeout, True, maximum=MAX_TIMEOUT, no_limit=True
        ),
        # None (neither given nor configured): the server's default.
        heartbeat_interval=_seconds(
            "heartbeat", options.heartbeat, True, minimum=MIN_INTERVAL, maximum=MAX_HEARTBEAT_INTERVAL
        ),
        inactivity_threshold=_seconds(
            "inactivity", options.inactivity, True, minimum=MIN_INTERVAL, maximum=MAX_TIMEOUT
        ),
        kill_grace=settings.kill_grace,
        capture=_capture(options.capture),
    )


def _with_session(settings: CCExec, options: ClaudeOptions) -> ClaudeOptions:
    """``continue_session`` resumes the given or this kernel's last Claude session if any.

    Without either, the CLI's own ``--continue`` (its latest conversation) is used.
    """
    options.check()  # before resume and continue are merged: given both, the caller is told
    resume = options.resume or settings.last_session_id
    if options.continue_session and resume:
        return dataclasses.replace(options, resume=resume, continue_session=False)
    return options


def _remember_sessions(settings: CCExec, handle: Run, conversation: Conversation | None) -> None:
    """``--continue`` resumes the session last used: remembered at each turn's end, or at
    the run's end for a run that never ended a turn (a one-shot run, a cancelled start).
    A conversation ended later than another was used is not "used" by its end."""
    turns_ended: list[bool] = []

    def turn_ended() -> None:
        turns_ended.append(True)
        _remember_session(settings, handle)

    if conversation is not None:
        conversation.on_turn_end = turn_ended
    handle.add_done_callback(lambda done: None if turns_ended else _remember_session(settings, done))


def _remember_session(settings: CCExec, done: Run) -> None:
    """The session id of the last Claude run is what ``--continue`` resumes."""
    if done.session_id:
        settings.last_session_id = done.session_id


_BYTES = (bytes, bytearray, memoryview)


def _command(what: str | Sequence[str]) -> tuple[RunSpec, _Extras]:
    if isinstance(what, str):
        if not what.strip():
            raise ValueError("the command is empty")
        check_utf8("the command", what)
        return RunSpec(command=what), _Extras(one_line(what, LABEL_CHARS), {"command": what})
    # Bytes are a sequence of numbers: b"echo hi" ran a program named '101' (its words
    # '101 99 104 ...'), and an argument b"hi" became the text "b'hi'".
    if isinstance(what, _BYTES) or any(isinstance(arg, _BYTES) for arg in what):
        raise ValueError("a command is text, not bytes: decode it first (command.decode())")
    argv = [str(arg) for arg in what]
    if not argv:
        raise ValueError("the command is empty")
    for index, arg in enumerate(argv):
        check_utf8(f"the command's argument {index}", arg)
    return RunSpec(argv=argv), _Extras(one_line(command_line(argv), LABEL_CHARS), {"command": argv})


def _claude(
    prompt: str, options: ClaudeOptions, settings: CCExec, *, durable: bool = False, local: bool = True
) -> tuple[RunSpec, _Extras]:
    # A durable job outlives the kernel's demo backend: it carries its own (own_demo; a
    # durable run on a remote server uses that server's demo). A remote server runs the
    # wrappers with its own python3.
    python = "python3" if options.remote else None
    own_demo = durable and local
    if options.demo and not own_demo:
        _keep_demo_sessions()
    argv, env = claude_command(options, resume=resume_settings(settings), own_demo=own_demo, python=python)
    # auto_resume wraps the one-shot CLI in its supervisor (claude/autoresume.py): one-shot.
    interactive = options.interactive and not options.auto_resume
    extras = _claude_extras(
        prompt,
        {"model": options.model, "demo": options.demo, "raw": options.raw, "interactive": interactive},
        conversation=(options, settings) if interactive else None,
        durable=durable,
    )
    extras.env = env
    # The interpreter counts the answer against the prompt's target; the server counts nothing.
    # The prompt goes to the CLI's stdin, never on its command line (``ps`` shows that to all).
    # A remote server runs the package's wrappers with its own interpreter (server_python).
    one_shot = RunSpec(argv=argv, progress_target=None, stdin="pipe", input=prompt,
                       server_python=python is not None and runs_a_wrapper(argv))
    if extras.conversation is None:
        return one_shot, extras
    if not durable:
        # A durable job cannot be started again on its connection: it has no fall-back.
        extras.conversation.fallback = one_shot
    host = claude_host_command(options, own_demo=own_demo, python=python)
    return RunSpec(argv=host, progress_target=None, stdin="pipe",
                   server_python=python is not None and runs_a_wrapper(host)), extras



def _keep_demo_sessions() -> None:
    """The demo CLI keeps its sessions in the user's lasting demo config (the terminal
    client's), not one per kernel: ``--resume ID`` after a kernel restart finds them."""
    from ..demo.shared import keep_demo_config

    keep_demo_config()


def resume_settings(settings: CCExec) -> ResumeSettings:
    """How ``auto_resume`` resumes, from ``settings``."""
    return ResumeSettings(settings.resume_prompt, settings.max_resumes, settings.auto_resume_max_wait)


def _claude_extras(
    prompt: str,
    options: dict[str, Any],
    *,
    conversation: tuple[ClaudeOptions, CCExec] | None = None,
    durable: bool = False,
    replay_until: int | None = None,
) -> _Extras:
    """Label and interpreter of a Claude run of ``prompt`` (fresh or attached); with
    ``conversation`` (its options and settings), the conversation of host mode
    (``durable``: a job's; ``replay_until``: attached to a job, whose replay ends there).
    (Its widget body is made with its widget view, if it gets one.)"""
    interpreter = ClaudeInterpreter(prompt=prompt)
    talk = None
    if conversation is not None:
        talk = _conversation(prompt, interpreter, *conversation, durable=durable, replay_until=replay_until)
    return _Extras(
        one_line("claude: " + prompt, LABEL_CHARS), {"prompt": prompt, **options},
        interpreter=interpreter, conversation=talk,
    )


def _conversation(
    prompt: str,
    interpreter: ClaudeInterpreter,
    options: ClaudeOptions,
    settings: CCExec,
    *,
    durable: bool = False,
    replay_until: int | None = None,
) -> Conversation:
    return Conversation(
        prompt,
        interpreter,
        policy=options.policy,
        idle_timeout=options.idle_timeout,
        max_idle=settings.max_idle_conversations or None,
        grace=settings.kill_grace,
        prompter=_prompter(),
        durable=durable,
        replay_until=replay_until,
    )


def _durable(spec: RunSpec, label: str, extras: _Extras, *, local: bool, settings: CCExec) -> RunSpec:
    """``spec`` as a durable job; a local job server gets this kernel's cwd and environment."""
    claude = extras.interpreter is not None
    meta: dict[str, Any] = {"kind": "claude" if claude else "command", "notebook": notebook_key()}
    if claude:
        meta |= {"prompt": str(extras.options.get("prompt", ""))[:META_PROMPT_CHARS], "raw": extras.options.get("raw")}
    # A label of yours may be longer than a job's (the job failed: "label is longer than 1000
    # characters"); the job table shows it on one line anyway.
    job: dict[str, Any] = {
        "label": one_line(label, MAX_LABEL_CHARS), "meta": meta, "summary": RESULT_SUMMARY if claude else None,
    }
    conversation = extras.conversation
    if conversation is not None:
        # Any kernel that attaches takes the conversation over; nobody attached for the
        # idle timeout: the job server closes its input (the CLI then ends by itself).
        meta["interactive"] = True
        job["stdin_idle_timeout"] = conversation.idle_timeout
        # Its timeout passing between turns cut nothing: the job is listed completed, as the run reads it.
        job["summary_ends_turn"] = True
    if not local:
        return dataclasses.replace(spec, job=job)
    # With an allow-list, a server refuses a request that sets PATH, LD_* and the like: the
    # kernel's own are left to the job server's (every durable run failed so).
    guarded = GUARDED_ENV if settings.allowed_commands else ()
    env = durable_environment(spec.env, settings.secret_env, settings.keep_env, guarded)
    # A relative cwd is under this kernel's, as for a run of the in-kernel server (the job
    # server's own is elsewhere); ~ is the server's to expand, as for any run.
    cwd = os.getcwd() if not spec.cwd else spec.cwd if spec.cwd.startswith("~") else os.path.join(os.getcwd(), spec.cwd)
    _check_allowed(spec.argv or _split(spec.command or ""), env, cwd, settings.allowed_commands)
    return dataclasses.replace(spec, cwd=cwd, env=env, job=job)


def _split(command: str) -> list[str]:
    """The words of a command line as the server splits it (shlex); [] when it cannot be split
    (the server says why)."""
    try:
        return shellwords.split(command)
    except ValueError:
        return []


def _check_allowed(argv: Sequence[str], env: Mapping[str, str], cwd: str, allowed: Sequence[str]) -> None:
    """This kernel's ``allowed_commands`` for a job of the user's job server, which keeps the
    list of the kernel that started it (none, maybe): ValueError for a program off the list.
    A program that does not exist is left to the server to report, as for any run."""
    if not allowed or not argv:
        return
    try:
        ProcessManager(allowed_commands=allowed).check_allowed(list(argv), env, cwd)
    except CommandNotAllowed as exc:
        raise ValueError(f"{exc} (CCExec.allowed_commands)") from None
    except SpawnFailed:
        pass


def _body_of(handle: Run) -> Body | None:
    """The widget body of a Claude run: its conversation (unless raw without questions)."""
    interpreter, talk = handle.interpreter, handle.conversation
    raw = bool(handle.options.get("raw"))
    if not isinstance(interpreter, ClaudeInterpreter) or (raw and talk is None):
        return None
    from ..claude.render import ClaudeBody

    return ClaudeBody(interpreter, talk, show_answer=not raw)


def _prompter() -> Any:
    """The shell's prompter (following its cells), or one for a terminal or script."""
    prompter = prompter_for(_shell())
    prompter.register()
    return prompter


def _prompt_text(what: str | Sequence[str]) -> str:
    if not isinstance(what, str):
        raise ValueError("a Claude prompt must be a string (pass command=True for an argv list)")
    if not what.strip():
        raise ValueError("the prompt is empty")
    check_utf8("the prompt", what)
    return what


def _check_text(spec: RunSpec, label: str | None) -> None:
    """ValueError before anything starts when text the run sends is not valid UTF-8 (an
    option that becomes an argument, ``cwd``, ``env``, ``label``): its ``execute`` failed."""
    for index, arg in enumerate(spec.argv or ()):
        check_utf8(f"argument {index} of the command the run starts", arg)
    check_utf8("cwd", spec.cwd or "")
    for name, value in (spec.env or {}).items():
        check_utf8("a name in env", name)
        check_utf8(f"env[{name!r}]", value)
    check_utf8("label", label or "")


def _no_limit(timeout: object) -> bool:
    """A run's ``timeout=0`` (``--timeout 0``): no limit, whatever ``CCExec.timeout`` says."""
    return isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout == 0


def _seconds(
    name: str,
    value: float | None,
    optional: bool = False,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
    no_limit: bool = False,
) -> float | None:
    """``value`` as seconds, checked; ``no_limit``: 0 (taken before) means no limit, and the error says so."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError("{0} must be a number of seconds, not {1!r}", [name], value)
    if not math.isfinite(value) or value <= 0:
        zero = "0 (no limit) or " if no_limit else ""
        raise OptionError("{0} must be " + zero + "a positive number of seconds, not {1!r}", [name], value)
    if value < minimum:
        raise OptionError("{0} must be at least {1:g} s, not {2!r}", [name], minimum, value)
    if maximum is not None and value > maximum:
        raise OptionError("{0} must be at most {1:.0f} s (the protocol's bound), not {2!r}", [name], maximum, value)
    return float(value)


def _sendable(options: RunOptions) -> RunOptions:
    """``options`` with ``cwd`` and ``env`` as the protocol's strings (paths allowed), checked."""
    if options.label is not None and not isinstance(options.label, str):
        raise ValueError(f"label must be a string, not {options.label!r}")
    check_server_url(options.server or None)
    return dataclasses.replace(options, cwd=_directory(options.cwd), env=_environment(options.env))


def _directory(value: object) -> str | None:
    """``cwd`` as the protocol's string: a ``str`` or ``os.PathLike`` (a ``pathlib.Path``)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if path == "":
            raise OptionError("{0} is empty: give a directory or leave it unset", ["cwd"])
        if isinstance(path, str):
            return path
    raise ValueError(f"cwd must be a path (str or os.PathLike), not {value!r}")


def _environment(value: object) -> dict[str, str] | None:
    """``env`` as the protocol's object of strings: names are ``str``, values ``str`` or paths."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"env must be a mapping of names to values, not {type(value).__name__}")
    env: dict[str, str] = {}
    for name, item in value.items():
        text = os.fspath(item) if isinstance(item, os.PathLike) else item
        if not isinstance(name, str) or not isinstance(text, str):
            raise ValueError(f"env must map names (str) to values (str or os.PathLike), not {name!r}: {item!r}")
        env[name] = text
    return env


def _capture(value: str | None) -> str | None:
    if value is not None and value not in CAPTURE_MODES:
        raise OptionError("{0} must be 'file' or 'pipe', not {1!r}", ["capture"], value)
    return value


def _merge_env(
    given: Mapping[str, str] | None, extra: Mapping[str, str] | None
) -> dict[str, str] | None:
    if not given and not extra:
        return None
    return {**(extra or {}), **(given or {})}


# Where it runs and how it is shown


def _kernel_loop(settings: CCExec, *, remote: bool) -> KernelLoop:
    kernel_loop = shared_loop()
    if not remote:
        wanted = in_kernel_server_settings(settings)
        kernel_loop.use_server(wanted, lambda: build_server(wanted))
    return kernel_loop


def in_kernel_server_settings(settings: CCExec) -> ServerSettings:
    """The server-level part of ``settings`` (per-run values travel in ``execute``).

    When it changes, the next run gets a new in-kernel server; the old one finishes its
    runs and closes.
    """
    return ServerSettings(
        heartbeat_mode=settings.heartbeat_mode,
        min_heartbeat_interval=settings.min_heartbeat_interval,
        allowed_commands=tuple(settings.allowed_commands),
        secret_env=tuple(settings.secret_env),
        keep_env=tuple(settings.keep_env),
        capture=settings.capture or "file",
        spool_dir=settings.spool_dir or None,
        disk_limit=settings.disk_limit or None,
        session_disk_limit=settings.session_disk_limit or None,
        history_path=_history_path(settings),
    )


def _history_path(settings: CCExec) -> str | None:
    path = settings.history_path.strip()
    if path.lower() == "none":
        return None
    return path or DEFAULT_HISTORY


def remote_target(url: str, token: str | None, named: str | None, configured: str | None) -> Target:
    """A remote server's target: ``token``, else the one in the variable ``named`` (given with
    ``--token-env`` / ``token_env=``), else in ``configured`` (``CCExec.token_env``); it says
    where the token came from, should the server refuse it."""
    name = named or configured
    value = token or (os.environ.get(name) if name else None)
    return Target(url, value, token_hint=token_hint(token=token, named=named, configured=configured))


def job_server_target(settings: CCExec) -> Target:
    """The user's job server (started with ``settings`` if none answers) as a run's target:
    its TLS certificate trusted as its runtime file names it, and found again before each
    reconnect of a run that follows a job. A note on stderr names the settings of this kernel
    that a job server started by another keeps otherwise (see :func:`.jobserver.settings_note`)."""
    info = job_server(settings)
    note = settings_note(info, settings)
    if note is not None:
        print(note, file=sys.stderr)  # in the cell that asked: the kernel's log is out of sight
    return Target(info.url, info.token, ssl=client_context(info), locate=job_server_locator(settings))


def _target(kernel_loop: KernelLoop, settings: CCExec, options: RunOptions, named: str | None) -> Target:
    """Where the run goes; ``named`` is the token's variable if the caller gave one (not the configured one)."""
    if options.server:
        return remote_target(options.server, options.token, named, settings.token_env)
    if options.durable:
        return job_server_target(settings)
    local = kernel_loop.server
    if local is None:
        raise RuntimeError("the in-kernel server is not running")
    return Target(local.url, local.token)


def _with_settings(target: Target, settings: CCExec) -> Target:
    """``target`` with the settings a run's client takes (how long it reconnects)."""
    return dataclasses.replace(target, reconnect_timeout=settings.reconnect_timeout)


def _presenter(handle: Run, settings: CCExec, *, quiet: bool) -> Presenter:
    if output_mode(settings, quiet) == "text":
        text = TextPresenter(lambda: repr(handle), view=_text_view(handle), label=handle.label)
        if handle.conversation is not None:
            handle.conversation.line_label = text.line_label  # its questions carry its lines' label
        return text
    return _widget_presenter(handle, settings, record=True)


def _widget_presenter(handle: Run, settings: CCExec, *, record: bool) -> WidgetPresenter:
    from .views import RunView

    body = _body_of(handle)
    view = RunView(
        handle.label,
        on_pause=handle.pause,
        on_resume=handle.resume,
        on_cancel=handle.cancel,
        max_chars=settings.max_output_chars,
        body=body,
        # The rendered conversation replaces the raw JSONL (shown with --raw).
        show_output=body is None or handle.options.get("raw") is True,
        state=handle.state,
    )
    handle.view = view
    presenter = WidgetPresenter(
        handle.state, view, max_rate=settings.max_updates_per_second,
        record=_record(handle, settings) if record else None,
        keep_widget=lambda: not handle.one_shot,
        on_release=lambda: setattr(handle, "view", None),
    )
    bind = getattr(body, "bind", None)
    if callable(bind):
        bind(handle)  # the body's buttons act on the run
    return presenter


def _text_view(handle: Run) -> LineRenderer:
    """Claude runs read as their answer and notes; commands (and ``raw``) as their output."""
    interpreter = handle.interpreter
    if isinstance(interpreter, ClaudeInterpreter) and not handle.options.get("raw"):
        return ClaudeTextView(interpreter, label=handle.label, asked_here=lambda: _asks_on_terminal(handle))
    return TextView(heartbeats=False)


def _asks_on_terminal(handle: Run) -> bool:
    """Whether the run's questions are asked on the terminal right away (a caller waits there, or
    the run nobody holds any more has them asked at terminal IPython's prompt)."""
    prompter = handle.prompter
    return prompter is not None and (prompter.asks_on_terminal or prompter.at_prompt(handle.conversation))


def _record(handle: Run, settings: CCExec) -> Callable[[], dict[str, Any]]:
    """The run's record for its display, bounded like the live view: each build (a conversation's
    at each turn's end) renders only the texts no earlier one showed (:class:`RecordCache`)."""
    texts = RecordCache()
    return lambda: Transcript(
        handle, output_chars=settings.max_output_chars, answer_chars=MAX_RECORD_ANSWER_CHARS,
        max_turns=MAX_RECORD_TURNS, text_pieces=MAX_RECORD_TEXTS, texts=texts,
    ).bundle()


def output_mode(settings: CCExec, quiet: bool) -> str:
    """"widget" or "text": how a run (or the job table) is shown here."""
    if quiet:
        return "text"
    if settings.output_mode != "auto":
        return str(settings.output_mode)
    return "widget" if kernel_has_widgets(_shell()) else "text"


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()
