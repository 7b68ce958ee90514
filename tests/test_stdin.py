"""Writing to a run's stdin: ``execute`` with ``stdin: "pipe"``, ``input`` and ``input.close``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from cc_executor_nb import methods
from cc_executor_nb.client import Client, _connected_of, _InputBackoff, connect
from cc_executor_nb.errors import InvalidParams, LimitReached, NoProcessRunning
from cc_executor_nb.events import Connected, Event, Started
from cc_executor_nb.protocol import MAX_INPUT_BYTES
from cc_executor_nb.server import EnhancedWebSocketHandler

from .conftest import TOKEN, collect, completed, make_handler, output_of, reply
from .proxy import FaultyProxy
from .util import eventually_async, scaled

# Children that wait for a gate file, so that a request the test sends reaches them alive
# (a child that ended first made the request fail on a loaded machine: 41 in 100 tries).
_WAIT_FOR_GATE = "\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)"
_READ_THEN_WAIT = "import os, sys, time\nprint(sys.stdin.read(), flush=True)" + _WAIT_FOR_GATE
_PRINT_THEN_WAIT = "import os, sys, time\nprint('bye', flush=True)" + _WAIT_FOR_GATE

pytestmark = pytest.mark.timeout(60)

CAT = [sys.executable, "-c", "import sys\nfor line in sys.stdin: print('got', line, end='', flush=True)\nprint('eof')"]


async def test_input_reaches_the_child_and_close_ends_its_input(client: Client) -> None:
    """Two inputs arrive in order; input.close gives the child end of file."""
    await client.execute(argv=CAT, stdin="pipe")
    first = await client.input("one\n")
    assert first["status"] == "queued" and first["bytes"] == 4
    await client.input("two\n")
    assert (await client.close_input())["status"] == "closing"
    events = await collect(client)
    assert output_of(events) == "got one\ngot two\neof\n"
    assert completed(events).exit_code == 0


async def test_many_inputs_keep_their_order(client: Client) -> None:
    """Five hundred inputs sent back to back come out in the order sent."""
    await client.execute(argv=CAT, stdin="pipe")
    for i in range(500):
        await client.input(f"{i}\n")
    await client.close_input()
    lines = output_of(await collect(client)).splitlines()
    assert lines == [f"got {i}" for i in range(500)] + ["eof"]


async def test_started_announces_the_pipe(client: Client) -> None:
    """process.started and status say whether the run reads a pipe."""
    await client.execute(argv=CAT, stdin="pipe")
    status = await client.status()
    await client.close_input()
    started = next(e for e in await collect(client) if isinstance(e, Started))
    assert started.params["stdin"] == "pipe" and status["stdin"] == "pipe"


async def test_input_without_a_pipe_is_invalid_params(client: Client) -> None:
    """A run executed without stdin "pipe" reads /dev/null: input is -32602 naming stdin."""
    await client.execute(argv=[sys.executable, "-c", "import time; time.sleep(30)"])
    with pytest.raises(InvalidParams) as info:
        await client.input("x")
    assert info.value.data == {"field": "stdin"}
    await client.cancel()
    await collect(client)


async def test_input_on_an_idle_session_is_no_process(client: Client) -> None:
    """input and input.close with nothing running are -32002."""
    with pytest.raises(NoProcessRunning):
        await client.input("x")
    with pytest.raises(NoProcessRunning):
        await client.close_input()


async def test_input_after_close_is_refused(client: Client, tmp_path: Path) -> None:
    """Once input.close was asked, more input is -32002 and nothing after it arrives."""
    gate = tmp_path / "gate"
    await client.execute(argv=[sys.executable, "-c", _READ_THEN_WAIT, str(gate)], stdin="pipe")
    await client.input("before")
    await client.close_input()
    with pytest.raises(NoProcessRunning, match="input is closed"):
        await client.input("after")
    gate.touch()  # the child stays until here, so the refusal is for the closed input, not an ended run
    assert output_of(await collect(client)) == "before\n"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"data": 5}, "data"),
        ({}, "data"),
        ({"data": "x" * (MAX_INPUT_BYTES + 1)}, "data"),
        ({"data": "x\n", "turn": "yes"}, "turn"),
        ({"data": "x\n", "turn": 1}, "turn"),
        ({"data": "x", "turn": True}, "turn"),
        ({"data": "", "turn": True}, "turn"),
    ],
    ids=["not a string", "missing", "too big", "turn not a boolean", "turn a number", "turn without a newline",
         "turn without data"],
)
async def test_malformed_input_is_invalid_params(client: Client, params: dict[str, object], field: str) -> None:
    """Bad input params are -32602 naming the field, and the run goes on."""
    await client.execute(argv=CAT, stdin="pipe")
    with pytest.raises(InvalidParams) as info:
        await client.call("input", params)
    assert info.value.data == {"field": field}
    await client.input("still fine\n")
    await client.close_input()
    assert output_of(await collect(client)) == "got still fine\neof\n"


@pytest.mark.parametrize("after_turn", ["yes", 1, []])
async def test_an_input_close_with_a_malformed_after_turn_is_invalid_params(client: Client, after_turn: object) -> None:
    """input.close's after_turn not a boolean or null is -32602 naming it, and the input stays open."""
    assert methods.INPUT_CLOSE_AFTER_TURN in (await client.wait_connected()).capabilities
    await client.execute(argv=CAT, stdin="pipe")
    with pytest.raises(InvalidParams) as info:
        await client.call("input.close", {"after_turn": after_turn})
    assert info.value.data == {"field": "after_turn"}
    await client.input("still open\n")
    assert (await client.close_input(after_turn=True))["status"] == "closing"  # no job: closed at once
    assert output_of(await collect(client)) == "got still open\neof\n"


