"""Server-Sent Events: streamcore runs over plain HTTP, in three dialects, resumable.

:class:`SSEApp` is a raw ASGI app (uvicorn, hypercorn; mountable in Starlette or FastAPI
like the WebSocket endpoint) serving, under one auth, Origin and rate-limit policy with
the WebSocket:

====================================  =====================================================
route (default paths)                 what it does
====================================  =====================================================
``POST /api/chat``                    Vercel AI SDK: ``useChat``'s body -> UI message stream
``GET /api/chat/{chatId}/stream``     replays the chat's latest run (live or retained) from
                                      its start (``useChat``'s ``resume``), or after
                                      ``Last-Event-ID``; 204 when there is none
``POST /api/chat/{chatId}/stop``      stops that run (the run, not only this response)
``POST /agui``                        AG-UI: a ``RunAgentInput`` -> AG-UI events
``GET /agui/{threadId}/stream``       the thread's latest run, after ``Last-Event-ID``
``POST /agui/{threadId}/stop``        stops it
``POST /sse``                         a SPEC.md client frame -> envelopes as SSE events
``GET /sse/{messageId}``              resume after ``Last-Event-ID`` (or ``?lastSeq=``);
                                      an ``EventSource`` reconnects here by itself
``POST /sse/{messageId}/stop``        stops that run
====================================  =====================================================

Each response is one engine connection (:meth:`Engine.serve`) whose transport is
send-only: the request body is its one client frame (so it costs a rate-limit token and
fails like a WebSocket frame would), the run's events are SSE events with ``id: <seq>``,
a comment every ``heartbeat`` seconds keeps proxies from closing an idle stream, and the
response ends once the followed run is sealed and flushed (or the command failed). A
client that disconnects leaves the run to the engine's grace rule (``[runs]
grace_period``), as a WebSocket does; ``Last-Event-ID`` resumes it from the run log on any
worker sharing the log.

A request refused before its stream starts gets an HTTP status and a JSON body
``{"error": {code, message, retryable, retryAfter?}}``: 400 ``INVALID_MESSAGE``, 401
``AUTH_FAILED``, 403 Origin not allowed, 404 ``NOT_FOUND``, 413 body too large, 429
``RATE_LIMIT`` (with ``Retry-After``), 503 shutting down. No CORS headers are sent:
serve the page from the same origin or put a CORS middleware in front.

The AI SDK and AG-UI resume by chat or thread id, not by message id: a
:class:`RunIndex` (bounded, in memory by default) maps ``(dialect, owner, id)`` to the
id's latest run. For authenticated users the owner is the token's subject; anonymous
clients share one keyspace, so ids shorter than :data:`MIN_ANONYMOUS_ID` characters are
never indexed (an anonymous id is a capability, like an anonymous message id).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, Union

import anyio
import msgspec

from streamcore.auth import AuthError, authenticate
from streamcore.dialects import AGUIDialect, AISDKDialect, EnvelopeSSE
from streamcore.dialects.base import HEARTBEAT, LATE, SSEDialect
from streamcore.errors import ConnectionClosed, StreamcoreError
from streamcore.events import Entry, expand
from streamcore.log import get_logger
from streamcore.protocol import ErrorCode, Resume, ResumeData
from streamcore.transport import CloseReason, ConnectionInfo

from .asgi import connection_info

if TYPE_CHECKING:
    from streamcore.engine import Engine
    from streamcore.session import Session

__all__ = [
    "SSEApp",
    "SSEStream",
    "RunIndex",
    "MemoryRunIndex",
    "ActiveRun",
    "MIN_ANONYMOUS_ID",
    "DEFAULT_PATHS",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = get_logger("streamcore")

#: Where :class:`SSEApp` serves each dialect unless told otherwise.
DEFAULT_PATHS = {"aisdk": "/api/chat", "agui": "/agui", "envelope": "/sse"}
#: Anonymous chat and thread ids shorter than this are not indexed for resume or stop.
MIN_ANONYMOUS_ID = 16

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
    (b"x-content-type-options", b"nosniff"),
]
_STATUS = {
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RATE_LIMIT: 429,
    ErrorCode.GENERATION_FAILED: 502,
    ErrorCode.SERVER_ERROR: 503,
    ErrorCode.TIMEOUT: 504,
}
_json = msgspec.json.Encoder()
#: Frames (broadcasts, in practice) one response holds while its command is not handled
#: yet; their bytes are bounded by ``[limits] send_buffer_bytes``.
_MAX_HELD = 64


def server_app(engine: Engine) -> SSEApp:
    """What ``streamcore serve`` runs under uvicorn (one process or workers): the SSE
    dialects' routes in front of the WebSocket endpoint. The engine's lifespan is the
    command's own, hence ``lifespan=False`` (an app of yours keeps the default, see
    docs/sse.md)."""
    from .asgi import StreamcoreASGI

    return SSEApp(engine, StreamcoreASGI(engine, lifespan=False))


# --- the run index: chat / thread id -> its latest run ---------------------------------------


class ActiveRun(msgspec.Struct, frozen=True):
    """The latest run of a chat (AI SDK) or thread (AG-UI)."""

    message_id: str
    #: AG-UI's ``runId`` of that run.
    run_id: Union[str, None] = None


class RunIndex(Protocol):
    """Where a chat or thread id finds its latest run (memory now; Redis behind it later).

    Keys are opaque strings built by :class:`SSEApp` from the dialect, the owner and the
    client's id; entries may expire once the run they name has left the run log.
    """

    async def set(self, key: str, run: ActiveRun) -> None:
        """Record ``run`` as the latest of ``key``."""

    async def get(self, key: str) -> ActiveRun | None:
        """The latest run of ``key``, or None."""


class MemoryRunIndex:
    """The in-process :class:`RunIndex`: bounded in entries, each kept ``ttl`` seconds.

    Args:
        max_entries: entries kept; the least recently set go first.
        ttl: seconds an entry lives (longer than a run plus its retention is enough).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self, *, max_entries: int = 10_000, ttl: float = 1800.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, tuple[ActiveRun, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def set(self, key: str, run: ActiveRun) -> None:
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (run, self.clock() + self.ttl)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    async def get(self, key: str) -> ActiveRun | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] < self.clock():
            del self._entries[key]
            return None
        return found[0]


