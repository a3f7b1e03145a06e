"""Sending a chunk from the run's task while the writer is idle (``[server] eager_send``).

A send that completes at once costs no task switch; one that must wait (the socket is
full) is finished by the connection's writer task, before anything queued after it.
Unit tests drive :func:`~streamcore.transport.start_send` on plain coroutines; the server
tests use real uvicorn, Starlette, websockets and hypercorn servers, and a client that
stops reading so that sends really wait.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import anyio
import pytest

from streamcore import Completion
from streamcore.errors import ConnectionClosed
from streamcore.outbox import Outbox
from streamcore.transport import FinishSend, start_send

from .helpers import TIMEOUT, check_stream, connect, make_engine, record_calls, running

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request):
    # The eager path exists on asyncio only; the fast extra's uvloop is asyncio too.
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


async def test_a_send_that_never_waits_completes_in_the_calling_task():
    log = []

    async def send() -> None:
        log.append("sent")

    assert start_send(send()) is None
    assert log == ["sent"]


async def test_a_send_that_waits_is_finished_by_another_task():
    ready = asyncio.Event()
    log = []

    async def send() -> str:
        log.append("begun")
        await ready.wait()
        log.append("done")
        return "result"

    rest = start_send(send())
    assert isinstance(rest, FinishSend) and log == ["begun"]

    async def writer() -> str:
        return await rest

    task = asyncio.get_running_loop().create_task(writer())
    await asyncio.sleep(0)
    assert not task.done()
    ready.set()
    with anyio.fail_after(TIMEOUT):
        assert await task == "result"
    assert log == ["begun", "done"]


async def test_cancelling_the_finishing_task_cancels_the_send():
    cleaned = []

    async def send() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    rest = start_send(send())
    assert rest is not None

    async def writer() -> None:
        await rest

    task = asyncio.get_running_loop().create_task(writer())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_a_failed_eager_send_marks_the_outbox_broken_and_wakes_the_writer():
    outbox = Outbox(1 << 16)

    def send_now(frame: bytes) -> Any:
        raise ConnectionClosed(1006)

    outbox.send_now = send_now
    waiting = asyncio.get_running_loop().create_task(outbox.wait_ready())
    await asyncio.sleep(0)
    assert outbox._waiter is not None
    outbox.send_eager(b"frame")
    with anyio.fail_after(TIMEOUT):
        await waiting
    assert outbox.broken and outbox.sent == 0


class PacedProvider:
    """Yields ``count`` pieces of ``size`` characters, giving the loop a turn between them
    (as a network stream does), and sets ``done`` once everything was yielded."""

    model = "paced"

    def __init__(self, count: int, size: int) -> None:
        self.pieces = [f"{i:06d}" + "x" * (size - 6) for i in range(count)]
        self.done = anyio.Event()

    async def stream(self, request: Any):
        for piece in self.pieces:
            await anyio.sleep(0)
            yield piece
        self.done.set()
        yield Completion()


@pytest.mark.parametrize(
    "adapter,eager", [("asgi", True), ("starlette", True), ("websockets", True), ("hypercorn", False)]
)
async def test_eager_sends_only_where_the_server_allows_it(adapter: str, eager: bool):
    provider = PacedProvider(20, 16)
    engine = make_engine(provider)
    async with running(engine, adapter) as url, connect(url) as client:
        await client.send("USER_MESSAGE", {"content": "go"})
        frames = await client.until("AI_MESSAGE_END")
        check_stream(frames)
        (session,) = engine.sessions
        assert (session.outbox.send_now is not None) is eager


@pytest.mark.parametrize("adapter", ["asgi", "websockets"])
async def test_eager_send_can_be_turned_off(adapter: str):
    engine = make_engine(PacedProvider(5, 16), server={"eager_send": False})
    async with running(engine, adapter) as url, connect(url) as client:
        await client.send("USER_MESSAGE", {"content": "go"})
        check_stream(await client.until("AI_MESSAGE_END"))
        (session,) = engine.sessions
        assert session.outbox.send_now is None


@pytest.mark.parametrize("adapter", ["asgi", "starlette", "websockets"])
@pytest.mark.parametrize("coalesce", [True, False])
async def test_a_reader_that_stops_reading_gets_every_chunk_once_in_order(adapter: str, coalesce: bool):
    # 8 MB of 8 KB chunks against a client that reads nothing until the provider is done:
    # the socket fills, sends started by the run wait and are handed to the writer, later
    # chunks queue behind them (and the reader lags and catches up from the run log).
    provider = PacedProvider(1000, 8192)
    engine = make_engine(provider, limits={"coalesce_chunks": coalesce}, runs={"max_run_bytes": 16 << 20})
    async with running(engine, adapter) as url:
        # A small receive buffer, set before connecting (it sizes the TCP window): the
        # server's socket fills long before 8 MB.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with anyio.fail_after(TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        async with connect(url, sock=sock, max_queue=1, max_size=None) as client:
            await client.send("USER_MESSAGE", {"content": "go"})
            with anyio.fail_after(TIMEOUT):
                await provider.done.wait()
            (session,) = engine.sessions
            assert session.outbox.handed_over > 0  # a send really waited and was handed over
            frames = await client.until("AI_MESSAGE_END")
    # END comes without ``content``: 8 MB is over the frame limit (the chunks carried it).
    assert [f["type"] for f in frames].count("AI_MESSAGE_END") == 1 and frames[-1]["type"] == "AI_MESSAGE_END"
    assert frames[-1]["data"]["stopReason"] == "complete" and "content" not in frames[-1]["data"]
    chunks = [f["data"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["content"] for c in chunks) == "".join(provider.pieces)
    seqs = [c["seq"] for c in chunks]
    assert seqs == sorted(set(seqs)) and seqs[-1] == len(provider.pieces) + 1  # START is seq 1
    if not coalesce:
        assert len(chunks) == len(provider.pieces)


async def test_websockets_without_the_fast_path_sends_through_send(monkeypatch):
    # A websockets release without the attributes the fast path reads: every frame goes
    # through ServerConnection.send() and there is no eager send; the stream is the same.
    import streamcore.adapters.websockets as adapter_module
    from websockets.asyncio.server import ServerConnection

    monkeypatch.setattr(adapter_module, "_FAST_PATH", adapter_module._FAST_PATH + ("no_such_attribute",))
    sent = record_calls(monkeypatch, ServerConnection, "send")
    provider = PacedProvider(20, 16)
    engine = make_engine(provider)
    async with running(engine, "websockets") as url, connect(url) as client:
        await client.send("USER_MESSAGE", {"content": "go"})
        frames = await client.until("AI_MESSAGE_END")
        (session,) = engine.sessions
        assert session.outbox.send_now is None
    check_stream(frames)
    assert len(sent) == len(frames)  # THINKING, START, 20 chunks, END: each through send()


async def test_websockets_fast_path_bypasses_send(monkeypatch):
    from websockets.asyncio.server import ServerConnection

    sent = record_calls(monkeypatch, ServerConnection, "send")
    engine = make_engine(PacedProvider(20, 16))
    async with running(engine, "websockets") as url, connect(url) as client:
        await client.send("USER_MESSAGE", {"content": "go"})
        frames = await client.until("AI_MESSAGE_END")
    check_stream(frames)
    assert sent == []  # an open connection with room in its buffer: never through send()


async def test_put_eager_sends_from_the_caller_only_while_the_writer_is_idle():
    outbox = Outbox(1 << 16)
    sent: list[bytes] = []
    outbox.put_eager(b"no send_now: queued")
    assert outbox.take() == [b"no send_now: queued"]
    outbox.send_now = sent.append  # a send that completes at once (returns None)
    outbox.put_eager(b"no writer waiting: queued")
    assert sent == [] and len(outbox) == 1
    outbox.take()
    waiting = asyncio.get_running_loop().create_task(outbox.wait_ready())
    await asyncio.sleep(0)
    outbox.put_eager(b"THINKING")
    assert sent == [b"THINKING"] and len(outbox) == 0 and outbox.sent == 1
    assert outbox._waiter is not None and not waiting.done()  # the writer was not woken
    outbox.put(b"START")  # queued: wakes the writer ...
    outbox.put_eager(b"END")  # ... so this one queues behind it, in order
    with anyio.fail_after(TIMEOUT):
        await waiting
    assert sent == [b"THINKING"] and outbox.take() == [b"START", b"END"]


@pytest.mark.parametrize("adapter", ["asgi", "websockets"])
async def test_thinking_and_end_leave_from_the_calling_task_when_the_writer_is_idle(adapter: str, monkeypatch):
    # A paced reply: the writer is idle when AI_THINKING is sent and after the last chunk,
    # so both go out through send_now (no writer wake-up); AI_MESSAGE_START is queued
    # (it wakes the writer: a provider that bursts then has its chunks batched).
    from streamcore.adapters._direct import DirectConnection
    from streamcore.adapters.websockets import WebsocketsConnection

    cls = DirectConnection if adapter == "asgi" else WebsocketsConnection
    eager: list[bytes] = []
    real = cls._send_now

    def recording(self: Any, frame: bytes) -> Any:
        eager.append(frame)
        return real(self, frame)

    monkeypatch.setattr(cls, "_send_now", recording)
    engine = make_engine(PacedProvider(20, 16))
    async with running(engine, adapter) as url, connect(url) as client:
        await client.send("USER_MESSAGE", {"content": "go"})
        frames = await client.until("AI_MESSAGE_END")
    check_stream(frames)
    kinds = [frame.split(b'"type":"', 1)[1].split(b'"', 1)[0].decode() for frame in eager]
    assert kinds[0] == "AI_THINKING" and kinds[-1] == "AI_MESSAGE_END"
    assert "AI_MESSAGE_START" not in kinds
    assert kinds.count("AI_MESSAGE_CHUNK") >= 15  # the paced chunks too, as before
