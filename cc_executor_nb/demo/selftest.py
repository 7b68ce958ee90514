"""End-to-end self-test: the real ``claude`` CLI through the executor's server and client.

::

    python -m cc_executor_nb.demo.selftest --all --demo          # offline, no credentials needed
    python -m cc_executor_nb.demo.selftest --test echo --test story --demo
    python -m cc_executor_nb.demo.selftest --all                 # the real API (ANTHROPIC_API_KEY)
    python -m cc_executor_nb.demo.selftest --all --demo --server ws://127.0.0.1:8003/ws

Five cases: Simple Echo, Math Question, Haikus, Thinking Task (a silence longer than
the inactivity threshold: heartbeats and ``process.status`` must arrive, no timeout)
and Story Generation (5000 words, streamed). Each runs ``claude -p`` with stream-json
output through one WebSocket session, checks its own success criteria and prints a
table; a summary follows. Exit status: 0 when every case passed, 1 when one failed,
2 when the test could not run at all (no CLI, no credentials, unknown test name).

By default the server is an ``EnhancedWebSocketHandler`` started in this process on
127.0.0.1 with a random port and token. ``--demo`` points the CLI at the built-in
mock of the Anthropic API (:mod:`cc_executor_nb.demo`), started in this process on
127.0.0.1; with ``--server`` that server must then run on this machine too.

The pure parts (cases, checks, :class:`Observation`, tables) do no I/O;
:func:`observe_run` is the one asyncio adapter, reused by the end-to-end tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import WebSocketException

from .. import methods
from ..claude.options import ClaudeOptions, claude_argv, claude_environment
from ..claude.streamjson import ClaudeRun
from ..client import Client, connect, os_reason
from ..declare import OneLineParser
from ..errors import CCExecError, HandshakeRefused
from ..events import Completed, Event, Output, ProcessError
from .shared import demo_backend, stop_demo

__all__ = [
    "CASES",
    "Case",
    "Check",
    "Observation",
    "Outcome",
    "TimedEvent",
    "count_haikus",
    "evaluate",
    "format_case",
    "format_summary",
    "main",
    "observe_run",
    "select_cases",
]

CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
DEFAULT_TOKEN_ENV = "CC_EXECUTOR_TOKEN"
DEFAULT_TIMEOUT = 300.0
CANCEL_GRACE = 15.0

# Streaming: the story counts as streamed when its text came in at least this many
# notifications, spread over at least this many seconds.
MIN_TEXT_MESSAGES = 10
MIN_TEXT_SPREAD = 1.0


# Observing one run (pure)


@dataclass(frozen=True)
class TimedEvent:
    """A notification and when it arrived, in seconds after the run was requested."""

    at: float
    event: Event


@dataclass(frozen=True)
class Observation:
    """Everything one run produced: the events in order, its duration, a local error.

    ``error`` is set when the client itself failed (could not connect, the server
    refused the execute, no ``process.completed`` in time).
    """

    events: tuple[TimedEvent, ...]
    duration: float
    error: str | None = None

    @property
    def completed(self) -> Completed | None:
        """The ``process.completed`` notification, if it came."""
        return next((t.event for t in self.events if isinstance(t.event, Completed)), None)

    @property
    def started(self) -> bool:
        """Whether the process started (``process.started`` came)."""
        return any(t.event.method == methods.PROCESS_STARTED for t in self.events)

    @property
    def during_run(self) -> list[TimedEvent]:
        """The events from ``process.started`` on."""
        start = next(
            (i for i, t in enumerate(self.events) if t.event.method == methods.PROCESS_STARTED),
            len(self.events),
        )
        return list(self.events[start:])

    @property
    def heartbeats(self) -> int:
        """Heartbeats received while the process ran."""
        return sum(t.event.method == methods.HEARTBEAT for t in self.during_run)

    @property
    def statuses(self) -> int:
        """``process.status`` messages (the process was silent a while)."""
        return sum(t.event.method == methods.PROCESS_STATUS for t in self.events)

    @property
    def outputs(self) -> list[TimedEvent]:
        """The stdout notifications."""
        return [
            t for t in self.events if isinstance(t.event, Output) and t.event.stream == "stdout"
        ]

    @property
    def text_outputs(self) -> list[TimedEvent]:
        """The stdout notifications that carried a piece of the answer's text."""
        return [t for t in self.outputs if '"text_delta"' in _data(t.event)]

    @property
    def stdout(self) -> str:
        """The whole stdout."""
        return "".join(_data(t.event) for t in self.outputs)

    @property
    def stderr(self) -> str:
        """The whole stderr."""
        return "".join(
            _data(t.event)
            for t in self.events
            if isinstance(t.event, Output) and t.event.stream == "stderr"
        )

    @functools.cached_property
    def claude(self) -> ClaudeRun:
        """The stream-json output parsed."""
        run = ClaudeRun()
        run.feed(self.stdout)
        run.feed_eof()
        return run

    @property
    def words(self) -> int:
        """Words in Claude's answer."""
        return len(self.claude.answer.split())

    @property
    def failure(self) -> str | None:
        """Why the run did not complete with exit 0, or None if it did."""
        if self.error:
            return self.error
        done = self.completed
        if done is None:
            errors = [t.event for t in self.events if isinstance(t.event, ProcessError)]
            reason = errors[0].params.get("error") if errors else "connection closed"
            return f"no process.completed ({reason})"
        if done.status != "completed" or done.exit_code != 0:
            detail = f": {done.params['error']}" if done.params.get("error") else ""
            return f"process {done.status} with exit code {done.exit_code}{detail}"
        return None


