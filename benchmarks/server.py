"""Benchmark servers, one per process: streamcore, the raw transport, or the seed's naive loop.

``python -m benchmarks.server --adapter websockets|asgi|starlette --impl streamcore|raw|naive``
prints ``READY <port>`` once listening. Every client text frame asks for one reply of
``--chunks`` chunks of ``--size`` characters; ``--rate`` paces chunks per stream (0: as fast
as possible). With ``--stamp`` each chunk's content starts with the wall-clock time in ns at
which it was produced, so the client can measure latency.

- ``streamcore``: the engine with a provider yielding those chunks.
- ``raw``: the same transport sending pre-encoded frames of the same size, in the
  protocol's order (AI_THINKING, AI_MESSAGE_START, chunks, AI_MESSAGE_END), with no
  streamcore in the way (the limit of the transport).
- ``naive``: the seed's loop: ``json.dumps`` + ``uuid4`` per chunk, one send per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

import anyio

from streamcore import Completion, Config, Engine
from streamcore._heap import freeze_startup_heap

# The frames of a reply besides its chunks, as the protocol (and streamcore) sends them:
# AI_THINKING when the request is read, AI_MESSAGE_START before the first chunk, and
# AI_MESSAGE_END with the whole text as its ``content`` (see end_frame). The raw and naive
# servers send them too, pre-encoded.
THINKING = json.dumps({"id": "t", "type": "AI_THINKING", "timestamp": 0, "data": {"timestamp": 0}})
START = json.dumps({"id": "s", "type": "AI_MESSAGE_START", "timestamp": 0,
                    "data": {"messageId": "msg-bench", "seq": 1, "model": "bench"}})


#: the benchmark engine's frame limit (its max_message_bytes, see engine_for).
MAX_FRAME = 1 << 20


def end_frame(text_length: int) -> str:
    """AI_MESSAGE_END of a reply of ``text_length`` characters: streamcore's carries the
    whole text (``content``) when the frame stays under its limit, so the baseline's does
    too (the same bytes on the wire)."""
    data: dict = {"messageId": "msg-bench", "isComplete": True, "stopReason": "complete"}
    if text_length + 1024 < MAX_FRAME:
        data["content"] = "x" * text_length
    return json.dumps({"id": "e", "type": "AI_MESSAGE_END", "timestamp": 0, "data": data})


class Pacer:
    """Paces every stream of the process from one timer: each gets a turn per ``1 / rate``.

    A stream sleeping ``1 / rate`` between chunks costs a timer per chunk: about 18 us of
    CPU on the benchmark VM, so 1,000 streams at 50 chunks/s spent 0.9 of the server's core
    on the benchmark's own pacing before any transport work, and neither the raw transport
    nor streamcore could keep the pace (the figure measured the timers). An upstream's
    chunks reach a server as socket reads, not timers. Here one task wakes every
    ``1 / rate / SLOTS`` and releases the streams of one slot (a stream's slot is given in
    turn when it starts): each stream gets one chunk per interval, and the work is spread
    evenly over the interval instead of arriving in one burst. A stream that was not back
    waiting when its slot came (its server fell behind) waits a whole interval more, so the
    gaps show it. The raw and the streamcore servers are paced by the same code.
    """

    SLOTS = 20

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate
        self._slots: list[list] = [[] for _ in range(self.SLOTS)]
        self._next_slot = 0
        self._waiting = 0
        self._ticker = None

    def slot(self) -> int:
        """The slot of a new stream."""
        self._next_slot = (self._next_slot + 1) % self.SLOTS
        return self._next_slot

    async def wait(self, slot: int) -> None:
        """Wait for ``slot``'s next turn."""
        loop = asyncio.get_running_loop()
        if self._ticker is None:
            self._ticker = loop.create_task(self._tick(loop))
        future = loop.create_future()
        self._slots[slot].append(future)
        self._waiting += 1
        await future

    async def _tick(self, loop) -> None:
        step = self.interval / self.SLOTS
        due = loop.time()
        slot = idle = 0
        try:
            while idle < self.SLOTS:  # a whole interval with nobody waiting: stop
                due += step
                await asyncio.sleep(max(0.0, due - loop.time()))
                released, self._slots[slot] = self._slots[slot], []
                idle = 0 if self._waiting else idle + 1
                self._waiting -= len(released)
                for future in released:
                    if not future.done():  # a stream whose client left is cancelled
                        future.set_result(None)
                slot = (slot + 1) % self.SLOTS
        finally:
            self._ticker = None


_pacers: dict[float, Pacer] = {}


def pacer(rate: float) -> Pacer:
    """The process's pacer for ``rate`` chunks per second per stream."""
    if rate not in _pacers:
        _pacers[rate] = Pacer(rate)
    return _pacers[rate]


def chunk_content(size: int, stamp: bool) -> str:
    if stamp:
        return f"{time.time_ns():019d}|" + "x" * max(0, size - 20)
    return "x" * size


class BenchProvider:
    model = "bench"

    def __init__(self, chunks: int, size: int, rate: float, stamp: bool) -> None:
        self.chunks, self.size, self.rate, self.stamp = chunks, size, rate, stamp

    async def stream(self, request):
        paced = pacer(self.rate) if self.rate else None
        slot = paced.slot() if paced else 0
        fixed = "x" * self.size
        for _ in range(self.chunks):
            if paced:
                await paced.wait(slot)
            yield chunk_content(self.size, True) if self.stamp else fixed
        yield Completion()


def raw_frames(args):
    """Yields the frames of one reply for the raw and naive servers, in the protocol's
    order (AI_THINKING, AI_MESSAGE_START, the chunks, AI_MESSAGE_END); awaits pacing."""
    template = ('{"id":"msg-bench.%d","type":"AI_MESSAGE_CHUNK","timestamp":1732370000123,'
                '"data":{"messageId":"msg-bench","content":"%s","index":%d}}')
    pre = template % (0, "x" * args.size, 0)
    end = end_frame(args.chunks * args.size)

    async def frames():
        paced = pacer(args.rate) if args.rate else None
        slot = paced.slot() if paced else 0
        yield THINKING
        for i in range(args.chunks):
            if paced:
                await paced.wait(slot)
            if i == 0:
                yield START
            if args.impl == "naive":
                yield json.dumps({"id": str(uuid.uuid4()), "type": "AI_MESSAGE_CHUNK",
                                  "timestamp": int(time.time() * 1000),
                                  "data": {"messageId": "msg-bench", "content": chunk_content(args.size, args.stamp)}})
            elif args.stamp:
                yield template % (i, chunk_content(args.size, True), i)
            else:
                yield pre  # pre-encoded: the transport's own cost only
        yield end

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
    lim.max_message_bytes = MAX_FRAME
    config.server.compression = args.compression
    config.features.metadata = False
    # benchmarks.sse builds its engine here too, without an --eager option (default on).
    config.server.eager_send = bool(getattr(args, "eager", 1))
    # Every server here, raw ones included, freezes its start-up heap once it listens (the
    # uvicorn runner does it from this config for both; the raw websockets server below
    # calls it itself), unless --gc-freeze 0: see streamcore/_heap.py.
    config.server.gc_freeze = bool(getattr(args, "gc_freeze", 1))
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
        if args.gc_freeze:  # as streamcore's runner does (see engine_for)
            freeze_startup_heap()
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
    p.add_argument("--gc-freeze", type=int, default=1, help="[server] gc_freeze (raw servers too)")
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