async def test_a_lone_surrogate_in_input_is_invalid_params(raw: ClientConnection) -> None:
    """"\\ud800" (a JSON escape no UTF-8 can carry) in input data is -32602, run unharmed."""
    execute = {"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": CAT, "stdin": "pipe"}}
    started = await reply(raw, json.dumps(execute))
    assert started["result"]["status"] == "started"  # type: ignore[index]
    bad = await reply(raw, '{"jsonrpc":"2.0","id":2,"method":"input","params":{"data":"a\\ud800"}}')
    assert bad["error"]["code"] == -32602 and bad["error"]["data"] == {"field": "data"}  # type: ignore[index]
    closed = await reply(raw, '{"jsonrpc":"2.0","id":3,"method":"input.close"}')
    assert closed["result"]["status"] == "closing"  # type: ignore[index]


async def test_execute_input_is_written_then_the_input_closed(client: Client) -> None:
    """execute's ``input``: the server writes it to the child's stdin and closes it, no input request needed."""
    await client.execute(argv=CAT, stdin="pipe", input="one\ntwo\n")
    events = await collect(client)
    assert output_of(events) == "got one\ngot two\neof\n" and completed(events).exit_code == 0


async def test_the_server_says_its_execute_takes_input(client: Client) -> None:
    """``execute.input`` is in the capabilities of ``connected`` (an older server's client writes the input)."""
    assert methods.EXECUTE_INPUT in (await client.wait_connected()).capabilities


async def test_the_server_says_its_execute_takes_server_python(client: Client) -> None:
    """``execute.server_python`` is in the capabilities of ``connected`` (an older server runs argv[0] as given)."""
    assert methods.SERVER_PYTHON in (await client.wait_connected()).capabilities


@pytest.mark.parametrize(
    ("params", "message"),
    [({"argv": CAT, "input": "x"}, 'input needs stdin "pipe"'),
     ({"argv": CAT, "stdin": "pipe", "input": 3}, "input must be a string")],
    ids=["no pipe", "not a string"],
)
async def test_a_bad_execute_input_is_invalid_params(client: Client, params: dict[str, object], message: str) -> None:
    """execute's ``input`` needs stdin "pipe" and a string: else -32602 naming ``input``, and nothing starts."""
    with pytest.raises(InvalidParams, match=message) as info:
        await client.call("execute", params)
    assert info.value.data == {"field": "input"} and (await client.status())["state"] == "idle"