def _data(event: Event) -> str:
    return event.data if isinstance(event, Output) else ""


# Cases and their checks (pure)


@dataclass(frozen=True)
class Check:
    """One success criterion and whether it held; ``label`` says what was seen."""

    label: str
    ok: bool


CheckFn = Callable[[Observation, bool], list[Check]]


@dataclass(frozen=True)
class Case:
    """One self-test: a prompt, its checks and the session timing it runs with.

    ``live_prompt`` replaces ``prompt`` against the real API when the demo's
    wording would not get a checkable answer from a real model.
    """

    slug: str
    name: str
    prompt: str
    check: CheckFn
    live_prompt: str | None = None
    heartbeat_interval: float = 1.0
    inactivity_threshold: float = 10.0

    def prompt_for(self, demo: bool) -> str:
        """The prompt to send, against the demo or the real API."""
        return self.prompt if demo or self.live_prompt is None else self.live_prompt


@dataclass(frozen=True)
class Outcome:
    """A case's result: the observation and every check."""

    case: Case
    observation: Observation
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Whether every check held."""
        return all(check.ok for check in self.checks)


def evaluate(case: Case, observation: Observation, demo: bool) -> Outcome:
    """Run the common checks and the case's own; a run that never started (it could not
    connect, the server refused it) has only its failure: checks of its output would read
    as if there had been some ("ok no error")."""
    if observation.error is not None and not observation.started:
        return Outcome(case, observation, (Check(observation.error, False),))
    checks = [*_common_checks(observation), *case.check(observation, demo)]
    return Outcome(case, observation, tuple(checks))


def _common_checks(obs: Observation) -> list[Check]:
    failure = obs.failure
    run = obs.claude
    error = run.error_message or f"API status {run.api_error_status}"
    return [
        Check(failure or "process completed with exit code 0", failure is None),
        Check(
            "a result event arrived" if run.result is not None else "no result event in stdout",
            run.result is not None,
        ),
        Check(
            f"Claude reported an error: {error}" if run.is_error else "no error", not run.is_error
        ),
    ]


ECHO_TOKEN = "CC-EXECUTOR-SELFTEST-ECHO"
MATH_EXPRESSION, MATH_ANSWER = "17*23+4", "395"
HAIKU_COUNT = 3
STORY_WORDS = 5000
THINK_SECONDS = 6


def _check_echo(obs: Observation, demo: bool) -> list[Check]:
    answer = obs.claude.answer.strip()
    return [_equals("answer", answer, ECHO_TOKEN)]


def _check_math(obs: Observation, demo: bool) -> list[Check]:
    answer = obs.claude.answer.strip().rstrip(".").replace(",", "")
    return [_equals("answer", answer, MATH_ANSWER)]


def _check_haikus(obs: Observation, demo: bool) -> list[Check]:
    return [_equals("haiku count", count_haikus(obs.claude.answer), HAIKU_COUNT)]


def _check_thinking(obs: Observation, demo: bool) -> list[Check]:
    checks = [
        Check(f"{obs.heartbeats} heartbeats during the run (need >= 1)", obs.heartbeats >= 1),
        Check(f"answer: {_short(obs.claude.answer)!r}", bool(obs.claude.answer.strip())),
    ]
    # Only the demo guarantees a silence; a real model may stream its thinking.
    need = 1 if demo else 0
    checks.append(
        Check(f"{obs.statuses} process.status messages (need >= {need})", obs.statuses >= need)
    )
    return checks


def _check_story(obs: Observation, demo: bool) -> list[Check]:
    words = obs.words
    if demo:
        count = _equals("story words", words, STORY_WORDS)
    else:
        # A real model cannot hit an exact count; within a fifth of it is a story.
        count = Check(
            f"story words: {words} (want about {STORY_WORDS})",
            abs(words - STORY_WORDS) <= STORY_WORDS // 5,
        )
    return [count, _streamed_check(obs)]


def _streamed_check(obs: Observation) -> Check:
    pieces = obs.text_outputs
    spread = pieces[-1].at - pieces[0].at if pieces else 0.0
    ok = len(pieces) >= MIN_TEXT_MESSAGES and spread >= MIN_TEXT_SPREAD
    label = (
        f"streamed: text in {len(pieces)} output messages over {spread:.1f} s "
        f"(need >= {MIN_TEXT_MESSAGES} over >= {MIN_TEXT_SPREAD:.0f} s)"
    )
    return Check(label, ok)


def _equals(what: str, seen: object, expected: object) -> Check:
    if seen == expected:
        return Check(f"{what}: {_short(seen)!r}", True)
    return Check(f"{what}: {_short(seen)!r}, expected {expected!r}", False)


def _short(value: object, limit: int = 60) -> object:
    if not isinstance(value, str) or len(value) <= limit:
        return value
    return value[: limit - 3] + "..."


_HEADING = re.compile(r"^\s*(#|\*\*|haiku\b|\d+[.)]?\s*$)|:\s*$", re.IGNORECASE)


def count_haikus(text: str) -> int:
    """Stanzas (blocks between blank lines) of exactly three lines, titles not counted."""
    stanzas = re.split(r"\n\s*\n", text.strip())
    return sum(len(_verse_lines(stanza)) == 3 for stanza in stanzas)


def _verse_lines(stanza: str) -> list[str]:
    lines = [line for line in stanza.splitlines() if line.strip() and line.strip() != "---"]
    return [line for line in lines if not _HEADING.search(line)]


CASES: tuple[Case, ...] = (
    Case(
        "echo",
        "Simple Echo",
        f"echo: {ECHO_TOKEN}",
        _check_echo,
        live_prompt=f"Reply with exactly this text and nothing else: {ECHO_TOKEN}",
    ),
    Case(
        "math",
        "Math Question",
        f"What is {MATH_EXPRESSION}? Reply with only the number.",
        _check_math,
    ),
    Case(
        "haikus",
        "Haikus",
        f"Write {HAIKU_COUNT} haikus about streaming output. Put a blank line between them.",
        _check_haikus,
    ),
    Case(
        "thinking",
        "Thinking Task",
        f"Think for {THINK_SECONDS} seconds, then answer in one short sentence.",
        _check_thinking,
        heartbeat_interval=1.0,
        inactivity_threshold=2.0,
    ),
    Case(
        "story",
        "Story Generation",
        f"Write a {STORY_WORDS} word story about a notebook kernel that never sleeps.",
        _check_story,
    ),
)


def select_cases(names: Sequence[str], every: bool) -> list[Case]:
    """The cases named (by slug or name, any case and spacing), or all of them.

    Raises ValueError naming an unknown test.
    """
    if every or not names:
        return list(CASES)
    chosen: list[Case] = []
    for name in names:
        case = _find_case(name)
        if case is None:
            known = ", ".join(case.slug for case in CASES)
            raise ValueError(f"unknown test {name!r} (known: {known})")
        if case not in chosen:
            chosen.append(case)
    return chosen


def _find_case(name: str) -> Case | None:
    wanted = _squash(name)
    for case in CASES:
        if wanted in (_squash(case.slug), _squash(case.name)) or wanted.rstrip(
            "s"
        ) == case.slug.rstrip("s"):
            return case
    return None


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


# Tables (pure)


def table(
    headers: Sequence[str] | None, rows: Sequence[Sequence[object]], right: Sequence[bool] = ()
) -> str:
    """An ASCII table; columns flagged in ``right`` are right-aligned."""
    cells = [[str(c) for c in row] for row in ([headers] if headers else []) + list(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(row: list[str]) -> str:
        padded = [
            c.rjust(w) if i < len(right) and right[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    body = [line(row) for row in cells]
    if headers:
        body.insert(1, rule)
    return "\n".join([rule, *body, rule])


def _verdict(outcome: Outcome) -> str:
    return "PASS" if outcome.passed else "FAIL"


def format_case(outcome: Outcome) -> str:
    """One case's table and its checks."""
    obs = outcome.observation
    rows = [
        ("result", _verdict(outcome)),
        ("duration", f"{obs.duration:.2f} s"),
        ("heartbeats", obs.heartbeats),
        ("status messages", obs.statuses),
        ("output words", obs.words),
        ("output messages", len(obs.outputs)),
    ]
    checks = [f"  {'ok  ' if c.ok else 'FAIL'}  {c.label}" for c in outcome.checks]
    return "\n".join([outcome.case.name, table(None, rows), *checks])


