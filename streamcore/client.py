"""A Python client for the streamcore protocol, with the seed's ``WebSocketService`` features.

Automatic reconnection with exponential backoff and jitter, a bounded queue of messages
sent while offline (flushed in order on reconnect), ``on(event, handler)`` subscriptions
returning an unsubscribe function, lifecycle events, and high-level calls::

    async with StreamcoreClient("ws://127.0.0.1:8000/ws") as client:
        reply = await client.send_message("Bonjour !")
        async for text in reply:
            print(text, end="", flush=True)
        end = await reply.result()          # the AI_MESSAGE_END data
        objective = await client.generate_objective("Apprendre le piano", difficulty="beginner")

Options map onto the seed's: ``reconnectAttempts`` → ``reconnect_attempts``,
``reconnectDelay``/``reconnectDelayMax`` (ms) → ``reconnect_delay``/``reconnect_delay_max``
(seconds), ``reconnectDecay`` → ``reconnect_decay``, ``timeout`` (ms) → ``timeout`` (s),
``pingInterval`` (ms) → ``ping_interval`` (s).

The ``websockets`` library is imported when the client connects.
"""

from __future__ import annotations

import inspect
import json
import random
import time
from collections import deque
from typing import Any, AsyncIterator, Callable

import anyio
import structlog

from .errors import StreamcoreError
from .ids import new_id, now_ms
from .protocol import ErrorCode, EventType

__all__ = [
    "StreamcoreClient",
    "MessageStream",
    "RemoteError",
    "RateLimited",
    "InvalidMessage",
    "AuthFailed",
    "GenerationFailed",
    "GenerationTimeout",
    "RemoteServerError",
    "QueueFull",
    "ConnectionLost",
    "ClientState",
]

_log = structlog.get_logger("streamcore.client")


