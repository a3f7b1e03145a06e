"""Admission holes of the hostile-client issue, each a regression test (engine level)."""

from __future__ import annotations

import anyio
import pytest

from streamcore import ConnectionInfo
from streamcore.testing import memory_pair

from .helpers import ScriptedProvider, make_engine, types
from .test_runs import connection

pytestmark = pytest.mark.anyio


async def test_session_generate_goes_through_the_concurrency_limit():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider, limits={"max_concurrent_generations": 1})

    @engine.on("ASK")
    def ask(session, frame):
        session.generate(engine.request([]), request_id=frame.id)

    async with connection(engine) as c:
        await c.send("ASK", {}, id="one")
        await c.receive_until("AI_MESSAGE_CHUNK")
        await c.send("ASK", {}, id="two")
        err = (await c.receive())["data"]
        provider.gate.set()
        await c.receive_until("AI_MESSAGE_END")
    assert err["code"] == "RATE_LIMIT" and err["requestId"] == "two"
    assert provider.opened == 1
    await engine.aclose()


async def test_total_generations_are_capped():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider, limits={"max_generations": 1})
    async with connection(engine, user_id="ann") as a, connection(engine, user_id="bob") as b:
        await a.send("USER_MESSAGE", {"content": "x"})
        await a.receive_until("AI_MESSAGE_CHUNK")
        await b.send("USER_MESSAGE", {"content": "y"}, id="late")
        err = (await b.receive())["data"]
        provider.gate.set()
        await a.receive_until("AI_MESSAGE_END")
    assert err["code"] == "RATE_LIMIT" and err["requestId"] == "late"
    await engine.aclose()


async def test_stop_and_ping_are_answered_while_a_handler_is_slow():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider)
    release = anyio.Event()

    @engine.on("SLOW")
    async def slow(session, frame):
        await release.wait()  # a store or an application's I/O that takes its time
        session.send("SLOW_DONE", {})

    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"})
        message_id = (await c.receive_until("AI_MESSAGE_START"))[-1]["data"]["messageId"]
        await c.send("SLOW", {})
        await c.send("PING", {"timestamp": 7})
        await c.send("STOP_GENERATION", {"messageId": message_id})
        frames = []
        with anyio.fail_after(5):
            while "AI_MESSAGE_END" not in types(frames) or "PONG" not in types(frames):
                frames.append(await c.receive())
        assert "SLOW_DONE" not in types(frames)  # the handler is still waiting
        release.set()
        assert (await c.receive_until("SLOW_DONE"))[-1]["type"] == "SLOW_DONE"
    assert frames[-1]["type"] in ("AI_MESSAGE_END", "PONG")
    end = next(f for f in frames if f["type"] == "AI_MESSAGE_END")
    assert end["data"]["stopReason"] == "user_cancelled"
    await engine.aclose()


class FollowUpProvider(ScriptedProvider):
    """Answers chat at once; its follow-up request waits at the gate."""

    async def stream(self, request):
        self.requests.append(request)
        self.opened += 1
        try:
            if request.purpose == "follow_up":
                self.reached_gate.set()
                await self.gate.wait()
                yield '["Q1?", "Q2?"]'
            else:
                yield "answer"
        finally:
            self.closed += 1


async def test_follow_up_questions_are_counted_and_stoppable():
    provider = FollowUpProvider()
    engine = make_engine(
        provider, features={"follow_up_questions": "session"}, limits={"max_concurrent_generations": 1}
    )
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"})
        end = (await c.receive_until("AI_MESSAGE_END"))[-1]["data"]
        with anyio.fail_after(5):
            await provider.reached_gate.wait()
        # The follow-up generation holds the user's one slot...
        await c.send("USER_MESSAGE", {"content": "y"}, id="busy")
        busy = (await c.receive())["data"]
        # ...and STOP_GENERATION with the message id cancels it.
        await c.send("STOP_GENERATION", {"messageId": end["messageId"]})
        with anyio.fail_after(5):
            while engine.runs:
                await anyio.sleep(0.01)
    assert busy["code"] == "RATE_LIMIT" and busy["requestId"] == "busy"
    assert provider.closed == provider.opened == 2
    await engine.aclose()


class Trickle:
    """A connection whose client takes one frame every ``pause`` seconds."""

    def __init__(self, conn, pause: float) -> None:
        self.conn = conn
        self.pause = pause

    async def receive(self):
        return await self.conn.receive()

    async def send(self, frame: bytes) -> None:
        await anyio.sleep(self.pause)  # a slow mobile link, but it keeps reading
        await self.conn.send(frame)

    async def close(self, code=1000, reason=""):
        await self.conn.close(code, reason)


async def test_a_slow_but_steady_reader_is_not_taken_for_a_dead_one():
    # 12 frames, each taking 0.25 s to go out, with slow_client_timeout = 1: the writer is
    # busy for 3 s in all, but makes progress every 0.25 s, so the connection lives.
    pieces = tuple(f"p{i} " for i in range(12))
    engine = make_engine(
        ScriptedProvider(pieces),
        limits={"slow_client_timeout": 1.0, "coalesce_chunks": False, "idle_timeout": 60},
    )
    conn, client = memory_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, Trickle(conn, 0.25), ConnectionInfo())
        with anyio.fail_after(15):
            await client.send("USER_MESSAGE", {"content": "x"})
            frames = await client.receive_until("AI_MESSAGE_END")
        await client.aclose()
    assert conn.close_code is None or conn.close_code == 1000
    assert "".join(f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK") == "".join(pieces)
    await engine.aclose()
