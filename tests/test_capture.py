"""Capture that cannot drop: stdout and stderr as followed files, and the pipe alternative."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from cc_executor_nb import methods
from cc_executor_nb.client import Client, connect
from cc_executor_nb.errors import InvalidParams
from cc_executor_nb.events import Completed, Output, Started
from cc_executor_nb.server import execution as execution_module
from cc_executor_nb.server.capture import Follower
from cc_executor_nb.server.handler import EnhancedWebSocketHandler
from cc_executor_nb.server.session import Session
from cc_executor_nb.server.streams import BACKLOG_LIMIT
from cc_executor_nb.server.supervisor import ManagedProcess

from .conftest import TOKEN, collect, completed, fake, group_alive, make_handler, output_of
from .util import eventually, eventually_async, scaled

pytestmark = pytest.mark.timeout(90)

SIX_MB = 6_000_000
FULL_HASTY = SIX_MB // 100 * 100 + len("END\n")


def temp_files(pid: int) -> list[str]:
    """The server's open temporary files (capture, spool, replay), by their names."""
    found = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if "ccexec-" in target:
            found.append(target)
    return found


async def test_file_capture_is_the_default_and_announced(client: Client) -> None:
    """A run's output goes through capture files by default, and process.started says so."""
    await client.execute(argv=fake("interleave", "6"))
    events = await collect(client)
    started = next(e for e in events if isinstance(e, Started))
    assert started.params["capture"] == "file"
    assert output_of(events) == "out 0\nout 2\nout 4\n"
    assert output_of(events, "stderr") == "err 1\nerr 3\nerr 5\n"



async def test_a_nearly_full_disk_captures_through_pipes_unless_asked() -> None:
    """With under FILE_CAPTURE_ROOM free a run not asking for a capture gets pipes, which hold a
    child on a full disk (a capture file gave it ENOSPC: its output, and the traceback saying
    so, were cut at the disk's size); one that asks for files still gets them."""
    handler = make_handler()
    handler.disk.room_for_files = lambda: False  # type: ignore[method-assign]
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as client:
            for asked, used in ((None, "pipe"), ("file", "file")):
                await client.execute(argv=fake("echo", "hi"), capture=asked)
                events = await collect(client)
                started = next(e for e in events if isinstance(e, Started))
                assert (started.params["capture"], output_of(events)) == (used, "hi\n")
    finally:
        await handler.close()

@pytest.mark.parametrize(("capture", "complete"), [("file", True), ("pipe", False)])
async def test_a_writer_that_drops_on_a_full_pipe_loses_nothing_with_file_capture(
    client: Client, capture: str, complete: bool
) -> None:
    """6 MB from a writer that drops what a full pipe refuses, while the loop is held 1.5 s.

    With files every byte arrives; with a pipe only what it held (the reason files are
    the default): the same race the claude CLI 2.1.197 loses when a kernel holds the GIL.
    """
    await client.execute(argv=fake("hasty", str(SIX_MB), "0.3"), capture=capture)
    time.sleep(scaled(1.5))  # holds this loop (the server's) like a cell holding the GIL
    events = await collect(client, timeout=scaled(60))
    received = len(output_of(events).encode())
    assert completed(events).exit_code == 0
    assert (received == FULL_HASTY) is complete, f"{received} of {FULL_HASTY} bytes"
    if not complete:
        assert received <= 2 << 20  # about one pipe-full


@pytest.mark.parametrize("capture", ["file", "pipe"])
async def test_output_written_after_the_leader_exits_is_kept(client: Client, capture: str) -> None:
    """A child of the group writing 5 MB 0.5 s after the leader exited: all of it arrives."""
    await client.execute(argv=fake("late", "5000000", "0.5"), capture=capture)
    events = await collect(client)
    assert output_of(events) == "a\n" + "x" * 5_000_000 + "\n"
    assert completed(events).params["status"] == "completed"


async def test_closing_stdout_early_is_not_the_end_of_the_run(client: Client) -> None:
    """A child that closes its stdout goes on; what it writes to stderr later arrives."""
    script = "echo a; exec >&-; sleep 0.5; echo b >&2"
    await client.execute(argv=["sh", "-c", script])
    events = await collect(client)
    assert (output_of(events), output_of(events, "stderr")) == ("a\n", "b\n")


