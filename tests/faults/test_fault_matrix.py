"""The fault matrix: each row forces one fault and asserts the outcome, with deadlines."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import textwrap
import time

import psutil
import pytest
from websockets.asyncio.client import connect as ws_connect

from cc_executor_nb import errors
from cc_executor_nb.client import connect
from cc_executor_nb.events import Completed, Output

from ..conftest import TOKEN, collect, completed, fake, group_alive, make_handler
from ..proxy import FaultyProxy
from ..servers import PeakRss, start_server
from ..util import eventually, eventually_async, scaled

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


async def test_ten_tcp_drops_during_100_mb(tmp_path, record) -> None:
    """10 forced TCP drops during 100 MB of random output: the client's sha256 equals the source."""
    handler = make_handler(detach_ttl=60.0)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    try:
        client = await connect(proxy.url(), TOKEN, max_events=16)
        digest, sizes = hashlib.sha256(), []

        def take(event) -> None:
            if isinstance(event, Output):
                data = event.data.encode()
                digest.update(data)
                sizes.append(len(data))

        client.add_listener(take)
        await client.execute(argv=fake("flood", str(100 << 20), str(tmp_path / "sha"), str(25 << 20)))
        reading = asyncio.ensure_future(collect(client, timeout=200))
        for drop in range(10):
            target = len(sizes) + 5
            await eventually_async(lambda target=target: len(sizes) >= target, timeout=30, what="5 more outputs")
            proxy.drop()
            await eventually_async(lambda drop=drop: client.reconnects == drop + 1, timeout=30, what="the resume")
        await reading
        assert sum(sizes) == 100 << 20
        assert digest.hexdigest() == (tmp_path / "sha").read_text()
        record("10 TCP drops in 100 MB", "sha256 equal, no gap", f"{client.reconnects} resumes, sha256 equal")
        await client.close()
    finally:
        await proxy.close()
        await handler.close()


async def test_resume_after_the_buffer_limit(tmp_path, record) -> None:
    """Resuming from before the replay buffer gives -32003 with the first available seq."""
    handler = make_handler(replay_limit=256 * 1024, chunk_limit=4096)
    await handler.start("127.0.0.1", 0)
    try:
        first = await connect(handler.url, TOKEN, auto_reconnect=False)
        hello = await first.wait_connected()
        await first.execute(argv=fake("flood", str(4 << 20), str(tmp_path / "sha")))
        await collect(first)
        second = await connect(handler.url, TOKEN)
        resume = {"session_id": hello.session_id, "resume_token": hello.params["resume_token"]}
        with pytest.raises(errors.OutputGap) as info:
            await second.call("resume", {**resume, "last_seq": 0})
        available = info.value.data["first_available_seq"]
        assert available > 1
        result = await second.call("resume", {**resume, "last_seq": available - 1})
        assert result["session_id"] == hello.session_id
        record("resume past the buffer", "-32003 + first_available_seq", f"-32003, first_available_seq={available}")
        await second.close()
    finally:
        await handler.close()


async def test_resume_with_wrong_token_or_unknown_session(server, record) -> None:
    """A wrong resume token or an unknown session is -32006; the session is untouched."""
    owner = await connect(server.url, TOKEN)
    hello = await owner.wait_connected()
    intruder = await connect(server.url, TOKEN)
    for params in ({"session_id": hello.session_id, "resume_token": "guess", "last_seq": 0},
                   {"session_id": "0" * 16, "resume_token": hello.params["resume_token"], "last_seq": 0}):
        with pytest.raises(errors.UnknownSession):
            await intruder.call("resume", params)
    assert (await owner.status())["session_id"] == hello.session_id
    record("resume: wrong token / unknown session", "-32006, owner unaffected", "-32006 twice, owner still attached")
    await intruder.close()
    await owner.close()


