"""Limits and their entry points: sizes on the command line, the connection cap, the settings."""

from __future__ import annotations

import argparse

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from cc_executor_nb.client import connect
from cc_executor_nb.server.config import MIN_DISK_LIMIT, ServerSettings
from cc_executor_nb.server.main import _size, parse_args, settings_from

from .conftest import TOKEN, make_handler

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
