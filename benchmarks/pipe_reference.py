"""The references: the same child read straight from its pipe, with no server at all."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PIPE_SIZE", "PipeRead", "producer_alone", "read_pipe"]

# The server enlarges its children's pipes to this size; the reference does the same.
PIPE_SIZE = 1 << 20


class PipeRead(asyncio.Protocol):
    """Counts what a pipe yields; calls ``on_data(bytes, monotonic_ns)`` if given."""

    def __init__(self, on_data: Callable[[bytes, int], None] | None = None) -> None:
        self.bytes = 0
        self.on_data = on_data
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.on_data is not None:
            self.on_data(data, time.monotonic_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def read_pipe(
    argv: list[str],
    on_data: Callable[[bytes, int], None] | None = None,
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stderr: Any = None,
) -> tuple[int, float]:
    """Run ``argv`` and read its stdout with a plain asyncio pipe protocol.

    Returns (bytes read, seconds from spawn to end of file and exit). ``env``, ``cwd``
    and ``stderr`` go to the child as in ``subprocess``.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    started = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=stderr, env=env, cwd=cwd,
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
    reader = PipeRead(on_data)
    transport, _ = await loop.connect_read_pipe(lambda: reader, os.fdopen(read_fd, "rb", buffering=0))
    try:
        await reader.done
        await proc.wait()
    finally:
        transport.close()
    return reader.bytes, time.perf_counter() - started


def producer_alone(argv: list[str]) -> float:
    """Seconds the child takes writing to /dev/null (the producer's own ceiling)."""
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True, timeout=300)
    return time.perf_counter() - started