async def test_bad_stdin_mode_is_invalid_params(client: Client) -> None:
    """execute with stdin other than "null" or "pipe" is -32602 naming stdin."""
    with pytest.raises(InvalidParams) as info:
        await client.call("execute", {"argv": ["true"], "stdin": "tty"})
    assert info.value.data == {"field": "stdin"}


async def test_a_child_that_never_reads_fills_the_queue_but_cancel_still_works(client: Client) -> None:
    """Input beyond the queue limit is -32000; a CANCEL behind it is answered at once."""
    await client.execute(argv=[sys.executable, "-c", "import time; time.sleep(60)"], stdin="pipe")
    chunk = "x" * MAX_INPUT_BYTES
    with pytest.raises(LimitReached, match="input queue full"):
        for _ in range(64):  # 64 MiB: far past the pipe and the 8 MiB queue
            await client.call(methods.INPUT, {"data": chunk})  # the request itself: Client.input waits
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await asyncio.wait_for(client.cancel(), scaled(5))
    assert loop.time() - asked < scaled(2)
    done = completed(await collect(client))
    assert done.params["status"] == "cancelled"


SLOW_READER = [sys.executable, "-c", (
    "import hashlib, sys, time\n"
    "digest, count = hashlib.sha256(), 0\n"
    "while chunk := sys.stdin.buffer.read(1 << 20):\n"
    "    digest.update(chunk); count += len(chunk); time.sleep(0.05)\n"
    "print(count, digest.hexdigest())"
)]
"""A child that reads its stdin 1 MiB at a time, 0.05 s apart, and prints its length and sha256."""


def length_and_digest(text: str) -> str:
    """What ``SLOW_READER`` prints for ``text``."""
    data = text.encode("utf-8")
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"


async def test_input_past_the_queue_limit_waits_for_the_child_and_arrives_whole(client: Client) -> None:
    """11 MiB of input for a child that reads it slowly: a piece refused while 8 MiB were unread
    in its queue failed the whole input (LimitReached "input queue full: 8388608 bytes not yet
    read by the process"); it is sent again as the child reads, and every byte arrives."""
    text = "y" * (11 << 20)
    await client.execute(argv=SLOW_READER, stdin="pipe")
    await client.input(text)
    await client.close_input()
    assert output_of(await collect(client)) == length_and_digest(text)


STALLED_READER = [sys.executable, "-c", "import sys, time; time.sleep(8); print(len(sys.stdin.buffer.read()))"]
"""A child that reads nothing for 8 s, then all of its stdin, and prints how many bytes."""


