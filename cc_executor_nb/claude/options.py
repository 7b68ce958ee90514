"""How a Claude prompt becomes a run: command line, environment, interpreter and view.

This is the seam between the generic run machinery (``api``, ``handle``, ``magic``)
and everything Claude-specific::

    options = ClaudeOptions(model="sonnet", demo=True)
    argv = claude_argv("Summarise README.md", options)   # [claude, "-p", ..., "--", prompt]
    env = claude_environment(options)                    # demo: points the CLI at the mock
    interpreter = claude_interpreter(options)            # stream-json -> ClaudeRun
    body = claude_body(interpreter, options)             # the conversation widget

- :func:`claude_argv` builds a non-interactive, streaming command line. Options come
  first and the prompt last, after ``--``, as one argv element: it is never shell text,
  and a prompt that starts with a dash is taken literally.
- :func:`claude_environment` returns, for ``demo=True``, the environment of the shared
  offline demo backend (started lazily, once per process; :func:`stop_demo` stops it).
- :class:`ClaudeInterpreter` implements :class:`~cc_executor_nb.kernel.run.Interpreter` over
  a :class:`~cc_executor_nb.claude.streamjson.ClaudeRun`, behind a lock: it is fed on the loop
  thread and read from the widget's and the user's threads.
- :class:`ClaudeBody` is the widget body: the conversation rendered by
  :mod:`~cc_executor_nb.claude.render` (which sanitizes every piece of model text).
"""

from __future__ import annotations

import atexit
import html
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .render import render_claude_html
from .streamjson import ApiRetry, ClaudeRun, Phase, ToolCall

if TYPE_CHECKING:
    import ipywidgets

    from ..demo.server import DemoBackend
    from ..kernel.run import Interpreter
    from ..kernel.runstate import RunState
    from ..kernel.views import Body

__all__ = [
    "DEMO_MAX_RETRIES",
    "STREAM_ARGS",
    "ClaudeBody",
    "ClaudeInterpreter",
    "ClaudeOptions",
    "claude_argv",
    "claude_body",
    "claude_body_html",
    "claude_environment",
    "claude_interpreter",
    "claude_option_args",
    "demo_backend",
    "stop_demo",
]

STREAM_ARGS = ("-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages")
"""What makes a run non-interactive and streaming, right after the executable."""

DEMO_MAX_RETRIES = 2
"""API retries in demo mode unless the options say otherwise: error scenarios end fast."""

MAX_STDERR_CHARS = 64_000
"""How much of the CLI's stderr the interpreter keeps (the tail)."""


@dataclass(frozen=True)
class ClaudeOptions:
    """What shapes a claude run besides its prompt.

    Empty strings count as "not given". Giving both ``resume`` and
    ``continue_session`` is an error (:func:`claude_argv` raises ValueError).
    """

    command: str | None = None
    """Path or name of the executable; None or empty: look it up (``find_claude``)."""
    args: Sequence[str] = field(default_factory=tuple)
    """Extra raw arguments, placed after the other options and before ``--``."""
    model: str | None = None
    """``--model``; None or empty: the CLI's default."""
    demo: bool = False
    """Run against the built-in offline demo API."""
    raw: bool = False
    """Show the raw stream-json lines instead of the rendered conversation."""
    # Conversation
    resume: str | None = None
    """``--resume SESSION_ID``: continue that Claude session."""
    continue_session: bool = False
    """``--continue``: continue the most recent session in the working directory."""
    # Agent limits
    allowed_tools: Sequence[str] = field(default_factory=tuple)
    """``--allowed-tools``: tool rules allowed without asking, e.g. ``("Bash(git *)", "Edit")``;
    one string is passed as one element (the CLI splits it on commas and spaces)."""
    permission_mode: str | None = None
    """``--permission-mode`` (acceptEdits, auto, bypassPermissions, manual, dontAsk, plan)."""
    max_turns: int | None = None
    """``--max-turns``: stop after this many agent turns."""
    append_system_prompt: str | None = None
    """``--append-system-prompt``: text added to the end of the system prompt."""
    max_retries: int | None = None
    """``CLAUDE_CODE_MAX_RETRIES`` for the child; None: the CLI's default (demo: 2)."""
    remote: bool = False
    """The run goes to a remote server: name the executable, let that server find it."""


