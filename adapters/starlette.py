"""Serve an :class:`~streamcore.Engine` from a Starlette (or FastAPI) WebSocket route.

Example, FastAPI::

    engine = Engine(load_config())
    app = FastAPI(lifespan=streamcore_lifespan(engine))
    app.add_api_websocket_route("/api/v1/ws", websocket_endpoint(engine))

Example, Starlette::

    app = Starlette(routes=[StreamcoreRoute("/ws", engine)], lifespan=streamcore_lifespan(engine))

Starlette is imported lazily, when a route is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .asgi import accept_and_serve

if TYPE_CHECKING:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from streamcore.engine import Engine

__all__ = ["websocket_endpoint", "StreamcoreRoute", "streamcore_lifespan"]


def websocket_endpoint(engine: Engine) -> Callable[[WebSocket], Awaitable[None]]:
    """An endpoint ``async def (websocket)`` for Starlette's or FastAPI's WebSocket routes."""
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def endpoint(websocket: WebSocket) -> None:
        # Starlette's receive()/send() keep its WebSocket state machine right; the
        # engine runs over them exactly as over raw ASGI. Under uvicorn, with no middleware
        # around the app, chunk frames go straight to uvicorn's protocol as for a plain
        # ASGI app (adapters/_direct.py): Starlette's send would add nothing to them.
        message = await websocket.receive()
        if message["type"] != "websocket.connect":
            return
        await accept_and_serve(
            engine, websocket.scope, websocket.receive, websocket.send, (WebSocketDisconnect,),
            # Starlette keeps the server's receive as is: it tells which server this is.
            server_receive=getattr(websocket, "_receive", None),
            server_send=getattr(websocket, "_send", None),
        )

    # FastAPI injects by annotation; under `from __future__ import annotations` it would
    # see the string "WebSocket" and not know the class, so give it the class itself.
    endpoint.__annotations__ = {"websocket": WebSocket, "return": None}
    return endpoint


def StreamcoreRoute(path: str, engine: Engine, **kwargs: Any) -> WebSocketRoute:
    """A ``starlette.routing.WebSocketRoute`` serving ``engine`` at ``path``."""
    from starlette.routing import WebSocketRoute

    return WebSocketRoute(path, websocket_endpoint(engine), **kwargs)


def streamcore_lifespan(engine: Engine) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that runs the engine: its runs live in the lifespan's task, and on exit
    they end with ``server_shutdown``, sockets close with 1001, and the engine closes."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with engine:
            yield
            await engine.shutdown()

    return lifespan