async def test_detach_ttl_expiry_kills_the_group(record) -> None:
    """No resume within the detach TTL: the run's group is killed and the session dropped."""
    handler = make_handler(detach_ttl=1.0, kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    try:
        client = await connect(proxy.url(), TOKEN, auto_reconnect=False)
        pgid = (await client.execute(argv=fake("stubborn", "2")))["pgid"]
        await eventually_async(lambda: len(group_alive(pgid)) == 3, what="the child and 2 grandchildren")
        dropped = time.monotonic()
        proxy.drop()
        await eventually_async(lambda: not group_alive(pgid), timeout=1.0 + 1.0 + 3, what="the group gone")
        await eventually_async(lambda: not handler.sessions.sessions, what="the session dropped")
        gone = time.monotonic() - dropped
        record("detach TTL 1 s expires", "group killed", f"group gone {gone:.1f} s after the drop")
    finally:
        await proxy.close()
        await handler.close()


CLIENT_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from cc_executor_nb.client import connect
    async def main():
        client = await connect(sys.argv[1], sys.argv[2], auto_reconnect=False)
        await client.execute(argv=["sleep", "60"])
        print("running", flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
""")


async def test_client_frozen_with_sigstop_is_detected(record) -> None:
    """A client frozen with SIGSTOP stops answering pings and is dropped within interval + timeout."""
    handler = make_handler(ping_interval=0.5, ping_timeout=0.5, detach_ttl=1.0, kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT_SCRIPT, handler.url, TOKEN,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), scaled(20))).strip() == b"running"
        session = next(iter(handler.sessions.sessions.values()))
        pgid = session.execution.process.pgid
        frozen = time.monotonic()
        proc.send_signal(signal.SIGSTOP)
        await eventually_async(lambda: not session.attached, timeout=5, what="the frozen client detached")
        detected = time.monotonic() - frozen
        # Ping interval + pong timeout, then at most the close timeout (1 s) for the dead
        # peer's close frame, plus scheduling slack on a busy 2-core machine.
        assert detected <= scaled(0.5 + 0.5 + 1.0 + 0.5)
        await eventually_async(lambda: not group_alive(pgid), timeout=1.0 + 1.0 + 3, what="the group gone")
        record(
            "client frozen (SIGSTOP)",
            "dropped within ping interval+timeout+close timeout (2 s)",
            f"detected after {detected:.2f} s; run killed at TTL",
        )
    finally:
        proc.kill()
        await proc.wait()
        await handler.close()


async def _kill_server_with_runs(count: int, sig: int) -> tuple[int, list[int], float]:
    """Start a standalone server with ``count`` stubborn runs, signal it, wait for its exit.

    Returns the exit code, the runs' pgids and the time the signal was sent.
    """
    server = start_server("--token", TOKEN, "--kill-grace", "1")
    clients = [await connect(server.url, TOKEN, auto_reconnect=False) for _ in range(count)]
    pgids = [(await c.execute(argv=fake("stubborn", "1")))["pgid"] for c in clients]
    await eventually_async(lambda: all(len(group_alive(p)) == 2 for p in pgids), what="every run with its grandchild")
    signalled = time.monotonic()
    code = await asyncio.to_thread(server.finish, sig)
    for client in clients:
        await client.close()
    return code, pgids, signalled


async def test_server_sigterm_with_three_runs(record) -> None:
    """SIGTERM: every group is gone and the server exits 0."""
    code, pgids, signalled = await _kill_server_with_runs(3, signal.SIGTERM)
    assert code == 0
    assert all(not group_alive(p) for p in pgids)
    took = time.monotonic() - signalled
    record("server SIGTERM, 3 runs", "all groups gone, exit 0", f"exit 0 after {took:.1f} s, 0 left")


async def test_server_sigkill_leaves_no_children(record) -> None:
    """SIGKILL of the server: the watchdog kills its children within 2 s."""
    code, pgids, signalled = await _kill_server_with_runs(2, signal.SIGKILL)
    assert code == -signal.SIGKILL
    await eventually_async(lambda: all(not group_alive(p) for p in pgids), timeout=2.0, what="every group gone")
    record("server SIGKILL, 2 runs", "children gone within 2 s", f"gone after {time.monotonic() - signalled:.2f} s")


async def test_child_ignoring_sigterm(client, server, record) -> None:
    """CANCEL of a child that ignores SIGTERM escalates to SIGKILL after the grace."""
    server.processes.kill_grace = 1.0
    pgid = (await client.execute(argv=fake("stubborn", "0")))["pgid"]
    await anext(e async for e in client.events() if isinstance(e, Output))  # SIGTERM now ignored
    started = time.monotonic()
    await client.cancel()
    done = completed(await collect(client))
    assert done.exit_code == -9 and not group_alive(pgid)
    record("child ignores SIGTERM", "SIGKILL after 1 s grace", f"exit -9 after {time.monotonic() - started:.1f} s")


async def test_grandchildren_and_a_setsid_escapee_are_killed(client, server, record) -> None:
    """CANCEL kills the group's grandchildren and the one that escaped with setsid."""
    server.processes.kill_grace = 1.0
    pgid = (await client.execute(argv=fake("escape", "2")))["pgid"]
    first = await anext(e async for e in client.events() if isinstance(e, Output))
    pids = [int(p) for p in first.data.split()]
    # The grandchild calls setsid right after fork; give it the moment it needs.
    await eventually_async(lambda: os.getpgid(pids[0]) != pgid, timeout=5, what="the escapee's setsid")
    await client.cancel()
    await collect(client)
    await eventually_async(lambda: not group_alive(pgid) and not _alive(pids[0]), timeout=3, what="all of them gone")
    observed = f"{len(pids)} grandchildren gone (escapee {pids[0]} by marker)"
    record("grandchildren + setsid escapee", "all killed on cancel", observed)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_normal_completion_names_an_escapee(client, record) -> None:
    """A run that leaves a setsid'd daemon completes and names it in escaped_pids."""
    await client.execute(argv=fake("daemon"))
    done = completed(await collect(client))
    assert done.params["status"] == "completed" and len(done.params["escaped_pids"]) == 1
    psutil.Process(done.params["escaped_pids"][0]).kill()
    record("escapee after normal exit", "named (warning)", f"escaped_pids={done.params['escaped_pids']}")


def test_one_gib_flood_to_a_slow_client(tmp_path, record) -> None:
    """1 GiB to a client that stalls: the server's memory stays bounded, every byte arrives."""
    server = start_server("--token", TOKEN)
    try:
        async def consume() -> tuple[int, str]:
            digest, received = hashlib.sha256(), 0
            async with await connect(server.url, TOKEN, max_events=32) as client:
                await client.execute(argv=fake("flood", str(1 << 30), str(tmp_path / "sha")))
                async for event in client.events():
                    if isinstance(event, Output):
                        digest.update(event.data.encode())
                        received += len(event.data)
                        if received // (256 << 20) != (received - len(event.data)) // (256 << 20):
                            await asyncio.sleep(2)  # stall every 256 MiB
                    elif isinstance(event, Completed):
                        return received, digest.hexdigest()
            return received, ""

        with PeakRss(server.proc.pid) as rss:
            received, sha = asyncio.run(consume())
        print(f"\n1 GiB flood: server {rss.describe()}")
        assert received == 1 << 30 and sha == (tmp_path / "sha").read_text()
        assert rss.growth_mib <= 64
        observed = f"+{rss.growth_mib:.1f} MiB, sha256 equal"
        record("1 GiB flood, slow client", "RSS growth <= 64 MiB, bytes exact", observed)
    finally:
        server.finish()


async def test_session_and_process_caps(record) -> None:
    """Caps refuse the extra session or process with -32000; others go on."""
    handler = make_handler(max_sessions=2, max_processes=1)
    await handler.start("127.0.0.1", 0)
    try:
        one, two = await connect(handler.url, TOKEN), await connect(handler.url, TOKEN)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with ws_connect(handler.url, additional_headers=bearer, proxy=None) as third:
            assert json.loads(await third.recv())["error"]["code"] == -32000
        await one.execute(argv=["sleep", "10"])
        with pytest.raises(errors.LimitReached):
            await two.execute(argv=["sleep", "10"])
        assert (await one.status())["state"] == "running"
        await one.cancel()
        await collect(one)
        record("session cap 2, process cap 1", "-32000, others unaffected", "third session and second process refused")
    finally:
        await handler.close()


async def test_slowloris_handshakes_do_not_block_a_good_client(record) -> None:
    """200 half-open handshakes: a good client still connects; they are cut at the handshake timeout."""
    handler = make_handler(handshake_timeout=2.0)
    await handler.start("127.0.0.1", 0)
    writers = []
    try:
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", handler.port)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            writers.append((reader, writer))
        started = time.monotonic()
        async with await connect(handler.url, TOKEN) as good:
            await good.execute(argv=["echo", "ok"])
            assert completed(await collect(good)).exit_code == 0
        good_seconds = time.monotonic() - started
        closed = await asyncio.gather(*(asyncio.wait_for(r.read(), scaled(10)) for r, _ in writers))
        assert all(data == b"" or data.startswith(b"HTTP/1.1") for data in closed)
        record("200 half-open handshakes", "good client served; stalled ones cut at 2 s",
               f"good run in {good_seconds:.2f} s; 200 cut")
    finally:
        for _, writer in writers:
            writer.close()
        await handler.close()


async def test_connect_disconnect_churn_leaks_nothing(record) -> None:
    """50 clients connecting and disconnecting 20 times leave no tasks, fds or processes."""
    handler = make_handler()
    await handler.start("127.0.0.1", 0)
    me = psutil.Process()
    try:
        warm = await connect(handler.url, TOKEN)
        await warm.execute(argv=["true"])  # starts the watchdog before the baseline
        await collect(warm)
        await warm.close()
        await asyncio.sleep(0)
        tasks, fds = len(asyncio.all_tasks()), me.num_fds()
        children = {p.pid for p in me.children(recursive=True)}

        async def churn(i: int) -> None:
            for round_ in range(20):
                client = await connect(handler.url, TOKEN)
                if round_ % 5 == 0:
                    await client.execute(argv=["true"])
                    await collect(client)
                await client.close()

        await asyncio.gather(*(churn(i) for i in range(50)))
        await eventually_async(lambda: not handler.sessions.sessions, what="every session dropped")
        await eventually_async(lambda: len(asyncio.all_tasks()) <= tasks, what="the task count back")
        await eventually_async(lambda: me.num_fds() <= fds, what="the descriptor count back")
        assert {p.pid for p in me.children(recursive=True)} <= children
        record("50 clients x 20 connects", "no leaked tasks, fds, processes",
               f"tasks {len(asyncio.all_tasks())}/{tasks}, fds {me.num_fds()}/{fds}")
    finally:
        await handler.close()


@pytest.mark.kernel
def test_kernel_restart_with_a_run_in_progress_leaves_no_orphan(tmp_path, record) -> None:
    """An abrupt kernel restart (SIGKILL of the kernel) mid-run: the run's group dies too."""
    from ..kernel_utils import KernelHarness, ccexec, fake_command

    harness = KernelHarness.start(tmp_path)
    try:
        harness.ok("%load_ext cc_executor_nb")
        harness.ok(ccexec(fake_command("stubborn", "2"), "-o", "r"))
        harness.wait_until("r.status == 'running' and r.stdout != ''")
        pgid = harness.value("r.state.pgid")
        assert len(group_alive(pgid)) == 3
        restarted = time.monotonic()
        harness.manager.restart_kernel(now=True)
        eventually(lambda: not group_alive(pgid), timeout=5, what="the group gone")
        record("kernel restart mid-run", "no orphan", f"group gone {time.monotonic() - restarted:.2f} s after restart")
    finally:
        harness.shutdown()
