"""Side by side with the peer: the same pinned CLI and demo backend through ``claude-agent-sdk`` and through us.

Three contestants, interleaved try by try so that drifting load falls on all of them (each
try starts with the next contestant in turn, and each contestant's try includes its own
teardown, so no one's exit overlaps another's start):

  ours     ``cc_executor_nb.run(prompt, executable=CLI, env=<demo>, display=False)``: the
           in-kernel server on the background loop (as in a notebook), host mode
  client   ``claude_agent_sdk.ClaudeSDKClient(options)`` with ``cli_path=CLI``
  query    ``claude_agent_sdk.query(prompt=..., options=...)`` with ``cli_path=CLI``
  bare     ``ClaudeSDKClient`` with the SDK's default system prompt (first text only; see below)

The CLI does the same work for every contestant that the rows compare: Claude Code's own
system prompt, which is what ours runs with. The SDK's default is an empty system prompt
(``--system-prompt ""``: the CLI skips building Claude Code's, a few ms of its start-up),
so the SDK's contestants ask for Claude Code's with ``system_prompt={"type": "preset",
"preset": "claude_code"}``, which starts the CLI with the same arguments as ours. The SDK's
default is measured too, as ``bare``, and printed beside the first-text row: how much of a
start-up the system prompt is, not a difference of the stacks.

Each side answers the CLI's permission questions by a policy that allows everything: ours
``approve="all"``, the SDK's ``can_use_tool`` returning ``PermissionResultAllow()``. Both
then start the CLI with ``--permission-prompt-tool stdio``, which costs the CLI's start a
few ms (without it the SDK's CLI could not ask at all, and its first text came 2-4 ms
sooner than with it in paired tries).

Rows (each try is a fresh CLI process; the backend is one ``cc_executor_nb.demo`` process):

  first text      from the call to the first text the caller can read (ours: ``run.text``
                  polled every millisecond; the SDK: the first ``text_delta`` StreamEvent);
                  30 tries in full mode, the others 10. The CLI's start-up drifts by tens
                  of ms, so the row also gives the median of the differences try by try
  2 MB reply      ``big reply``: one 2,000,000-byte text delta; complete = the exact text
  paused reader   a 20,000-word story at 40,000 words/s; 20 ms after the first text the
                  reader's event loop is blocked for 2 s (ours: the background loop, where
                  the server and client read; the SDK: its own loop, from the consumer);
                  complete = every word and a result
  cancel          a 5,000-word story at 200 words/s; after the first text, cancel (ours:
                  ``run.cancel()``; client: ``disconnect()``; query: closing the iterator);
                  from the call until no CLI process of the try is left
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil

from cc_executor_nb.claude.executable import find_claude
from cc_executor_nb.demo import demo_environment
from cc_executor_nb.kernel.config import CCExec
from cc_executor_nb.kernel.loop import shared_loop

from .claude_bench import _backend
from .harness import Mode, Row, median

__all__ = ["peers"]

TIMEOUT = 120.0
BIG_BYTES = 2_000_000
BIG_TEXT = "".join(f"{offset:09d}|" for offset in range(0, BIG_BYTES, 10))
STORY_WORDS = 20_000
PAUSED_PROMPT = f"a {STORY_WORDS} word story at 40000 words per second"
CANCEL_PROMPT = "a 5000 word story at 200 words per second"
FIRST_PROMPT = "echo: hello from the side-by-side"
PAUSE = 2.0
CONTESTANTS = ("ours", "client", "query")
FIRST_ONLY = ("bare",)
"""Contestants of the first-text row only."""
CLAUDE_CODE_PROMPT: Any = {"type": "preset", "preset": "claude_code"}
"""The SDK's way to ask for Claude Code's system prompt: the CLI's own default, as ours."""
ROWS = [
    ("peer first text", "ms", "<= SDK"),
    ("peer 2 MB reply complete", "of tries", ">= SDK"),
    ("peer paused reader complete", "of tries", ">= SDK"),
    ("peer cancel to process gone", "ms", "<= SDK"),
]


