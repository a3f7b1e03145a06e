"""SSE transport and dialects: real uvicorn, real HTTP (httpx), every wait bounded.

The dialects are also tested without a server (pure encoders fed run-log entries), and
every AG-UI event is validated by the official ``ag-ui-protocol`` models. The real
client libraries (``ai``, ``@ag-ui/client``) are driven in tests/test_sse_clients.py.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, AsyncIterator

import anyio
import httpx
import pytest

from streamcore.adapters.asgi import StreamcoreASGI
from streamcore.adapters.sse import MemoryRunIndex, SSEApp
from streamcore.dialects import AGUIDialect, AISDKDialect, EnvelopeSSE
from streamcore.events import Ended, Failure, Kind, Reasoning, Started, Usage, AppEvent
from streamcore.ids import stamp

from .helpers import TIMEOUT, ScriptedProvider, connect, make_engine, render_unbatched
from .test_policy import SECRET, token

pytestmark = pytest.mark.anyio

REASONING = (Reasoning("Je réfléchis "), Reasoning("un peu."))
WORDS = tuple(f"mot{i} " for i in range(30))
PIECES = REASONING + WORDS
FULL = "".join(WORDS)
THOUGHT = "".join(REASONING)
AUTH = {"jwt_secret": SECRET}
CHAT_ID = "chat-0123456789abcdef"  # 16+ characters: indexed for anonymous clients
THREAD_ID = "thread-0123456789abcdef"


# --- helpers ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sse_server(engine, **options: Any) -> AsyncIterator[tuple[str, str, SSEApp]]:
    """uvicorn serving the SSE routes in front of the WebSocket app: (http base, ws url, app)."""
    from streamcore.adapters.uvicorn import serve

    app = SSEApp(engine, StreamcoreASGI(engine, lifespan=False), **options)
    async with serve(engine, "127.0.0.1", 0, app=app) as (host, port):
        yield f"http://{host}:{port}", f"ws://{host}:{port}{engine.config.server.path}", app


def parse_sse(text: str) -> list[dict[str, Any]]:
    """SSE text -> events {id?, data?, comment?} (data parsed as JSON when it is)."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "":
                event["comment"] = value
            elif field == "id":
                event["id"] = int(value)
            elif field == "data":
                try:
                    event["data"] = json.loads(value)
                except ValueError:
                    event["data"] = value
        events.append(event)
    return events


