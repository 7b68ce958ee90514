"""Output sent from the capture file: whole lines of a run's capture file go to a plain
``ccx.binary-output`` connection whose client acknowledges as spans, ``sendfile``d from the
file; every other connection gets them read and written as before. Each test hashes what
arrived against what the child wrote."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import sys

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from cc_executor_nb import methods, protocol
from cc_executor_nb.client import ACK_EVERY, connect
from cc_executor_nb.events import Completed, Output

from .conftest import TOKEN, collect, completed, fake, make_handler, output_of
from .proxy import FaultyProxy
from .test_tls import _certificate
from .util import eventually_async, scaled

pytestmark = pytest.mark.timeout(90)

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
PACE = str(64 << 20)
"""Bytes/s of the floods whose share of spans is asserted: a client slowed by a loaded machine
keeps acknowledging (behind on its window, the session sends text)."""
BINARY = Subprotocol(protocol.BINARY_OUTPUT)

# Lines of mixed scripts, and bytes that are not UTF-8 (a lone continuation byte, a
# character cut short before its newline), written in pieces cut at random bytes.
NON_ASCII_CHILD = r"""
import os, random, sys, time
FLOOD_START = 2 << 20
rng = random.Random(7)
words = ["héllo", "wörld", "日本語", "😀", "ascii", "\u00e9\u0301", "Ω"]
lines = []
for i in range(100000):
    line = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))).encode()
    if i % 997 == 0:
        line += b"\xff\x80"
    if i % 1999 == 0:
        line += "€".encode()[:2]
    lines.append(line + b"\n")
data = b"".join(lines) * 8  # past the 8 Mi characters the server reads ahead as text
at, waited = 0, False
while at < len(data):
    n = rng.randint(1, 9000)
    at += os.write(1, data[at : at + n])
    if not waited and at >= FLOOD_START:
        waited = True
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.01)
open(sys.argv[1], "wb").write(data)
"""


def _session(server, client):
    return server.sessions.get(client.session_id)


def _go_once_spans_can(session_of, gate) -> asyncio.Task[None]:
    """Touch ``gate`` once the session takes spans (its client has acknowledged): the children
    here wait for it after their first ``FLOOD_START`` bytes, as on a loaded machine a short
    run could otherwise be read ahead as text before the first ack, and no span be sent."""
    async def go() -> None:
        await eventually_async(lambda: (s := session_of()) is not None and s.takes_spans(),
                               what="a session that takes spans")
        gate.touch()
    return asyncio.ensure_future(go())


async def test_output_to_an_acknowledging_binary_client_is_sent_from_the_capture_file(server, client, tmp_path) -> None:
    """64 MiB through the client library: exact, and most of it went as spans by ``sendfile``."""
    sha, size, gate = tmp_path / "sha", 64 << 20, tmp_path / "go"
    await client.execute(argv=fake("flood", str(size), str(sha), PACE, "", str(gate)))
    go = _go_once_spans_can(lambda: _session(server, client), gate)
    events = await collect(client, timeout=60)
    await go
    session = _session(server, client)
    print(f"{session.spans_sent} spans, {session.span_bytes} bytes, {session.bytes_sendfiled} by sendfile")
    assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
    assert session.span_bytes > size // 2 and session.bytes_sendfiled > 0


async def test_what_the_socket_does_not_take_is_written_after_the_sendfile(server, tmp_path) -> None:
    """A server socket with a 4 KiB send buffer and a slow reader: ``sendfile`` sends part of
    most spans, the rest is read and written; the bytes arrive exact."""
    sha = tmp_path / "sha"
    async with await connect(server.url, TOKEN, max_events=16) as client:
        session = _session(server, client)
        sock = session.connection.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        gate = tmp_path / "go"
        await client.execute(argv=fake("flood", str(24 << 20), str(sha), "0", "", str(gate)))
        go = _go_once_spans_can(lambda: session, gate)
        digest = hashlib.sha256()
        async for event in client.events():
            if isinstance(event, Output):
                digest.update(event.data.encode())
                await asyncio.sleep(0.001)  # a reader slower than the server
            elif isinstance(event, Completed):
                break
        await go
    print(f"{session.spans_sent} spans, {session.span_bytes} bytes, {session.bytes_sendfiled} by sendfile")
    assert digest.hexdigest() == sha.read_text()
    assert 0 < session.bytes_sendfiled < session.span_bytes


async def _read_outputs(ws: ClientConnection, ack_after: int | None, *, once: bool = False) -> tuple[bytes, int]:
    """Every output payload (as UTF-8 bytes) up to ``process.completed`` and the last seq;
    an ``ack`` after every ``ack_after`` bytes (None: never; ``once``: only the first)."""
    pieces, last, received, acked = [], 0, 0, False
    while True:
        frame = await asyncio.wait_for(ws.recv(), scaled(30))
        if isinstance(frame, bytes):
            header, _, payload = frame.partition(b"\n")
            params = json.loads(header)["params"]
            pieces.append(payload.decode("utf-8", "replace").encode())
        else:
            message = json.loads(frame)
            params = message.get("params") or {}
            if message.get("method") == "process.output":
                pieces.append(params["data"].encode())
        last = params.get("seq", last)
        received += len(frame)
        if ack_after is not None and not (once and acked) and received >= ack_after:
            acked, received = True, 0
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "ack", "params": {"seq": last}}))
        if isinstance(frame, str) and '"process.completed"' in frame:
            return b"".join(pieces), last


async def test_a_client_without_the_subprotocol_gets_json_text(server, tmp_path) -> None:
    """A bare WebSocket without ``ccx.binary-output`` that acknowledges: JSON text frames, read
    from the file as before, exact; nothing sent as a span."""
    sha = tmp_path / "sha"
    async with ws_connect(server.url, additional_headers=HEADERS, proxy=None, max_size=None) as ws:
        assert ws.subprotocol is None
        assert json.loads(await ws.recv())["method"] == "connected"
        argv = fake("flood", str(32 << 20), str(sha))
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": argv}}))
        data, _ = await _read_outputs(ws, ACK_EVERY)
        (session,) = server.sessions.sessions.values()
        assert session.acking and session.spans_sent == 0
    assert hashlib.sha256(data).hexdigest() == sha.read_text()


async def test_a_tls_connection_gets_the_output_read_and_written(tmp_path) -> None:
    """``wss://``: the bytes must pass through TLS, so nothing goes as ``sendfile``; exact."""
    cert_file, key_file, _ = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    handler = make_handler()
    await handler.start("127.0.0.1", 0, ssl=context)
    try:
        trust = ssl.create_default_context(cafile=str(cert_file))
        async with await connect(handler.url, TOKEN, ssl=trust, auto_reconnect=False) as client:
            sha = tmp_path / "sha"
            await client.execute(argv=fake("flood", str(32 << 20), str(sha)))  # past what is read ahead
            events = await collect(client, timeout=60)
            session = _session(handler, client)
            assert client.acked > 0 and session.spans_sent == 0
        assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
    finally:
        await handler.close()


