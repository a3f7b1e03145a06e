"""SSE chunk throughput beside the WebSocket path and beside sse-starlette, in one run.

``.venv/bin/python -m benchmarks.sse [--quick] [--no-write]`` prints a Markdown table and
writes ``benchmarks/results/sse.json``.

Every case serves replies of ``--chunks`` chunks of 24 characters, produced as fast as
possible, from a server process of its own under uvicorn (one core for the server, one
for the load generator on a 2-core machine); ``--connections`` clients each ask one reply
at a time, ``--messages`` times. Measured: chunks delivered per second (elapsed from the
first request to the last byte of the last reply) and events (frames) per second.

- ``websocket``: streamcore's WebSocket path (``/ws``, JSON envelopes), read by the
  suite's lightweight WebSocket client (benchmarks/loadgen.py);
- ``sse envelope`` / ``sse aisdk`` / ``sse agui``: the same engine through
  :class:`streamcore.adapters.sse.SSEApp`, each dialect;
- ``sse-starlette``: a plain Starlette endpoint streaming the same deltas with
  ``sse_starlette.EventSourceResponse`` (one ``json.dumps`` per delta, an AI SDK
  ``text-delta``), no engine: what a hand-written SSE endpoint costs.

The SSE client is a minimal asyncio protocol (HTTP/1.1 keep-alive, chunked body, events
counted by their blank line), as light as the WebSocket one, so both measure the server.
Chunks may be merged under backpressure (``coalesce_chunks``, streamcore's default), so
events can be fewer than chunks; sse-starlette never merges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "sse.json"
SIZE = 24

CASES = [
    ("websocket", "streamcore", None),
    ("sse envelope", "streamcore", "/sse"),
    ("sse aisdk", "streamcore", "/api/chat"),
    ("sse agui", "streamcore", "/agui"),
    ("sse-starlette", "sse-starlette", "/stream"),
]

BODIES = {
    "/sse": {"type": "USER_MESSAGE", "data": {"content": "bench"}},
    "/api/chat": {"id": "bench-chat-0123456789", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "bench"}]}]},
    "/agui": {"threadId": "bench-thread-0123456789", "runId": "r", "messages": [{"id": "u", "role": "user", "content": "bench"}]},
    "/stream": {},
}


# --- server processes ------------------------------------------------------------------------


def _serve(kind: str, chunks: int, coalesce: bool = True) -> None:
    """Run one server (in its own process); print ``READY <port>``."""
    import anyio

    async def main() -> None:
        from streamcore.adapters.uvicorn import serve

        from .server import engine_for

        args = argparse.Namespace(coalesce=coalesce, compression=False, chunks=chunks, size=SIZE, rate=0, stamp=False)
        engine = engine_for(args)
        if kind == "streamcore":
            from streamcore.adapters.asgi import StreamcoreASGI
            from streamcore.adapters.sse import SSEApp

            app = SSEApp(engine, StreamcoreASGI(engine, lifespan=False), heartbeat=15.0)
        else:
            app = _sse_starlette_app(chunks)
        async with serve(engine, "127.0.0.1", 0, app=app) as (_, port):
            print(f"READY {port}", flush=True)
            await anyio.sleep_forever()

    anyio.run(main)


def _sse_starlette_app(chunks: int) -> Any:
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.applications import Starlette
    from starlette.routing import Route

    content = "x" * SIZE

    async def stream(request: Any) -> Any:
        await request.body()

        async def events():
            yield ServerSentEvent(data=json.dumps({"type": "start", "messageId": "m"}))
            yield ServerSentEvent(data=json.dumps({"type": "text-start", "id": "t"}))
            for i in range(chunks):
                yield ServerSentEvent(data=json.dumps({"type": "text-delta", "id": "t", "delta": content}), id=str(i))
            yield ServerSentEvent(data=json.dumps({"type": "text-end", "id": "t"}))
            yield ServerSentEvent(data=json.dumps({"type": "finish"}))

        return EventSourceResponse(events(), ping=15)

    return Starlette(routes=[Route("/stream", stream, methods=["POST"])])


# --- the SSE load generator ------------------------------------------------------------------


class _SSEClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: POST, count events until the chunked body ends."""

    def __init__(self, path: str) -> None:
        body = json.dumps(BODIES[path]).encode()
        self.request_bytes = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.transport: asyncio.Transport | None = None
        self.open = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future | None = None
        self.tail = b""
        self.events = 0
        self.wire_bytes = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.open.set_result(None)

    def request(self) -> asyncio.Future:
        self.done = asyncio.get_running_loop().create_future()
        self.tail = b""
        self.transport.write(self.request_bytes)
        return self.done

    def data_received(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        # Events end with a blank line ("\n\n", or "\r\n\r\n" from sse-starlette); a
        # boundary split across reads is caught by the 8 bytes kept from before. The
        # headers' blank line and the chunked terminator count too: 2 per response.
        joined = self.tail + data
        self.events += _blank_lines(joined) - _blank_lines(self.tail)
        self.tail = joined[-8:]
        if joined.endswith(b"\r\n0\r\n\r\n") and self.done is not None and not self.done.done():
            self.events -= 2
            self.done.set_result(None)

    def connection_lost(self, exc: Any) -> None:
        for fut in (self.open, self.done):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection lost"))


def _blank_lines(data: bytes) -> int:
    return data.count(b"\n\n") + data.count(b"\r\n\r\n")


async def _sse_run(port: int, path: str, connections: int, messages: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _SSEClient(path), "127.0.0.1", port)
        await client.open
        clients.append(client)

    async def one(client: _SSEClient) -> None:
        for _ in range(messages):
            await asyncio.wait_for(client.request(), 600)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in clients))
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.transport.close()
    return {"elapsed": elapsed, "frames": sum(c.events for c in clients), "wire_bytes": sum(c.wire_bytes for c in clients)}


