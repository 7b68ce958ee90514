"""What shapes a Claude run, declared once: the magic's flags, the API's keywords and the argv.

Each field of :class:`ClaudeOptions` is declared with :func:`~cc_executor_nb.declare.option`
(its flag, help and ``CCExec`` default). Two command lines come from them:

    options = ClaudeOptions(model="sonnet", demo=True)
    argv = claude_host_argv(options)                     # host mode: the prompt goes on stdin
    argv = claude_stdin_argv(options)                    # one-shot: [claude, "-p", ...], the prompt on stdin
    env = claude_environment(options)                    # demo: points the CLI at the mock

In host mode (``interactive``, the default) the CLI's permission questions come to the
notebook and follow-ups go to the same process (:mod:`cc_executor_nb.claude.control`).
A one-shot run's prompt goes to the CLI's stdin too: a command line is readable by every
local user. :func:`claude_argv` (options first, the prompt last after ``--`` as one argv
element, never shell text) is for prompts that are not the user's: an ``auto_resume``
resume's, the self-test's.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ..declare import OptionError, option
from ..protocol import MAX_TIMEOUT, MIN_INTERVAL
from .control import HOST_ARGS
from .executable import find_claude

__all__ = [
    "APPROVE_MODES",
    "DEMO_MAX_RETRIES",
    "HOST_MODE_OPTIONS",
    "ONE_SHOT",
    "STREAM_ARGS",
    "ClaudeOptions",
    "approve_mode",
    "check_dollars",
    "claude_argv",
    "claude_environment",
    "claude_host_argv",
    "claude_option_args",
    "claude_stdin_argv",
    "places",
    "refuse_host_options",
]

APPROVE_MODES = ("ask", "all", "none")
"""How permission questions are answered: ask a person, allow all, deny all."""

STREAM_ARGS = ("-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages")
"""What makes a run non-interactive and streaming, right after the executable."""

DEMO_MAX_RETRIES = 2
"""API retries in demo mode unless the options say otherwise: error scenarios end fast."""


HOST_MODE_OPTIONS = ("approve", "on_permission", "idle_timeout")
"""The options only a conversation (host mode) uses: who answers its questions, how long it
waits for a follow-up."""

ONE_SHOT = "runs Claude one-shot (claude -p), so it cannot ask for approval or follow up"
"""Why a one-shot run refuses :data:`HOST_MODE_OPTIONS`: ``claude -p`` gets no permission
channel (a tool call it would ask about is refused) and reads no follow-up."""


def approve_mode(text: str) -> str:
    """The ``--approve`` value: ask, all or none (argparse shows the error as it is)."""
    mode = text.strip().lower()
    if mode not in APPROVE_MODES:
        raise argparse.ArgumentTypeError(f"takes ask, all or none, not {text!r}")
    return mode


@dataclass(frozen=True)
class ClaudeOptions:
    """What shapes a claude run besides its prompt.

    An empty ``executable``, ``model``, ``resume`` or ``permission_mode`` is an error (it
    would silently run the default); an empty ``append_system_prompt`` appends nothing.
    Giving both ``resume`` and ``continue_session`` is an error (:meth:`check` raises
    ValueError).
    """

    # The executable and the backend
    executable: str | None = option(
        None, "--claude-command", metavar="PATH",
        help="path or name of the claude executable (default: CCExec.claude_command, else "
        "node_modules/.bin/claude, then claude on PATH)", config="claude_command",
    )
    demo: bool = option(
        False, "--demo", kind="switch", config="demo",
        help="run Claude against the built-in offline demo API",
    )
    raw: bool = option(False, "--raw", kind="switch", help="show the raw output lines")
    remote: bool = option(
        False, help="the run goes to a remote server: name the executable, let that server find it",
    )
    # The model and the conversation
    model: str | None = option(None, "--model", help="the Claude model (default: CCExec.model)", config="model")
    resume: str | None = option(
        None, "--resume", metavar="SESSION_ID", help="continue this Claude session",
    )
    continue_session: bool = option(
        False, "--continue", kind="switch",
        help="follow up the last Claude run of this kernel (else the CLI's latest)",
    )
    # Tools and limits
    allowed_tools: tuple[str, ...] = option(
        (), "--allowed-tools", metavar="RULE", kind="repeat",
        help='a tool the CLI may use without asking, e.g. "Bash(git:*)" (repeatable)',
    )
    permission_mode: str | None = option(
        None, "--permission-mode", metavar="MODE",
        help="the CLI's permission mode (default, acceptEdits, plan, bypassPermissions)",
    )
    max_turns: int | None = option(
        None, "--max-turns", metavar="N", type=int, help="stop after N agent turns",
    )
    append_system_prompt: str | None = option(
        None, "--append-system-prompt", metavar="TEXT", help="text added to the system prompt",
    )
    max_retries: int | None = option(
        None, "--max-retries", metavar="N", type=int,
        help="retries of a failed API call (CLAUDE_CODE_MAX_RETRIES)",
    )
    max_budget_usd: float | None = option(
        None, "--max-budget-usd", metavar="USD", type=float, config="max_budget_usd",
        help="stop the run once it has spent this many dollars (the CLI's --max-budget-usd)",
    )
    auto_resume: bool = option(
        False, "--auto-resume", kind="switch", config="auto_resume",
        help="when a usage or rate limit stops the run, wait for the reset and resume the same "
        "Claude session (--resume SESSION_ID with CCExec.resume_prompt)",
    )
    claude_args: tuple[str, ...] = option(
        (), "--claude-arg", metavar="ARG", kind="repeat", config="claude_args", extends=True,
        help="an extra argument for the claude CLI (repeatable; --claude-arg=--flag)",
    )
    # The conversation (host mode)
    interactive: bool = option(
        True, "--no-interactive", kind="off", config="interactive",
        help="one-shot mode: claude -p with the prompt on its stdin, no permission question "
        "reaches the notebook and there are no follow-ups (for CLIs without host mode)",
    )
    approve: str | None = option(
        None, "--approve", metavar="ask|all|none", type=approve_mode,
        help="how Claude's permission questions are answered: ask (the default: the widget, "
        "or the cell's input box while the kernel is busy), all (allow every call), none "
        "(deny every call)",
    )
    on_permission: Callable[[Any], Any] | str | None = option(  # noqa: RUF009 - option() builds a field
        None, config="permission_policy",
        help="a policy for permission questions: callable(request) -> 'allow', 'deny' or "
        "None (ask), or one of ask, all, none (default: CCExec.permission_policy)",
    )
    idle_timeout: float | None = option(
        None, "--idle-timeout", metavar="SECONDS", type=float, config="idle_timeout",
        help="end a live conversation after this many seconds without a follow-up "
        "(default: CCExec.idle_timeout, 600; 0: never)",
    )

    def check(self) -> None:
        """Raise ValueError for contradictory or malformed options."""
        _check_types(self)
        _check_not_empty(self)
        if self.resume and self.continue_session:
            raise OptionError("give either {0} (a session id) or {1}, not both", ["resume", "continue_session"])
        _check_count("max_turns", self.max_turns, minimum=1)
        _check_count("max_retries", self.max_retries, minimum=0)
        check_dollars("max_budget_usd", self.max_budget_usd)
        bad = [rule for rule in self.tool_rules() if not rule.strip() or rule.startswith("-")]
        if bad:
            raise ValueError(f"not a tool rule: {bad[0]!r}")
        if self.approve is not None and self.approve not in APPROVE_MODES:
            raise OptionError("{0} must be ask, all or none, not {1!r}", ["approve"], self.approve)
        policy = self.on_permission
        if policy is not None and not callable(policy) and policy not in APPROVE_MODES:
            raise ValueError(f"on_permission must be a callable or ask, all or none, not {policy!r}")
        _check_idle_timeout(self.idle_timeout)

    @property
    def policy(self) -> Callable[[Any], Any] | str:
        """How questions are answered: ``approve`` when given, else ``on_permission``, else ask."""
        if self.approve is not None:
            return self.approve
        return self.on_permission if self.on_permission is not None else "ask"

    def tool_rules(self) -> list[str]:
        """The allowed-tool rules; one string is one element (the CLI splits it on commas)."""
        tools: Any = self.allowed_tools
        if isinstance(tools, str):
            return [tools] if tools.strip() else []
        return [str(rule) for rule in tools]


_TEXT_OPTIONS = ("model", "resume", "permission_mode", "append_system_prompt")


def _check_types(options: ClaudeOptions) -> None:
    """Options that become command-line words must be text (a number would reach the server)."""
    for name in _TEXT_OPTIONS:
        value = getattr(options, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, not {value!r}")
    executable = options.executable
    if executable is not None and not isinstance(executable, (str, os.PathLike)):
        raise ValueError(f"executable must be a path or a command name, not {executable!r}")
    for name in ("allowed_tools", "claude_args"):
        words: Any = getattr(options, name)
        if name == "claude_args" and isinstance(words, str):
            raise ValueError(f"claude_args must be a list of strings, one per argument, not the string {words!r}")
        bad = [] if isinstance(words, str) else [word for word in words if not isinstance(word, str)]
        if bad:
            raise ValueError(f"{name} must hold strings, not {bad[0]!r}")


_NAMED_OPTIONS = {
    "executable": "a path or command name", "model": "a model name", "resume": "a session id",
    "permission_mode": "a mode",
}
"""Options whose empty value would silently run the default, with what to give instead. An
empty ``append_system_prompt`` is what it says: nothing appended."""


def _check_not_empty(options: ClaudeOptions) -> None:
    """``model=""`` (``--model ""``, a variable left empty) ran the default model unnoticed."""
    for name, what in _NAMED_OPTIONS.items():
        value = getattr(options, name)
        if isinstance(value, str) and not value.strip():
            raise OptionError("{0} is empty: give {1}, or leave it unset", [name], what)


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive" if minimum > 0 else "a non-negative"
        raise OptionError("{0} must be {1} integer, not {2!r}", [name], kind, value)


def _check_idle_timeout(timeout: object) -> None:
    """0 is "never"; a job server refuses a shorter wait than MIN_INTERVAL (its ``stdin_idle_timeout``)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout < 0:
        raise OptionError("{0} must be a non-negative number of seconds, not {1!r}", ["idle_timeout"], timeout)
    if 0 < timeout < MIN_INTERVAL:
        template = "{0} must be 0 (never) or at least {1:g} s, not {2!r}"
        raise OptionError(template, ["idle_timeout"], MIN_INTERVAL, timeout)
    if timeout > MAX_TIMEOUT:
        template = "{0} must be at most {1:.0f} s (the protocol's bound), not {2!r}"
        raise OptionError(template, ["idle_timeout"], MAX_TIMEOUT, timeout)


