"""The boundary between the engine and a transport adapter.

The engine sees a connection only through :class:`Connection`; adapters implement it for
their framework and translate the framework's "peer went away" exceptions into
:class:`~streamcore.errors.ConnectionClosed`.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Union

import msgspec

__all__ = ["Connection", "ConnectionInfo"]


class Connection(Protocol):
    """One accepted WebSocket, as the engine needs it."""

    async def receive(self) -> Union[str, bytes]:
        """Return the next message: ``str`` for a text frame, ``bytes`` for binary.

        Raises:
            ConnectionClosed: the peer closed or the connection broke.
        """

    async def send(self, frame: bytes) -> None:
        """Send one encoded frame (as text for JSON connections, binary for MessagePack).

        Raises:
            ConnectionClosed: the connection is gone.
        """

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection; must return within a bounded time even if the peer hangs."""


class ConnectionInfo(msgspec.Struct, kw_only=True):
    """What the handshake told us, for policies and logs.

    Attributes:
        headers: request headers, lower-case names.
        query: query-string parameters (first value of each).
        client: ``host:port`` of the peer, when known.
        path: the request path.
        subprotocol: the negotiated WebSocket subprotocol, if any.
        user_id: the authenticated subject, set by the auth policy.
        claims: the verified token's claims.
    """

    headers: Mapping[str, str] = {}
    query: Mapping[str, str] = {}
    client: Union[str, None] = None
    path: str = "/"
    subprotocol: Union[str, None] = None
    user_id: Union[str, None] = None
    claims: Union[dict, None] = None