def format_summary(outcomes: Sequence[Outcome], elapsed: float) -> str:
    """The summary table and a closing line."""
    headers = ("case", "result", "duration", "heartbeats", "status msgs", "words")
    rows = [
        (
            o.case.name,
            _verdict(o),
            f"{o.observation.duration:.2f} s",
            o.observation.heartbeats,
            o.observation.statuses,
            o.observation.words,
        )
        for o in outcomes
    ]
    passed = sum(o.passed for o in outcomes)
    closing = f"{passed} passed, {len(outcomes) - passed} failed in {elapsed:.1f} s"
    right = (False, False, True, True, True, True)
    return "\n".join(["Summary", table(headers, rows, right), closing])


# Running (asyncio adapter)


async def observe_run(
    url: str,
    token: str | None,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    heartbeat_interval: float | None = None,
    inactivity_threshold: float | None = None,
    timeout: float | None = None,
    wait: float = DEFAULT_TIMEOUT,
    token_hint: str = "",
) -> Observation:
    """Run ``argv`` in a new session of the server at ``url``; return what happened.

    Every notification is time-stamped on arrival. ``timeout`` is the server-side
    limit; ``wait`` the client's: past it the run is cancelled and the observation
    carries an error. Never raises for a failing run or server. ``token_hint`` ends
    the error of a server that refuses the token (where it came from).
    """
    events: list[TimedEvent] = []
    started = time.monotonic()
    try:
        client = await connect(url, token)
    except (OSError, CCExecError, WebSocketException) as exc:  # TimeoutError is an OSError
        return Observation((), time.monotonic() - started, _connect_failure(url, exc, token_hint))
    reader = asyncio.ensure_future(_collect(client, events, started))
    try:
        params = {
            "env": dict(env) if env else None,
            "cwd": cwd,
            "timeout": timeout,
            "heartbeat_interval": heartbeat_interval,
            "inactivity_threshold": inactivity_threshold,
        }
        error = await _execute_and_wait(client, reader, list(argv), params, wait)
    finally:
        reader.cancel()
        with contextlib.suppress(OSError, CCExecError):  # the connection was already broken
            await client.close()
    return Observation(tuple(events), time.monotonic() - started, error)


