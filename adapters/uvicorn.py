"""Run the ASGI adapter under uvicorn, in the current event loop, with our shutdown order.

uvicorn's own SIGINT/SIGTERM handling closes WebSockets with 1012 before the app hears of
it; here the engine ends open generations with ``server_shutdown`` and closes with 1001
first, then uvicorn stops. Used by ``streamcore serve`` and the tests.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

from streamcore._heap import freeze_startup_heap

from .asgi import StreamcoreASGI

if TYPE_CHECKING:
    from streamcore.engine import Engine

__all__ = ["serve"]


@contextlib.asynccontextmanager
async def serve(
    engine: Engine,
    host: str | None = None,
    port: int | None = None,
    *,
    app: Any = None,
    sockets: list[socket.socket] | None = None,
    start_timeout: float | None = None,
    close_engine: bool = True,
    **options: Any,
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``engine`` (or ``app``) with uvicorn's ``websockets-sansio``; yield ``(host, port)``.

    Args:
        engine: the engine; its config gives defaults for host, port and limits.
        host: interface (``config.server.host``).
        port: port (``config.server.port``; 0 picks a free one).
        app: the ASGI app to run (a :class:`StreamcoreASGI` of ``engine`` by default).
        sockets: already bound sockets to serve instead of ``host``/``port`` (workers).
        start_timeout: seconds uvicorn may take to start listening (None: no bound).
        close_engine: close the engine on exit (not when the caller owns it with
            ``async with engine``).
        **options: more ``uvicorn.Config`` options.
    """
    import uvicorn

    cfg = engine.config
    lim = cfg.limits

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # signals belong to the caller (see module docstring)
            yield

    settings: dict[str, Any] = dict(
        host=host or cfg.server.host,
        port=cfg.server.port if port is None else port,
        ws="websockets-sansio",
        # Frames up to twice the limit are read and refused with INVALID_MESSAGE;
        # anything larger is refused by the protocol itself (close 1009).
        ws_max_size=2 * lim.max_message_bytes,
        ws_ping_interval=lim.ping_interval,
        ws_ping_timeout=lim.ping_timeout,
        ws_per_message_deflate=cfg.server.compression,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=cfg.server.shutdown_timeout,
    )
    settings.update(options)
    server = _Server(uvicorn.Config(app or StreamcoreASGI(engine, lifespan=False), **settings))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=sockets))
        with anyio.fail_after(start_timeout):
            # uvicorn exposes no start-up event; its `started` flag flips once sockets listen.
            while not server.started:
                if server.should_exit:
                    where = "the given socket" if sockets else f"{settings['host']}:{settings['port']}"
                    raise OSError(f"uvicorn could not listen on {where}")
                await anyio.sleep(0.005)
        sock = server.servers[0].sockets[0]
        bound_host, bound_port = sock.getsockname()[:2]
        if cfg.server.gc_freeze:
            freeze_startup_heap()
        try:
            yield bound_host, bound_port
        finally:
            with anyio.CancelScope(shield=True):
                await engine.shutdown()
                server.should_exit = True
                if close_engine:
                    await engine.aclose()
