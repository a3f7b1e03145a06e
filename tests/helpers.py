"""Shared test helpers: a scripted provider, real servers per adapter, a JSON WS client."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio

from streamcore import Completion, Config, Engine
from streamcore.events import Kind, Usage
from streamcore.ids import stamp
from streamcore.lifecycle import RunMachine

ADAPTERS = ["websockets", "asgi", "starlette"]
TIMEOUT = 15  # seconds: the upper bound of any single wait in a network test


@contextlib.asynccontextmanager
async def memory_session(
    engine: Engine, *, user_id: str | None = None, buffer: int = 1 << 16
) -> AsyncIterator[Any]:
    """``engine`` serving one in-memory connection; yields its client (10 s bound).

    ``buffer``: frames each way the memory streams hold. After the block, ``client.conn``
    is the server side of the connection."""
    from streamcore import ConnectionInfo
    from streamcore.testing import memory_pair

    conn, client = memory_pair(buffer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo(user_id=user_id))
        with anyio.fail_after(10):
            yield client
        await client.aclose()
    client.conn = conn


class ScriptedProvider:
    """A provider whose stream the test controls: pieces, gates, failures.

    It implements the real provider interface; it stands in for a model, not for any part
    of streamcore.
    """

    model = "scripted-1"

    def __init__(
        self,
        pieces: tuple[str, ...] = ("Hello", ", ", "world", "!"),
        *,
        gate_after: int | None = None,
        hang_before_first: bool = False,
        hang_after: int | None = None,
        error: BaseException | None = None,
        error_after: int = 0,
        finish_reason: str = "complete",
    ) -> None:
        self.pieces = pieces
        self.gate = anyio.Event()
        self.gate_after = gate_after
        self.hang_before_first = hang_before_first
        self.hang_after = hang_after
        self.error = error
        self.error_after = error_after
        self.finish_reason = finish_reason
        self.requests: list[Any] = []
        self.opened = 0
        self.closed = 0
        self.reached_gate = anyio.Event()

    async def stream(self, request):
        self.requests.append(request)
        self.opened += 1
        try:
            if self.hang_before_first:
                await anyio.sleep_forever()
            for i, piece in enumerate(self.pieces):
                if self.error is not None and i == self.error_after:
                    raise self.error
                yield piece
                if self.gate_after is not None and i + 1 == self.gate_after:
                    self.reached_gate.set()
                    await self.gate.wait()
                if self.hang_after is not None and i + 1 == self.hang_after:
                    await anyio.sleep_forever()
            if self.error is not None and self.error_after >= len(self.pieces):
                raise self.error
            yield Completion(self.finish_reason, Usage(3, len(self.pieces), 3 + len(self.pieces)), self.model)
        finally:
            self.closed += 1


def make_engine(provider: Any = None, /, **sections: dict[str, Any]) -> Engine:
    """An engine with ``sections`` overriding config tables, e.g. ``limits={"...": 1}``.

    ``provider`` is an instance; None loads the one ``provider={"name": ...}`` names.
    """
    import msgspec

    config = msgspec.convert(sections, Config)
    return Engine(config, provider=provider)


@contextlib.asynccontextmanager
async def running(engine: Engine, adapter: str) -> AsyncIterator[str]:
    """Serve ``engine`` on 127.0.0.1 (a free port) with ``adapter``; yield the ws:// URL."""
    path = engine.config.server.path
    if adapter == "websockets":
        from streamcore.adapters.websockets import serve

        async with serve(engine, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            yield f"ws://127.0.0.1:{port}{path}"
    elif adapter == "asgi":
        from streamcore.adapters.uvicorn import serve

        async with serve(engine, "127.0.0.1", 0) as (_, port):
            yield f"ws://127.0.0.1:{port}{path}"
    elif adapter == "starlette":
        from starlette.applications import Starlette

        from streamcore.adapters.starlette import StreamcoreRoute
        from streamcore.adapters.uvicorn import serve

        app = Starlette(routes=[StreamcoreRoute(path, engine)])
        async with serve(engine, "127.0.0.1", 0, app=app) as (_, port):
            yield f"ws://127.0.0.1:{port}{path}"
    elif adapter == "hypercorn":
        async with _hypercorn(engine) as port:
            yield f"ws://127.0.0.1:{port}{path}"
    else:  # pragma: no cover
        raise ValueError(adapter)


@contextlib.asynccontextmanager
async def _hypercorn(engine: Engine) -> AsyncIterator[int]:
    import socket

    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HConfig

    from streamcore.adapters.asgi import StreamcoreASGI

    # Hypercorn takes pre-bound sockets only through its own binder; a port known free a
    # moment ago is the usual way to give it one.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = HConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    config.websocket_max_message_size = 2 * engine.config.limits.max_message_bytes
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(StreamcoreASGI(engine), config, shutdown_trigger=stop.wait))
        with anyio.fail_after(TIMEOUT):
            while True:  # wait until it accepts connections
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    await stream.aclose()
                    break
                except OSError:
                    await anyio.sleep(0.02)
        try:
            yield port
        finally:
            with anyio.CancelScope(shield=True):
                await engine.shutdown()
                stop.set()


