"""Resume: a run outlives a dropped connection and the client carries on without loss."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from cc_executor_nb.client import connect
from cc_executor_nb.events import Completed

from .conftest import TOKEN, collect, completed, fake, group_alive, make_handler, output_of
from .proxy import FaultyProxy
from .util import eventually_async, scaled


@pytest.fixture
async def resumable():
    """A handler with a short detach TTL, behind a proxy that can cut connections."""
    handler = make_handler(detach_ttl=30.0, kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    yield handler, proxy
    await proxy.close()
    await handler.close()


async def test_abrupt_drop_is_resumed_without_gap_or_duplicate(resumable, tmp_path) -> None:
    """A cut connection mid-stream: the client reconnects, output is exact, seq has no gap."""
    _handler, proxy = resumable
    client = await connect(proxy.url(), TOKEN, max_events=8)  # a reader that lags behind
    seqs, methods = [], []
    client.add_listener(lambda e: (seqs.append(e.seq) if e.seq is not None else None, methods.append(e.method)))
    # The run cannot end before the drop (it waits for the gate file), so the client cannot
    # have the whole run in its buffers and must resume to see the rest.
    gate = tmp_path / "gate"
    await client.execute(argv=fake("flood", str(8 << 20), str(tmp_path / "sha"), "0", str(gate)))
    await eventually_async(lambda: len(seqs) > 5, what="six notifications")
    proxy.drop()
    gate.touch()
    events = await collect(client, timeout=60)
    assert client.reconnects == 1
    assert "client.reconnecting" in methods and "client.reconnected" in methods
    assert seqs == list(range(1, len(seqs) + 1))
    assert hashlib.sha256(output_of(events).encode()).hexdigest() == (tmp_path / "sha").read_text()
    assert completed(events).params["status"] == "completed"
    await client.close()


async def test_output_made_while_an_acking_client_is_away_is_never_dropped(tmp_path) -> None:
    """A client that acknowledges is away while its run writes 12 MiB, past a 4 MiB replay
    limit: the output waits in its capture file and the resume gets all of it. It was read
    into the replay log, whose oldest part was dropped: a gap (client.output_gap)."""
    handler = make_handler(detach_ttl=30.0, kill_grace=1.0, replay_limit=4 << 20)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    try:
        client = await connect(proxy.url(), TOKEN)
        got = []
        client.add_listener(got.append)
        gate, sha = tmp_path / "gate", tmp_path / "sha"
        await client.execute(argv=fake("flood", str(12 << 20), str(sha), str(6 << 20), str(gate)))
        await eventually_async(lambda: len(output_of(got)) > (3 << 19), what="1.5 MiB (an ack sent)")
        proxy.refusing = True
        proxy.drop()
        await eventually_async(sha.exists, timeout=30, what="the child to write everything")
        await asyncio.sleep(0.5)  # the server reads on while nobody is there
        proxy.refusing = False
        gate.touch()
        events = await collect(client, timeout=60)
        assert "client.output_gap" not in [e.method for e in got]
        assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
        assert completed(events).params["status"] == "completed"
        await client.close()
    finally:
        await proxy.close()
        await handler.close()


async def test_run_keeps_going_while_detached(resumable) -> None:
    """Output produced while no client is connected is replayed on resume."""
    handler, proxy = resumable
    client = await connect(proxy.url(), TOKEN, auto_reconnect=False)
    connected = await client.wait_connected()
    await client.execute(argv=fake("ticker", "10", "0.05"))
    await eventually_async(lambda: client.last_seq >= 2, what="two notifications")
    seen = client.last_seq
    proxy.drop()
    session = handler.sessions.get(connected.session_id)
    await eventually_async(session.execution.finished.is_set, what="the run to finish while detached")
    assert not session.attached
    async with ws_connect(handler.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resume", "params": {
            "session_id": connected.session_id, "resume_token": connected.params["resume_token"], "last_seq": seen}}))
        reply = json.loads(await ws.recv())
        assert reply["result"]["session_id"] == connected.session_id
        replayed = []
        while not replayed or replayed[-1]["method"] != "process.completed":
            message = json.loads(await asyncio.wait_for(ws.recv(), scaled(10)))
            if "seq" in message.get("params", {}):
                replayed.append(message)
        assert [m["params"]["seq"] for m in replayed] == list(range(seen + 1, seen + 1 + len(replayed)))
    await client.close()


async def test_detach_ttl_zero_kills_on_disconnect() -> None:
    """``detach_ttl=0`` restores kill-on-disconnect for abrupt drops too."""
    handler = make_handler(detach_ttl=0, kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    try:
        client = await connect(proxy.url(), TOKEN)
        pgid = (await client.execute(argv=["sleep", "30"]))["pgid"]
        proxy.drop()
        await eventually_async(lambda: not group_alive(pgid), timeout=3, what="the group gone")
        await eventually_async(lambda: client.closed, timeout=5, what="the client closed")
    finally:
        await proxy.close()
        await handler.close()


async def test_a_resume_of_a_session_the_server_forgot_says_what_happened() -> None:
    """The session ended while the client was away: the client gives up naming what happened
    to the session and its process (it said "resume refused: Unknown session or bad resume token")."""
    handler = make_handler(detach_ttl=0, kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    try:
        client = await connect(proxy.url(), TOKEN)
        await client.execute(argv=["sleep", "30"])
        proxy.drop()
        await eventually_async(lambda: client.closed, timeout=5, what="the client closed")
        assert client.close_reason is not None
        assert client.close_reason.startswith("the server no longer has this session: it restarted, or the connection")
    finally:
        await proxy.close()
        await handler.close()


async def test_clean_close_still_ends_the_run_at_once(resumable) -> None:
    """A client that closes cleanly ends its run at once, whatever the TTL."""
    handler, proxy = resumable
    client = await connect(proxy.url(), TOKEN)
    pgid = (await client.execute(argv=["sleep", "30"]))["pgid"]
    await client.close()
    await eventually_async(lambda: not group_alive(pgid), timeout=3, what="the group gone")
    await eventually_async(lambda: not handler.sessions.sessions, what="the session dropped")


async def _raw_session(handler) -> tuple[object, dict]:
    """A bare websockets connection to ``handler`` and its ``connected`` params."""
    ws = await ws_connect(handler.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None)
    connected = json.loads(await ws.recv())["params"]
    return ws, connected


async def test_a_close_the_client_reports_as_a_failure_keeps_the_run(resumable) -> None:
    """A close frame with 1011 (what websockets sends when its keepalive ping timed out, e.g.
    while the server was stopped) is a drop, not an end: the run goes on and is resumed
    whole. Any close frame counted as clean, and the run was killed."""
    handler, _proxy = resumable
    ws, connected = await _raw_session(handler)
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                              "params": {"argv": fake("ticker", "10", "0.05")}}))
    pgid = json.loads(await ws.recv())["result"]["pgid"]
    await ws.close(1011, "keepalive ping timeout")
    session = handler.sessions.get(connected["session_id"])
    await eventually_async(lambda: session.detached_at is not None, what="the session detached")
    assert group_alive(pgid)
    async with ws_connect(handler.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None) as again:
        await again.recv()
        await again.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resume", "params": {
            "session_id": connected["session_id"], "resume_token": connected["resume_token"], "last_seq": 0}}))
        assert json.loads(await again.recv())["result"]["status"] == "resumed"
        output, status = "", None
        while status is None:
            message = json.loads(await asyncio.wait_for(again.recv(), scaled(10)))
            if message.get("method") == "process.output":
                output += message["params"]["data"]
            elif message.get("method") == "process.completed":
                status = message["params"]["status"]
    assert status == "completed" and output == "".join(f"tick {i}\n" for i in range(10))


async def test_going_away_ends_the_run_like_a_normal_close(resumable) -> None:
    """1001 (going away) is a deliberate close too: the run ends at once."""
    handler, _proxy = resumable
    ws, _connected = await _raw_session(handler)
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": ["sleep", "30"]}}))
    pgid = json.loads(await ws.recv())["result"]["pgid"]
    await ws.close(1001, "bye")
    await eventually_async(lambda: not group_alive(pgid), timeout=3, what="the group gone")


async def test_missed_heartbeats_make_the_client_reconnect(resumable) -> None:
    """A frozen path (no bytes, no close) is detected after three heartbeats and resumed."""
    _handler, proxy = resumable
    client = await connect(proxy.url(), TOKEN)
    noticed: list[float] = []
    frames: list[float] = []  # when each frame from the server arrived (heartbeats too)

    def on_event(event) -> None:
        if event.method == "client.reconnecting":
            noticed.append(time.monotonic())
        elif not event.method.startswith("client.") and not noticed:
            frames.append(time.monotonic())

    client.add_listener(on_event)
    await client.execute(argv=fake("ticker", "30", "0.1"), heartbeat_interval=0.2)
    await eventually_async(lambda: client.last_seq >= 3, what="three notifications")
    frozen_at = time.monotonic()
    proxy.freeze()
    await eventually_async(lambda: noticed, timeout=5, what="client.reconnecting")
    # Three 0.2 s intervals after the last frame (which may have come just before the
    # freeze, or just after it, already on its way), checked every 0.1 s.
    assert noticed[0] - frames[-1] >= 0.6 and noticed[0] - frozen_at < scaled(1.5)
    proxy.thaw()
    events = await collect(client, timeout=30)
    assert client.reconnects == 1
    assert output_of(events).count("tick") >= 1
    await client.close()


async def test_resume_takes_the_session_from_a_stale_connection(resumable) -> None:
    """Resuming while the server still holds the old connection moves the session over."""
    handler, _proxy = resumable
    first = await connect(handler.url, TOKEN, auto_reconnect=False)
    connected = await first.wait_connected()
    await first.execute(argv=fake("ticker", "20", "0.05"))
    second = await connect(handler.url, TOKEN)
    result = await second.call("resume", {"session_id": connected.session_id,
                                          "resume_token": connected.params["resume_token"], "last_seq": 0})
    assert result["session_id"] == connected.session_id
    events = []
    async for event in second.events():
        events.append(event)
        if isinstance(event, Completed):
            break
    assert output_of(events) == "".join(f"tick {i}\n" for i in range(20))
    await eventually_async(lambda: first.closed, what="the stale connection closed")
    assert len(handler.sessions.sessions) == 1
    await second.close()


async def test_resume_with_last_seq_ahead_is_invalid(client) -> None:
    """A last_seq beyond what the session sent is -32602 naming last_seq."""
    from cc_executor_nb.errors import InvalidParams

    connected = await client.wait_connected()
    with pytest.raises(InvalidParams) as info:
        await client.call("resume", {"session_id": connected.session_id,
                                     "resume_token": connected.params["resume_token"], "last_seq": 99})
    assert info.value.data == {"field": "last_seq"}


class _DyingConnection:
    """A fresh connection that dies before the server answers the resume sent on it."""

    async def send(self, frame: str) -> None:
        pass

    async def recv(self) -> str:
        raise ConnectionClosed(None, None)


async def test_a_resume_whose_connection_dies_leaves_no_request_behind(resumable, caplog) -> None:
    """A resume lost with its connection (a frozen server's next dial) is forgotten: it stayed
    among the pending requests, failed at the next close with nobody waiting, and asyncio wrote
    "Future exception was never retrieved ... ConnectionLost" into the user's cell."""
    handler, _proxy = resumable
    client = await connect(handler.url, TOKEN)
    try:
        with pytest.raises(ConnectionClosed):
            await client._call_on(_DyingConnection(), "resume", {})  # type: ignore[arg-type]
    finally:
        await client.close()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert "never retrieved" not in caplog.text


class _ClosedUnderTheResume:
    """A fresh connection on which the client is closed (the run ends) while the resume waits."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def send(self, frame: str) -> None:
        pass

    async def recv(self) -> str:
        await self.client.close()  # fails every pending request, the resume's too
        raise ConnectionClosed(None, None)


async def test_a_resume_failed_by_a_close_while_it_waits_leaves_no_exception_unretrieved(resumable, caplog) -> None:
    """A resume whose request the client's close failed while it waited on its connection: its
    exception was never retrieved (the connection's own ConnectionClosed went up instead), and
    asyncio wrote "Future exception was never retrieved ... ConnectionLost" into the user's cell."""
    handler, _proxy = resumable
    client = await connect(handler.url, TOKEN)
    with pytest.raises(ConnectionClosed):
        await client._call_on(_ClosedUnderTheResume(client), "resume", {})  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert "never retrieved" not in caplog.text
