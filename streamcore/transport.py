r"""The boundary between the engine and a transport driver.

The engine sees a connection only through these protocols; drivers implement them for
their framework and translate the framework's "peer went away" exceptions into
:class:`~streamcore.errors.ConnectionClosed`:

- :class:`SendStream`: a send-only stream (an SSE response): ``send`` and ``close``.
- :class:`Connection`: a duplex connection (a WebSocket): a :class:`SendStream` that
  also ``receive``\ s. A send-only driver's ``receive`` waits until the client leaves,
  then raises ``ConnectionClosed``, so one session loop serves both.

The engine closes with a :class:`CloseReason`; WebSocket drivers send its value as the
close code, an SSE driver ends its response.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol, Union

import msgspec

__all__ = ["CloseReason", "SendStream", "Connection", "ConnectionInfo"]


class CloseReason(enum.IntEnum):
    """Why the server closes a connection; the values are the WebSocket close codes."""

    NORMAL = 1000
    GOING_AWAY = 1001  #: server shutdown, idle timeout
    POLICY = 1008  #: authentication failed, flooding, a client too slow to read
    TOO_BIG = 1009  #: a frame over twice the size limit
    SERVER_ERROR = 1011
    RESTART = 1012


class SendStream(Protocol):
    """A send-only stream of frames (an SSE response)."""

    async def send(self, frame: bytes) -> None:
        """Send one encoded frame.

        Raises:
            ConnectionClosed: the client is gone.
        """

    async def close(self, code: int = CloseReason.NORMAL, reason: str = "") -> None:
        """End the stream; must return within a bounded time even if the peer hangs."""


class Connection(Protocol):
    """One accepted duplex connection (a WebSocket), as the engine needs it."""

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
    claims: Union[dict[str, Any], None] = None
