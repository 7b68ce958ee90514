"""``ack``: what the client acknowledges, the server no longer keeps for resume."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time

import pytest

from cc_executor_nb import methods
from cc_executor_nb.client import ACK_EVERY, connect
from cc_executor_nb.errors import OutputGap
from cc_executor_nb.events import Completed, Output

from .conftest import TOKEN, collect, completed, fake, make_handler, output_of, reply
from .servers import start_server
from .util import eventually_async

pytestmark = pytest.mark.timeout(60)


def _session(server, client):
    return server.sessions.get(client.session_id)


async def test_the_server_offers_ack(client) -> None:
    """``ack`` is in the capabilities of ``connected``."""
    assert methods.ACK in (await client.wait_connected()).capabilities


async def test_an_acknowledged_seq_is_no_longer_kept_for_resume(server, client) -> None:
    """After ``ack`` of seq k, resuming from before k is -32003 naming k + 1; from k it replays the rest."""
    await client.execute(argv=fake("ticker", "5", "0"))
    events = await collect(client)
    last = completed(events).seq
    assert await client.call(methods.ACK, {"seq": last - 2}) == {"status": "acked", "first_available_seq": last - 1}
    connected = await client.wait_connected()
    resume = {"session_id": connected.session_id, "resume_token": connected.params["resume_token"]}
    async with await connect(server.url, TOKEN, auto_reconnect=False) as other:
        with pytest.raises(OutputGap) as gap:
            await other.call(methods.RESUME, {**resume, "last_seq": last - 3})
        assert gap.value.data == {"first_available_seq": last - 1}
        assert (await other.call(methods.RESUME, {**resume, "last_seq": last - 2}))["status"] == "resumed"


async def test_a_client_that_keeps_up_makes_the_replay_write_almost_nothing(server, client, tmp_path) -> None:
    """64 MiB through a client that acknowledges as it reads: exact, and at most a quarter spilled to disk."""
    sha = tmp_path / "sha"
    size = 64 << 20
    await client.execute(argv=fake("flood", str(size), str(sha)))
    events = await collect(client, timeout=60)
    replay = _session(server, client).replay
    print(f"replay spilled {replay.spilled} of {size} bytes; {client.acked} of {client.last_seq} seq acknowledged")
    assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
    assert client.acked > 0 and replay.acked == client.acked
    assert replay.spilled <= size // 4


async def test_resume_acknowledges_what_the_new_connection_holds(server, client) -> None:
    """A resume from seq k forgets everything up to k, as an ``ack`` would."""
    await client.execute(argv=fake("ticker", "4", "0"))
    last = completed(await collect(client)).seq
    connected = await client.wait_connected()
    async with await connect(server.url, TOKEN, auto_reconnect=False) as other:
        params = {"session_id": connected.session_id, "resume_token": connected.params["resume_token"]}
        await other.call(methods.RESUME, {**params, "last_seq": last - 1})
        assert server.sessions.get(connected.session_id).replay.first_seq == last


async def test_a_client_sends_ack_after_each_mib_it_reads(server, client, tmp_path) -> None:
    """The client library acknowledges by itself: the session's replay follows the client's acks."""
    await client.execute(argv=fake("flood", str(3 * ACK_EVERY + 1000), str(tmp_path / "sha")))
    await collect(client)
    replay = _session(server, client).replay
    assert 0 < client.acked <= client.last_seq and replay.acked == client.acked


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seq": "3"}, "seq must be a non-negative integer"),
        ({"seq": -1}, "seq must be a non-negative integer"),
        ({"seq": True}, "seq must be a non-negative integer"),
        ({}, "seq must be a non-negative integer"),
        ([1], "params must be an object"),
        ({"seq": 10**6}, "seq is ahead of the session"),
    ],
)
async def test_a_bad_ack_is_invalid_params_naming_the_field(raw, params, message) -> None:
    """Malformed or ahead: -32602 with the field named; the connection stays usable."""
    answer = await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ack", "params": params}))
    assert answer["error"]["code"] == -32602 and message in answer["error"]["message"]
    assert answer["error"]["data"]["field"] == ("params" if isinstance(params, list) else "seq")
    assert (await reply(raw, '{"jsonrpc":"2.0","id":8,"method":"pong"}'))["id"] == 8


async def test_a_bad_ack_notification_gets_no_reply(raw) -> None:
    """An ``ack`` without an id is never answered, not even with an error."""
    await raw.send('{"jsonrpc":"2.0","method":"ack","params":{"seq":"x"}}')
    assert (await reply(raw, '{"jsonrpc":"2.0","id":9,"method":"pong"}'))["id"] == 9


async def test_an_acknowledging_client_is_sent_at_most_half_the_tail_ahead(server, client, tmp_path) -> None:
    """Once the client acknowledges, what it has not acknowledged stays under half the memory tail."""
    replay = _session(server, client).replay
    peak = 0

    def watch(_event) -> None:
        nonlocal peak
        peak = max(peak, replay.memory_size)

    client.add_listener(watch)
    sha = tmp_path / "sha"
    await client.execute(argv=fake("flood", str(64 << 20), str(sha)))
    events = await collect(client, timeout=60)
    print(f"peak unacknowledged {peak} bytes; window {replay.memory_limit // 2}")
    assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
    assert replay.spilled == 0 and 0 < peak <= replay.memory_limit // 2 + (1 << 20)


async def test_a_stalled_acknowledging_client_leaves_the_backlog_in_the_capture_file(server, tmp_path) -> None:
    """A client that acknowledged, then stops reading: the server holds a window, not the run's output."""
    sha = tmp_path / "sha"
    async with await connect(server.url, TOKEN, max_events=32) as client:  # ~5 MiB: it acknowledges first
        await client.execute(argv=fake("flood", str(48 << 20), str(sha)))
        replay = _session(server, client).replay
        await eventually_async(lambda: client.acked > 0 and sha.exists(), timeout=30, what="an ack, the child done")
        await asyncio.sleep(0.5)  # the server had every chance to send (or spill) more
        assert replay.spilled == 0 and replay.memory_size <= replay.memory_limit // 2 + (1 << 20)
        events = await collect(client, timeout=60)
    assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()


