"""Redis backends beside the in-memory ones, in one run.

``.venv/bin/python -m benchmarks.redis_bench [--quick]`` starts its own redis-server on a
free loopback port (``redis-server`` must be installed), then measures:

1. **run log cost per chunk**: appends on the hot path (what a run pays per delta) and the
   total cost until Redis has every entry, memory vs Redis, 100 runs interleaved;
2. **broadcast fan-out**: events per second delivered to 1,000 WebSocket connections spread
   over two worker processes, published by a third process through Redis;
3. **2 workers vs 1**: chunks per second (provider deltas delivered) at 100 and 1,000
   connections, ``run_workers`` with 1 and 2 processes on one port (Redis backends), and
   one in-memory worker for reference.

It prints a Markdown table and writes ``benchmarks/results/redis.json``. The load generator
runs in this process, on the same cores as the servers (see ``benchmarks/loadgen.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import loadgen

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "redis.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            sys.exit("redis_bench: redis-server is not installed (apt-get install redis-server)")
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="streamcore-bench-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", "", "--maxclients", "20000"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "Ready to accept connections" in line:
                break
            if not line:
                raise RuntimeError("redis-server did not start")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- 1. run log -------------------------------------------------------------------------------


async def runlog_cost(url: str | None, runs: int, per_run: int) -> dict:
    import anyio

    from streamcore.runlog import MemoryRunLog

    backends = None
    if url is None:
        log = MemoryRunLog()
    else:
        import msgspec

        from streamcore.backends.redis import RedisBackends
        from streamcore.config import Config

        backends = RedisBackends(msgspec.convert({"redis": {"url": url, "key_prefix": "bench:"}}, Config))
        log = backends.runlog
    async with anyio.create_task_group() as tg:
        start = getattr(log, "start", None)
        if start is not None:
            start(tg)
        writers = [log.open(f"bench-{url is not None}-{i}", "u:bench") for i in range(runs)]
        appends = [w.append for w in writers]
        text = "word "
        hot = 0.0
        t0 = time.perf_counter()
        for seq in range(1, per_run + 1):
            h0 = time.perf_counter()
            for append in appends:
                append(text)  # a text delta is logged as its bare str, as a run does
            hot += time.perf_counter() - h0
            if seq % 20 == 0:
                await anyio.sleep(0)  # providers yield: the flusher gets its turns
        for w in writers:
            w.finish(len(text) * per_run)
        for w in writers:
            await w.flush()
        total = time.perf_counter() - t0
        tg.cancel_scope.cancel()
    chunks = runs * per_run
    out = {
        "backend": "redis" if url else "memory",
        "chunks": chunks,
        "append_ns_per_chunk": round(hot / chunks * 1e9, 1),
        "durable_us_per_chunk": round(total / chunks * 1e6, 3),
        "chunks_per_s_durable": round(chunks / total),
    }
    if backends is not None:
        out["pipelines"] = log.flushes
        out["stream_entries"] = log.batches
        out["chunks_per_stream_entry"] = round(chunks / max(1, log.batches), 1)
        await backends.aclose()
    return out


# --- servers ----------------------------------------------------------------------------------


class Server:
    """``python -m streamcore.adapters.workers --workers N`` with a config file."""

    def __init__(self, config: str, workers: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamcore.adapters.workers", "--config", config, "--workers", str(workers),
             "--log-format", "json", "--log-level", "error"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}")
        self.port = int(line.split()[3].rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def _config(directory: str, name: str, redis_url: str | None, words: int) -> str:
    path = os.path.join(directory, name + ".toml")
    redis = f'[redis]\nurl = "{redis_url}"\nkey_prefix = "{name}:"\n' if redis_url else ""
    with open(path, "w") as f:
        f.write(
            f"""[server]
