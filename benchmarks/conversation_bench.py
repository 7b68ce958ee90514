"""A Claude conversation through the notebook API: permission answers and interrupts.

Both run ``cc_executor_nb.run(prompt, executable=..., display=False)`` as a notebook does
(the in-kernel server on the background loop, host mode), against a reference that
writes to the CLI's stdin straight from a plain asyncio pipe in this process:

  approval round trip   ``fake_host.py`` (a stand-in CLI in host mode) asks N permission
                        questions one after another and stamps, with CLOCK_MONOTONIC,
                        each request just before writing it and each answer just after
                        reading it. Ours: a policy callable (``on_permission``) answers
                        "allow". The reference answers each request the moment its line is
                        read. Figure: ours minus the reference, at the median and the p99
                        of the round trips (the same number of questions each way,
                        interleaved run by run).
  interrupt             the real CLI against the demo backend, a story at 200 words/s;
                        after the first text, ``run.interrupt()`` until ``run.wait()``
                        returns with the turn's ``result``; the reference writes the
                        ``interrupt`` control request and reads until the ``result`` line.
                        Figure: the median of (ours minus the reference) over pairs of
                        runs, one each way, back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cc_executor_nb as ccx
from cc_executor_nb.claude import control
from cc_executor_nb.claude.executable import find_claude
from cc_executor_nb.demo import demo_environment
from cc_executor_nb.kernel.config import CCExec

from .claude_bench import _backend
from .harness import BENCH_DIR, Mode, Row, median, percentile

__all__ = ["APPROVAL_ROWS", "INTERRUPT_ROWS", "approval", "interrupt"]

TIMEOUT = 120.0
INTERRUPT_PROMPT = "a 5000 word story at 200 words per second"
APPROVAL_ROWS = [("approval round trip added p50", "ms", "<= 5"),
                 ("approval round trip added p99", "ms", "<= 5")]
INTERRUPT_ROWS = [("interrupt added", "ms", "<= 50")]


def _settings() -> CCExec:
    config = CCExec()
    config.history_path = "none"
    return config


def _fake_host(directory: str) -> str:
    """An executable that runs ``fake_host.py`` with this interpreter (``executable=`` takes one path)."""
    path = Path(directory, "fake-claude")
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{BENCH_DIR / "fake_host.py"}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _round_trips(stamps_file: Path, questions: int) -> list[float]:
    pairs = json.loads(stamps_file.read_text())
    if len(pairs) != questions:
        raise RuntimeError(f"the fake CLI stamped {len(pairs)} of {questions} questions")
    return [(answered - asked) / 1e6 for asked, answered in pairs]


# -- Approval round trip -------------------------------------------------------------


def _approval_ours(cli: str, env: dict[str, str], cwd: str) -> None:
    """One conversation whose questions a policy callable answers (blocking; in a worker thread)."""
    run = ccx.run("go", executable=cli, env=env, cwd=cwd, display=False, settings=_settings(),
                  on_permission=lambda request: "allow", idle_timeout=60)
    try:
        run.wait(TIMEOUT)
        if run.result is None:
            raise RuntimeError(f"the fake CLI's turn ended without a result: {run.status} {run.error}")
    finally:
        with contextlib.suppress(Exception):
            run.end()
        run.wait(TIMEOUT)  # the process exits once its stdin closes: the stamps are written


async def _read_json_lines(stream: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    while line := await stream.readline():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            yield message


async def _approval_direct(cli: str, env: dict[str, str], cwd: str) -> None:
    """The same conversation answered straight from the pipe, each request the moment it is read."""
    proc = await asyncio.create_subprocess_exec(
        cli, *control.HOST_ARGS, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **env}, cwd=cwd, limit=1 << 20,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((control.line(control.initialize("init-1")) + control.line(control.user_message("go"))).encode())
    async for message in _read_json_lines(proc.stdout):
        request = message.get("request") or {}
        if message.get("type") == "control_request" and request.get("subtype") == "can_use_tool":
            proc.stdin.write(control.line(control.allow(message["request_id"], request.get("input") or {})).encode())
        elif message.get("type") == "result":
            proc.stdin.close()
    if await proc.wait() != 0:
        raise RuntimeError(f"the fake CLI exited {proc.returncode}")


async def approval(mode: Mode) -> list[Row]:
    """From the CLI's permission request to its receipt of the answer: a policy callable vs writing it straight."""
    questions = mode.approval_questions
    ours: list[float] = []
    direct: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ccexec-bench-approval-") as tmp:
        cli = _fake_host(tmp)
        stamps = Path(tmp, "stamps.json")
        env = {"CCX_FAKE_QUESTIONS": str(questions), "CCX_FAKE_STAMPS": str(stamps)}
        await asyncio.to_thread(_approval_ours, cli, env, tmp)  # warm: the loop thread, the in-kernel server
        for _ in range(mode.approval_runs):
            await asyncio.wait_for(_approval_direct(cli, env, tmp), TIMEOUT)
            direct += _round_trips(stamps, questions)
            await asyncio.to_thread(_approval_ours, cli, env, tmp)
            ours += _round_trips(stamps, questions)
    p50 = percentile(ours, 50) - percentile(direct, 50)
    p99 = percentile(ours, 99) - percentile(direct, 99)
    counted = f"{mode.approval_runs} runs x {questions} questions each way"
    return [
        Row("approval round trip added p50", p50, "ms", "<= 5",
            f"policy callable p50 {percentile(ours, 50):.2f} ms vs stdin from a pipe reader "
            f"{percentile(direct, 50):.2f} ms; {counted}", samples=ours),
        Row("approval round trip added p99", p99, "ms", "<= 5",
            f"policy callable p99 {percentile(ours, 99):.2f} ms vs stdin from a pipe reader "
            f"{percentile(direct, 99):.2f} ms; max {max(ours):.2f} vs {max(direct):.2f} ms", samples=direct),
    ]