def index_key(dialect: str, info: ConnectionInfo, client_id: str) -> str | None:
    """The index key of ``client_id`` for this caller; None when it must not be indexed."""
    if info.user_id:
        scope = "u:" + info.user_id
    elif len(client_id) >= MIN_ANONYMOUS_ID:
        scope = "a"
    else:
        return None
    return _json.encode([dialect, scope, client_id]).decode()


# --- one response ----------------------------------------------------------------------------


class SSEStream:
    """One SSE response as a send-only :class:`~streamcore.transport.Connection`.

    The session reads the request's command through :meth:`receive` (the first call
    returns ``first``); later calls wait until the client disconnects or the command has
    nothing more to stream (its run was delivered, or it failed and follows no run) and
    what was sent is flushed, then raise ``ConnectionClosed``. The response starts (status
    200 and the SSE headers) once the command's run is known, so its id is in the headers
    and the run index: frames that come before (a broadcast while the command waits for a
    shared rate limiter) are held, bounded, and sent first. It is refused with an HTTP
    error when the command fails before that (an ``ERROR`` frame).

    Args:
        engine: the engine.
        send, receive: the ASGI callables of the request (its body already read).
        dialect: this response's dialect.
        first: the command frame handed to the session (the request body).
        heartbeat: seconds of silence before a ``: keep-alive`` comment (0: none).
        on_commit: awaited just before the headers go out (registers the run's id).
    """

    def __init__(
        self,
        engine: Engine,
        send: Send,
        receive: Receive,
        dialect: SSEDialect,
        *,
        first: bytes,
        heartbeat: float = 15.0,
        on_commit: Callable[[SSEStream], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.dialect = dialect
        self.heartbeat = heartbeat
        self.session: Session | None = None
        self.started = False
        self.ended = False
        self.client_gone = False
        self.status: int | None = None
        self.last_send = time.monotonic()
        self._send = send
        self._receive = receive
        self._first: bytes | None = first
        self._on_commit = on_commit
        self._wake = anyio.Event()
        # The session has handled (dispatched) the command: frames from now on may be its own.
        self._dispatched = False
        # Frames sent before the response could start (see _hold).
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._lock = anyio.Lock(fast_acquire=True)

    # --- driving ------------------------------------------------------------------------------

    async def serve(self, info: ConnectionInfo, *, commit: bool = False) -> None:
        """Run the engine on this response until it ends; always ends the response."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_disconnect)
                if self.heartbeat > 0:
                    tg.start_soon(self._heartbeat)
                if commit:
                    await self._commit()
                await self.engine.serve(self, info, dialect=self.dialect)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self._end()

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                self._wake.set()
                return

    async def _heartbeat(self) -> None:
        interval = self.heartbeat
        while True:
            await anyio.sleep(max(0.01, self.last_send + interval - time.monotonic()))
            if self.ended or self.client_gone:
                return
            if time.monotonic() - self.last_send >= interval:
                if not self.started:
                    if not self._dispatched:  # it may still be refused with an HTTP status
                        await anyio.sleep(interval)
                        continue
                    # A command still without a run answers without one: what it sent goes out.
                    await self._commit()
                await self._write(HEARTBEAT)

    # --- the Connection the session sees ------------------------------------------------------

    async def receive(self) -> bytes:
        if self.session is None:
            self._attach()
        first, self._first = self._first, None
        if first is not None:
            return first
        self._dispatched = True  # the session reads again once it has handled the command
        if not (self.ended or self.client_gone):
            await self._wake.wait()
        if not (self.ended or self.client_gone) and self.session is not None:
            # The followed run was delivered: let the writer hand the rest to the socket.
            await self.session.outbox.wait_flushed()
        raise ConnectionClosed(1001 if self.client_gone else 1000)

    async def send(self, frame: bytes) -> None:
        if frame is LATE:
            frame = self.dialect.render_late()
        if self.ended or self.client_gone:
            raise ConnectionClosed(1006)
        if not self.started:
            error = self.dialect.error
            if error is not None and error[0] is frame:
                await self._refuse(error[1])
                return
            if self.dialect.message_id is None and self._hold(frame):
                return
            await self._commit()
        if frame:
            await self._write(frame)

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames as one body message (SSE events delimit themselves)."""
        if not self.started or any(frame is LATE for frame in frames):
            for frame in frames:
                await self.send(frame)
            return
        if self.ended or self.client_gone:
            raise ConnectionClosed(1006)
        body = b"".join(frames)
        if body:
            await self._write(body)

    async def close(self, code: int = CloseReason.NORMAL, reason: str = "") -> None:
        if self.ended:
            return
        if not self.started:
            status = 503 if code == CloseReason.GOING_AWAY else 429 if code == CloseReason.POLICY else 500
            code_name = ErrorCode.RATE_LIMIT if status == 429 else ErrorCode.SERVER_ERROR
            with anyio.move_on_after(1.0):
                await _respond_error(self._send, status, code_name, reason or "connection closed", True)
            self.status = status
            self._done()
            return
        with anyio.move_on_after(1.0):
            await self._finish_body()
        self._done()

    # Hooks a Session may call: it names itself, and says when its command has nothing more
    # to stream (it follows no run any more, or its command failed without one).

    def bind_session(self, session: Session) -> None:
        self.session = session

    def session_idle(self) -> None:
        self._wake.set()

    # --- internals ------------------------------------------------------------------------------

    def _attach(self) -> None:
        """Find this connection's session and learn when its command has nothing more to
        stream: its last subscription closed, or an ERROR while it follows no run (a RESUME
        failing after a resume response started: the run expired in between, the shared
        log failed). Known at the session, not per frame sent: no cost per chunk.

        Used when the Session does not call :meth:`bind_session` and :meth:`session_idle`
        itself: its ``subscription_closed`` and ``send_error`` are wrapped for this one
        instance, from the first :meth:`receive` (before the command can fail).
        """
        session = next((s for s in self.engine.sessions if s.conn is self), None)
        if session is None:
            return
        self.session = session
        closed, send_error = session.subscription_closed, session.send_error

        def subscription_closed(sub: Any) -> None:
            closed(sub)
            if not session.subscriptions:
                self.session_idle()

        def failed(exc: StreamcoreError, request_id: str | None) -> None:
            send_error(exc, request_id)
            if not session.subscriptions:
                self.session_idle()  # receive() ends the response once the ERROR is flushed

        session.subscription_closed = subscription_closed  # type: ignore[method-assign]
        session.send_error = failed  # type: ignore[method-assign]

    def _hold(self, frame: bytes) -> bool:
        """Keep ``frame`` until the response starts; False when it must start now instead.

        A frame comes before the command's run is known when it is a broadcast (the
        command waits for a shared rate limiter) or, once the command is dispatched, an
        application handler's own event before it starts its run. Past the bound, a
        broadcast from before the dispatch is dropped; a later frame may be the command's,
        which is never dropped: the response starts without the run.
        """
        if not frame:
            return True  # nothing to hold (it would only have started the response)
        size = self._held_bytes + len(frame)
        if len(self._held) < _MAX_HELD and size <= self.engine.config.limits.send_buffer_bytes:
            self._held.append(frame)
            self._held_bytes = size
            return True
        return not self._dispatched

    def _done(self) -> None:
        self.ended = True
        self._wake.set()

    async def _commit(self) -> None:
        if self.started:
            return
        self.started = True
        if self._on_commit is not None:
            try:
                await self._on_commit(self)
            except Exception:  # an index backend failing must not break the stream
                _log.exception("sse.index_failed", message_id=self.dialect.message_id)
        headers = list(_SSE_HEADERS)
        headers.extend(self.dialect.extra_headers)
        if self.dialect.message_id:
            headers.append((b"x-streamcore-message-id", self.dialect.message_id.encode()))
        self.status = 200
        async with self._lock:
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        preamble = self.dialect.preamble()
        if preamble:
            await self._write(preamble)
        if self._held:
            held, self._held, self._held_bytes = self._held, [], 0
            await self._write(b"".join(held))

    async def _write(self, body: bytes) -> None:
        async with self._lock:
            try:
                await self._send({"type": "http.response.body", "body": body, "more_body": True})
            except (OSError, RuntimeError) as exc:
                self.client_gone = True
                self._wake.set()
                raise ConnectionClosed(1006) from exc
        self.last_send = time.monotonic()

    async def _refuse(self, error: Any) -> None:
        """The command failed before anything streamed: an HTTP error instead of a stream."""
        status = _STATUS.get(error.code, 500)
        self.status = status
        self._held, self._held_bytes = [], 0  # no stream: what waited for it is not sent
        await _respond_error(self._send, status, error.code, error.message, error.retryable, error.retryAfter)
        self._done()

    async def _finish_body(self) -> None:
        trailer = self.dialect.trailer()
        async with self._lock:
            try:
                await self._send({"type": "http.response.body", "body": trailer, "more_body": False})
            except (OSError, RuntimeError):
                self.client_gone = True

    async def _end(self) -> None:
        if self.ended or self.client_gone:
            self.ended = True
            return
        if self.started:
            await self._finish_body()
        else:  # nothing to stream (the run had nothing after the cursor)
            self.status = 204
            await self._send({"type": "http.response.start", "status": 204, "headers": []})
            await self._send({"type": "http.response.body", "body": b""})
        self.ended = True


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    raw = [(b"content-length", str(len(body)).encode()), *headers]
    if body:
        raw.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _respond_error(
    send: Send, status: int, code: str, message: str, retryable: bool, retry_after: int | None = None
) -> None:
    error: dict[str, Any] = {"code": code, "message": message, "retryable": retryable}
    headers = []
    if retry_after is not None:
        error["retryAfter"] = retry_after
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after / 1000))).encode()))
    await _respond(send, status, _json.encode({"error": error}), headers)


