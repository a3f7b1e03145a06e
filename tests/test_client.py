"""The Python client against the real server: streaming, objectives, events, reconnection."""

from __future__ import annotations

import os
import signal
import socket
import sys

import anyio
import pytest

from streamcore.client import ConnectionLost, InvalidMessage, MessageEnd, NotFoundError, QueueFull, StreamcoreClient
from streamcore.objectives import Objective

from .helpers import TIMEOUT, make_engine, running

pytestmark = pytest.mark.anyio

DEMO = {"name": "demo", "options": {"delay_ms": 0}}


async def test_send_message_objective_update_ping_and_events():
    engine = make_engine(None, provider=DEMO, features={"follow_up_questions": "session"})
    async with running(engine, "asgi") as url:
        async with StreamcoreClient(url) as client:
            seen: list[str] = []
            unsubscribe = client.on("*", lambda frame: seen.append(frame["type"]))
            follow = anyio.Event()
            client.on("FOLLOW_UP_QUESTIONS", lambda data: follow.set())
            with anyio.fail_after(TIMEOUT):
                reply = await client.send_message("Comment apprendre le piano ?")
                texts = [t async for t in reply]
                end = await reply.result()
                await follow.wait()
            assert isinstance(end, MessageEnd)
            assert "".join(texts) == end.content == reply.text and end.stop_reason == "complete" and end.is_complete
            assert reply.message_id == end.message_id and reply.reasoning_text == ""
            assert seen[:2] == ["AI_THINKING", "AI_MESSAGE_START"] and "AI_MESSAGE_END" in seen
            unsubscribe()
            count = len(seen)
            with anyio.fail_after(TIMEOUT):
                objective = await client.generate_objective("Courir un marathon", difficulty="beginner", category="sport")
                assert isinstance(objective, Objective)
                assert objective.category == "sport" and len(objective.steps) == 3
                updated = await client.update_objective(objective.id, {"title": "Marathon"})
                assert isinstance(updated, Objective) and updated.title == "Marathon"
                raw = await client.update_objective(objective.id, {"title": "Run"}, objective_type=dict)
                assert raw["title"] == "Run"
                with pytest.raises(InvalidMessage) as info:
                    await client.update_objective("obj-unknown", {})
                assert info.value.code == "INVALID_MESSAGE" and not info.value.retryable
                rtt = await client.ping()
            assert 0 < rtt < TIMEOUT
            assert len(seen) == count  # unsubscribed: no more calls
            assert client.is_connected and client.queue_size == 0


async def test_stop_generation_ends_with_user_cancelled():
    engine = make_engine(None, provider={"name": "demo", "options": {"delay_ms": 20, "words": 400}})
    async with running(engine, "websockets") as url, StreamcoreClient(url) as client:
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("long answer please")
            async for _ in reply:
                await reply.stop()
                break
            end = await reply.result()
    assert end.stop_reason == "user_cancelled" and end.is_complete is False
    assert 0 < len(end.content.split()) < 400


async def test_auto_retry_honours_retry_after_and_typed_errors():
    # One message per 2 s: the second, sent right after the first reply, is refused.
    engine = make_engine(None, provider=DEMO, limits={"messages_per_interval": 1, "interval": 2})
    async with running(engine, "asgi") as url:
        async with StreamcoreClient(url, auto_retry=True) as client:
            with anyio.fail_after(TIMEOUT):
                first = await (await client.send_message("one")).result()
                second = await client.send_message("two")  # RATE_LIMIT, retried after retryAfter
                end = await second.result()
            assert first.stop_reason == end.stop_reason == "complete"
            assert second._request.retries == 1
        async with StreamcoreClient(url) as client:
            from streamcore.client import RateLimited

            with anyio.fail_after(TIMEOUT):
                await (await client.send_message("one")).result()
                with pytest.raises(RateLimited) as info:
                    await (await client.send_message("two")).result()
            assert info.value.retryable and 0 < info.value.retry_after_ms <= 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_server(port: int):
    proc = await anyio.open_process(
        [sys.executable, "-m", "streamcore.cli", "serve", "--port", str(port), "--log-format", "json"],
        env={**os.environ, "STREAMCORE_PROVIDER": "demo"},
    )
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
    assert b"listening" in line
    return proc


