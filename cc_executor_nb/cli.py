"""The terminal client: ``python -m cc_executor_nb run -- CMD ARGS...`` and ``... claude PROMPT``.

``run`` streams any command from a server (``--server URL``; default: a private server
started in this process) to the terminal: the child's stdout to stdout, its stderr to
stderr, heartbeats and inactivity as dim lines on stderr, the output verbatim.

``claude`` runs a Claude prompt (``claude -p ... --output-format stream-json``, the options
of ``%ccexec``: ``--demo``, ``--model``, ``--resume`` ...) and shows it readably with the
notebook's text renderer: the answer on stdout as it grows; thinking, tool calls, retries
and Claude's footer (status, cost, tokens, turns, duration, model, session id) as dim
notes on stderr. ``--raw`` prints the stream-json lines instead. The run is one-shot:
nobody is asked for permission and there is no follow-up, so the flags of a conversation
(``--approve``, ``--idle-timeout``, ``--no-interactive``) are refused; ``--auto-resume``
wraps the CLI in its supervisor as in the notebook. With ``--demo`` the CLI's config lasts
across invocations (:func:`~cc_executor_nb.demo.shared.keep_demo_config`), so ``--resume``
finds a session an earlier invocation made.

Both exit with the child's exit code (128 + N when killed by signal N).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TextIO

from . import methods
from .claude.command import ResumeSettings, claude_command, runs_a_wrapper
from .claude.interpreter import ClaudeInterpreter
from .claude.options import (
    HOST_MODE_OPTIONS,
    ONE_SHOT,
    ClaudeOptions,
)
from .client import Client, connect
from .declare import Flag, OneLineParser, OptionError, add_arguments, declared, from_values
from .errors import CCExecError, NoProcessRunning
from .events import Completed, Event, Output
from .kernel.api import check_server_url
from .kernel.claudetext import ClaudeTextView
from .kernel.run import judged, token_from_env, unreachable
from .kernel.textview import LineEnds, LineRenderer, TextView
from .protocol import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_INACTIVITY_THRESHOLD, MIN_INTERVAL, one_line
from .server.config import ServerSettings, build_server

__all__ = ["exit_status", "main", "render_event"]

LABEL_CHARS = 80
CANCEL_WAIT = 10.0
"""Seconds a failed prompt feed tries to cancel its run over a connection being dialled again."""
FEED_SETTLE = 1.0
"""Seconds the end of a run's events waits for a failing prompt feed to say why it failed."""
DEFAULT_TOKEN_ENV = "CC_EXECUTOR_TOKEN"
"""The variable a remote server's token is read from without --token-env."""


def exit_status(event: Completed) -> int:
    """The shell exit status for a completed run (1 for a failed run that exited 0)."""
    code = event.exit_code
    if code is None or (code == 0 and event.status != "completed"):
        return 1
    return 128 - code if code < 0 else code


def render_event(
    event: Event, view: LineRenderer, out: TextIO, err: TextIO, *, notes: bool = True, ends: LineEnds | None = None
) -> None:
    """Write one event to the terminal: output to its stream, notes (dim) to stderr.

    ``notes=False`` drops the notes (``--quiet``). ``ends`` (kept across events) starts a
    note on a new line where the output before it stopped mid-line.
    """
    if event.method == methods.CONNECTED:
        return
    for line in view.render(event.method, event.params):
        if line.kind == "note" and notes:
            text = f"\x1b[2m{line.text}\x1b[0m" if err.isatty() else line.text
            _write(err, (ends.before_note(err) if ends is not None else "") + text + "\n", ends)
        elif line.kind != "note":
            _write(out if line.kind == "stdout" else err, line.text, ends)


def _write(stream: TextIO, text: str, ends: LineEnds | None) -> None:
    stream.write(text)
    stream.flush()
    if ends is not None:
        ends.wrote(stream, text)


@contextlib.asynccontextmanager
async def _session(args: argparse.Namespace) -> AsyncIterator[Client]:
    if args.server:
        check_server_url(args.server, "--server")
        token = _token(args.token_env)
        try:
            remote = await connect(args.server, token)
        except (OSError, CCExecError, TimeoutError) as exc:
            raise CCExecError(unreachable(args.server, exc, token_hint=_token_hint(args.token_env))) from None
        async with remote as client:
            yield client
        return
    handler = build_server(ServerSettings())
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, handler.token) as client:
            yield client
    finally:
        await handler.close()


