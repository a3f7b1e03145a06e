"""The Python client against the real server: resume, reasoning, conversations, lifecycle, errors.

Every server here is a real WebSocket server on 127.0.0.1; "cutting" a client closes its
socket from the server's side (1012), as a restarting proxy or a flaky network would.
"""

from __future__ import annotations

import pickle
import socket
import sys
import time

import anyio
import jwt
import pytest

from streamcore import Reasoning
from streamcore.client import (
    AuthFailed,
    ClientError,
    ConnectFailed,
    ConnectionLost,
    GenerationFailed,
    GenerationTimeout,
    InvalidMessage,
    MessageEnd,
    MissingDependency,
    NotFoundError,
    QueueFull,
    QueueFullError,
    RateLimited,
    RemoteError,
    RemoteServerError,
    StreamcoreClient,
    remote_error,
)
from streamcore.errors import ConfigError, ConnectionClosed, ConnectionClosedError, NotFound, StreamcoreError

from .helpers import TIMEOUT, ScriptedProvider, make_engine, running

pytestmark = pytest.mark.anyio

PIECES = ("Once ", "upon ", "a ", "time, ", "a ", "pianist ", "practised ", "scales ", "every ", "day.")
SECRET = "test-secret-that-is-long-enough-for-hs256"


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")


def dead_url() -> str:
    """A URL where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/ws"


def fast_client(url: str, **kwargs) -> StreamcoreClient:
    options = {"reconnect_delay": 0.01, "reconnect_decay": 1.0, "jitter": 0, "ping_interval": None, **kwargs}
    return StreamcoreClient(url, **options)


async def cut(engine) -> None:
    """Close every connection of ``engine`` from the server's side."""
    for session in list(engine.sessions):
        await session.close(1012, "cut")


async def read_until(pieces, want: str) -> list[str]:
    """Read an async iterator's pieces until their text is ``want``."""
    seen: list[str] = []
    while "".join(seen) != want:
        seen.append(await pieces.__anext__())
    return seen


def on_reconnect(client: StreamcoreClient) -> anyio.Event:
    event = anyio.Event()
    client.on("connected", lambda data: data["reconnects"] and event.set())
    return event


# --- resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rest", ["replayed", "live"])
@pytest.mark.parametrize("adapter", ["websockets", "asgi"])
async def test_reply_resumes_after_a_cut_mid_reply_nothing_missing_nothing_repeated(adapter, rest):
    provider = ScriptedProvider(PIECES, gate_after=4)
    engine = make_engine(provider)
    async with running(engine, adapter) as url, fast_client(url) as client:
        frames: list[str] = []
        client.on("AI_MESSAGE_CHUNK", lambda data: frames.append(data["content"]))
        reconnected = on_reconnect(client)
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("tell me a story")
            seen = await read_until(aiter(reply), "".join(PIECES[:4]))
            await provider.reached_gate.wait()
            await cut(engine)  # mid-reply: the provider is held after four pieces
            if rest == "live":
                await reconnected.wait()  # the rest streams after the RESUME
            provider.gate.set()  # "replayed": the run goes on while the client is away
            seen += [text async for text in reply]
            end = await reply.result()
    assert "".join(seen) == "".join(PIECES) == end.content == reply.text == "".join(frames)
    assert isinstance(end, MessageEnd) and end.stop_reason == "complete" and end.is_complete
    assert end.message_id == reply.message_id and end.usage is not None and end.usage.total_tokens
    assert client.reconnect_count == 1 and provider.opened == 1  # resumed, never asked again


async def test_reply_resumes_across_two_cuts():
    provider = ScriptedProvider(PIECES, gate_after=3)
    engine = make_engine(provider)
    async with running(engine, "websockets") as url, fast_client(url) as client:
        reconnected = on_reconnect(client)
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("tell me a story")
            pieces = aiter(reply)
            seen = await read_until(pieces, "".join(PIECES[:3]))
            await cut(engine)
            await reconnected.wait()
            await cut(engine)  # again, right after the RESUME went out
            provider.gate.set()
            seen += [text async for text in pieces]
            end = await reply.result()
    assert "".join(seen) == "".join(PIECES) == end.content
    assert client.reconnect_count == 2 and provider.opened == 1


async def test_reconnect_off_gives_connection_lost():
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider)
    async with running(engine, "websockets") as url, fast_client(url, reconnect=False) as client:
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("story")
            await read_until(aiter(reply), "".join(PIECES[:2]))
            await cut(engine)
            with pytest.raises(ConnectionLost) as info:
                await reply.result()
        assert info.value.code == 1012 and client.connection_state == "closed"
        provider.gate.set()


async def test_reconnect_failed_for_good_gives_connection_lost():
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider)
    failed = anyio.Event()
    async with running(engine, "websockets") as url, fast_client(url, reconnect_attempts=2) as client:
        client.on("reconnect_failed", lambda data: failed.set())
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("story")
            await read_until(aiter(reply), "".join(PIECES[:2]))
            client.url = dead_url()  # from now on, reconnection attempts find nobody
            await cut(engine)
            with pytest.raises(ConnectionLost):
                await reply.result()
            await failed.wait()
        assert client.connection_state == "closed"
        provider.gate.set()