async def test_a_drop_with_spans_unacknowledged_is_resumed_byte_for_byte(tmp_path) -> None:
    """The connection is cut while sent spans are not acknowledged: the resume replays them
    from the capture file, and the whole output arrives exact."""
    handler = make_handler(detach_ttl=30.0, kill_grace=1.0)
    await handler.start("127.0.0.1", 0)
    proxy = await FaultyProxy(handler.port).start()
    try:
        # A reader that lags: about 10 MiB of events queued, acknowledged as they came.
        client = await connect(proxy.url(), TOKEN, max_events=64)
        gate, sha, start = tmp_path / "gate", tmp_path / "sha", tmp_path / "go"
        await client.execute(argv=fake("flood", str(32 << 20), str(sha), "0", str(gate), str(start)))
        session = _session(handler, client)
        await _go_once_spans_can(lambda: session, start)
        replay = session.replay
        await eventually_async(lambda: replay._tail.spans > 0, what="spans sent and not acknowledged")
        proxy.drop()
        unacknowledged = replay._tail.spans
        gate.touch()
        events = await collect(client, timeout=60)
        print(f"{unacknowledged} spans unacknowledged at the drop; {session.spans_sent} spans in all")
        assert client.reconnects == 1 and unacknowledged > 0
        assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
        await client.close()
    finally:
        await proxy.close()
        await handler.close()


async def test_spans_unacknowledged_when_the_run_ends_are_still_replayed_exact(server, tmp_path) -> None:
    """A client that acknowledged once, then never again: at the run's end its unacknowledged
    spans are copied out of the capture file (which closes), and a resume from its ack
    replays them byte for byte."""
    sha = tmp_path / "sha"
    async with ws_connect(server.url, additional_headers=HEADERS, subprotocols=[BINARY], proxy=None) as ws:
        connected = json.loads(await ws.recv())["params"]
        start = tmp_path / "go"
        argv = fake("flood", str(6 << 20), str(sha), "0", "", str(start))
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": argv}}))
        go = _go_once_spans_can(lambda: server.sessions.get(connected["session_id"]), start)
        data, last = await _read_outputs(ws, ACK_EVERY, once=True)
        await go
        session = server.sessions.get(connected["session_id"])
        replay = session.replay
        await eventually_async(lambda: session.execution is not None and session.execution.finished.is_set())
        assert session.spans_sent > 0 and replay.acked > 0 and replay._tail.spans == 0
        acked = replay.acked
        resume = {"session_id": connected["session_id"], "resume_token": connected["resume_token"]}
        async with ws_connect(server.url, additional_headers=HEADERS, subprotocols=[BINARY], proxy=None) as other:
            await other.recv()  # connected
            await other.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resume",
                                         "params": {**resume, "last_seq": acked}}))
            replayed, replayed_last = await _read_outputs(other, None)
    assert hashlib.sha256(data).hexdigest() == sha.read_text()
    assert replayed_last == last and len(replayed) > (1 << 20)
    assert data.endswith(replayed)