def _token(name: str | None) -> str | None:
    """The token of ``--token-env NAME`` (a usage error when NAME is not set), else of CC_EXECUTOR_TOKEN."""
    if name is None:
        return os.environ.get(DEFAULT_TOKEN_ENV)
    return token_from_env(name, f"--token-env {name}")


def _token_hint(name: str | None) -> str:
    """Where this client's token comes from, for a server that refused it."""
    if name is not None:
        return f"give the server's token in the environment variable {name} (--token-env)"
    unset = "" if DEFAULT_TOKEN_ENV in os.environ else ", which is not set"
    return (f"give the server's token in the environment variable {DEFAULT_TOKEN_ENV}{unset}, "
            "or name another with --token-env")


@dataclasses.dataclass
class _Launch:
    """What ``run`` or ``claude`` starts and how it is shown."""

    argv: list[str]
    env: dict[str, str] | None
    view: LineRenderer
    interpreter: ClaudeInterpreter | None = None
    """The Claude run's interpreter (None for a command, and with --raw)."""
    stdin_text: str | None = None
    """Text for the child's stdin, which is then closed (a prompt too long for argv)."""
    server_python: bool = False
    """``argv`` is ``python3 -m`` a wrapper of this package, which a remote server runs with
    its own interpreter (``execute``'s ``server_python``)."""


@dataclasses.dataclass
class _Progress:
    """How far ``_run`` got, for what Ctrl-C says."""

    asked: bool = False
    """Whether the run may have been asked for: ``execute`` is about to be sent, or was (a
    Ctrl-C from then on ends the connection, and the server stops the run if it started)."""
    started: bool = False
    """Whether the run has started (its first event came: the server answered ``execute``)."""
    ends: LineEnds = dataclasses.field(default_factory=LineEnds)
    """Where the run's output left the terminal mid-line (what Ctrl-C says starts a line)."""


def _interrupted(progress: _Progress) -> str:
    """The line Ctrl-C leaves: the run it stopped, if any (the connection's clean close, or the
    private server's shutdown, ended it before this is printed). During the ``execute`` round
    trip nobody here knows whether the server got the request: a server that did handles it
    before it reads the close, which then stops the run."""
    if progress.started:
        return "[cancelled] by Ctrl-C; the run was stopped on the server"
    if progress.asked:
        return "[cancelled] by Ctrl-C while the run was starting; the server stops it if it started"
    return "[cancelled] by Ctrl-C before the run started"


def _interrupted_line(progress: _Progress, err: TextIO) -> str:
    """The Ctrl-C line with what starts it on a line of its own: a newline after output that
    stopped mid-line, or after the ``^C`` a terminal echoes where the cursor stood."""
    return (progress.ends.before_note(err) or ("\n" if _is_terminal(err) else "")) + _interrupted(progress)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or no file at all
        return False


def _launch(args: argparse.Namespace) -> _Launch:
    """What ``args`` runs: ``args.command`` (a command) or ``args.prompt`` (a Claude prompt).

    Called before the event loop runs: a prompt read from a terminal (``-``) is read with
    Python's own Ctrl-C; inside ``asyncio.run`` the first Ctrl-C only cancelled the task
    blocked in that read, and a second one was needed."""
    if args.action == "claude":
        return _claude_run(args)
    return _Launch(args.command, None, TextView(heartbeats=not args.quiet, notices=not args.quiet))