_TOO_LARGE = object()


async def _read_body(receive: Receive, limit: int) -> Any:
    """The request body; None if the client left, ``_TOO_LARGE`` past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            return _TOO_LARGE
        parts.append(body)
        if not message.get("more_body", False):
            return b"".join(parts)


# --- the routes --------------------------------------------------------------------------------


class SSEApp:
    """The SSE routes of an engine, as an ASGI 3 app, in front of another app (or alone).

    Args:
        engine: the engine.
        app: where every other request goes (``StreamcoreASGI(engine)`` for the WebSocket,
            ``/healthz`` and the demo page); without it, other requests get 404 and this
            app handles the ASGI lifespan itself.
        aisdk_path, agui_path, envelope_path: each dialect's base path, relative to the
            mount point (None: not served). Defaults: ``[sse]`` of the config when it has
            one, else :data:`DEFAULT_PATHS`.
        heartbeat: seconds of silence before a ``: keep-alive`` comment (0: none).
        index: the :class:`RunIndex` (in memory by default).

    Example::

        engine = Engine(load_config())
        app = SSEApp(engine, StreamcoreASGI(engine))   # uvicorn module:app
    """

    def __init__(
        self,
        engine: Engine,
        app: Any = None,
        *,
        aisdk_path: Any = ...,
        agui_path: Any = ...,
        envelope_path: Any = ...,
        heartbeat: Any = ...,
        index: RunIndex | None = None,
    ) -> None:
        self.engine = engine
        self.app = app
        cfg = getattr(engine.config, "sse", None)

        def pick(value: Any, name: str, default: Any) -> Any:
            if value is not ...:
                return value
            return getattr(cfg, name, default) if cfg is not None else default

        self.paths: dict[str, str] = {}
        for name, value in (("aisdk", aisdk_path), ("agui", agui_path), ("envelope", envelope_path)):
            path = pick(value, f"{name}_path", DEFAULT_PATHS[name])
            if path:
                self.paths[name] = "/" + path.strip("/")
        self.heartbeat = float(pick(heartbeat, "heartbeat", 15.0))
        runs = engine.config.runs
        ttl = engine.config.limits.generation_timeout + runs.grace_period + runs.retention
        self.index: RunIndex = MemoryRunIndex(ttl=ttl) if index is None else index

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self._route(scope)
            if route is not None:
                handler, name, target = route
                await handler(scope, receive, send, name, target)
                return
        if self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await _respond(send, 404, b"")
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def _route(self, scope: Scope) -> tuple[Any, str, str] | None:
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # Starlette's Mount keeps the full path
            path = path[len(root):] or "/"
        method = scope.get("method", "GET")
        for name, base in self.paths.items():
            if path == base or path == base + "/":
                return (self._start if method == "POST" else self._not_allowed("POST")), name, ""
            if not path.startswith(base + "/"):
                continue
            rest = path[len(base) + 1:]
            if rest.endswith("/stop") and len(rest) > 5:
                return (self._stop if method == "POST" else self._not_allowed("POST")), name, rest[:-5]
            if name == "envelope":
                target = rest
            elif rest.endswith("/stream") and len(rest) > 7:
                target = rest[:-7]
            else:
                continue
            return (self._resume if method == "GET" else self._not_allowed("GET")), name, target
        return None

    def _not_allowed(self, allow: str) -> Any:
        async def respond(scope: Scope, receive: Receive, send: Send, name: str, target: str) -> None:
            await _respond(send, 405, b"", [(b"allow", allow.encode())])

        return respond

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.engine.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.engine.shutdown()
                await self.engine.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- handlers -------------------------------------------------------------------------------

    def _dialect(self, name: str, **kwargs: Any) -> SSEDialect:
        limit = self.engine.config.limits.max_message_bytes
        if name == "aisdk":
            return AISDKDialect(max_message_bytes=limit)
        if name == "agui":
            return AGUIDialect(max_message_bytes=limit, **kwargs)
        return EnvelopeSSE(self.engine.codec_for(None))

    async def _admit(self, scope: Scope, send: Send) -> ConnectionInfo | None:
        """The Origin check every route shares; None when the request was refused."""
        info = connection_info(scope, None)
        if not self.engine.origin_allowed(info.headers.get("origin")):
            await _respond_error(send, 403, ErrorCode.AUTH_FAILED, "origin not allowed", False)
            return None
        return info

    async def _authenticate(self, info: ConnectionInfo, send: Send) -> bool:
        if self.engine.verifier is None:
            return True
        try:
            await authenticate(self.engine.verifier, info)
        except AuthError as exc:
            self.engine.telemetry.on_rejected("auth")
            self.engine.telemetry.on_error(exc.code)
            await _respond_error(send, 401, exc.code, exc.message, False)
            return False
        return True

    async def _start(self, scope: Scope, receive: Receive, send: Send, name: str, target: str) -> None:
        info = await self._admit(scope, send)
        if info is None:
            return
        body = await _read_body(receive, self.engine.config.limits.max_message_bytes)
        if body is None:
            return
        if body is _TOO_LARGE:
            limit = self.engine.config.limits.max_message_bytes
            await _respond_error(send, 413, ErrorCode.INVALID_MESSAGE, f"body over {limit} bytes", False)
            return
        dialect = self._dialect(name)

        async def register(stream: SSEStream) -> None:
            d = stream.dialect
            if d.message_id is None:
                return
            if isinstance(d, AISDKDialect) and d.chat_id:
                key = index_key(name, info, d.chat_id)
                run = ActiveRun(d.message_id)
            elif isinstance(d, AGUIDialect) and d.thread_id:
                key = index_key(name, info, d.thread_id)
                run = ActiveRun(d.message_id, d.run_id)
            else:
                return
            if key is not None:
                await self.index.set(key, run)

        stream = SSEStream(
            self.engine, send, receive, dialect, first=body, heartbeat=self.heartbeat,
            on_commit=register if name != "envelope" else None,
        )
        await stream.serve(info)

    async def _find(self, name: str, target: str, info: ConnectionInfo) -> ActiveRun | None:
        if name == "envelope":
            return ActiveRun(target)
        key = index_key(name, info, target)
        return None if key is None else await self.index.get(key)

    async def _resume(self, scope: Scope, receive: Receive, send: Send, name: str, target: str) -> None:
        info = await self._admit(scope, send)
        if info is None or not await self._authenticate(info, send):
            return
        cursor = _cursor(info, allow_query=name == "envelope")
        if cursor is None:
            await _respond_error(
                send, 400, ErrorCode.INVALID_MESSAGE, "Last-Event-ID must be a seq (an integer)", False
            )
            return
        found = await self._find(name, target, info)
        state = None if found is None else await self._state(found.message_id, info)
        if state is None:
            if name == "aisdk":  # the AI SDK's "no stream to resume"
                await _respond(send, 204, b"")
            else:
                await _respond_error(send, 404, ErrorCode.NOT_FOUND, "no such run", False)
            return
        done, last_seq = state
        if done and cursor >= last_seq and name != "agui":
            # Nothing more: an EventSource stops reconnecting on 204.
            await _respond(send, 204, b"")
            return
        kwargs = {"thread_id": target, "run_id": found.run_id} if name == "agui" else {}
        dialect = self._dialect(name, **kwargs)
        if cursor > 0 and name != "envelope":
            dialect.prime(await self._entries_to(found.message_id, cursor))
        dialect.learn(found.message_id)
        dialect.prepared = Resume(data=ResumeData(found.message_id, cursor or None))
        stream = SSEStream(self.engine, send, receive, dialect, first=b"RESUME", heartbeat=self.heartbeat)
        await stream.serve(info, commit=True)

    async def _entries_to(self, message_id: str, cursor: int) -> list[Entry]:
        """The run's entries up to ``cursor`` included (what primes a resumed dialect).

        A run live here is read in memory; otherwise the log is read until the cursor,
        since one read may return part of a run (on Redis, 1000 stream entries: one per
        flush, so about one per delta of a model slower than the flush window).
        """
        run = self.engine.runs.get(message_id)
        if run is not None:
            return expand(run.entries, 0, cursor)
        entries: list[Entry] = []
        after = 0
        while after < cursor:
            page, _ = await self.engine.runlog.read(message_id, after)
            if not page:  # the run's end, or it expired meanwhile
                break
            entries.extend(e for e in page if e[0] <= cursor)
            after = page[-1][0]
        return entries

    async def _state(self, message_id: str, info: ConnectionInfo) -> tuple[bool, int] | None:
        """(sealed, last seq) of a run this caller may read, else None."""
        owner = f"u:{info.user_id}" if info.user_id else "a:"
        may_read = self.engine.may_read
        run = self.engine.runs.get(message_id)
        if run is not None:
            return (False, run.machine.seq) if may_read(owner, run.owner) else None
        known = await self.engine.runlog.info(message_id)
        if known is None or not may_read(owner, known.owner):
            return None
        return known.done, known.last_seq

    async def _stop(self, scope: Scope, receive: Receive, send: Send, name: str, target: str) -> None:
        info = await self._admit(scope, send)
        if info is None:
            return
        if await _read_body(receive, 64 * 1024) is None:
            return
        if not await self._authenticate(info, send):
            return
        owner = f"u:{info.user_id}" if info.user_id else "a:"
        found = await self._find(name, target, info)
        if found is not None and await self._stop_run(found.message_id, owner):
            await _respond(send, 204, b"")  # stopped, or already over: a race with the end is fine
            return
        await _respond_error(send, 404, ErrorCode.NOT_FOUND, "no such run", False)

    async def _stop_run(self, message_id: str, owner: str) -> bool:
        """Stop the run wherever it runs (``Engine.stop_anywhere`` when the engine has it)."""
        anywhere = getattr(self.engine, "stop_anywhere", None)
        if anywhere is not None:
            return await anywhere(message_id, owner)
        return self.engine.stop_run(message_id, owner) or self.engine.run_known(message_id, owner)


def _cursor(info: ConnectionInfo, *, allow_query: bool) -> int | None:
    """The resume cursor: ``Last-Event-ID`` (or ``?lastSeq=``); 0 when absent; None if bad."""
    raw = info.headers.get("last-event-id")
    if raw is None and allow_query:
        raw = info.query.get("lastSeq")
    if raw is None or raw.strip() == "":
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None
