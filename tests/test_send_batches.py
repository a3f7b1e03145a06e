"""A connection's writer hands a batch of pending frames to ``send_many`` when the
transport has it (the websockets adapter: one socket write for the batch), in batches of
about ``_BATCH_BYTES`` so that the slow-client check still sees progress. Each chunk stays
its own WebSocket frame, in order."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streamcore import Completion
from streamcore.outbox import Outbox
from streamcore.session import _BATCH_BYTES, _send_batches

from .helpers import TIMEOUT, check_stream, connect, make_engine, record_calls, running
from .test_policy import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_batches_keep_order_stay_under_the_bound_and_count_progress():
    frames = [bytes([65 + i % 26]) * size for i, size in enumerate([100, 20_000, 15_000, 40_000, 10, 10, 32_000])]
    calls: list[tuple[str, list[bytes]]] = []
    progress: list[int] = []
    outbox = Outbox(1 << 20)

    async def send(frame: bytes) -> None:
        calls.append(("send", [frame]))
        progress.append(outbox.sent_bytes)

    async def send_many(batch: list[bytes]) -> None:
        calls.append(("many", batch))
        progress.append(outbox.sent_bytes)

    await _send_batches(frames, send, send_many, outbox)
    assert [f for _, batch in calls for f in batch] == frames  # every frame once, in order
    assert _BATCH_BYTES == 32 * 1024
    assert [(kind, [len(f) for f in batch]) for kind, batch in calls] == [
        ("many", [100, 20_000]),
        ("send", [15_000]),  # 15,000 + 40,000 is over the bound
        ("send", [40_000]),  # alone over the bound: sent on its own
        ("many", [10, 10, 32_000]),
    ]
    for kind, batch in calls:
        assert kind == "send" or sum(map(len, batch)) <= _BATCH_BYTES
    # Progress is counted after each call, not once at the end.
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    assert outbox.sent_bytes == sum(map(len, frames))


class BurstProvider:
    """Yields ``count`` pieces with no await in between: the writer finds them all pending."""

    model = "burst"

    def __init__(self, count: int) -> None:
        self.pieces = [f"{i:05d} " for i in range(count)]

    async def stream(self, request: Any):
        for piece in self.pieces:
            yield piece
        yield Completion()


async def _reply(client: Any) -> list[dict[str, Any]]:
    """Ask for one reply and read it to its END, bounded in time as a whole."""
    await client.send("USER_MESSAGE", {"content": "go"})
    with anyio.fail_after(TIMEOUT):
        return await client.until("AI_MESSAGE_END")


async def test_websockets_writes_a_burst_in_batches_each_chunk_its_own_frame(monkeypatch):
    from streamcore.adapters.websockets import WebsocketsConnection

    batches = record_calls(monkeypatch, WebsocketsConnection, "send_many")
    provider = BurstProvider(300)
    engine = make_engine(provider, limits={"coalesce_chunks": False})
    async with running(engine, "websockets") as url, connect(url) as client:
        frames = await _reply(client)
    end = check_stream(frames)
    chunks = [f["data"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK"]
    assert [c["content"] for c in chunks] == provider.pieces  # one frame per chunk, in order
    assert [c["index"] for c in chunks] == list(range(300))
    assert end["content"] == "".join(provider.pieces)
    assert batches and max(map(len, batches)) > 1  # the burst went out in batches


def _count_asgi_sends(monkeypatch) -> list[Any]:
    """Count the messages given to uvicorn's own ASGI ``send`` (the websockets-sansio one)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    return record_calls(monkeypatch, WebSocketsSansIOProtocol, "send")