async def _run(args: argparse.Namespace, launch: _Launch, progress: _Progress) -> int:
    """Run ``launch``, rendered to the terminal."""
    interpreter, feed = launch.interpreter, launch.stdin_text
    async with _session(args) as client:
        progress.asked = True
        execute: dict[str, Any] = {
            "argv": launch.argv,
            "cwd": args.cwd,
            "env": launch.env,
            "timeout": args.timeout or None,  # --timeout 0: no limit, as in the notebook
            "heartbeat_interval": args.heartbeat,
            "inactivity_threshold": args.inactivity,
            "capture": args.capture,
            "server_python": launch.server_python,
            # A Claude run's answer is counted by nobody here: the server counts nothing.
            **({"progress_target": None} if args.action == "claude" else {}),
        }
        if feed is not None:
            execute["stdin"] = "pipe"
            if await client.takes_input_in_execute(feed, **execute):  # the server writes it at the start
                execute["input"], feed = feed, None
        events = client.run_events(**execute)
        ends = progress.ends
        feeder: asyncio.Task[None] | None = None
        try:
            async for received in events:
                progress.started = True  # run_events awaited execute's answer first
                if feed is not None:  # the run has started: its output shows while the feed goes in
                    feeder, feed = asyncio.create_task(_feed(client, feed)), None
                event = received
                if interpreter is not None and isinstance(received, Output):
                    interpreter.feed(received.stream, received.data)
                if isinstance(received, Completed):
                    _check_fed(feeder)
                    if interpreter is not None:
                        event = judged(received, interpreter)  # no result event: failed, never completed
                render_event(event, launch.view, sys.stdout, sys.stderr, notes=not args.quiet, ends=ends)
                if isinstance(event, Completed):
                    return exit_status(event)
        except CCExecError:
            await _failed_feed(feeder)  # a failed feed closed the connection: its failure says why
            raise
        finally:
            await _stop_feeding(feeder)
    return 1


async def _feed(client: Client, text: str) -> None:
    """Write ``text`` to the run's stdin, then close it, while ``_run`` shows the run's events: a
    prompt that did not fit ``execute`` goes in pieces as the child reads them, and what the child
    prints before it reads is shown meanwhile. A prompt that could not be written whole cancels
    the run, so the child never answers a cut prompt nor waits for the rest for ever, and closes
    the connection, which ends the events ``_run`` reads (``_check_fed`` or ``_failed_feed``
    then raise why)."""
    try:
        # A CLI that exited (or closed its input) before reading says why by its exit code and
        # stderr: the refused write is no error of the run.
        with contextlib.suppress(NoProcessRunning):
            await client.input(text)
            await client.close_input()
    except Exception:
        await _cancel_run(client)
        # Closing the connection ends the run's events here (a reconnected client's too).
        with contextlib.suppress(Exception):
            await client.close()
        raise


async def _cancel_run(client: Client) -> None:
    """Ask the server to cancel the run, once more while a dropped connection is being dialled
    again (a session left detached would keep the run, waiting for its prompt, for the
    server's ``--detach-ttl``), for at most ``CANCEL_WAIT`` seconds."""
    deadline = time.monotonic() + CANCEL_WAIT
    while not client.closed:
        try:
            await client.cancel()
            return
        except NoProcessRunning:
            return
        except CCExecError:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.1)


def _check_fed(feeder: asyncio.Task[None] | None) -> None:
    """Raise what stopped ``_feed`` before the whole text was written, if anything did."""
    if feeder is not None and feeder.done() and not feeder.cancelled():
        failure = feeder.exception()
        if failure is not None:
            raise failure


async def _failed_feed(feeder: asyncio.Task[None] | None) -> None:
    """The run's events ended on an error: raise the feed's failure if that is what closed the
    connection (the feed ends right after its close: it is waited for a moment)."""
    if feeder is not None:
        await asyncio.wait({feeder}, timeout=FEED_SETTLE)
        _check_fed(feeder)


async def _stop_feeding(feeder: asyncio.Task[None] | None) -> None:
    """The run is over (or ``_run`` is leaving on an error): a feed still going is stopped; one
    that failed has said so already (``_check_fed``), or matters less than what ends ``_run``.
    A cancel of ``_run`` itself (Ctrl-C) meanwhile goes through."""
    if feeder is None:
        return
    feeder.cancel()
    await asyncio.wait({feeder})
    if not feeder.cancelled():
        feeder.exception()  # retrieved: asyncio would log it as never retrieved


