"""End to end over loopback: real server, real client, real child processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from cc_executor_nb.client import connect
from cc_executor_nb.errors import SpawnFailed
from cc_executor_nb.events import Heartbeat, Output, Started, StatusUpdate
from cc_executor_nb.server.handler import _silence_message

from .conftest import (
    TOKEN,
    collect,
    completed,
    fake,
    group_alive,
    make_handler,
    output_of,
)
from .util import eventually_async, gone, scaled


async def test_echo_streams_output_and_completes(client) -> None:
    """A simple command: started, its output, completed with exit 0, seq 1, 2, 3..."""
    result = await client.execute(argv=fake("echo", "hello", "world"))
    assert result["status"] == "started" and result["pid"] == result["pgid"]
    events = await collect(client)
    run_events = [e for e in events if e.seq is not None]
    assert isinstance(run_events[0], Started) and run_events[0].params["argv"] == fake("echo", "hello", "world")
    assert [e.seq for e in run_events] == list(range(1, len(run_events) + 1))
    assert output_of(events) == "hello world\n"
    done = completed(events)
    assert done.params["status"] == "completed" and done.exit_code == 0 and done.params["error"] is None
    assert done.params["duration_seconds"] > 0


async def test_command_string_runs_without_a_shell(client, tmp_path) -> None:
    """``command`` is split with shlex; shell syntax reaches the child as literal text."""
    marker = tmp_path / "x"
    await client.execute(f"echo $(touch {marker}) `id` ';' '&&' \"a b\"")
    events = await collect(client)
    assert output_of(events) == f"$(touch {marker}) `id` ; && a b\n"
    assert not marker.exists()


async def test_stdout_and_stderr_are_kept_apart(client) -> None:
    """Interleaved writes arrive on their own streams, each complete and in order."""
    await client.execute(argv=fake("interleave", "40"))
    events = await collect(client)
    assert output_of(events, "stdout") == "".join(f"out {i}\n" for i in range(0, 40, 2))
    assert output_of(events, "stderr") == "".join(f"err {i}\n" for i in range(1, 40, 2))


async def test_output_chunks_are_line_aligned(client) -> None:
    """Each process.output holds whole lines when the child writes short whole lines."""
    await client.execute(argv=fake("interleave", "40"))
    outputs = [e for e in await collect(client) if isinstance(e, Output)]
    assert outputs and all(e.data.endswith("\n") for e in outputs)


async def test_five_megabyte_line_without_newline_arrives_whole(server, client) -> None:
    """A 5 MB line with no newline comes in several chunks that join to the exact line."""
    await client.execute(argv=fake("bigline", str(5 * 1024 * 1024)))
    events = await collect(client, timeout=60)
    chunks = [e.data for e in events if isinstance(e, Output)]
    assert "".join(chunks) == "x" * (5 * 1024 * 1024)
    assert len(chunks) > 1 and max(map(len, chunks)) <= server.streams.chunk_limit


async def test_invalid_utf8_and_split_character(client) -> None:
    """Invalid bytes become U+FFFD; a character split across writes arrives whole."""
    await client.execute(argv=fake("badutf8"))
    events = await collect(client)
    assert output_of(events) == "bad \ufffd\ufffd bytes\nsplit \U0001F600 done\n"


async def test_silence_brings_heartbeats_and_status_without_timeout(client) -> None:
    """During a 3 s silence (heartbeat 0.2 s, threshold 0.5 s) beats and status arrive."""
    await client.execute(argv=fake("silence", "3"), heartbeat_interval=0.2, inactivity_threshold=0.5)
    events = await collect(client)
    beats = [e for e in events if isinstance(e, Heartbeat)]
    statuses = [e for e in events if isinstance(e, StatusUpdate)]
    assert len(beats) >= 8
    assert len(statuses) >= 3
    inactive = [s.inactive_seconds for s in statuses]
    assert inactive == sorted(inactive) and inactive[0] >= 0.5 and inactive[-1] > 1.5
    assert all(s.params["no_output_for"] == s.params["inactive_seconds"] for s in statuses)
    assert all(s.params["status"] == "running" for s in statuses)
    # "before" was printed first, so the notice counts the silence, not "no output yet".
    assert all(s.params["message"].startswith("Process is thinking... (no output for") for s in statuses)
    # Under 10 s with a tenth: the first says 0.5 s, never "0 s".
    assert statuses[0].params["message"] == f"Process is thinking... (no output for {inactive[0]:.1f} s)"
    assert output_of(events) == "before\nafter\n"
    assert completed(events).params["status"] == "completed"


async def test_heartbeats_carry_last_seq(client) -> None:
    """A heartbeat reports the seq of the last run notification sent before it."""
    await client.execute(argv=fake("silence", "0.8"), heartbeat_interval=0.2)
    events = await collect(client)
    assert any(isinstance(e, Heartbeat) for e in events), "no heartbeat during a 0.8 s silence"
    last_seq = 0
    for event in events:
        if isinstance(event, Heartbeat):
            assert event.last_seq == last_seq and event.params["status"] == "alive"
            assert event.params["session_id"] == client.session_id
        elif event.seq is not None:
            last_seq = event.seq


async def test_idle_session_still_gets_heartbeats(server) -> None:
    """Heartbeats flow with no process running."""
    server.heartbeat_interval = 0.1
    async with await connect(server.url, TOKEN) as client:
        beats = 0
        async for event in client.events():
            beats += isinstance(event, Heartbeat)
            if beats == 3:
                break
    assert beats == 3


@pytest.mark.timeout(60)
async def test_a_command_of_megabytes_holds_up_no_other_session() -> None:
    """A 4 MB ``command`` (on a server taking 8 MiB messages) is split while another session's
    run goes on streaming: the split ran shlex on the event loop, quadratic in a word's length
    (4.9 s for 600 KB, minutes for this, every session's output and heartbeats stopped); the
    test's timeout is the bound. The word is then too long for exec, which the reply says."""
    handler = make_handler(max_message_size=8 << 20)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as other, await connect(handler.url, TOKEN) as big:
            await other.execute(argv=fake("ticker", "3000", "0.02"))
            request = asyncio.create_task(big.execute(command='echo "' + "x" * 4_000_000 + '"'))
            ticks = 0
            async for event in other.events():
                ticks += isinstance(event, Output)
                if ticks == 5:
                    break
            with pytest.raises(SpawnFailed, match="argument 1 \\(4000000 bytes"):
                await request
            await other.cancel()
    finally:
        await handler.close()


async def test_pause_stops_output_until_resume(client) -> None:
    """PAUSE stops the group (no output while paused); RESUME lets it go on."""
    pid = (await client.execute(argv=fake("ticker", "60", "0.05")))["pid"]
    seen: list[tuple[float, str]] = []
    client.add_listener(lambda e: seen.append((time.monotonic(), e.method)))
    await eventually_async(lambda: sum(m == "process.output" for _, m in seen) >= 2, what="two outputs")
    assert (await client.pause())["status"] == "paused"
    await eventually_async(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what="the child stopped")
    stopped_at = time.monotonic()
    state = await client.status()
    assert state["state"] == "paused"
    in_flight = scaled(0.2)  # lines written just before the stop may still be crossing the pipe and socket
    await asyncio.sleep(in_flight + 0.8)  # the behaviour under test: 0.8 s paused (16 ticks had it not held)
    during = [m for t, m in seen if t > stopped_at + in_flight and m == "process.output"]
    assert during == []
    assert (await client.resume())["status"] == "resumed"
    events = await collect(client)
    methods = [e.method for e in events]
    assert "process.paused" in [m for _, m in seen] and "process.resumed" in methods
    assert output_of(events).endswith("tick 59\n")


async def test_cancel_kills_stubborn_child_and_grandchildren(server, client) -> None:
    """CANCEL of a child ignoring SIGTERM with forked grandchildren: all gone within grace + 1 s."""
    server.processes.kill_grace = 1.0
    result = await client.execute(argv=fake("stubborn", "3"))
    pgid = result["pgid"]
    await eventually_async(lambda: len(group_alive(pgid)) == 4, what="the child and 3 grandchildren")
    started = time.monotonic()
    assert (await client.cancel())["status"] == "cancelled"
    await eventually_async(lambda: not group_alive(pgid), timeout=2.0, what="the group gone")
    assert time.monotonic() - started <= scaled(2.0)
    events = await collect(client)
    done = completed(events)
    assert done.params["status"] == "cancelled" and done.exit_code == -9
    assert "process.cancelled" in [e.method for e in events]


async def test_cancel_of_a_polite_child_uses_sigterm(client) -> None:
    """A child that honours SIGTERM ends with -15 and status cancelled."""
    await client.execute(argv=["sleep", "30"])
    await client.cancel()
    done = completed(await collect(client))
    assert done.params["status"] == "cancelled" and done.exit_code == -15


async def test_cancel_of_paused_run_continues_it_first(client) -> None:
    """A paused group gets SIGCONT with SIGTERM, so cancel works while paused."""
    await client.execute(argv=["sleep", "30"])
    await client.pause()
    await client.cancel()
    done = completed(await collect(client, timeout=10))
    assert done.params["status"] == "cancelled" and done.exit_code == -15


async def test_client_disconnect_kills_the_group(server) -> None:
    """Closing the connection mid-run leaves no process of the run's group."""
    client = await connect(server.url, TOKEN)
    result = await client.execute(argv=fake("stubborn", "2"))
    pgid = result["pgid"]
    await eventually_async(lambda: len(group_alive(pgid)) == 3, what="the child and 2 grandchildren")
    await client.close()
    grace = server.processes.kill_grace
    await eventually_async(lambda: not group_alive(pgid), timeout=grace + 3, what="the group gone")
    await eventually_async(lambda: not server.sessions.sessions, what="the session dropped")


@pytest.mark.parametrize(
    "args, status, code",
    [
        (("exit", "0"), "completed", 0),
        (("exit", "3"), "failed", 3),
        (("exit", "255"), "failed", 255),
        (("signal", "15"), "failed", -15),
        (("signal", "9"), "failed", -9),
    ],
)
async def test_exit_codes_and_signals(client, args, status, code) -> None:
    """Exit codes pass through; death by signal N is exit_code -N, status failed."""
    await client.execute(argv=fake(*args))
    done = completed(await collect(client))
    assert done.params["status"] == status and done.exit_code == code
    assert (done.params["error"] is None) == (code == 0)


async def test_timeout_is_honoured_when_given(client) -> None:
    """A total timeout cancels the run, which completes with status timeout."""
    started = time.monotonic()
    await client.execute(argv=fake("silence", "20"), timeout=0.5)
    done = completed(await collect(client))
    assert done.params["status"] == "timeout" and "0.5" in done.params["error"]
    assert time.monotonic() - started < scaled(5)


async def test_no_timeout_unless_given(client) -> None:
    """Without a timeout a silent child runs to its end, however long it is silent."""
    await client.execute(argv=fake("silence", "1.5"), inactivity_threshold=0.2)
    done = completed(await collect(client))
    assert done.params["status"] == "completed"


async def test_partial_line_is_flushed_after_a_quiet_period(client) -> None:
    """A prompt without newline reaches the client while the child still runs."""
    child = psutil.Process((await client.execute(argv=fake("prompt", "Continue? [y/N] ")))["pid"])
    async for event in client.events():
        assert event.method != "process.completed", "the prompt came only with the exit"
        if isinstance(event, Output):
            assert event.data == "Continue? [y/N] "
            assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
            break
    await client.cancel()
    await collect(client)


@pytest.mark.parametrize("capture", ["file", "pipe"])
async def test_a_partial_line_leaves_once_read_not_with_the_rest_of_its_line(client, capture) -> None:
    """Half a line, then a pause well under the old 50 ms timer: the half is sent on its own first."""
    pause = f"{scaled(0.03):g}"
    await client.execute(argv=fake("halves", "Name: ", pause, "Ada\n"), capture=capture)
    pieces = [e.data for e in await collect(client) if isinstance(e, Output)]
    assert pieces == ["Name: ", "Ada\n"]


async def test_child_environment_is_unbuffered_and_free_of_secrets(server, client, monkeypatch) -> None:
    """The child gets PYTHONUNBUFFERED, NODE_NO_READLINE, request env; never tokens."""
    monkeypatch.setenv("JUPYTER_TOKEN", "jupyter-secret")
    monkeypatch.setenv("SOME_COPY", TOKEN)
    monkeypatch.setenv("PLAIN_VAR", "kept")
    names = ["PYTHONUNBUFFERED", "NODE_NO_READLINE", "JUPYTER_TOKEN", "SOME_COPY", "PLAIN_VAR", "EXTRA"]
    await client.execute(argv=fake("env", *names), env={"EXTRA": "yes"})
    text = output_of(await collect(client))
    assert text.splitlines() == [
        "PYTHONUNBUFFERED=1",
        "NODE_NO_READLINE=1",
        "JUPYTER_TOKEN unset",
        "SOME_COPY unset",
        "PLAIN_VAR=kept",
        "EXTRA=yes",
    ]
    assert TOKEN not in text


async def test_cwd_is_honoured(client, tmp_path) -> None:
    """The child starts in the requested directory."""
    await client.execute(argv=fake("cwd"), cwd=str(tmp_path))
    assert output_of(await collect(client)).strip() == str(tmp_path)


@pytest.mark.skipif(shutil.which("stdbuf") is None, reason="stdbuf is not installed")
async def test_a_request_json_cannot_encode_raises_and_leaves_nothing_pending(server) -> None:
    """call() with params JSON cannot hold raises TypeError at once, and no answer is left waiting
    (it was failed at the close and logged "Future exception was never retrieved")."""
    import gc

    unretrieved: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        client = await connect(server.url, TOKEN)
        with pytest.raises(TypeError):
            await client.call("execute", {"argv": ["pwd"], "cwd": Path("/tmp")})
        assert (await client.execute(argv=["true"]))["status"] == "started"  # the session still works
        await client.close()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert unretrieved == []


async def test_known_buffering_programs_run_under_stdbuf(client) -> None:
    """python3 is started as ``stdbuf -o0 -e0 python3 ...``; other programs are not."""
    await client.execute(argv=["python3", "-c", "print(1)"])
    events = await collect(client)
    started = next(e for e in events if isinstance(e, Started))
    assert started.params["exec_argv"][1:4] == ["-o0", "-e0", "python3"]
    assert os.path.basename(started.params["exec_argv"][0]) == "stdbuf"
    await client.execute(argv=["echo", "x"])
    started = next(e for e in await collect(client) if isinstance(e, Started))
    assert started.params["exec_argv"] == ["echo", "x"]


async def test_status_reports_idle_and_running(client) -> None:
    """status answers idle with no run, and running with pid, timings and resources."""
    idle = await client.status()
    assert idle["state"] == "idle" and idle["pid"] is None and idle["session_id"] == client.session_id
    printed: list[str] = []
    client.add_listener(lambda e: printed.append(e.data) if isinstance(e, Output) else None)
    asked = time.monotonic()
    result = await client.execute(argv=fake("silence", "5"))
    await eventually_async(lambda: "before\n" in printed, what="the child's first line")
    busy = await client.status()
    since_asked = time.monotonic() - asked
    assert busy["state"] == "running" and busy["pid"] == result["pid"]
    assert 0 < busy["elapsed_seconds"] <= since_asked
    assert 0 <= busy["inactive_seconds"] <= busy["elapsed_seconds"]
    assert busy["resources"]["num_processes"] >= 1 and busy["resources"]["rss_bytes"] > 0
    await client.cancel()
    await collect(client)


async def test_runs_follow_each_other_in_one_session_with_rising_seq(client) -> None:
    """A session runs several processes one after another; seq keeps counting."""
    await client.execute(argv=fake("echo", "one"))
    first = await collect(client)
    await client.execute(argv=fake("echo", "two"))
    second = await collect(client)
    assert max(e.seq or 0 for e in first) < min(e.seq for e in second if e.seq is not None)
    assert output_of(second) == "two\n"


async def test_health_endpoint(server, client) -> None:
    """GET /health answers 200 JSON with counts."""
    url = f"http://127.0.0.1:{server.port}/health"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=scaled(5)).read())
    health = json.loads(body)
    assert health["status"] == "healthy" and health["sessions"] == 1 and health["running"] == 0
    assert isinstance(health["version"], str)


