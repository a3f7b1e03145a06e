"""The real client libraries consume streamcore's SSE dialects, as a front end would.

The Vercel AI SDK (``ai``: ``AbstractChat``, the class ``useChat`` runs, with its
``DefaultChatTransport``; and ``readUIMessageStream``) and AG-UI (``@ag-ui/client``'s
``HttpAgent``, which verifies every stream against the protocol) run in Node.js
(tests/sse_clients/clients.mjs, libraries pinned by its package-lock.json) against a
real uvicorn server. Each reconstructs the same text and reasoning as the WebSocket
client, also after its connection is cut mid-stream and the stream resumed.

Node.js and the libraries are installed by ``scripts/test_sse_clients.sh --install``
(apt and ``npm ci``) the first time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from .helpers import ScriptedProvider, make_engine
from .test_sse import AUTH, CHAT_ID, FULL, PIECES, THOUGHT, THREAD_ID, sse_server, token, websocket_reply

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "sse_clients"
SCRIPT = CLIENTS / "clients.mjs"
NODE_TIMEOUT = 60  # seconds for one client run (Node start-up included)


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """Node.js and the pinned client libraries, installed on first use."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test_sse_clients.sh"), "--install"],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 or shutil.which("node") is None:
        pytest.fail(f"could not install the SSE client libraries:\n{result.stdout}\n{result.stderr}")
    return CLIENTS / "node_modules"


async def _lines(stream: Any) -> AsyncIterator[str]:
    buffer = ""
    async for text in TextReceiveStream(stream):
        buffer += text
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            yield line
    if buffer:
        yield buffer


async def run_client(
    options: dict[str, Any], on_event: Callable[[dict[str, Any], Any], Awaitable[None]] | None = None
) -> dict[str, Any]:
    """Run clients.mjs with ``options``; call ``on_event`` per progress line; return the result."""
    env = {**os.environ, "SUPPRESS_TRANSFORMATION_WARNINGS": "1"}
    events: list[dict[str, Any]] = []
    with anyio.fail_after(NODE_TIMEOUT):
        async with await anyio.open_process(
            ["node", str(SCRIPT), json.dumps(options)], cwd=CLIENTS, env=env
        ) as process:
            async with anyio.create_task_group() as tg:
                errors: list[str] = []

                async def drain_stderr() -> None:
                    async for line in _lines(process.stderr):
                        errors.append(line)

                tg.start_soon(drain_stderr)
                async for line in _lines(process.stdout):
                    event = json.loads(line)
                    events.append(event)
                    if event["event"] == "crash":
                        raise AssertionError(f"client crashed: {event['error']}\n" + "\n".join(errors))
                    if on_event is not None:
                        await on_event(event, process)
                await process.wait()
    results = [e for e in events if e["event"] == "result"]
    assert results, f"no result from the client: {events}"
    return {**results[-1], "progress": events[:-1]}


async def test_ai_sdk_reader_reconstructs_the_websocket_reply(node_clients):
    engine = make_engine(ScriptedProvider(PIECES))
    async with sse_server(engine) as (base, ws_url, _):
        result = await run_client({"mode": "aisdk-reader", "base": base, "id": CHAT_ID, "text": "raconte"})
        reference = await websocket_reply(ws_url)
    assert (result["text"], result["reasoning"]) == reference == (FULL, THOUGHT)
    assert result["errors"] == []
    assert result["chunks"][0] == "start" and result["chunks"][-1] == "finish"
    assert result["kinds"] == ["reasoning", "text"]
    assert result["metadata"]["stopReason"] == "complete"


async def test_use_chat_resumes_a_stream_cut_mid_run(node_clients):
    provider = ScriptedProvider(PIECES, gate_after=12)
    engine = make_engine(provider)

    async def on_event(event: dict[str, Any], process: Any) -> None:
        if event["event"] == "replayed":  # the resumed stream is live on the server
            provider.gate.set()

    async with sse_server(engine) as (base, ws_url, _):
        result = await run_client(
            {"mode": "aisdk-chat", "base": base, "id": CHAT_ID, "text": "raconte", "cut": 1}, on_event
        )
        opened = provider.opened
        reference = await websocket_reply(ws_url)
    cut = next(e for e in result["progress"] if e["event"] == "cut")
    assert cut["finish"]["isDisconnect"] is True  # the Chat saw a network failure
    before = cut["before"]["text"]
    assert 0 < len(before) < len(FULL) and FULL.startswith(before)
    assert (result["text"], result["reasoning"]) == reference == (FULL, THOUGHT)
    assert result["status"] == "ready"
    assert all("network error" in error for error in result["errors"])  # only the cut itself
    assert result["roles"] == ["user", "assistant"]  # the replay replaced the partial message
    assert result["finish"]["finishReason"] == "stop"
    assert opened == 1  # resumed from the run log, not generated again


async def test_use_chat_stop_route_cancels_the_run(node_clients):
    provider = ScriptedProvider(PIECES, hang_after=3)
    engine = make_engine(provider)
    async with sse_server(engine) as (base, _, _app):
        result = await run_client({"mode": "aisdk-chat", "base": base, "id": CHAT_ID, "text": "q", "stop": True})
    stopped = next(e for e in result["progress"] if e["event"] == "stopped")
    assert stopped["status"] == 204
    assert result["status"] == "ready" and result["text"] == "mot0 "
    assert provider.closed == 1  # the provider stream itself was cancelled


async def test_ag_ui_agent_reconstructs_the_websocket_reply(node_clients):
    engine = make_engine(ScriptedProvider(PIECES))
    async with sse_server(engine) as (base, ws_url, _):
        result = await run_client({"mode": "agui", "base": base, "id": THREAD_ID, "runId": "run-1", "text": "raconte"})
        reference = await websocket_reply(ws_url)
    assert (result["text"], result["reasoning"]) == reference == (FULL, THOUGHT)
    assert result["errors"] == []
    assert result["events"][0] == "RUN_STARTED" and result["events"][-1] == "RUN_FINISHED"
    assert result["unhandled"] == []


async def test_ag_ui_agent_resumes_a_stream_cut_mid_run(node_clients):
    provider = ScriptedProvider(PIECES, gate_after=12)
    engine = make_engine(provider, auth=AUTH)

    async def on_event(event: dict[str, Any], process: Any) -> None:
        if event["event"] == "resumed":  # RUN_STARTED restated: the run is followed again
            provider.gate.set()

    async with sse_server(engine) as (base, ws_url, _):
        result = await run_client(
            {"mode": "agui", "base": base, "id": THREAD_ID, "runId": "run-1", "text": "raconte",
             "cut": 1, "token": token("ann")},
            on_event,
        )
        opened = provider.opened
        reference = await websocket_reply(ws_url, additional_headers={"Authorization": f"Bearer {token('ann')}"})
    cut = next(e for e in result["progress"] if e["event"] == "cut")
    before = cut["before"]
    assert int(before["lastEventId"]) > 0 and 0 < len(before["text"]) < len(FULL)
    assert next(e for e in result["progress"] if e["event"] == "resumed")["first"] == "RUN_STARTED"
    assert (result["text"], result["reasoning"]) == reference == (FULL, THOUGHT)
    assert all("network error" in error for error in result["errors"] + result["unhandled"])  # the cut only
    # One assistant message, continued in place by the resumed stream; one reasoning message.
    assert sorted(i.split(":")[0] for i in result["ids"]) == ["assistant", "reasoning", "user"]
    assert result["events"][-1] == "RUN_FINISHED"
    assert opened == 1
