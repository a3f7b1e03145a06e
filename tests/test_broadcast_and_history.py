"""Broadcast, end-of-run and history bugs found in review; each test failed on the code
it was written against. Every wait is bounded."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from streamcore import ConnectionInfo, Engine
from streamcore.codec import MSGPACK_SUBPROTOCOL
from streamcore.errors import ConnectionClosed
from streamcore.conversations import MemoryConversationStore
from streamcore.outbox import Outbox
from streamcore.provider import ChatMessage
from streamcore.testing import memory_pair

from .helpers import ScriptedProvider, make_engine

pytestmark = pytest.mark.anyio

PIECES = tuple(f"w{i} " for i in range(6))
WAIT = 10


@contextlib.asynccontextmanager
async def _connection(engine: Engine, *, user_id: str | None = None):
    conn, client = memory_pair(1 << 16)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo(user_id=user_id))
        with anyio.fail_after(WAIT):
            yield client
        await client.aclose()


# --- 2. broadcast -------------------------------------------------------------------------------


def test_a_broadcast_one_wire_format_cannot_encode_still_reaches_the_others():
    """Engine._deliver returned at the first encode failure: a payload msgpack cannot carry
    (an int past 64 bits, e.g. a UUID's int) but JSON can was lost for every JSON client
    that came after a msgpack one in the (arbitrary) set order."""
    engine = make_engine(ScriptedProvider())

    def session(subprotocol: str | None) -> Any:
        outbox = Outbox(1 << 16)
        return SimpleNamespace(
            closed=False, codec=engine.codec_for(subprotocol), outbox=outbox, queue=lambda f: outbox.put(f) or True
        )

    packed, plain = session(MSGPACK_SUBPROTOCOL), session(None)
    assert Engine._deliver([packed, plain], "NEWS", {"id": 2**70}) == 1
    assert len(plain.outbox) == 1 and len(packed.outbox) == 0


async def test_a_client_that_cannot_keep_up_with_broadcasts_is_closed_and_its_buffer_stays_bounded():
    """Broadcasts, topic and application events have no log to catch up from: queued for
    a client that does not read, they once grew its buffer without bound. Past 4 x
    send_buffer_bytes pending, the frame is dropped and the connection closed (1008)."""
    from streamcore.session import UNREPLAYABLE_FACTOR

    limit = 16 * 1024
    engine = make_engine(ScriptedProvider(PIECES), limits={"send_buffer_bytes": limit})
    conn, client = memory_pair(1)  # holds one frame: the writer then waits on this client
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(WAIT):
            await client.send("PING", {"timestamp": 1})
            await client.receive_until("PONG")
            (session,) = engine.sessions
            blob = "x" * 10_000
            for n in range(100):
                engine.broadcast("NEWS", {"n": n, "blob": blob})
                assert session.outbox.pending <= UNREPLAYABLE_FACTOR * limit + 10_100
            got = []
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append((await client.receive())["data"]["n"])
        await client.aclose()
    assert conn.close_code == 1008
    assert len(got) < 100 and got == sorted(got)  # what reached it came in order
    await engine.aclose()


# --- 3/4. end of a run: stop, history ------------------------------------------------------------


class _SlowStore(MemoryConversationStore):
    """A store that does I/O (as Redis does): the turn is written after the END."""

    immediate = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writing = anyio.Event()
        self.written = anyio.Event()

    async def add_turn(self, owner: str, conversation_id: str, messages: list[ChatMessage]) -> None:
        self.writing.set()
        await self.written.wait()
        await super().add_turn(owner, conversation_id, messages)


async def test_a_stop_while_the_turn_is_being_recorded_stops_the_follow_up_questions():
    """Run.stop() after the END but before the follow-up phase (while the turn is written
    to a store that does I/O) found the state ENDED and the provider scope exited, so it
    did nothing: the follow-up call to the model (up to generation_timeout) ran anyway,
    keeping the run, its SSE responses and a shutdown waiting."""
    provider = ScriptedProvider(PIECES)
    engine = make_engine(provider, features={"follow_up_questions": "session"})
    store = engine.conversations = _SlowStore()
    async with _connection(engine, user_id="ann") as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        frames = await c.receive_until("AI_MESSAGE_END")
        message_id = frames[-1]["data"]["messageId"]
        await store.writing.wait()
        run = engine.runs[message_id]
        await c.send("STOP_GENERATION", {"messageId": message_id})
        await c.send("PING", {"timestamp": 1})
        await c.receive_until("PONG")  # the STOP was handled
        store.written.set()
        await run.done.wait()
    assert provider.opened == 1  # no follow-up request after the stop
    await engine.aclose()


async def test_anonymous_clients_do_not_evict_each_others_conversations():
    """Every anonymous conversation is kept under one owner ("a:*"), so the per-user bound
    (conversations_per_owner) applied to all anonymous clients together: another anonymous
    client starting that many conversations dropped this client's history."""
    provider = ScriptedProvider(PIECES)
    engine = make_engine(provider, limits={"conversations_per_owner": 2})
    mine = "conv-ann-0123456789abcdef0123"
    async with _connection(engine) as ann:
        await ann.send("USER_MESSAGE", {"content": "first question", "conversationId": mine})
        await ann.receive_until("AI_MESSAGE_END")
        async with _connection(engine) as bob:
            for i in range(2):
                await bob.send("USER_MESSAGE", {"content": "x", "conversationId": f"conv-bob-{i}-0123456789abcdef"})
                await bob.receive_until("AI_MESSAGE_END")
        await ann.send("USER_MESSAGE", {"content": "second question", "conversationId": mine})
        await ann.receive_until("AI_MESSAGE_END")
    contents = [m.content for m in provider.requests[-1].messages]
    assert "first question" in contents
    await engine.aclose()


async def test_history_is_bounded_in_bytes_as_configured():
    """``[limits] history_bytes`` is "history kept per conversation, in bytes of text"
    (and RedisConversationStore counts bytes); the memory store counted characters, so
    non-ASCII text kept up to 4x the bound (about 3x here)."""
    store = MemoryConversationStore(max_bytes=100)
    await store.add_turn("u:ann", "c", [ChatMessage("user", "q"), ChatMessage("assistant", "€" * 90)])
    kept = await store.history("u:ann", "c")
    assert sum(len(m.content.encode()) for m in kept) <= 100


@pytest.mark.parametrize("idle_timeout, closed", [(0, False), (300, True)])
async def test_a_listen_only_client_stays_with_idle_timeout_0_and_keeps_getting_broadcasts(idle_timeout, closed):
    """The RAG seed's page never sends a frame and never reconnects: with
    ``idle_timeout = 0`` the idle rule never closes it, whatever the time; the default
    closes a silent connection once the timeout has passed (the sweeper's check is called
    with a clock far ahead instead of waiting)."""
    import time

    engine = make_engine(ScriptedProvider(PIECES), limits={"idle_timeout": idle_timeout})
    conn, client = memory_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(WAIT):
            while not engine.sessions:
                await anyio.wait_all_tasks_blocked()
            (session,) = engine.sessions
            session.check(time.monotonic() + 10**6)
            if closed:
                with pytest.raises(ConnectionClosed):
                    while True:
                        await client.receive()
                assert conn.close_code == 1001
            else:
                engine.broadcast("FOLLOW_UP_QUESTIONS", {"questions": ["a?"]})
                frame = await client.receive()
                assert frame["type"] == "FOLLOW_UP_QUESTIONS" and not session.closed
        await client.aclose()
    await engine.aclose()