def _claude_run(args: argparse.Namespace) -> _Launch:
    """How a Claude prompt runs: its argv, environment, interpreter (None with --raw) and view.

    The prompt goes to the CLI's stdin (``stdin_text``), whatever its length.
    """
    prompt = _prompt(args.prompt)
    values = {f.name: getattr(args, f.name) for f, spec in declared(ClaudeOptions) if spec.flags}
    options = dataclasses.replace(from_values(ClaudeOptions, values), remote=bool(args.server))
    if options.demo:
        # Each invocation is a process of its own: a temporary demo config would take the
        # session with it, and --resume in the next invocation would find nothing.
        from .demo.shared import keep_demo_config

        keep_demo_config()
    # The prompt goes to the CLI's stdin, never on its command line (``ps`` shows that to all).
    # A remote server runs the wrappers (--auto-resume's supervisor) with its own interpreter:
    # this one's path means nothing there.
    python = "python3" if options.remote else None
    (argv, env), stdin_text = claude_command(options, python=python), prompt
    own = python is not None and runs_a_wrapper(argv)
    if options.raw:
        return _Launch(argv, env, TextView(heartbeats=not args.quiet, notices=not args.quiet), stdin_text=stdin_text,
                       server_python=own)
    interpreter = ClaudeInterpreter(prompt=prompt)
    label = one_line(f"claude: {prompt}", LABEL_CHARS)
    return _Launch(argv, env, ClaudeTextView(interpreter, label=label, heartbeats=not args.quiet), interpreter,
                   stdin_text, own)


def _prompt(words: Sequence[str]) -> str:
    """The prompt words joined by spaces; ``-`` alone reads the prompt from stdin."""
    prompt = sys.stdin.read() if list(words) == ["-"] else " ".join(words)
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    return prompt


def _seconds(minimum: float) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds of at least ``minimum`` (above 0)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value) or value <= 0 or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= {max(minimum, 0):g}, not {text}")
        return value

    return parse


def _timeout(text: str) -> float:
    """An argparse type: ``--timeout``'s seconds, 0 for no limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or a positive number of seconds, not {text}")
    return value


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{run,claude}")
    run = sub.add_parser("run", help="run a command and stream its output to the terminal")
    _common_arguments(run, quiet="only the child's output")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    # Listed here for --help; main() parses "claude" with _claude_parser (options and
    # prompt words may be mixed, which argparse allows only without subparsers).
    sub.add_parser("claude", help=_CLAUDE_HELP, add_help=False)
    return parser


def _script_name() -> str:
    """The script's name as argparse takes it for ``prog`` (``ccexec``)."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "ccexec"


_CLAUDE_HELP = "run a Claude prompt and show its answer, tool calls and footer"


def _claude_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=f"{prog or _script_name()} claude",
        description="Run a Claude prompt one-shot (claude -p) and show it readably: the answer on "
        "stdout as it grows, notes (thinking, tool calls, retries, the footer with cost and session "
        "id) on stderr. --raw prints the stream-json lines instead. Nobody is asked for permission "
        "(allow tools up front with --allowed-tools or --permission-mode) and there is no follow-up.",
    )
    _common_arguments(parser, quiet="only the answer (no notes, no footer)")
    add_arguments(parser, ClaudeOptions, skip=CONVERSATION_OPTIONS, helps=_CLAUDE_HELPS)
    _refused_arguments(parser)
    parser.add_argument("prompt", nargs="*", help="the prompt (words are joined by spaces; - reads stdin)")
    return parser


# The declared help speaks of the kernel and its CCExec settings; here there are none.
_CLAUDE_HELPS = {
    "model": "the Claude model (default: the CLI's)",
    "executable": "path or name of the claude executable (default: node_modules/.bin/claude of this "
    "project or of the working directory, then claude on PATH)",
    "continue_session": "follow up the CLI's latest session in the working directory (the CLI's --continue)",
    "auto_resume": "when a usage or rate limit stops the run, wait for the reset and resume the same Claude "
    f"session (--resume SESSION_ID with the prompt {ResumeSettings.prompt!r})",
}

CONVERSATION_OPTIONS = ("interactive", *HOST_MODE_OPTIONS)
"""Options of a conversation (host mode), which a one-shot run cannot have."""


