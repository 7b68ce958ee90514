"""Limits and their entry points: sizes on the command line, the connection cap, the settings."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from cc_executor_nb.client import connect
from cc_executor_nb.server.config import MIN_DISK_LIMIT, ServerSettings
from cc_executor_nb.server.main import _size, parse_args, settings_from

from .conftest import TOKEN, make_handler
from .test_access import handshake_status
from .util import eventually_async, scaled

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1 << 20), ("100M", 100 << 20), ("100MiB", 100 << 20), ("4g", 4 << 30), ("512K", 512 << 10),
     ("2GB", 2 << 30), ("0", 0)],
)
def test_sizes_take_a_suffix(text: str, size: int) -> None:
    """Sizes are bytes, or K, M, G, T (powers of 1024, with or without B/iB)."""
    assert _size(text) == size


@pytest.mark.parametrize(
    ("flag", "field"),
    [("--disk-limit", "disk_limit"), ("--session-disk-limit", "session_disk_limit"),
     ("--replay-limit", "replay_limit"), ("--job-storage-limit", "job_storage_limit")],
)
def test_every_size_flag_takes_a_suffix(flag: str, field: str) -> None:
    """Each size flag reads ``4G`` as 4 GiB (--job-storage-limit said "not an integer: '4G'")."""
    assert getattr(settings_from(parse_args([flag, "4G"]), "t"), field) == 4 << 30


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-", "12X", "ten"])
def test_a_bad_size_is_a_usage_error(text: str) -> None:
    """Anything else is an argparse error (a one-line usage error on the command line)."""
    with pytest.raises(argparse.ArgumentTypeError):
        _size(text)


@pytest.mark.parametrize(
    "changes",
    [{"disk_limit": MIN_DISK_LIMIT - 1}, {"session_disk_limit": 0}, {"max_connections": 0},
     {"capture": "tty"}, {"spool_dir": "/nonexistent/spool"}, {"secret_env": ("",)}],
)
def test_bad_settings_are_refused_when_made(changes: dict[str, object]) -> None:
    """ServerSettings refuses a bad limit or option at once, with a ValueError naming it."""
    with pytest.raises(ValueError, match=next(iter(changes))):
        ServerSettings(**changes)  # type: ignore[arg-type]


async def test_past_the_connection_cap_a_handshake_gets_503() -> None:
    """With --max-connections 1, a second connection is refused with HTTP 503."""
    handler = make_handler(max_connections=1)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url, TOKEN) as first:
            await first.wait_connected()
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(handler.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None):
                    pass
            assert info.value.response.status_code == 503
        async with await connect(handler.url, TOKEN) as again:  # room again once the first left
            await again.wait_connected()
    finally:
        await handler.close()


async def _silent_connections(handler, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` TCP connections that never send a request, once the server holds them all."""
    held = [await asyncio.open_connection("127.0.0.1", handler.port) for _ in range(count)]
    await eventually_async(lambda: len(handler.server.handler_tasks) == count, what="the server holding them")
    return held


async def test_silent_handshakes_do_not_keep_a_client_with_the_token_out() -> None:
    """Connections that send nothing filled --max-connections until the handshake timeout,
    and a client with the right token got 503: now it takes the place of the oldest one,
    whose connection is closed."""
    handler = make_handler(max_connections=2)
    await handler.start("127.0.0.1", 0)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        held = await _silent_connections(handler, 2)
        assert await handshake_status(handler.url, Authorization=f"Bearer {TOKEN}") == 101
        assert await asyncio.wait_for(held[0][0].read(), scaled(10)) == b""
    finally:
        for _, writer in held:
            writer.close()
        await handler.close()


async def test_held_wrong_token_answers_do_not_keep_a_client_with_the_token_out() -> None:
    """Wrong tokens whose 401 is being delayed do not fill the server either: a client with
    the right token is let in and a held refusal is dropped, while a client without the
    token still gets 503 when the server is full of clients with it."""
    handler = make_handler(max_connections=2)
    never = asyncio.Event()

    async def hold(_delay: float) -> None:
        await never.wait()

    handler._refusal_wait = hold
    await handler.start("127.0.0.1", 0)
    try:
        handler.auth_failures.fail("127.0.0.1", time.monotonic())  # the next failures are delayed
        wrong = [asyncio.ensure_future(handshake_status(handler.url, Authorization="Bearer wrong")) for _ in range(2)]
        await eventually_async(lambda: len(handler.server.handler_tasks) == 2, what="two held refusals")
        async with await connect(handler.url, TOKEN) as first:
            await first.wait_connected()
            done, _ = await asyncio.wait(wrong, timeout=scaled(10), return_when=asyncio.FIRST_COMPLETED)
            assert done
            async with await connect(handler.url, TOKEN) as second:
                await second.wait_connected()
                with pytest.raises(InvalidStatus) as info:
                    async with ws_connect(handler.url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                                          proxy=None):
                        pass
                assert info.value.response.status_code == 503
        for task in wrong:
            task.cancel()
    finally:
        await handler.close()
