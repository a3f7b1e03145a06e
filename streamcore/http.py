"""The few plain-HTTP routes every adapter serves beside the WebSocket endpoint.

``GET /healthz`` for load balancers, the browser client and demo page shipped in
``streamcore/static`` (``/``, ``/streamcore.js``, ``/favicon.ico``), and ``426 Upgrade
Required`` for a plain GET of the WebSocket path (someone opened it in a browser, or a
proxy dropped the ``Upgrade`` header).
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
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
}
_FILES = {"/": "index.html", "/index.html": "index.html", "/streamcore.js": "streamcore.js", "/demo.js": "demo.js"}
_FAVICONS = ("/favicon.ico", "/favicon.svg")
# Used when streamcore/static ships no favicon file: a favicon request never gets a 404.
_BUILTIN_FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="6" fill="#1f6feb"/>'
    b'<path d="M7 11h18M7 16h13M7 21h8" stroke="#fff" stroke-width="3" stroke-linecap="round"/>'
    b"</svg>"
)
_TEXT = "text/plain; charset=utf-8"
# The page renders model text with textContent; the CSP is a second line of defence.
_CSP = "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'"


class StaticRoutes:
    """Answers plain HTTP GETs.

    Args:
        engine: reported on by ``/healthz``.
        ws_path: the WebSocket path, given to the demo page; a plain GET of it gets
            ``426 Upgrade Required`` with ``Upgrade: websocket``.
        static: serve the demo page, browser client and favicon (on by default).
    """

    def __init__(self, engine: Engine, ws_path: str = "/ws", *, static: bool = True) -> None:
        self.engine = engine
        self.ws_path = ws_path
        self.static = static
        self._cache: dict[str, bytes] = {}
        self._favicons: dict[str, tuple[bytes, str]] = {}

    def respond(self, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Return ``(status, headers, body)`` for ``GET path``."""
        if path == "/healthz":
            body = msgspec.json.encode(
                {"status": "shutting_down" if self.engine.closing else "ok",
                 "connections": len(self.engine.sessions)}
            )
            status = 503 if self.engine.closing else 200
            return status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], body
        telemetry = getattr(self.engine, "telemetry", None)
        if telemetry is not None and path == telemetry.metrics_path:  # [metrics] path; None when off
            return telemetry.metrics_response()
        if path == self.ws_path:
            # RFC 9110 §15.5.22: a 426 names the protocol to switch to.
            body = (
                f"{path} is a WebSocket endpoint: connect with a WebSocket client "
                f"(new WebSocket(\"ws://<host>{path}\")), not a plain HTTP GET\n"
            ).encode()
            return 426, [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Content-Type", _TEXT)], body
        if not self.static:
            return 404, [("Content-Type", _TEXT)], b"not found\n"
        if path in _FAVICONS:
            return self._favicon(path)
        name = _FILES.get(path)
        if name is None:
            return 404, [("Content-Type", _TEXT)], b"not found\n"
        content = self._cache.get(name)
        if content is None:
            content = resources.files("streamcore.static").joinpath(name).read_bytes()
            if name == "index.html":
                content = content.replace(b"{{WS_PATH}}", self.ws_path.encode())
            self._cache[name] = content
        headers = [
            ("Content-Type", _TYPES[name[name.rindex("."):]]),
            ("Content-Security-Policy", _CSP),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return 200, headers, content

    def _favicon(self, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """The favicon file asked for, else the other one of ``streamcore/static``, else a built-in SVG."""
        cached = self._favicons.get(path)
        if cached is None:
            cached = (_BUILTIN_FAVICON, _TYPES[".svg"])
            asked = path.lstrip("/")
            folder = resources.files("streamcore.static")
            for name in sorted(("favicon.ico", "favicon.svg"), key=lambda n: n != asked):
                candidate = folder.joinpath(name)
                if candidate.is_file():
                    cached = (candidate.read_bytes(), _TYPES[name[name.rindex("."):]])
                    break
            self._favicons[path] = cached
        body, kind = cached
        headers = [
            ("Content-Type", kind),
            ("Cache-Control", "public, max-age=86400"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return 200, headers, body