async def test_input_for_a_child_that_reads_nothing_is_sent_again_ever_less_often(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 MiB for a child that reads nothing for 8 s: the piece its full queue refused was sent
    again every 0.5 s for as long (19 refusals, 256 KiB each); now each wait doubles while the
    child reads nothing (at most 9 refusals in 8 s), and every byte arrives once it reads."""
    refusals = 0
    call = client.call

    async def counting(method: str, params: dict[str, object] | None = None) -> object:
        nonlocal refusals
        try:
            return await call(method, params)
        except LimitReached:
            refusals += 1
            raise

    monkeypatch.setattr(client, "call", counting)
    await client.execute(argv=STALLED_READER, stdin="pipe")
    await client.input("z" * (10 << 20))
    await client.close_input()
    assert output_of(await collect(client)) == f"{10 << 20}\n"
    assert 1 <= refusals <= 11


def test_the_input_backoff_grows_only_while_the_process_reads_nothing() -> None:
    """Refusals with as many bytes queued as the last: the wait doubles up to 5 s; refusals
    whose queue dropped (the process reads): the short schedule, 0.5 s at most; a server that
    does not say how many are queued: the short schedule."""
    stalled = _InputBackoff()
    assert [stalled.after({"queued_bytes": 100}) for _ in range(11)] == [
        0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.0, 5.0, 5.0]
    reading = _InputBackoff()
    assert [reading.after({"queued_bytes": 100 - n}) for n in range(7)] == [0.02, 0.05, 0.1, 0.2, 0.5, 0.5, 0.5]
    silent = _InputBackoff()
    assert [silent.after(None) for _ in range(6)] == [0.02, 0.05, 0.1, 0.2, 0.5, 0.5]
    resumed = _InputBackoff()
    assert [resumed.after({"queued_bytes": q}) for q in (100, 100, 100, 90)] == [0.02, 0.04, 0.08, 0.05]


GATED_READER = "import os, sys, time" + _WAIT_FOR_GATE + "\nprint(len(sys.stdin.buffer.read()), flush=True)"
"""A child that reads nothing until the gate file ``sys.argv[1]`` exists, then all of its stdin."""


async def test_a_refused_connection_is_told_when_the_input_queue_has_room_again(
    raw: ClientConnection, tmp_path: Path
) -> None:
    """An ``input`` refused for a full queue got no word when the child read it down: the
    client learned it only at its next try, up to 5 s later. The refused connection now gets
    ``input.drained`` once at most half the queue is unread (and the capability says so)."""
    gate = tmp_path / "gate"
    execute = {"argv": [sys.executable, "-c", GATED_READER, str(gate)], "stdin": "pipe"}
    started = await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": execute}))
    assert started["result"]["status"] == "started"  # type: ignore[index]
    piece = "p" * MAX_INPUT_BYTES
    for id_ in range(2, 100):
        request = {"jsonrpc": "2.0", "id": id_, "method": "input", "params": {"data": piece}}
        answer = await reply(raw, json.dumps(request))
        if "error" in answer:  # type: ignore[operator]
            break
    assert answer["error"]["code"] == -32000, answer  # type: ignore[index]
    gate.touch()
    while (message := json.loads(await asyncio.wait_for(raw.recv(), scaled(10)))).get("method") != "input.drained":
        pass
    assert message["params"]["limit"] == 8 << 20 and message["params"]["queued_bytes"] <= 4 << 20


async def test_input_refused_for_a_full_queue_goes_on_when_the_server_says_there_is_room(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 MiB for a child that reads nothing until a gate opens: the refused piece waited for
    the client's timer (0.02 s doubling up to 5 s: up to 5 s after the child read again). With
    the timers made 10 minutes long, the input still arrives once the child reads: it is sent
    again when the server says the queue has room (``input.drained``)."""
    from cc_executor_nb import client as client_module

    monkeypatch.setattr(client_module, "_INPUT_BACKOFF", (600.0,))
    monkeypatch.setattr(client_module, "INPUT_STALLED_WAIT", 600.0)
    assert methods.INPUT_DRAINED in (await client.wait_connected()).capabilities
    gate = tmp_path / "gate"
    await client.execute(argv=[sys.executable, "-c", GATED_READER, str(gate)], stdin="pipe")
    sending = asyncio.ensure_future(client.input("z" * (10 << 20)))
    deadline = asyncio.get_running_loop().time() + scaled(10)
    while (await client.call(methods.INPUT, {"data": ""}))["queued_bytes"] + MAX_INPUT_BYTES <= 8 << 20:
        assert asyncio.get_running_loop().time() < deadline, "the input queue did not fill"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the next piece was refused: it waits
    assert not sending.done()
    gate.touch()
    await asyncio.wait_for(sending, scaled(20))
    await client.close_input()
    assert output_of(await collect(client)) == f"{10 << 20}\n"


async def test_input_waiting_for_room_ends_when_the_process_does(client: Client) -> None:
    """Input waiting for a child that never reads (its queue full) is refused as soon as the
    process ends (here: cancelled), NoProcessRunning; it does not wait for ever."""
    await client.execute(argv=[sys.executable, "-c", "import time; time.sleep(60)"], stdin="pipe")
    sending = asyncio.ensure_future(client.input("x" * (12 << 20)))
    deadline = asyncio.get_running_loop().time() + scaled(10)
    while (await client.call(methods.INPUT, {"data": ""}))["queued_bytes"] + MAX_INPUT_BYTES <= 8 << 20:
        assert asyncio.get_running_loop().time() < deadline, "the input queue did not fill"
        await asyncio.sleep(0.02)
    assert not sending.done()  # the next piece has no room: it waits
    await client.cancel()
    with pytest.raises(NoProcessRunning):
        await asyncio.wait_for(sending, scaled(10))
    assert completed(await collect(client)).params["status"] == "cancelled"


async def test_long_input_goes_in_pieces_whole_characters_kept(client: Client) -> None:
    """The client splits text over the per-request limit; multi-byte characters survive."""
    text = ("é€😀" * (MAX_INPUT_BYTES // 3)) + "\n"
    await client.execute(argv=[sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"], stdin="pipe")
    await client.input(text)
    await client.close_input()
    assert output_of(await collect(client, timeout=30)) == text


async def test_input_of_control_characters_fits_the_frame_limit(client: Client) -> None:
    """200,000 control characters (6 bytes each once JSON-escaped, 1.2 MB) go in pieces that
    fit the server's 1 MiB frame: the connection stays up and every byte arrives."""
    text = "\x01" * 200_000
    await client.execute(argv=[sys.executable, "-c", "import sys; print(len(sys.stdin.buffer.read()))"], stdin="pipe")
    await client.input(text)
    await client.close_input()
    assert output_of(await collect(client, timeout=30)) == "200000\n"


async def test_a_child_that_exits_without_reading_ends_normally(client: Client, tmp_path: Path) -> None:
    """Input queued for a child that exits unread is dropped; the run still completes."""
    gate = tmp_path / "gate"
    await client.execute(argv=[sys.executable, "-c", _PRINT_THEN_WAIT, str(gate)], stdin="pipe")
    await client.input("ignored\n")
    gate.touch()  # the input is queued: now the child exits without reading it
    events = await collect(client)
    assert output_of(events) == "bye\n" and completed(events).exit_code == 0


SMALL_LIMIT = 200_000
"""A server's ``--max-message-size`` under the 256 KiB of one ``input`` request."""
ECHO = [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"]


@pytest.fixture
async def small_client() -> AsyncIterator[Client]:
    """A client of a server started with a frame limit of ``SMALL_LIMIT`` bytes."""
    handler = make_handler(max_message_size=SMALL_LIMIT)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN, auto_reconnect=False) as client:
            yield client
    finally:
        await handler.close()


async def test_connected_says_the_servers_message_limit(small_client: Client) -> None:
    """``connected`` carries ``max_message_size``: the server's frame limit, in bytes."""
    assert (await small_client.wait_connected()).max_message_size == SMALL_LIMIT


def test_a_server_that_does_not_say_its_limit_has_none() -> None:
    """An older server's ``connected`` has no ``max_message_size``: the client keeps its defaults."""
    assert Connected("connected", {"session_id": "s", "capabilities": []}).max_message_size is None


async def test_a_one_shot_prompt_bigger_than_the_limit_arrives_whole(small_client: Client) -> None:
    """A 230 KB prompt on a server that takes 200,000-byte frames: the execute that would carry
    it does not fit, so it goes in ``input`` requests that do (the execute was refused, "the
    server refused a message too big for it (...): pass large data in a file or on stdin")."""
    text = "y" * 230_000 + "\n"
    execute = {"argv": ECHO, "stdin": "pipe"}
    if await small_client.takes_input_in_execute(text, **execute):
        await small_client.execute(**execute, input=text)
    else:
        await small_client.execute(**execute)
        await small_client.input(text)
        await small_client.close_input()
    assert output_of(await collect(small_client)) == text


async def test_a_prompt_that_fits_the_limit_goes_in_execute(small_client: Client) -> None:
    """A prompt whose execute fits the server's frame limit goes in it (the server writes it at the start)."""
    assert await small_client.takes_input_in_execute("y" * 1000, argv=ECHO, stdin="pipe")


async def test_a_prompt_that_fits_alone_but_not_beside_the_other_arguments_goes_in_input(
    small_client: Client,
) -> None:
    """The whole execute counts: 100 KB of prompt beside 150 KB of environment does not fit 200,000 bytes."""
    execute = {"argv": ECHO, "stdin": "pipe", "env": {"BIG": "x" * 150_000}}
    assert not await small_client.takes_input_in_execute("y" * 100_000, **execute)


async def test_an_execute_input_over_its_own_bound_goes_in_input_even_where_the_frame_would_take_it() -> None:
    """``execute``'s ``input`` is at most 8 MiB whatever the frame limit: on a server started with
    16 MiB frames a 9 MiB prompt went in execute and was refused (-32602 "input is 9437184 bytes;
    at most 8388608 in execute"); it goes in input requests."""
    handler = make_handler(max_message_size=16 << 20)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN, auto_reconnect=False) as client:
            assert await client.takes_input_in_execute("y" * (8 << 20), argv=ECHO, stdin="pipe")
            assert not await client.takes_input_in_execute("y" * (9 << 20), argv=ECHO, stdin="pipe")
    finally:
        await handler.close()


async def test_a_host_mode_prompt_bigger_than_the_limit_arrives_whole(small_client: Client) -> None:
    """``input`` of 240 KB (under the 256 KiB a request may carry) on a server that takes
    200,000-byte frames: it goes in pieces that fit, every byte arrives (one piece was refused)."""
    text = "z" * 240_000 + "\n"
    await small_client.execute(argv=ECHO, stdin="pipe")
    await small_client.input(text)
    await small_client.close_input()
    assert output_of(await collect(small_client)) == text


def _open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


@pytest.mark.parametrize(
    "params",
    [
        {"argv": ["echo", "\ud800"]},
        {"argv": ["echo", "x"], "env": {"\ud800": "v"}},
        {"argv": ["echo", "x"], "env": {"NAME": "\udfff"}},
        {"argv": ["echo", "x"], "cwd": "/tmp/\ud800"},
        {"command": "echo \ud800"},
    ],
    ids=["argv", "env name", "env value", "cwd", "command"],
)
async def test_lone_surrogates_are_invalid_params_and_leak_nothing(
    raw: ClientConnection, params: dict[str, object]
) -> None:
    """A lone surrogate anywhere in execute is -32602 naming the field, and 50 leak no descriptor."""
    # ensure_ascii writes the surrogate as a \\ud800 escape: a valid frame, an invalid string.
    frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {**params, "stdin": "pipe"}})
    before = _open_fds()
    for _ in range(50):
        answer = await reply(raw, frame)
        assert answer["error"]["code"] == -32602, answer  # type: ignore[index]
    await eventually_async(lambda: _open_fds() <= before, what="descriptors back to their count")
    good = await reply(raw, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "execute", "params": {"argv": ["true"]}}))
    assert good["result"]["status"] == "started"  # type: ignore[index]


