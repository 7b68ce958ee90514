"""The background loop thread's lifecycle, in process (no kernel)."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cc_executor_nb.kernel import loop as kernel_loop
from cc_executor_nb.kernel.loop import LOOP_THREAD_NAME, KernelLoop, LoopStopped

from .conftest import FAKE_CLI
from .util import gone, scaled

pytestmark = pytest.mark.timeout(30)


class FakeServer:
    """Records start and close; fails to start on demand."""

    url = "ws://127.0.0.1:1/ws"
    token = "t"

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.started_on: threading.Thread | None = None
        self.closed = False

    async def start(self, host: str, port: int) -> None:
        self.started_on = threading.current_thread()
        if self.fail is not None:
            raise self.fail

    async def close(self) -> None:
        self.closed = True


def loop_threads(name: str = LOOP_THREAD_NAME) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


@pytest.fixture
def private_loop():
    loop = KernelLoop(FakeServer, thread_name="ccx-test-loop")
    yield loop
    loop.stop()


def test_start_returns_with_the_loop_running(private_loop: KernelLoop) -> None:
    """start() returns only once the loop runs, on a named daemon thread, with the server started there."""
    private_loop.start()
    assert private_loop.running
    assert private_loop.thread is not None and private_loop.thread.daemon
    assert private_loop.server.started_on is private_loop.thread  # type: ignore[union-attr]
    assert len(loop_threads("ccx-test-loop")) == 1


def test_start_is_idempotent(private_loop: KernelLoop) -> None:
    """A second start() keeps the one thread."""
    private_loop.start()
    thread = private_loop.thread
    private_loop.start()
    assert private_loop.thread is thread and len(loop_threads("ccx-test-loop")) == 1


def test_start_reraises_startup_errors_and_leaves_no_thread() -> None:
    """A server that fails to start makes start() raise that error, with no thread left behind."""
    loop = KernelLoop(lambda: FakeServer(OSError(98, "Address already in use")), thread_name="ccx-fail")
    with pytest.raises(OSError, match="Address already in use"):
        loop.start()
    assert not loop.running and loop.thread is None
    assert loop_threads("ccx-fail") == []


def test_stop_is_idempotent_and_joins_the_thread(private_loop: KernelLoop) -> None:
    """stop() closes the server, ends the thread, and can be called again harmlessly."""
    private_loop.start()
    server = private_loop.server
    private_loop.stop()
    private_loop.stop()
    assert server.closed  # type: ignore[union-attr]
    assert loop_threads("ccx-test-loop") == [] and not private_loop.running


def test_stop_before_start_is_a_no_op() -> None:
    """stop() on a loop that never started does nothing."""
    loop = KernelLoop(FakeServer, thread_name="ccx-never-started")
    loop.stop()
    assert not loop.running and loop.thread is None and loop.server is None
    assert loop_threads("ccx-never-started") == []


def test_call_runs_the_coroutine_on_the_loop_thread(private_loop: KernelLoop) -> None:
    """call() returns the coroutine's result, computed on the loop thread."""
    private_loop.start()

    async def where() -> str:
        return threading.current_thread().name

    assert private_loop.call(where(), timeout=scaled(5)) == "ccx-test-loop"


def test_call_propagates_exceptions(private_loop: KernelLoop) -> None:
    """An exception raised on the loop reaches the caller."""
    private_loop.start()

    async def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        private_loop.call(boom(), timeout=scaled(5))


@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
def test_a_system_exit_raised_on_the_loop_leaves_it_running(private_loop: KernelLoop, kind: type) -> None:
    """A SystemExit (or KeyboardInterrupt) raised by code on the loop (a callback's
    sys.exit()) is logged and the loop goes on: it ended the loop thread, and every run
    waited on hung for good."""
    private_loop.start()
    private_loop.loop.call_soon_threadsafe(lambda: (_ for _ in ()).throw(kind(3)))

    async def answer() -> int:
        return 42

    time.sleep(0.2)
    assert private_loop.running and private_loop.thread is not None and private_loop.thread.is_alive()
    assert private_loop.call(answer(), timeout=scaled(5)) == 42


