"""Helpers for testing applications built on streamcore (and streamcore itself).

:class:`MemoryConnection` is a real :class:`~streamcore.transport.Connection` over anyio
memory streams: it drives the engine exactly as an adapter does, without sockets.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any, Union

import anyio
import msgspec

from .errors import ConnectionClosed

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["MemoryConnection", "MemoryClient", "memory_pair"]


class MemoryConnection:
    """The server side of an in-memory connection."""

    def __init__(
        self, inbound: MemoryObjectReceiveStream[Union[str, bytes]], outbound: MemoryObjectSendStream[bytes]
    ) -> None:
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

    def __init__(
        self, outbound: MemoryObjectSendStream[Union[str, bytes]], inbound: MemoryObjectReceiveStream[bytes]
    ) -> None:
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
    c2s_send: MemoryObjectSendStream[Union[str, bytes]]
    c2s_recv: MemoryObjectReceiveStream[Union[str, bytes]]
    s2c_send: MemoryObjectSendStream[bytes]
    s2c_recv: MemoryObjectReceiveStream[bytes]
    c2s_send, c2s_recv = anyio.create_memory_object_stream(buffer)
    s2c_send, s2c_recv = anyio.create_memory_object_stream(buffer)
    return MemoryConnection(c2s_recv, s2c_send), MemoryClient(c2s_send, s2c_recv)


class FakeOpenAI:
    """A local server speaking the OpenAI chat-completions streaming format, on 127.0.0.1.

    It stands in for a paid remote API at the HTTP boundary, so providers run their real
    code (SDK, HTTP client, SSE parsing) against it. The requested ``model`` (its last
    ``/``-separated part) picks the behaviour:

    - ``ok`` (anything else): streams ``chunks`` deltas of ``text``, then ``[DONE]``;
    - ``json``: streams ``json_text`` (for structured output);
    - ``rate-limit``: 429 with ``retry-after: 7``;
    - ``unauthorized`` / ``forbidden`` / ``not-found``: 401 / 403 / 404;
    - ``bad-request``: 400; ``context-length``: 400 whose body says the context window is
      exceeded; ``server-error`` / ``bad-gateway`` / ``unavailable``: 500 / 502 / 503;
    - ``error-flood``: 500 whose body never ends (``endless_bytes`` at most);
    - ``json-error``: 200 with a JSON ``{"error": ...}`` body instead of a stream;
    - ``break``: streams ``break_after`` chunks, then drops the connection mid-body;
    - ``reset``: streams ``break_after`` chunks, then resets the connection (TCP RST);
      ``reset-early``: resets it before answering;
    - ``slow``: waits ``slow_seconds`` before the first chunk (status line sent);
      ``hang``: streams ``break_after`` chunks, then waits ``slow_seconds``;
    - ``error-midway``: streams ``break_after`` chunks, then an OpenAI-style
      ``data: {"error": {...}}`` event (as vLLM, OpenRouter and LiteLLM's proxy do), then
      ``[DONE]``; ``error-named``: the same as an ``event: error`` event;
    - ``malformed-data``: streams ``break_after`` chunks, then a ``data:`` line that is not
      JSON; ``malformed-sse``: a valid stream with garbage lines and unknown fields in
      between (a tolerant client ignores them);
    - ``quirky``: a valid stream in every legal SSE shape: CRLF line ends, comments,
      ``id:``/``retry:`` fields, ``data:`` without a space, one event's JSON spread over
      several ``data:`` lines, sent in HTTP chunks of ``fragment`` bytes;
    - ``endless``: streams ``break_after`` chunks, then one ``data:`` line that never ends
      (``endless_bytes`` at most, then the body ends); ``endless-event``: the same with
      short ``data:`` lines and no blank line, an event that never ends;
    - ``reasoning``: ``reasoning_text`` as ``delta.reasoning_content`` deltas (DeepSeek,
      LiteLLM's proxy), then the answer, with ``usage.completion_tokens_details
      .reasoning_tokens``; ``reasoning-alt``: the same with ``delta.reasoning`` (vLLM,
      OpenRouter, Ollama); ``reasoning-both``: both fields, same text, in each delta.

    Use as ``async with FakeOpenAI() as api: api.base_url``; ``api.requests`` records
    every request body, ``api.closed_early`` counts streams the client abandoned,
    ``api.body_bytes`` the bytes of the last response body sent (``endless``,
    ``error-flood``). ``await api.wait_requests(n)`` and ``await api.wait_closed_early(n)``
    wait (without polling) until that many requests arrived or streams were abandoned.
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
        reasoning_text: str = "L'utilisateur dit bonjour : je réponds poliment.",
        endless_bytes: int = 64 << 20,
        fragment: int = 7,
    ) -> None:
        self.text = text
        self.chunks = chunks
        self.break_after = break_after
        self.slow_seconds = slow_seconds
        self.json_text = json_text
        self.delay = delay
        self.burst = burst
        self.reasoning_text = reasoning_text
        self.endless_bytes = endless_bytes
        self.fragment = fragment
        self._burst_cache: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.closed_early = 0
        self.body_bytes = 0
        self.port = 0
        self._tg: Any = None
        self._changed: Any = None

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def _wait(self, ready: Any) -> None:
        while not ready():
            await self._changed.wait()

    async def wait_requests(self, count: int = 1) -> None:
        """Return once ``count`` requests have arrived (bound it with ``anyio.fail_after``)."""
        await self._wait(lambda: len(self.requests) >= count)

    async def wait_closed_early(self, count: int = 1) -> None:
        """Return once the client abandoned ``count`` streams (bound it with ``fail_after``)."""
        await self._wait(lambda: self.closed_early >= count)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        self._changed = anyio.Event()
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
        """The answer deltas ``model`` streams (all of them; some modes stop earlier)."""
        if model.endswith("json"):
            text = self.json_text
        else:
            text = self.text
        n = self.chunks
        if n is None:
            return [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]]
        size = max(1, len(text) // n)
        return [(text[i * size:(i + 1) * size] or ".") for i in range(n)]

    def reasoning_pieces(self) -> list[str]:
        """The reasoning deltas of the ``reasoning`` modes."""
        words = self.reasoning_text.split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]]

    async def _handle(self, stream: Any) -> None:
        from anyio.streams.buffered import BufferedByteReceiveStream

        reader = BufferedByteReceiveStream(stream)
        try:
            while True:  # keep-alive: serve requests until the client closes
                head = await reader.receive_until(b"\r\n\r\n", 65536)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                body = await reader.receive_exactly(int(headers.get("content-length", "0")))
                request = json.loads(body or b"{}")
                self.requests.append(request)
                self._notify()
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
                            self._notify()
                        tg.cancel_scope.cancel()

                    tg.start_soon(watch)
                    try:
                        await self._respond(stream, request)
                    except _ClientGone:
                        # The client closed while a send was under way (before the
                        # watcher noticed): it abandoned the stream all the same.
                        if not finished:
                            self.closed_early += 1
                            self._notify()
                        finished = dropped = True
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
                    "bad-request": 400, "context-length": 400, "server-error": 500, "bad-gateway": 502,
                    "unavailable": 503}
        if model in statuses:
            status = statuses[model]
            error: dict[str, Any] = {"message": f"fake {status}", "type": "fake", "code": str(status)}
            if model == "context-length":
                error = {"message": "This model's maximum context length is 8 tokens.",
                         "type": "invalid_request_error", "code": "context_length_exceeded"}
            body = json.dumps({"error": error}).encode()
            extra = "retry-after: 7\r\n" if status == 429 else ""
            await stream.send(
                f"HTTP/1.1 {status} Fake\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(body)}\r\n\r\n".encode() + body
            )
            return
        if model == "reset-early":
            await _reset(stream)
        if model == "json-error":
            body = json.dumps({"error": {"message": "fake", "type": "server_error", "code": 500}}).encode()
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                              % (len(body), body))
            return
        if model == "error-flood":
            await stream.send(b"HTTP/1.1 500 Fake\r\ncontent-type: application/json\r\n"
                              b"transfer-encoding: chunked\r\n\r\n")
            await self._endless(stream, b'{"error": {"message": "')
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
            burst = self._burst_cache.get(model)
            if burst is None:
                events = [
                    b"data: "
                    + json.dumps({
                        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
                    }).encode()
                    + b"\n\n"
                    for p in pieces
                ]
                events.append(b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","model":"' + model.encode()
                              + b'","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
                data = b"".join(events)
                burst = self._burst_cache[model] = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
            await stream.send(burst)
            return

        def event(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}

        def sse(obj: Any) -> bytes:
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        try:
            thoughts = self.reasoning_pieces() if model.startswith("reasoning") else []
            fields = {"reasoning-alt": ("reasoning",), "reasoning-both": ("reasoning_content", "reasoning")}.get(
                model, ("reasoning_content",))
            for thought in thoughts:
                delta = {"role": "assistant", "content": None, **{f: thought for f in fields}}
                await _send_chunk(stream, sse(event(delta)))
            for i, piece in enumerate(pieces):
                if i == self.break_after:
                    if model == "break":
                        # Drop the socket mid-body: no terminating chunk, no [DONE].
                        raise _Dropped
                    if model == "reset":
                        await _reset(stream)
                    if model == "hang":
                        await anyio.sleep(self.slow_seconds)
                    if model in ("error-midway", "error-named"):
                        error = {"error": {"message": "fake failure after the 200", "type": "server_error",
                                           "code": 500}}
                        head = b"event: error\n" if model == "error-named" else b""
                        await _send_chunk(stream, head + sse(error) + b"data: [DONE]\n\n")
                        await stream.send(b"0\r\n\r\n")
                        return
                    if model == "malformed-data":
                        await _send_chunk(stream, b'data: {"choices": [{"delta": {"content": "x"\n\n')
                        await _send_chunk(stream, b"data: [DONE]\n\n")
                        await stream.send(b"0\r\n\r\n")
                        return
                    if model == "endless":
                        await self._endless(stream, b'data: {"choices": [{"delta": {"content": "')
                        return
                    if model == "endless-event":
                        await self._endless(stream, b"", b"data: 0123456789\n" * 4096)
                        return
                payload = event({"content": piece})
                if model == "quirky":
                    await self._send_quirky(stream, payload, i)
                elif model == "malformed-sse":
                    await _send_chunk(stream, b"garbage without a colon\nevent: ping\n\nnonsense: 1\n"
                                      + sse(payload) + b"id\n\n: comment\n")
                else:
                    await _send_chunk(stream, sse(payload))
                if self.delay:
                    await anyio.sleep(self.delay)
            usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": len(pieces) + len(thoughts),
                                     "total_tokens": 5 + len(pieces) + len(thoughts)}
            if thoughts:
                usage["completion_tokens_details"] = {"reasoning_tokens": len(thoughts)}
            final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
            await _send_chunk(stream, sse(final) + b"data: [DONE]\n\n")
            await stream.send(b"0\r\n\r\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _ClientGone from None

    async def _send_quirky(self, stream: Any, payload: dict[str, Any], i: int) -> None:
        # Indented JSON: one data: line per JSON line, joined back with "\n" by the client.
        lines = json.dumps(payload, indent=1).split("\n")
        body = (": keep-alive\r\n" + f"id: {i}\r\nretry: 1000\r\n"
                + "".join(("data:" if k % 2 else "data: ") + line + "\r\n" for k, line in enumerate(lines))
                + "\r\n").encode()
        # Small fragments, split inside "\r\n" too: a client must not see two line ends.
        step = self.fragment
        for k in range(0, len(body), step):
            await _send_chunk(stream, body[k:k + step])

    async def _endless(self, stream: Any, head: bytes, block: bytes = b"a" * 65536) -> None:
        """``head``, then ``block`` again and again until ``endless_bytes`` were sent."""
        self.body_bytes = 0
        try:
            if head:  # (an empty chunk would end the body)
                await _send_chunk(stream, head)
            while self.body_bytes < self.endless_bytes:
                await _send_chunk(stream, block)
                self.body_bytes += len(block)
            await stream.send(b"0\r\n\r\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _ClientGone from None


class _Dropped(Exception):
    """Ends a connection on purpose."""


class _ClientGone(_Dropped):
    """The client closed the connection while the server was sending."""


async def _reset(stream: Any) -> None:
    """Abort the connection with a TCP reset (SO_LINGER 0), not an orderly close."""
    import socket
    import struct

    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    raise _Dropped


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
