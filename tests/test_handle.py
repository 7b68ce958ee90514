"""The Run handle, in process: a real server on a private background loop, no kernel."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import copy
import dataclasses
import gc
import io
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from cc_executor_nb.claude.interpreter import ClaudeInterpreter
from cc_executor_nb.claude.streamjson import ToolCall
from cc_executor_nb.client import Client
from cc_executor_nb.errors import CCExecError, ConnectionLost, ServerUnresponsive
from cc_executor_nb.events import Output
from cc_executor_nb.kernel.loop import KernelLoop
from cc_executor_nb.kernel.presenter import BACKLOG_CHARS, TextPresenter, WidgetPresenter
from cc_executor_nb.kernel.run import UNREACHABLE_CANCEL, Run, RunSpec, Target, unreachable
from cc_executor_nb.kernel.transcript import Transcript
from cc_executor_nb.kernel.views import RunView
from cc_executor_nb.server.streams import CHUNK_LIMIT

from .conftest import fake, group_alive, make_handler
from .proxy import FaultyProxy, on_loop
from .servers import start_server
from .test_approval_view import sentences_and_calls
from .test_streamjson import result as stream_result
from .util import all_objects, eventually, interrupt_main_once_in, new_objects, scaled

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bg() -> Iterator[KernelLoop]:
    """A private background loop serving a real handler (kill grace 1 s)."""
    loop = KernelLoop(lambda: make_handler(kill_grace=1.0), thread_name="ccx-handle-test")
    loop.start()
    yield loop
    loop.stop()


def target(loop: KernelLoop) -> Target:
    assert loop.server is not None
    return Target(loop.server.url, loop.server.token)


def start(loop: KernelLoop, argv: list[str], **kwargs: Any) -> Run:
    """Start a run of ``argv`` on ``loop``; kwargs go to Run()."""
    spec = RunSpec(argv=argv, heartbeat_interval=kwargs.pop("heartbeat", 20.0))
    presenter = kwargs.pop("presenter", None)
    run = Run(spec, target(loop), **kwargs)
    run.presenter = presenter
    return run.start(loop)


def test_wait_returns_the_finished_run(bg: KernelLoop) -> None:
    """wait() blocks until the end and returns the run with status, exit code, output and duration."""
    run = start(bg, fake("interleave", "4")).wait(scaled(20))
    assert run.status == "completed" and run.exit_code == 0
    assert run.stdout == "out 0\nout 2\n" and run.stderr == "err 1\nerr 3\n"
    assert run.duration is not None and run.duration >= 0 and run.done


def test_finished_runs_hold_no_connection(bg: KernelLoop) -> None:
    """20 finished runs kept alive (as IPython's Out cache keeps a magic's runs) hold no
    Client: every client made for them is collected (each kept its closed client, with its
    websocket connection, queues and futures: ~18 KB a run)."""
    before = all_objects(Client)
    runs = [start(bg, fake("echo", str(i))).wait(scaled(20)) for i in range(20)]
    assert all(run.status == "completed" for run in runs)
    eventually(lambda: not new_objects(Client, before), what="the finished runs' clients to be collected")


def test_events_are_kept_in_order(bg: KernelLoop) -> None:
    """events holds connected, started, output... and completed, with increasing seq."""
    run = start(bg, fake("echo", "hi")).wait(scaled(20))
    methods = [e.method for e in run.events]
    assert methods[0] == "connected" and methods[1] == "process.started"
    assert methods[-1] == "process.completed"
    seqs = [e.seq for e in run.events if e.seq is not None]
    assert seqs == sorted(seqs)


def test_failed_run_reports_its_exit_code(bg: KernelLoop) -> None:
    """A non-zero exit ends as failed with that code."""
    run = start(bg, fake("exit", "3")).wait(scaled(20))
    assert (run.status, run.exit_code, run.stdout) == ("failed", 3, "bye\n")


def test_wait_timeout_raises_and_the_run_goes_on(bg: KernelLoop) -> None:
    """wait(timeout) raises TimeoutError without stopping the run."""
    run = start(bg, fake("ticker", "30", "0.1"))
    with pytest.raises(TimeoutError):
        run.wait(0.3)
    assert not run.done
    run.cancel().wait(scaled(20))


@pytest.mark.parametrize("timeout", [float("nan"), "1", True])
def test_wait_refuses_a_timeout_that_is_no_number_of_seconds(bg: KernelLoop, timeout: Any) -> None:
    """wait(nan) waited for ever, as wait(None) does (no deadline compares with NaN), "1" was a
    TypeError of the arithmetic and True one second: each is a ValueError; the run goes on."""
    run = start(bg, fake("ticker", "30", "0.1"))
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds or None, not "):
        run.wait(timeout)
    assert not run.done
    run.cancel().wait(scaled(20))


def test_cancel_ends_the_run_cancelled(bg: KernelLoop) -> None:
    """cancel() makes the run end with status cancelled and kills its group."""
    run = start(bg, [sys.executable, "-c", "import time; time.sleep(30)"])
    eventually(lambda: run.status == "running", what="the run running")
    run.cancel().wait(scaled(20))
    assert run.status == "cancelled" and run.exit_code is not None
    assert run.state.pgid is not None and group_alive(run.state.pgid) == []


def test_a_run_cancelled_with_a_reason_before_its_start_reads_that_reason(bg: KernelLoop) -> None:
    """cancel(reason=...) (a batch whose budget was spent) of a run whose start was still under way:
    it read "cancelled before it started", not why its owner cancelled it; a plain cancel() still does."""
    reason = "cancelled: the batch budget ($0.01) was spent"
    sleeper = RunSpec(argv=[sys.executable, "-c", "import time; time.sleep(30)"])
    run = Run(sleeper, target(bg)).cancel(reason=reason)  # asked before the start reached the server
    run.start(bg).wait(scaled(20))
    assert (run.status, run.error, run.state.pid) == ("cancelled", reason, None)
    plain = Run(sleeper, target(bg)).cancel().start(bg).wait(scaled(20))
    assert (plain.status, plain.error, plain.state.pid) == ("cancelled", "cancelled before it started", None)


def test_pause_and_resume(bg: KernelLoop) -> None:
    """pause() and resume() move the run to paused and back to running."""
    run = start(bg, fake("ticker", "100", "0.05"))
    eventually(lambda: "tick 1\n" in run.stdout, what="the first ticks")
    assert run.status == "running"
    child = psutil.Process(run.state.pid)
    run.pause()
    eventually(lambda: run.status == "paused", what="status paused")
    eventually(lambda: child.status() == psutil.STATUS_STOPPED, what="the child stopped")
    run.resume()
    eventually(lambda: run.status == "running", what="status running again")
    assert child.status() != psutil.STATUS_STOPPED
    ticks = run.stdout.count("tick")
    eventually(lambda: run.stdout.count("tick") > ticks, what="ticks after the resume")
    run.cancel().wait(scaled(20))
    methods = [e.method for e in run.events]
    assert methods.index("process.paused") < methods.index("process.resumed")


def test_resume_of_a_running_run_and_a_second_pause_are_quiet_no_ops(bg: KernelLoop) -> None:
    """run.resume() while running and run.pause() while paused do nothing and raise nothing
    (the server refuses them now; they said "resumed" / "paused" again before)."""
    run = start(bg, [sys.executable, "-c", "import time; time.sleep(30)"])
    eventually(lambda: run.status == "running", what="the run running")
    assert run.resume() is run
    run.pause()
    eventually(lambda: run.status == "paused", what="status paused")
    assert run.pause() is run
    run.cancel().wait(scaled(20))
    methods = [e.method for e in run.events]
    assert "process.resumed" not in methods and methods.count("process.paused") == 1


def test_cancel_before_start_never_spawns(bg: KernelLoop) -> None:
    """A run cancelled before it starts ends cancelled without a process."""
    spec = RunSpec(argv=[sys.executable, "-c", "print('should not run')"])
    run = Run(spec, target(bg))
    run.cancel()
    run.start(bg).wait(scaled(20))
    assert run.status == "cancelled" and run.state.pid is None and run.stdout == ""


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """Python's own SIGINT handler for the test: a suite started with SIGINT ignored (a
    background job without job control, ``nohup ... &``) has none, and then
    ``_thread.interrupt_main()`` does nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("sigint_raises")
