"""Handshakes that have not shown the right token yet, so they cannot keep out one that has.

websockets counts a connection from its TCP accept, before its request arrives. A client
without the token could fill ``--max-connections`` with connections that send nothing
(each held until the handshake timeout) or with wrong tokens whose 401 is being delayed,
and a client with the token then got 503. :class:`Admission` remembers those unproven
connections, oldest first, so that a client with the token takes the place of the oldest.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection

__all__ = ["Admission"]


class Admission:
    """The server's connections that have not shown the right token, oldest first."""

    def __init__(self) -> None:
        self._unproven: dict[ServerConnection, None] = {}

    def __len__(self) -> int:
        return len(self._unproven)

    def enter(self, connection: ServerConnection) -> None:
        """A connection was accepted: unproven until :meth:`prove`."""
        self._unproven[connection] = None

    def prove(self, connection: ServerConnection) -> None:
        """The connection showed the right token (or needs none): never evicted."""
        self._unproven.pop(connection, None)

    def evict_oldest(self, keep: ServerConnection) -> bool:
        """Drop the oldest unproven connection but ``keep``; False when there is none."""
        for connection in self._unproven:
            if connection is not keep:
                self._unproven.pop(connection)
                connection.transport.abort()
                return True
        return False

    def connection_class(self) -> type[ServerConnection]:
        """A ``ServerConnection`` that enters this admission at accept and leaves at close."""
        admission = self

        class TrackedConnection(ServerConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                admission.enter(self)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                admission.prove(self)
                super().connection_lost(exc)

        return TrackedConnection