def _missing() -> str | None:
    try:
        import claude_agent_sdk  # noqa: F401
    except ImportError:
        return "n/a (claude-agent-sdk missing: pip install -e '.[bench]')"
    try:
        find_claude()
    except FileNotFoundError:
        return "n/a (claude CLI not found: npm ci)"
    return None


@dataclass(frozen=True)
class Setup:
    """The same CLI, environment (the demo backend) and working directory for everyone."""

    cli: str
    env: dict[str, str]
    cwd: str


@dataclass
class Attempt:
    """What one try of one scenario measured."""

    first: float | None = None
    """Seconds from the call to the first text."""
    text: str = ""
    result: bool = False
    error: str = ""
    gone: float | None = None
    """Seconds from the cancel call until no CLI process of the try was left."""


@dataclass
class Tally:
    """Every attempt of one contestant, by scenario."""

    attempts: dict[str, list[Attempt]] = field(default_factory=dict)

    def add(self, scenario: str, attempt: Attempt) -> None:
        self.attempts.setdefault(scenario, []).append(attempt)


def _cli_pids() -> set[int]:
    """Our descendants running the claude CLI."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any("claude" in part for part in child.cmdline()[:2]):
                found.add(child.pid)
    return found


def _gone(pids: set[int]) -> bool:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
    return True


class _GoneWatch(threading.Thread):
    """From ``start()``: polls every millisecond until ``pids`` are gone; ``seconds`` then."""

    def __init__(self, pids: set[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.seconds: float | None = None
        self.started_at = 0.0

    def begin(self) -> None:
        self.started_at = time.monotonic()
        self.start()

    def run(self) -> None:
        deadline = self.started_at + TIMEOUT
        while time.monotonic() < deadline:
            if _gone(self.pids):
                self.seconds = time.monotonic() - self.started_at
                return
            time.sleep(0.001)


# -- Ours ------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:100]}"


def _settings() -> CCExec:
    config = CCExec()
    config.history_path = "none"
    return config


def _ours(setup: Setup, prompt: str, scenario: str) -> Attempt:
    """One try through cc_executor_nb (blocking; run in a worker thread)."""
    import cc_executor_nb as ccx

    attempt = Attempt()
    started = time.monotonic()
    run = ccx.run(prompt, executable=setup.cli, env=setup.env, cwd=setup.cwd, display=False, settings=_settings(),
                  approve="all", idle_timeout=30)
    try:
        deadline = started + TIMEOUT
        while not run.text and not run.done and time.monotonic() < deadline:
            time.sleep(0.001)
        if run.text:
            attempt.first = time.monotonic() - started
        if scenario == "paused":
            time.sleep(0.02)
            kernel_loop = shared_loop()
            kernel_loop.loop.call_soon_threadsafe(time.sleep, PAUSE)  # the reading loop is held
        if scenario == "cancel":
            watch = _GoneWatch(_cli_pids())
            watch.begin()
            run.cancel()
            watch.join(TIMEOUT)
            attempt.gone = watch.seconds
            return attempt
        run.wait(TIMEOUT)
        attempt.text = run.answer or ""
        attempt.result = run.result is not None
        attempt.error = run.error or ""
    finally:
        if not run.done:
            with contextlib.suppress(Exception):
                run.end()
                run.cancel()
        with contextlib.suppress(Exception):
            run.end()
            run.wait(TIMEOUT)  # our teardown belongs to our try, as disconnect() to the SDK's
    return attempt


# -- The SDK ---------------------------------------------------------------------------


def _options(setup: Setup, *, bare: bool = False) -> Any:
    """The SDK's options: Claude Code's system prompt, as ours, unless ``bare`` (the SDK's default)."""
    from claude_agent_sdk import ClaudeAgentOptions

    system_prompt = None if bare else CLAUDE_CODE_PROMPT
    return ClaudeAgentOptions(cli_path=setup.cli, env=setup.env, cwd=setup.cwd, include_partial_messages=True,
                              can_use_tool=_allow_all, system_prompt=system_prompt)


async def _allow_all(tool_name: str, tool_input: dict[str, Any], context: Any) -> Any:
    """The SDK's side of ``approve="all"``."""
    from claude_agent_sdk import PermissionResultAllow

    return PermissionResultAllow()


def _take(message: Any, attempt: Attempt, started: float) -> None:
    from claude_agent_sdk.types import AssistantMessage, ResultMessage, StreamEvent, TextBlock

    if isinstance(message, StreamEvent):
        event = message.event
        delta = event.get("delta") if isinstance(event, dict) else None
        if attempt.first is None and isinstance(delta, dict) and delta.get("type") == "text_delta":
            attempt.first = time.monotonic() - started
    elif isinstance(message, AssistantMessage):
        attempt.text += "".join(block.text for block in message.content if isinstance(block, TextBlock))
    elif isinstance(message, ResultMessage):
        attempt.result = True


async def _consume(messages: AsyncIterator[Any], attempt: Attempt, started: float, scenario: str,
                   cancel: Callable[[], Any]) -> None:
    paused = False
    async for message in messages:
        _take(message, attempt, started)
        if attempt.first is None:
            continue
        if scenario == "paused" and not paused:
            paused = True
            await asyncio.sleep(0.02)
            time.sleep(PAUSE)  # the reader's loop is held, as ours is
        elif scenario == "cancel":
            watch = _GoneWatch(_cli_pids())
            watch.begin()
            await cancel()
            await asyncio.to_thread(watch.join, TIMEOUT)
            attempt.gone = watch.seconds
            return


async def _sdk_client(setup: Setup, prompt: str, scenario: str, *, bare: bool = False) -> Attempt:
    from claude_agent_sdk import ClaudeSDKClient

    attempt = Attempt()
    started = time.monotonic()
    client = ClaudeSDKClient(_options(setup, bare=bare))
    try:
        await client.connect()
        await client.query(prompt)
        await asyncio.wait_for(
            _consume(client.receive_response(), attempt, started, scenario, client.disconnect), TIMEOUT)
    except Exception as exc:  # the peer's failures are what this row counts
        attempt.error = _reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    return attempt


async def _sdk_query(setup: Setup, prompt: str, scenario: str) -> Attempt:
    from claude_agent_sdk import query

    attempt = Attempt()
    started = time.monotonic()
    # query() is an async generator: closing it is how a caller cancels.
    messages = cast(AsyncGenerator[Any, None], query(prompt=prompt, options=_options(setup)))
    try:
        await asyncio.wait_for(_consume(messages, attempt, started, scenario, messages.aclose), TIMEOUT)
    except Exception as exc:
        attempt.error = _reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await messages.aclose()
    return attempt


# -- The benchmark ---------------------------------------------------------------------


def _complete(scenario: str, attempt: Attempt) -> bool:
    if scenario == "big":
        return attempt.result and attempt.text == BIG_TEXT
    return attempt.result and len(attempt.text.split()) == STORY_WORDS


async def _one(name: str, setup: Setup, prompt: str, scenario: str) -> Attempt:
    if name == "ours":
        return await asyncio.to_thread(_ours, setup, prompt, scenario)
    if name in ("client", "bare"):
        return await _sdk_client(setup, prompt, scenario, bare=name == "bare")
    return await _sdk_query(setup, prompt, scenario)


async def _settle() -> None:
    """Until the last try's CLI processes are gone (a cancel leaves none behind)."""
    deadline = time.monotonic() + 10
    while _cli_pids() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _measure(setup: Setup, tries: int, first_tries: int) -> dict[str, Tally]:
    """``tries`` of every scenario; first text (cheap, and noisy: the CLI's start-up
    varies by tens of ms) ``first_tries`` times."""
    everyone = CONTESTANTS + FIRST_ONLY
    tallies = {name: Tally() for name in everyone}
    plan = [("first", FIRST_PROMPT), ("big", "big reply"), ("paused", PAUSED_PROMPT), ("cancel", CANCEL_PROMPT)]
    for name in everyone:  # warm: the CLI's caches, our background loop and server
        await _one(name, setup, FIRST_PROMPT, "first")
        await _settle()
    for index in range(max(tries, first_tries)):
        for scenario, prompt in plan if index < tries else plan[:1]:
            # Each try starts with another contestant, so what one leaves behind (a process
            # still exiting, a cache just warmed) does not always fall on the same neighbour.
            names = everyone if scenario == "first" else CONTESTANTS
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                tallies[name].add(scenario, await _one(name, setup, prompt, scenario))
                await _settle()
    return tallies


def _ms(attempts: list[Attempt], key: str) -> float | None:
    values = [getattr(a, key) for a in attempts if getattr(a, key) is not None]
    return median(values) * 1e3 if values else None


def _paired(ours: list[Attempt], theirs: list[Attempt]) -> float | None:
    """Median of ours minus theirs over the tries both finished, try by try (ms): the two
    of a try ran back to back, so drifting load cancels out of each difference."""
    pairs = [(o.first - t.first) * 1e3 for o, t in zip(ours, theirs, strict=True)
             if o.first is not None and t.first is not None]
    return median(pairs) if pairs else None


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} ms"


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _why(attempts: list[Attempt]) -> str:
    errors = sorted({a.error for a in attempts if a.error})
    return f" ({errors[0]})" if errors else ""


