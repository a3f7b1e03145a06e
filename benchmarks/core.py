"""Codec, engine, run log and resume micro-benchmarks (no sockets).

- codec: AI_MESSAGE_CHUNK envelopes encoded per second by streamcore's chunk path, against
  ``json.dumps`` and ``orjson.dumps`` of the equivalent dict built per frame (same id and
  timestamp work in each); client frames decoded per second (validated into Structs)
  against ``json.loads``/``orjson.loads`` (parse only, no validation).
- engine: the cost per chunk from provider delta to encoded frame, through a real Session
  with a provider that yields instantly and a connection whose ``send`` does nothing.
- run log: what each chunk pays the in-memory run log (an entry tuple and an append).
- resume: a finished run replayed by RESUME to an in-memory connection, and several
  readers following one live run.
"""

from __future__ import annotations

import gc
import json
import statistics
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


class YieldingProvider(InstantProvider):
    """Gives the event loop a turn after each chunk, as a real upstream's network reads do.

    Without that turn the writer task never runs while a reply streams, so it is never
    idle and a run never sends its chunks itself: an eager-send figure needs this provider.
    """

    async def stream(self, request):
        for _ in range(self.n):
            yield CONTENT
            await anyio.lowlevel.checkpoint()
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


class EagerConnection(SequentialConnection):
    """Also offers ``send_now`` (a send that never waits, as uvicorn's while the socket
    takes the bytes): chunks go out from the run's task, with no writer task in between."""

    def send_now(self, frame: bytes) -> None:
        self.frames += 1
        if frame.find(b"AI_MESSAGE_END", 0, 64) != -1:
            self.ended.set()


