"""The fault matrix: each row forces one fault and asserts the outcome, with deadlines."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from cc_executor_nb import errors
from cc_executor_nb.client import connect
from cc_executor_nb.events import Completed, Output

from ..conftest import TOKEN, collect, completed, fake, group_alive, make_handler, output_of, reply
from ..proxy import FaultyProxy
from ..servers import SERVER, PeakDisk, PeakRss, start_server
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
    """CANCEL kills the group's grandchildren and the one that escaped with setsid, which
    ``process.completed`` still names in ``escaped_pids`` (it said [] once the kill came first)."""
    server.processes.kill_grace = 1.0
    pgid = (await client.execute(argv=fake("escape", "2")))["pgid"]
    first = await anext(e async for e in client.events() if isinstance(e, Output))
    pids = [int(p) for p in first.data.split()]
    # The grandchild calls setsid right after fork; give it the moment it needs.
    await eventually_async(lambda: os.getpgid(pids[0]) != pgid, timeout=5, what="the escapee's setsid")
    await client.cancel()
    done = completed(await collect(client))
    assert done.params["status"] == "cancelled" and done.params["escaped_pids"] == [pids[0]]
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


# -- Issue 13: the defects a hostile test found, one row each ---------------------------------


def _fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def _frame(id_: int, method: str, params: dict[str, object]) -> str:
    # ensure_ascii writes a lone surrogate as a \\ud800 escape: valid JSON, invalid Unicode.
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})


async def test_lone_surrogates_are_invalid_params_and_leak_nothing(server, raw, record) -> None:
    """Defect 1: 520 requests with "\\ud800" in argv, env, cwd, command or a resume token are
    -32602 and leak no descriptor; spawning still works afterwards."""
    bad = [
        ("execute", {"argv": ["echo", "\ud800"], "stdin": "pipe"}),
        ("execute", {"argv": ["echo"], "env": {"\ud800": "v"}}),
        ("execute", {"argv": ["echo"], "env": {"NAME": "\udfff"}}),
        ("execute", {"argv": ["echo"], "cwd": "/tmp/\ud800"}),
        ("execute", {"command": "echo \ud800"}),
        ("resume", {"session_id": "0" * 16, "resume_token": "\ud800", "last_seq": 0}),
    ]
    before = _fds()
    codes = set()
    for i in range(520):
        method, params = bad[i % len(bad)]
        codes.add((await reply(raw, _frame(i, method, params)))["error"]["code"])  # type: ignore[index]
    await eventually_async(lambda: _fds() <= before, what="descriptors back to their count")
    after = _fds()
    good = await reply(raw, _frame(999, "execute", {"argv": ["true"]}))
    assert codes == {-32602} and good["result"]["status"] == "started"  # type: ignore[index]
    record("lone surrogate x520 (defect 1)", "-32602, no fd leak", f"codes {sorted(codes)}, fds {after}/{before}")


async def test_a_drop_between_execute_and_its_reply_still_starts_the_run(record, monkeypatch) -> None:
    """Defect 2: the connection drops while the execute reply is sent: the run still starts,
    runs and completes, and a resume replays process.started, its output and process.completed."""
    from cc_executor_nb.server import handler as handler_module

    handler = make_handler(detach_ttl=30.0)
    await handler.start("127.0.0.1", 0)
    send_reply = handler_module._Link.reply

    async def drop_first(link, message) -> None:  # the connection dies right at the reply
        monkeypatch.setattr(handler_module._Link, "reply", send_reply)
        link.ws.transport.abort()
        await link.ws.wait_closed()
        await send_reply(link, message)  # raises ConnectionClosed, as a real drop does

    monkeypatch.setattr(handler_module._Link, "reply", drop_first)
    try:
        first = await connect(handler.url, TOKEN, auto_reconnect=False)
        hello = await first.wait_connected()
        with pytest.raises(errors.ConnectionLost):
            await first.execute(argv=["echo", "started anyway"])
        await first.close()
        second = await connect(handler.url, TOKEN)
        resume = {"session_id": hello.session_id, "resume_token": hello.params["resume_token"], "last_seq": 0}
        await second.call("resume", resume)
        events = await collect(second, timeout=scaled(15))
        methods_seen = [e.method for e in events if e.seq is not None]
        assert methods_seen[0] == "process.started" and methods_seen[-1] == "process.completed"
        assert output_of(events) == "started anyway\n" and completed(events).exit_code == 0
        record("drop between execute and reply (defect 2)", "run starts and completes; resume replays it",
               f"replayed {len(methods_seen)} notifications, exit 0")
        await second.close()
    finally:
        await handler.close()


SURVIVOR = 'setsid -f env -i sh -c "sleep 40"'


async def test_a_survivor_holding_stdout_never_hangs_the_run(server, record) -> None:
    """Defect 3: a descendant that leaves the group with a cleared environment and holds stdout:
    the run completes and names it; on CANCEL it completes and the survivor is killed."""
    server.processes.kill_grace = 1.0
    async with await connect(server.url, TOKEN) as client:
        started = time.monotonic()
        await client.execute(argv=["sh", "-c", f"{SURVIVOR}; echo done"])
        done = completed(await collect(client, timeout=scaled(15)))
        ended_in = time.monotonic() - started
        survivor = done.params["escaped_pids"]  # sh and its sleep both hold stdout
        assert done.params["status"] == "completed" and survivor and all(_alive(pid) for pid in survivor)
        for pid in survivor:
            psutil.Process(pid).kill()
    async with await connect(server.url, TOKEN) as client:
        started_run = await client.execute(argv=["sh", "-c", f"{SURVIVOR}; echo up; sleep 60"])
        await anext(e async for e in client.events() if isinstance(e, Output))
        # setsid -f returns before its child has left the group: a cancel sent sooner
        # kills it with the group, and there is no survivor to test.
        await eventually_async(lambda: _left_the_group(started_run["pgid"]), what="the survivor outside the group")
        cancelled_at = time.monotonic()
        await client.cancel()
        done = completed(await collect(client, timeout=scaled(15)))
        cancel_took = time.monotonic() - cancelled_at
        killed = done.params["escaped_pids"]
        assert done.params["status"] == "cancelled" and killed
        await eventually_async(lambda: not any(_alive(pid) for pid in killed), what="the survivor killed")
    record("setsid env -i holds stdout (defect 3)", "completes (named); cancel ends it, survivor killed",
           f"completed in {ended_in:.1f} s naming {survivor}; cancel done in {cancel_took:.1f} s")


def _left_the_group(pgid: int) -> bool:
    """Whether a ``sleep 40`` of SURVIVOR runs outside process group ``pgid``."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.info["cmdline"] == ["sleep", "40"] and os.getpgid(proc.pid) != pgid:
                return True
        except (psutil.Error, OSError):
            continue
    return False