def test_call_times_out(private_loop: KernelLoop) -> None:
    """call() gives up after its timeout with TimeoutError."""
    private_loop.start()
    with pytest.raises(TimeoutError):
        private_loop.call(asyncio.sleep(10), timeout=0.1)


def test_call_from_the_loop_thread_is_refused(private_loop: KernelLoop) -> None:
    """call() on the loop thread raises instead of deadlocking."""
    private_loop.start()

    async def nested() -> str:
        try:
            private_loop.call(asyncio.sleep(0), timeout=1)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert "deadlock" in private_loop.call(nested(), timeout=scaled(5))


def test_submit_after_stop_raises_loop_stopped(private_loop: KernelLoop) -> None:
    """submit() on a stopped loop raises LoopStopped (and closes the coroutine)."""
    private_loop.start()
    private_loop.stop()
    with pytest.raises(LoopStopped):
        private_loop.submit(asyncio.sleep(0))


def test_stop_cancels_tracked_tasks(private_loop: KernelLoop) -> None:
    """Tasks submitted to the loop are cancelled by stop() and their clean-up runs."""
    private_loop.start()
    began, cleaned = threading.Event(), threading.Event()

    async def forever() -> None:
        began.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    future = private_loop.submit(forever())
    assert began.wait(scaled(5))
    private_loop.stop()
    assert cleaned.is_set() and future.cancelled()


def test_a_shutdown_that_overruns_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    """A task that outlasts the stop timeout (its clean-up waits) gives one warning line naming
    the timeout, and stop() still returns (it logged a TimeoutError traceback)."""
    slow = KernelLoop(FakeServer, thread_name="ccx-test-loop", stop_timeout=scaled(0.5))
    slow.start()
    began = threading.Event()

    async def stubborn() -> None:
        began.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.shield(asyncio.sleep(scaled(2)))  # a clean-up that takes its time

    slow.submit(stubborn())
    assert began.wait(scaled(5))
    thread = slow.thread
    with caplog.at_level("WARNING", logger="cc_executor_nb"):
        slow.stop()
    overruns = [r for r in caplog.records if "shutdown took over" in r.getMessage()]
    assert len(overruns) == 1 and overruns[0].exc_info is None
    assert not slow.running
    assert thread is not None
    thread.join(scaled(10))  # the clean-up ends: no thread is left to the next test
    assert not thread.is_alive()


def test_the_loop_restarts_after_stop(private_loop: KernelLoop) -> None:
    """A stopped loop can start again with a fresh thread."""
    private_loop.start()
    first = private_loop.thread
    private_loop.stop()
    private_loop.start()
    assert private_loop.running and private_loop.thread is not first


def test_shared_loop_is_one_per_process() -> None:
    """shared_loop() starts once and returns the same loop; stop_shared_loop() leaves no thread."""
    try:
        first = kernel_loop.shared_loop(FakeServer)
        assert kernel_loop.shared_loop(FakeServer) is first
        assert kernel_loop.current_shared_loop() is first
        assert len(loop_threads()) == 1
    finally:
        kernel_loop.stop_shared_loop()
    kernel_loop.stop_shared_loop()
    assert kernel_loop.current_shared_loop() is None and loop_threads() == []


def test_interpreter_exit_kills_running_children(tmp_path) -> None:
    """A Python process that exits mid-run (as a kernel does on shutdown) cancels it cleanly and at once."""
    script = (
        "import sys, time, cc_executor_nb\n"
        "r = cc_executor_nb.run([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " command=True, display=False)\n"
        f"deadline = time.monotonic() + {scaled(20)}\n"  # a child script: tests.util is not importable there
        "while r.state.pid is None and time.monotonic() < deadline: time.sleep(0.01)\n"
        "print(r.state.pid, flush=True)\n"
    )
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=scaled(40), cwd=tmp_path, check=False
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert time.monotonic() - began < scaled(10)
    pid = int(done.stdout.strip())
    assert gone(pid)


