"""The engine on trio: the paths asyncio never takes (task groups instead of plain tasks,
anyio events instead of futures for the writer's wake-up) serve a connection the same.

The WebSocket servers are asyncio-only, so the connection is the in-memory one of
:mod:`streamcore.testing`; the engine, sessions, runs and outbox are the real ones.
"""

from __future__ import annotations

import anyio
import pytest

from streamcore import ConnectionInfo
from streamcore.testing import memory_pair

from .helpers import TIMEOUT, ScriptedProvider, check_stream, make_engine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_a_reply_a_stop_and_an_async_handler_on_trio():
    provider = ScriptedProvider(("Bon", "jour", " !"), gate_after=2)
    engine = make_engine(provider)
    seen = []

    @engine.on("ECHO")
    async def echo(session, frame):  # a coroutine handler: a background task of the session
        await anyio.sleep(0)
        seen.append(frame.data)
        session.send("ECHOED", frame.data)

    conn, client = memory_pair()
    served = anyio.Event()

    async def serve() -> None:
        await engine.serve(conn, ConnectionInfo())
        served.set()

    async with engine, anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.fail_after(TIMEOUT):
            await client.send("USER_MESSAGE", {"content": "hi"}, id="r1")
            await provider.reached_gate.wait()
            await client.send("ECHO", {"x": 1})
            frames = await client.receive_until("ECHOED")  # answered while the reply waits
            assert frames[-1]["data"] == {"x": 1} and seen == [{"x": 1}]
            provider.gate.set()
            frames = frames[:-1] + await client.receive_until("AI_MESSAGE_END")
            assert check_stream(frames)["content"] == "Bonjour !"
            # A second reply, stopped half-way.
            provider.gate = anyio.Event()
            provider.reached_gate = anyio.Event()
            await client.send("USER_MESSAGE", {"content": "again"}, id="r2")
            await provider.reached_gate.wait()
            await client.send("STOP_GENERATION")
            end = (await client.receive_until("AI_MESSAGE_END"))[-1]["data"]
            assert end["stopReason"] == "user_cancelled" and end["content"] == "Bonjour"
            await client.aclose()  # the client leaves: the session ends
            await served.wait()
        assert not engine.sessions
