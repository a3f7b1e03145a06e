"""Codec and engine micro-benchmarks (no sockets).

- codec: AI_MESSAGE_CHUNK envelopes encoded per second by streamcore's chunk path, against
  ``json.dumps`` and ``orjson.dumps`` of the equivalent dict built per frame (same id and
  timestamp work in each); client frames decoded per second (validated into Structs)
  against ``json.loads``/``orjson.loads`` (parse only, no validation).
- engine: the cost per chunk from provider delta to encoded frame, through a real Session
  with a provider that yields instantly and a connection whose ``send`` does nothing.
"""

from __future__ import annotations

import gc
import json
import time
import uuid
from typing import Any

import anyio

from streamcore import Codec, Completion, Config, ConnectionInfo, Engine
from streamcore.errors import ConnectionClosed
from streamcore.ids import new_id, now_ms, stamp

CONTENT = "Voici "  # a typical token-sized chunk


def _rate(fn, n: int) -> float:
    """Calls per second of ``fn`` over ``n`` calls (best of 3)."""
    best = float("inf")
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_codec(n: int) -> dict[str, Any]:
    codec = Codec()
    meta = {"sessionId": "session-0123456789-1"}
    encode = codec.chunk_encoder("msg-0123456789-2", meta)

    # Indexes cycle as in messages of 500 chunks.
    def streamcore_chunk(k):
        for i in range(k):
            encode(CONTENT, i % 500, i, stamp())  # a clock read per frame, the worst case

    def streamcore_batched(k):
        s = stamp()  # the writer reads the clock once per batch of pending frames
        for i in range(k):
            encode(CONTENT, i % 500, i, s)

    dumps = json.dumps

    def json_dict(k):
        for i in range(k):
            dumps({"id": new_id(), "type": "AI_MESSAGE_CHUNK", "timestamp": now_ms(),
                   "data": {"messageId": "msg-0123456789-2", "content": CONTENT, "index": i % 500},
                   "metadata": meta}).encode()

    def naive_seed(k):  # the seed's loop: uuid4 + a clock read + json.dumps, per chunk
        for _ in range(k):
            dumps({"id": str(uuid.uuid4()), "type": "AI_MESSAGE_CHUNK", "timestamp": int(time.time() * 1000),
                   "data": {"messageId": "msg-0123456789-2", "content": CONTENT}})

    out: dict[str, Any] = {
        "streamcore_chunk_per_s": _rate(streamcore_chunk, n),
        "streamcore_chunk_batched_per_s": _rate(streamcore_batched, n),
        "json_dumps_dict_per_s": _rate(json_dict, n),
        "naive_seed_per_s": _rate(naive_seed, n),
    }
    try:
        import orjson

        odumps = orjson.dumps

        def orjson_dict(k):
            for i in range(k):
                odumps({"id": new_id(), "type": "AI_MESSAGE_CHUNK", "timestamp": now_ms(),
                        "data": {"messageId": "msg-0123456789-2", "content": CONTENT, "index": i},
                        "metadata": meta})

        out["orjson_dict_per_s"] = _rate(orjson_dict, n)
    except ImportError:  # pragma: no cover
        pass
    out["speedup_vs_json_dumps"] = out["streamcore_chunk_per_s"] / out["json_dumps_dict_per_s"]

    frames = [
        '{"type":"USER_MESSAGE","id":"r1","data":{"content":"Comment apprendre le piano ?"}}',
        '{"type":"PING","data":{"timestamp":1732370000123}}',
        '{"type":"STOP_GENERATION","data":{"messageId":"msg-1"}}',
    ]
    decode = codec.decode
    loads = json.loads

    def sc_decode(k):
        for i in range(k):
            decode(frames[i % 3])

    def json_loads(k):
        for i in range(k):
            loads(frames[i % 3])

    out["streamcore_decode_validated_per_s"] = _rate(sc_decode, n)
    out["json_loads_per_s"] = _rate(json_loads, n)
    try:
        import orjson

        oloads = orjson.loads

        def orjson_loads(k):
            for i in range(k):
                oloads(frames[i % 3])

        out["orjson_loads_per_s"] = _rate(orjson_loads, n)
    except ImportError:  # pragma: no cover
        pass
    return out


