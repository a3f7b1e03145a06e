"""Frames written straight to uvicorn's ``websockets-sansio`` protocol.

Under uvicorn, an ASGI ``websocket.send`` of a text frame costs a message dict, the frame
decoded to ``str`` by the app and encoded back by the server, a coroutine and a socket
write per frame. When the app is uvicorn's own callee (``send`` and ``receive`` are bound
methods of the same ``WebSocketsSansIOProtocol``: no middleware in between that could
observe or change what is sent), :class:`DirectConnection` writes a batch of encoded
frames in one ``transport.write`` while the protocol is open and its socket takes data.
Each is the WebSocket frame uvicorn's ``send`` would write: made here (see
:mod:`adapters._wsframes`) when the connection has no extension, else by the protocol's
Sans-I/O ``conn`` (the websockets library's ``ServerProtocol``), which compresses it.
Anything else (flow control waiting, closing, a disconnected peer) goes through the ASGI
``send``, which waits or raises as uvicorn decides. A uvicorn release whose protocol lacks what is read here is
not recognised, and the app keeps the plain ASGI path.

Starlette (and FastAPI) pass uvicorn's ``send`` to a route through the closures of its
exception handling, which only watch for ``http.response.start``: those are seen through
(see :func:`_unwrap_send`). Any other wrapper, such as a middleware's, keeps the ASGI path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamcore.transport import FinishSend, start_send

from . import _wsframes
from .asgi import ASGIConnection, Receive, Send

__all__ = ["DirectConnection", "direct_protocol"]

_PROTOCOL = ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol")
#: what is read on the protocol (uvicorn 0.54 has all of it; a release without it keeps the ASGI path).
_ATTRS = ("conn", "transport", "writable", "disconnected", "close_sent", "handshake_complete", "initial_response")
#: Starlette's exception-handling wrapper of ``send`` (1.x): it reads ``http.response.start``, nothing else.
_STARLETTE_SENDER = ("starlette._exception_handler",
                     "wrap_app_handling_exceptions.<locals>.wrapped_app.<locals>.sender")


def _unwrap_send(send: Send) -> Send:
    """``send`` with Starlette's exception-handling closures taken off.

    Each wraps the ``send`` it was given, as its free variable ``send``, and looks only at
    HTTP response starts, so a WebSocket frame written past it is a frame it would have
    passed on unchanged. Known by module and qualified name: a Starlette release that
    changes them is not seen through, and keeps the ASGI path.
    """
    for _ in range(8):  # a route inside a mounted app has a few; bounded all the same
        if (getattr(send, "__module__", None), getattr(send, "__qualname__", None)) != _STARLETTE_SENDER:
            return send
        code, closure = send.__code__, send.__closure__ or ()  # type: ignore[attr-defined]
        cells = dict(zip(code.co_freevars, closure, strict=False))
        if "send" not in cells:
            return send
        send = cells["send"].cell_contents
    return send


def direct_protocol(receive: Receive, send: Send) -> Any:
    """uvicorn's sans-I/O protocol object when ``send`` and ``receive`` are its own, else None."""
    proto = getattr(_unwrap_send(send), "__self__", None)
    if proto is None or getattr(receive, "__self__", None) is not proto:
        return None  # wrapped (a framework, a middleware): keep the ASGI path
    cls = type(proto)
    if (cls.__module__, cls.__qualname__) != _PROTOCOL or not all(hasattr(proto, a) for a in _ATTRS):
        return None
    return proto


class DirectConnection(ASGIConnection):
    """An :class:`~adapters.asgi.ASGIConnection` that writes frames to uvicorn's protocol."""

    __slots__ = ("_proto", "_invalid", "_open", "_plain", "_first")

    def __init__(self, receive: Receive, send: Send, proto: Any, **kwargs: Any) -> None:
        from websockets.exceptions import InvalidState
        from websockets.protocol import State

        super().__init__(receive, send, **kwargs)
        self._proto = proto
        self._invalid = InvalidState
        self._open = State.OPEN
        #: frames encoded here (see adapters._wsframes): decided once the handshake is done.
        self._plain: bool | None = None
        self._first = _wsframes.BINARY if self._binary else _wsframes.TEXT

    def _write(self, frames: Sequence[bytes]) -> bool:
        """Write ``frames`` in one socket write if the protocol takes them now; False: use
        the ASGI ``send`` (it waits for the socket, or raises for a closed connection)."""
        p = self._proto
        if self._closed or p.disconnected or p.close_sent or not p.writable.is_set() or p.transport.is_closing():
            return False
        conn = p.conn
        plain = self._plain
        if plain is None:
            if not p.handshake_complete or p.initial_response is not None:
                return False
            plain = self._plain = _wsframes.plain_server(conn)
        if plain and conn.state is self._open and not conn.expect_continuation_frame and not conn.writes:
            p.transport.write(_wsframes.encode(self._first, frames))
            return True
        # The protocol's own path: extensions (permessage-deflate), frame logging, or
        # writes it queued itself (a pong), which go first.
        write = conn.send_binary if self._binary else conn.send_text
        try:
            for frame in frames:
                write(frame)
        except self._invalid:  # not open (a close under way): raised at the first frame
            return False
        p.transport.write(b"".join(conn.data_to_send()))
        return True

    async def send(self, frame: bytes) -> None:
        if not self._write((frame,)):
            await ASGIConnection.send(self, frame)

    async def send_many(self, frames: list[bytes]) -> None:
        """Send ``frames`` in order, each its own WebSocket frame, in one socket write."""
        if self._write(frames):
            return
        for frame in frames:
            await self.send(frame)

    def _send_now(self, frame: bytes) -> FinishSend | None:
        if self._write((frame,)):
            return None
        return start_send(ASGIConnection.send(self, frame))