async def test_resume_refused_as_not_found_gives_connection_lost():
    # The reconnect presents another user's token: the run is not theirs, so NOT_FOUND.
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider, auth={"jwt_secret": SECRET})
    async with running(engine, "websockets") as url, fast_client(url, token=token("alice")) as client:
        errors: list[str] = []
        client.on("ERROR", lambda data: errors.append(data["code"]))
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("story")
            await read_until(aiter(reply), "".join(PIECES[:2]))
            client.token = token("mallory")  # read at every connection attempt
            await cut(engine)
            with pytest.raises(ConnectionLost) as info:
                async for _ in reply:
                    pass
        provider.gate.set()
    assert isinstance(info.value.__cause__, NotFoundError) and info.value.__cause__.code == "NOT_FOUND"
    assert errors == ["NOT_FOUND"] and reply.text == "".join(PIECES[:2])


# --- reasoning ------------------------------------------------------------------------------


async def test_reasoning_is_exposed_apart_from_the_answer_and_resumes_too():
    thoughts = (Reasoning("The user wants a story. "), Reasoning("Keep it short. "), Reasoning("End on practice. "))
    answer = ("A ", "pianist ", "practised.")
    provider = ScriptedProvider(thoughts[:2] + answer[:1] + thoughts[2:] + answer[1:], gate_after=2)
    engine = make_engine(provider)
    async with running(engine, "asgi") as url, fast_client(url) as client:
        called: list[str] = []
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("story", on_reasoning=called.append)
            reasoning = reply.reasoning()
            seen_reasoning = await read_until(reasoning, "".join(thoughts[:2]))
            await cut(engine)  # mid-reasoning
            provider.gate.set()
            texts = [text async for text in reply]
            seen_reasoning += [piece async for piece in reasoning]
            end = await reply.result()
    assert "".join(texts) == "".join(answer) == end.content == reply.text
    assert "".join(seen_reasoning) == "".join(thoughts) == reply.reasoning_text == "".join(called)
    assert client.reconnect_count == 1


async def test_demo_provider_reasoning_reaches_reasoning_not_text():
    engine = make_engine(None, provider={"name": "demo", "options": {"delay_ms": 0, "reasoning": True}})
    async with running(engine, "websockets") as url, fast_client(url) as client:
        frames: list[str] = []
        client.on("AI_REASONING_CHUNK", lambda data: frames.append(data["content"]))
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("Comment apprendre le piano ?")
            texts = [text async for text in reply]
            end = await reply.result()
            pieces = [piece async for piece in reply.reasoning()]  # after the end: all of it
    assert reply.reasoning_text and "".join(pieces) == reply.reasoning_text == "".join(frames)
    assert "".join(texts) == end.content and reply.reasoning_text not in end.content


# --- conversations --------------------------------------------------------------------------


async def test_conversation_id_reaches_the_server_and_keeps_history_across_connections():
    provider = ScriptedProvider(("Noted.",))
    engine = make_engine(provider)
    async with running(engine, "websockets") as url:
        with anyio.fail_after(TIMEOUT):
            async with fast_client(url) as client:
                await (await client.send_message("My name is Ada.", conversation_id="conv-piano-7f3a")).result()
            async with fast_client(url) as client:  # a new connection, the same conversation
                await (await client.send_message("What is my name?", conversation_id="conv-piano-7f3a")).result()
                await (await client.send_message("And now?", context={"page": "home"})).result()
    contents = [[m.content for m in request.messages] for request in provider.requests]
    assert contents[1][-3:] == ["My name is Ada.", "Noted.", "What is my name?"]
    assert "My name is Ada." not in contents[2]  # no conversation id: this connection's own
    assert provider.requests[2].context == {"page": "home"}


# --- connect / aclose -----------------------------------------------------------------------


async def test_connect_and_aclose():
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider)
    async with running(engine, "websockets") as url:
        client = fast_client(url)
        with anyio.fail_after(TIMEOUT):
            assert await client.connect() is client and client.is_connected
            assert await client.connect() is client  # connected already: nothing to do
            reply = await client.send_message("story")
            await read_until(aiter(reply), "".join(PIECES[:2]))
            await client.aclose()  # a reply still waiting fails, it does not hang
            with pytest.raises(ConnectionLost):
                await reply.result()
            assert client.connection_state == "closed" and not client.is_connected
            await client.aclose()  # idempotent
            assert StreamcoreClient.close is StreamcoreClient.aclose
            provider.gate.set()
            await client.connect()  # a closed client can connect again
            end = await (await client.send_message("again")).result()
            assert end.content == "".join(PIECES)
            await client.close()
        with pytest.raises(ConnectFailed) as info:  # also a ConnectionError, as before
            await fast_client(dead_url(), reconnect=False).connect()
        assert isinstance(info.value, ConnectionError) and isinstance(info.value, StreamcoreError)


# --- errors ---------------------------------------------------------------------------------


