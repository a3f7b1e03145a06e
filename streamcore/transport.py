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

A connection may also offer ``send_now(frame)``: start the send in the calling task and
return None once done, or a :class:`FinishSend` for the writer task to await. The engine
uses it to send a chunk straight from the run's task while the writer is idle. It may
offer ``send_many(frames)`` too: send several frames, in order and each its own frame, in
one write to the socket; the writer uses it for a batch of pending frames.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Mapping
from typing import Any, Protocol, Union

import msgspec

__all__ = ["FinishSend", "start_send", "CloseReason", "SendStream", "Connection", "ConnectionInfo"]


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


class FinishSend:
    """The rest of a send coroutine that began in another task and had to wait.

    :func:`start_send` runs a transport's ``send`` coroutine in the calling task (a run's)
    until it completes or first waits; in the second case the connection's writer task
    awaits this object, which carries on the same coroutine from where it stopped, the way
    a task would (the future it waits on is yielded to the writer's task). Only for sends
    that await nothing bound to the task that started them (asyncio timeouts, cancel
    scopes): transports say so with ``eager = True``.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Any, first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancelled while waiting: into the send
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def start_send(coro: Any) -> FinishSend | None:
    """Run a send coroutine until it completes (None) or waits (what finishes it).

    Raises:
        whatever the send raises before it first waits (``ConnectionClosed``...).
    """
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return FinishSend(coro, first)