async def _collect(client: Client, events: list[TimedEvent], started: float) -> None:
    async for event in client.events():
        events.append(TimedEvent(time.monotonic() - started, event))
        if isinstance(event, (Completed, ProcessError)):
            return


async def _execute_and_wait(
    client: Client,
    reader: asyncio.Future[None],
    argv: list[str],
    params: dict[str, Any],
    wait: float,
) -> str | None:
    try:
        await client.execute(argv=argv, **params)
    except CCExecError as exc:
        return f"execute failed: {_describe(exc)}"
    done, _ = await asyncio.wait([reader], timeout=wait)
    if done:
        return None
    with contextlib.suppress(CCExecError):
        await client.cancel()
    await asyncio.wait([reader], timeout=CANCEL_GRACE)
    return f"no process.completed within {wait:.0f} s; the run was cancelled"


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _connect_failure(url: str, exc: BaseException, token_hint: str) -> str:
    """``cannot connect to URL: why``, the URL said once (a refusal's own text names it too)."""
    if isinstance(exc, HandshakeRefused):
        reason = f"the server {exc.refusal}"
    else:
        reason = os_reason(url, exc) if isinstance(exc, OSError) else _describe(exc)
    words = f"cannot connect to {url}: {reason}"
    if token_hint and isinstance(exc, HandshakeRefused) and exc.status == 401:
        words += f": {token_hint}"
    return words