class ClientState:
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class RemoteError(StreamcoreError):
    """An ``ERROR`` from the server, as a typed exception."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(
            data.get("message", ""),
            code=data.get("code", ErrorCode.SERVER_ERROR),
            retryable=data.get("retryable"),
            retry_after_ms=data.get("retryAfter"),
        )
        self.request_id = data.get("requestId")
        self.data = data


class RateLimited(RemoteError):
    pass


class InvalidMessage(RemoteError):
    pass


class AuthFailed(RemoteError):
    pass


class GenerationFailed(RemoteError):
    pass


class GenerationTimeout(RemoteError):
    pass


class RemoteServerError(RemoteError):
    pass


_ERRORS: dict[str, type[RemoteError]] = {
    ErrorCode.RATE_LIMIT: RateLimited,
    ErrorCode.INVALID_MESSAGE: InvalidMessage,
    ErrorCode.AUTH_FAILED: AuthFailed,
    ErrorCode.GENERATION_FAILED: GenerationFailed,
    ErrorCode.TIMEOUT: GenerationTimeout,
    ErrorCode.SERVER_ERROR: RemoteServerError,
}


def remote_error(data: dict[str, Any]) -> RemoteError:
    return _ERRORS.get(data.get("code", ""), RemoteError)(data)


class QueueFull(Exception):
    """The offline queue is full: the message was not queued."""


class ConnectionLost(Exception):
    """The connection dropped while a reply was streaming; the server cancelled it."""


class _Request:
    """A request awaiting its replies, matched by ``metadata.requestId``."""

    def __init__(self, frame: dict[str, Any]) -> None:
        self.frame = frame
        self.id = frame["id"]
        self.message_id: str | None = None
        self.send, self.receive = anyio.create_memory_object_stream[Any](1 << 16)
        self.retries = 0
        self.chunks = 0
        self.sent = False
        self.retrying = False


class MessageStream:
    """A streamed reply: iterate for text chunks, then ``await result()`` for AI_MESSAGE_END.

    Iteration raises a :class:`RemoteError` subclass on a server error and
    :class:`ConnectionLost` if the connection drops mid-stream.
    """

    def __init__(self, client: "StreamcoreClient", request: _Request) -> None:
        self._client = client
        self._request = request
        self._end: dict[str, Any] | None = None
        self._objective: dict[str, Any] | None = None
        self._texts: list[str] = []

    @property
    def request_id(self) -> str:
        return self._request.id

    @property
    def message_id(self) -> str | None:
        return self._request.message_id

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[str]:
        while self._end is None:
            kind, data = await self._request.receive.receive()
            if kind == EventType.AI_MESSAGE_CHUNK:
                self._texts.append(data["content"])
                yield data["content"]
            elif kind == EventType.AI_MESSAGE_END:
                self._end = data
            elif kind == "error":
                raise data

    async def result(self) -> dict[str, Any]:
        """Wait for the end of the reply and return the AI_MESSAGE_END data."""
        async for _ in self:
            pass
        return self._end  # type: ignore[return-value]

    async def objective(self) -> dict[str, Any]:
        """For GENERATE_OBJECTIVE: wait for OBJECTIVE_GENERATED and return its data."""
        end = await self.result()
        if end.get("stopReason") != "complete":
            raise GenerationFailed({"code": "GENERATION_FAILED", "message": f"stopped: {end.get('stopReason')}",
                                    "retryable": True})
        while self._objective is None:
            kind, data = await self._request.receive.receive()
            if kind == EventType.OBJECTIVE_GENERATED:
                self._objective = data
            elif kind == "error":
                raise data
        return self._objective

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._texts)

    async def stop(self) -> None:
        """Ask the server to stop this generation (it ends with ``user_cancelled``)."""
        await self._client.stop_generation(self._request.message_id or self._request.id)


class StreamcoreClient:
    """Client of a streamcore server; use as ``async with StreamcoreClient(url) as c:``.

    Args:
        url: ``ws://`` or ``wss://`` URL of the server's WebSocket endpoint.
        reconnect: reconnect automatically after a drop.
        reconnect_attempts: consecutive failed attempts before giving up (state ``closed``).
        reconnect_delay: first delay between attempts, in seconds.
        reconnect_delay_max: largest delay, in seconds.
        reconnect_decay: factor applied to the delay after each failed attempt.
        jitter: random fraction (0..1) added to or removed from each delay, so that many
            clients do not reconnect in lockstep.
        timeout: seconds to open a connection.
        ping_interval: seconds between application PINGs while connected (None: off).
        token: a JWT, sent as ``Authorization: Bearer``.
        max_queue: messages kept while offline; past it, :class:`QueueFull`.
        auto_retry: resend a request after a retryable ERROR received before any chunk,
            waiting ``retryAfter`` (or the reconnect delay), up to ``max_retries`` times.
        max_retries: see ``auto_retry``.
    """

    def __init__(
        self,
        url: str,
        *,
        reconnect: bool = True,
        reconnect_attempts: int = 5,
        reconnect_delay: float = 1.0,
        reconnect_delay_max: float = 30.0,
        reconnect_decay: float = 1.5,
        jitter: float = 0.2,
        timeout: float = 20.0,
        ping_interval: float | None = 30.0,
        token: str | None = None,
        max_queue: int = 100,
        auto_retry: bool = False,
        max_retries: int = 3,
    ) -> None:
        self.url = url
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.reconnect_delay_max = reconnect_delay_max
        self.reconnect_decay = reconnect_decay
        self.jitter = jitter
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.token = token
        self.max_queue = max_queue
        self.auto_retry = auto_retry
        self.max_retries = max_retries
        self.connection_state = ClientState.DISCONNECTED
        self.reconnect_count = 0
        self._handlers: dict[str, list[Callable[[Any], Any]]] = {}
        self._queue: deque[tuple[str, _Request | None]] = deque()
        self._ws: Any = None
        self._requests: dict[str, _Request] = {}
        self._by_message: dict[str, _Request] = {}
        self._pongs: dict[int, anyio.Event] = {}
        self._connected = anyio.Event()
        self._first_attempt = anyio.Event()
        self._tg: Any = None
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> "StreamcoreClient":
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._supervise)
        # Entering returns once the first attempt is over: connected, or failed. With
        # reconnection on, a failure leaves the client retrying (sends are queued); with it
        # off, the failure is raised here.
        await self._first_attempt.wait()
        if self.connection_state == ClientState.CLOSED:
            await self._tg.__aexit__(None, None, None)
            raise ConnectionError(f"could not connect to {self.url}")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
        await self._tg.__aexit__(*exc)

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        if self._ws is not None:
            with anyio.move_on_after(2):
                await self._ws.close()
        self._set_state(ClientState.CLOSED)
        self._tg.cancel_scope.cancel()

    @property
    def is_connected(self) -> bool:
        return self.connection_state == ClientState.CONNECTED

    @property
    def queue_size(self) -> int:
        """Messages waiting to be sent once connected."""
        return len(self._queue)

    async def wait_connected(self) -> None:
        """Wait until the client is connected."""
        while not self.is_connected:
            await self._connected.wait()

    def _set_state(self, state: str) -> None:
        self.connection_state = state

    def _delay(self, attempt: int) -> float:
        delay = min(self.reconnect_delay * self.reconnect_decay ** attempt, self.reconnect_delay_max)
        return max(0.0, delay * (1 + random.uniform(-self.jitter, self.jitter)))

    async def _supervise(self) -> None:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        attempts = 0  # reconnection attempts in the current outage
        first = True
        while not self._stopping:
            if not first:
                if attempts >= self.reconnect_attempts:
                    self._set_state(ClientState.CLOSED)
                    await self._emit("reconnect_failed", {"attempts": attempts})
                    return
                delay = self._delay(attempts)
                attempts += 1
                self._set_state(ClientState.RECONNECTING)
                await self._emit("reconnecting", {"attempt": attempts, "delay": delay})
                await anyio.sleep(delay)
            else:
                self._set_state(ClientState.CONNECTING)
            first = False
            try:
                with anyio.fail_after(self.timeout):
                    ws = await connect(self.url, additional_headers=headers, open_timeout=self.timeout,
                                       max_size=None, ping_interval=None)
            except Exception as exc:
                _log.info("client.connect_failed", url=self.url, attempts=attempts, error=type(exc).__name__)
                if not self.reconnect:
                    self._set_state(ClientState.CLOSED)
                    self._first_attempt.set()
                    return
                self._first_attempt.set()
                continue
            if attempts:
                self.reconnect_count += 1
            attempts = 0
            self._ws = ws
            self._set_state(ClientState.CONNECTED)
            self._first_attempt.set()
            self._connected.set()
            await self._emit("connected", {"url": self.url, "reconnects": self.reconnect_count})
            await self._run(ws)
            self._ws = None
            self._connected = anyio.Event()
            if self._stopping:
                return
            self._set_state(ClientState.DISCONNECTED)
            self._fail_streams()
            await self._emit("disconnected", {"code": ws.close_code, "reason": ws.close_reason})
            if not self.reconnect:
                self._set_state(ClientState.CLOSED)
                return

    async def _run(self, ws: Any) -> None:
        async with anyio.create_task_group() as tg:
            if self.ping_interval:
                tg.start_soon(self._pinger)
            # Flush the offline queue in order before anything new goes out.
            try:
                while self._queue:
                    raw, request = self._queue[0]
                    await ws.send(raw)
                    self._queue.popleft()
                    if request is not None:
                        request.sent = True
                async for raw in ws:
                    await self._dispatch(json.loads(raw))
            except Exception:
                pass
            tg.cancel_scope.cancel()

    async def _pinger(self) -> None:
        while True:
            await anyio.sleep(self.ping_interval)  # type: ignore[arg-type]
            with anyio.move_on_after(self.timeout):
                await self.ping()

    def _fail_streams(self) -> None:
        # Requests already sent die with the connection (the server cancelled them);
        # requests still queued go out on the next connection.
        for request in list(self._requests.values()):
            if request.sent:
                request.send.send_nowait(("error", ConnectionLost("the connection dropped before the reply ended")))
                self._forget(request)

    # --- events ---------------------------------------------------------------------------

    def on(self, event: str, handler: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``handler(data)`` for each ``event``; returns a function that unsubscribes.

        Events: every server ``type`` (``AI_MESSAGE_CHUNK``, ``ERROR``, ``FOLLOW_UP_QUESTIONS``,
        ``INDEXING_PROGRESS``...), ``"*"`` for every frame (handler gets the envelope), and
        the lifecycle events ``connected``, ``disconnected``, ``reconnecting``,
        ``reconnect_failed``. Handlers may be coroutine functions.
        """
        self._handlers.setdefault(event, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(event, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    async def _emit(self, event: str, data: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                result = handler(data)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("client.handler_failed", event=event)

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type", "")
        data = frame.get("data") or {}
        meta = frame.get("metadata") or {}
        await self._emit("*", frame)
        await self._emit(kind, data)
        if kind == EventType.PONG:
            event = self._pongs.pop(data.get("timestamp"), None)
            if event is not None:
                event.set()
            return
        request = None
        rid = meta.get("requestId") or (data.get("requestId") if kind == EventType.ERROR else None)
        if rid is not None:
            request = self._requests.get(rid)
        if request is None and "messageId" in data:
            request = self._by_message.get(data["messageId"])
        if request is None or kind in (EventType.AI_THINKING, EventType.FOLLOW_UP_QUESTIONS):
            return  # informational: not an answer that settles the request
        if kind == EventType.AI_MESSAGE_START:
            request.message_id = data["messageId"]
            self._by_message[data["messageId"]] = request
        elif kind == EventType.AI_MESSAGE_CHUNK:
            request.chunks += 1
            request.send.send_nowait((kind, data))
        elif kind == EventType.ERROR:
            error = remote_error(data)
            if self.auto_retry and error.retryable and request.chunks == 0 and request.retries < self.max_retries:
                request.retries += 1
                # A generation that failed still sends its AI_MESSAGE_END: swallow that one.
                request.retrying = request.message_id is not None
                wait = (error.retry_after_ms / 1000) if error.retry_after_ms else self._delay(request.retries - 1)
                self._tg.start_soon(self._resend, request, wait)
                return
            request.send.send_nowait(("error", error))
            if request.message_id is None:  # refused before any generation started
                self._forget(request)
        elif kind == EventType.AI_MESSAGE_END:
            if request.retrying:
                request.retrying = False
                return
            request.send.send_nowait((kind, data))
            if request.frame["type"] != EventType.GENERATE_OBJECTIVE or data.get("stopReason") != "complete":
                self._forget(request)
        else:  # OBJECTIVE_GENERATED, OBJECTIVE_UPDATED, application replies
            request.send.send_nowait((kind, data))
            self._forget(request)

    def _forget(self, request: _Request) -> None:
        self._requests.pop(request.id, None)
        if request.message_id:
            self._by_message.pop(request.message_id, None)

    async def _resend(self, request: _Request, wait: float) -> None:
        await anyio.sleep(wait)
        if request.message_id:
            self._by_message.pop(request.message_id, None)
            request.message_id = None
        await self._send_raw(json.dumps(request.frame), request)

    # --- sending --------------------------------------------------------------------------

    async def send(self, type: str, data: Any = None, *, id: str | None = None) -> str:
        """Send one frame (queued while offline); return its ``id``.

        Raises:
            QueueFull: offline and the queue already holds ``max_queue`` messages.
        """
        frame = {"id": id or new_id("req"), "type": type, "timestamp": now_ms(), "data": {} if data is None else data}
        await self._send_raw(json.dumps(frame))
        return frame["id"]

    async def _send_raw(self, raw: str, request: _Request | None = None) -> None:
        ws = self._ws
        if ws is not None and self.is_connected and not self._queue:
            try:
                await ws.send(raw)
                if request is not None:
                    request.sent = True
                return
            except Exception:
                pass  # dropped just now: queue it for the next connection
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"offline queue is full ({self.max_queue} messages)")
        self._queue.append((raw, request))

    async def _request(self, type: str, data: dict[str, Any]) -> _Request:
        frame = {"id": new_id("req"), "type": type, "timestamp": now_ms(), "data": data}
        request = _Request(frame)
        self._requests[request.id] = request
        try:
            await self._send_raw(json.dumps(frame), request)
        except QueueFull:
            self._requests.pop(request.id, None)
            raise
        return request

    async def send_message(self, content: str, context: Any = None) -> MessageStream:
        """Send USER_MESSAGE; returns the streamed reply."""
        data: dict[str, Any] = {"content": content}
        if context is not None:
            data["context"] = context
        return MessageStream(self, await self._request(EventType.USER_MESSAGE, data))

    async def generate_objective(
        self, prompt: str, *, difficulty: str | None = None, category: str | None = None,
        on_chunk: Callable[[str], Any] | None = None,
    ) -> dict[str, Any]:
        """Send GENERATE_OBJECTIVE and return the generated Objective."""
        data = {"prompt": prompt, **({"difficulty": difficulty} if difficulty else {}),
                **({"category": category} if category else {})}
        stream = MessageStream(self, await self._request(EventType.GENERATE_OBJECTIVE, data))
        async for text in stream:
            if on_chunk is not None:
                on_chunk(text)
        return (await stream.objective())["objective"]

    async def update_objective(self, objective_id: str, updates: dict[str, Any]) -> dict[str, Any]:
        """Send UPDATE_OBJECTIVE and return the updated Objective."""
        request = await self._request(EventType.UPDATE_OBJECTIVE, {"objectiveId": objective_id, "updates": updates})
        kind, data = await request.receive.receive()
        if kind == "error":
            raise data
        return data["objective"]

    async def stop_generation(self, message_id: str | None = None) -> None:
        """Stop one generation (by message id or request id), or all of this connection's."""
        await self.send(EventType.STOP_GENERATION, {"messageId": message_id} if message_id else {})

    async def ping(self) -> float:
        """Send PING and return the round-trip time in seconds."""
        stamp = now_ms()
        while stamp in self._pongs:
            stamp += 1
        event = self._pongs[stamp] = anyio.Event()
        t0 = time.perf_counter()
        await self.send(EventType.PING, {"timestamp": stamp})
        await event.wait()
        return time.perf_counter() - t0