class Client:
    """A real WebSocket client speaking JSON envelopes, every wait bounded."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, type: str, data: Any = None, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": type, "data": {} if data is None else data, **fields}))

    async def send_raw(self, raw: str | bytes) -> None:
        await self.ws.send(raw)

    async def recv(self) -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT):
            raw = await self.ws.recv()
        return json.loads(raw)

    async def until(self, type: str, message_id: str | None = None) -> list[dict[str, Any]]:
        frames = []
        while True:
            frame = await self.recv()
            frames.append(frame)
            if frame["type"] == type and (message_id is None or frame["data"].get("messageId") == message_id):
                return frames

    async def closed(self) -> tuple[int | None, str | None]:
        """Wait for the server to close; return (code, reason) as this client saw them."""
        with anyio.fail_after(TIMEOUT):
            await self.ws.wait_closed()
        return self.ws.close_code, self.ws.close_reason


@contextlib.asynccontextmanager
async def connect(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    from websockets.asyncio.client import connect as ws_connect

    with anyio.fail_after(TIMEOUT):
        ws = await ws_connect(url, open_timeout=TIMEOUT, close_timeout=2, **kwargs)
    try:
        yield Client(ws)
    finally:
        await ws.close()


def record_calls(monkeypatch: Any, cls: type, name: str) -> list[Any]:
    """Patch the async method ``cls.name`` to record its first argument, then run it as
    before; return the list the calls are recorded in."""
    calls: list[Any] = []
    real = getattr(cls, name)

    async def recording(self: Any, arg: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(arg)
        return await real(self, arg, *args, **kwargs)

    monkeypatch.setattr(cls, name, recording)
    return calls


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def check_stream(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Assert one generation's frames follow the spec; return its AI_MESSAGE_END data."""
    kinds = types(frames)
    start = kinds.index("AI_MESSAGE_START")
    assert "AI_THINKING" in kinds[:start]
    end = frames[-1]
    assert end["type"] == "AI_MESSAGE_END"
    mid = end["data"]["messageId"]
    chunks = [f["data"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK" and f["data"]["messageId"] == mid]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert all(c["content"] for c in chunks)
    assert "".join(c["content"] for c in chunks) == end["data"].get("content", "")
    assert end["data"]["isComplete"] == (end["data"]["stopReason"] == "complete")
    for f in frames:
        assert isinstance(f["id"], str) and isinstance(f["timestamp"], int)
    return end["data"]


class LoggedRun:
    """What a Subscription reads (entries with text deltas bare, base, sealed), and the
    run's side of delivery, as :class:`streamcore.run.Run` does it: for pure tests of
    readers, without an engine or a task."""

    base = 0

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.machine = RunMachine(message_id)
        self.entries: list[Any] = []
        self.sealed = False
        self.subscribers: list[Any] = []

    def emit(self, entry: tuple) -> None:
        if entry[1] == Kind.TEXT:
            self.entries.append(entry[2])  # a text delta is logged as its bare str
            for sub in self.subscribers:
                sub.deliver_text(entry[0], entry[2])
        else:
            self.entries.append(entry)
            for sub in self.subscribers:
                sub.deliver(entry)

    def subscribe(self, sub: Any) -> None:
        sub.pump()
        if not sub.closed:
            self.subscribers.append(sub)

    def play(self, step: str, size: int) -> str | None:
        """Log one step of a model test: ``"text"`` (a delta naming its seq, ``size + 4``
        characters or more), ``"reasoning"``, ``"app"``, or anything else: the END, then
        the seal. Returns the text delta logged, if any."""
        if step == "text":
            text = f"<{self.machine.seq + 1}>".ljust(size + 4, "x")
            self.emit(self.machine.text_delta(text))
            return text
        if step == "reasoning":
            self.emit(self.machine.reasoning_delta(f"[{self.machine.seq + 1}]"))
        elif step == "app":
            self.emit(self.machine.app("CUSTOM_EVENT", {"n": self.machine.seq + 1}))
        else:
            for entry in self.machine.finish("complete"):
                self.emit(entry)
            self.seal()
        return None

    def seal(self) -> None:
        self.sealed = True
        for sub in self.subscribers:
            if not sub.lagging:
                sub.close()
        self.subscribers.clear()


def check_delivered(frames: list[bytes], run: LoggedRun, cursor: int) -> tuple[list[dict], list[tuple]]:
    """Assert that JSON ``frames`` carry every entry of ``run`` after ``cursor`` once, in
    order (chunks possibly merged): seqs, chunk indexes, text, reasoning, other events, one
    END unless the cursor was at or past it. Returns the frames decoded and the entries
    expected."""
    import msgspec

    from streamcore.events import expand

    received = [msgspec.json.decode(f) for f in frames]
    expected = [e for e in expand(run.entries) if e[0] > cursor]
    seqs = [f["data"]["seq"] for f in received]
    assert seqs == sorted(set(seqs))
    chunks = [f["data"] for f in received if f["type"] == "AI_MESSAGE_CHUNK"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["content"] for c in chunks) == "".join(e[2] for e in expected if e[1] == Kind.TEXT)
    reasoning = [f["data"]["content"] for f in received if f["type"] == "AI_REASONING_CHUNK"]
    assert "".join(reasoning) == "".join(e[2] for e in expected if e[1] == Kind.REASONING)
    others = [f["data"]["seq"] for f in received if f["type"] not in ("AI_MESSAGE_CHUNK", "AI_REASONING_CHUNK")]
    assert others == [e[0] for e in expected if e[1] not in (Kind.TEXT, Kind.REASONING)]
    # One END, unless the cursor was at or past it ("sends nothing").
    assert [f["type"] for f in received].count("AI_MESSAGE_END") == (cursor < run.machine.seq)
    return received, expected


def render_unbatched(dialect: Any, entries: list[tuple], message_id: str) -> bytes:
    """An SSE dialect fed entry by entry as a subscription would, each rendered at once
    (LATE frames in order; no buffer, no batch), with its trailer."""
    from streamcore.dialects.base import LATE

    text = dialect.chunk_encoder(message_id)
    thought = dialect.chunk_encoder(message_id, reasoning=True)
    now = stamp()
    out = b""
    index = 0
    for entry in entries:
        seq, kind, payload = entry
        if kind == Kind.TEXT:
            out += text(payload, index, seq, now)
            index += 1
        elif kind == Kind.REASONING:
            out += thought(payload, 0, seq, now)
        else:
            frame = dialect.encode_entry(entry, message_id)
            out += dialect.render_late() if frame is LATE else frame
    return out + dialect.trailer()
