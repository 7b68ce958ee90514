"""The spare connection the background loop dials ahead for the next run to its server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from cc_executor_nb.client import connect, dial
from cc_executor_nb.events import Connected
from cc_executor_nb.kernel.loop import KernelLoop
from cc_executor_nb.kernel.run import Run, RunSpec, Target
from cc_executor_nb.kernel.spare import Spare
from cc_executor_nb.server.handler import EnhancedWebSocketHandler

from .conftest import TOKEN, fake, make_handler
from .proxy import FaultyProxy
from .util import eventually, eventually_async, scaled

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bg() -> Iterator[KernelLoop]:
    """A private background loop serving a real handler."""
    loop = KernelLoop(lambda: make_handler(kill_grace=1.0), thread_name="ccx-spare-test")
    loop.start()
    yield loop
    loop.stop()


def server_of(loop: KernelLoop) -> EnhancedWebSocketHandler:
    server = loop.server
    assert isinstance(server, EnhancedWebSocketHandler)
    return server


def run_on(loop: KernelLoop, *words: str) -> Run:
    server = server_of(loop)
    return Run(RunSpec(argv=fake("echo", *words)), Target(server.url, server.token)).start(loop).wait(scaled(20))


def sessions(server: EnhancedWebSocketHandler) -> set[str]:
    return set(server.sessions.sessions)


def spare_ready(loop: KernelLoop) -> bool:
    async def ready() -> bool:
        return loop.spare.ready

    return loop.call(ready(), timeout=scaled(5))


def session_of(run: Run) -> str:
    return next(event.session_id for event in run.events if isinstance(event, Connected))


def test_the_next_run_takes_the_connection_dialled_after_the_last(bg: KernelLoop) -> None:
    """After a run to the loop's server ends, one session is dialled ahead; the next run's
    session is that one (its dial is not paid on the way to the spawn)."""
    server = server_of(bg)
    assert run_on(bg, "one").status == "completed"
    eventually(lambda: spare_ready(bg) and len(sessions(server)) == 1, what="the spare's session alone")
    (spare,) = sessions(server)
    second = run_on(bg, "two")
    assert second.status == "completed" and second.stdout == "two\n"
    assert session_of(second) == spare


def test_the_spare_is_closed_before_the_server_when_the_loop_stops() -> None:
    """stop() (unload, kernel shutdown) closes the spare first: the server has no session left
    when it is closed (none is cut by the server's close, none outlives the loop)."""
    idle_at_close: list[bool] = []

    def handler() -> EnhancedWebSocketHandler:
        server = make_handler()
        close = server.close

        async def recording_close() -> None:
            try:
                await asyncio.wait_for(server.wait_idle(), scaled(5))
                idle_at_close.append(True)
            except TimeoutError:
                idle_at_close.append(False)
            await close()

        server.close = recording_close  # type: ignore[method-assign]
        return server

    loop = KernelLoop(handler, thread_name="ccx-spare-stop").start()
    try:
        run_on(loop, "x")
        eventually(lambda: spare_ready(loop), what="the spare")
    finally:
        loop.stop()
    assert idle_at_close == [True]


def test_a_retired_server_closes_although_a_spare_was_dialled_to_it(bg: KernelLoop) -> None:
    """When the server changes (settings), the spare to the old one is closed: the retired
    server, which closes once it has no session, closes; runs go to the new server."""
    old = server_of(bg)
    run_on(bg, "x")
    eventually(lambda: spare_ready(bg), what="the spare")
    closed: list[bool] = []
    close = old.close

    async def recording_close() -> None:
        closed.append(True)
        await close()

    old.close = recording_close  # type: ignore[method-assign]
    bg.use_server("other settings", lambda: make_handler(kill_grace=1.0))
    eventually(lambda: closed == [True], what="the retired server to close")
    assert server_of(bg) is not old and run_on(bg, "y").stdout == "y\n"


async def test_a_spare_is_for_one_server_and_there_is_at_most_one(server: EnhancedWebSocketHandler) -> None:
    """Filling twice keeps one session; a take for another server gets none and closes it."""
    spare = Spare()
    spare.fill(server.url, TOKEN)
    spare.fill(server.url, TOKEN)
    await eventually_async(lambda: spare.ready, what="the spare")
    assert len(sessions(server)) == 1
    assert await spare.take(server.url, "another token", reconnect_timeout=1.0) is None
    await eventually_async(lambda: not sessions(server), what="the spare's session to end")
    await spare.close()


async def test_a_spare_whose_connection_dropped_is_not_handed_out(server: EnhancedWebSocketHandler) -> None:
    """A spare cut while it waited (no close frame) is not given to a run: take() says
    "dial your own" and a fresh connection works."""
    proxy = await FaultyProxy(server.port).start()
    try:
        spare = Spare()
        spare.fill(proxy.url(), TOKEN)
        await eventually_async(lambda: spare.ready, what="the spare")
        proxy.drop()
        await eventually_async(lambda: not spare.ready, what="the spare to see the drop")
        assert await spare.take(proxy.url(), TOKEN, reconnect_timeout=1.0) is None
    finally:
        await proxy.close()


async def test_a_taken_spare_is_a_working_session(server: EnhancedWebSocketHandler) -> None:
    """The client made on a spare has the server's ``connected`` and runs a process."""
    spare = Spare()
    spare.fill(server.url, TOKEN)
    client = await spare.take(server.url, TOKEN, reconnect_timeout=1.0)
    assert client is not None and client.session_id in sessions(server)
    events: list[Any] = []
    client.add_listener(events.append)
    await client.execute(argv=fake("echo", "hi"))
    await eventually_async(lambda: any(e.method == "process.completed" for e in events), what="the run's end")
    await client.close()


async def test_a_connect_cancelled_while_it_takes_a_dialled_connection_leaves_none_open(
    server: EnhancedWebSocketHandler,
) -> None:
    """connect(opened=...) cancelled while it takes the connection over (the loop stopping under
    a run that takes the spare): the connection is dropped, not left open, read by nobody's
    reader, its session on the server for good."""
    opened = await dial(server.url, TOKEN)
    await eventually_async(lambda: len(sessions(server)) == 1, what="the dialled session")
    taking = asyncio.ensure_future(connect(server.url, TOKEN, opened=opened))
    await asyncio.sleep(0)  # it is handing over
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    await eventually_async(lambda: not sessions(server), what="the dialled session to end")
