"""The real ``claude`` CLI against the demo backend: what our stack adds to its first event.

Both paths run the CLI under ``producer.py tap``, which passes the CLI's stdout through
unchanged and stamps (CLOCK_MONOTONIC) its own start and the moment it read the first
``stream_event`` line straight from the CLI's pipe. That splits each run into

  spawn    request (execute, or our own spawn) -> the tap is running
  CLI      the tap is running -> the CLI wrote its first stream_event   (not ours)
  deliver  the tap read the line -> the reader (client, or our pipe) has it

and the overhead is (spawn + deliver through server and client) minus (spawn + deliver
of a plain asyncio pipe read) for each pair of runs (one each way, back to back); the
figure is the median over the pairs. The CLI's own start-up (hundreds
of ms, noisy) drops out. The raw end-to-end medians are printed as the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cc_executor_nb.claude.executable import find_claude
from cc_executor_nb.client import connect
from cc_executor_nb.demo import demo_environment
from cc_executor_nb.demo.record import claude_argv
from cc_executor_nb.events import Completed, Event, Output

from .harness import Mode, Row, median, producer, run_server
from .pipe_reference import read_pipe

__all__ = ["overhead"]

PROMPT = "echo: hi"
RUN_TIMEOUT = 120.0
SETTLE = 0.3
_TAP = re.compile(rb"TAP start=(\d+) first=(\d+)")
_EVENT = '"type":"stream_event"'


def _argv(claude: str) -> list[str]:
    """One ``claude -p`` run printing stream-json, under the tap."""
    return producer("tap", *claude_argv(claude, PROMPT))


@contextlib.contextmanager
def _backend() -> Iterator[str]:
    """The demo Messages API in its own process (so it never holds our GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cc_executor_nb.demo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().decode() if ready else ""
        match = re.search(r"listening on (\S+)", line)
        if not match:
            raise RuntimeError(f"demo backend did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _tap_stamps(stderr: bytes) -> tuple[int, int]:
    match = _TAP.search(stderr)
    if not match or not int(match.group(2)):
        raise RuntimeError(f"the CLI printed no stream_event: {stderr[-500:]!r}")
    return int(match.group(1)), int(match.group(2))


async def _direct(argv: list[str], env: dict[str, str], cwd: str) -> dict[str, float]:
    """One run read from the pipe here: stamps in ns."""
    seen: list[int] = []
    pending = bytearray()

    def on_data(data: bytes, now_ns: int) -> None:
        if not seen:
            pending.extend(data)
            if _EVENT.encode() in pending:
                seen.append(now_ns)

    with tempfile.TemporaryFile() as err:
        started = time.monotonic_ns()
        await asyncio.wait_for(
            read_pipe(argv, on_data, env={**os.environ, **env}, cwd=cwd, stderr=err), RUN_TIMEOUT
        )
        err.seek(0)
        tap_start, tap_first = _tap_stamps(err.read())
    if not seen:
        raise RuntimeError("no stream_event reached the pipe reader")
    return {"spawn": tap_start - started, "deliver": seen[0] - tap_first, "total": seen[0] - started}


async def _through_stack(url: str, token: str, argv: list[str], env: dict[str, str], cwd: str) -> dict[str, float]:
    """One run through server and client: stamps in ns."""
    seen: list[int] = []
    stderr: list[str] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Output):
            if event.stream == "stderr":
                stderr.append(event.data)
            elif not seen and _EVENT in event.data:
                seen.append(time.monotonic_ns())

    async with await connect(url, token) as client:
        client.add_listener(on_event)
        started = time.monotonic_ns()
        await client.execute(argv=argv, env=env, cwd=cwd)
        async for event in client.events():
            if isinstance(event, Completed):
                break
    tap_start, tap_first = _tap_stamps("".join(stderr).encode())
    if not seen:
        raise RuntimeError("no stream_event reached the client")
    return {"spawn": tap_start - started, "deliver": seen[0] - tap_first, "total": seen[0] - started}


def _med(runs: list[dict[str, float]], key: str) -> float:
    return median([r[key] for r in runs]) / 1e6


async def overhead(mode: Mode) -> list[Row]:
    """First stream_event through server and client vs reading the CLI's pipe directly."""
    try:
        # As a real run finds it: the project's node_modules first, then PATH.
        argv = _argv(find_claude())
    except FileNotFoundError:
        return [Row("claude overhead", None, "ms added", "<= 5", note="n/a (claude CLI not found: npm ci)")]
    direct: list[dict[str, float]] = []
    stack: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="ccexec-bench-claude-") as tmp, _backend() as base_url:
        env = demo_environment(base_url, str(Path(tmp, "config")), max_retries=0)
        work = Path(tmp, "work")
        work.mkdir()
        with run_server() as server:
            await _direct(argv, env, str(work))  # warm the CLI's caches; not counted
            for _ in range(mode.claude_runs):
                # A pause before each run, so the last one's teardown (the CLI exiting,
                # the server's end-of-run scan and history write) overlaps neither start.
                await asyncio.sleep(SETTLE)
                direct.append(await _direct(argv, env, str(work)))
                await asyncio.sleep(SETTLE)
                stack.append(await asyncio.wait_for(_through_stack(server.url, server.token, argv, env, str(work)),
                                                    RUN_TIMEOUT))
    # Each stack run follows a direct run; the median of the pairs' differences is less
    # swayed by drifting load than a difference of medians (printed too).
    paired = median([
        (s["spawn"] + s["deliver"]) - (d["spawn"] + d["deliver"]) for s, d in zip(stack, direct, strict=True)
    ]) / 1e6
    of_medians = (_med(stack, "spawn") - _med(direct, "spawn")) + (_med(stack, "deliver") - _med(direct, "deliver"))
    ref = (f"difference of medians {of_medians:.2f} ms: spawn {_med(stack, 'spawn'):.1f} vs "
           f"{_med(direct, 'spawn'):.1f} ms, deliver {_med(stack, 'deliver'):.2f} vs "
           f"{_med(direct, 'deliver'):.2f} ms; end to end {_med(stack, 'total'):.0f} vs "
           f"{_med(direct, 'total'):.0f} ms (stack vs pipe, {len(stack)} pairs)")
    return [Row("claude overhead", paired, "ms added", "<= 5", ref)]
