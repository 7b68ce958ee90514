"""Holding a Ctrl-C while a program's modules load, shared by the terminal client and the server.

A ``KeyboardInterrupt`` raised where a Ctrl-C lands can land inside an extension module's
initialisation, which is not safe against it: orjson's crashed the client with SIGSEGV. Both
entry points (``python -m cc_executor_nb``, ``python -m cc_executor_nb.server``) hold it
until their modules are loaded and then end as a Ctrl-C at that point ends."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["sigint_held"]


@contextlib.contextmanager
def sigint_held(pending: list[int]) -> Iterator[None]:
    """SIGINT appends to ``pending`` instead of raising, while the block runs (in the main
    thread, where Python's default handler is installed; elsewhere nothing changes)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    signal.signal(signal.SIGINT, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
