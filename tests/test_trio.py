"""The engine on trio: the paths asyncio never takes (task groups instead of plain tasks,
anyio events instead of futures for the writer's wake-up) serve a connection the same.

The WebSocket servers are asyncio-only, so the connection is an in-memory one; the
engine, sessions, runs and outbox are the real ones.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from streamcore import ConnectionInfo
from streamcore.errors import ConnectionClosed

from .helpers import TIMEOUT, ScriptedProvider, check_stream, make_engine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


class MemoryConnection:
    """A duplex connection whose client side is two memory streams."""

    def __init__(self) -> None:
        self.to_server, self._incoming = anyio.create_memory_object_stream[str](16)
        self._outgoing, self.from_server = anyio.create_memory_object_stream[bytes](1024)

    async def receive(self) -> str:
        try:
            return await self._incoming.receive()
        except anyio.EndOfStream:
            raise ConnectionClosed(1000) from None

    async def send(self, frame: bytes) -> None:
        try:
            await self._outgoing.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ConnectionClosed(1006) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._outgoing.aclose()

    async def frame(self) -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT):
            return json.loads(await self.from_server.receive())

    async def until(self, type: str) -> list[dict[str, Any]]:
        frames = [await self.frame()]
        while frames[-1]["type"] != type:
            frames.append(await self.frame())
        return frames


async def test_a_reply_a_stop_and_an_async_handler_on_trio():
    provider = ScriptedProvider(("Bon", "jour", " !"), gate_after=2)
    engine = make_engine(provider)
    seen = []

    @engine.on("ECHO")
    async def echo(session, frame):  # a coroutine handler: a background task of the session
        await anyio.sleep(0)
        seen.append(frame.data)
        session.send("ECHOED", frame.data)

    conn = MemoryConnection()
    async with engine, anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        await conn.to_server.send(json.dumps({"type": "USER_MESSAGE", "id": "r1", "data": {"content": "hi"}}))
        with anyio.fail_after(TIMEOUT):
            await provider.reached_gate.wait()
        await conn.to_server.send(json.dumps({"type": "ECHO", "data": {"x": 1}}))
        frames = await conn.until("ECHOED")  # answered while the reply waits
        assert frames[-1]["data"] == {"x": 1} and seen == [{"x": 1}]
        provider.gate.set()
        frames = frames[:-1] + await conn.until("AI_MESSAGE_END")
        assert check_stream(frames)["content"] == "Bonjour !"
        # A second reply, stopped half-way.
        provider.gate = anyio.Event()
        provider.reached_gate = anyio.Event()
        await conn.to_server.send(json.dumps({"type": "USER_MESSAGE", "id": "r2", "data": {"content": "again"}}))
        with anyio.fail_after(TIMEOUT):
            await provider.reached_gate.wait()
        await conn.to_server.send(json.dumps({"type": "STOP_GENERATION", "data": {}}))
        end = (await conn.until("AI_MESSAGE_END"))[-1]["data"]
        assert end["stopReason"] == "user_cancelled" and end["content"] == "Bonjour"
        await conn.to_server.aclose()  # the client leaves: the session ends
        with anyio.fail_after(TIMEOUT):
            while engine.sessions:
                await anyio.sleep(0.01)