async def peers(mode: Mode) -> list[Row]:
    """Ours against claude-agent-sdk (ClaudeSDKClient and query), same CLI and backend, one run."""
    missing = _missing()
    if missing:
        return [Row(name, None, unit, target, note=missing) for name, unit, target in ROWS]
    with tempfile.TemporaryDirectory(prefix="ccexec-bench-peer-") as tmp, _backend() as url:
        work = Path(tmp, "work")
        work.mkdir()
        setup = Setup(find_claude(), demo_environment(url, str(Path(tmp, "config")), max_retries=0), str(work))
        tallies = await _measure(setup, mode.peer_tries, mode.peer_first_tries)
    # The SDK leaves its CLIs' subprocess transports to the garbage collector: collected after
    # the loop closed, each printed "Exception ignored ... RuntimeError: Event loop is closed".
    gc.collect()
    await asyncio.sleep(0.1)  # their pipes' connection_lost callbacks run on the loop
    ours, client, query = (tallies[name].attempts for name in CONTESTANTS)
    rows = []
    first = {name: _ms(t.attempts["first"], "first") for name, t in tallies.items()}
    paired = {name: _paired(ours["first"], tallies[name].attempts["first"]) for name in ("client", "query", "bare")}
    rows.append(Row("peer first text", first["ours"], "ms", "<= SDK",
                    f"ClaudeSDKClient {_text(first['client'])}, query {_text(first['query'])}; "
                    f"medians of {mode.peer_first_tries}; paired, ours minus each: "
                    f"{_signed(paired['client'])} / {_signed(paired['query'])}; the SDK's default (no "
                    f"Claude Code system prompt) {_text(first['bare'])}, paired {_signed(paired['bare'])}"))
    for scenario, label in (("big", "peer 2 MB reply complete"), ("paused", "peer paused reader complete")):
        done = {name: sum(_complete(scenario, a) for a in tallies[name].attempts[scenario]) for name in CONTESTANTS}
        rows.append(Row(label, float(done["ours"]), "of tries", ">= SDK",
                        f"of {mode.peer_tries}: ours {done['ours']}{_why(ours[scenario])}, ClaudeSDKClient "
                        f"{done['client']}{_why(client[scenario])}, query {done['query']}{_why(query[scenario])}"))
    gone = {name: _ms(tallies[name].attempts["cancel"], "gone") for name in CONTESTANTS}
    rows.append(Row("peer cancel to process gone", gone["ours"], "ms", "<= SDK",
                    f"ClaudeSDKClient {_text(gone['client'])}, query {_text(gone['query'])}; "
                    f"medians of {mode.peer_tries}"))
    return rows
