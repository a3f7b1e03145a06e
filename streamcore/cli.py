"""``streamcore`` command line: ``serve`` the protocol, list ``providers``.

This is the only place that configures logging (a library never does): one structured
line per record on stderr, console or JSON (``--log-format``). Start-up failures (bad
config, a missing optional dependency, a busy port) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from .config import Config, load_config
from .errors import ConfigError
from .log import configure_logging, get_logger

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # anyio's dependency on 3.10

__all__ = ["main", "missing_dependency_message"]

_log = get_logger("streamcore")

#: exit status of configuration and installation errors (argparse uses 2 too).
EXIT_CONFIG = 2
#: exit status when the server cannot start (port busy, permission denied...).
EXIT_START = 1

# Top-level module -> the extra of streamcore-llm that installs it.
_EXTRAS = {
    "uvicorn": "asgi",
    "starlette": "asgi",
    "websockets": "websockets",
    "litellm": "litellm",
    "httpx": "openai",
    "jwt": "jwt",
    "cryptography": "jwt",
    "redis": "redis",
    "prometheus_client": "prometheus",
    "opentelemetry": "otel",
    "uvloop": "fast",
}
# What each transport of `serve` imports (uvicorn runs websockets' sans-I/O protocol),
# and the extra that installs it all.
_SERVER_MODULES = {"uvicorn": (("uvicorn", "websockets"), "asgi"), "websockets": (("websockets",), "websockets")}


def _version() -> str:
    try:
        from . import __version__

        return __version__
    except ImportError:  # pragma: no cover - a broken install
        from importlib.metadata import version

        return version("streamcore-llm")


def loop_options(choice: str) -> dict[str, Any]:
    """anyio's asyncio ``backend_options`` for ``[server] loop``.

    Raises:
        ModuleNotFoundError: ``"uvloop"`` chosen and not installed.
    """
    if choice == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401
    except ModuleNotFoundError:
        if choice == "uvloop":
            raise
        return {}
    return {"use_uvloop": True}


def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: what the running loop is (for the start log line)."""
    import asyncio

    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def missing_dependency_message(module: str, purpose: str | None = None, extra: str | None = None) -> str:
    """One line naming the extra that installs ``module`` (``pip install 'streamcore-llm[asgi]'``)."""
    root = module.split(".")[0]
    extra = extra or _EXTRAS.get(root, "all")
    what = f" ({purpose})" if purpose else ""
    return f"the Python package {root!r} is not installed{what}: pip install 'streamcore-llm[{extra}]'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamcore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"streamcore-llm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the streaming protocol over WebSocket")
    serve.add_argument("--config", help="TOML config file (default: $STREAMCORE_CONFIG)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--path", help="WebSocket path (default /ws)")
    serve.add_argument("--provider", help="provider name (default demo)")
    serve.add_argument("--model", help="model name for the provider")
    serve.add_argument("--server", choices=["uvicorn", "websockets"], help="transport (default uvicorn)")
    serve.add_argument(
        "--log-format", choices=["console", "json"], default=None,
        help="log lines on stderr (default: console on a terminal, else json)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes on one port (N > 1 needs [redis] url)"
    )
    sub.add_parser("providers", help="list installed providers")
    return parser