# Command line


def claude_argv(prompt: str, options: ClaudeOptions) -> list[str]:
    """The argv of a non-interactive, streaming claude run of ``prompt``.

    ``[claude, "-p", "--output-format", "stream-json", "--verbose",
    "--include-partial-messages", *options, "--", prompt]``. Raises
    ``FileNotFoundError`` (with install advice) when no claude executable exists,
    and ValueError for contradictory or malformed options.
    """
    from ..demo.env import find_claude

    option_args = claude_option_args(options)
    # A remote server has its own file system: send the configured name (or "claude")
    # for its PATH lookup instead of a path that only exists on this machine.
    if options.remote:
        executable = options.command or "claude"
    else:
        executable = find_claude(options.command or None)
    return [executable, *STREAM_ARGS, *option_args, "--", prompt]


def claude_option_args(options: ClaudeOptions) -> list[str]:
    """The options part of the command line (between the fixed flags and ``--``)."""
    _check_options(options)
    args: list[str] = []
    if options.model:
        args += ["--model", options.model]
    if options.resume:
        args += ["--resume", options.resume]
    if options.continue_session:
        args.append("--continue")
    if options.allowed_tools:
        # The option is variadic; every rule is its own element, so rules with
        # spaces ("Bash(git log *)") stay whole. The next option ends the list.
        args += ["--allowed-tools", *_tool_rules(options)]
    if options.permission_mode:
        args += ["--permission-mode", options.permission_mode]
    if options.max_turns is not None:
        args += ["--max-turns", str(options.max_turns)]
    if options.append_system_prompt:
        args += ["--append-system-prompt", options.append_system_prompt]
    return args + [str(arg) for arg in options.args]


def _check_options(options: ClaudeOptions) -> None:
    if options.resume and options.continue_session:
        raise ValueError("give either resume (a session id) or continue, not both")
    turns = options.max_turns
    if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int) or turns < 1):
        raise ValueError(f"max_turns must be a positive integer, not {turns!r}")
    retries = options.max_retries
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise ValueError(f"max_retries must be a non-negative integer, not {retries!r}")
    bad = [rule for rule in _tool_rules(options) if not rule.strip() or rule.startswith("-")]
    if bad:
        raise ValueError(f"not a tool rule: {bad[0]!r}")


def _tool_rules(options: ClaudeOptions) -> list[str]:
    """The allowed-tool rules; one string is one element (the CLI splits it on commas)."""
    tools = options.allowed_tools
    if isinstance(tools, str):
        return [tools] if tools.strip() else []
    return [str(rule) for rule in tools]


# Environment and the shared demo backend


def claude_environment(options: ClaudeOptions) -> dict[str, str] | None:
    """Extra environment for the child; None when it needs none.

    With ``demo=True`` the shared demo backend starts (once per process) and the
    result points the CLI at it with a private config directory; retries default to
    :data:`DEMO_MAX_RETRIES`. Otherwise only ``max_retries``, when given, is set.
    """
    _check_options(options)
    if options.demo:
        retries = DEMO_MAX_RETRIES if options.max_retries is None else options.max_retries
        return _SHARED_DEMO.environment(retries)
    if options.max_retries is not None:
        return {"CLAUDE_CODE_MAX_RETRIES": str(options.max_retries)}
    return None


def demo_backend() -> DemoBackend:
    """The shared demo backend, started if it is not running (e.g. to read its requests)."""
    return _SHARED_DEMO.backend()


def stop_demo() -> None:
    """Stop the shared demo backend and remove its config directory; idempotent.

    A later demo run starts a fresh one. The extension calls this on unload; it is
    also registered with :mod:`atexit` when the backend first starts.
    """
    _SHARED_DEMO.stop()


