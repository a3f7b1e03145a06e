"""Serve an :class:`~streamcore.Engine` as a plain ASGI application (no framework needed).

Runs under uvicorn (its ``websockets-sansio`` implementation included) and hypercorn, and
can be mounted at any path of a larger ASGI app::

    engine = Engine(load_config())
    app = StreamcoreASGI(engine)              # uvicorn module:app
    # or, inside Starlette/FastAPI:  app.mount("/api/v1/ws", StreamcoreASGI(engine, path=None))

The WebSocket endpoint is ``path`` (``config.server.path`` by default, relative to the
mount point); ``path=None`` accepts a WebSocket at any path it is mounted on. Plain HTTP
GETs get ``/healthz`` and the demo page; lifespan shutdown ends open generations with
``server_shutdown`` and closes sockets with 1001.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from streamcore.errors import ConnectionClosed
from streamcore.http import StaticRoutes
from streamcore.transport import ConnectionInfo, FinishSend, start_send

if TYPE_CHECKING:
    from streamcore.engine import Engine

__all__ = ["ASGIConnection", "StreamcoreASGI", "accept_and_serve", "connection_info", "eager_safe"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_DEFAULT = object()


class ASGIConnection:
    """:class:`~streamcore.transport.Connection` over an accepted ASGI WebSocket."""

    __slots__ = ("_receive", "_send", "_binary", "_closed", "_closed_errors", "_eager")

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        binary: bool,
        closed_errors: tuple[type, ...] = (),
        eager: bool = False,
    ) -> None:
        self._receive = receive
        self._send = send
        self._binary = binary
        self._closed = False
        self._eager = eager
        # uvicorn raises ClientDisconnected (an OSError), other servers a RuntimeError, and
        # Starlette its WebSocketDisconnect, once the socket is gone: all mean "peer left".
        self._closed_errors = (OSError, RuntimeError, *closed_errors)

    async def receive(self) -> str | bytes:
        if self._closed:
            raise ConnectionClosed(1006)
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")
        self._closed = True
        raise ConnectionClosed(message.get("code", 1005))

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise ConnectionClosed(1006)
        message = {"type": "websocket.send", "bytes": frame} if self._binary else {
            "type": "websocket.send", "text": frame.decode()
        }
        try:
            await self._send(message)
        except self._closed_errors as exc:
            self._closed = True
            raise ConnectionClosed(1006) from exc

    @property
    def send_now(self) -> Callable[[bytes], FinishSend | None] | None:
        """``send_now(frame)`` (see streamcore.transport) when eager sends are safe, else None.

        A property, not an attribute holding the bound method: that would be a reference
        cycle keeping the connection, and the server's whole socket state with it, alive
        until a full garbage collection.
        """
        return self._send_now if self._eager else None

    def _send_now(self, frame: bytes) -> FinishSend | None:
        return start_send(self.send(frame))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except self._closed_errors:
            pass


def connection_info(scope: Scope, subprotocol: str | None) -> ConnectionInfo:
    """Build :class:`ConnectionInfo` from an ASGI WebSocket scope."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    client = scope.get("client")
    return ConnectionInfo(
        headers=headers,
        query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
        client=f"{client[0]}:{client[1]}" if client else None,
        path=scope.get("path", "/"),
        subprotocol=subprotocol,
    )


async def accept_and_serve(
    engine: Engine,
    scope: Scope,
    receive: Receive,
    send: Send,
    closed_errors: tuple[type, ...] = (),
    server_receive: Receive | None = None,
    server_send: Send | None = None,
) -> None:
    """Check the Origin, accept with the negotiated subprotocol, and run the engine.

    Call it once the ``websocket.connect`` message has been received.

    Args:
        server_receive: the server's own ``receive`` callable when ``receive`` wraps it
            (tells which server runs the app; see :func:`eager_safe`).
        server_send: the ``send`` that ``send`` wraps, with ``server_receive``: when both
            are uvicorn's own, frames are written to its protocol (see ``adapters/_direct.py``),
            and ``receive``/``send`` still carry everything else.
    """
    info = connection_info(scope, None)
    if not engine.origin_allowed(info.headers.get("origin")):
        # A close before accept makes the server refuse the handshake (HTTP 403).
        await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
        return
    subprotocol = engine.select_subprotocol(scope.get("subprotocols") or ())
    info.subprotocol = subprotocol
    accept: Message = {"type": "websocket.accept"}
    if subprotocol:
        accept["subprotocol"] = subprotocol
    await send(accept)
    options: dict[str, Any] = dict(
        binary=subprotocol is not None, closed_errors=closed_errors,
        eager=engine.config.server.eager_send and eager_safe(server_receive or receive),
    )
    from ._direct import DirectConnection, direct_protocol

    proto = direct_protocol(server_receive or receive, server_send or send)
    conn = DirectConnection(receive, send, proto, **options) if proto is not None else ASGIConnection(
        receive, send, **options
    )
    await engine.serve(conn, info)


def eager_safe(receive: Receive) -> bool:
    """Whether this server's ``send`` may be started in one task and finished in another.

    uvicorn's sends wait only on plain futures (its flow-control event), never on a
    timeout or a cancel scope bound to a task, so a run may start a send and the writer
    finish it. Known by the ``receive`` callable, which frameworks pass on unwrapped
    (Starlette wraps ``send`` but not ``receive``); other servers get the writer task.
    """
    module = getattr(receive, "__module__", None) or ""
    return module.startswith("uvicorn.protocols.websockets.")


class StreamcoreASGI:
    """The engine as an ASGI 3 application.

    Args:
        engine: the engine to serve.
        path: WebSocket path relative to the mount point (``config.server.path`` by
            default; ``None``: any path).
        routes: plain-HTTP routes (``/healthz`` and the demo page by default; pass
            ``StaticRoutes(engine, static=False)`` to serve only ``/healthz``).
        lifespan: shut the engine down on ASGI lifespan shutdown. Leave it on when this
            app is the server's root app; a parent app should call ``engine.shutdown()``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        path: Any = _DEFAULT,
        routes: StaticRoutes | None = None,
        lifespan: bool = True,
    ) -> None:
        self.engine = engine
        self.path: str | None = engine.config.server.path if path is _DEFAULT else path
        self.routes = routes or StaticRoutes(engine, self.path or engine.config.server.path)
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _relative(self, scope: Scope) -> str:
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        # Starlette's Mount keeps the full path and sets root_path; other mounts strip it.
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        return path

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if self.path is not None and self._relative(scope) != self.path:
            await send({"type": "websocket.close", "code": 1008, "reason": "no endpoint here"})
            return
        await accept_and_serve(self.engine, scope, receive, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            status, headers, body = 405, [("Allow", "GET, HEAD")], b"method not allowed\n"
        else:
            status, headers, body = self.routes.respond(self._relative(scope))
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.lifespan:
                    await self.engine.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.lifespan:
                    await self.engine.shutdown()
                    await self.engine.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