async def test_uvicorn_frames_go_straight_to_the_protocol_in_batches(monkeypatch):
    from streamcore.adapters._direct import DirectConnection

    messages = _count_asgi_sends(monkeypatch)
    provider = BurstProvider(300)
    engine = make_engine(provider, limits={"coalesce_chunks": False})
    async with running(engine, "asgi") as url, connect(url) as client:
        frames = await _reply(client)
        (session,) = engine.sessions
        assert type(session.conn) is DirectConnection
    check_stream(frames)
    chunks = [f["data"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK"]
    assert [c["content"] for c in chunks] == provider.pieces
    # Only the handshake's accept went through the ASGI send: no frame did.
    assert [m["type"] for m in messages] == ["websocket.accept"]


async def test_a_middleware_around_the_app_sees_every_frame(monkeypatch):
    # With anything between uvicorn and the app (here a pure ASGI middleware that counts
    # what is sent), frames keep going through the ASGI send, where it can see them.
    from streamcore.adapters.asgi import ASGIConnection, StreamcoreASGI
    from streamcore.adapters.uvicorn import serve

    messages = _count_asgi_sends(monkeypatch)
    seen: list[str] = []
    engine = make_engine(BurstProvider(50), limits={"coalesce_chunks": False})
    inner = StreamcoreASGI(engine, lifespan=False)

    async def middleware(scope, receive, send):
        async def observed(message):
            seen.append(message["type"])
            await send(message)

        await inner(scope, receive, observed)

    async with serve(engine, "127.0.0.1", 0, app=middleware) as (_, port), \
            connect(f"ws://127.0.0.1:{port}{engine.config.server.path}") as client:
        frames = await _reply(client)
        (session,) = engine.sessions
        assert type(session.conn) is ASGIConnection
    check_stream(frames)
    assert seen.count("websocket.send") == len(frames) == len(messages) - 1  # + the accept


def _starlette_app(engine: Any, kind: str) -> Any:
    """A Starlette or FastAPI app serving ``engine`` at its path: a route at the root, a
    route inside a mounted sub-app, or a route behind a pure ASGI middleware."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    from streamcore.adapters.starlette import StreamcoreRoute, websocket_endpoint

    path = engine.config.server.path
    if kind == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        app.add_api_websocket_route(path, websocket_endpoint(engine))
        return app
    if kind in ("mounted", "nested"):
        head, _, tail = path.rpartition("/")
        assert tail  # the path's last segment becomes the route inside the mount
        route = StreamcoreRoute(f"/{tail}", engine)
        if kind == "mounted":
            return Starlette(routes=[Mount(head or "/", routes=[route])])
        # A Starlette app inside another: each wraps send in its exception handling.
        return Starlette(routes=[Mount(head or "/", app=Starlette(routes=[route]))])
    if kind == "asgi-mounted":
        from streamcore.adapters.asgi import StreamcoreASGI

        return Starlette(routes=[Mount("/", app=StreamcoreASGI(engine, lifespan=False))])
    if kind == "middleware":
        return Starlette(routes=[StreamcoreRoute(path, engine)], middleware=[Middleware(_Observe)])
    return Starlette(routes=[StreamcoreRoute(path, engine)])


class _Observe:
    """A pure ASGI middleware that records the type of every message sent through it."""

    seen: list[str] = []

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def observed(message: Any) -> None:
            _Observe.seen.append(message["type"])
            await send(message)

        await self.app(scope, receive, observed)


@pytest.mark.parametrize("kind", ["starlette", "fastapi", "mounted", "nested"])
async def test_starlette_and_fastapi_routes_write_frames_straight_to_uvicorn(monkeypatch, kind: str):
    # Starlette's exception handling wraps uvicorn's send in closures that only watch for
    # HTTP response starts: the route sees through them and writes frames to the protocol,
    # as a plain ASGI app does. Close still goes through Starlette's send (its state).
    from starlette.websockets import WebSocketState

    from streamcore.adapters._direct import DirectConnection
    from streamcore.adapters.uvicorn import serve

    messages = _count_asgi_sends(monkeypatch)
    states: list[Any] = []
    provider = BurstProvider(300)
    engine = make_engine(provider, limits={"coalesce_chunks": False})
    async with serve(engine, "127.0.0.1", 0, app=_starlette_app(engine, kind)) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}{engine.config.server.path}") as client:
            frames = await _reply(client)
            (session,) = engine.sessions
            assert type(session.conn) is DirectConnection
            websocket = session.conn._send.__self__  # Starlette's WebSocket, for the fallbacks
            states.append(websocket.application_state)
            await engine.shutdown()  # the server closes: through Starlette's send
            with anyio.fail_after(TIMEOUT):
                await client.closed()
            states.append(websocket.application_state)
    check_stream(frames)
    assert [f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK"] == provider.pieces
    # Only the accept and the close went through the ASGI send: no frame did.
    assert [m["type"] for m in messages] == ["websocket.accept", "websocket.close"]
    assert states == [WebSocketState.CONNECTED, WebSocketState.DISCONNECTED]


async def _reply_through(engine: Any, kind: str) -> tuple[list[dict[str, Any]], type]:
    """Serve ``engine`` in a :func:`_starlette_app` of ``kind`` under uvicorn and ask one
    reply: its frames, and the type of the session's connection."""
    from streamcore.adapters.uvicorn import serve

    async with serve(engine, "127.0.0.1", 0, app=_starlette_app(engine, kind)) as (_, port), \
            connect(f"ws://127.0.0.1:{port}{engine.config.server.path}") as client:
        frames = await _reply(client)
        (session,) = engine.sessions
        return frames, type(session.conn)


async def test_streamcore_asgi_mounted_in_starlette_writes_frames_straight_to_uvicorn(monkeypatch):
    from streamcore.adapters._direct import DirectConnection

    messages = _count_asgi_sends(monkeypatch)
    provider = BurstProvider(50)
    frames, conn = await _reply_through(make_engine(provider, limits={"coalesce_chunks": False}), "asgi-mounted")
    assert conn is DirectConnection
    check_stream(frames)
    assert [f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK"] == provider.pieces
    assert [m["type"] for m in messages] == ["websocket.accept"]


async def test_a_middleware_around_a_starlette_app_sees_every_frame(monkeypatch):
    from streamcore.adapters.asgi import ASGIConnection

    messages = _count_asgi_sends(monkeypatch)
    _Observe.seen = []
    frames, conn = await _reply_through(make_engine(BurstProvider(50), limits={"coalesce_chunks": False}), "middleware")
    assert conn is ASGIConnection
    check_stream(frames)
    assert _Observe.seen.count("websocket.send") == len(frames)
    assert len(messages) == len(frames) + 1  # + the accept


async def test_starlettes_own_senders_are_seen_through():
    from starlette._exception_handler import wrap_app_handling_exceptions
    from starlette.websockets import WebSocket

    from streamcore.adapters._direct import _unwrap_send

    async def inner(message: Any) -> None: ...

    given: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        given.append(send)

    conn = WebSocket({"type": "websocket"}, None, None)  # type: ignore[arg-type]
    twice = wrap_app_handling_exceptions(wrap_app_handling_exceptions(app, conn), conn)
    await twice({"type": "websocket"}, None, inner)
    (send,) = given
    assert send is not inner  # wrapped twice...
    assert _unwrap_send(send) is inner  # ...and seen through both


def test_only_starlettes_own_sender_is_seen_through():
    from streamcore.adapters._direct import _unwrap_send

    async def inner(message: Any) -> None: ...

    def wrap(send: Any) -> Any:
        async def sender(message: Any) -> None:  # same free variable, other module/name
            await send(message)

        return sender

    other = wrap(inner)
    assert _unwrap_send(other) is other
    assert _unwrap_send(inner) is inner


@pytest.mark.parametrize("adapter", ["websockets", "asgi", "starlette"])
async def test_permessage_deflate_on_the_direct_paths(adapter: str):
    # Frames handed to the Sans-I/O protocol are compressed by its negotiated extension,
    # batches included.
    provider = BurstProvider(300)
    engine = make_engine(provider, limits={"coalesce_chunks": False}, server={"compression": True})
    async with running(engine, adapter) as url, connect(url, compression="deflate") as client:
        assert client.ws.protocol.extensions  # permessage-deflate was negotiated
        frames = await _reply(client)
    end = check_stream(frames)
    assert end["content"] == "".join(provider.pieces)
    assert [f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK"] == provider.pieces


class EndlessProvider:
    """Yields small pieces until cancelled, giving the loop a turn every 50 pieces."""

    model = "endless"

    async def stream(self, request: Any):
        i = 0
        while True:
            i += 1
            if i % 50 == 0:
                await anyio.sleep(0)
            yield "x "


@pytest.mark.parametrize("adapter", ["websockets", "asgi", "starlette"])
async def test_a_peer_reset_mid_burst_ends_only_its_connection(adapter: str, caplog):
    # A client whose TCP connection is reset while frames are being written straight to the
    # socket: its session ends, with nothing logged as an error, and another client's
    # stream on the same server goes on to its END.
    import logging
    import socket
    import struct

    caplog.set_level(logging.WARNING, logger="streamcore")
    engine = make_engine(EndlessProvider(), limits={"coalesce_chunks": False}, runs={"grace_period": 0})
    async with running(engine, adapter) as url, connect(url) as victim, connect(url) as other:
        await victim.send("USER_MESSAGE", {"content": "go"})
        await victim.until("AI_MESSAGE_CHUNK")
        await other.send("USER_MESSAGE", {"content": "go"})
        await other.until("AI_MESSAGE_CHUNK")
        sock = victim.ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.ws.transport.abort()  # RST: the server's next writes fail
        await wait_until(lambda: len(engine.sessions) == 1, "the reset connection's session to end")
        await other.send("STOP_GENERATION", {})
        with anyio.fail_after(TIMEOUT):
            frames = await other.until("AI_MESSAGE_END")
    assert frames[-1]["data"]["stopReason"] == "user_cancelled"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
