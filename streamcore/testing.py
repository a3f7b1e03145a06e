"""Helpers for testing applications built on streamcore (and streamcore itself).

:class:`MemoryConnection` is a real :class:`~streamcore.transport.Connection` over anyio
memory streams: it drives the engine exactly as an adapter does, without sockets.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Union

import anyio
import msgspec

from .errors import ConnectionClosed

__all__ = ["MemoryConnection", "MemoryClient", "memory_pair"]


class MemoryConnection:
    """The server side of an in-memory connection."""

    def __init__(self, inbound, outbound) -> None:
        self._inbound = inbound
        self._outbound = outbound
        self.close_code: int | None = None
        self.close_reason = ""

    async def receive(self) -> Union[str, bytes]:
        try:
            return await self._inbound.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise ConnectionClosed(1000) from None

    async def send(self, frame: bytes) -> None:
        try:
            await self._outbound.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ConnectionClosed(1006) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code, self.close_reason = code, reason
        await self._outbound.aclose()
        await self._inbound.aclose()


class MemoryClient:
    """The client side: send dicts or raw strings, receive decoded frames."""

    def __init__(self, outbound, inbound) -> None:
        self._outbound = outbound
        self._inbound = inbound

    async def send(self, type: str, data: Any = None, **fields: Any) -> None:
        await self.send_raw(json.dumps({"type": type, "data": data if data is not None else {}, **fields}))

    async def send_raw(self, raw: Union[str, bytes]) -> None:
        await self._outbound.send(raw)

    async def receive(self) -> dict[str, Any]:
        """The next frame as a dict; raises ``ConnectionClosed`` once the server closed."""
        try:
            frame = await self._inbound.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise ConnectionClosed(1000) from None
        return msgspec.json.decode(frame) if isinstance(frame, (bytes, str)) else frame

    async def receive_until(self, type: str, message_id: str | None = None) -> list[dict[str, Any]]:
        """Frames up to and including the first of ``type`` (for ``message_id``, if given)."""
        frames = []
        while True:
            frame = await self.receive()
            frames.append(frame)
            if frame["type"] == type and (
                message_id is None or frame["data"].get("messageId") == message_id
            ):
                return frames

    async def aclose(self) -> None:
        await self._outbound.aclose()


def memory_pair(buffer: int = 1 << 16) -> tuple[MemoryConnection, MemoryClient]:
    """A connected (server side, client side) pair."""
    c2s_send, c2s_recv = anyio.create_memory_object_stream(buffer)
    s2c_send, s2c_recv = anyio.create_memory_object_stream(buffer)
    return MemoryConnection(c2s_recv, s2c_send), MemoryClient(c2s_send, s2c_recv)


class FakeOpenAI:
    """A local server speaking the OpenAI chat-completions streaming format, on 127.0.0.1.

    It stands in for a paid remote API at the HTTP boundary, so providers run their real
    code (SDK, HTTP client, SSE parsing) against it. The requested ``model`` picks the
    behaviour:

    - ``ok`` (anything else): streams ``chunks`` deltas of ``text``, then ``[DONE]``;
    - ``rate-limit``: 429 with ``retry-after: 7``;
    - ``unauthorized`` / ``forbidden`` / ``not-found``: 401 / 403 / 404;
    - ``bad-request``: 400; ``server-error``: 500;
    - ``break``: streams ``break_after`` chunks, then drops the connection mid-body;
    - ``slow``: waits ``slow_seconds`` before the first chunk;
    - ``json``: streams ``json_text`` (for structured output).

    Use as ``async with FakeOpenAI() as api: api.base_url``; ``api.requests`` records
    every request body, ``api.closed_early`` counts streams the client abandoned.
    """

    def __init__(
        self,
        *,
        text: str = "Bonjour ! Voici une réponse diffusée morceau par morceau.",
        chunks: int | None = None,
        break_after: int = 3,
        slow_seconds: float = 5.0,
        json_text: str = "",
        delay: float = 0.0,
        burst: bool = False,
    ) -> None:
        self.text = text
        self.chunks = chunks
        self.break_after = break_after
        self.slow_seconds = slow_seconds
        self.json_text = json_text
        self.delay = delay
        self.burst = burst
        self._burst_cache: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.closed_early = 0
        self.port = 0
        self._tg: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> "FakeOpenAI":
        self._listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = self._listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._listener.serve, self._handle)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        await self._listener.aclose()

    def pieces(self, model: str) -> list[str]:
        if model.endswith("json"):
            text = self.json_text
        else:
            text = self.text
        n = self.chunks
        if n is None:
            return [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]]
        size = max(1, len(text) // n)
        return [(text[i * size:(i + 1) * size] or ".") for i in range(n)]

    async def _handle(self, stream: Any) -> None:
        from anyio.streams.buffered import BufferedByteReceiveStream

        reader = BufferedByteReceiveStream(stream)
        try:
            while True:  # keep-alive: serve requests until the client closes
                head = await reader.receive_until(b"\r\n\r\n", 65536)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
                body = await reader.receive_exactly(int(headers.get("content-length", "0")))
                request = json.loads(body or b"{}")
                self.requests.append(request)
                finished = dropped = False
                async with anyio.create_task_group() as tg:

                    async def watch() -> None:
                        # The client sends nothing while a response streams (no pipelining):
                        # a read that ends means it closed the connection early.
                        nonlocal finished
                        with contextlib.suppress(Exception):
                            await reader.receive()
                        if not finished:
                            self.closed_early += 1
                            finished = True
                        tg.cancel_scope.cancel()

                    tg.start_soon(watch)
                    try:
                        await self._respond(stream, request)
                    except _Dropped:
                        finished = dropped = True
                    finished = True
                    tg.cancel_scope.cancel()
                if dropped:
                    return

        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def _respond(self, stream: Any, request: dict[str, Any]) -> None:
        model = str(request.get("model", "ok")).rsplit("/", 1)[-1]
        statuses = {"rate-limit": 429, "unauthorized": 401, "forbidden": 403, "not-found": 404,
                    "bad-request": 400, "server-error": 500}
        if model in statuses:
            status = statuses[model]
            body = json.dumps({"error": {"message": f"fake {status}", "type": "fake", "code": str(status)}}).encode()
            extra = "retry-after: 7\r\n" if status == 429 else ""
            await stream.send(
                f"HTTP/1.1 {status} Fake\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(body)}\r\n\r\n".encode() + body
            )
            return
        await stream.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        if model == "slow":
            await anyio.sleep(self.slow_seconds)
        pieces = self.pieces(model)
        created = int(time.time())
        if self.burst and model not in ("break", "slow"):
            # Every event pre-encoded and sent in one write: the server costs next to
            # nothing, so a benchmark measures the client alone.
            body = self._burst_cache.get(model)
            if body is None:
                events = [
                    b"data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                                            "model": model, "choices": [{"index": 0, "delta": {"content": p},
                                                                         "finish_reason": None}]}).encode() + b"\n\n"
                    for p in pieces
                ]
                events.append(b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","model":"' + model.encode()
                              + b'","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
                data = b"".join(events)
                body = self._burst_cache[model] = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
            await stream.send(body)
            return
        try:
            for i, piece in enumerate(pieces):
                if model == "break" and i == self.break_after:
                    # Drop the socket mid-body: no terminating chunk, no [DONE].
                    raise _Dropped
                event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                         "model": model, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                await _send_chunk(stream, b"data: " + json.dumps(event).encode() + b"\n\n")
                if self.delay:
                    await anyio.sleep(self.delay)
            final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)}}
            await _send_chunk(stream, b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
            await stream.send(b"0\r\n\r\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _Dropped from None


class _Dropped(Exception):
    """Ends a connection on purpose."""


async def _send_chunk(stream: Any, data: bytes) -> None:
    await stream.send(b"%x\r\n%b\r\n" % (len(data), data))


def _main() -> None:  # pragma: no cover - used by the benchmarks
    """``python -m streamcore.testing --chunks N [--burst]``: serve FakeOpenAI until killed."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=None)
    parser.add_argument("--burst", action="store_true")
    args = parser.parse_args()

    async def run() -> None:
        # Distinct chunks: litellm refuses a stream that repeats one chunk over and over.
        text = "".join(f"w{i:05d}" for i in range(args.chunks or 100))
        async with FakeOpenAI(chunks=args.chunks, burst=args.burst, text=text) as api:
            print(f"READY {api.port}", flush=True)
            await anyio.sleep_forever()

    anyio.run(run)


if __name__ == "__main__":  # pragma: no cover
    _main()
