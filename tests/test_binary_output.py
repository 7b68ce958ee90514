"""Binary output frames: ``process.output`` as binary WebSocket frames for a client that
offers the ``ccx.binary-output`` subprotocol; JSON text for every other client."""

from __future__ import annotations

import asyncio
import json
import logging

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve
from websockets.frames import Frame, Opcode
from websockets.typing import Subprotocol

from cc_executor_nb import protocol
from cc_executor_nb.client import connect
from cc_executor_nb.events import Completed
from cc_executor_nb.server.handler import _frame_head
from cc_executor_nb.server.session import Session

from .conftest import TOKEN, collect, fake, output_of
from .util import scaled

BINARY = Subprotocol(protocol.BINARY_OUTPUT)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def _execute_and_read(ws: ClientConnection, argv: list[str]) -> list[str | bytes]:
    """Send ``execute`` on a bare connection; every frame up to ``process.completed``."""
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": argv}}))
    frames: list[str | bytes] = []
    while True:
        frame = await asyncio.wait_for(ws.recv(), scaled(10))
        frames.append(frame)
        if isinstance(frame, str) and '"process.completed"' in frame:
            return frames


def _split(frame: bytes) -> tuple[dict, str]:
    header, _, payload = frame.partition(b"\n")
    return json.loads(header), payload.decode("utf-8")


async def test_a_client_offering_the_subprotocol_gets_output_as_binary_frames(server) -> None:
    """Each output is a binary frame, ``<JSON header>\\n<UTF-8 data>``, numbered in line with
    the text frames; the rest (connected, the response, started, completed) stays text."""
    async with ws_connect(server.url, additional_headers=HEADERS, subprotocols=[BINARY], proxy=None) as ws:
        assert ws.subprotocol == BINARY
        assert json.loads(await ws.recv())["method"] == "connected"
        frames = await _execute_and_read(ws, fake("echo", "héllo", "wörld\n\"quoted\""))
    outputs = [_split(frame) for frame in frames if isinstance(frame, bytes)]
    assert outputs, frames
    assert all(header["method"] == "process.output" and "data" not in header["params"] for header, _ in outputs)
    assert "".join(data for _, data in outputs) == 'héllo wörld\n"quoted"\n'
    texts = [json.loads(frame) for frame in frames if isinstance(frame, str)]
    assert not any(message.get("method") == "process.output" for message in texts)
    numbered = [m["params"]["seq"] for m in texts if "seq" in m.get("params", {})]
    seqs = sorted([header["params"]["seq"] for header, _ in outputs] + numbered)
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_client_without_the_subprotocol_gets_output_as_json_text(raw) -> None:
    """No subprotocol offered: no subprotocol chosen, every frame JSON text, as before."""
    assert raw.subprotocol is None
    frames = await _execute_and_read(raw, fake("echo", "plain", "text"))
    assert all(isinstance(frame, str) for frame in frames)
    outputs = [json.loads(frame)["params"]["data"] for frame in frames if '"process.output"' in frame]
    assert "".join(outputs) == "plain text\n"


async def test_the_client_library_offers_the_subprotocol_and_reads_output_exactly(server) -> None:
    """Our client gets binary frames and delivers the same text (across pieces, multibyte
    characters split between writes, bytes that are not UTF-8 shown as U+FFFD)."""
    async with await connect(server.url, TOKEN) as client:
        await client.execute(argv=fake("badutf8"))
        events = await collect(client)
        seen = [connection.subprotocol for connection in server.server.connections]  # the server's view
    assert seen == [BINARY]
    assert output_of(events) == "bad \ufffd\ufffd bytes\nsplit \U0001F600 done\n"


async def test_a_text_client_resuming_a_session_of_binary_frames_gets_json_text(server) -> None:
    """The replay log keeps the frames made for the connection before (binary): a client
    without the subprotocol that resumes the session gets them as JSON text, exact."""
    first = await connect(server.url, TOKEN, auto_reconnect=False)
    connected = await first.wait_connected()
    await first.execute(argv=fake("ticker", "20", "0.02"))
    await asyncio.wait_for(_until_completed(first), scaled(10))
    async with ws_connect(server.url, additional_headers=HEADERS, proxy=None) as ws:
        assert json.loads(await ws.recv())["method"] == "connected"
        resume = {"session_id": connected.session_id, "resume_token": connected.params["resume_token"], "last_seq": 0}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resume", "params": resume}))
        frames: list[str | bytes] = []
        while not frames or '"process.completed"' not in frames[-1]:
            frames.append(await asyncio.wait_for(ws.recv(), scaled(10)))
    assert all(isinstance(frame, str) for frame in frames)
    outputs = [json.loads(frame)["params"]["data"] for frame in frames if '"process.output"' in frame]
    assert "".join(outputs) == "".join(f"tick {i}\n" for i in range(20))
    await first.close()