class SSEReader:
    """Reads an SSE response incrementally (so a test can act mid-stream)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_text()
        self._buffer = ""
        self.events: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any] | None:
        while "\n\n" not in self._buffer:
            with anyio.fail_after(TIMEOUT):
                chunk = await self._chunks.__anext__()
            self._buffer += chunk
        block, self._buffer = self._buffer.split("\n\n", 1)
        event = parse_sse(block + "\n\n")[0]
        self.events.append(event)
        return event

    async def until(self, predicate) -> dict[str, Any]:
        while True:
            event = await self.next()
            if predicate(event):
                return event

    async def rest(self) -> list[dict[str, Any]]:
        with anyio.fail_after(TIMEOUT):
            async for chunk in self._chunks:
                self._buffer += chunk
        events = parse_sse(self._buffer)
        self._buffer = ""
        self.events.extend(events)
        return events


def envelope_text(events: list[dict[str, Any]], kind: str = "AI_MESSAGE_CHUNK") -> str:
    return "".join(e["data"]["data"]["content"] for e in events if isinstance(e.get("data"), dict) and e["data"].get("type") == kind)


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["id"] for e in events if "id" in e]


async def websocket_reply(url: str, content: str = "raconte", **kwargs: Any) -> tuple[str, str]:
    """(text, reasoning) the WebSocket protocol delivers for one message: the reference."""
    async with connect(url, **kwargs) as ws:
        await ws.send("USER_MESSAGE", {"content": content})
        frames = await ws.until("AI_MESSAGE_END")
    text = "".join(f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK")
    reasoning = "".join(f["data"]["content"] for f in frames if f["type"] == "AI_REASONING_CHUNK")
    return text, reasoning


def bearer(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub)}"}


def chat_body(text: str = "raconte", chat_id: str = CHAT_ID) -> dict[str, Any]:
    return {
        "id": chat_id,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
    }


def agui_body(text: str = "raconte", thread_id: str = THREAD_ID, run_id: str = "run-1") -> dict[str, Any]:
    return {
        "threadId": thread_id,
        "runId": run_id,
        "messages": [{"id": "u1", "role": "user", "content": text}],
        "state": {},
        "tools": [],
        "context": [{"description": "page", "value": "accueil"}],
        "forwardedProps": {},
    }


# --- the dialects alone (no event loop, no server) -----------------------------------------------


def _drive(dialect, entries, *, message_id: str = "msg-1") -> list[dict[str, Any]]:
    """Feed entries to a dialect as a subscription would; render LATE frames in order."""
    return parse_sse(render_unbatched(dialect, entries, message_id).decode())


def _entries(*items: Any, stop: str = "complete", failure: Failure | None = None, usage: Usage | None = None):
    entries = [(1, Kind.STARTED, Started("msg-1", "m-1"))]
    text = ""
    for item in items:
        seq = len(entries) + 1
        if isinstance(item, AppEvent):
            entries.append((seq, Kind.APP, item))
        elif isinstance(item, Reasoning):
            entries.append((seq, Kind.REASONING, str(item)))
        else:
            entries.append((seq, Kind.TEXT, item))
            text += item
    if failure is not None:
        entries.append((len(entries) + 1, Kind.FAILED, failure))
    entries.append((len(entries) + 1, Kind.ENDED, Ended("msg-1", stop, text, usage)))
    return entries


def test_aisdk_dialect_parts_follow_the_model():
    entries = _entries(Reasoning("a"), Reasoning("b"), "Hel", "lo", Reasoning("c"), "!", usage=Usage(1, 2, 3))
    events = _drive(AISDKDialect(), entries)
    chunks = [e["data"] for e in events]
    assert [c["type"] if isinstance(c, dict) else c for c in chunks] == [
        "start", "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-end",
        "text-start", "text-delta", "text-delta", "text-end",
        "reasoning-start", "reasoning-delta", "reasoning-end", "text-start", "text-delta", "text-end",
        "finish", "[DONE]",
    ]
    assert chunks[0]["messageId"] == "msg-1"
    assert chunks[-2] == {
        "type": "finish", "finishReason": "stop",
        "messageMetadata": {"stopReason": "complete", "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}},
    }
    # Every log entry's seq is the id of the last event it produced, increasing.
    assert ids(events) == [e[0] for e in entries]
    # Part ids pair up: each start has its end, deltas name an open part.
    starts = [c["id"] for c in chunks if isinstance(c, dict) and c["type"].endswith("-start") and c["type"] != "start"]
    ends = [c["id"] for c in chunks if isinstance(c, dict) and c["type"].endswith("-end")]
    assert starts == ends and len(set(starts)) == len(starts)


def test_aisdk_dialect_failure_cancel_and_app_events():
    failed = _drive(AISDKDialect(), _entries("Hi", stop="error", failure=Failure("GENERATION_FAILED", "boom", True)))
    kinds = [e["data"]["type"] for e in failed if isinstance(e["data"], dict)]
    assert kinds == ["start", "text-start", "text-delta", "text-end", "error", "finish"]
    assert failed[4]["data"]["errorText"] == "boom" and failed[5]["data"]["finishReason"] == "error"
    cancelled = _drive(AISDKDialect(), _entries("Hi", AppEvent("FOLLOW_UP_QUESTIONS", {"questions": ["q"]}), stop="user_cancelled"))
    kinds = [e["data"]["type"] for e in cancelled if isinstance(e["data"], dict)]
    assert kinds == ["start", "text-start", "text-delta", "data-follow-up-questions", "text-end", "abort"]
    assert cancelled[3]["data"]["data"] == {"questions": ["q"]}
    assert cancelled[-2]["data"] == {"type": "abort", "reason": "user_cancelled"}


def test_agui_dialect_events_are_valid_ag_ui_events():
    pytest.importorskip("ag_ui")
    from pydantic import TypeAdapter

    from ag_ui.core import Event

    validate = TypeAdapter(Event).validate_python
    entries = _entries(Reasoning("a"), "Hel", "lo", Reasoning("b"), "!", AppEvent("OBJECTIVE_GENERATED", {"x": 1}), usage=Usage(1, 2, 3))
    dialect = AGUIDialect(thread_id="t", run_id="r")
    events = _drive(dialect, entries)
    for event in events:
        validate(event["data"])
    kinds = [e["data"]["type"] for e in events]
    assert kinds == [
        "RUN_STARTED", "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END", "REASONING_END", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "REASONING_START", "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_END", "REASONING_END", "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT", "CUSTOM", "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]
    assert events[0]["data"] == {"type": "RUN_STARTED", "threadId": "t", "runId": "r"}
    text_ids = [e["data"]["messageId"] for e in events if e["data"]["type"] == "TEXT_MESSAGE_START"]
    assert text_ids == ["msg-1", "msg-1-1"]  # the first text message carries the run's id
    finished = events[-1]["data"]
    assert finished["result"] == {"messageId": "msg-1", "stopReason": "complete"}
    assert finished["usage"] == [{"inputTokens": 1, "outputTokens": 2, "totalTokens": 3, "model": "m-1"}]
    assert "id" not in events[-1]  # RUN_FINISHED closes the stream once the run is sealed


def test_agui_dialect_errors_are_terminal_and_cancellation_is_an_outcome():
    pytest.importorskip("ag_ui")
    from pydantic import TypeAdapter

    from ag_ui.core import Event

    validate = TypeAdapter(Event).validate_python
    failed = _drive(AGUIDialect(), _entries("Hi", AppEvent("X", {}), stop="error", failure=Failure("TIMEOUT", "slow", True)))
    for event in failed:
        validate(event["data"])
    assert [e["data"]["type"] for e in failed][-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]
    assert failed[-1]["data"] == {"type": "RUN_ERROR", "message": "slow", "code": "TIMEOUT"}
    cancelled = _drive(AGUIDialect(), _entries("Hi", stop="server_shutdown"))
    for event in cancelled:
        validate(event["data"])
    assert cancelled[-1]["data"]["outcome"] == {"type": "cancelled"}
    assert cancelled[-1]["data"]["result"]["stopReason"] == "server_shutdown"


def test_prime_and_preamble_continue_a_stream_where_it_was_cut():
    entries = _entries(Reasoning("a"), "Hel", "lo", "!")
    # AG-UI: a stream resumed after seq 3 ("Hel") restates the run and reopens the text.
    dialect = AGUIDialect(thread_id="t", run_id="r")
    dialect.prime(entries[:3])
    head = parse_sse(dialect.preamble().decode())
    assert [e["data"]["type"] for e in head] == ["RUN_STARTED", "TEXT_MESSAGE_START"]
    assert head[1]["data"]["messageId"] == "msg-1"
    rest = _drive(dialect, entries[3:])
    assert [e["data"]["type"] for e in rest] == ["TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]
    # AI SDK: the open part keeps its id; no second start.
    dialect = AISDKDialect()
    full = _drive(AISDKDialect(), entries)
    dialect.prime(entries[:3])
    rest = _drive(dialect, entries[3:])
    assert rest == full[-len(rest):]
    assert [e["data"]["type"] for e in rest[:2]] == ["text-delta", "text-delta"]


def test_envelope_dialect_frames_are_the_websocket_envelopes():
    engine = make_engine(ScriptedProvider())
    codec = engine.codec_for(None)
    dialect = EnvelopeSSE(codec)
    now = stamp()
    sse = dialect.chunk_encoder("msg-1", {"sessionId": "s"})("Bonjour", 0, 4, now)
    ws = codec.chunk_encoder("msg-1", {"sessionId": "s"})("Bonjour", 0, 4, now)
    assert sse == b"id: 4\ndata: " + ws + b"\n\n"
    sse = dialect.chunk_encoder("msg-1", reasoning=True)("hm", 0, 5, now)
    ws = codec.chunk_encoder("msg-1", reasoning=True)("hm", 0, 5, now)
    assert sse == b"id: 5\ndata: " + ws + b"\n\n"


# --- the transport: envelopes over SSE ------------------------------------------------------------


async def test_envelope_sse_streams_what_the_websocket_does():
    engine = make_engine(ScriptedProvider(PIECES))
    async with sse_server(engine) as (base, ws_url, _), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        response = await http.post("/sse", json={"type": "USER_MESSAGE", "data": {"content": "raconte"}, "id": "q1"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache, no-transform"
        events = parse_sse(response.text)
        types = [e["data"]["type"] for e in events]
        assert types[0] == "AI_THINKING" and types[1] == "AI_MESSAGE_START" and types[-1] == "AI_MESSAGE_END"
        assert (envelope_text(events), envelope_text(events, "AI_REASONING_CHUNK")) == await websocket_reply(ws_url)
        assert envelope_text(events) == FULL and envelope_text(events, "AI_REASONING_CHUNK") == THOUGHT
        seqs = ids(events)
        assert seqs == sorted(set(seqs)) and all(e["id"] == e["data"]["data"]["seq"] for e in events if "id" in e)
        assert response.headers["x-streamcore-message-id"] == events[-1]["data"]["data"]["messageId"]


async def test_a_burst_of_events_leaves_in_fewer_body_messages_each_event_intact():
    # The writer hands a batch of pending frames to SSEStream.send_many: one ASGI body
    # message (one socket write) for several events; the events are the same.
    from streamcore.adapters.uvicorn import serve

    engine = make_engine(ScriptedProvider(tuple(f"mot{i} " for i in range(300))), limits={"coalesce_chunks": False})
    inner = SSEApp(engine, StreamcoreASGI(engine, lifespan=False))
    bodies: list[bytes] = []

    async def app(scope, receive, send):
        async def observed(message):
            if message["type"] == "http.response.body":
                bodies.append(message.get("body", b""))
            await send(message)

        await inner(scope, receive, observed)

    async with serve(engine, "127.0.0.1", 0, app=app) as (host, port), \
            httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=TIMEOUT) as http:
        response = await http.post("/sse", json={"type": "USER_MESSAGE", "data": {"content": "raconte"}})
    events = parse_sse(response.text)
    chunks = [e["data"]["data"] for e in events if e["data"]["type"] == "AI_MESSAGE_CHUNK"]
    assert [c["content"] for c in chunks] == [f"mot{i} " for i in range(300)]
    assert [c["index"] for c in chunks] == list(range(300))
    assert b"".join(bodies) == response.content
    assert len([b for b in bodies if b]) < len(events)  # batched: fewer messages than events


async def test_envelope_sse_resumes_after_last_event_id_mid_run():
    provider = ScriptedProvider(PIECES, gate_after=12)
    engine = make_engine(provider)
    async with sse_server(engine) as (base, _, _app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        async with http.stream("POST", "/sse", json={"type": "USER_MESSAGE", "data": {"content": "q"}}) as response:
            reader = SSEReader(response)
            await reader.until(lambda e: e.get("data", {}).get("type") == "AI_MESSAGE_CHUNK")
            message_id = response.headers["x-streamcore-message-id"]
            last = ids(reader.events)[-1]
        # The client went away; the run waits (grace period) at the gate.
        run = engine.runs[message_id]
        async with http.stream("GET", f"/sse/{message_id}", headers={"Last-Event-ID": str(last)}) as response:
            assert response.status_code == 200
            resumed = SSEReader(response)
            provider.gate.set()
            after = await resumed.rest()
        assert run.sealed and provider.opened == 1
        before_text = envelope_text(reader.events)
        assert before_text + envelope_text(after) == FULL
        assert min(ids(after)) > last
        # Resuming once everything was read: 204, so an EventSource stops reconnecting.
        final = ids(after)[-1]
        response = await http.get(f"/sse/{message_id}", headers={"Last-Event-ID": str(final)})
        assert response.status_code == 204
        # Without a cursor: the whole run again, from AI_MESSAGE_START.
        replay = parse_sse((await http.get(f"/sse/{message_id}")).text)
        assert replay[0]["data"]["type"] == "AI_MESSAGE_START" and envelope_text(replay) == FULL


async def test_sse_stop_route_stops_the_run_itself():
    provider = ScriptedProvider(WORDS, gate_after=3)
    engine = make_engine(provider)
    async with sse_server(engine) as (base, _, _app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        async with http.stream("POST", "/api/chat", json=chat_body()) as response:
            reader = SSEReader(response)
            await reader.until(lambda e: isinstance(e.get("data"), dict) and e["data"]["type"] == "text-delta")
            stop = await http.post(f"/api/chat/{CHAT_ID}/stop")
            assert stop.status_code == 204
            rest = await reader.rest()
        kinds = [e["data"]["type"] if isinstance(e["data"], dict) else e["data"] for e in rest]
        assert kinds[-3:] == ["text-end", "abort", "[DONE]"]
        assert rest[-2]["data"]["reason"] == "user_cancelled"
        assert provider.closed == 1
        # Stopping a finished run is not an error; an unknown one is 404.
        assert (await http.post(f"/api/chat/{CHAT_ID}/stop")).status_code == 204
        assert (await http.post("/api/chat/chat-unknown-0123456789/stop")).status_code == 404


async def test_client_disconnect_follows_the_grace_rule():
    provider = ScriptedProvider(WORDS, gate_after=2)
    engine = make_engine(provider, runs={"grace_period": 0.2})
    async with sse_server(engine) as (base, _, _app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        async with http.stream("POST", "/agui", json=agui_body()) as response:
            reader = SSEReader(response)
            await reader.until(lambda e: e["data"]["type"] == "TEXT_MESSAGE_CONTENT")
            message_id = response.headers["x-streamcore-message-id"]
            run = engine.runs[message_id]
        with anyio.fail_after(TIMEOUT):
            await run.done.wait()  # nobody resumed within the grace period
        assert run.machine.ended.stop_reason == "user_cancelled" and provider.closed == 1


async def test_heartbeat_comments_keep_an_idle_stream_alive():
    provider = ScriptedProvider(WORDS, gate_after=1)
    engine = make_engine(provider)
    async with sse_server(engine, heartbeat=0.05) as (base, _, _app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        async with http.stream("POST", "/sse", json={"type": "USER_MESSAGE", "data": {"content": "q"}}) as response:
            reader = SSEReader(response)
            await reader.until(lambda e: e.get("comment") == "keep-alive")
            provider.gate.set()
            await reader.rest()
        assert envelope_text(reader.events) == FULL


# --- requests refused before the stream: HTTP statuses --------------------------------------------


async def test_refusals_are_http_errors_with_the_protocol_codes():
    engine = make_engine(
        ScriptedProvider(WORDS, hang_after=1),
        auth=AUTH,
        limits={"max_concurrent_generations": 1, "max_message_bytes": 4096},
        security={"allowed_origins": ["https://app.example"]},
    )
    async with sse_server(engine) as (base, _, _app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        r = await http.post("/api/chat", json=chat_body())
        assert r.status_code == 401 and r.json()["error"]["code"] == "AUTH_FAILED"
        r = await http.post("/api/chat", json=chat_body(), headers={**bearer("ann"), "Origin": "https://evil.example"})
        assert r.status_code == 403
        r = await http.post("/api/chat", json={"id": "c", "messages": "no"}, headers=bearer("ann"))
        assert r.status_code == 400 and "$.messages" in r.json()["error"]["message"]
        r = await http.post("/agui", json={"threadId": "t"}, headers=bearer("ann"))
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_MESSAGE"
        r = await http.post("/sse", json={"type": "PING", "data": {"timestamp": 1}}, headers=bearer("ann"))
        assert r.status_code == 400 and "does not stream" in r.json()["error"]["message"]
        r = await http.post("/sse", content=b"x" * 5000, headers=bearer("ann"))
        assert r.status_code == 413
        # The WebSocket's admission limits: one generation at a time for this user here;
        # the refusal carries Retry-After.
        async with http.stream("POST", "/sse", json={"type": "USER_MESSAGE", "data": {"content": "q"}}, headers=bearer("bob")) as first:
            await SSEReader(first).until(lambda e: e.get("data", {}).get("type") == "AI_MESSAGE_CHUNK")
            r = await http.post("/api/chat", json=chat_body(), headers=bearer("bob"))
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "RATE_LIMIT" and r.json()["error"]["retryable"] is True
        r = await http.get("/sse/msg-unknown", headers=bearer("ann"))
        assert r.status_code == 404
        r = await http.get("/api/chat/nope/stream", headers=bearer("ann"))
        assert r.status_code == 204  # the AI SDK's "no stream to resume"
        r = await http.get("/api/chat", headers=bearer("ann"))
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        # Other paths reach the wrapped app.
        assert (await http.get("/healthz")).json()["status"] == "ok"


async def test_runs_are_reachable_only_by_their_owner():
    provider = ScriptedProvider(WORDS, gate_after=2)
    engine = make_engine(provider, auth=AUTH)
    async with sse_server(engine) as (base, _, _app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        async with http.stream("POST", "/api/chat", json=chat_body(chat_id="shared"), headers=bearer("ann")) as response:
            reader = SSEReader(response)
            await reader.until(lambda e: isinstance(e.get("data"), dict) and e["data"]["type"] == "text-delta")
            message_id = response.headers["x-streamcore-message-id"]
            # Same chat id, another user: nothing to resume, nothing to stop.
            assert (await http.get("/api/chat/shared/stream", headers=bearer("eve"))).status_code == 204
            assert (await http.post("/api/chat/shared/stop", headers=bearer("eve"))).status_code == 404
            assert (await http.get(f"/sse/{message_id}", headers=bearer("eve"))).status_code == 404
            assert (await http.post(f"/sse/{message_id}/stop", headers=bearer("eve"))).status_code == 404
            assert engine.runs[message_id].stop_reason is None
            # The owner, from another request, may.
            assert (await http.post(f"/sse/{message_id}/stop", headers=bearer("ann"))).status_code == 204
            await reader.rest()


async def test_anonymous_short_chat_ids_are_not_resumable():
    engine = make_engine(ScriptedProvider(WORDS))
    async with sse_server(engine) as (base, _, app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        assert (await http.post("/api/chat", json=chat_body(chat_id="c1"))).status_code == 200
        assert (await http.get("/api/chat/c1/stream")).status_code == 204
        assert (await http.post("/api/chat", json=chat_body())).status_code == 200
        replay = parse_sse((await http.get(f"/api/chat/{CHAT_ID}/stream")).text)
        assert replay[0]["data"]["type"] == "start" and replay[-1]["data"] == "[DONE]"
        assert isinstance(app.index, MemoryRunIndex) and len(app.index) == 1


async def test_agui_resume_by_thread_with_last_event_id():
    provider = ScriptedProvider(PIECES, gate_after=12)
    engine = make_engine(provider)
    async with sse_server(engine) as (base, _, _app), httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        async with http.stream("POST", "/agui", json=agui_body()) as response:
            reader = SSEReader(response)
            await reader.until(lambda e: e["data"]["type"] == "TEXT_MESSAGE_CONTENT")
            last = ids(reader.events)[-1]
        async with http.stream("GET", f"/agui/{THREAD_ID}/stream", headers={"Last-Event-ID": str(last)}) as response:
            resumed = SSEReader(response)
            provider.gate.set()
            after = await resumed.rest()
        kinds = [e["data"]["type"] for e in after]
        assert kinds[:2] == ["RUN_STARTED", "TEXT_MESSAGE_START"] and kinds[-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
        assert after[0]["data"]["runId"] == "run-1" and after[-1]["data"]["runId"] == "run-1"

        def text(events):
            return "".join(e["data"]["delta"] for e in events if e["data"]["type"] == "TEXT_MESSAGE_CONTENT")

        assert text(reader.events) + text(after) == FULL
        assert (await http.get("/agui/thread-unknown-0123456789/stream")).status_code == 404


async def test_mounted_under_a_prefix_in_starlette():
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from streamcore.adapters.starlette import streamcore_lifespan
    from streamcore.adapters.uvicorn import serve

    engine = make_engine(ScriptedProvider(WORDS))
    app = Starlette(routes=[Mount("/v1", app=SSEApp(engine))], lifespan=streamcore_lifespan(engine))
    async with serve(engine, "127.0.0.1", 0, app=app) as (host, port):
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}/v1", timeout=TIMEOUT) as http:
            events = parse_sse((await http.post("/api/chat", json=chat_body())).text)
            assert "".join(e["data"]["delta"] for e in events if isinstance(e["data"], dict) and e["data"]["type"] == "text-delta") == FULL
            assert (await http.get("/elsewhere")).status_code == 404