def test_keyboard_interrupt_during_wait_cancels_the_run(bg: KernelLoop) -> None:
    """A KeyboardInterrupt while waiting cancels the run, waits for its end, then propagates."""
    run = start(bg, [sys.executable, "-c", "import time; time.sleep(30)"])
    eventually(lambda: run.status == "running", what="the run running")
    threading.Timer(0.2, _thread.interrupt_main).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run.wait()
    assert run.done and run.status == "cancelled"
    assert time.monotonic() - began < scaled(10)


@pytest.mark.usefixtures("sigint_raises")
def test_keyboard_interrupt_during_wait_shows_in_one_line_in_ipython(bg: KernelLoop) -> None:
    """The interrupt wait() lets through renders itself for IPython (its _render_traceback_ hook) as
    one line saying the run was cancelled: IPython showed every frame of the wait, down to a
    select() or a lock. It stays a KeyboardInterrupt."""
    run = start(bg, [sys.executable, "-c", "import time; time.sleep(30)"])
    eventually(lambda: run.status == "running", what="the run running")
    interrupt_main_once_in("wait")
    with pytest.raises(KeyboardInterrupt) as interrupted:
        run.wait()
    assert interrupted.value._render_traceback_() == ["KeyboardInterrupt: the run was cancelled"]


async def test_await_does_not_block_the_awaiting_loop(bg: KernelLoop) -> None:
    """await run finishes with the run while the awaiting loop keeps running other tasks."""
    run = start(bg, fake("ticker", "5", "0.1"))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    try:
        result = await run
    finally:
        ticker.cancel()
    assert result is run and run.status == "completed" and ticks >= 10


async def test_cancelling_an_await_leaves_the_run_alone(bg: KernelLoop) -> None:
    """Cancelling the task that awaits a run does not cancel the run's outcome."""
    run = start(bg, fake("ticker", "3", "0.1"))
    waiter = asyncio.ensure_future(run._wait_async())
    await asyncio.sleep(0)  # one turn of the loop: the waiter runs up to its await on the run
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not run.done
    assert (await run).status == "completed"


def test_spawn_failure_ends_in_error(bg: KernelLoop) -> None:
    """A program that cannot start ends the run with status error and the server's reason."""
    run = start(bg, ["/nonexistent/program"]).wait(scaled(20))
    assert run.status == "error" and run.error and "nonexistent" in run.error


def test_unreachable_server_ends_in_error() -> None:
    """A server that cannot be reached ends the run with status error."""
    loop = KernelLoop(thread_name="ccx-no-server").start()
    try:
        run = Run(RunSpec(argv=["true"]), Target("ws://127.0.0.1:9/ws", "x"))
        run.start(loop).wait(scaled(20))
        assert run.status == "error" and run.error
    finally:
        loop.stop()


def test_stopping_the_loop_cancels_a_live_run(bg: KernelLoop) -> None:
    """Stopping the background loop mid-run cancels the process and ends the run."""
    run = start(bg, [sys.executable, "-c", "import time; time.sleep(30)"])
    eventually(lambda: run.status == "running", what="the run running")
    pgid = run.state.pgid
    bg.stop()
    assert run.done and run.status == "cancelled"
    assert pgid is not None and group_alive(pgid) == []