async def _engine_run(n: int, per_message: int, coalesce: bool, eager: bool = False) -> tuple[float, int]:
    config = Config()
    config.limits.coalesce_chunks = coalesce
    config.limits.messages_per_interval = 1 << 30
    config.limits.history_messages = 0
    # Eager: the loop turn between chunks lets the writer go idle, so chunks leave from the
    # run's task through send_now (a provider that never awaits keeps them all queued).
    engine = Engine(config, provider=(YieldingProvider if eager else InstantProvider)(per_message))
    conn = (EagerConnection if eager else SequentialConnection)(n // per_message)
    gc.collect()
    t0 = time.perf_counter()
    await engine.serve(conn, ConnectionInfo())
    return time.perf_counter() - t0, conn.frames


async def _provider_only(n: int, per_message: int, yielding: bool = False) -> float:
    provider = (YieldingProvider if yielding else InstantProvider)(per_message)
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


def _send_now_alone(frames: int) -> float:
    """What the eager benchmark connection's ``send_now`` costs per frame."""
    conn = EagerConnection(0)
    frame = b'{"id":"msg-0123456789-2.17","type":"AI_MESSAGE_CHUNK","timestamp":1795446035776,"data":{}}'
    send_now = conn.send_now
    t0 = time.perf_counter()
    for _ in range(frames):
        send_now(frame)
    return time.perf_counter() - t0


def bench_engine(n: int, per_message: int = 500, repeats: int = 7) -> dict[str, Any]:
    """Engine cost per chunk: ``n`` chunks in messages of ``per_message`` chunks each.

    The provider's own cost and the benchmark connection's ``send`` (the transport's
    share) are measured alone and subtracted. They are measured again in each of
    ``repeats`` rounds, right before the engine runs they are subtracted from: a shared
    machine has slow spells of seconds, and a baseline taken in a fast spell subtracted
    from an engine run in a slow one (or the reverse) says nothing. Each figure is the
    median of the rounds' figures: the smallest difference is biased low (it is the round
    whose baseline ran in a slow spell: the eager row, whose baseline is 5 us per chunk
    against its 2-3 us of engine work, once came out at -0.14 us), and ``<key>_min`` and
    ``<key>_max`` keep the spread.
    """
    _quiet_logs()
    replies = max(1000, n // 20)

    async def one_round() -> dict[str, float]:
        base = await _provider_only(n, per_message)
        send = await _send_alone(n) / n
        t_frame, frames = await _engine_run(n, per_message, False)
        t_merged, merged_frames = await _engine_run(n, per_message, True)
        per_reply = (await _engine_run(replies, 1, False))[0] / replies
        send_now = _send_now_alone(n) / n
        base_yielding = await _provider_only(n, per_message, yielding=True)
        t_eager, eager_frames = await _engine_run(n, per_message, False, eager=True)
        # The eager run's THINKING/START/END still go through the writer (send); its chunks
        # through send_now. Its provider's loop turns are in its own baseline.
        return {
            "provider_alone_us_per_chunk": base / n * 1e6,
            "connection_send_us_per_frame": send * 1e6,
            "engine_us_per_chunk_one_frame_each": (t_frame - send * frames - base) / n * 1e6,
            "frames_one_frame_each": frames,
            "engine_us_per_chunk_merged": (t_merged - send * merged_frames - base) / n * 1e6,
            "frames_merged": merged_frames,
            "connection_send_now_us_per_frame": send_now * 1e6,
            "provider_yielding_us_per_chunk": base_yielding / n * 1e6,
            "engine_us_per_chunk_eager": (t_eager - send * (eager_frames - n) - send_now * n - base_yielding) / n * 1e6,
            "frames_eager": eager_frames,
            "us_per_reply_of_one_chunk": per_reply * 1e6,
        }

    async def main() -> list[dict[str, float]]:
        return [await one_round() for _ in range(repeats)]

    rounds = anyio.run(main)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    spread = {f"{key}_{name}": fn(r[key] for r in rounds)
              for key in rounds[0] if key.startswith(("engine_", "us_per_reply"))
              for name, fn in (("min", min), ("max", max))}
    return {"chunks": n, "chunks_per_message": per_message, **median, **spread, "replies_of_one_chunk": replies,
            "rounds": repeats}


def _quiet_logs() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # no log I/O in timings


def bench_runlog(n: int, per_run: int = 500) -> dict[str, Any]:
    """The run log's own cost per chunk, as the run pays it (no engine around it).

    Per chunk a run appends the delta, a bare ``str`` (see :func:`streamcore.events.expand`),
    to its :class:`~streamcore.runlog.MemoryRunLog` writer (the list's own ``append``); per
    run it opens the log and finishes it. Measured against the same loop without the log.
    """
    from streamcore.runlog import MemoryRunLog

    runs = max(1, n // per_run)
    n = runs * per_run

    def bare(_):
        for r in range(runs):
            for seq in range(1, per_run + 1):
                pass

    def appends(_):
        entries: list = []
        for r in range(runs):
            append = entries.append
            for seq in range(1, per_run + 1):
                append(CONTENT)

    def with_log(_):
        log = MemoryRunLog(max_runs=runs + 1)
        for r in range(runs):
            writer = log.open(f"msg-bench-{r}", "a:bench")
            append = writer.append
            for seq in range(1, per_run + 1):
                append(CONTENT)
            writer.finish(per_run * len(CONTENT))

    t_bare = 1 / _rate(bare, 1)
    t_append = 1 / _rate(appends, 1)
    t_log = 1 / _rate(with_log, 1)
    return {
        "chunks": n,
        "chunks_per_run": per_run,
        "append_us_per_chunk": max(0.0, t_append - t_bare) / n * 1e6,
        "log_us_per_chunk": max(0.0, t_log - t_bare) / n * 1e6,
    }


class ScriptedConnection:
    """An in-memory connection: the benchmark pushes client frames, ``send`` only counts.

    ``ended`` is set by each AI_MESSAGE_END (or ERROR) frame; ``last_end`` keeps that frame.
    """

    def __init__(self) -> None:
        from collections import deque

        self.inbox: Any = deque()
        self.ready = anyio.Event()
        self.ended = anyio.Event()
        self.frames = 0
        self.bytes = 0
        self.last_end = b""
        self.hung_up = False

    def push(self, text: str) -> anyio.Event:
        """Queue a client frame; returns the event set by the END that answers it."""
        self.ended = anyio.Event()
        self.inbox.append(text)
        self.ready.set()
        return self.ended

    def hang_up(self) -> None:
        self.hung_up = True
        self.ready.set()

    async def receive(self):
        while not self.inbox:
            if self.hung_up:
                raise ConnectionClosed(1000)
            self.ready = anyio.Event()
            await self.ready.wait()
        return self.inbox.popleft()

    async def send(self, frame: bytes) -> None:
        self.frames += 1
        self.bytes += len(frame)
        head = frame[:64]
        if b"AI_MESSAGE_END" in head or b'"type":"ERROR"' in head:
            self.last_end = frame
            self.ended.set()

    async def close(self, code=1000, reason=""):
        self.hang_up()


def _bench_config(coalesce: bool) -> Config:
    config = Config()
    lim = config.limits
    lim.coalesce_chunks = coalesce
    lim.messages_per_interval = 1 << 30
    lim.max_concurrent_generations = 1 << 20
    lim.max_generations = 1 << 20
    lim.history_messages = 0
    lim.idle_timeout = 3600
    return config


def _end_data(conn: ScriptedConnection) -> dict[str, Any]:
    envelope = json.loads(conn.last_end)
    if envelope["type"] != "AI_MESSAGE_END":
        raise RuntimeError(f"benchmark run failed: {envelope}")
    return envelope["data"]


async def _replay(chunks: int, replays: int, coalesce: bool) -> dict[str, Any]:
    engine = Engine(_bench_config(coalesce), provider=InstantProvider(chunks))
    producer, reader = ScriptedConnection(), ScriptedConnection()
    times: list[float] = []
    async with engine, anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, producer, ConnectionInfo())
        tg.start_soon(engine.serve, reader, ConnectionInfo())
        with anyio.fail_after(60):
            await producer.push('{"type":"USER_MESSAGE","data":{"content":"go"}}').wait()
            message_id = _end_data(producer)["messageId"]
            await anyio.sleep(0)  # the run seals after its END: replays read the finished log
            assert message_id not in engine.runs, "the run should be finished"
            resume = json.dumps({"type": "RESUME", "data": {"messageId": message_id, "lastSeq": 0}})
            frames = 0
            for _ in range(replays):
                gc.collect()
                before = reader.frames
                t0 = time.perf_counter()
                await reader.push(resume).wait()
                times.append(time.perf_counter() - t0)
                _end_data(reader)
                frames = reader.frames - before
        producer.hang_up()
        reader.hang_up()
    times.sort()
    return {"best_s": times[0], "median_s": times[len(times) // 2], "frames": frames}


async def _follow(chunks: int, readers: int) -> float:
    """Seconds from the first chunk to the last reader's END, ``readers`` on one live run."""
    gate = anyio.Event()

    class GatedProvider(InstantProvider):
        async def stream(self, request):
            await gate.wait()  # every reader is attached before the first chunk
            for _ in range(self.n):
                yield CONTENT
            yield Completion()

    engine = Engine(_bench_config(False), provider=GatedProvider(chunks))
    conns = [ScriptedConnection() for _ in range(readers)]
    async with engine, anyio.create_task_group() as tg:
        for conn in conns:
            tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(60):
            ends = [conns[0].push('{"type":"USER_MESSAGE","data":{"content":"go"}}')]
            while not engine.runs:
                await anyio.sleep(0.001)
            (message_id, run), = engine.runs.items()
            resume = json.dumps({"type": "RESUME", "data": {"messageId": message_id}})
            ends += [conn.push(resume) for conn in conns[1:]]
            while len(run.subscribers) < readers:
                await anyio.sleep(0.001)
            gc.collect()
            t0 = time.perf_counter()
            gate.set()
            for end in ends:
                await end.wait()
            elapsed = time.perf_counter() - t0
        for conn in conns:
            _end_data(conn)
            conn.hang_up()
    return elapsed


def bench_replay(chunks: int = 10_000, replays: int = 5, coalesce: bool = True) -> dict[str, Any]:
    """RESUME of a finished run from ``lastSeq`` 0, read back from the run log.

    A finished run of ``chunks`` chunks is RESUMEd ``replays`` times by another connection
    (in memory; its ``send`` only counts), timed from the RESUME frame to the END frame;
    chunks are merged as the send buffer allows (``coalesce``, the default) or sent one
    frame each. The best replay counts.
    """
    _quiet_logs()
    r = anyio.run(_replay, chunks, replays, coalesce)
    return {"chunks": chunks, "replays": replays, "chunks_per_s": chunks / r["best_s"],
            "ms_per_replay": r["best_s"] * 1e3, "frames": r["frames"]}


def bench_follow(chunks: int = 2_000, readers: int = 10, runs: int = 3) -> dict[str, Any]:
    """Readers following one live run, one frame per chunk each (best of ``runs``).

    The connection that asked and ``readers - 1`` others that RESUMEd it before its first
    chunk; timed from the first chunk to the last reader's END.
    """
    _quiet_logs()

    async def main():
        return min([await _follow(chunks, readers) for _ in range(runs)])

    elapsed = anyio.run(main)
    return {"chunks": chunks, "readers": readers, "us_per_chunk": elapsed / chunks * 1e6,
            "us_per_chunk_per_reader": elapsed / chunks / readers * 1e6}
