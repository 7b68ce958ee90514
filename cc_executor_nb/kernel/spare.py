"""A spare connection to the in-kernel server, dialled ahead for the next run.

Opening a session costs a run 1.5-2 ms before its process can start (the WebSocket
handshake and the server's ``connected``), all of it before the CLI's own start-up. So
the kernel's background loop keeps at most one connection dialled in the background
(after a run to the in-kernel server ended) and hands it to the next run to that server:

- at most one, for one server (its URL and token): a run elsewhere never takes it;
- the loop closes it when its server changes (the retired server can then close) and
  when the loop stops (``%unload_ext``, ``%reload_ext``, kernel shutdown);
- it is no :class:`~cc_executor_nb.client.Client` until a run takes it (an
  :class:`~cc_executor_nb.client.Opened`: it reads and drops the idle session's
  heartbeats), and one whose connection dropped is never handed out (the run dials);
- a run that takes it owns it as if it had dialled it, and closes it at its end.

Everything here runs on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..client import Client, Opened, connect, dial
from ..errors import CCExecError

__all__ = ["Spare"]

logger = logging.getLogger("cc_executor_nb.kernel.spare")

Key = tuple[str, str | None]


class Spare:
    """At most one connection dialled ahead to one server (loop thread only)."""

    def __init__(self) -> None:
        self._key: Key | None = None
        self._dial: asyncio.Task[Opened] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Whether an open spare waits (for tests and diagnostics)."""
        dial = self._dial
        return (dial is not None and dial.done() and not dial.cancelled() and dial.exception() is None
                and not dial.result().closed)

    def fill(self, url: str, token: str | None) -> None:
        """Dial a spare to ``url`` in the background, unless one is there or under way."""
        if self._dial is not None and self._key == (url, token):
            return
        self._drop()
        self._key = (url, token)
        self._dial = asyncio.ensure_future(dial(url, token))
        self._dial.add_done_callback(_note_failure)

    async def take(self, url: str, token: str | None, *, reconnect_timeout: float) -> Client | None:
        """A session on the spare for ``url`` (waiting for its dial if under way), or None:
        dial your own (as without a spare; a failure is then reported as usual)."""
        dial, key = self._dial, self._key
        self._dial = self._key = None
        if dial is None:
            return None
        if key != (url, token):
            await _close(dial)
            return None
        try:
            opened = await dial  # a cancelled take cancels the dial: no socket is left open
        except Exception:  # said by _note_failure
            return None
        if opened.closed:
            await _close(dial)
            return None
        try:
            return await connect(url, token, buffer_events=False, reconnect_timeout=reconnect_timeout, opened=opened)
        except (OSError, CCExecError, TimeoutError) as exc:
            logger.debug("! the spare connection could not be used: %s", exc)
            return None

    async def close(self, url: str | None = None, token: str | None = None) -> None:
        """Close the spare (and any dial under way), or only one for ``url`` and ``token``
        when ``url`` is given; returns once closed. Idempotent."""
        if url is None or self._key == (url, token):
            self._drop()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _drop(self) -> None:
        dial, self._dial, self._key = self._dial, None, None
        if dial is not None:
            task = asyncio.ensure_future(_close(dial))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


async def _close(dial: asyncio.Task[Opened]) -> None:
    if not dial.done():
        dial.cancel()
    await asyncio.wait((dial,))
    if dial.cancelled() or dial.exception() is not None:
        return
    with contextlib.suppress(OSError, CCExecError):  # already broken: nothing to close
        await dial.result().close()


def _note_failure(dial: asyncio.Task[Opened]) -> None:
    if not dial.cancelled() and dial.exception() is not None:
        logger.debug("! dialling a spare connection failed: %s", dial.exception())