def refuse_host_options(given: Collection[str], options: ClaudeOptions) -> None:
    """Raise OptionError when ``given`` (the options set by the caller, not by settings)
    holds one of :data:`HOST_MODE_OPTIONS` while ``options`` run Claude one-shot
    (``interactive=False``, or ``auto_resume``, whose supervisor runs ``claude -p``)."""
    if options.interactive and not options.auto_resume:
        return
    refused = [name for name in HOST_MODE_OPTIONS if name in given]
    if refused:
        mode = "auto_resume=True" if options.auto_resume else "interactive=False"
        verb = "does" if len(refused) == 1 else "do"
        raise OptionError(
            f"{places(3, len(refused))} {verb} not apply with {{0}}: it {ONE_SHOT}; allow tools up front with "
            "{1} or {2}",
            [mode, "allowed_tools", "permission_mode", *refused],
        )


def places(first: int, count: int) -> str:
    """``count`` places of an :class:`OptionError` template from ``first``: ``"{1}, {2}"``."""
    return ", ".join(f"{{{index}}}" for index in range(first, first + count))


def check_dollars(name: str, value: object) -> None:
    """``value`` (None: not given) must be a positive, finite number of dollars; the error names ``name``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise OptionError("{0} must be a positive number of dollars, not {1!r}", [name], value)


# Command line: how each option becomes arguments, in this order.

def _tool_args(options: ClaudeOptions) -> list[str]:
    # The option is variadic; every rule is its own element, so rules with spaces
    # ("Bash(git log *)") stay whole. The next option ends the list.
    rules = options.tool_rules()
    return ["--allowed-tools", *rules] if rules else []


_ARGV: list[Callable[[ClaudeOptions], list[str]]] = [
    lambda o: ["--model", o.model] if o.model else [],
    lambda o: ["--resume", o.resume] if o.resume else [],
    lambda o: ["--continue"] if o.continue_session else [],
    _tool_args,
    lambda o: ["--permission-mode", o.permission_mode] if o.permission_mode else [],
    lambda o: ["--max-turns", str(o.max_turns)] if o.max_turns is not None else [],
    lambda o: ["--append-system-prompt", o.append_system_prompt] if o.append_system_prompt else [],
    lambda o: ["--max-budget-usd", f"{o.max_budget_usd:g}"] if o.max_budget_usd is not None else [],
]


def claude_argv(prompt: str, options: ClaudeOptions) -> list[str]:
    """The argv of a non-interactive, streaming claude run of ``prompt``.

    ``[claude, "-p", "--output-format", "stream-json", "--verbose",
    "--include-partial-messages", *options, "--", prompt]``. Raises
    ``FileNotFoundError`` (with install advice) when no claude executable exists,
    and ValueError for contradictory or malformed options.
    """
    option_args = claude_option_args(options)
    return [_executable(options), *STREAM_ARGS, *option_args, "--", prompt]


def claude_stdin_argv(options: ClaudeOptions) -> list[str]:
    """The argv of a one-shot run whose prompt comes on stdin (``claude -p`` reads it there
    when no prompt follows): every one-shot run's, since a command line is readable by every
    local user (``ps``). Raises like :func:`claude_argv`."""
    return [_executable(options), *STREAM_ARGS, *claude_option_args(options)]


def claude_host_argv(options: ClaudeOptions) -> list[str]:
    """The argv of a claude run in host mode: ``[claude, *HOST_ARGS, *options]``.

    The prompt is not in it: it goes to the CLI's stdin as the first user message.
    Raises like :func:`claude_argv`.
    """
    option_args = claude_option_args(options)
    return [_executable(options), *HOST_ARGS, *option_args]


def _executable(options: ClaudeOptions) -> str:
    # A remote server has its own file system: send the configured name (or "claude")
    # for its PATH lookup instead of a path that only exists on this machine.
    configured = os.fspath(options.executable) if options.executable else None
    return (configured or "claude") if options.remote else find_claude(configured)


def claude_option_args(options: ClaudeOptions) -> list[str]:
    """The options part of the command line (between the fixed flags and ``--``)."""
    options.check()
    args: list[str] = []
    for render in _ARGV:
        args += render(options)
    return args + [str(arg) for arg in options.claude_args]


def claude_environment(options: ClaudeOptions) -> dict[str, str] | None:
    """Extra environment for the child; None when it needs none.

    With ``demo=True`` the shared demo backend starts (once per process) and the
    result points the CLI at it with a private config directory; retries default to
    :data:`DEMO_MAX_RETRIES`. Otherwise only ``max_retries``, when given, is set.
    """
    options.check()
    if options.demo:
        from ..demo.shared import demo_environment_for

        retries = DEMO_MAX_RETRIES if options.max_retries is None else options.max_retries
        return demo_environment_for(retries)
    if options.max_retries is not None:
        return {"CLAUDE_CODE_MAX_RETRIES": str(options.max_retries)}
    return None