async def _until_completed(client) -> None:
    async for event in client.events():
        if isinstance(event, Completed):
            return


async def test_an_unreadable_binary_frame_is_skipped_and_the_stream_goes_on(caplog) -> None:
    """A binary frame the client cannot read (no header, a header that is no notification)
    is logged and skipped; the output after it is delivered."""
    connected = {"session_id": "s", "protocol_version": "1", "capabilities": [], "heartbeat_interval": 20}

    async def serve_one(ws) -> None:
        await ws.send(json.dumps(protocol.notification("connected", connected)))
        await ws.send(b"no header at all")
        await ws.send(b'{"jsonrpc":"2.0","id":3,"result":{}}\nnot a notification')
        output = {"type": "stdout", "truncated": False, "seq": 1, "data": "ok\n"}
        await ws.send(protocol.output_frame("process.output", output))
        await ws.wait_closed()

    select = lambda _ws, offered: BINARY if BINARY in offered else None  # noqa: E731
    async with serve(serve_one, "127.0.0.1", 0, select_subprotocol=select) as fake_server:
        port = fake_server.sockets[0].getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="cc_executor_nb.client"):
            async with await connect(f"ws://127.0.0.1:{port}/ws", auto_reconnect=False) as client:
                event = await asyncio.wait_for(_first_output(client), scaled(5))
    assert event.method == "process.output" and event.params["data"] == "ok\n" and event.seq == 1
    assert caplog.text.count("unreadable binary frame") == 2


async def _first_output(client):
    async for event in client.events():
        if event.method == "process.output":
            return event
    return None


def test_the_frame_and_its_json_text_say_the_same() -> None:
    """``output_frame`` round-trips through the client's parser and ``output_frame_as_text``."""
    params = {"type": "stderr", "truncated": False, "seq": 7, "data": 'a\nb "c" \\ é \U0001F600\r\n\x00'}
    frame = protocol.output_frame("process.output", params)
    assert frame is not None and protocol.is_output_frame(frame)
    parsed = protocol.parse_output_frame(frame)
    assert parsed is not None and parsed.method == "process.output" and parsed.params == params
    assert json.loads(protocol.output_frame_as_text(frame)) == protocol.notification("process.output", params)


def test_json_text_is_never_taken_for_a_binary_frame() -> None:
    """Compact JSON escapes newlines: a text message has none for the frame test to find."""
    text = protocol.dumps_bytes(protocol.notification("process.output", {"data": "x\n" * 3000, "seq": 1}))
    assert not protocol.is_output_frame(text)


async def test_output_that_is_not_valid_unicode_goes_as_json_text() -> None:
    """A lone surrogate cannot be UTF-8: that notification goes as text (U+FFFD in its place)."""
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    session = Session(send, heartbeat_interval=20, inactivity_threshold=30)
    session.binary_output = True
    await session.notify("process.output", {"type": "stdout", "data": "ok \ud800", "truncated": False})
    await session.notify("process.output", {"type": "stdout", "data": "fine", "truncated": False})
    assert not protocol.is_output_frame(sent[0]) and json.loads(sent[0])["params"]["data"] == "ok \ufffd"
    assert protocol.is_output_frame(sent[1])


async def test_text_frames_count_toward_the_next_ack_by_their_bytes() -> None:
    """With the subprotocol, text frames come as str: a non-ASCII one counts its UTF-8 bytes
    toward the ack due every MiB (700,000 characters, 1.4 MB: by characters, no ack yet)."""
    connected = {"session_id": "s", "protocol_version": "1", "capabilities": ["ack"], "heartbeat_interval": 20}
    acked: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def serve_one(ws) -> None:
        await ws.send(json.dumps(protocol.notification("connected", connected)))
        output = {"type": "stdout", "truncated": False, "seq": 1, "data": "é" * 700_000}
        await ws.send(json.dumps(protocol.notification("process.output", output), ensure_ascii=False))
        async for message in ws:
            if json.loads(message).get("method") == "ack" and not acked.done():
                acked.set_result(json.loads(message)["params"])

    select = lambda _ws, offered: BINARY if BINARY in offered else None  # noqa: E731
    async with serve(serve_one, "127.0.0.1", 0, select_subprotocol=select) as fake_server:
        port = fake_server.sockets[0].getsockname()[1]
        async with await connect(f"ws://127.0.0.1:{port}/ws", auto_reconnect=False):
            assert await asyncio.wait_for(acked, scaled(5)) == {"seq": 1}


def test_the_frames_written_to_the_transport_are_those_websockets_would_write() -> None:
    """The head the server writes before a frame it puts on the transport itself (a line's
    output, a span's header) is websockets' own head for that frame, at every length form."""
    for opcode in (Opcode.TEXT, Opcode.BINARY):
        for size in (0, 1, 125, 126, 65535, 65536, 1 << 20):
            payload = b"x" * size
            expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
            assert _frame_head(opcode.value, size) + payload == expected, (opcode, size)
