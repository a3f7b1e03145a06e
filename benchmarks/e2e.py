"""End-to-end benchmarks over loopback: a server process per case, the load generator here.

Each case starts ``benchmarks.server`` in its own process (one core for the server, one for
the load generator on this 2-core machine) and measures what clients receive.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import loadgen

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """A benchmark server process (``module``, ``benchmarks.server`` by default) started with
    ``--key value`` per option (``--key`` alone for True), ready once it prints ``READY <port>``."""

    def __init__(self, module: str = "benchmarks.server", *, quiet: bool = False, **options: Any) -> None:
        args = [sys.executable, "-m", module]
        for key, value in options.items():
            key = key.replace("_", "-")
            if value is True:
                args.append(f"--{key}")
            elif value is not False and value is not None:
                args += [f"--{key}", str(value)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                     stderr=subprocess.DEVNULL if quiet else None)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"benchmark server failed to start: {line!r}")
        self.port = int(line.split()[1])

    def cpu_s(self) -> float:
        """CPU time (user + system) the server process has used so far, in seconds."""
        return process_cpu_s(self.proc.pid)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads.

    Linux: ``/proc/<pid>/task/*/schedstat`` (nanoseconds), else ``/proc/<pid>/stat``
    (utime + stime, in clock ticks: 10 ms here); elsewhere psutil when installed.
    """
    try:
        total = 0
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/schedstat") as f:
                total += int(f.read().split()[0])
        if total:
            return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:  # pragma: no cover
        return float("nan")


def throughput(adapter: str, impl: str, connections: int, chunks: int, size: int = 24, *,
               coalesce: bool = False, compression: bool = False, messages: int = 1,
               loop: str = "asyncio") -> dict[str, Any]:
    """Chunks per second delivered to ``connections`` clients, each asking ``messages`` replies,
    and the server process's CPU time per chunk over the same period (connecting excluded)."""
    with Server(adapter=adapter, impl=impl, chunks=chunks, size=size, coalesce=int(coalesce),
                compression=int(compression), loop=loop) as server:
        asyncio.run(loadgen.run(server.port, connections, messages=1, deflate=compression))  # warm-up
        cpu: list[float] = []

        def mark() -> None:
            cpu.append(server.cpu_s())

        result = asyncio.run(loadgen.run(server.port, connections, messages=messages, deflate=compression,
                                         on_start=mark, on_end=mark))
    total_chunks = connections * messages * chunks
    return {
        "chunks_per_s": total_chunks / result["elapsed"],
        "frames_per_s": result["frames"] / result["elapsed"],
        "frames": result["frames"],
        "chunks": total_chunks,
        "wire_bytes_per_chunk": result["wire_bytes"] / total_chunks,
        "server_cpu_us_per_chunk": (cpu[1] - cpu[0]) / total_chunks * 1e6,
        "server_cpu_share": (cpu[1] - cpu[0]) / result["elapsed"],
    }


def client_loop() -> str:
    """The load generator's event loop for paced streams: uvloop when installed.

    Gaps and latencies are read by the load generator, so it needs headroom: at 1,000
    streams of 50 chunks/s on the 2-core benchmark VM, the asyncio load generator used a
    whole core (5.3 s of CPU over 5 s) and its own delays counted as the server's; on
    uvloop it used about half. Raw and streamcore are measured by the same client. The
    choice is ``streamcore serve``'s for ``[server] loop = "auto"``.
    """
    from streamcore.cli import loop_options

    return "uvloop" if loop_options("auto") else "asyncio"


def _run_client(coro: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def latency(adapter: str, impl: str, streams: int, rate: float, chunks: int, loop: str = "asyncio",
            gc_freeze: bool = True) -> dict[str, Any]:
    """Per-chunk latency (production to client) and time to first chunk, paced streams;
    the load generator on :func:`client_loop`, its CPU share reported beside the server's.
    ``gc_freeze``: the server freezes its start-up heap (raw servers too, see server.py)."""
    samples: list[int] = []
    ttft: list[int] = []
    gaps: list[int] = []
    cpu: list[float] = []
    client: list[float] = []

    def mark() -> None:
        cpu.append(server.cpu_s())
        client.append(time.process_time())

    with Server(adapter=adapter, impl=impl, chunks=chunks, size=32, rate=rate, stamp=True, coalesce=1,
                loop=loop, gc_freeze=int(gc_freeze)) as server:
        result = _run_client(loadgen.run(server.port, streams, messages=1, latency=samples, ttft=ttft, gaps=gaps,
                                         on_start=mark, on_end=mark), client_loop())
        rss = server.rss_kib()
    samples.sort()
    ttft.sort()
    gaps.sort()

    def pct(values: list[int], p: float) -> float:
        return values[min(len(values) - 1, int(len(values) * p))] / 1e6 if values else float("nan")

    return {
        "streams": streams,
        "chunk_p50_ms": pct(samples, 0.50),
        "chunk_p99_ms": pct(samples, 0.99),
        "ttft_p50_ms": pct(ttft, 0.50),
        "ttft_p99_ms": pct(ttft, 0.99),
        "gap_p50_ms": pct(gaps, 0.50),
        "gap_p99_ms": pct(gaps, 0.99),
        "samples": len(samples),
        "elapsed_s": result["elapsed"],
        "server_core_busy": (cpu[1] - cpu[0]) / result["elapsed"],
        "client_core_busy": (client[1] - client[0]) / result["elapsed"],
        "server_rss_mib": rss / 1024,
    }


def memory(adapter: str, connections: int, impl: str = "streamcore", chunks: int = 150, *,
           settle: float = 0.5, stream_for: float = 1.0) -> dict[str, Any]:
    """Server RSS per idle connection (``settle`` seconds after the last connected) and per
    streaming connection (streams of 50 chunks/s, measured ``stream_for`` seconds in, while
    every stream is open and producing: ``chunks`` must last longer)."""

    async def measure(server: Server) -> tuple[int, int, int]:
        # One connection streaming first: what the first connection and reply load or
        # allocate once (code paths, encoders, buffers) is in the base, not per connection.
        warm = await loadgen.connect(server.port)
        warm_wait = warm.request()
        await asyncio.sleep(0.3)
        base = server.rss_kib()
        clients = []
        for i in range(0, connections, 100):
            clients += await asyncio.gather(*(loadgen.connect(server.port) for _ in range(min(100, connections - i))))
        await asyncio.sleep(settle)
        idle = server.rss_kib()
        waits = [c.request() for c in clients]
        await asyncio.sleep(stream_for)  # every stream is now open and producing
        streaming = server.rss_kib()
        await asyncio.gather(warm_wait, *waits)
        for c in [warm, *clients]:
            c.transport.close()
        return base, idle, streaming

    with Server(adapter=adapter, impl=impl, chunks=chunks, size=32, rate=50) as server:
        base, idle, streaming = asyncio.run(measure(server))
    return {
        "connections": connections,
        "kib_per_idle_connection": (idle - base) / connections,
        "kib_per_streaming_connection": (streaming - base) / connections,
    }


def client_ceiling(frames: int) -> float:
    return asyncio.run(loadgen.blast_ceiling(frames, 24))


def median_of(runs: int, fn, *args, **kwargs) -> dict[str, Any]:
    """The run with the median chunk rate, of ``runs`` runs (machines here are noisy)."""
    results = [fn(*args, **kwargs) for _ in range(runs)]
    results.sort(key=lambda r: r["chunks_per_s"])
    return results[len(results) // 2]


def env_note() -> str:
    return f"server and load generator in separate processes; {os.cpu_count()} cores"
