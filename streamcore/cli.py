"""``streamcore`` command line: ``serve`` the protocol, list ``providers``.

This is the only place that configures logging (a library never does): one structured
line per connection and per generation, on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Any, Sequence

import anyio
import structlog

from .config import Config, load_config
from .errors import ConfigError

__all__ = ["main"]

_log = structlog.get_logger("streamcore")


def _configure_logging(fmt: str, level: str) -> None:
    import logging

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamcore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the streaming protocol over WebSocket")
    serve.add_argument("--config", help="TOML config file (default: $STREAMCORE_CONFIG)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--path", help="WebSocket path (default /ws)")
    serve.add_argument("--provider", help="provider name (default demo)")
    serve.add_argument("--model", help="model name for the provider")
    serve.add_argument("--server", choices=["uvicorn", "websockets"], help="transport (default uvicorn)")
    serve.add_argument("--log-format", choices=["console", "json"], default=None)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub.add_parser("providers", help="list installed providers")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamcore`` command."""
    args = _parser().parse_args(argv)
    if args.command == "providers":
        from .provider import available_providers

        print("\n".join(available_providers()))
        return 0
    _configure_logging(args.log_format or ("console" if sys.stderr.isatty() else "json"), args.log_level)
    try:
        config = load_config(
            args.config,
            overrides={
                "server.host": args.host,
                "server.port": args.port,
                "server.path": args.path,
                "server.server": args.server,
                "provider.name": args.provider,
                "provider.model": args.model,
            },
        )
        from .engine import Engine

        engine = Engine(config)
    except (ConfigError, ImportError) as exc:
        print(f"streamcore: {exc}", file=sys.stderr)
        return 2
    anyio.run(serve, engine)
    return 0


async def serve(engine: Any) -> None:
    """Serve ``engine`` with the configured server until SIGINT or SIGTERM."""
    config: Config = engine.config
    if config.server.server == "websockets":
        run = _serve_websockets
    else:
        from .adapters.uvicorn import serve as run
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with run(engine) as (host, port):
            # The ready line: scripts and tests wait for it rather than sleeping.
            print(f"streamcore listening on ws://{host}:{port}{config.server.path}", flush=True)
            _log.info(
                "server.start",
                server=config.server.server,
                url=f"ws://{host}:{port}{config.server.path}",
                provider=config.provider.name,
                model=config.provider.model,
            )
            async for signum in signals:
                _log.info("server.signal", signal=signal.Signals(signum).name)
                break
    _log.info("server.stopped")


@contextlib.asynccontextmanager
async def _serve_websockets(engine: Any):
    from .adapters.websockets import serve as ws_serve

    async with ws_serve(engine) as server:
        sock = next(iter(server.sockets))
        host, port = sock.getsockname()[:2]
        yield host, port


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