REOPEN = "sleep 0.2; seq 1 1000; sleep 0.3; echo b > /dev/stdout; echo c"
SEQ = "".join(f"{i}\n" for i in range(1, 1001))


async def test_reopening_stdout_by_path_is_reported_with_file_capture(client: Client) -> None:
    """The known hazard of files: `echo b > /dev/stdout` truncates the capture. A
    process.notice says so; what was not read yet (the loop was held) is lost."""
    await client.execute(argv=["sh", "-c", REOPEN], capture="file")
    time.sleep(scaled(1.5))
    events = await collect(client)
    notices = [e.params for e in events if e.method == "process.notice"]
    assert [n["kind"] for n in notices] == ["capture_reopened"] and notices[0]["stream"] == "stdout"
    assert output_of(events).endswith("b\nc\n") and output_of(events) != SEQ + "b\nc\n"


async def test_a_disk_release_as_the_run_ends_sends_no_notice_after_its_end(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk budget may release a run while its process.completed waits for the session
    (behind an output frame a slow client has not taken): the "released" notice then came
    after the run's end, to a client that had stopped listening. None follows the end."""
    ending: list[execution_module.Execution] = []
    notices_sent, notify = execution_module.Execution._notices_sent, Session.notify

    async def last_notices_sent(self: execution_module.Execution) -> None:
        await notices_sent(self)
        ending.append(self)

    async def completed_meets_a_release(self: Session, method: str, params: dict[str, Any]) -> int:
        if method == methods.PROCESS_COMPLETED and ending:
            ending.pop().release()  # the budget, while the end waits its turn
        return await notify(self, method, params)

    monkeypatch.setattr(execution_module.Execution, "_notices_sent", last_notices_sent)
    monkeypatch.setattr(Session, "notify", completed_meets_a_release)
    await client.execute(argv=["sh", "-c", "echo a"])
    first = await collect(client)
    await client.execute(argv=["sh", "-c", "echo b"])  # what the first run still sent comes before
    second = await collect(client)
    pid = completed(first).params["pid"]
    assert [e.params for e in second if e.method == "process.notice" and e.params.get("pid") == pid] == []


async def test_a_reopen_as_the_run_ends_is_told_before_process_completed(client: Client) -> None:
    """`echo a; echo x > /dev/stdout; echo b`: the reopen is seen while the run is being set up
    (its readers start with the child) or at its last read. Its notice was lost in 12 of 20 runs
    (the run did not listen yet); now each of 30 runs tells it once, between its
    process.started and its process.completed."""
    for _ in range(30):
        await client.execute(argv=["sh", "-c", "echo a; echo x > /dev/stdout; echo b"], capture="file")
        names = [e.method for e in await collect(client) if e.method.startswith("process.")]
        assert names[0] == "process.started" and names[-1] == "process.completed", names
        assert names.count("process.notice") == 1, names


async def test_reopening_stdout_by_path_keeps_everything_with_pipe_capture(client: Client) -> None:
    """The same script with capture "pipe": every line, in order, and no notice."""
    await client.execute(argv=["sh", "-c", REOPEN], capture="pipe")
    time.sleep(scaled(1.5))
    events = await collect(client)
    assert output_of(events) == SEQ + "b\nc\n"
    assert not [e for e in events if e.method == "process.notice"]


async def test_bad_capture_is_invalid_params(client: Client) -> None:
    """capture other than "file", "pipe" or null is -32602 naming the field."""
    with pytest.raises(InvalidParams) as info:
        await client.call("execute", {"argv": ["true"], "capture": "tty"})
    assert info.value.data == {"field": "capture"}


@pytest.fixture
async def polling() -> EnhancedWebSocketHandler:
    """A server whose follower has no inotify: capture files are polled."""
    handler = make_handler()
    handler.streams.follower = Follower(use_inotify=False)
    await handler.start("127.0.0.1", 0)
    yield handler
    await handler.close()


async def test_without_inotify_files_are_polled_and_the_run_decides_the_end(polling) -> None:
    """No inotify: output is still exact, including what the group writes after the leader."""
    async with await connect(polling.url, TOKEN) as client:
        await client.execute(argv=fake("late", "1000000", "0.3"))
        events = await collect(client)
    assert output_of(events) == "a\n" + "x" * 1_000_000 + "\n"


async def test_an_inotify_overflow_falls_back_without_losing_output(server, client: Client) -> None:
    """Lost inotify events (queue overflow) mid-run: the run still ends with every line."""
    await client.execute(argv=fake("ticker", "20", "0.02"))
    server.streams.follower._overflowed()  # what an IN_Q_OVERFLOW does
    events = await collect(client)
    assert output_of(events) == "".join(f"tick {i}\n" for i in range(20))
    assert server.streams.follower.overflows == 1


async def test_temporary_files_go_with_their_session() -> None:
    """Capture files go when the run ends; replay and spool files when the session ends."""
    server = make_handler(replay_memory=0)  # replay written at once: its unacknowledged end stays on disk
    await server.start("127.0.0.1", 0)
    async with await connect(server.url, TOKEN, auto_reconnect=False) as client:
        await client.execute(argv=fake("flood", str(20 << 20), "/dev/null"))
        await collect(client, timeout=scaled(60))
        await eventually_async(
            lambda: not [name for name in temp_files(os.getpid()) if "stdout" in name or "stderr" in name],
            what="capture files closed after the run",
        )
        assert temp_files(os.getpid())  # the session's replay log is still there
    await eventually_async(
        lambda: not temp_files(os.getpid()) and not server.sessions.sessions, what="temporary files gone"
    )
    assert server.disk.used == 0
    await server.close()


SLOW_SIZE = 48 << 20


@pytest.fixture
async def small_spool() -> EnhancedWebSocketHandler:
    """A server whose runs queue at most 256 K characters in memory."""
    handler = make_handler(output_memory_limit=1 << 18)
    await handler.start("127.0.0.1", 0)
    yield handler
    await handler.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
async def test_a_stalled_client_leaves_the_backlog_in_the_capture_file_and_gets_every_byte(
    small_spool, tmp_path, monkeypatch
) -> None:
    """48 MB while the client reads nothing: the child finishes anyway (never held), the
    backlog waits in the capture file (no spool file), and the run's end waits no grace for
    writers (there are none) and neither stops the group's straggler, which ends within the
    group's grace, nor names anyone; then every byte arrives."""
    graces: list[bool] = []
    within = execution_module._within

    async def recorded(event, seconds):  # type: ignore[no-untyped-def]
        graces.append(await within(event, seconds))
        return graces[-1]

    monkeypatch.setattr(execution_module, "_within", recorded)
    go, done, sha = tmp_path / "go", tmp_path / "done", tmp_path / "sha"
    straggler = f"(until [ -e {go} ]; do sleep 0.02; done; touch {done}) >/dev/null 2>&1 &"
    script = f"{straggler} exec {shlex.join(fake('flood', str(SLOW_SIZE), str(sha)))}"
    async with await connect(small_spool.url, TOKEN, max_events=2) as client:
        await client.execute(argv=["sh", "-c", script])
        execution = next(iter(small_spool.sessions.sessions.values())).execution
        output = execution.output
        await eventually_async(lambda: execution.process.returncode is not None, timeout=30, what="the leader's exit")
        read_at_exit = output.bytes_read["stdout"]
        await eventually_async(lambda: graces, what="the run past its wait for the writers")
        go.touch()
        await eventually_async(lambda: done.exists() and not group_alive(execution.process.pgid),
                               what="the straggler's own end")
        digest, received = hashlib.sha256(), 0
        async for event in client.events():
            if isinstance(event, Output):
                digest.update(event.data.encode())
                received += len(event.data.encode())
            elif isinstance(event, Completed):
                break
    assert read_at_exit < SLOW_SIZE // 2, f"{read_at_exit} of {SLOW_SIZE} bytes read when the child ended"
    assert output.spool.spilled_bytes == 0
    assert graces == [True] and execution.survivors == []
    assert event.params["status"] == "completed" and event.params["escaped_pids"] == []
    assert (received, digest.hexdigest()) == (SLOW_SIZE, sha.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
async def test_a_background_child_that_holds_no_output_is_stopped_after_the_grace(client: Client, tmp_path) -> None:
    """``sleep 60 >/dev/null 2>&1 &`` holds no output but is in the run's group: once the
    leader exits it gets the 1 s grace, then is terminated; nobody is named as escaped."""
    pid_file = tmp_path / "pid"
    await client.execute(argv=["sh", "-c", f"sleep 60 >/dev/null 2>&1 & echo $! > {pid_file}; echo started"])
    events = await collect(client)
    done = completed(events)
    sleeper = int(pid_file.read_text())
    assert output_of(events) == "started\n"
    assert (done.params["status"], done.params["exit_code"], done.params["escaped_pids"]) == ("completed", 0, [])
    assert sleeper not in group_alive(done.params["pgid"]), "the background sleep outlived its run"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
async def test_stopping_the_group_after_a_normal_end_leaves_a_setsid_escapee_named_and_alive(
    client: Client, tmp_path
) -> None:
    """The group's straggler is stopped after the grace, but a process that left the group
    is only named on a normal end (killed on cancel, TTL and shutdown, as the README says)."""
    pid_file = tmp_path / "pid"
    script = f"sleep 60 >/dev/null 2>&1 & echo $! > {pid_file}; setsid -f sleep 61 >/dev/null 2>&1; echo started"
    await client.execute(argv=["sh", "-c", script])
    done = completed(await collect(client))
    escaped = done.params["escaped_pids"]
    try:
        assert int(pid_file.read_text()) not in group_alive(done.params["pgid"])
        assert done.params["status"] == "completed" and len(escaped) == 1
        assert psutil.Process(escaped[0]).cmdline() == ["sleep", "61"]
    finally:
        for pid in escaped:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


async def test_a_child_far_ahead_of_the_reader_is_held_until_it_catches_up(
    client: Client, tmp_path, monkeypatch
) -> None:
    """The loop held while a child floods past BACKLOG_LIMIT: the reader (not waiting for
    the client) finds more than BACKLOG_LIMIT unread and holds the child, as a full pipe
    would; every byte still arrives."""
    reasons: list[str] = []
    hold = ManagedProcess.hold

    def recorded(self: ManagedProcess, reason: str) -> None:
        reasons.append(reason)
        hold(self, reason)

    monkeypatch.setattr(ManagedProcess, "hold", recorded)
    size, sha, go = 64 << 20, tmp_path / "sha", tmp_path / "go"
    # The child writes nothing before the loop is held: a reader that read first would
    # fill the run's memory queue, stop for the client and rightly hold nobody.
    script = f"until [ -e {go} ]; do sleep 0.01; done; exec {shlex.join(fake('flood', str(size), str(sha)))}"
    pid = (await client.execute(argv=["sh", "-c", script]))["pid"]
    go.touch()
    # Holds this loop (the server's) until the child is far ahead, as a cell holding the GIL would.
    eventually(lambda: _far_ahead(pid, sha), timeout=30, what="the child far ahead of the reader")
    events = await collect(client, timeout=60)
    data = output_of(events).encode()
    assert "backlog:stdout" in reasons
    assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha.read_text())


def _far_ahead(pid: int, done: Path) -> bool:
    """Whether child ``pid`` wrote over twice BACKLOG_LIMIT to its stdout, or all of it (``done`` exists)."""
    try:
        return done.exists() or os.stat(f"/proc/{pid}/fd/1").st_size > 2 * BACKLOG_LIMIT
    except OSError:  # the child has just exited: ``done`` is there on the next look
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
async def test_on_linux_the_end_of_output_comes_from_inotify(server, client: Client) -> None:
    """With inotify the run knows the end of its output by itself (the count of writers)."""
    await client.execute(argv=["sleep", "0.5"])
    execution = next(iter(server.sessions.sessions.values())).execution
    counting = execution.output.counting
    await collect(client)
    assert counting and execution.output.mode == "file"


def test_a_run_asks_for_its_capture(tmp_path) -> None:
    """RunSpec(capture=...) (the magic's --capture, CCExec.capture) reaches the server."""
    from cc_executor_nb.kernel.loop import KernelLoop
    from cc_executor_nb.kernel.run import Run, RunSpec, Target

    loop = KernelLoop(make_handler, thread_name="ccx-capture-test").start()
    try:
        assert loop.server is not None
        target = Target(loop.server.url, loop.server.token)
        captures = []
        for capture in ("pipe", "file"):
            run = Run(RunSpec(argv=["echo", "hi"], capture=capture), target).start(loop).wait(30)
            started = next(e for e in run.events if isinstance(e, Started))
            captures.append((started.params["capture"], run.stdout))
    finally:
        loop.stop()
    assert captures == [("pipe", "hi\n"), ("file", "hi\n")]