async def test_a_client_that_never_acknowledges_is_never_waited_for(raw, server, tmp_path) -> None:
    """A bare WebSocket that sends no ``ack`` gets a 40 MiB run whole; the replay goes to disk instead."""
    sha = tmp_path / "sha"
    await raw.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                               "params": {"argv": fake("flood", str(40 << 20), str(sha))}}))
    pieces = []
    while True:
        message = json.loads(await asyncio.wait_for(raw.recv(), 30))
        if message.get("method") == "process.output":
            pieces.append(message["params"]["data"])
        elif message.get("method") == "process.completed":
            break
    assert hashlib.sha256("".join(pieces).encode()).hexdigest() == sha.read_text()
    (session,) = server.sessions.sessions.values()
    assert session.replay.spilled > 0 and not session.acking


async def test_a_tail_smaller_than_the_window_spills_instead_of_waiting(tmp_path) -> None:
    """A 16 KiB tail (a 64 KiB replay limit) of 4 KiB pieces, a client acknowledging every MiB: the run ends whole."""
    handler = make_handler(replay_limit=64 * 1024, chunk_limit=4096)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as client:
            sha = tmp_path / "sha"
            await client.execute(argv=fake("flood", str(4 << 20), str(sha)))
            events = await collect(client, timeout=30)
            assert client.acked > 0
        assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
    finally:
        await handler.close()


def test_requests_are_answered_while_the_window_is_full(tmp_path) -> None:
    """A slow reader that acknowledges, asking ``status`` all along: every answer comes, the run ends whole.

    The server (its own process, so it can run ahead) waits for acks with the window full;
    a request must still be answered and the acks behind it read, or both sides wait forever.
    """
    server = start_server("--token", TOKEN)
    try:
        async def run() -> tuple[str, int, float]:
            sha, answers, slowest = tmp_path / "sha", 0, 0.0
            async with await connect(server.url, TOKEN, max_events=16) as client:
                await client.execute(argv=fake("flood", str(48 << 20), str(sha)))

                async def ask() -> None:
                    nonlocal answers, slowest
                    while True:
                        started = time.monotonic()
                        await asyncio.wait_for(client.call(methods.STATUS), 20)
                        answers, slowest = answers + 1, max(slowest, time.monotonic() - started)
                        await asyncio.sleep(0.05)

                asker = asyncio.ensure_future(ask())
                digest = hashlib.sha256()
                async for event in client.events():
                    if isinstance(event, Output):
                        digest.update(event.data.encode())
                        await asyncio.sleep(0.002)  # a reader slower than the server
                    elif isinstance(event, Completed):
                        break
                asker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asker
                assert client.acked > 0
            assert digest.hexdigest() == sha.read_text()
            return digest.hexdigest(), answers, slowest

        _sha, answers, slowest = asyncio.run(asyncio.wait_for(run(), 120))
        print(f"{answers} status answers, slowest {slowest * 1e3:.0f} ms")
        assert answers >= 3
    finally:
        server.finish(signal.SIGTERM)
