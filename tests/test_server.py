"""The protocol over real WebSocket connections on 127.0.0.1, for every adapter.

One suite, parametrised: websockets, raw ASGI under uvicorn (websockets-sansio), and
Starlette under uvicorn must behave the same.
"""

from __future__ import annotations

import json
import urllib.request

import anyio
import msgspec
import pytest

from streamcore import MSGPACK_SUBPROTOCOL

from .helpers import ADAPTERS, ScriptedProvider, check_stream, connect, make_engine, running

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("adapter", ADAPTERS)]

DEMO = {"name": "demo", "options": {"delay_ms": 0}}


async def test_chat_flow(adapter):
    engine = make_engine(None, provider=DEMO)
    async with running(engine, adapter) as url, connect(url) as c:
        await c.send("USER_MESSAGE", {"content": "Comment apprendre le piano ?"}, id="r1")
        frames = await c.until("AI_MESSAGE_END")
        end = check_stream(frames)
        assert end["stopReason"] == "complete" and "piano" in end["content"]
        assert frames[1]["data"]["model"] == "demo-1"
        await c.send("USER_MESSAGE", {"content": "Et ensuite ?"})
        assert check_stream(await c.until("AI_MESSAGE_END"))["isComplete"]


async def test_objective_update_and_ping(adapter):
    engine = make_engine(None, provider=DEMO)
    async with running(engine, adapter) as url, connect(url) as c:
        await c.send("GENERATE_OBJECTIVE", {"prompt": "Apprendre le piano", "difficulty": "advanced", "category": "music"})
        frames = await c.until("OBJECTIVE_GENERATED")
        objective = frames[-1]["data"]["objective"]
        assert len(objective["steps"]) == 6 and objective["category"] == "music"
        await c.send("UPDATE_OBJECTIVE", {"objectiveId": objective["id"], "updates": {"title": "Piano"}})
        updated = await c.recv()
        assert updated["type"] == "OBJECTIVE_UPDATED" and updated["data"]["objective"]["title"] == "Piano"
        await c.send("PING", {"timestamp": 42})
        pong = await c.recv()
        assert pong["type"] == "PONG" and pong["data"] == {"timestamp": 42}


async def test_malformed_frames_get_errors_and_the_connection_lives(adapter):
    engine = make_engine(None, provider=DEMO)
    bad = [
        "not json",
        "[1]",
        '{"type":"NOPE","data":{},"id":"x1"}',
        '{"type":"USER_MESSAGE","data":{"content":1},"id":"x2"}',
        '{"type":"PING","data":{}}',
    ]
    async with running(engine, adapter) as url, connect(url) as c:
        for raw in bad:
            await c.send_raw(raw)
            err = await c.recv()
            assert err["type"] == "ERROR" and err["data"]["code"] == "INVALID_MESSAGE"
            assert err["data"]["retryable"] is False
        await c.send_raw(b'{"type":"PING","data":{"timestamp":1}}')  # binary on a JSON connection
        err = await c.recv()
        assert "binary" in err["data"]["message"]
        await c.send("PING", {"timestamp": 7})
        assert (await c.recv())["data"] == {"timestamp": 7}


async def test_oversized_frames(adapter):
    engine = make_engine(None, provider=DEMO, limits={"max_message_bytes": 1000})
    async with running(engine, adapter) as url, connect(url, max_size=None) as c:
        # Over the limit but readable: refused politely, the connection lives.
        await c.send("USER_MESSAGE", {"content": "x" * 1200}, id="big")
        err = await c.recv()
        assert err["data"]["code"] == "INVALID_MESSAGE" and "requestId" not in err["data"]  # not parsed
        assert "max_message_bytes" in err["data"]["message"]
        await c.send("PING", {"timestamp": 1})
        assert (await c.recv())["type"] == "PONG"
        # Far over it: the transport refuses to read it at all (close 1009).
        await c.send("USER_MESSAGE", {"content": "x" * 5000})
        code, _ = await c.closed()
        assert code == 1009


async def test_msgpack_subprotocol(adapter):
    engine = make_engine(None, provider=DEMO)
    async with running(engine, adapter) as url, connect(url, subprotocols=[MSGPACK_SUBPROTOCOL]) as c:
        assert c.ws.subprotocol == MSGPACK_SUBPROTOCOL
        await c.ws.send(msgspec.msgpack.encode({"type": "USER_MESSAGE", "data": {"content": "hi"}}))
        frames = []
        while not frames or frames[-1]["type"] != "AI_MESSAGE_END":
            with anyio.fail_after(10):
                raw = await c.ws.recv()
            assert isinstance(raw, bytes)
            frames.append(msgspec.msgpack.decode(raw))
        check_stream(frames)
        await c.ws.send(msgspec.msgpack.encode({"type": "PING", "data": {"timestamp": 5}}))
        with anyio.fail_after(10):
            assert msgspec.msgpack.decode(await c.ws.recv())["data"] == {"timestamp": 5}


async def test_stop_generation(adapter):
    provider = ScriptedProvider(("a", "b", "c"), gate_after=1)
    engine = make_engine(provider)
    async with running(engine, adapter) as url, connect(url) as c:
        await c.send("USER_MESSAGE", {"content": "go"}, id="mine")
        frames = await c.until("AI_MESSAGE_CHUNK")
        await c.send("STOP_GENERATION", {"messageId": "mine"})
        frames += await c.until("AI_MESSAGE_END")
        end = check_stream(frames)
        assert end["stopReason"] == "user_cancelled" and end["content"] == "a"
    assert provider.closed == 1


async def test_client_disconnect_cancels_generation(adapter):
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider)
    async with running(engine, adapter) as url:
        async with connect(url) as c:
            await c.send("USER_MESSAGE", {"content": "go"})
            await c.until("AI_MESSAGE_CHUNK")
            await provider.reached_gate.wait()
        with anyio.fail_after(10):
            while engine.sessions:  # the server notices the close and tears the session down
                await anyio.sleep(0.01)
    assert provider.closed == 1 and engine.active == {}


async def test_graceful_shutdown(adapter):
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider)
    async with running(engine, adapter) as url, connect(url) as c:
        await c.send("USER_MESSAGE", {"content": "go"})
        frames = await c.until("AI_MESSAGE_CHUNK")
        await provider.reached_gate.wait()
        with anyio.fail_after(10):
            await engine.shutdown()
        frames += await c.until("AI_MESSAGE_END")
        assert frames[-1]["data"]["stopReason"] == "server_shutdown"
        code, reason = await c.closed()
        assert code == 1001 and reason == "server shutdown"


async def test_healthz_and_unknown_paths(adapter):
    engine = make_engine(None, provider=DEMO)
    async with running(engine, adapter) as url:
        http = url.replace("ws://", "http://").rsplit("/", 1)[0]

        def get(path):
            try:
                with urllib.request.urlopen(http + path, timeout=10) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, b""

        if adapter != "starlette":  # a Starlette app routes its own HTTP paths
            status, body = await anyio.to_thread.run_sync(get, "/healthz")
            assert status == 200 and json.loads(body) == {"status": "ok", "connections": 0}
            status, _ = await anyio.to_thread.run_sync(get, "/nope")
            assert status == 404
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus):
            async with connect(url.rsplit("/", 1)[0] + "/elsewhere"):
                pass