async def test_exceptions_hang_under_the_one_root():
    for cls in (ClientError, QueueFullError, ConnectFailed, ConnectionLost, MissingDependency, RemoteError):
        assert issubclass(cls, StreamcoreError), cls
    assert QueueFull is QueueFullError and issubclass(ConnectionLost, ConnectionClosedError)
    assert issubclass(ConnectionLost, ConnectionClosed) and issubclass(MissingDependency, (ImportError))
    assert issubclass(MissingDependency, ConfigError) and issubclass(NotFoundError, NotFound)
    codes = {"RATE_LIMIT": RateLimited, "INVALID_MESSAGE": InvalidMessage, "AUTH_FAILED": AuthFailed,
             "GENERATION_FAILED": GenerationFailed, "TIMEOUT": GenerationTimeout,
             "SERVER_ERROR": RemoteServerError, "NOT_FOUND": NotFoundError, "SOMETHING_NEW": RemoteError}
    for code, cls in codes.items():
        error = remote_error({"code": code, "message": "m", "retryable": code == "RATE_LIMIT",
                              "requestId": "r1", "retryAfter": 1500, "messageId": "msg-1"})
        assert type(error) is cls and isinstance(error, RemoteError) and isinstance(error, ClientError)
        assert (error.code, error.retryable, error.retry_after_ms, error.retry_after) == (code, code == "RATE_LIMIT", 1500, 1.5)
        assert error.request_id == "r1" and error.message_id == "msg-1" and str(error) == "m"
    lost = pickle.loads(pickle.dumps(ConnectionLost("gone", code=1012, reason="cut")))
    assert (str(lost), lost.code, lost.reason) == ("gone", 1012, "cut")

    # A real one: the offline queue is full, caught through the root.
    async with fast_client(dead_url(), reconnect_delay=5, max_queue=1) as client:
        await client.send_message("queued")
        with pytest.raises(StreamcoreError) as info:
            await client.send_message("one too many")
    assert isinstance(info.value, QueueFullError)


async def test_missing_websockets_names_the_extra(monkeypatch):
    for name in {"websockets", *(n for n in sys.modules if n.startswith("websockets."))}:
        monkeypatch.setitem(sys.modules, name, None)  # `import websockets` now fails
    with pytest.raises(MissingDependency) as info:
        with anyio.fail_after(TIMEOUT):
            async with StreamcoreClient("ws://127.0.0.1:9/ws"):
                pass
    assert "pip install 'streamcore-llm[client]'" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ImportError) and isinstance(info.value, ConfigError)
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(ImportError):
        await StreamcoreClient("ws://127.0.0.1:9/ws").connect()


@pytest.mark.parametrize("refuse_first_resume", [False, True])
async def test_events_replayed_twice_are_shown_once(refuse_first_resume):
    # A hand-written server that replays more than RESUME asked for (from the start), and
    # may first refuse the RESUME as rate limited: the client still shows each piece once.
    import json

    from websockets.asyncio.server import serve

    resumes: list[dict] = []
    connections = 0

    def frame(type: str, request_id: str, **data) -> str:
        return json.dumps({"id": "e", "type": type, "timestamp": 1, "data": data, "metadata": {"requestId": request_id}})

    def events(request_id: str, upto: int) -> list[str]:
        out = [frame("AI_MESSAGE_START", request_id, messageId="msg-1", seq=1)]
        out += [frame("AI_MESSAGE_CHUNK", request_id, messageId="msg-1", content=PIECES[i], index=i, seq=i + 2)
                for i in range(upto)]
        return out

    async def handler(ws):
        nonlocal connections
        connections += 1
        if connections == 1:
            request = json.loads(await ws.recv())  # USER_MESSAGE
            for raw in events(request["id"], 3):
                await ws.send(raw)
            await ws.close(1012, "cut")
            return
        request = json.loads(await ws.recv())
        resumes.append(request)
        if refuse_first_resume and len(resumes) == 1:
            await ws.send(frame("ERROR", request["id"], code="RATE_LIMIT", message="slow down", retryable=True,
                                retryAfter=10, requestId=request["id"]))
            request = json.loads(await ws.recv())
            resumes.append(request)
        for raw in events(request["id"], len(PIECES)):  # everything again, from the start
            await ws.send(raw)
        await ws.send(frame("AI_MESSAGE_END", request["id"], messageId="msg-1", isComplete=True,
                            stopReason="complete", content="".join(PIECES), seq=len(PIECES) + 2))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/ws"
        async with fast_client(url) as client:
            frames: list[str] = []
            client.on("AI_MESSAGE_CHUNK", lambda data: frames.append(data["content"]))
            with anyio.fail_after(TIMEOUT):
                reply = await client.send_message("story")
                texts = [text async for text in reply]
                end = await reply.result()
    assert "".join(texts) == "".join(PIECES) == end.content == "".join(frames)
    assert [r["type"] for r in resumes] == ["RESUME"] * (2 if refuse_first_resume else 1)
    assert all(r["data"] == {"messageId": "msg-1", "lastSeq": 4} for r in resumes)