def _token_hint(name: str) -> str:
    """Where the ``--server`` token comes from (``--token-env NAME``), for a server that refused
    it: in the terminal client's words."""
    unset = "" if name in os.environ else ", which is not set"
    return f"give the server's token in the environment variable {name}{unset}, or name another with --token-env"


async def run_case(
    case: Case, url: str, token: str | None, options: ClaudeOptions, *, cwd: str | None, wait: float,
    token_hint: str = "",
) -> Outcome:
    """Run one case against the server and check it (``token_hint``: see :func:`observe_run`)."""
    observation = await observe_run(
        url,
        token,
        claude_argv(case.prompt_for(options.demo), options),
        env=claude_environment(options),
        cwd=cwd,
        heartbeat_interval=case.heartbeat_interval,
        inactivity_threshold=case.inactivity_threshold,
        timeout=wait,
        wait=wait + CANCEL_GRACE,
        token_hint=token_hint,
    )
    return evaluate(case, observation, options.demo)


@contextlib.asynccontextmanager
async def _server(url: str | None, token_env: str) -> AsyncIterator[tuple[str, str | None]]:
    """The given server and its token, or a fresh in-process one."""
    if url:
        yield url, os.environ.get(token_env) or None
        return
    from ..server.config import ServerSettings, build_server

    handler = build_server(ServerSettings(heartbeat_interval=1.0))
    await handler.start("127.0.0.1", 0)
    try:
        yield handler.url, handler.token
    finally:
        await handler.close()


async def run_cases(
    cases: Sequence[Case], options: ClaudeOptions, args: argparse.Namespace
) -> list[Outcome]:
    """Run the cases one after another, printing each table as it ends."""
    outcomes: list[Outcome] = []
    hint = _token_hint(args.token_env) if args.server else ""  # an in-process server: its own token
    async with _server(args.server, args.token_env) as (url, token):
        print(_banner(cases, options, url), flush=True)
        with _workdir(args) as cwd:
            for case in cases:
                print(f"\nrunning {case.name} ...", flush=True)
                outcome = await run_case(case, url, token, options, cwd=cwd, wait=args.timeout, token_hint=hint)
                print(format_case(outcome), flush=True)
                outcomes.append(outcome)
    return outcomes


@contextlib.contextmanager
def _workdir(args: argparse.Namespace) -> Iterator[str | None]:
    """``--cwd``; else a fresh temporary directory (the server's own cwd with --server)."""
    if args.cwd or args.server:
        yield args.cwd
        return
    with tempfile.TemporaryDirectory(prefix="cc-selftest-") as path:
        yield path