async def test_server_killed_and_restarted_client_reconnects_with_backoff_resumes_and_flushes_queue():
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    proc = await start_server(port)
    events: list[tuple[str, object]] = []
    reconnected = anyio.Event()
    try:
        async with StreamcoreClient(url, reconnect_delay=0.2, reconnect_decay=2.0, jitter=0,
                                    reconnect_attempts=10, ping_interval=None) as client:
            client.on("disconnected", lambda d: events.append(("disconnected", d["code"])))
            client.on("reconnecting", lambda d: events.append(("reconnecting", round(d["delay"], 3))))
            client.on("connected", lambda d: (events.append(("connected", d["reconnects"])), reconnected.set()))
            thinking: list[str] = []
            client.on("*", lambda f: f["type"] == "AI_THINKING" and thinking.append(f["metadata"]["requestId"]))
            with anyio.fail_after(TIMEOUT):
                slow = await client.send_message("first question")
                async for _ in slow:
                    break  # the reply is streaming (demo pace: 25 ms a word)...
                proc.send_signal(signal.SIGKILL)  # ...when the server dies without a goodbye
                await proc.wait()
                while client.connection_state == "connected":
                    await anyio.sleep(0.01)
                # Offline: messages are queued, in order, and the queue size is visible.
                a = await client.send_message("queued one")
                b = await client.send_message("queued two")
                assert client.queue_size == 2 and not client.is_connected
                # Let a few attempts fail against the dead port before restarting.
                while sum(1 for e in events if e[0] == "reconnecting") < 3:
                    await anyio.sleep(0.01)
            proc = await start_server(port)
            with anyio.fail_after(TIMEOUT):
                await reconnected.wait()
                # The reply that was streaming is resumed on the new connection; the new
                # server never heard of it: NOT_FOUND, so it fails with ConnectionLost.
                with pytest.raises(ConnectionLost) as info:
                    await slow.result()
                end_a = await a.result()
                end_b = await b.result()
            assert isinstance(info.value.__cause__, NotFoundError)
            assert client.queue_size == 0 and client.is_connected
            assert "queued one" in end_a.content and "queued two" in end_b.content
            assert thinking[-2:] == [a.request_id, b.request_id]  # flushed in the order sent
    finally:
        proc.kill()
        await proc.aclose()
    delays = [e[1] for e in events if e[0] == "reconnecting"]
    assert delays[:3] == [0.2, 0.4, 0.8]  # reconnect_delay * reconnect_decay ** attempt
    assert events[0][0] == "disconnected"
    assert events[-1] == ("connected", 1)


async def test_queue_flushes_in_order_after_reconnect():
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    engine = make_engine(None, provider=DEMO)
    received: list[str] = []

    @engine.on("NOTE")
    def note(session, frame):
        received.append(frame.data["n"])

    async with StreamcoreClient(url, reconnect_delay=0.05, jitter=0, reconnect_attempts=1000, ping_interval=None) as client:
        assert client.connection_state in ("reconnecting", "connecting")
        for n in range(5):
            await client.send("NOTE", {"n": str(n)})
        assert client.queue_size == 5
        from streamcore.adapters.websockets import serve

        async with serve(engine, "127.0.0.1", port):
            with anyio.fail_after(TIMEOUT):
                await client.wait_connected()
                while len(received) < 5:
                    await anyio.sleep(0.01)
        assert received == ["0", "1", "2", "3", "4"]


async def test_attempt_limit_and_queue_limit():
    url = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens here
    failed = anyio.Event()
    attempts: list[int] = []
    client = StreamcoreClient(url, reconnect_delay=0.01, reconnect_decay=1.0, jitter=0,
                              reconnect_attempts=3, max_queue=2, ping_interval=None)
    client.on("reconnecting", lambda d: attempts.append(d["attempt"]))
    client.on("reconnect_failed", lambda d: failed.set())
    async with client:
        await client.send("PING", {"timestamp": 1})
        await client.send("PING", {"timestamp": 2})
        with pytest.raises(QueueFull):
            await client.send("PING", {"timestamp": 3})
        with anyio.fail_after(TIMEOUT):
            await failed.wait()
        assert client.connection_state == "closed"
    assert attempts == [1, 2, 3]


async def test_no_reconnect_raises_on_first_failure():
    with pytest.raises(ConnectionError):
        async with StreamcoreClient(f"ws://127.0.0.1:{free_port()}/ws", reconnect=False, timeout=5):
            pass
