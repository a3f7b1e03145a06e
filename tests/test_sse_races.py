"""SSE races found in review: a resume whose run goes away after the response starts,
priming a dialect from a long log, a broadcast that arrives before the chat is handled.

Each test drives one ASGI request by hand (no server: the interleavings are chosen
exactly); every wait is bounded.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from streamcore import ConnectionInfo, MemoryRunLog
from streamcore.adapters.sse import ActiveRun, SSEApp, index_key
from streamcore.events import Ended, Kind, Started
from streamcore.limits import MemoryLimiter

from .helpers import ScriptedProvider, make_engine
from .test_redis_fixtures import redis_server, unique_prefix  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

WAIT = 10

# --- helpers -------------------------------------------------------------------------------------


def _scope(method: str, path: str, headers: list[tuple[str, str]] = ()) -> dict[str, Any]:
    return {
        "type": "http", "method": method, "path": path, "root_path": "", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "client": ("127.0.0.1", 1),
    }


class _Call:
    """One ASGI HTTP request driven by hand: its body, then a client that stays."""

    def __init__(self, body: bytes = b"", on_start: Any = None) -> None:
        self.body = body
        self.sent: list[dict[str, Any]] = []
        self.on_start = on_start
        self._first = True
        self._gone = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        if self._first:
            self._first = False
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.start" and self.on_start is not None:
            self.on_start()

    def headers(self) -> dict[bytes, bytes]:
        return dict(next(m for m in self.sent if m["type"] == "http.response.start")["headers"])

    def events(self) -> list[Any]:
        text = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body").decode()
        return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]

    def finished(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body", False) for m in self.sent)


# --- 1. SSE -------------------------------------------------------------------------------------


async def test_sse_resume_whose_run_expires_while_the_response_starts_ends_the_response():
    """GET /sse/{id} checks the run, commits the response (status 200), then the RESUME
    finds it gone (retention ended in between, or the shared log answered an error): the
    ERROR went out as an event and the response stayed open until the client left, since
    only the end of a subscription ends an SSE response."""
    now = [0.0]
    log = MemoryRunLog(retention=60.0, clock=lambda: now[0])
    writer = log.open("msg-x", "a:someone")
    writer.append((1, Kind.STARTED, Started("msg-x", "m")))
    writer.append("hi")
    writer.append((3, Kind.ENDED, Ended("msg-x", "complete", "hi", None)))
    writer.finish(2)
    engine = make_engine(ScriptedProvider())
    engine.runlog = log
    app = SSEApp(engine, heartbeat=0)

    def expire() -> None:
        now[0] += 61.0  # retention ends while the headers go out

    call = _Call(on_start=expire)
    async with engine:
        with anyio.fail_after(WAIT):
            await app(_scope("GET", "/sse/msg-x", [("Last-Event-ID", "1")]), call.receive, call.send)
    assert call.finished()
    assert [e["type"] for e in call.events()] == ["ERROR"]


async def test_sse_resume_primes_the_dialect_with_every_entry_before_the_cursor(request):
    """The AG-UI/AI SDK resume primes the dialect with ONE runlog.read: on Redis that is
    at most 1000 stream entries (one per flush, i.e. about one per delta of a model that
    streams slower than the 2 ms flush window). A run with >1000 flushes of reasoning then
    text, resumed in its text, reopened the reasoning span in the preamble and restarted
    the text message."""
    server = request.getfixturevalue("redis_server")
    engine = make_engine(
        ScriptedProvider(), redis={"url": server.url, "key_prefix": unique_prefix(), "flush_interval_ms": 1.0}
    )
    mid = "msg-prime"
    async with engine:
        writer = engine.runlog.open(mid, "a:someone")
        writer.append((1, Kind.STARTED, Started(mid, "m")))
        for seq in range(2, 1102):  # 1100 reasoning deltas, each in its own flush
            writer.append((seq, Kind.REASONING, "r"))
            with anyio.fail_after(WAIT):
                await writer.flush()
        for _ in range(1102, 1107):
            writer.append("t")
        writer.append((1107, Kind.ENDED, Ended(mid, "complete", "ttttt", None)))
        writer.finish(5)
        with anyio.fail_after(WAIT):
            await writer.flush()
        app = SSEApp(engine, heartbeat=0)
        thread = "thread-0123456789abcdef"
        await app.index.set(index_key("agui", ConnectionInfo(), thread), ActiveRun(mid, "run-1"))
        call = _Call()
        with anyio.fail_after(WAIT):
            await app(_scope("GET", f"/agui/{thread}/stream", [("Last-Event-ID", "1104")]), call.receive, call.send)
    kinds = [e["type"] for e in call.events()]
    # The client had the text message open at 1104: the stream reopens it, nothing else.
    assert kinds == ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]


class _AskingBucket:
    def __init__(self, limiter: _SharedLikeLimiter) -> None:
        self.limiter = limiter

    def take(self) -> Any:
        async def ask() -> int:  # a shared limiter answers after a round trip
            self.limiter.asking.set()
            await self.limiter.answer.wait()
            return 0

        return ask()


class _SharedLikeLimiter(MemoryLimiter):
    """The Limiter contract's shared case (RedisLimiter for users): take() is awaitable."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.asking = anyio.Event()
        self.answer = anyio.Event()

    def rate(self, session: Any) -> Any:
        return _AskingBucket(self)


async def test_a_broadcast_before_the_chat_request_is_handled_does_not_unregister_the_chat():
    """POST /api/chat: a broadcast reaching the session while its frame waits for the
    (shared) rate limiter is its first frame, so it commits the response before the run
    exists: no X-Streamcore-Message-Id header and the chat is never put in the run index,
    so the chat can be neither resumed (204) nor stopped (404)."""
    engine = make_engine(ScriptedProvider())
    engine.limiter = _SharedLikeLimiter()
    app = SSEApp(engine, heartbeat=0)
    chat = "chat-0123456789abcdef"
    body = {"id": chat, "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    call = _Call(json.dumps(body).encode())
    async with engine:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, _scope("POST", "/api/chat"), call.receive, call.send)
                await engine.limiter.asking.wait()
                engine.broadcast("NEWS", {"n": 1})
                engine.limiter.answer.set()
        found = await app.index.get(index_key("aisdk", ConnectionInfo(), chat))
    assert [e["type"] for e in call.events()][-1] == "finish"
    message_id = next(e["messageId"] for e in call.events() if e["type"] == "start")
    assert call.headers().get(b"x-streamcore-message-id") == message_id.encode()
    assert found is not None and found.message_id == message_id