def _fail(message: str, status: int) -> int:
    print(f"streamcore: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamcore`` command."""
    args = _parser().parse_args(argv)
    if args.command == "providers":
        from .provider import available_providers

        print("\n".join(available_providers()))
        return 0
    configure_logging(args.log_format or ("console" if sys.stderr.isatty() else "json"), args.log_level)
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
        modules, extra = _SERVER_MODULES[config.server.server]
        for module in modules:
            if importlib.util.find_spec(module) is None:
                purpose = f"--server {config.server.server}"
                return _fail(missing_dependency_message(module, purpose, extra), EXIT_CONFIG)
        try:
            backend_options = loop_options(config.server.loop)
        except ModuleNotFoundError:
            return _fail(missing_dependency_message("uvloop", '[server] loop = "uvloop"'), EXIT_CONFIG)
        if args.workers != 1:
            from .adapters.workers import check_workers, run_workers

            check_workers(config, args.workers)
            try:
                return run_workers(
                    config,
                    args.workers,
                    log_format=args.log_format or ("console" if sys.stderr.isatty() else "json"),
                    log_level=args.log_level,
                )
            except OSError as exc:
                return _fail(str(exc), EXIT_START)
        from .engine import Engine

        engine = Engine(config)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except ModuleNotFoundError as exc:
        return _fail(missing_dependency_message(exc.name or str(exc)), EXIT_CONFIG)
    except ImportError as exc:  # our own "needs PyJWT: pip install ..." messages
        return _fail(str(exc), EXIT_CONFIG)
    try:
        _check_port(config.server.host, config.server.port)
        anyio.run(serve, engine, backend_options=backend_options)
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled inside serve()
        return 130
    except BaseException as exc:  # noqa: BLE001 - turned into one line below
        problem = _startup_problem(exc, config)
        if problem is None:
            raise
        return _fail(*problem)
    return 0


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` the way the servers will, so a busy port is one clear line.

    The servers would report it as a traceback (uvicorn even exits from a task). The
    real bind still checks again: a port taken between the two is caught in main().
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    seen = set()
    for family, kind, proto, _, address in infos:
        if (family, address) in seen:
            continue
        seen.add((family, address))
        with socket.socket(family, kind, proto) as sock:
            # As asyncio's create_server does: a port in TIME_WAIT is free, one in LISTEN is not.
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise _ListenError(_listen_message(host, port, exc)) from None


class _ListenError(Exception):
    pass


def _listen_message(host: str, port: int, exc: OSError) -> str:
    reason = (exc.strerror or str(exc)).lower()
    hint = ""
    if "in use" in reason:
        hint = " (another server is running there: stop it or pick another port with --port)"
    elif "permission" in reason or "access" in reason:
        hint = " (ports below 1024 need privileges: pick another port with --port)"
    return f"cannot listen on {host}:{port}: {reason}{hint}"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    # uvicorn logs a failed bind and calls sys.exit(): the OSError is the context.
    if isinstance(exc, SystemExit) and exc.__context__ is not None:
        return [exc.__context__, *_leaves(exc.__context__)]
    return [exc]


def _startup_problem(exc: BaseException, config: Config) -> tuple[str, int] | None:
    """One line and an exit status for a start-up failure, or None for a real crash."""
    for leaf in _leaves(exc):
        if isinstance(leaf, _ListenError):
            return str(leaf), EXIT_START
        if isinstance(leaf, ModuleNotFoundError):
            return missing_dependency_message(leaf.name or str(leaf)), EXIT_CONFIG
        if isinstance(leaf, ConfigError):
            return str(leaf), EXIT_CONFIG
        if isinstance(leaf, OSError) and leaf.errno is not None:
            return _listen_message(config.server.host, config.server.port, leaf), EXIT_START
    return None


async def serve(engine: Any) -> None:
    """Serve ``engine`` with the configured server until SIGINT or SIGTERM."""
    config: Config = engine.config
    if config.server.server == "websockets":
        run = _serve_websockets  # the websockets server takes no POST: no SSE routes there
    else:
        run = _serve_uvicorn
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with run(engine) as (host, port):
            # The ready line: scripts and tests wait for it rather than sleeping.
            print(f"streamcore listening on ws://{host}:{port}{config.server.path}", flush=True)
            _log.info(
                "server.start",
                server=config.server.server,
                loop=loop_name(),
                url=f"ws://{host}:{port}{config.server.path}",
                provider=config.provider.name,
                model=config.provider.model,
            )
            async for signum in signals:
                _log.info("server.signal", signal=signal.Signals(signum).name)
                break
    _log.info("server.stopped")


def _serve_uvicorn(engine: Any) -> Any:
    """The WebSocket endpoint and the SSE dialects' routes ([sse]) under uvicorn."""
    from .adapters.sse import server_app
    from .adapters.uvicorn import serve as uvicorn_serve

    return uvicorn_serve(engine, app=server_app(engine))


@contextlib.asynccontextmanager
async def _serve_websockets(engine: Any):
    from .adapters.websockets import serve as ws_serve

    async with ws_serve(engine) as server:
        sock = next(iter(server.sockets))
        host, port = sock.getsockname()[:2]
        yield host, port


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
