"""Several worker processes on one port: ``streamcore serve --workers N``.

Each worker is a fresh Python process (``spawn``) with its own engine and event loop,
listening on the same ``host:port`` through ``SO_REUSEPORT``: the kernel spreads new
connections over the workers (Linux, the BSDs and macOS; elsewhere N must be 1). With
N > 1 the workers must share a backend (``[redis] url``), so that a client reconnecting to
any worker finds its runs, its limits and its broadcasts; :func:`run_workers` refuses to
start otherwise.

The parent supervises: it prints the ready line once every worker listens, restarts a
worker that dies, and on SIGINT/SIGTERM sends SIGTERM to all of them (each ends its
generations with ``server_shutdown`` and closes with 1001) and kills any still alive after
``server.shutdown_timeout`` plus a margin.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from streamcore.config import Config
from streamcore.errors import ConfigError
from streamcore.metrics import multiprocess_metrics, worker_exited

__all__ = ["run_workers", "check_workers", "reuse_port_socket"]

#: seconds the parent waits beyond ``shutdown_timeout`` before killing a worker.
KILL_MARGIN = 3.0
#: seconds a worker gets to start listening.
START_TIMEOUT = 30.0


def check_workers(config: Config, n: int) -> None:
    """Raise ConfigError unless ``n`` workers can serve ``config``."""
    if n < 1:
        raise ConfigError("--workers must be at least 1")
    if n > 1 and not config.redis.url:
        raise ConfigError(
            f"--workers {n} needs a shared backend: set [redis] url (or STREAMCORE_REDIS_URL); "
            "without it each worker would keep its own runs, limits and broadcasts"
        )
    if n > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers > 1 needs SO_REUSEPORT, which this platform lacks")
    if config.redis.url:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the Python package 'redis' is not installed ([redis] url is set): pip install 'streamcore-llm[redis]'"
            ) from None


def reuse_port_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (listening unless told not to)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def run_workers(
    config: Config,
    n: int,
    *,
    engine_factory: Callable[[Config], Any] | None = None,
    log_format: str | None = None,
    log_level: str = "info",
    ready: Callable[[str, int], None] | None = None,
) -> int:
    """Serve ``config`` with ``n`` worker processes on one port until SIGINT/SIGTERM.

    Args:
        config: the configuration (``server.port`` 0 picks a free port for all workers).
        n: worker processes.
        engine_factory: ``factory(config) -> Engine``, a module-level function (workers
            are spawned, so it must be importable); ``Engine(config)`` by default.
        log_format, log_level: each worker configures logging like ``streamcore serve``.
        ready: called with ``(host, port)`` once every worker listens (by default the
            ready line ``streamcore listening on ws://HOST:PORT/PATH (N workers)`` is
            printed on stdout).

    Returns:
        the exit status (0 after a clean shutdown).

    Raises:
        ConfigError: ``n`` > 1 without ``[redis] url``, or the redis package missing.
        OSError: the port cannot be bound.
    """
    check_workers(config, n)
    host = config.server.host
    # Reserve the port (bound, not listening: it never receives connections) so that
    # every worker binds the same one, including when the config says 0.
    holder = reuse_port_socket(host, config.server.port, listen=False)
    port = holder.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    stop = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs: dict[int, Any] = {}
    pipes: dict[int, Any] = {}

    def spawn(index: int) -> None:
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_main,
            args=(config, index, port, child_end, engine_factory, log_format, log_level),
            name=f"streamcore-worker-{index}",
            daemon=False,
        )
        proc.start()
        child_end.close()
        procs[index] = proc
        pipes[index] = parent_end

    # With [metrics] on: one PROMETHEUS_MULTIPROC_DIR for every worker (removed at exit).
    metrics = contextlib.ExitStack()
    metrics.enter_context(multiprocess_metrics(config))
    try:
        for index in range(n):
            spawn(index)
        # Every worker says "ready" once it listens (or dies trying).
        waiting = set(range(n))
        deadline = time.monotonic() + START_TIMEOUT
        while waiting and stop["signal"] is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(f"workers {sorted(waiting)} did not start within {START_TIMEOUT:.0f} s")
            objects = [pipes[i] for i in waiting] + [procs[i].sentinel for i in waiting]
            for obj in multiprocessing.connection.wait(objects, timeout=min(left, 0.5)):
                for i in list(waiting):
                    if obj is pipes[i]:
                        try:
                            message = pipes[i].recv()
                        except EOFError:
                            message = ("error", "exited")
                        if message[0] != "ready":
                            raise OSError(f"worker {i} could not start: {message[1]}")
                        waiting.discard(i)
                    elif obj == procs[i].sentinel and i in waiting and not pipes[i].poll():
                        raise OSError(f"worker {i} exited while starting (status {procs[i].exitcode})")
        if stop["signal"] is None:
            if ready is not None:
                ready(host, port)
            else:
                print(f"streamcore listening on ws://{host}:{port}{config.server.path} ({n} workers)", flush=True)
        # Supervise: restart a worker that dies, until told to stop.
        while stop["signal"] is None:
            sentinels = {procs[i].sentinel: i for i in procs}
            for obj in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                index = sentinels[obj]
                if stop["signal"] is None:
                    status = procs[index].exitcode
                    worker_exited(procs[index].pid)  # its live gauges go; its counters stay
                    print(f"streamcore: worker {index} exited (status {status}); restarting", file=sys.stderr)
                    pipes[index].close()
                    spawn(index)
        return 0
    finally:
        _stop_all(procs, config.server.shutdown_timeout + KILL_MARGIN)
        for pipe in pipes.values():
            pipe.close()
        holder.close()
        metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_all(procs: dict[int, Any], grace: float) -> None:
    for proc in procs.values():
        if proc.is_alive():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs.values():
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs.values():
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# --- in each worker ---------------------------------------------------------------------------


def _worker_main(
    config: Config,
    index: int,
    port: int,
    conn: Any,
    engine_factory: Callable[[Config], Any] | None,
    log_format: str | None,
    log_level: str,
) -> None:
    # The parent decides when to stop (a terminal's Ctrl-C reaches the whole group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if log_format:
            from streamcore.log import configure_logging

            configure_logging(log_format, log_level)
        sock = reuse_port_socket(config.server.host, port)
        if engine_factory is not None:
            engine = engine_factory(config)
        else:
            from streamcore.engine import Engine

            engine = Engine(config)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent in one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        sys.exit(1)
    try:
        from streamcore.cli import loop_options

        anyio.run(_serve_worker, engine, sock, conn, index, backend_options=loop_options(config.server.loop))
    finally:
        sock.close()
        conn.close()


async def _serve_worker(engine: Any, sock: socket.socket, conn: Any, index: int) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with engine:  # backends (Redis flusher, Pub/Sub) up before the first client
            async with _listen(engine, sock):
                conn.send(("ready", index, os.getpid()))
                async for _ in signals:
                    break


@contextlib.asynccontextmanager
async def _listen(engine: Any, sock: socket.socket) -> AsyncIterator[None]:
    cfg = engine.config
    if cfg.server.server == "websockets":
        from streamcore.adapters.websockets import serve as ws_serve

        # The websockets server binds its own socket, with reuse_port, on the port this
        # one reserved (the config's may be 0: every worker would pick another one).
        host, port = sock.getsockname()[:2]
        sock.close()
        async with ws_serve(engine, host, port, reuse_port=True):
            yield
        return
    async with _uvicorn(engine, sock):
        yield


@contextlib.asynccontextmanager
async def _uvicorn(engine: Any, sock: socket.socket) -> AsyncIterator[None]:
    """:func:`streamcore.adapters.uvicorn.serve` on the already bound, shared socket."""
    from streamcore.adapters.sse import server_app
    from streamcore.adapters.uvicorn import serve

    # The same app as a single `streamcore serve`: the WebSocket route and the SSE routes.
    async with serve(
        engine, app=server_app(engine), sockets=[sock], start_timeout=START_TIMEOUT, close_engine=False, backlog=2048
    ):
        yield

def main(argv: list[str] | None = None) -> int:
    """``python -m streamcore.adapters.workers [--config FILE] [--workers N] [--port P]``."""
    import argparse

    from streamcore.config import load_config

    parser = argparse.ArgumentParser(prog="python -m streamcore.adapters.workers")
    parser.add_argument("--config")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--log-format", choices=["console", "json"])
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, overrides={"server.host": args.host, "server.port": args.port})
        log_format = args.log_format or ("console" if sys.stderr.isatty() else "json")
        return run_workers(config, args.workers, log_format=log_format, log_level=args.log_level)
    except ConfigError as exc:
        print(f"streamcore: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"streamcore: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
