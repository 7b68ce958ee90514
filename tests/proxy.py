"""A TCP proxy on 127.0.0.1 that can cut or freeze connections, for fault tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class FaultyProxy:
    """Forwards 127.0.0.1:port to a target; ``drop()`` cuts every connection abruptly."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = asyncio.Event()
        self.refusing = False
        """While set, new connections are cut at once (the server looks unreachable)."""
        self.drops = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def drop(self) -> None:
        """Reset every live connection (no close frame, like a network loss)."""
        for pair in list(self._pairs):
            for writer in pair:
                writer.transport.abort()
        self._pairs.clear()
        self.drops += 1

    def freeze(self) -> None:
        """Stop forwarding bytes (the peer looks frozen) without closing anything."""
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()

    def cut_and_thaw(self) -> None:
        """Drop every connection, then forward again: what the frozen path held is gone with it."""
        self.drop()
        self.thaw()

    async def close(self) -> None:
        self.thaw()
        if self._server is not None:
            self._server.close()
        self.drop()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        self._pairs.discard(pair)
        for w in pair:
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            while data := await reader.read(1 << 16):
                while self.frozen.is_set():
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # pass a clean half-close on


async def on_loop(action: Callable[[], None]) -> None:
    """Run ``action`` (a proxy's ``freeze``, ``thaw``, ``drop`` ...) on the loop that awaits this."""
    action()
