"""The few plain-HTTP routes every adapter serves beside the WebSocket endpoint.

``GET /healthz`` for load balancers, and the browser client and demo page shipped in
``streamcore/static`` (``/`` and ``/streamcore.js``).
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["StaticRoutes"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_FILES = {"/": "index.html", "/index.html": "index.html", "/streamcore.js": "streamcore.js", "/demo.js": "demo.js"}
# The page renders model text with textContent; the CSP is a second line of defence.
_CSP = "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'"


class StaticRoutes:
    """Answers plain HTTP GETs.

    Args:
        engine: reported on by ``/healthz``.
        ws_path: the WebSocket path, given to the demo page.
        static: serve the demo page and browser client (on by default).
    """

    def __init__(self, engine: Engine, ws_path: str = "/ws", *, static: bool = True) -> None:
        self.engine = engine
        self.ws_path = ws_path
        self.static = static
        self._cache: dict[str, bytes] = {}

    def respond(self, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Return ``(status, headers, body)`` for ``GET path``."""
        if path == "/healthz":
            body = msgspec.json.encode(
                {"status": "shutting_down" if self.engine.closing else "ok",
                 "connections": len(self.engine.sessions)}
            )
            status = 503 if self.engine.closing else 200
            return status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], body
        name = _FILES.get(path) if self.static else None
        if name is None:
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"
        body = self._cache.get(name)
        if body is None:
            body = resources.files("streamcore.static").joinpath(name).read_bytes()
            if name == "index.html":
                body = body.replace(b"{{WS_PATH}}", self.ws_path.encode())
            self._cache[name] = body
        headers = [
            ("Content-Type", _TYPES[name[name.rindex("."):]]),
            ("Content-Security-Policy", _CSP),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return 200, headers, body
