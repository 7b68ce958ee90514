"""The Python API behind ``%ccexec``: :func:`run` and :func:`arun`.

::

    import cc_executor_nb as ccx

    r = ccx.run("Summarise README.md")                 # a Claude prompt, shown live
    r = ccx.run("pytest -q", command=True, wait=True)  # a command line, blocking
    r.status, r.exit_code, r.stdout

    r = await ccx.arun("make test", command=True)      # in a cell: waits, kernel stays free

Settings come from the extension's :class:`~cc_executor_nb.kernel.config.CCExec` (``%config
CCExec.x = ...``, ``ipython_config.py``); keyword arguments override them. Without
``server`` (or ``CCExec.default_server``) runs go to a private server on the
kernel's background loop (:mod:`cc_executor_nb.kernel.loop`).
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..claude.options import (
    ClaudeOptions,
    claude_argv,
    claude_body,
    claude_environment,
    claude_interpreter,
)
from .config import CCExec
from .run import Interpreter, Run, RunSpec, Target
from ..server.config import DEFAULT_HISTORY, ServerSettings, build_server
from .loop import KernelLoop, shared_loop
from .presenter import Presenter, TextPresenter, WidgetPresenter, kernel_has_widgets

if TYPE_CHECKING:
    from .views import Body

__all__ = ["arun", "current_settings", "run"]

LABEL_CHARS = 80


def run(
    prompt_or_command: str | Sequence[str],
    *,
    command: bool = False,
    wait: bool = False,
    server: str | None = None,
    token: str | None = None,
    token_env: str | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    heartbeat: float | None = None,
    inactivity: float | None = None,
    model: str | None = None,
    quiet: bool = False,
    raw: bool = False,
    demo: bool | None = None,
    resume: str | None = None,
    continue_session: bool = False,
    allowed_tools: Sequence[str] = (),
    permission_mode: str | None = None,
    max_turns: int | None = None,
    append_system_prompt: str | None = None,
    claude_args: Sequence[str] = (),
    max_retries: int | None = None,
    display: bool = True,
    label: str | None = None,
    settings: CCExec | None = None,
) -> Run:
    """Start a run and return its :class:`~cc_executor_nb.kernel.run.Run` at once.

    ``prompt_or_command`` is a Claude prompt, or with ``command=True`` a command line
    (split with shlex by the server) or an argv list. ``wait`` blocks until the run
    ends (a KeyboardInterrupt cancels it). ``server``/``token`` (or the variable named
    ``token_env``) select a remote server. ``timeout``, ``heartbeat`` and
    ``inactivity`` are seconds. ``quiet`` prints plain text instead of showing a
    widget; ``display=False`` shows nothing (``display(run)`` later). ``model``,
    ``raw``, ``demo``, ``resume`` (a Claude session id), ``continue_session`` (follow
    up the last Claude run of this kernel, else the CLI's latest conversation),
    ``allowed_tools``, ``permission_mode``, ``max_turns``, ``append_system_prompt``,
    ``claude_args`` (extra CLI arguments) and ``max_retries`` shape Claude runs.

    Raises ValueError for bad arguments and FileNotFoundError when a Claude prompt
    is given and no claude executable exists.
    """
    settings = settings or current_settings()
    if command:
        what, extras = _command(prompt_or_command)
    else:
        options = _claude_options(
            settings,
            model=model,
            raw=raw,
            demo=demo,
            resume=resume or (settings.last_session_id if continue_session else None),
            continue_session=continue_session and not (resume or settings.last_session_id),
            allowed_tools=tuple(allowed_tools),
            permission_mode=permission_mode,
            max_turns=max_turns,
            append_system_prompt=append_system_prompt,
            extra_args=tuple(claude_args),
            max_retries=max_retries,
            remote=bool(server or settings.default_server),
        )
        what, extras = _claude(_prompt_text(prompt_or_command), options)
    spec = RunSpec(
        **what,
        cwd=cwd,
        env=_merge_env(env, extras.env),
        **_timing(settings, timeout, heartbeat, inactivity),
    )
    kernel_loop = _kernel_loop(settings, remote=bool(server or settings.default_server))
    handle = Run(
        spec,
        _target(kernel_loop, settings, server, token, token_env),
        label=label or extras.label,
        options=extras.options | {"quiet": quiet, "wait": wait, "server": server},
        interpreter=extras.interpreter,
        settle_timeout=settings.kill_grace + 10.0,
    )
    handle.presenter = _presenter(handle, settings, quiet=quiet, body=extras.body)
    if not command:
        handle.add_done_callback(lambda done: _remember_session(settings, done))
    if display:
        handle.show()
    handle.start(kernel_loop)
    return handle.wait() if wait else handle


async def arun(prompt_or_command: str | Sequence[str], **options: Any) -> Run:
    """Like :func:`run` (same keywords but ``wait``), awaiting the end without blocking the loop."""
    if "wait" in options:
        raise TypeError("arun() always waits; do not pass wait=")
    return await run(prompt_or_command, **options)


def current_settings() -> CCExec:
    """The extension's settings if it is loaded, else fresh ones from the shell's config."""
    shell = _shell()
    if shell is None:
        return CCExec()
    magics = shell.magics_manager.registry.get("CCExecMagics")
    settings = getattr(magics, "settings", None)
    return settings if isinstance(settings, CCExec) else CCExec(parent=shell)


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
        body: Body | None = None,
    ) -> None:
        self.label, self.options, self.env = label, options, env
        self.interpreter, self.body = interpreter, body


def _claude_options(
    settings: CCExec,
    *,
    model: str | None,
    raw: bool,
    demo: bool | None,
    extra_args: tuple[str, ...],
    **claude: Any,
) -> ClaudeOptions:
    return ClaudeOptions(
        command=settings.claude_command or None,
        args=(*settings.claude_args, *extra_args),
        model=model or settings.model or None,
        demo=settings.demo if demo is None else demo,
        raw=raw,
        **claude,
    )


def _remember_session(settings: CCExec, done: Run) -> None:
    """The session id of the last Claude run is what ``--continue`` resumes."""
    if done.session_id:
        settings.last_session_id = done.session_id


def _command(what: str | Sequence[str]) -> tuple[dict[str, Any], _Extras]:
    if isinstance(what, str):
        if not what.strip():
            raise ValueError("the command is empty")
        return {"command": what}, _Extras(_shorten(what), {"command": what})
    argv = [str(arg) for arg in what]
    if not argv:
        raise ValueError("the command is empty")
    return {"argv": argv}, _Extras(_shorten(shlex.join(argv)), {"command": argv})


def _claude(prompt: str, options: ClaudeOptions) -> tuple[dict[str, Any], _Extras]:
    argv = claude_argv(prompt, options)
    interpreter = claude_interpreter(options)
    extras = _Extras(
        _shorten("claude: " + prompt),
        {"prompt": prompt, "model": options.model, "demo": options.demo, "raw": options.raw},
        env=claude_environment(options),
        interpreter=interpreter,
        body=claude_body(interpreter, options),
    )
    return {"argv": argv}, extras


def _prompt_text(what: str | Sequence[str]) -> str:
    if not isinstance(what, str):
        raise ValueError("a Claude prompt must be a string (pass command=True for an argv list)")
    if not what.strip():
        raise ValueError("the prompt is empty")
    return what


def _timing(
    settings: CCExec, timeout: float | None, heartbeat: float | None, inactivity: float | None
) -> dict[str, float | None]:
    return {
        "timeout": _seconds("timeout", settings.timeout if timeout is None else timeout, True),
        "heartbeat_interval": _seconds(
            "heartbeat", settings.heartbeat_interval if heartbeat is None else heartbeat
        ),
        "inactivity_threshold": _seconds(
            "inactivity", settings.inactivity_threshold if inactivity is None else inactivity
        ),
        "kill_grace": settings.kill_grace,
    }


def _seconds(name: str, value: float | None, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _merge_env(
    given: Mapping[str, str] | None, extra: Mapping[str, str] | None
) -> dict[str, str] | None:
    if not given and not extra:
        return None
    return {**(extra or {}), **(given or {})}


def _shorten(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= LABEL_CHARS else line[: LABEL_CHARS - 1] + "…"


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
        history_path=_history_path(settings),
    )


def _history_path(settings: CCExec) -> str | None:
    path = settings.history_path.strip()
    if path.lower() == "none":
        return None
    return path or DEFAULT_HISTORY


def _target(
    kernel_loop: KernelLoop,
    settings: CCExec,
    server: str | None,
    token: str | None,
    token_env: str | None,
) -> Target:
    url = server or settings.default_server
    if url:
        name = token_env or settings.token_env
        return Target(url, token or (os.environ.get(name) if name else None))
    local = kernel_loop.server
    if local is None:
        raise RuntimeError("the in-kernel server is not running")
    return Target(local.url, local.token)


def _presenter(handle: Run, settings: CCExec, *, quiet: bool, body: Body | None) -> Presenter:
    if _output_mode(settings, quiet) == "text":
        return TextPresenter(lambda: repr(handle))
    from .views import RunView

    view = RunView(
        handle.label,
        on_pause=handle.pause,
        on_resume=handle.resume,
        on_cancel=handle.cancel,
        max_chars=settings.max_output_chars,
        body=body,
        # The rendered conversation replaces the raw JSONL (shown with --raw).
        show_output=body is None,
        state=handle.state,
    )
    handle.view = view
    return WidgetPresenter(handle.state, view, max_rate=settings.max_updates_per_second)


def _output_mode(settings: CCExec, quiet: bool) -> str:
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
