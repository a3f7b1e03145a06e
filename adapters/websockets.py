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
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from streamcore.errors import ConnectionClosed
from streamcore.http import StaticRoutes
from streamcore.transport import ConnectionInfo

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection

    from streamcore.engine import Engine

__all__ = ["WebsocketsConnection", "serve"]


class WebsocketsConnection:
    """:class:`~streamcore.transport.Connection` over a websockets ``ServerConnection``."""

    def __init__(self, ws: ServerConnection, *, binary: bool) -> None:
        import websockets.exceptions

        self._ws = ws
        self._text = not binary
        self._closed_exc = websockets.exceptions.ConnectionClosed

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except self._closed_exc as exc:
            raise ConnectionClosed(exc.rcvd.code if exc.rcvd else 1006) from None

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame, text=self._text)
        except self._closed_exc as exc:
            raise ConnectionClosed(exc.rcvd.code if exc.rcvd else 1006) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        # Bounded by the server's close_timeout, after which the TCP connection is dropped.
        await self._ws.close(code, reason)


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
        conn = WebsocketsConnection(ws, binary=info.subprotocol is not None)
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
    try:
        yield server
    finally:
        await engine.shutdown()
        server.close(close_connections=True)
        await server.wait_closed()
        await engine.aclose()