class _SharedDemo:
    """One lazily started demo backend and config directory per process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backend: DemoBackend | None = None
        self._root: str | None = None
        self._base_env: dict[str, str] = {}
        self._atexit_registered = False

    def environment(self, max_retries: int) -> dict[str, str]:
        with self._lock:
            self._ensure_started()
            return {**self._base_env, "CLAUDE_CODE_MAX_RETRIES": str(max_retries)}

    def backend(self) -> DemoBackend:
        with self._lock:
            return self._ensure_started()

    def _ensure_started(self) -> DemoBackend:
        if self._backend is not None:
            return self._backend
        from ..demo import DemoBackend, demo_environment

        root = tempfile.mkdtemp(prefix="cc-executor-demo-")
        try:
            backend = DemoBackend().start()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        # The config is written once, here: rewriting it per run could race with a
        # running CLI that keeps its own state in the same file.
        self._base_env = demo_environment(backend.url, f"{root}/config")
        self._backend, self._root = backend, root
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        return backend

    def stop(self) -> None:
        with self._lock:
            backend, root = self._backend, self._root
            self._backend, self._root, self._base_env = None, None, {}
        if backend is not None:
            backend.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


_SHARED_DEMO = _SharedDemo()


# Interpreter


class ClaudeInterpreter:
    """Reads a run's stream-json into a :class:`ClaudeRun`; safe across threads.

    Implements :class:`~cc_executor_nb.kernel.run.Interpreter`: stdout goes to
    :meth:`ClaudeRun.feed`, stderr is kept aside (its last :data:`MAX_STDERR_CHARS`
    characters), :meth:`finish` applies an unterminated last line. Every field read
    takes the same lock as feeding; mutable values are returned as copies. Use
    :meth:`locked` to read several fields consistently.
    """

    def __init__(self, run: ClaudeRun | None = None) -> None:
        self._lock = threading.RLock()
        self._run = run if run is not None else ClaudeRun()
        self._stderr: list[str] = []
        self._stderr_chars = 0
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
            else:
                self._keep_stderr(text)

    def finish(self) -> None:
        """The run is over: apply a last line that had no newline. Idempotent."""
        with self._lock:
            if not self.finished:
                self._run.feed_eof()
                self.finished = True

    def _keep_stderr(self, text: str) -> None:
        self._stderr.append(text)
        self._stderr_chars += len(text)
        if self._stderr_chars > 2 * MAX_STDERR_CHARS:
            tail = "".join(self._stderr)[-MAX_STDERR_CHARS:]
            self._stderr, self._stderr_chars = [tail], len(tail)

    # Reading (any thread)

    @contextmanager
    def locked(self) -> Iterator[ClaudeRun]:
        """Hold the lock and give the run itself, e.g. to render it consistently."""
        with self._lock:
            yield self._run

    @property
    def stderr(self) -> str:
        """The tail of the CLI's stderr."""
        with self._lock:
            return "".join(self._stderr)[-MAX_STDERR_CHARS:]

    @property
    def text(self) -> str:
        """The assistant's text so far."""
        with self._lock:
            return self._run.text

    @property
    def answer(self) -> str:
        """The result text, the error in plain words, or the text so far."""
        with self._lock:
            return self._run.answer

    @property
    def thinking(self) -> str:
        """The assistant's thinking so far."""
        with self._lock:
            return self._run.thinking

    @property
    def result(self) -> dict[str, Any] | None:
        """The final ``result`` event (a copy), None until it arrives."""
        with self._lock:
            return None if self._run.result is None else dict(self._run.result)

    @property
    def cost_usd(self) -> float | None:
        """The run's cost in US dollars."""
        with self._lock:
            return self._run.cost_usd

    @property
    def usage(self) -> dict[str, Any]:
        """Token usage from the result (a copy)."""
        with self._lock:
            return dict(self._run.usage)

    @property
    def session_id(self) -> str | None:
        """Claude's session id (for ``--resume``)."""
        with self._lock:
            return self._run.session_id

    @property
    def model(self) -> str | None:
        """The model the CLI reported."""
        with self._lock:
            return self._run.model

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Tool calls in the order they started."""
        with self._lock:
            return self._run.tool_calls

    @property
    def is_error(self) -> bool:
        """Whether Claude reported an error (an API failure included)."""
        with self._lock:
            return self._run.is_error

    @property
    def api_error_status(self) -> int | None:
        """The HTTP status of an API failure, e.g. 529."""
        with self._lock:
            return self._run.api_error_status

    @property
    def retries(self) -> list[ApiRetry]:
        """The API retries announced so far."""
        with self._lock:
            return list(self._run.retries)

    @property
    def num_turns(self) -> int | None:
        """Agent turns, from the result."""
        with self._lock:
            return self._run.num_turns

    @property
    def phase(self) -> Phase:
        """starting, thinking, writing, tool or done."""
        with self._lock:
            return self._run.phase

    @property
    def version(self) -> int:
        """Grows with every applied line; unchanged means nothing new to show."""
        with self._lock:
            return self._run.version


def claude_interpreter(options: ClaudeOptions) -> Interpreter | None:
    """A fresh :class:`ClaudeInterpreter` (also with ``raw``: the fields stay useful)."""
    return ClaudeInterpreter()


# View


def claude_body_html(
    run: ClaudeRun, *, status: str = "running", exit_code: int | None = None, stderr: str = ""
) -> str:
    """The conversation as sanitized HTML, with a note when the run ended without a result.

    ``status`` and ``exit_code`` are the process's (see ``RunState``); ``stderr`` is
    shown, escaped, only in that note.
    """
    ended = status in _FINAL_STATUSES
    parts = [_waiting_html(run, status), render_claude_html(run, process_ended=ended)]
    if status in _FINAL_STATUSES and run.result is None:
        parts.append(_no_result_html(run, status, exit_code, stderr))
    # MathJax would typeset "$" pairs in model text; these classes make it skip the body.
    return f'<div class="ccx-claude tex2jax_ignore mathjax_ignore">{"".join(parts)}</div>'


_FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timeout", "error"})
_ENDINGS = {"timeout": "timed out", "cancelled": "was cancelled", "error": "failed"}
_NOTE_CHARS = 4000
_MUTED = "opacity:0.75;font-size:smaller"


def _waiting_html(run: ClaudeRun, status: str) -> str:
    if run.phase != "starting" or run.text or status in _FINAL_STATUSES:
        return ""
    return f'<div class="cc-waiting" style="{_MUTED}">Waiting for Claude…</div>'


def _no_result_html(run: ClaudeRun, status: str, exit_code: int | None, stderr: str) -> str:
    title = f"No result from Claude: the run {_ENDINGS.get(status, status)}"
    if exit_code is not None:
        title += f" with exit code {exit_code}"
    detail = "\n".join([*run.raw_lines, stderr.strip()]).strip()[-_NOTE_CHARS:]
    body = (
        f'<pre style="white-space:pre-wrap;margin:0">{html.escape(detail)}</pre>' if detail else ""
    )
    return (
        f'<div class="cc-no-result" style="color:#b00020"><strong>{html.escape(title)}</strong>'
        f"{body}</div>"
    )


class ClaudeBody:
    """A :class:`~cc_executor_nb.kernel.views.Body`: the conversation in an ``HTML`` widget.

    :meth:`render` re-renders only when the interpreter's version or the process's
    status changed; the presenter already limits how often it is called.
    """

    def __init__(self, interpreter: ClaudeInterpreter) -> None:
        import ipywidgets

        self.interpreter = interpreter
        self.render_count = 0
        self._key: tuple[int, str, int | None] | None = None
        self._widget = ipywidgets.HTML(value=self._html("starting", None))
        self._widget.add_class("ccx-claude-body")

    @property
    def widget(self) -> ipywidgets.HTML:
        """The HTML widget holding the rendered conversation."""
        return self._widget

    def render(self, state: RunState, now: float) -> None:
        """Bring the widget up to date with the interpreter and ``state``."""
        key = (self.interpreter.version, state.status, state.exit_code)
        if key == self._key:
            return
        self._key = key
        value = self._html(state.status, state.exit_code)
        if value != self._widget.value:
            self._widget.value = value
        self.render_count += 1

    def _html(self, status: str, exit_code: int | None) -> str:
        stderr = self.interpreter.stderr
        with self.interpreter.locked() as run:
            return claude_body_html(run, status=status, exit_code=exit_code, stderr=stderr)


def claude_body(interpreter: Interpreter | None, options: ClaudeOptions) -> Body | None:
    """The widget body showing the conversation; None with ``raw`` (raw lines instead)."""
    if options.raw or not isinstance(interpreter, ClaudeInterpreter):
        return None
    return ClaudeBody(interpreter)
