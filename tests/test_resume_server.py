"""Runs and resume through real WebSocket connections, on both servers (websockets, uvicorn)."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from streamcore import Config, Engine, MemoryRunLog

from .helpers import ScriptedProvider, connect, make_engine, running, types
from .test_policy import SECRET, token

pytestmark = pytest.mark.anyio
both_servers = pytest.mark.parametrize("adapter", ["websockets", "asgi"])

PIECES = tuple(f"mot{i} " for i in range(40))
FULL = "".join(PIECES)
AUTH = {"jwt_secret": SECRET}


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK")


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["data"]["seq"] for f in frames if "seq" in f["data"]]


def bearer(sub: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {token(sub)}"}}


async def read_until_text(c, frames: list, text: str) -> None:
    while text_of(frames) != text:
        frames.append(await c.recv())


@both_servers
async def test_resume_after_a_server_side_cut_mid_run_on_a_new_connection(adapter):
    provider = ScriptedProvider(PIECES, gate_after=10)
    engine = make_engine(provider, auth=AUTH)
    async with running(engine, adapter) as url:
        async with connect(url, **bearer("ann")) as a:
            await a.send("USER_MESSAGE", {"content": "raconte"}, id="q")
            before = await a.until("AI_MESSAGE_START")
            message_id = before[-1]["data"]["messageId"]
            await read_until_text(a, before, "".join(PIECES[:10]))
            for session in list(engine.sessions):  # the server cuts this connection
                await session.close(1012, "test cut")
            await a.closed()
        async with connect(url, **bearer("ann")) as b:
            await b.send("RESUME", {"messageId": message_id, "lastSeq": seqs(before)[-1]}, id="r")
            provider.gate.set()
            after = await b.until("AI_MESSAGE_END")
    assert text_of(before) + text_of(after) == FULL == after[-1]["data"]["content"]
    assert seqs(before + after) == sorted(set(seqs(before + after)))
    assert provider.opened == 1  # resumed, not regenerated


@both_servers
async def test_resume_after_the_end_replays_everything(adapter):
    engine = make_engine(ScriptedProvider(PIECES), auth=AUTH)
    async with running(engine, adapter) as url:
        async with connect(url, **bearer("ann")) as a:
            await a.send("USER_MESSAGE", {"content": "q"})
            first = await a.until("AI_MESSAGE_END")
        async with connect(url, **bearer("ann")) as b:
            await b.send("RESUME", {"messageId": first[-1]["data"]["messageId"]})
            replay = await b.until("AI_MESSAGE_END")
    assert types(replay)[0] == "AI_MESSAGE_START"
    assert text_of(replay) == FULL == text_of(first)


@both_servers
async def test_a_second_tab_follows_and_stops_the_run(adapter):
    provider = ScriptedProvider(PIECES, gate_after=5)
    engine = make_engine(provider, auth=AUTH)
    async with running(engine, adapter) as url:
        async with connect(url, **bearer("ann")) as tab1, connect(url, **bearer("ann")) as tab2:
            await tab1.send("USER_MESSAGE", {"content": "q"})
            one = await tab1.until("AI_MESSAGE_START")
            message_id = one[-1]["data"]["messageId"]
            await tab2.send("RESUME", {"messageId": message_id})
            two = await tab2.until("AI_MESSAGE_START")
            with anyio.fail_after(10):
                await provider.reached_gate.wait()
            await tab2.send("STOP_GENERATION", {"messageId": message_id})
            one += await tab1.until("AI_MESSAGE_END")
            two += await tab2.until("AI_MESSAGE_END")
    for frames in (one, two):
        end = frames[-1]["data"]
        assert end["stopReason"] == "user_cancelled" and text_of(frames) == end["content"] == "".join(PIECES[:5])
    assert provider.closed == 1


@both_servers
async def test_foreign_user_gets_not_found_and_cannot_stop(adapter):
    provider = ScriptedProvider(PIECES, gate_after=3)
    engine = make_engine(provider, auth=AUTH)
    async with running(engine, adapter) as url:
        async with connect(url, **bearer("ann")) as ann, connect(url, **bearer("eve")) as eve:
            await ann.send("USER_MESSAGE", {"content": "secret"})
            message_id = (await ann.until("AI_MESSAGE_START"))[-1]["data"]["messageId"]
            await eve.send("RESUME", {"messageId": message_id}, id="peek")
            peek = (await eve.recv())["data"]
            await eve.send("STOP_GENERATION", {"messageId": message_id}, id="kill")
            kill = (await eve.recv())["data"]
            provider.gate.set()
            end = (await ann.until("AI_MESSAGE_END"))[-1]["data"]
    assert (peek["code"], peek["requestId"], peek["retryable"]) == ("NOT_FOUND", "peek", False)
    assert (kill["code"], kill["requestId"]) == ("NOT_FOUND", "kill")
    assert end["stopReason"] == "complete" and end["content"] == FULL


@both_servers
async def test_grace_expiry_cancels_an_abandoned_run(adapter):
    provider = ScriptedProvider(PIECES, gate_after=3)
    engine = make_engine(provider, runs={"grace_period": 0.1})
    async with running(engine, adapter) as url:
        async with connect(url) as a:
            await a.send("USER_MESSAGE", {"content": "q"})
            message_id = (await a.until("AI_MESSAGE_START"))[-1]["data"]["messageId"]
            run = engine.runs[message_id]
        with anyio.fail_after(10):
            await run.done.wait()
        async with connect(url) as b:  # still resumable, now ended
            await b.send("RESUME", {"messageId": message_id})
            frames = await b.until("AI_MESSAGE_END")
    assert frames[-1]["data"]["stopReason"] == "user_cancelled"
    assert provider.closed == 1


@both_servers
async def test_retention_expiry_gives_not_found(adapter):
    now = [0.0]
    config = msgspec.convert({"runs": {"retention": 300}}, Config)
    engine = Engine(config, provider=ScriptedProvider(PIECES), runlog=MemoryRunLog(retention=300, clock=lambda: now[0]))
    async with running(engine, adapter) as url, connect(url) as c:
        await c.send("USER_MESSAGE", {"content": "q"})
        message_id = (await c.until("AI_MESSAGE_END"))[-1]["data"]["messageId"]
        with anyio.fail_after(10):
            while engine.runs:
                await anyio.sleep(0.01)
        now[0] += 301
        await c.send("RESUME", {"messageId": message_id}, id="late")
        err = (await c.recv())["data"]
    assert err["code"] == "NOT_FOUND" and err["requestId"] == "late"


@both_servers
async def test_shutdown_during_a_resume(adapter):
    provider = ScriptedProvider(PIECES, gate_after=4)
    engine = make_engine(provider, auth=AUTH)
    async with running(engine, adapter) as url:
        async with connect(url, **bearer("ann")) as a:
            await a.send("USER_MESSAGE", {"content": "q"})
            message_id = (await a.until("AI_MESSAGE_START"))[-1]["data"]["messageId"]
        async with connect(url, **bearer("ann")) as b:
            await b.send("RESUME", {"messageId": message_id, "lastSeq": 1})
            frames = await b.until("AI_MESSAGE_CHUNK")  # the resume is under way
            with anyio.fail_after(10):
                await provider.reached_gate.wait()
            await engine.shutdown(timeout=3)
            while frames[-1:] == [] or frames[-1]["type"] != "AI_MESSAGE_END":
                frames.append(await b.recv())
            code, _ = await b.closed()
    assert frames[-1]["data"]["stopReason"] == "server_shutdown"
    assert text_of(frames) == "".join(PIECES[:4])
    assert code == 1001
    assert seqs(frames) == sorted(set(seqs(frames))) and min(seqs(frames)) > 1