def _case(
    name: str, kind: str, path: str | None, *, chunks: int, connections: int, messages: int, coalesce: bool
) -> dict[str, Any]:
    from . import loadgen
    from .e2e import Server

    with Server("benchmarks.sse", quiet=True, serve=kind, chunks=chunks, no_coalesce=not coalesce) as server:
        if path is None:
            asyncio.run(loadgen.run(server.port, connections, messages=1))  # warm-up
            result = asyncio.run(loadgen.run(server.port, connections, messages=messages))
        else:
            asyncio.run(_sse_run(server.port, path, connections, 1))
            result = asyncio.run(_sse_run(server.port, path, connections, messages))
    total = connections * messages * chunks
    return {
        "case": name,
        "coalesce_chunks": coalesce,
        "chunks_per_s": round(total / result["elapsed"]),
        "events_per_s": round(result["frames"] / result["elapsed"]),
        "chunks": total,
        "events": result["frames"],
        "wire_bytes_per_chunk": round(result["wire_bytes"] / total, 1),
        "elapsed_s": round(result["elapsed"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sse", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (a smoke test; figures not meaningful)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/sse.json")
    parser.add_argument("--chunks", type=int, default=None, help="chunks per reply")
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--messages", type=int, default=None, help="replies per connection")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--no-coalesce", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.chunks or 1000, not args.no_coalesce)
        return 0
    chunks = args.chunks or (200 if args.quick else 2000)
    connections = args.connections or (2 if args.quick else 20)
    messages = args.messages or (1 if args.quick else 5)
    rows = []
    lines = [
        f"SSE vs WebSocket: {connections} connections x {messages} replies x {chunks} chunks of {SIZE} chars, "
        "uvicorn (h11), loopback, server and load generator on one core each",
        "",
        "| case | coalesce_chunks | chunks/s | events/s | vs WebSocket | wire bytes/chunk |",
        "|---|---|---:|---:|---:|---:|",
    ]
    baseline = None
    # Merged (streamcore's default: a burst of deltas leaves as few events), then one
    # event per chunk (the per-event cost; sse-starlette never merges, measured once).
    for coalesce in (True, False):
        ws = None
        for name, kind, path in CASES:
            if kind == "sse-starlette":
                if baseline is None:
                    baseline = _case(name, kind, path, chunks=chunks, connections=connections, messages=messages, coalesce=False)
                row = dict(baseline)
            else:
                row = _case(name, kind, path, chunks=chunks, connections=connections, messages=messages, coalesce=coalesce)
            ws = ws or row["chunks_per_s"]
            row["vs_websocket"] = round(row["chunks_per_s"] / ws, 2)
            rows.append(row)
            lines.append(
                f"| {row['case']} | {'on' if row['coalesce_chunks'] else 'off'} | {row['chunks_per_s']:,} | "
                f"{row['events_per_s']:,} | {row['vs_websocket']:.2f}x | {row['wire_bytes_per_chunk']} |"
            )
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "chunks": chunks,
            "connections": connections,
            "messages": messages,
            "size": SIZE,
            "quick": args.quick,
            "rows": rows,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