async def test_mcp_alias_path_is_accepted(server) -> None:
    """/ws/mcp works like /ws."""
    async with await connect(server.url + "/mcp", TOKEN) as client:
        assert client.session_id


async def test_shutdown_kills_every_group() -> None:
    """Closing the handler kills all running groups and ends all sessions."""
    handler = make_handler(kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    clients = [await connect(handler.url, TOKEN) for _ in range(3)]
    pgids = [(await c.execute(argv=fake("stubborn", "1")))["pgid"] for c in clients]
    await eventually_async(lambda: all(len(group_alive(p)) == 2 for p in pgids), what="3 runs, a grandchild each")
    await handler.close()
    assert all(not group_alive(p) for p in pgids)
    for c in clients:
        await eventually_async(lambda c=c: c.closed, what="the client to see the close")
    assert not psutil.Process().children()


async def test_a_run_alive_when_the_server_stops_ends_cancelled_saying_so() -> None:
    """The client of a run the stopping server kills gets "cancelled: the server stopped" (it got
    failed, exit code 143: a Claude conversation waiting for a follow-up read as a failure)."""
    handler = make_handler(kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    client = await connect(handler.url, TOKEN)
    await client.execute(argv=["sleep", "30"])
    events = asyncio.create_task(collect(client))
    await handler.close()
    ended = completed(await events).params
    assert (ended["status"], ended["error"]) == ("cancelled", "cancelled: the server stopped")


async def test_a_run_that_exited_before_the_server_stops_keeps_its_own_end() -> None:
    """A child that exited 0 while the server still read its output (a grandchild holds it)
    ends completed when the server stops then, not "cancelled: the server stopped"."""
    handler = make_handler(kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    client = await connect(handler.url, TOKEN)
    started = await client.execute(argv=["sh", "-c", "sleep 30 & echo done"])
    events = asyncio.create_task(collect(client))
    await eventually_async(lambda: gone(started["pid"]), what="sh's exit")
    await asyncio.sleep(0.2)  # reaped by the server's watcher; its output's end waits for the grandchild
    await handler.close()
    ended = completed(await events).params
    assert (ended["status"], ended["exit_code"]) == ("completed", 0)


@pytest.mark.parametrize(
    ("holds", "message"),
    [({"disk"}, "Process is held until the client reads more of its output (disk limit)"),
     ({"backlog:stdout"}, "Process is held until the client reads more of its output"),
     (set(), "Process is thinking... (no output for 0.5 s)")],
)
def test_a_silence_report_says_when_the_server_holds_the_process(holds: set[str], message: str) -> None:
    """A child the server holds (disk limit, or far ahead of a slow client) is not "thinking"."""
    assert _silence_message(False, {"stdout": 10}, 0.5, holds) == message