# Where the package's log lines go while the shared loop runs

SERVER_LOGGER = "cc_executor_nb.server.execution"


@pytest.fixture
def process_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """Logging as in a fresh kernel (no handler on root) and ``sys.stderr`` a file, whose
    path this returns; the shared loop stopped at the end. Call it in the test body:
    pytest puts its own root handlers and ``sys.stderr`` in place when the call begins."""
    path = tmp_path / "stderr.txt"
    with path.open("w") as stderr:

        def set_up() -> Path:
            monkeypatch.setattr(logging.root, "handlers", [])
            monkeypatch.setattr(sys, "stderr", stderr)
            return path

        try:
            yield set_up
        finally:
            kernel_loop.stop_shared_loop()


def our_handlers() -> list[logging.Handler]:
    return logging.getLogger("cc_executor_nb").handlers


def test_while_the_shared_loop_runs_a_server_warning_is_one_line_on_the_process_stderr(
    process_stderr: Callable[[], Path],
) -> None:
    """A server WARNING while the shared loop runs is written once to the process's
    stderr, naming its logger (not also by logging's last resort)."""
    path = process_stderr()
    kernel_loop.shared_loop(FakeServer)
    logging.getLogger(SERVER_LOGGER).warning("! a server warning")
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"\[W \d\d:\d\d:\d\d {SERVER_LOGGER}\] ! a server warning", lines[0])


def test_stopping_the_shared_loop_removes_its_log_handler_and_a_restart_adds_one(
    process_stderr: Callable[[], Path],
) -> None:
    """stop_shared_loop() leaves the package's logger without a handler; started again, it has one."""
    process_stderr()
    kernel_loop.shared_loop(FakeServer)
    kernel_loop.stop_shared_loop()
    assert our_handlers() == []
    kernel_loop.shared_loop(FakeServer)
    assert len(our_handlers()) == 1


def test_the_shared_loop_leaves_logging_the_user_configured_alone(process_stderr: Callable[[], Path]) -> None:
    """With a handler on root (the user's logging.basicConfig), the shared loop adds none."""
    process_stderr()
    logging.root.addHandler(logging.NullHandler())
    kernel_loop.shared_loop(FakeServer)
    assert our_handlers() == []


def test_logging_the_user_configured_after_the_loop_started_gets_a_server_warning_alone(
    process_stderr: Callable[[], Path],
) -> None:
    """logging.basicConfig() once the shared loop runs: a server WARNING went both to the
    process's stderr and to the user's handler (twice on a script's terminal); now the
    user's handler alone writes it, as when they configured logging before the start."""
    path = process_stderr()
    kernel_loop.shared_loop(FakeServer)
    theirs = io.StringIO()
    logging.root.addHandler(logging.StreamHandler(theirs))
    logging.getLogger(SERVER_LOGGER).warning("! a server warning")
    assert (path.read_text(), theirs.getvalue()) == ("", "! a server warning\n")


def test_in_terminal_ipython_a_server_warning_is_printed_once(tmp_path: Path) -> None:
    """In terminal IPython, where stderr is the terminal, the server's warning about a run
    that left a setsid'd process comes out once, naming its logger."""
    code = (
        "%load_ext cc_executor_nb\n"
        "import cc_executor_nb\n"
        f"r = cc_executor_nb.run({[sys.executable, FAKE_CLI, 'daemon']!r}, command=True, wait=True, display=False)\n"
        "print(r.status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "-c", code],
        capture_output=True, text=True, timeout=scaled(40), cwd=tmp_path, check=False,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("completed"), done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if "left processes outside its group" in line]
    assert len(lines) == 1 and lines[0].startswith("[W ") and " cc_executor_nb.server.execution] ! " in lines[0]