class _Follower:
    """A client that followed a durable job to its end on ``server``, through a proxy that can
    move it to another server on the same jobs directory."""

    def __init__(self, server: EnhancedWebSocketHandler, proxy: FaultyProxy, client: Client) -> None:
        self.server, self.proxy, self.client = server, proxy, client

    async def move_to(self, other: EnhancedWebSocketHandler) -> None:
        """Drop the connection (no close frame), stop the server, start ``other`` in its place,
        and wait until the client has reconnected to it."""
        reconnected = _future_event(self.client, methods.CLIENT_RECONNECTED)
        self.proxy.refusing = True
        self.proxy.drop()
        await self.server.close()
        await other.start("127.0.0.1", 0)
        self.server = other
        self.proxy.target_port, self.proxy.refusing = other.port, False
        await asyncio.wait_for(reconnected, scaled(20))


@contextlib.asynccontextmanager
async def _job_follower(server: EnhancedWebSocketHandler) -> AsyncIterator[_Follower]:
    """A :class:`_Follower` of a job that ran ``true`` on ``server``."""
    await server.start("127.0.0.1", 0)
    proxy = await FaultyProxy(server.port).start()
    follower = _Follower(server, proxy, await connect(proxy.url(), TOKEN))
    try:
        await follower.client.execute(argv=["true"], durable=True, stdin="pipe")
        assert completed(await collect(follower.client)).exit_code == 0
        yield follower
    finally:
        await follower.client.close()
        await proxy.close()
        await follower.server.close()


