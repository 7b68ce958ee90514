"""The standalone server with experimental patches, to measure a change before making it.

    python -m benchmarks.patched_server --patches NAME[,NAME...] -m cc_executor_nb.server ARGS...

(the ``-m cc_executor_nb.server`` in the middle keeps the command line recognisable to
``ServerProcess``). Patches, applied by monkeypatching before the server starts:

  orjson        serialize every message with orjson (needs the orjson package)
  write-limit   websockets write buffer high-water mark 1 MiB instead of 32 KiB
  chunk-256k    process.output pieces of up to 262,144 characters instead of 65,536
  yield-pump    the output pump yields to the loop after every notification
  heartbeat-timer  the heartbeat loop sleeps on one timer instead of wait_for(Event)

Nothing here is used by the benchmark suite itself; see ``benchmarks/experiment.py``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

__all__ = ["PATCHES", "apply", "main"]


def _orjson() -> None:
    import orjson

    from cc_executor_nb import protocol

    def dumps(value: object) -> str:
        return orjson.dumps(value).decode()

    protocol.dumps = dumps


def _write_limit() -> None:
    from cc_executor_nb import handler

    handler.serve = functools.partial(handler.serve, write_limit=1 << 20)  # type: ignore[assignment]


def _chunk_256k() -> None:
    from cc_executor_nb import server, stream

    server.StreamHandler = functools.partial(stream.StreamHandler, chunk_limit=1 << 18)  # type: ignore[misc]


def _yield_pump() -> None:
    import asyncio

    from cc_executor_nb import session

    original = session.Session.notify

    async def notify(self: session.Session, method: str, params: dict) -> int:  # type: ignore[type-arg]
        seq = await original(self, method, params)
        if method == "process.output":
            await asyncio.sleep(0)
        return seq

    session.Session.notify = notify  # type: ignore[method-assign]


def _heartbeat_timer() -> None:
    """Wake the heartbeat with one timer future instead of wait_for(Event.wait(), timeout).

    wait_for wraps the wait in a task and, on timeout, cancels it and waits for the
    cancellation: about three loop iterations per beat instead of one. Settings changes
    are picked up at the next beat (enough for the benchmarks, which set none).
    """
    import asyncio
    import contextlib

    from websockets.exceptions import ConnectionClosed

    from cc_executor_nb import handler

    async def heartbeat_loop(self: handler.EnhancedWebSocketHandler, session: handler.Session) -> None:
        loop = asyncio.get_running_loop()
        interval = session.heartbeat_interval
        next_beat = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_beat - loop.time()))
            interval = self._beat_interval(session, interval)
            if self._beat_due(session, interval) and session.attached:
                with contextlib.suppress(ConnectionClosed):
                    await session.heartbeat(interval)
            next_beat = self._next_beat(session, next_beat, interval, loop.time())

    handler.EnhancedWebSocketHandler._heartbeat_loop = heartbeat_loop  # type: ignore[method-assign]


PATCHES: dict[str, Callable[[], None]] = {
    "orjson": _orjson,
    "write-limit": _write_limit,
    "chunk-256k": _chunk_256k,
    "yield-pump": _yield_pump,
    "heartbeat-timer": _heartbeat_timer,
}


def apply(names: Sequence[str]) -> None:
    """Apply the named patches (unknown names raise KeyError)."""
    for name in names:
        PATCHES[name]()


def main(argv: Sequence[str]) -> int:
    """Apply ``--patches`` and run the server with the arguments after ``-m cc_executor_nb.server``."""
    patches: list[str] = []
    args = list(argv)
    if args and args[0].startswith("--patches="):
        patches = [p for p in args.pop(0).split("=", 1)[1].split(",") if p]
    if args[:2] != ["-m", "cc_executor_nb.server"]:
        raise SystemExit("usage: python -m benchmarks.patched_server --patches=A,B -m cc_executor_nb.server ARGS")
    apply(patches)
    from cc_executor_nb import server

    return server.main(args[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