def _usage_error(args: list[str], env: dict[str, str] | None = None) -> str:
    """Run the standalone server with ``args``; expect exit 2 and a one-line error; return it."""
    proc = subprocess.run(
        [*SERVER, "--port", "0", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, check=False,
    )
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


async def test_zero_negative_and_nan_intervals_are_refused_everywhere(client, record) -> None:
    """Defect 4: an interval of 0, a negative one or NaN is a one-line error at every entry
    point (flags, environment, protocol fields, %config, the library), never a spinning loop."""
    from traitlets import TraitError

    from cc_executor_nb.kernel.config import CCExec
    from cc_executor_nb.server.handler import EnhancedWebSocketHandler
    from cc_executor_nb.server.heartbeat import BeatPolicy
    from cc_executor_nb.server.session import SessionManager
    from cc_executor_nb.server.streams import StreamHandler
    from cc_executor_nb.server.supervisor import ProcessManager

    flags = [["--inactivity-threshold", "0"], ["--heartbeat-interval", "0"], ["--heartbeat-interval", "-5"],
             ["--min-heartbeat-interval", "0"], ["--heartbeat-interval", "nan"], ["--handshake-timeout", "0"]]
    refused = [await asyncio.to_thread(_usage_error, args) for args in flags]
    for value in ("-5", "nan", "0", "abc"):
        refused.append(await asyncio.to_thread(_usage_error, [], {"WEBSOCKET_HEARTBEAT_INTERVAL": value}))
    for params in ({"heartbeat_interval": 0}, {"heartbeat_interval": -5}, {"inactivity_threshold": 0.01}):
        with pytest.raises(errors.InvalidParams):
            await client.call("execute", {"argv": ["true"], **params})
    settings = CCExec()
    for name, value in (("min_heartbeat_interval", 0), ("heartbeat_interval", float("nan")),
                        ("inactivity_threshold", -1.0), ("heartbeat_interval", 0.01)):
        with pytest.raises(TraitError, match=name):
            setattr(settings, name, value)
    with pytest.raises(ValueError):
        BeatPolicy("adaptive", 0.0)
    with pytest.raises(ValueError):
        EnhancedWebSocketHandler(SessionManager(), ProcessManager(), StreamHandler(), 0.0)
    record("interval 0 / negative / NaN (defect 4)", "one-line error at every entry point",
           f"{len(refused)} flag/env cases exit 2; protocol -32602; %config TraitError")


async def test_the_allow_list_compares_resolved_paths_and_guards_the_environment(tmp_path, record) -> None:
    """Defect 5: with an allow-list, a file named like an allowed program, a PATH or LD_PRELOAD
    override and NODE_OPTIONS are refused; the real program runs."""
    impostor = tmp_path / "echo"
    impostor.write_text("#!/bin/sh\necho pwned\n")
    impostor.chmod(0o755)
    handler = make_handler(allowed_commands=("echo",))
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as client:
            refusals = 0
            for params in ({"argv": [str(impostor), "x"]}, {"argv": ["./echo", "x"], "cwd": str(tmp_path)},
                           {"argv": ["echo", "x"], "env": {"PATH": str(tmp_path)}},
                           {"argv": ["echo", "x"], "env": {"LD_PRELOAD": str(impostor)}},
                           {"argv": ["echo", "x"], "env": {"NODE_OPTIONS": "--require /tmp/x.js"}}):
                with pytest.raises(errors.CommandNotAllowed):
                    await client.call("execute", params)
                refusals += 1
            await client.execute(argv=["echo", "allowed"])
            assert output_of(await collect(client)) == "allowed\n"
        record("allow-list bypasses (defect 5)", "refused (-32001); the real echo runs",
               f"{refusals} bypasses refused, echo ran")
    finally:
        await handler.close()


async def test_the_token_is_never_logged_whatever_its_form(record) -> None:
    """Defect 6: a client sending the token as Basic, bare, Token or ?token= gets 401, and the
    DEBUG log never shows it."""
    secret = "tok-" + "9f" * 16
    server = await asyncio.to_thread(start_server, "--log-level", "DEBUG", env={"CC_EXECUTOR_TOKEN": secret})
    try:
        statuses = []
        for headers, path in (({"Authorization": f"Basic {secret}"}, "/ws"), ({"Authorization": secret}, "/ws"),
                              ({"Authorization": f"Token {secret}"}, "/ws"), ({}, f"/ws?token={secret}"),
                              ({"X-Api-Token": secret}, "/ws")):
            url = server.url.replace("/ws", path)
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(url, additional_headers=headers, proxy=None):
                    pass
            statuses.append(info.value.response.status_code)
        async with await connect(server.url, secret) as good:
            await good.wait_connected()
    finally:
        await asyncio.to_thread(server.finish, signal.SIGTERM)
    log = server.output()
    assert statuses == [401] * 5 and "Authorization" in log  # the headers were logged, redacted
    assert secret not in log
    record("token in a wrong form at DEBUG (defect 6)", "401, never in the log",
           f"{len(statuses)} x 401; token absent from {len(log.splitlines())} log lines")


DUPLICATES = ("Host: 127.0.0.1\r\nHost: evil.example", "Origin: http://a\r\nOrigin: http://b",
              f"Authorization: Bearer {TOKEN}\r\nAuthorization: Bearer x")


async def test_duplicate_headers_are_400_without_a_traceback(server, caplog, record) -> None:
    """Defect 7: two Host, Origin or Authorization headers get 400, with no traceback logged."""
    caplog.set_level(logging.DEBUG)
    statuses = []
    for pair in DUPLICATES:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        headers = pair if pair.startswith("Host") else f"Host: 127.0.0.1\r\n{pair}"
        writer.write((f"GET /ws HTTP/1.1\r\n{headers}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        statuses.append(int((await asyncio.wait_for(reader.readline(), 10)).split()[1]))
        writer.close()
    assert statuses == [400, 400, 400]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    record("duplicate Host/Origin/Authorization (defect 7)", "400, no traceback", f"{statuses}, 0 tracebacks")


LOW_FD_LIMIT = textwrap.dedent("""
    import resource, runpy, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
    sys.argv = ["cc_executor_nb.server", *sys.argv[1:]]
    runpy.run_module("cc_executor_nb.server", run_name="__main__")
""")


async def test_at_the_descriptor_limit_spawn_fails_cleanly_and_leaks_nothing(record) -> None:
    """Defect 8: a server at its descriptor limit answers -32004 naming argv[0] (EMFILE), leaks
    no descriptor over repeated failures, and spawns again once descriptors are free."""
    server = await asyncio.to_thread(
        start_server, "--token", TOKEN, "--kill-grace", "1", launcher=[sys.executable, "-c", LOW_FD_LIMIT]
    )
    proc = psutil.Process(server.proc.pid)
    clients = []
    try:
        for _ in range(40):
            clients.append(await connect(server.url, TOKEN, auto_reconnect=False))
        await clients[0].execute(argv=["true"])  # the watchdog and inotify are up first
        await collect(clients[0])
        failure = None
        for client in clients[1:]:
            try:
                await client.execute(argv=["sleep", "60"])
            except errors.SpawnFailed as exc:
                failure = (client, exc)
                break
        assert failure is not None, "the descriptor limit was never reached"
        client, exc = failure
        assert "'sleep'" in str(exc) and exc.data["errno"] == errno.EMFILE
        before = proc.num_fds()
        for _ in range(20):
            with pytest.raises(errors.SpawnFailed):
                await client.execute(argv=["sleep", "60"])
        leaked = proc.num_fds() - before
        running = [c for c in clients[1:] if c is not client and (await c.status())["state"] == "running"]
        for other in running[:4]:  # a spawn needs a few descriptors at once
            await other.cancel()
            await collect(other)
        await eventually_async(lambda: proc.num_fds() < before - 4, what="descriptors freed by the cancels")
        await client.execute(argv=["echo", "again"])
        assert output_of(await collect(client)) == "again\n" and leaked == 0
        record("spawn at the fd limit (defect 8)", "-32004 naming argv[0], no leak",
               f"{exc} (errno {exc.data['errno']}); +{leaked} fds after 20 more failures")
    finally:
        for client in clients:
            await client.close()
        await asyncio.to_thread(server.finish)


async def test_a_control_in_the_batch_of_an_execute_is_told_after_process_started(raw, record) -> None:
    """Defect 9: [execute, control PAUSE] in one batch: one response array, then process.started,
    then process.paused, in seq order."""
    batch = json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": ["sleep", "30"]}},
        {"jsonrpc": "2.0", "id": 2, "method": "control", "params": {"type": "PAUSE"}},
    ])
    await raw.send(batch)
    order = []
    while len(order) < 3:
        message = json.loads(await asyncio.wait_for(raw.recv(), 10))
        if isinstance(message, list):
            order.append("response")
        elif message.get("method", "").startswith("process."):
            order.append(f"{message['method']} {message['params']['seq']}")
    await raw.send(_frame(3, "control", {"type": "CANCEL"}))
    assert order == ["response", "process.started 1", "process.paused 2"]
    record("control batched with execute (defect 9)", "started before paused", ", ".join(order))


async def test_server_flags_are_checked_and_the_token_kept_out_of_sight(tmp_path, record) -> None:
    """Defect 10: bad flags are one-line usage errors; a padded token still matches; --token
    warns that ps shows it; --token-file works; the caps have defaults."""
    from cc_executor_nb.server.config import ServerSettings

    cases = [["--port", "70000"], ["--log-level", "LOUD"], ["--max-message-size", "0"],
             ["--max-sessions", "-1"], ["--handshake-timeout", "0"], ["--disk-limit", "1K"]]
    errors_seen = [await asyncio.to_thread(_usage_error, args) for args in cases]
    errors_seen.append(await asyncio.to_thread(_usage_error, [], {"WEBSOCKET_HEARTBEAT_INTERVAL": "abc"}))
    padded = await asyncio.to_thread(start_server, env={"CC_EXECUTOR_TOKEN": "  padded-token \n"})
    visible = await asyncio.to_thread(start_server, "--token", "visible-token")
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    filed = await asyncio.to_thread(start_server, "--token-file", str(token_file))
    try:
        for server, token in ((padded, "padded-token"), (visible, "visible-token"), (filed, "from-a-file")):
            async with await connect(server.url, token) as client:
                await client.wait_connected()
    finally:
        for server in (padded, visible, filed):
            await asyncio.to_thread(server.finish, signal.SIGTERM)
    assert "visible in ps" in visible.output() or "shows the token" in visible.output()
    defaults = ServerSettings()
    assert (defaults.max_sessions, defaults.max_processes, defaults.max_connections) == (128, 128, 512)
    record("server flags and token (defect 10)", "usage errors; token padded/env/file ok; --token warns",
           f"{len(errors_seen)} usage errors; 3 token sources; caps 128/128/512")


async def test_a_stalled_client_keeps_the_server_under_its_disk_limit(tmp_path, record) -> None:
    """Item 4: a client that stops reading while its run floods, with --disk-limit 100M: the
    server's temporary files stay under 100 MiB (the run is held, told with a notice), and once
    the client reads again every byte arrives."""
    limit = 100 << 20
    server = await asyncio.to_thread(start_server, "--token", TOKEN, "--disk-limit", "100M")
    size = 600 << 20
    try:
        with PeakDisk(server.proc.pid) as disk:
            async with await connect(server.url, TOKEN, max_events=8) as client:
                await client.execute(argv=fake("flood", str(size), str(tmp_path / "sha")))
                await asyncio.sleep(scaled(4))  # stalled: reads nothing
                stalled_peak = disk.peak
                digest, received, notices = hashlib.sha256(), 0, []
                async for event in client.events():
                    if isinstance(event, Output):
                        digest.update(event.data.encode())
                        received += len(event.data)
                    elif event.method == "process.notice":
                        notices.append(event.params["action"])
                    elif isinstance(event, Completed):
                        break
        assert received == size and digest.hexdigest() == (tmp_path / "sha").read_text()
        assert "held" in notices and disk.peak < limit
        record("stalled client, disk limit 100 MiB (item 4)", "temp files < 100 MiB, every byte",
               f"peak {disk.peak / 2**20:.1f} MiB ({stalled_peak / 2**20:.1f} while stalled); "
               f"notices {sorted(set(notices))}; sha256 equal")
    finally:
        await asyncio.to_thread(server.finish)


async def test_a_writer_that_drops_on_a_full_pipe_loses_nothing_while_the_loop_is_held(client, record) -> None:
    """Item 1: a writer that drops what a full pipe refuses (like the claude CLI 2.1.197) writes
    6 MB while the server's loop is held 1.5 s: with file capture every byte arrives."""
    await client.execute(argv=fake("hasty", "6000000", "0.3"))
    time.sleep(scaled(1.5))  # the loop is held, as a cell holding the GIL holds the in-kernel server
    events = await collect(client, timeout=scaled(60))
    received = len(output_of(events).encode())
    assert received == 6_000_004 and output_of(events).endswith("END\n")
    record("loop held while a dropping writer exits (item 1)", "every byte (file capture)",
           f"{received:,} of 6,000,004 bytes")