port = 0
shutdown_timeout = 2.0
[provider]
name = "demo"
options = {{ delay_ms = 0, words = {words} }}
[limits]
max_concurrent_generations = 100
max_generations = 5000
messages_per_interval = 100000
idle_timeout = 600.0
# Every load-generator connection comes from 127.0.0.1: lift the per-IP cap.
max_connections = 100000
max_connections_per_ip = 100000
[features]
metadata = false
{redis}"""
        )
    return path


# --- 2. fan-out -------------------------------------------------------------------------------


class Counter(loadgen.Client):
    """Counts frames; done after ``target`` of them."""

    def __init__(self, target: int) -> None:
        super().__init__(None)
        self.target = target
        self.finished = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        super().data_received(data)
        if self.frames >= self.target and not self.finished.done():
            self.finished.set_result(time.perf_counter())


async def fanout(redis: Redis, directory: str, connections: int, events: int) -> dict:
    from streamcore.backends.redis import AsyncRedisPublisher

    server = Server(_config(directory, "fanout", redis.url, 10), 2)
    try:
        loop = asyncio.get_running_loop()
        clients: list[Counter] = []
        for i in range(0, connections, 100):
            batch = await asyncio.gather(*(
                loop.create_connection(lambda: Counter(events), "127.0.0.1", server.port)
                for _ in range(min(100, connections - i))
            ))
            clients += [c for _, c in batch]
        await asyncio.gather(*(asyncio.wait_for(c.open, 30) for c in clients))
        await asyncio.sleep(0.5)  # sessions registered on both workers
        async with AsyncRedisPublisher(redis.url, key_prefix="fanout:") as pub:
            t0 = time.perf_counter()
            for i in range(events):
                await pub.broadcast("FANOUT", {"i": i, "pad": "x" * 40})
            ends = await asyncio.wait_for(asyncio.gather(*(c.finished for c in clients)), 300)
        elapsed = max(ends) - t0
        for c in clients:
            c.transport.close()
        delivered = connections * events
        return {
            "connections": connections, "workers": 2, "events": events, "delivered": delivered,
            "seconds": round(elapsed, 3), "events_per_s": round(delivered / elapsed),
        }
    finally:
        server.stop()


# --- 3. workers -------------------------------------------------------------------------------


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by every process of group ``pgid`` (the workers)."""
    from .e2e import process_cpu_s

    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    total += process_cpu_s(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return total


async def throughput(config: str, workers: int, connections: int, messages: int, words: int,
                     redis: Redis | None = None) -> dict:
    """Chunks per second, and where the machine's CPU went meanwhile: the worker processes,
    redis-server and this load generator share the same cores."""
    from .e2e import process_cpu_s

    server = Server(config, workers)
    try:
        await loadgen.run(server.port, min(connections, 50), 1)  # warm-up
        cpu: list[tuple[float, float, float]] = []

        def mark() -> None:
            cpu.append((_group_cpu_s(server.proc.pid), process_cpu_s(redis.proc.pid) if redis else 0.0,
                        time.process_time()))

        result = await loadgen.run(server.port, connections, messages, on_start=mark, on_end=mark)
    finally:
        server.stop()
    chunks = connections * messages * words
    elapsed = result["elapsed"]
    (w0, r0, l0), (w1, r1, l1) = cpu
    return {
        "workers": workers, "connections": connections, "replies": connections * messages,
        "chunks": chunks, "frames": result["frames"], "seconds": round(elapsed, 3),
        "chunks_per_s": round(chunks / elapsed),
        # cores busy over the timed part: workers, redis-server, load generator, and all.
        "cores_workers": round((w1 - w0) / elapsed, 2),
        "cores_redis": round((r1 - r0) / elapsed, 2),
        "cores_loadgen": round((l1 - l0) / elapsed, 2),
        "cores_busy": round((w1 - w0 + r1 - r0 + l1 - l0) / elapsed, 2),
        "worker_cpu_ms_per_reply": round((w1 - w0) / (connections * messages) * 1e3, 3),
    }


async def main_async(quick: bool) -> dict:
    redis = Redis()
    directory = tempfile.mkdtemp(prefix="streamcore-bench-")
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "quick": quick,
    }
    try:
        runs, per_run = (100, 300) if quick else (100, 2000)
        out["runlog"] = [await runlog_cost(None, runs, per_run), await runlog_cost(redis.url, runs, per_run)]
        out["fanout"] = await fanout(redis, directory, 200 if quick else 1000, 20 if quick else 100)
        words = 200
        rows = []
        # Several replies per connection: a run of a few hundred ms measures start-up, not rate.
        sizes = [(100, 10), (1000, 2)] if not quick else [(50, 1)]
        for connections, messages in sizes:
            cfg_mem = _config(directory, f"mem{connections}", None, words)
            cfg_redis = _config(directory, f"redis{connections}", redis.url, words)
            rows.append({"backend": "memory", **await throughput(cfg_mem, 1, connections, messages, words, redis)})
            one = await throughput(cfg_redis, 1, connections, messages, words, redis)
            two = await throughput(cfg_redis, 2, connections, messages, words, redis)
            two["speedup_vs_1"] = round(two["chunks_per_s"] / one["chunks_per_s"], 2)
            rows += [{"backend": "redis", **one}, {"backend": "redis", **two}]
        out["workers"] = rows
    finally:
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return out


def table(out: dict) -> str:
    lines = ["| measure | memory | redis |", "|---|---|---|"]
    mem, red = out["runlog"]
    lines.append(f"| run log: hot-path append, ns/chunk | {mem['append_ns_per_chunk']} | {red['append_ns_per_chunk']} |")
    lines.append(f"| run log: until durable, µs/chunk | {mem['durable_us_per_chunk']} | {red['durable_us_per_chunk']} |")
    lines.append(f"| run log: chunks per stream entry (batching) | - | {red['chunks_per_stream_entry']} |")
    f = out["fanout"]
    lines.append(
        f"| broadcast fan-out, {f['connections']} conns on {f['workers']} workers, events/s | - | {f['events_per_s']:,} |"
    )
    lines += ["", "| backend | workers | connections | chunks/s | vs 1 worker | worker CPU ms/reply "
              "| cores busy: workers + redis + load generator = all (of " + str(os.cpu_count()) + ") |",
              "|---|---|---|---|---|---|---|"]
    for row in out["workers"]:
        lines.append(
            f"| {row['backend']} | {row['workers']} | {row['connections']} | {row['chunks_per_s']:,} | "
            f"{row.get('speedup_vs_1', '')} | {row['worker_cpu_ms_per_reply']} | {row['cores_workers']} + "
            f"{row['cores_redis']} + {row['cores_loadgen']} = {row['cores_busy']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_bench")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/redis.json")
    args = parser.parse_args(argv)
    out = asyncio.run(main_async(args.quick))
    print(table(out))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
