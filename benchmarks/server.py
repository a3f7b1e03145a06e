"""Benchmark servers, one per process: streamcore, the raw transport, or the seed's naive loop.

``python -m benchmarks.server --adapter websockets|asgi|starlette --impl streamcore|raw|naive``
prints ``READY <port>`` once listening. Every client text frame asks for one reply of
``--chunks`` chunks of ``--size`` characters; ``--rate`` paces chunks per stream (0: as fast
as possible). With ``--stamp`` each chunk's content starts with the wall-clock time in ns at
which it was produced, so the client can measure latency.

- ``streamcore``: the engine with a provider yielding those chunks.
- ``raw``: the same transport sending pre-encoded chunk frames of the same size, with no
  streamcore in the way (the limit of the transport).
- ``naive``: the seed's loop: ``json.dumps`` + ``uuid4`` per chunk, one send per chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import anyio

from streamcore import Completion, Config, Engine

END = json.dumps({"id": "e", "type": "AI_MESSAGE_END", "timestamp": 0,
                  "data": {"messageId": "msg-bench", "isComplete": True, "stopReason": "complete"}})


def chunk_content(size: int, stamp: bool) -> str:
    if stamp:
        return f"{time.time_ns():019d}|" + "x" * max(0, size - 20)
    return "x" * size


class BenchProvider:
    model = "bench"

    def __init__(self, chunks: int, size: int, rate: float, stamp: bool) -> None:
        self.chunks, self.size, self.rate, self.stamp = chunks, size, rate, stamp

    async def stream(self, request):
        interval = 1 / self.rate if self.rate else 0
        fixed = "x" * self.size
        for _ in range(self.chunks):
            if interval:
                await anyio.sleep(interval)
            yield chunk_content(self.size, True) if self.stamp else fixed
        yield Completion()


def raw_frames(args):
    """Yields (frame text) per chunk for the raw and naive servers; awaits pacing."""
    template = ('{"id":"msg-bench.%d","type":"AI_MESSAGE_CHUNK","timestamp":1732370000123,'
                '"data":{"messageId":"msg-bench","content":"%s","index":%d}}')
    pre = template % (0, "x" * args.size, 0)

    async def frames():
        interval = 1 / args.rate if args.rate else 0
        for i in range(args.chunks):
            if interval:
                await anyio.sleep(interval)
            if args.impl == "naive":
                yield json.dumps({"id": str(uuid.uuid4()), "type": "AI_MESSAGE_CHUNK",
                                  "timestamp": int(time.time() * 1000),
                                  "data": {"messageId": "msg-bench", "content": chunk_content(args.size, args.stamp)}})
            elif args.stamp:
                yield template % (i, chunk_content(args.size, True), i)
            else:
                yield pre  # pre-encoded: the transport's own cost only
        yield END

    return frames


def engine_for(args) -> Engine:
    config = Config()
    lim = config.limits
    lim.coalesce_chunks = args.coalesce
    lim.messages_per_interval = 1 << 30
    lim.max_concurrent_generations = 1 << 20
    lim.max_generations = 1 << 20  # 1,000 connections each streaming, and more
    # Every load-generator connection comes from 127.0.0.1: lift the per-IP cap.
    lim.max_connections = lim.max_connections_per_ip = 1 << 20
    lim.history_messages = 0
    lim.idle_timeout = 3600
    lim.max_message_bytes = 1 << 20
    config.server.compression = args.compression
    config.features.metadata = False
    # benchmarks.sse builds its engine here too, without an --eager option (default on).
    config.server.eager_send = bool(getattr(args, "eager", 1))
    return Engine(config, provider=BenchProvider(args.chunks, args.size, args.rate, args.stamp))


async def serve_websockets(args, ready):
    from websockets.asyncio.server import serve

    from streamcore.adapters.websockets import serve as sc_serve

    if args.impl == "streamcore":
        async with sc_serve(engine_for(args), "127.0.0.1", 0) as server:
            ready(next(iter(server.sockets)).getsockname()[1])
            await anyio.sleep_forever()
    frames = raw_frames(args)

    from websockets.exceptions import ConnectionClosed

    async def handler(ws):
        try:
            async for _ in ws:
                async for f in frames():
                    # Pre-encoded UTF-8 sent as a text frame: the cheapest call there is.
                    await ws.send(f.encode(), text=True)
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", 0, compression="deflate" if args.compression else None,
                     max_size=1 << 20) as server:
        ready(next(iter(server.sockets)).getsockname()[1])
        await anyio.sleep_forever()


def asgi_app(args):
    frames = raw_frames(args)

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            async for f in frames():
                await send({"type": "websocket.send", "text": f})

    return app


def starlette_app(args, engine):
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    from streamcore.adapters.starlette import StreamcoreRoute

    if args.impl == "streamcore":
        return Starlette(routes=[StreamcoreRoute("/ws", engine)])
    frames = raw_frames(args)

    async def endpoint(websocket):
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            async for f in frames():
                await websocket.send_text(f)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


async def serve_uvicorn(args, ready):
    from streamcore.adapters.asgi import StreamcoreASGI
    from streamcore.adapters.uvicorn import serve

    engine = engine_for(args)
    if args.adapter == "starlette":
        app = starlette_app(args, engine)
    else:
        app = StreamcoreASGI(engine, lifespan=False) if args.impl == "streamcore" else asgi_app(args)
    async with serve(engine, "127.0.0.1", 0, app=app, ws_ping_interval=None, ws_max_size=1 << 20,
                     ws_per_message_deflate=args.compression, backlog=4096) as (_, port):
        ready(port)
        await anyio.sleep_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--adapter", default="websockets", choices=["websockets", "asgi", "starlette"])
    p.add_argument("--impl", default="streamcore", choices=["streamcore", "raw", "naive"])
    p.add_argument("--chunks", type=int, default=1000)
    p.add_argument("--size", type=int, default=24)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--stamp", action="store_true")
    p.add_argument("--coalesce", type=int, default=0)
    p.add_argument("--compression", type=int, default=0)
    p.add_argument("--eager", type=int, default=1, help="[server] eager_send")
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = p.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    def ready(port):
        print(f"READY {port}", flush=True)

    run = serve_websockets if args.adapter == "websockets" else serve_uvicorn
    try:
        anyio.run(run, args, ready, backend_options={"use_uvloop": args.loop == "uvloop"})
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
