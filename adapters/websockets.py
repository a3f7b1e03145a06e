"""Serve an :class:`~streamcore.Engine` with the ``websockets`` library.

Example::

    engine = Engine(load_config())
    async with serve(engine, "127.0.0.1", 8000) as server:
        await server.serve_forever()

The library is imported lazily, when :func:`serve` is first called, so importing this module
costs nothing for apps that use another adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from streamcore._heap import freeze_startup_heap
from streamcore.errors import ConnectionClosed
from streamcore.http import StaticRoutes
from streamcore.transport import ConnectionInfo

from . import _wsframes

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection

    from streamcore.engine import Engine

__all__ = ["WebsocketsConnection", "serve"]


class WebsocketsConnection:
    """:class:`~streamcore.transport.Connection` over a websockets ``ServerConnection``.

    Frames are written in one socket write for a frame or a batch while the connection
    is open and no fragmented message is being sent, then a paused socket is drained.
    Each is encoded here when no extension was negotiated (see :mod:`adapters._wsframes`),
    else through the connection's Sans-I/O ``protocol``, which compresses it. That is
    what ``send()`` does, without its per-frame ``async with`` context, checks for
    fragments and iterables, and await. A closing connection goes through ``send()``,
    the library's own path.
    ``send_now`` (see :mod:`streamcore.transport`; off with ``eager=False``) takes the
    same fast path from a run's task while the connection's writer is idle. With a
    websockets release that lacks these attributes, every frame goes through ``send()``
    and there is no ``send_now``.
    """

    __slots__ = ("_ws", "_text", "_closed_exc", "_fast", "_eager", "_open", "_plain", "_first", "__weakref__")

    def __init__(self, ws: ServerConnection, *, binary: bool, eager: bool = True) -> None:
        import websockets.exceptions
        from websockets.protocol import State

        self._ws = ws
        self._text = not binary
        self._closed_exc = websockets.exceptions.ConnectionClosed
        self._open = State.OPEN
        self._fast = all(hasattr(ws, name) for name in _FAST_PATH)
        self._eager = eager and self._fast
        # Frames encoded here (see adapters._wsframes); the handshake is done by now.
        self._plain = self._fast and _wsframes.plain_server(ws.protocol)
        self._first = _wsframes.BINARY if binary else _wsframes.TEXT

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except self._closed_exc as exc:
            raise ConnectionClosed(exc.rcvd.code if exc.rcvd else 1006) from None

    async def send(self, frame: bytes) -> None:
        if self._fast and self._write((frame,)):
            if self._ws.paused:  # the socket buffer is over its high-water mark
                await self._drain()
            return
        try:
            await self._ws.send(frame, text=self._text)
        except self._closed_exc as exc:
            raise ConnectionClosed(exc.rcvd.code if exc.rcvd else 1006) from None

    async def send_many(self, frames: list[bytes]) -> None:
        """Send ``frames`` in order, each its own WebSocket frame, in one socket write
        (one system call for a batch of pending chunks instead of one per chunk)."""
        if self._fast and self._write(frames):
            if self._ws.paused:
                await self._drain()
            return
        for frame in frames:
            await self.send(frame)

    @property
    def send_now(self) -> Callable[[bytes], Any] | None:
        """``send_now(frame)`` on websockets releases with the fast path, else None (a
        property, not a bound method kept in an attribute: that would be a reference
        cycle)."""
        return self._send_now if self._eager else None

    def _send_now(self, frame: bytes) -> Any:
        if not self._ws.paused and self._write((frame,)):
            return None
        return _SendLater(self, frame)  # the writer sends it, through send()

    def _write(self, frames: Sequence[bytes]) -> bool:
        """Write ``frames`` in one socket write if the connection allows it now; False:
        use ``send()``."""
        ws = self._ws
        protocol = ws.protocol
        if protocol.state is not self._open or ws.send_in_progress is not None or ws.transport.is_closing():
            return False
        if self._plain and not protocol.expect_continuation_frame and not protocol.writes:
            ws.transport.write(_wsframes.encode(self._first, frames))
            return True
        # The protocol's own path: extensions (permessage-deflate), frame logging, or
        # writes it queued itself, which go first.
        send = protocol.send_text if self._text else protocol.send_binary
        for frame in frames:
            send(frame)
        data = protocol.data_to_send()
        if b"" in data:  # an end-of-stream marker (never while open): as send_data() does
            for chunk in data:
                if chunk:
                    ws.transport.write(chunk)
                elif ws.transport.can_write_eof():
                    ws.transport.write_eof()
                else:
                    ws.transport.close()
        else:
            ws.transport.write(b"".join(data))
        return True

    async def _drain(self) -> None:
        try:
            await self._ws.drain()
        except OSError:  # the connection was lost while the buffer was full
            raise ConnectionClosed(1006) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        # Bounded by the server's close_timeout, after which the TCP connection is dropped.
        await self._ws.close(code, reason)


#: what the fast path reads on a websockets ``ServerConnection`` (websockets 17 has all of it; a
#: release without it keeps ``send()``).
_FAST_PATH = ("protocol", "send_in_progress", "paused", "drain", "transport")


class _SendLater:
    """A send for the writer task to do (the coroutine is made only when awaited, so a
    connection that ends first leaves no never-awaited coroutine behind)."""

    __slots__ = ("_conn", "_frame")

    def __init__(self, conn: WebsocketsConnection, frame: bytes) -> None:
        self._conn = conn
        self._frame = frame

    def __await__(self) -> Generator[Any, None, None]:
        return self._conn.send(self._frame).__await__()


def _info(ws: ServerConnection) -> ConnectionInfo:
    request = ws.request
    url = urlsplit(request.path)
    remote = ws.remote_address
    return ConnectionInfo(
        headers={k.lower(): v for k, v in request.headers.raw_items()},
        query=dict(parse_qsl(url.query)),
        client=f"{remote[0]}:{remote[1]}" if remote else None,
        path=url.path,
        subprotocol=ws.subprotocol,
    )


@contextlib.asynccontextmanager
async def serve(
    engine: Engine,
    host: str | None = None,
    port: int | None = None,
    *,
    path: str | None = None,
    routes: StaticRoutes | None = None,
    **kwargs: Any,
) -> AsyncIterator[Server]:
    """Serve ``engine`` at ``ws://host:port/path``; on exit, shut down gracefully.

    Plain HTTP ``GET`` requests are answered from ``routes`` (``/healthz``, the demo page).

    Args:
        engine: the engine to serve.
        host: interface (``config.server.host`` by default).
        port: port (``config.server.port``; 0 picks a free one).
        path: WebSocket path (``config.server.path``).
        routes: static HTTP routes; :class:`~streamcore.http.StaticRoutes` by default.
        **kwargs: passed to ``websockets.asyncio.server.serve``.
    """
    from websockets.asyncio.server import serve as ws_serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    cfg = engine.config
    ws_path = path or cfg.server.path
    routes = routes or StaticRoutes(engine, ws_path)
    lim = cfg.limits

    def process_request(connection: ServerConnection, request: Any) -> Response | None:
        url = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # websockets only parses GET requests, so this is a plain GET.
            status, headers, body = routes.respond(url.path)
            return Response(status, HTTPStatus(status).phrase, Headers(headers), body)
        if url.path != ws_path:
            return connection.respond(HTTPStatus.NOT_FOUND, "no WebSocket endpoint here\n")
        if not engine.origin_allowed(request.headers.get("Origin")):
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        return None

    def select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
        return engine.select_subprotocol(offered)

    async def handler(ws: ServerConnection) -> None:
        # websockets gives each connection's protocol a closure over the connection to call
        # select_subprotocol: a reference cycle that would keep the connection's whole
        # state alive, after it closes, until a full garbage collection. The handshake is
        # over: drop it (the class's own method is left, never called again).
        vars(ws.protocol).pop("select_subprotocol", None)
        info = _info(ws)
        conn = WebsocketsConnection(ws, binary=info.subprotocol is not None, eager=cfg.server.eager_send)
        await engine.serve(conn, info)

    options: dict[str, Any] = dict(
        subprotocols=list(engine.subprotocols),
        select_subprotocol=select_subprotocol,
        process_request=process_request,
        compression="deflate" if cfg.server.compression else None,
        # Frames up to twice the limit are read and refused with INVALID_MESSAGE (the
        # connection lives); anything larger is refused by the protocol itself (1009).
        max_size=2 * lim.max_message_bytes,
        ping_interval=lim.ping_interval,
        ping_timeout=lim.ping_timeout,
        close_timeout=min(5.0, cfg.server.shutdown_timeout),
        server_header=None,
    )
    options.update(kwargs)
    server = await ws_serve(handler, host or cfg.server.host, cfg.server.port if port is None else port, **options)
    if cfg.server.gc_freeze:
        freeze_startup_heap()
    try:
        yield server
    finally:
        await engine.shutdown()
        server.close(close_connections=True)
        await server.wait_closed()
        await engine.aclose()
