"""A closed connection is freed by reference counting, not left to the cycle collector.

A reference cycle through a connection keeps its whole server-side state (protocol,
transport, buffers) alive until a full garbage collection. At a thousand connections those
collections take tens of milliseconds each, and every chunk in flight waits for them. The
cycle collector is switched off here: whatever is still alive once the connections are gone
sits in a cycle.
"""

from __future__ import annotations

import gc

import anyio
import pytest

from streamcore.adapters.asgi import ASGIConnection
from streamcore.adapters.websockets import WebsocketsConnection
from streamcore.run import Run, Subscription
from streamcore.session import Session

from .helpers import TIMEOUT, ScriptedProvider, check_stream, connect, make_engine, running

pytestmark = pytest.mark.anyio


def _server_side_types(adapter: str) -> tuple[type, ...]:
    kinds: list[type] = [Session, Run, Subscription]
    if adapter == "websockets":
        from websockets.asyncio.server import ServerConnection

        kinds += [WebsocketsConnection, ServerConnection]
    else:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

        from streamcore.adapters._direct import DirectConnection

        # uvicorn calling the app itself, or a Starlette route, gets a DirectConnection.
        kinds += [ASGIConnection, DirectConnection, WebSocketsSansIOProtocol]
    return tuple(kinds)


@pytest.mark.parametrize("adapter", ["websockets", "asgi", "starlette"])
async def test_closed_connections_are_freed_without_the_cycle_collector(adapter):
    kinds = frozenset(_server_side_types(adapter))

    def instances() -> list[object]:
        # type(), not isinstance(): a dead weak proxy raises on isinstance.
        return [o for o in gc.get_objects() if type(o) in kinds]

    # Only what this test creates counts: earlier tests on the same event loop may leave
    # engines of their own running (those objects are alive, not garbage, and keep their ids).
    before: set[int] = set()

    def alive() -> list[str]:
        return [type(o).__name__ for o in instances() if id(o) not in before]

    engine = make_engine(ScriptedProvider(), limits={"coalesce_chunks": False})
    async with running(engine, adapter) as url:
        gc.collect()
        before.update(id(o) for o in instances())
        gc.disable()
        try:
            for _ in range(3):
                async with connect(url) as c:
                    await c.send("USER_MESSAGE", {"content": "hi"})
                    assert check_stream(await c.until("AI_MESSAGE_END"))["isComplete"]
            # The server tears a connection down in a few loop turns after the client
            # leaves; a cycle never lets go. Wait (bounded) for the count to reach zero.
            with anyio.move_on_after(TIMEOUT):
                while alive():
                    await anyio.sleep(0.01)
            left = alive()
        finally:
            gc.enable()
    assert left == []


@pytest.mark.parametrize("adapter", ["websockets", "asgi"])
async def test_an_open_connection_keeps_no_decoded_frame_while_it_waits(adapter):
    # The reader awaits the next frame for as long as the client is quiet: the last one it
    # decoded (and its raw text) must not stay alive with it, for every collection to walk.
    from streamcore.protocol import UserMessage

    marker = "a quiet client's last message"
    engine = make_engine(ScriptedProvider())
    async with running(engine, adapter) as url, connect(url) as client:
        await client.send("USER_MESSAGE", {"content": marker})
        # The reader handed the message over when the run started, long before its END,
        # and has been waiting for the next frame since.
        check_stream(await client.until("AI_MESSAGE_END"))
        gc.collect()
        frames = [o for o in gc.get_objects() if type(o) is UserMessage and o.data.content == marker]
        assert frames == []


@pytest.mark.parametrize("adapter", ["websockets", "asgi"])
async def test_streaming_connections_hold_no_anyio_cancel_scope_each(adapter):
    # On asyncio the reader and each run cancel through streamcore._tasks.TaskScope:
    # anyio's scope is six objects for every collection to walk (its task state, two
    # sets, a weak reference, the scope, its bound __exit__), per connection and per run.
    import asyncio

    from anyio._backends._asyncio import _task_states

    def awaits(task: asyncio.Task, code: object) -> bool:
        coro: object = task.get_coro()
        while coro is not None:
            if getattr(coro, "cr_code", None) is code:
                return True
            coro = getattr(coro, "cr_await", None)
        return False

    n = 6
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider)
    async with running(engine, adapter) as url, anyio.create_task_group() as tg:
        opened, done = anyio.Event(), anyio.Event()
        streaming = 0

        async def client() -> None:
            nonlocal streaming
            async with connect(url) as c:
                await c.send("USER_MESSAGE", {"content": "hi"})
                frames = await c.until("AI_MESSAGE_CHUNK")
                streaming += 1
                if streaming == n:
                    opened.set()
                await done.wait()
                provider.gate.set()
                assert check_stream(frames + await c.until("AI_MESSAGE_END"))["isComplete"]

        for _ in range(n):
            tg.start_soon(client)
        with anyio.fail_after(TIMEOUT):
            await opened.wait()
        readers = [t for t in asyncio.all_tasks() if awaits(t, Session.run.__code__)]
        runs = [t for t in asyncio.all_tasks() if awaits(t, Run.execute.__code__)]
        scoped = [t for t in readers + runs if getattr(_task_states.get(t), "cancel_scope", None) is not None]
        done.set()
    assert len(readers) == n and len(runs) == n
    assert scoped == []


async def test_a_streaming_run_keeps_no_object_it_can_do_without():
    # Each object a run keeps while it streams is walked by every collection of the older
    # generations; at a thousand streams a few per run decide whether a full collection
    # (tens of milliseconds, every stream paused) comes while replies start. What a run
    # needs no longer makes one each: the bound appends of its lists, a set for its owner's
    # only generation slot, a second copy of its task's context, a tracked Conversation.
    import asyncio
    import contextvars

    from streamcore._tasks import _SHARED_CONTEXT
    from streamcore.run import Conversation

    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider)
    async with running(engine, "asgi") as url, connect(url) as client:
        await client.send("USER_MESSAGE", {"content": "hi"})
        frames = await client.until("AI_MESSAGE_CHUNK")
        (run,) = engine.runs.values()
        gc.collect()
        lists = (run.entries, run.machine.parts)
        appends = [o for o in gc.get_objects() if type(o) is type([].append) and getattr(o, "__self__", None) in lists]
        slot = engine.limiter._slots[run.owner]
        (task,) = [t for t in asyncio.all_tasks() if t.get_coro().cr_code is Run.execute.__code__]
        contexts = {id(o) for o in gc.get_referents(task) if type(o) is contextvars.Context}
        conversation_tracked = gc.is_tracked(run.conversation)
        provider.gate.set()
        assert check_stream(frames + await client.until("AI_MESSAGE_END"))["isComplete"]
    assert isinstance(run.conversation, Conversation)
    assert appends == []
    assert slot == run.message_id  # the id alone, no set
    assert not conversation_tracked
    # The task's own context, shared with its done callback (Python 3.11+: create_task()
    # takes a context; before, each has its copy).
    assert len(contexts) == (1 if _SHARED_CONTEXT else 2)