def _banner(cases: Sequence[Case], options: ClaudeOptions, url: str) -> str:
    api = (
        f"the demo API at {demo_backend().url} (offline)"
        if options.demo
        else "the real Anthropic API"
    )
    argv0 = claude_argv("", options)[0]
    return f"cc_executor_nb self-test: {len(cases)} case(s), {argv0} against {api}, server {url}"


# Command line


def build_parser(prog: str = "python -m cc_executor_nb.demo.selftest") -> argparse.ArgumentParser:
    """The command-line interface, its usage naming ``prog`` (the command that was typed)."""
    parser = OneLineParser(
        prog=prog,
        description=(
            "Run the claude CLI end to end through the executor's WebSocket server and "
            "client, check each case and print a table per case and a summary."
        ),
        epilog=(
            "Without --demo the CLI talks to the real Anthropic API and needs credentials "
            f"({' or '.join(CREDENTIAL_VARIABLES)}); without either the test exits with "
            "status 2. --demo needs no network: the mock API runs in this process on "
            "127.0.0.1. Exit status: 0 all passed, 1 a case failed, 2 could not run."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="run every case (the default)")
    which.add_argument(
        "--test", action="append", default=[], metavar="NAME",
        help="run one case (repeatable): " + ", ".join(f"{c.slug} ({c.name})" for c in CASES),
    )  # fmt: skip
    which.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--demo", action="store_true", help="use the built-in offline mock of the API"
    )
    parser.add_argument(
        "--server", metavar="URL",
        help="ws://HOST:PORT/ws of a running server (default: start one in this process)",
    )  # fmt: skip
    parser.add_argument(
        "--token-env", metavar="NAME", default=DEFAULT_TOKEN_ENV,
        help=f"variable holding the --server token (default: {DEFAULT_TOKEN_ENV})",
    )  # fmt: skip
    parser.add_argument("--claude", metavar="PATH", help="the claude executable (default: found)")
    parser.add_argument("--model", help="--model for the CLI (default: the CLI's)")
    parser.add_argument(
        "--cwd", metavar="DIR",
        help="working directory of the runs (default: a fresh temporary directory)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
        help=f"limit per case (default: {DEFAULT_TIMEOUT:.0f})",
    )  # fmt: skip
    return parser


def has_credentials(environ: Mapping[str, str]) -> bool:
    """Whether the environment holds credentials for the real API."""
    return any(environ.get(name) for name in CREDENTIAL_VARIABLES)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m cc_executor_nb.demo.selftest") -> int:
    """Run the self-test; return the exit status. ``prog`` is the command that ran it, for --help."""
    args = build_parser(prog).parse_args(argv)
    _tolerate_narrow_terminals()
    if args.list:
        print("\n".join(f"{c.slug:10} {c.name}" for c in CASES))
        return 0
    try:
        cases = select_cases(args.test, args.all)
        options = _options(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"selftest: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        outcomes = asyncio.run(run_cases(cases, options, args))
    finally:
        stop_demo()
    print("\n" + format_summary(outcomes, time.monotonic() - started), flush=True)
    return 0 if all(o.passed for o in outcomes) else 1


def _tolerate_narrow_terminals() -> None:
    """Model text may hold any character; an ASCII terminal must not crash the report."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            reconfigure(errors="backslashreplace")


def _options(args: argparse.Namespace) -> ClaudeOptions:
    """Claude options from the arguments; raises when the test cannot run."""
    if not args.demo and not has_credentials(os.environ):
        raise ValueError(
            "no credentials for the real Anthropic API (set ANTHROPIC_API_KEY), "
            "and --demo was not given. Run with --demo to test offline against the mock API."
        )
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    if args.server and args.token_env != DEFAULT_TOKEN_ENV and args.token_env not in os.environ:
        # As the terminal client: an unset variable would connect without a token.
        raise ValueError(f"--token-env {args.token_env}: the environment variable {args.token_env} is not set")
    # A server elsewhere has its own file system: it finds the executable on its own PATH.
    options = ClaudeOptions(executable=args.claude, model=args.model, demo=args.demo, remote=bool(args.server))
    claude_argv("", options)  # FileNotFoundError with install advice when there is no CLI here
    return options


if __name__ == "__main__":
    sys.exit(main())