class InstantProvider:
    """Yields ``n`` chunks with no await in between: all cost measured is the engine's."""

    model = "instant"

    def __init__(self, n: int) -> None:
        self.n = n

    async def stream(self, request):
        for _ in range(self.n):
            yield CONTENT
        yield Completion()


class NullConnection:
    """Sends ``messages`` USER_MESSAGEs one after another; ``send`` only counts frames."""

    def __init__(self, messages: int) -> None:
        self.frames = 0
        self.left = messages
        self.ended = anyio.Event()

    async def receive(self):
        if self.left:
            self.left -= 1
            self.ended = anyio.Event()
            return '{"type":"USER_MESSAGE","data":{"content":"go"}}'
        raise ConnectionClosed(1000)

    async def send(self, frame: bytes) -> None:
        self.frames += 1
        if frame.find(b"AI_MESSAGE_END", 0, 64) != -1:
            self.ended.set()

    async def close(self, code=1000, reason=""):
        pass


class SequentialConnection(NullConnection):
    """Waits for each reply to end before sending the next message."""

    async def receive(self):
        if self.left < self.total:
            await self.ended.wait()
        return await super().receive()

    def __init__(self, messages: int) -> None:
        super().__init__(messages)
        self.total = messages


async def _engine_run(n: int, per_message: int, coalesce: bool) -> tuple[float, int]:
    config = Config()
    config.limits.coalesce_chunks = coalesce
    config.limits.messages_per_interval = 1 << 30
    config.limits.history_messages = 0
    engine = Engine(config, provider=InstantProvider(per_message))
    conn = SequentialConnection(n // per_message)
    gc.collect()
    t0 = time.perf_counter()
    await engine.serve(conn, ConnectionInfo())
    return time.perf_counter() - t0, conn.frames


async def _provider_only(n: int, per_message: int) -> float:
    provider = InstantProvider(per_message)
    t0 = time.perf_counter()
    for _ in range(n // per_message):
        async for _ in provider.stream(None):
            pass
    return time.perf_counter() - t0


async def _send_alone(frames: int) -> float:
    """What the benchmark connection's own ``send`` costs per frame (not the engine's)."""
    conn = NullConnection(0)
    frame = b'{"id":"msg-0123456789-2.17","type":"AI_MESSAGE_CHUNK","timestamp":1795446035776,"data":{}}'
    send = conn.send
    t0 = time.perf_counter()
    for _ in range(frames):
        await send(frame)
    return time.perf_counter() - t0


def bench_engine(n: int, per_message: int = 500) -> dict[str, Any]:
    """Engine cost per chunk: ``n`` chunks in messages of ``per_message`` chunks each.

    The provider's own cost and the benchmark connection's ``send`` (the transport's
    share) are measured alone and subtracted.
    """
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # no log I/O in timings

    async def main():
        base = min([await _provider_only(n, per_message) for _ in range(3)])
        send = min([await _send_alone(n) for _ in range(3)]) / n
        per_frame = min([await _engine_run(n, per_message, False) for _ in range(3)])
        merged = min([await _engine_run(n, per_message, True) for _ in range(3)])
        return base, send, per_frame, merged

    base, send, (t_frame, frames), (t_merged, merged_frames) = anyio.run(main)
    t_frame -= send * frames
    t_merged -= send * merged_frames
    return {
        "chunks": n,
        "chunks_per_message": per_message,
        "provider_alone_us_per_chunk": base / n * 1e6,
        "connection_send_us_per_frame": send * 1e6,
        "engine_us_per_chunk_one_frame_each": (t_frame - base) / n * 1e6,
        "frames_one_frame_each": frames,
        "engine_us_per_chunk_merged": (t_merged - base) / n * 1e6,
        "frames_merged": merged_frames,
    }