# -- Interrupt ----------------------------------------------------------------------


def _interrupt_ours(cli: str, env: dict[str, str], cwd: str) -> float:
    """Seconds from ``run.interrupt()`` to the end of the turn with a result (blocking)."""
    run = ccx.run(INTERRUPT_PROMPT, executable=cli, env=env, cwd=cwd, display=False, settings=_settings(),
                  approve="all", idle_timeout=60)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not run.text and not run.done and time.monotonic() < deadline:
            time.sleep(0.001)
        if not run.text:
            raise RuntimeError(f"no text before the interrupt: {run.status} {run.error}")
        started = time.monotonic()
        run.interrupt()
        run.wait(TIMEOUT)
        seconds = time.monotonic() - started
        if run.result is None:
            raise RuntimeError(f"the interrupted turn ended without a result: {run.status} {run.error}")
        return seconds
    finally:
        with contextlib.suppress(Exception):
            run.end()
        with contextlib.suppress(Exception):
            run.wait(TIMEOUT)
        if not run.done:
            run.cancel()


def _is_result(line: bytes) -> bool:
    try:
        message = json.loads(line)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "result"


async def _ended(proc: asyncio.subprocess.Process, exiting: bool) -> None:
    """Wait for ``proc``; signal it first unless it is ``exiting`` by itself (stdout at end).

    A signal sent just after the exit reaps the child in ``Popen.send_signal``'s poll,
    before asyncio's watcher does: asyncio then warns of an "Unknown child process".
    """
    if exiting:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), TIMEOUT / 4)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    await proc.wait()


async def _interrupt_direct(cli: str, env: dict[str, str], cwd: str) -> float:
    """The same, writing the ``interrupt`` request to the CLI's stdin from a plain pipe reader."""
    proc = await asyncio.create_subprocess_exec(
        cli, *control.HOST_ARGS, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, **env}, cwd=cwd, limit=1 << 24,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((control.line(control.initialize("init-1"))
                      + control.line(control.user_message(INTERRUPT_PROMPT))).encode())
    started = 0.0
    seconds = None
    read_to_end = False
    try:
        while line := await proc.stdout.readline():
            if not started and b'"text_delta"' in line:
                started = time.monotonic()
                proc.stdin.write(control.line(control.interrupt("interrupt-1")).encode())
            elif started and b'"result"' in line and _is_result(line):
                seconds = time.monotonic() - started
                proc.stdin.close()
        read_to_end = True
    finally:
        await _ended(proc, read_to_end)
    if seconds is None:
        raise RuntimeError("the CLI wrote no result after the interrupt")
    return seconds


async def interrupt(mode: Mode) -> list[Row]:
    """From the interrupt to the CLI's result: ``run.interrupt()`` vs writing the request straight."""
    try:
        cli = find_claude()
    except FileNotFoundError:
        return [Row(name, None, unit, target, note="n/a (claude CLI not found: npm ci)")
                for name, unit, target in INTERRUPT_ROWS]
    ours: list[float] = []
    direct: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ccexec-bench-interrupt-") as tmp, _backend() as url:
        env = demo_environment(url, str(Path(tmp, "config")), max_retries=0)
        work = Path(tmp, "work")
        work.mkdir()
        await asyncio.to_thread(_interrupt_ours, cli, env, str(work))  # warm; not counted
        for _ in range(mode.interrupt_runs):
            direct.append(await asyncio.wait_for(_interrupt_direct(cli, env, str(work)), TIMEOUT))
            ours.append(await asyncio.to_thread(_interrupt_ours, cli, env, str(work)))
    added = median([(o - d) * 1e3 for o, d in zip(ours, direct, strict=True)])
    return [Row("interrupt added", added, "ms", "<= 50",
                f"run.interrupt() to the result {median(ours) * 1e3:.1f} ms vs the CLI's own (interrupt written "
                f"to its stdin) {median(direct) * 1e3:.1f} ms; {len(ours)} pairs", samples=[o * 1e3 for o in ours])]