async def test_the_frame_limit_is_the_latest_servers_after_a_reconnect(tmp_path: Path) -> None:
    """A client following a job reconnects to a job server started again with a smaller
    ``--max-message-size`` (4 MiB, then 200,000 bytes). It kept the first ``connected``'s limit:
    a 1 MiB text would go in ``execute``, and 230,000 bytes of ``input`` went in one request,
    which the new server refused by closing the connection ("the server refused a message too
    big for it (frame with 230062 bytes exceeds limit of 200000 bytes)"). Its limit is the new
    ``connected``'s: the pieces fit, and the server answers that the job's process is gone."""
    jobs = str(tmp_path / "jobs")
    async with _job_follower(make_handler(jobs_dir=jobs, max_message_size=4 << 20)) as follower:
        await follower.move_to(make_handler(jobs_dir=jobs, max_message_size=SMALL_LIMIT))
        client = follower.client
        assert not await client.takes_input_in_execute("y" * (1 << 20), argv=ECHO, stdin="pipe")
        with pytest.raises(NoProcessRunning):
            await client.input("y" * 230_000)
        assert not client.closed


async def test_the_capabilities_are_the_latest_servers_after_a_reconnect(tmp_path: Path) -> None:
    """A client following a job reconnects to a job server that came back as an older version,
    without ``execute.input``. It kept the first ``connected``'s capabilities and would put a
    prompt in an ``execute`` that server cannot take; it now takes the new ``connected``'s."""
    jobs = str(tmp_path / "jobs")
    older = make_handler(jobs_dir=jobs)
    older.capabilities.remove(methods.EXECUTE_INPUT)
    async with _job_follower(make_handler(jobs_dir=jobs)) as follower:
        assert await follower.client.takes_input_in_execute("hello", argv=ECHO, stdin="pipe")
        await follower.move_to(older)
        assert not await follower.client.takes_input_in_execute("hello", argv=ECHO, stdin="pipe")


def test_a_server_that_says_no_limit_on_a_reconnect_gives_the_default() -> None:
    """The limit a reconnect takes is its ``connected``'s; an older server's says none (None:
    the client sizes for its default 1 MiB frames), whatever the first server said."""
    hello = {"jsonrpc": "2.0", "method": "connected", "params": {"session_id": "s"}}
    assert _limit_taken_from(json.dumps(hello)) is None
    hello["params"]["max_message_size"] = SMALL_LIMIT
    assert _limit_taken_from(json.dumps(hello)) == SMALL_LIMIT


def _limit_taken_from(hello: str) -> int | None:
    """The frame limit the client takes on a reconnect whose first frame is ``hello``."""
    connected = _connected_of(hello)
    assert connected is not None
    return connected.max_message_size


def _future_event(client: Client, method: str) -> asyncio.Future[Event]:
    """A future set to the client's next event of ``method``."""
    future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def listener(event: Event) -> None:
        if event.method == method and not future.done():
            future.set_result(event)

    client.add_listener(listener)
    return future