def test_stopping_the_loop_while_a_run_closes_its_connection_ends_the_run_and_the_socket(
    bg: KernelLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop stopped while an ended run waits for its connection's closing handshake: the
    run is done and its socket closed (the close was cancelled half-way: the run never became
    done, and its socket was left open, an unclosed-socket ResourceWarning at the next GC)."""
    assert bg.server is not None
    proxies = KernelLoop(thread_name="ccx-proxy-loop").start()
    runner = KernelLoop(thread_name="ccx-runner-loop").start()
    proxy = proxies.call(FaultyProxy(bg.server.port).start(), timeout=scaled(5))
    folded = Run._on_event

    def freeze_at_the_end(self: Run, event: Any) -> None:
        if event.method == "process.completed":
            proxy.freeze()  # the close frame that follows gets no answer
        folded(self, event)

    monkeypatch.setattr(Run, "_on_event", freeze_at_the_end)
    try:
        run = Run(RunSpec(argv=fake("echo", "x")), Target(proxy.url(), bg.server.token)).start(runner)
        eventually(lambda: run._client is not None and run._client._closing, what="the run closing its connection")
        client = run._client
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner.stop()
            gc.collect()
    finally:
        runner.stop()
        proxies.call(proxy.close(), timeout=scaled(10))
        proxies.stop()
    assert run.done and (run.status, run.exit_code) == ("completed", 0)
    assert client is not None and client._ws.transport.is_closing()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


class Recorder:
    """An interpreter that records what it is fed and exposes Claude fields."""

    def __init__(self) -> None:
        self.fed: list[tuple[str, str]] = []
        self.finished = False
        self.cost_usd = 0.25

    def feed(self, stream: str, text: str) -> None:
        self.fed.append((stream, text))

    def finish(self) -> None:
        self.finished = True

    def snapshot(self) -> SimpleNamespace:
        text = "".join(text for stream, text in self.fed if stream == "stdout")
        return SimpleNamespace(text=text, cost_usd=self.cost_usd)

    def progress(self, now: float, finished: bool) -> None:
        return None


def test_interpreter_is_fed_every_output_piece(bg: KernelLoop) -> None:
    """The interpreter gets each output piece in order, finish() at the end, and backs the Claude fields."""
    recorder = Recorder()
    run = start(bg, fake("interleave", "4"), interpreter=recorder).wait(scaled(20))
    assert "".join(t for s, t in recorder.fed if s == "stderr") == run.stderr
    assert run.text == run.stdout and run.cost_usd == 0.25 and recorder.finished
    assert run.model is None and run.tool_calls == []


class BrokenAtTheEnd(Recorder):
    """An interpreter whose judgement of the run's end raises."""

    def incomplete(self) -> str | None:
        raise ValueError("the end is broken")


class PresenterBrokenAtTheEnd(TextPresenter):
    """A text presenter whose update for the run's end raises (it keeps every other event)."""

    def __init__(self) -> None:
        super().__init__(lambda: "run")
        self.seen: list[Any] = []

    def update(self, event: Any) -> None:
        if event.method == "process.completed":
            raise RuntimeError("cannot draw the end")
        self.seen.append(event)


@pytest.mark.parametrize("broken", ["interpreter", "presenter"])
def test_an_error_while_taking_the_runs_end_ends_it_in_error(bg: KernelLoop, broken: str) -> None:
    """An exception while the end is folded in ends the run ``error`` saying what went wrong, and wait() returns."""
    kwargs: dict[str, Any] = {"interpreter": BrokenAtTheEnd()} if broken == "interpreter" else {
        "presenter": PresenterBrokenAtTheEnd()}
    run = start(bg, fake("echo", "hi"), **kwargs).wait(scaled(20))
    reason = "ValueError: the end is broken" if broken == "interpreter" else "RuntimeError: cannot draw the end"
    assert run.status == "error" and run.done
    assert run.error == f"could not take in the run's end ({reason}); the process ended completed, exit code 0"
    if broken == "presenter":  # the view is told of the error the run ended with
        assert kwargs["presenter"].seen[-1].params == {"error": run.error}


def test_claude_fields_are_empty_without_an_interpreter(bg: KernelLoop) -> None:
    """Without an interpreter the Claude fields read None (tool_calls: empty)."""
    run = start(bg, fake("echo", "x")).wait(scaled(20))
    fields = (run.text, run.result, run.cost_usd, run.usage, run.session_id, run.model, run.is_error)
    assert fields == (None,) * 7 and run.tool_calls == []


def claude_calls_run(calls: int) -> Run:
    """A run (never started) whose interpreter has read ``calls`` Bash calls, a sentence before each."""
    interpreter = ClaudeInterpreter(prompt="p")
    interpreter.feed("stdout", sentences_and_calls(range(calls)) + stream_result(result="done") + "\n")
    return Run(RunSpec(argv=["claude"]), Target("ws://127.0.0.1:1", "t"), interpreter=interpreter)


def test_reading_tool_calls_again_builds_nothing() -> None:
    """Runs of 2,000 and 4,000 calls: a second read of run.tool_calls is the list the first made, not
    a list of every call built again (a loop over run.tool_calls[i] took 6.2 s at 20,000 calls);
    a call that comes since makes a new one, with it."""
    for calls in (2_000, 4_000):
        run = claude_calls_run(calls)
        first = run.tool_calls
        assert run.tool_calls is first and len(first) == calls and isinstance(first, list)
        assert run.retries is run.retries
        assert run.interpreter is not None
        run.interpreter.feed("stdout", sentences_and_calls(range(calls, calls + 1)))
        assert len(run.tool_calls) == calls + 1 and len(first) == calls


def test_a_reader_cannot_change_what_the_run_records_through_tool_calls() -> None:
    """Changing a call's input read from run.tool_calls is refused, and the run's record still shows
    the command that ran (the input was the run's own dict: the record showed the reader's)."""
    run = claude_calls_run(3)
    with contextlib.suppress(TypeError):
        run.tool_calls[1].input["command"] = "rm -rf ~"  # type: ignore[index]
    assert run.tool_calls[1].input == {"command": "echo 1"}
    record = Transcript(run).markdown()
    assert "`echo 1`" in record and "rm -rf" not in record


def test_run_tool_calls_is_a_read_only_list_of_read_only_calls() -> None:
    """The list every read shares and its calls refuse changes, saying how to copy; list() of it is a
    list to change; a call equals a ToolCall of the same fields, and its input is JSON and copies
    to a plain dict."""
    run = claude_calls_run(2)
    calls = run.tool_calls
    for change in (lambda: calls.append(calls[0]), lambda: calls.sort(key=str), lambda: calls.__delitem__(0),
                   lambda: calls[0].input.update(command="x")):  # type: ignore[union-attr]
        with pytest.raises(TypeError, match="read-only: copy it to change it"):
            change()
    with pytest.raises(dataclasses.FrozenInstanceError):
        calls[0].status = "pending"
    mine = list(run.tool_calls)
    mine.append(mine[0])
    assert len(mine) == 3 and len(run.tool_calls) == 2 and calls[0].status == "done"
    assert calls[0] == ToolCall("toolu_0", "Bash", {"command": "echo 0"}, "ok", status="done", text_offset=0)
    assert json.dumps(calls[0].input) == '{"command": "echo 0"}'
    assert type(copy.deepcopy(calls[0].input)) is dict and dataclasses.replace(calls[0], result="r").result == "r"


def test_a_run_refused_for_its_token_says_what_to_give(bg: KernelLoop) -> None:
    """A wrong token: the run fails with the server's refusal and where the token comes from, never the token."""
    assert bg.server is not None
    run = Run(RunSpec(argv=fake("echo", "x")), Target(bg.server.url, "not-the-token")).start(bg).wait(scaled(20))
    assert run.status == "error" and run.error is not None
    assert run.error.startswith(f"{bg.server.url} refused the connection: HTTP 401")
    assert "CC_EXECUTOR_TOKEN" in run.error and "not-the-token" not in run.error


def test_a_run_with_no_server_to_reach_says_so_without_the_urls_secrets(bg: KernelLoop) -> None:
    """Nothing listens: "cannot reach URL: Connection refused", the URL's user info and query left out."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://user:secret@127.0.0.1:{port}/ws?token=abc"
    run = Run(RunSpec(argv=fake("echo", "x")), Target(url, None)).start(bg).wait(scaled(20))
    assert (run.status, run.error) == ("error", f"cannot reach ws://127.0.0.1:{port}/ws: Connection refused")


@pytest.mark.parametrize(("url", "error", "reason"), [
    ("ws://no-such-host.invalid:1/ws", socket.gaierror(-2, "Name or service not known"),
     "Name or service not known (is the host name right?)"),
    ("wss://127.0.0.1:1/ws", ConnectionResetError(),
     "the connection was reset (a wss:// URL needs a server that speaks TLS)"),
])
def test_a_connection_error_without_an_errno_reads_in_words(url: str, error: OSError, reason: str) -> None:
    """A failed name lookup (whose code is no errno) and a reset TLS handshake say what happened
    (they read "Unknown error -2" and "ConnectionResetError")."""
    assert unreachable(url, error) == f"cannot reach {url}: {reason}"


def test_text_presenter_prints_the_run(bg: KernelLoop, capsys: pytest.CaptureFixture[str]) -> None:
    """The text presenter writes the output to stdout/stderr and start/end lines to stdout."""
    run = Run(RunSpec(argv=fake("interleave", "2")), target(bg))
    run.presenter = TextPresenter(lambda: repr(run))
    run.show()
    run.start(bg).wait(scaled(20))
    out, err = capsys.readouterr()
    assert "[started]" in out and "out 0\n" in out and "[completed] exit 0" in out
    assert err == "err 1\n" and "[connected]" not in out


# A real child that calls setsid: its grandchild leaves the run's group, prints its pid, then sleeps.
ESCAPING = [sys.executable, "-c", (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid(); print(os.getpid(), flush=True)\n"
    "    devnull = os.open(os.devnull, os.O_RDWR)\n"
    "    for fd in (0, 1, 2): os.dup2(devnull, fd)\n"
    "    time.sleep(60); os._exit(0)\n"
    "time.sleep(float(sys.argv[1]))\n"
)]


def test_a_run_whose_child_escaped_its_group_names_it_in_its_record(
    bg: KernelLoop, capsys: pytest.CaptureFixture[str]
) -> None:
    """A child that calls setsid and outlives the run: run.escaped_pids names it, and the live text and
    the record say it may still run (only the server's log said so)."""
    run = Run(RunSpec(argv=[*ESCAPING, "0"]), target(bg))
    run.presenter = TextPresenter(lambda: repr(run))
    run.show()
    run.start(bg).wait(scaled(20))
    escaped = int(run.stdout.split()[0])
    try:
        assert run.status == "completed" and run.escaped_pids == [escaped]
        note = (f"pid {escaped} left the run's process group (setsid), so the run's end did not stop it: "
                f"it may still be running (kill {escaped}).")
        assert f"[note] {note}" in Transcript(run).text().splitlines()
        assert f"*note: {note}*" in Transcript(run).markdown()
        assert f"[note] {note}\n" in capsys.readouterr().out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(escaped, signal.SIGKILL)


def test_a_cancelled_run_says_its_escaped_child_was_killed_with_it(bg: KernelLoop) -> None:
    """Cancelled, a run kills what left its group: the record names the pid as killed with the run."""
    run = start(bg, [*ESCAPING, "30"])
    eventually(lambda: run.stdout.endswith("\n"), what="the escaped child's pid")
    escaped = int(run.stdout.split()[0])
    run.cancel().wait(scaled(20))
    assert run.status == "cancelled" and run.escaped_pids == [escaped]
    note = f"pid {escaped} left the run's process group (setsid) and was killed with the run."
    assert f"[note] {note}" in Transcript(run).text().splitlines()
    assert not psutil.pid_exists(escaped) or psutil.Process(escaped).status() == psutil.STATUS_ZOMBIE


def test_a_run_ended_by_the_loops_stop_while_starting_ends_on_its_cancelled_line(
    bg: KernelLoop, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop stopped while the start was under way: the run ends here, cancelled, and the
    server's process.started that comes after is not taken (it printed "[started] pid N" after
    "[cancelled] the background loop was stopped" and made the run "running" again)."""
    original = Client.execute
    held: list[Any] = []

    async def late_start(self: Client, *args: Any, **params: Any) -> dict[str, Any]:
        # The process starts, but its process.started reaches the run only after the loop's
        # stop ended it (the execute reply never comes in time).
        listeners = self._listeners
        self._listeners = [held.append]
        try:
            await original(self, *args, **params)
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._listeners = listeners
            asyncio.get_running_loop().call_soon(lambda: [each(e) for e in held for each in listeners])
            raise
        raise AssertionError("unreachable")

    monkeypatch.setattr(Client, "execute", late_start)
    run = Run(RunSpec(argv=["sleep", "30"]), target(bg))
    run.presenter = TextPresenter(lambda: repr(run))
    run.show()
    run.start(bg)
    eventually(lambda: any(e.method == "process.started" for e in held), what="the process's start (held)")
    bg.stop()
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert notes == ["[cancelled] the background loop was stopped"], notes
    assert (run.status, run.done) == ("cancelled", True)


def test_a_remote_process_started_while_the_loop_stops_is_ended_there(
    bg: KernelLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop stopped while an execute to a standalone server was in flight (the process
    started there, its reply not yet taken, so no CANCEL is sent): the connection's clean
    close ends the session on the server and its process with it; it is not kept, detached,
    for the server's detach TTL (600 s) as after a drop."""
    original = Client.execute

    async def reply_held(self: Client, *args: Any, **params: Any) -> dict[str, Any]:
        await original(self, *args, **params)
        await asyncio.Event().wait()  # the reply is still on its way when the loop stops
        raise AssertionError("unreachable")

    server = start_server("--token", "remote-token", "--kill-grace", "1")
    try:
        monkeypatch.setattr(Client, "execute", reply_held)
        run = Run(RunSpec(argv=["sleep", "60"]), Target(server.url, "remote-token"))
        run.start(bg)
        started = eventually(lambda: next((e for e in run.events if e.method == "process.started"), None),
                             what="the process's start on the server")
        process = psutil.Process(started.params["pid"])
        bg.stop()
        eventually(lambda: not process.is_running() or process.status() == psutil.STATUS_ZOMBIE,
                   timeout=scaled(10), what="the server to end the process")
        assert (run.status, run.done) == ("cancelled", True)
    finally:
        server.finish()


def test_a_note_after_another_runs_lines_names_its_run(bg: KernelLoop, capsys: pytest.CaptureFixture[str]) -> None:
    """Outside a kernel two runs share the terminal: the first unlabelled note of a run that comes
    after another run's lines names its run (the end of a conversation read as the next run's);
    the notes that follow its own lines do not."""
    first = Run(RunSpec(argv=fake("silence", "30")), target(bg), label="first job")
    first.presenter = TextPresenter(lambda: repr(first), label="first job")
    first.show()
    first.start(bg)
    eventually(lambda: "before" in first.stdout, what="the first run's output")
    second = Run(RunSpec(argv=fake("interleave", "1")), target(bg), label="second job")
    second.presenter = TextPresenter(lambda: repr(second), label="second job")
    second.show()
    second.start(bg).wait(scaled(20))
    first.cancel()
    first.wait(scaled(20))
    lines = capsys.readouterr().out.splitlines()
    # While both printed, their lines were labelled (the first named by its [run] line).
    second_ended = next(i for i, line in enumerate(lines) if line.startswith("2│ [completed] exit 0"))
    assert lines[second_ended + 1].endswith(" · first job")
    introduced = f"1│ [run] pid {first.state.pid} · first job"
    assert [line for line in lines if "job" in line] == [introduced, lines[second_ended + 1]]
    assert lines[-1].startswith("[cancelled]")


def test_a_run_that_never_started_names_itself_after_another_runs_lines() -> None:
    """A run cancelled before it started (the loop stopped at exit) has no [started] line: its
    one note names it, or it read as the end of the run printed before it."""
    from cc_executor_nb.kernel.presenter import _Sink

    out = io.StringIO()
    earlier, never = _Sink(out, out, None, "echo first"), _Sink(out, out, None, "sleep 1; echo late")
    earlier.note("[started] pid 1 echo first")
    earlier.note("[completed] exit 0 in 0.0 s")
    never.note("[cancelled] the background loop was stopped")
    assert out.getvalue().splitlines() == [
        "[started] pid 1 echo first", "[completed] exit 0 in 0.0 s",
        "[cancelled] the background loop was stopped · sleep 1; echo late",
    ]


def test_a_started_line_after_another_runs_lines_names_its_command_once() -> None:
    """A [started] line names its command: written after another run's lines, by a run that
    already wrote (cancelled at exit while its start was under way), it is not named again
    (it read "[started] pid 2 · claude: hi · claude: hi")."""
    from cc_executor_nb.kernel.presenter import _Sink

    out = io.StringIO()
    late, other = _Sink(out, out, None, "claude: hi"), _Sink(out, out, None, "claude: ho")
    late.note("[cancelled] the background loop was stopped")
    other.note("[cancelled] the background loop was stopped")
    late.note("[started] pid 2 · claude: hi")
    assert out.getvalue().splitlines()[-1] == "[started] pid 2 · claude: hi"


class _SavedStream(io.StringIO):
    """An ipykernel ``OutStream`` as the sink sees it: a stream with a thread parent."""

    def set_thread_parent(self, parent: object) -> object:
        return None

    def reset_thread_parent(self, token: object) -> None:
        pass


def test_a_kernels_text_output_keeps_colours_and_a_terminals_all_of_it() -> None:
    """Output a notebook saves (an OutStream) loses its title, clipboard and hyperlink
    escapes and keeps its colours, even when a sequence is split between two events; a
    terminal gets the output as it is, as the README says."""
    from cc_executor_nb.kernel.presenter import _Sink
    from cc_executor_nb.kernel.textview import TextView

    pieces = ["\x1b]0;title\x07\x1b[31mred\x1b[0m \x1b]52;c;UFdO", "RUQ=\x07\x1b]8;;http://x\x1b\\link\n"]
    events = [Output("process.output", {"type": "stdout", "data": piece, "seq": i}) for i, piece in enumerate(pieces)]
    saved, terminal = _SavedStream(), io.StringIO()
    for stream, parent in ((saved, {"msg_id": "m"}), (terminal, None)):
        sink = _Sink(stream, stream, parent)
        for event in events:
            sink.write_event(TextView(), event)
    assert saved.getvalue() == "\x1b[31mred\x1b[0m link\n"
    assert terminal.getvalue() == "".join(pieces)


def test_text_mode_says_when_the_connection_drops_and_comes_back(
    bg: KernelLoop, capsys: pytest.CaptureFixture[str]
) -> None:
    """A text-mode run says "[reconnecting]" once per outage and "[reconnected]" after it (it
    printed nothing, for up to the client's five minutes of reconnects)."""
    assert bg.server is not None
    proxy = bg.call(FaultyProxy(bg.server.port).start(), timeout=scaled(5))
    try:
        run = Run(RunSpec(argv=fake("ticker", "30", "0.1")), Target(proxy.url(), bg.server.token))
        run.presenter = TextPresenter(lambda: repr(run))
        run.show()
        run.start(bg)
        eventually(lambda: run.state.pid is not None, what="the run to start")
        bg.call(_refuse_and_drop(proxy, True), timeout=scaled(5))
        eventually(lambda: run.status == "reconnecting", what="reconnecting")
        time.sleep(0.5)  # several dials fail meanwhile
        bg.call(_refuse_and_drop(proxy, False), timeout=scaled(5))
        run.wait(scaled(30))
    finally:
        bg.call(proxy.close(), timeout=scaled(10))
    out = capsys.readouterr().out
    assert out.count("[reconnecting] the connection to the server dropped") == 1, out
    assert out.count("[reconnected] following the run again") == 1, out
    assert out.index("[reconnecting]") < out.index("[reconnected]") < out.index("[completed] exit 0")


def test_text_presenter_puts_its_end_line_after_output_left_mid_line(
    bg: KernelLoop, capsys: pytest.CaptureFixture[str]
) -> None:
    """Output without a final newline ("Password: ") is not glued to the run's end line."""
    run = Run(RunSpec(argv=fake("halves", "no newline", "0", " at the end")), target(bg))
    run.presenter = TextPresenter(lambda: repr(run))
    run.show()
    run.start(bg).wait(scaled(20))
    assert "\nno newline at the end\n[completed] exit 0" in capsys.readouterr().out


def test_text_presenter_replays_what_came_before_show(
    bg: KernelLoop, capsys: pytest.CaptureFixture[str]
) -> None:
    """Showing a run after it ended prints its whole transcript once."""
    run = Run(RunSpec(argv=fake("echo", "late")), target(bg))
    run.presenter = TextPresenter(lambda: repr(run))
    run.start(bg).wait(scaled(20))
    assert capsys.readouterr().out == ""
    run.presenter.show()
    run.presenter.show()
    assert capsys.readouterr().out.splitlines().count("late") == 1


def test_a_text_run_not_shown_keeps_only_the_newest_output_for_show(
    bg: KernelLoop, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``display=False`` text runs kept every output event until shown (a 300 MB run grew the
    process by 300 MB); now the backlog keeps the newest 1 MiB and says what it left out."""
    size = 6 << 20
    run = Run(RunSpec(argv=fake("flood", str(size), str(tmp_path / "sha"))), target(bg))
    run.presenter = TextPresenter(lambda: repr(run))
    run.start(bg).wait(scaled(60))
    assert len(run.stdout) == size  # the run keeps it all
    kept = sum(len(e.data) for e in run.presenter._backlog if isinstance(e, Output))
    assert BACKLOG_CHARS <= kept <= 2 * BACKLOG_CHARS + CHUNK_LIMIT
    run.presenter.show()
    out = capsys.readouterr().out
    skipped = int(re.search(r"\[… ([\d,]+) characters of earlier output not shown", out).group(1).replace(",", ""))
    assert skipped + kept == size
    assert out.startswith("[started]") and "[completed] exit 0" in out
    assert run.stdout[-kept:] in out


def test_widget_updates_stay_under_the_rate_cap(bg: KernelLoop) -> None:
    """A fast-printing run renders its widget at most ~10 times a second, and ends with the final state."""
    run = Run(RunSpec(argv=fake("ticker", "400", "0.003")), target(bg))
    view = RunView("ticker", on_cancel=run.cancel)
    run.presenter = presenter = WidgetPresenter(run.state, view, max_rate=10.0)
    run.start(bg).wait(scaled(30))
    events = sum(1 for e in run.events if e.method == "process.output")
    renders = presenter.coalescer.render_count
    assert run.duration is not None
    assert renders <= 10 * run.duration + 3 < events
    assert "completed" in view.header.value and "tick 399" in view.output.value
    view.close()


def test_a_reopened_capture_is_said_in_the_widget_and_every_record(bg: KernelLoop) -> None:
    """`echo a; echo x > /dev/stdout; echo b` under file capture loses "a": the widget and the
    records said nothing of it (only text mode printed the server's notice). They now do."""
    run = Run(RunSpec(argv=["sh", "-c", "echo a; echo x > /dev/stdout; echo b"]), target(bg))
    view = RunView("reopen", on_cancel=run.cancel)
    run.presenter = WidgetPresenter(run.state, view, max_rate=10.0)
    run.start(bg).wait(scaled(30))
    view.close()
    said = "the process reopened its own stdout by path for writing"
    assert run.status == "completed" and f"note: {said}" in view.header.value
    record = Transcript(run)
    assert f"note: {said}" in record.html() and f"*note: {said}" in record.markdown()
    assert f"[note] {said}" in record.text()


def test_repr_names_the_command_and_status(bg: KernelLoop) -> None:
    """repr(run) shows the label, status and exit code."""
    run = start(bg, ["true"]).wait(scaled(20))
    assert repr(run).startswith("<Run 'true': completed, exit 0")


async def _drop(proxy: FaultyProxy) -> None:
    proxy.drop()


async def _refuse_and_drop(proxy: FaultyProxy, refusing: bool) -> None:
    proxy.refusing = refusing
    if refusing:
        proxy.drop()


def test_output_lost_while_disconnected_is_said_in_text_and_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gap (the server dropped output nobody had acknowledged while the client was away) was
    only an event: the run read "completed" everywhere. Text mode now says "[gap]", and the
    status line of every record "output incomplete"."""
    loop = KernelLoop(lambda: make_handler(kill_grace=1.0, replay_limit=2 << 20), thread_name="ccx-gap-test")
    loop.start()
    assert loop.server is not None
    proxy = loop.call(FaultyProxy(loop.server.port).start(), timeout=scaled(5))
    gate, sha = tmp_path / "gate", tmp_path / "sha"
    script = f"while [ ! -e {gate} ]; do sleep 0.01; done; exec \"$@\""
    try:
        run = Run(RunSpec(argv=["sh", "-c", script, "sh", *fake("flood", str(8 << 20), str(sha))]),
                  Target(proxy.url(), loop.server.token))
        run.presenter = TextPresenter(lambda: repr(run))
        run.show()
        run.start(loop)
        eventually(lambda: run.state.pid is not None, what="the run to start")
        loop.call(_refuse_and_drop(proxy, True), timeout=scaled(5))  # away before any ack
        gate.touch()
        eventually(sha.exists, timeout=30, what="the child to write everything")
        time.sleep(0.5)
        loop.call(_refuse_and_drop(proxy, False), timeout=scaled(5))
        run.wait(scaled(60))
    finally:
        loop.call(proxy.close(), timeout=scaled(10))
        loop.stop()
    assert run.state.lost_notifications > 0
    out = capsys.readouterr().out
    assert re.search(r"^\[gap\] output lost: notifications \d+-\d+ were no longer kept by the server$", out, re.M)
    status_line = Transcript(run).text().splitlines()[1]
    assert status_line.startswith("completed · exit code 0") and "output incomplete: " in status_line
    assert "output incomplete: " in run.transcript()


def test_cancel_while_the_server_cannot_be_reached_ends_the_run_here(bg: KernelLoop) -> None:
    """cancel() while reconnecting (a dead server or Dask worker): the run ends cancelled at once
    (it stayed "reconnecting" for the client's five minutes, then ended "error")."""
    with _unreachable_run(bg) as (run, _proxy):
        run.cancel().wait(scaled(5))
    assert (run.status, run.error) == ("cancelled", UNREACHABLE_CANCEL)


@contextlib.contextmanager
def _proxied_run(bg: KernelLoop, heartbeat_interval: float | None = None) -> Iterator[tuple[Run, FaultyProxy]]:
    """A started ``sleep 60`` run through a proxy (closed afterwards) that the test may cut or freeze."""
    assert bg.server is not None
    proxy = bg.call(FaultyProxy(bg.server.port).start(), timeout=scaled(5))
    try:
        spec = RunSpec(argv=["sleep", "60"], heartbeat_interval=heartbeat_interval)
        run = Run(spec, Target(proxy.url(), bg.server.token)).start(bg)
        eventually(lambda: run.state.pgid is not None, what="the run to start")
        yield run, proxy
    finally:
        bg.call(proxy.close(), timeout=scaled(10))


@contextlib.contextmanager
def _unreachable_run(bg: KernelLoop) -> Iterator[tuple[Run, FaultyProxy]]:
    """A :func:`_proxied_run` whose proxy then refuses and drops its connections: the run is
    ``reconnecting`` (the server unreachable)."""
    with _proxied_run(bg) as (run, proxy):
        bg.call(_refuse_and_drop(proxy, True), timeout=scaled(5))
        eventually(lambda: run.status == "reconnecting", what="reconnecting")
        yield run, proxy


def test_an_owners_cancel_made_while_reconnecting_keeps_its_reason(bg: KernelLoop) -> None:
    """A cancel with an owner's reason (a batch whose budget is spent) made while the server
    cannot be reached: the run's error said only that the server could not be reached, not why
    it was cancelled. It says both."""
    with _unreachable_run(bg) as (run, proxy):
        run.cancel(reason="cancelled: the batch budget ($1) was spent").wait(scaled(5))
        assert (run.status, run.error) == ("cancelled", "cancelled: the batch budget ($1) was spent, while the "
                                           "server could not be reached (the cancel is sent to it if the connection "
                                           "comes back)")
        bg.call(_refuse_and_drop(proxy, False), timeout=scaled(5))


def test_a_cancel_made_while_reconnecting_reaches_the_server_once_it_is_back(bg: KernelLoop) -> None:
    """cancel() while reconnecting, then the network comes back: the cancel is sent and the
    process ends on the server (it ran on until the detach TTL, 10 min by default; a durable
    job to its end), while the run ended cancelled here at once."""
    with _unreachable_run(bg) as (run, proxy):
        pgid = run.state.pgid
        run.cancel().wait(scaled(5))
        assert (run.status, run.error) == ("cancelled", UNREACHABLE_CANCEL)
        assert group_alive(pgid)
        bg.call(_refuse_and_drop(proxy, False), timeout=scaled(5))
        eventually(lambda: not group_alive(pgid), timeout=30, what="the process to be cancelled on the server")
    assert (run.status, run.error) == ("cancelled", UNREACHABLE_CANCEL)


def test_a_cancel_in_flight_when_the_connection_is_lost_reaches_the_server_once_it_is_back(bg: KernelLoop) -> None:
    """cancel() on a connection that is found dead before the server answers (a frozen server,
    kill -STOP): the run ends cancelled here, and the cancel is sent again once the connection is
    back (it was dropped: the run went on "running" after the reconnect, its process too)."""
    with _proxied_run(bg, heartbeat_interval=0.2) as (run, proxy):
        pgid = run.state.pgid
        bg.call(on_loop(proxy.freeze), timeout=scaled(5))
        run.cancel(timeout=scaled(10))  # returns once three heartbeats were missed
        assert (run.status, run.error) == ("cancelled", UNREACHABLE_CANCEL)
        assert group_alive(pgid)
        bg.call(on_loop(proxy.cut_and_thaw), timeout=scaled(5))
        eventually(lambda: not group_alive(pgid), timeout=30, what="the process to be cancelled on the server")
    assert (run.status, run.error) == ("cancelled", UNREACHABLE_CANCEL)


def test_a_pause_lost_with_its_connection_says_so(bg: KernelLoop) -> None:
    """pause() on a connection found dead before the server answers (a frozen server) returned
    as if it had paused the run: after the reconnect the process ran on, not paused. It raises
    ConnectionLost saying the pause may not have reached the server."""
    with _proxied_run(bg, heartbeat_interval=0.2) as (run, proxy):
        try:
            bg.call(on_loop(proxy.freeze), timeout=scaled(5))
            with pytest.raises(ConnectionLost, match=r"^pause: the connection was lost before the server answered "
                               r"\(.+\); the pause may not have reached the server: ask again once the run is back$"):
                run.pause(timeout=scaled(10))  # raises once three heartbeats were missed
            bg.call(on_loop(proxy.cut_and_thaw), timeout=scaled(5))
        finally:
            run.cancel(timeout=None)


@pytest.mark.parametrize(("kind", "then"), [
    ("cancel", "and a cancel ends the run here once the connection is found lost"),
    ("pause", "so look at run.status before asking again"),
])
def test_a_control_the_server_does_not_answer_in_time_says_why_and_goes_on(
    bg: KernelLoop, kind: str, then: str,
) -> None:
    """cancel(timeout=...) or pause(timeout=...) on a frozen server raises a TimeoutError that says
    what happened and what follows (it had no message at all; a pause's then spoke of what a cancel
    does), and the request still reaches the server once it answers again."""
    with _proxied_run(bg) as (run, proxy):
        try:
            bg.call(on_loop(proxy.freeze), timeout=scaled(5))
            with pytest.raises(TimeoutError) as info:
                getattr(run, kind)(timeout=0.5)
            assert str(info.value) == (
                f"{kind}: {proxy.url()} did not answer within 0.5 s (a frozen or unreachable server?); the "
                f"request is still on its way, {then}")
            bg.call(on_loop(proxy.thaw), timeout=scaled(5))
            if kind == "cancel":
                run.wait(scaled(20))
                assert (run.status, run.error) == ("cancelled", "cancelled by you")
            else:
                eventually(lambda: run.status == "paused", what="the pause to reach the server")
        finally:
            run.cancel(timeout=None)


def test_a_control_the_server_does_not_answer_raises_an_error_of_ours(bg: KernelLoop) -> None:
    """cancel() on a frozen server raised a bare TimeoutError: it raises ServerUnresponsive, an
    error of the package's tree (CCExecError), still a TimeoutError for code that caught one."""
    with _proxied_run(bg) as (run, proxy):
        try:
            bg.call(on_loop(proxy.freeze), timeout=scaled(5))
            with pytest.raises(ServerUnresponsive) as info:
                run.cancel(timeout=0.5)
            assert isinstance(info.value, CCExecError) and isinstance(info.value, TimeoutError)
        finally:
            bg.call(on_loop(proxy.thaw), timeout=scaled(5))
            run.cancel(timeout=None)


def test_a_dropped_connection_resumes_without_loss(bg: KernelLoop) -> None:
    """A connection cut mid-run shows as reconnecting, then resumes with no output lost."""
    assert bg.server is not None
    proxy = bg.call(FaultyProxy(bg.server.port).start(), timeout=scaled(5))
    try:
        run = Run(RunSpec(argv=fake("ticker", "30", "0.03")), Target(proxy.url(), bg.server.token))
        run.start(bg)
        eventually(lambda: "tick 5" in run.stdout, what="six ticks")
        bg.call(_drop(proxy), timeout=scaled(5))
        run.wait(scaled(30))
    finally:
        bg.call(proxy.close(), timeout=scaled(10))
    assert run.status == "completed"
    assert run.stdout == "".join(f"tick {i}\n" for i in range(30))
    methods = [e.method for e in run.events]
    assert "client.reconnecting" in methods and "client.reconnected" in methods


def test_a_run_whose_server_restarted_with_a_new_token_says_so(bg: KernelLoop) -> None:
    """The remote server restarts on its port with another token: the run ends saying the server no longer
    accepts its token and how to go on (it ended "reconnect refused: HTTP 401")."""
    from urllib.parse import urlsplit

    from .servers import start_server

    first = start_server("--token", "the-first-token")
    port = str(urlsplit(first.url).port)
    run = Run(RunSpec(argv=fake("ticker", "600", "0.1")), Target(first.url, "the-first-token")).start(bg)
    second = None
    try:
        eventually(lambda: "tick" in run.stdout, timeout=scaled(20), what="the run's first output")
        first.finish()
        second = start_server("--token", "the-second-token", "--port", port)
        run.wait(scaled(30))
    finally:
        run.cancel()
        if second is not None:
            second.finish()
    assert run.status == "error" and run.error is not None
    assert "no longer accepts this run's token" in run.error and "restarted with a new one" in run.error
    assert "the-first-token" not in run.error and "the-second-token" not in run.error