async def test_non_ascii_output_cut_at_any_byte_arrives_as_the_text_path_decodes_it(server, client, tmp_path) -> None:
    """Mixed scripts and bytes that are not UTF-8, written in pieces cut at random bytes: the
    client decodes exactly what a decode of the whole output with replacement gives."""
    written, gate = tmp_path / "written", tmp_path / "go"
    await client.execute(argv=[sys.executable, "-c", NON_ASCII_CHILD, str(written), str(gate)])
    go = _go_once_spans_can(lambda: _session(server, client), gate)
    events = await collect(client, timeout=60)
    await go
    assert completed(events).params["status"] == "completed"
    session = _session(server, client)
    assert session.spans_sent > 0
    assert output_of(events) == written.read_bytes().decode("utf-8", "replace")


async def test_an_ack_lets_the_capture_file_be_punched(server, client, tmp_path) -> None:
    """While the client acknowledges, the capture file is punched behind the acknowledged
    spans: it holds about the window, not the run's output."""
    sha, gate = tmp_path / "sha", tmp_path / "go"
    await client.execute(argv=fake("flood", str(48 << 20), str(sha), PACE, "", str(gate)))
    session = _session(server, client)
    go = _go_once_spans_can(lambda: session, gate)
    await eventually_async(lambda: session.execution is not None, what="the run")
    capture = session.execution.output._readers[0].capture
    peak = 0

    def watch(_event: object) -> None:
        nonlocal peak
        if capture.read_fd >= 0:
            peak = max(peak, capture.usage()[0])

    client.add_listener(watch)
    events = await collect(client, timeout=60)
    await go
    print(f"capture file peak {peak} bytes; {session.span_bytes} bytes as spans")
    assert hashlib.sha256(output_of(events).encode()).hexdigest() == sha.read_text()
    assert session.span_bytes > (24 << 20) and 0 < peak < (24 << 20)


# 10 MB of 80-byte lines, then a wait for the file argv[1]: the children below go on from there.
SPANS_THEN = r"""
import os, sys, time
block = b"".join(b"%07d %s\n" % (i, b"x" * 71) for i in range(13107))
for _ in range(10):
    os.write(1, block)
while not os.path.exists(sys.argv[1]):  # the session takes spans: what follows goes as spans
    time.sleep(0.01)
"""
PAUSING_CHILD = SPANS_THEN + r"""
for _ in range(10):
    os.write(1, block)
    time.sleep(0.05)
"""


async def test_a_replayed_span_is_a_notification_methods_accept(server, client, tmp_path) -> None:
    """Spans are ``process.output`` binary frames like any other: numbered without a gap."""
    seqs: list[int] = []
    client.add_listener(lambda e: seqs.append(e.seq) if e.seq is not None else None)
    gate = tmp_path / "go"
    await client.execute(argv=[sys.executable, "-c", PAUSING_CHILD, str(gate)])
    go = _go_once_spans_can(lambda: _session(server, client), gate)
    events = await collect(client, timeout=60)
    await go
    assert _session(server, client).spans_sent > 0
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e.method for e in events].count(methods.PROCESS_COMPLETED) == 1


TRUNCATING_CHILD = SPANS_THEN + r"""
for _ in range(3):  # less than the window: a client slowed by a loaded machine still takes spans
    os.write(1, block)
while not os.path.exists(sys.argv[2]):  # some of them went as spans, not all acknowledged
    time.sleep(0.01)
fd = os.open("/proc/self/fd/1", os.O_WRONLY | os.O_TRUNC)  # truncates the capture file
os.write(fd, b"after\n")
"""


async def test_a_child_that_truncates_its_capture_file_under_held_spans_still_ends(server, client, tmp_path) -> None:
    """Spans cut, then the child reopens its stdout by path with O_TRUNC: what it wrote before
    is lost (as with the text path; the run is told), and the run still ends, its session
    talking: a span whose bytes are gone is sent as what is left of it."""
    got: list[object] = []
    client.add_listener(got.append)
    gate, truncate = tmp_path / "go", tmp_path / "truncate"
    await client.execute(argv=[sys.executable, "-c", TRUNCATING_CHILD, str(gate), str(truncate)])
    go = _go_once_spans_can(lambda: _session(server, client), gate)

    async def truncate_under_held_spans() -> None:
        held = _session(server, client)
        await eventually_async(lambda: held.spans_sent > 0 and held.replay._tail.spans > 0,
                               what="spans sent and not all acknowledged")
        truncate.touch()

    held_then = asyncio.ensure_future(truncate_under_held_spans())
    events = await collect(client, timeout=60)
    await go
    await held_then
    session = _session(server, client)
    assert completed(events).params["status"] == "completed"
    assert session.spans_sent > 0
    assert any(getattr(e, "params", {}).get("kind") == "capture_reopened" for e in got)
    assert "after\n" in output_of(events)