def _refused_flags() -> list[tuple[str, Flag]]:
    """The flags of ``CONVERSATION_OPTIONS`` (some are the Python API's only)."""
    return [(f.name, spec) for f, spec in declared(ClaudeOptions) if f.name in CONVERSATION_OPTIONS and spec.flags]


def _refused_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``CONVERSATION_OPTIONS``, hidden from ``--help``: given, they are refused
    with the reason (argparse would only say "unrecognized arguments")."""
    for name, spec in _refused_flags():
        kwargs = {**spec.argparse_kwargs(name), "help": argparse.SUPPRESS}
        kwargs.pop("type", None)
        parser.add_argument(*spec.flags, **kwargs)


def _refused(args: argparse.Namespace) -> str | None:
    """Why a conversation flag given to ``claude`` cannot be honoured (None when none was given)."""
    for name, spec in _refused_flags():
        if getattr(args, name) is not None:
            return (f"{spec.flags[0]} does not apply here: the terminal client {ONE_SHOT}; allow tools up front "
                    "with --allowed-tools or --permission-mode, or use a notebook, IPython or the Python API "
                    "for approvals")
    return None


def _common_arguments(parser: argparse.ArgumentParser, *, quiet: str) -> None:
    parser.add_argument("--server", help="ws://HOST:PORT/ws of a running server (default: private)")
    parser.add_argument("--token-env", default=None, metavar="NAME",
                        help=f"environment variable holding the server's token (default: {DEFAULT_TOKEN_ENV})")
    parser.add_argument("--cwd", metavar="DIR", help="working directory of the process (default: this one)")
    parser.add_argument("--timeout", type=_timeout, help="cancel the run after this many seconds (0: no limit)")
    # Sent only when given: otherwise the server's defaults apply (a standalone server's
    # --heartbeat-interval or WEBSOCKET_HEARTBEAT_INTERVAL; the private server's 20 s and 30 s).
    parser.add_argument("--heartbeat", type=_seconds(MIN_INTERVAL), default=None,
                        help=f"heartbeat interval (s, at least {MIN_INTERVAL:g}; default: the server's, "
                        f"{DEFAULT_HEARTBEAT_INTERVAL:g} for the private one)")
    parser.add_argument("--inactivity", type=_seconds(MIN_INTERVAL), default=None,
                        help=f"inactivity threshold (s, at least {MIN_INTERVAL:g}; default: the server's, "
                        f"{DEFAULT_INACTIVITY_THRESHOLD:g} for the private one)")
    parser.add_argument("--capture", choices=("file", "pipe"), default=None,
                        help="how the server captures the output (default: the server's, file)")
    parser.add_argument("--quiet", action="store_true", help=quiet)


_CLAUDE_FLAGS = {f.name: spec.flags[-1] for f, spec in declared(ClaudeOptions) if spec.flags}


def _flag(name: str) -> str:
    """How this client spells an option field in an error (``max_budget_usd`` is ``--max-budget-usd``)."""
    return _CLAUDE_FLAGS.get(name, name)


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Entry point of ``python -m cc_executor_nb`` and the ``ccexec`` script. ``prog`` is the
    command that ran it, for --help (None: the script's name, as argparse takes it)."""
    progress = _Progress()
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), prog, progress)
    except KeyboardInterrupt:  # from the arguments' parse to the end of the run
        print(_interrupted_line(progress, sys.stderr), file=sys.stderr)
        return 130


def _main(words: list[str], prog: str | None, progress: _Progress) -> int:
    if words[:1] == ["claude"]:
        args = _claude_parser(prog).parse_intermixed_args(words[1:])
        args.action = "claude"
        refused = _refused(args)
        if refused is not None:
            print(f"error: {refused}", file=sys.stderr)
            return 2
    else:
        args = _parser(prog).parse_args(words)
    if args.action == "run":
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        if not args.command:
            print("error: give a command after --", file=sys.stderr)
            return 2
    try:
        return asyncio.run(_run(args, _launch(args), progress))
    except (ValueError, FileNotFoundError) as exc:
        text = exc.spelled(_flag) if isinstance(exc, OptionError) else str(exc)
        print(f"error: {text.splitlines()[0]}", file=sys.stderr)
        return 2
    except CCExecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
