"""A Python client for the streamcore protocol, with the seed's ``WebSocketService`` features.

Automatic reconnection with exponential backoff and jitter, resumption of the replies that
were streaming when the connection dropped, a bounded queue of messages sent while offline
(flushed in order on reconnect), ``on(event, handler)`` subscriptions returning an
unsubscribe function, lifecycle events, and high-level calls returning typed results::

    async with StreamcoreClient("ws://127.0.0.1:8000/ws") as client:
        reply = await client.send_message("Bonjour !", conversation_id="conv-1")
        async for text in reply:            # the answer's text, each piece once, in order
            print(text, end="", flush=True)
        end = await reply.result()          # MessageEnd(message_id, is_complete, stop_reason, ...)
        print(reply.reasoning_text)         # the model's reasoning, never mixed into the answer
        objective = await client.generate_objective("Apprendre le piano", difficulty="beginner")
        print(objective.title, [step.title for step in objective.steps])

or, without ``async with``, ``client = await StreamcoreClient(url).connect()`` ...
``await client.aclose()`` (both from the same task).

**Resume.** When the connection drops while a reply is streaming, the server keeps the run
going for a grace period (30 s by default). The client reconnects and sends ``RESUME`` with
the last ``seq`` it saw for every reply that had not ended; the reply carries on where it
stopped, nothing missing and nothing repeated (events whose ``seq`` was already seen are
dropped, before any ``on()`` handler). A reply fails with :class:`ConnectionLost` only when
it cannot be resumed: reconnection failed for good or is off, the server answered
``RESUME`` with ``NOT_FOUND`` (the run expired, or the server lost it), or the request was
sent but the connection dropped before its ``AI_MESSAGE_START`` gave it a message id.

Options map onto the seed's: ``reconnectAttempts`` → ``reconnect_attempts``,
``reconnectDelay``/``reconnectDelayMax`` (ms) → ``reconnect_delay``/``reconnect_delay_max``
(seconds), ``reconnectDecay`` → ``reconnect_decay``, ``timeout`` (ms) → ``timeout`` (s),
``pingInterval`` (ms) → ``ping_interval`` (s).

Errors, all under :class:`~streamcore.errors.StreamcoreError`::

    StreamcoreError
    ├── ClientError
    │   ├── QueueFullError        (alias QueueFull) the offline queue is full
    │   ├── ConnectFailed         also a ConnectionError: no connection and reconnect is off
    │   ├── ConnectionLost        also a ConnectionClosedError: a reply that cannot resume
    │   ├── MissingDependency     also a ConfigError and an ImportError: no websockets
    │   └── RemoteError           an ERROR from the server: code, retryable, retry_after_ms
    │       ├── RateLimited, InvalidMessage, AuthFailed, GenerationFailed,
    │       ├── GenerationTimeout, RemoteServerError
    │       └── NotFoundError     also a NotFound
    └── ...

The ``websockets`` library (the ``client`` extra) is imported by :meth:`StreamcoreClient.connect`.
"""

from __future__ import annotations

import inspect
import json
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, Union

import anyio
import msgspec

from .errors import ConfigError, ConnectionClosedError, NotFound, StreamcoreError
from .events import Usage
from .ids import new_id, now_ms
from .log import get_logger
from .objectives import Objective
from .protocol import ErrorCode, EventType

__all__ = [
    "StreamcoreClient",
    "MessageStream",
    "MessageEnd",
    "ClientState",
    "ClientError",
    "QueueFullError",
    "QueueFull",
    "ConnectFailed",
    "ConnectionLost",
    "MissingDependency",
    "RemoteError",
    "RateLimited",
    "InvalidMessage",
    "AuthFailed",
    "GenerationFailed",
    "GenerationTimeout",
    "RemoteServerError",
    "NotFoundError",
    "remote_error",
]

_log = get_logger("streamcore.client")

T = TypeVar("T")

INSTALL_HINT = "pip install 'streamcore-llm[client]'"


class ClientState:
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


# --- errors ---------------------------------------------------------------------------------


class ClientError(StreamcoreError):
    """An error raised by the Python client."""


class QueueFullError(ClientError):
    """The offline queue is full: the message was not queued (nor sent)."""


QueueFull = QueueFullError  # the name of earlier releases


class ConnectFailed(ClientError, ConnectionError):
    """The first connection attempt failed and reconnection is off."""


class MissingDependency(ClientError, ConfigError, ImportError):
    """The ``websockets`` package (the ``client`` extra) is not installed."""


class ConnectionLost(ClientError, ConnectionClosedError):
    """A reply that was streaming could not be resumed after the connection dropped.

    Raised when reconnection failed for good or is off, when the server answered ``RESUME``
    with ``NOT_FOUND`` (then ``__cause__`` is the :class:`NotFoundError`), when the
    request's message id was not known yet, or when the client was closed.

    Attributes:
        code: the WebSocket close code, when the connection closed with one.
        reason: the close reason, if any.
    """

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        ConnectionClosedError.__init__(self, code, reason)
        self.message = message
        self.args = (message,)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,), self.__dict__)


class RemoteError(ClientError):
    """An ``ERROR`` from the server, as a typed exception.

    Attributes:
        code: the wire ``code`` (``RATE_LIMIT``, ``INVALID_MESSAGE``...).
        retryable: the wire ``retryable`` flag.
        retry_after_ms: the wire ``retryAfter`` (milliseconds), or None.
        request_id: the ``requestId`` the server echoed, if any.
        message_id: the message the error belongs to, if any.
        data: the whole ``ERROR`` payload.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(
            data.get("message", ""),
            code=data.get("code", ErrorCode.SERVER_ERROR),
            retryable=data.get("retryable"),
            retry_after_ms=data.get("retryAfter"),
        )
        self.request_id: str | None = data.get("requestId")
        self.message_id: str | None = data.get("messageId")
        self.data = data

    @property
    def retry_after(self) -> float | None:
        """``retryAfter`` in seconds, or None."""
        return None if self.retry_after_ms is None else self.retry_after_ms / 1000


class RateLimited(RemoteError):
    """``RATE_LIMIT``: too many messages or generations; see ``retry_after``."""


class InvalidMessage(RemoteError):
    """``INVALID_MESSAGE``: the server refused a frame (not retryable)."""


class AuthFailed(RemoteError):
    """``AUTH_FAILED``: missing or bad token (the server then closes with 1008)."""


class GenerationFailed(RemoteError):
    """``GENERATION_FAILED``: the provider failed."""


class GenerationTimeout(RemoteError):
    """``TIMEOUT``: the provider did not answer in time."""


class RemoteServerError(RemoteError):
    """``SERVER_ERROR``: anything else that went wrong on the server."""


class NotFoundError(RemoteError, NotFound):
    """``NOT_FOUND``: the message does not exist, expired, or belongs to another user."""


_ERRORS: dict[str, type[RemoteError]] = {
    ErrorCode.RATE_LIMIT: RateLimited,
    ErrorCode.INVALID_MESSAGE: InvalidMessage,
    ErrorCode.AUTH_FAILED: AuthFailed,
    ErrorCode.GENERATION_FAILED: GenerationFailed,
    ErrorCode.TIMEOUT: GenerationTimeout,
    ErrorCode.SERVER_ERROR: RemoteServerError,
    ErrorCode.NOT_FOUND: NotFoundError,
}


def remote_error(data: dict[str, Any]) -> RemoteError:
    """The :class:`RemoteError` subclass for an ``ERROR`` payload's ``code``."""
    return _ERRORS.get(data.get("code", ""), RemoteError)(data)


def _load_websockets() -> Callable[..., Any]:
    try:
        from websockets.asyncio.client import connect
    except ImportError as exc:
        raise MissingDependency(
            f"streamcore's Python client needs the websockets package (>= 14): {INSTALL_HINT}"
        ) from exc
    return connect


# --- typed results --------------------------------------------------------------------------


class MessageEnd(msgspec.Struct, frozen=True):
    """The end of a reply (``AI_MESSAGE_END``), typed.

    Attributes:
        message_id: the reply's message id.
        is_complete: true only when ``stop_reason`` is ``"complete"``.
        stop_reason: ``complete``, ``user_cancelled``, ``length``, ``timeout``, ``error``
            or ``server_shutdown``.
        content: the whole text of the reply.
        usage: token counts, when the server reports them.
    """

    message_id: str
    is_complete: bool
    stop_reason: str
    content: str = ""
    usage: Union[Usage, None] = None


_USAGE_FIELDS = {
    "promptTokens": "prompt_tokens",
    "completionTokens": "completion_tokens",
    "totalTokens": "total_tokens",
    "reasoningTokens": "reasoning_tokens",
}


def _message_end(data: dict[str, Any], text: str) -> MessageEnd:
    usage = data.get("usage")
    content = data.get("content")
    return MessageEnd(
        message_id=data.get("messageId", ""),
        is_complete=bool(data.get("isComplete")),
        stop_reason=data.get("stopReason", "error"),
        content=text if content is None else content,
        usage=Usage(**{_USAGE_FIELDS[k]: v for k, v in usage.items() if k in _USAGE_FIELDS}) if usage else None,
    )


def _convert(value: Any, type: type[T], what: str) -> T:
    try:
        return msgspec.convert(value, type)
    except msgspec.ValidationError as exc:
        raise ClientError(f"the server's {what} does not match {type.__name__}: {exc}") from None


# --- requests and replies -------------------------------------------------------------------


class _Request:
    """A request awaiting its replies; the dispatcher fills it, readers wait on ``changed``."""

    def __init__(self, frame: dict[str, Any], on_reasoning: Callable[[str], Any] | None = None) -> None:
        self.frame = frame
        self.id: str = frame["id"]
        self.on_reasoning = on_reasoning
        self.message_id: str | None = None
        self.model: str | None = None
        self.last_seq: int | None = None  # the highest seq seen for message_id
        self.texts: list[str] = []
        self.reasoning: list[str] = []
        self.end: dict[str, Any] | None = None
        self.reply: dict[str, Any] | None = None  # OBJECTIVE_GENERATED / OBJECTIVE_UPDATED / app reply
        self.error: BaseException | None = None
        self.retries = 0
        self.resume_retries = 0
        self.resume_id: str | None = None
        self.sent = False
        self.retrying = False  # the failed generation's AI_MESSAGE_END is still to come: swallow it
        self.resuming = False  # RESUME it on the next connection
        self.done = False
        self.changed = anyio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.notify()


class MessageStream:
    """A streamed reply: iterate for the answer's text, then ``await result()``.

    - ``async for text in reply`` yields each piece of the answer once, in order, across
      reconnections; breaking out and iterating again continues where it stopped.
    - :meth:`reasoning` yields the model's reasoning pieces (``AI_REASONING_CHUNK``) the
      same way, and :attr:`reasoning_text` holds what came so far; reasoning is never part
      of the answer's text.
    - :meth:`result` returns the :class:`MessageEnd`.

    Iteration and :meth:`result` raise a :class:`RemoteError` subclass on a server error
    and :class:`ConnectionLost` when the reply could not be resumed after a drop.
    """

    def __init__(self, client: StreamcoreClient, request: _Request) -> None:
        self._client = client
        self._request = request
        self._read = {"text": 0, "reasoning": 0}  # pieces already yielded, per kind

    @property
    def request_id(self) -> str:
        return self._request.id

    @property
    def message_id(self) -> str | None:
        """The message id, once ``AI_MESSAGE_START`` arrived."""
        return self._request.message_id

    @property
    def model(self) -> str | None:
        """The model ``AI_MESSAGE_START`` named, if any."""
        return self._request.model

    @property
    def text(self) -> str:
        """The answer's text received so far."""
        return "".join(self._request.texts)

    @property
    def reasoning_text(self) -> str:
        """The reasoning text received so far ("" when the model exposes none)."""
        return "".join(self._request.reasoning)

    @property
    def done(self) -> bool:
        """True once the reply ended (or failed)."""
        return self._request.end is not None or self._request.error is not None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces(self._request.texts, "text")

    def reasoning(self) -> AsyncIterator[str]:
        """Iterate over the reasoning pieces until the reply ends.

        To show reasoning and answer live from one task, use ``on_reasoning`` of
        :meth:`StreamcoreClient.send_message` instead, or iterate this in another task.
        """
        return self._pieces(self._request.reasoning, "reasoning")

    async def _pieces(self, pieces: list[str], kind: str) -> AsyncIterator[str]:
        request, read = self._request, self._read
        while True:
            while read[kind] < len(pieces):
                read[kind] += 1
                yield pieces[read[kind] - 1]
            if request.error is not None:
                raise request.error
            if request.end is not None:
                return
            await request.changed.wait()

    async def _wait(self, ready: Callable[[], bool]) -> None:
        request = self._request
        while not ready():
            if request.error is not None:
                raise request.error
            await request.changed.wait()

    async def result(self) -> MessageEnd:
        """Wait for the end of the reply and return it (the text need not be read first)."""
        await self._wait(lambda: self._request.end is not None)
        if self._request.error is not None:
            raise self._request.error
        return _message_end(self._request.end, self.text)  # type: ignore[arg-type]

    async def objective(self, objective_type: type[T] = Objective) -> T:  # type: ignore[assignment]
        """For GENERATE_OBJECTIVE: wait for ``OBJECTIVE_GENERATED``, return its objective.

        Args:
            objective_type: what to convert the wire objective into (an application with
                its own schema passes its own msgspec Struct, or ``dict``).
        """
        end = await self.result()
        if end.stop_reason != "complete":
            raise GenerationFailed({"code": ErrorCode.GENERATION_FAILED, "message": f"stopped: {end.stop_reason}",
                                    "retryable": True, "messageId": end.message_id})
        await self._wait(lambda: self._request.reply is not None)
        return _convert(self._request.reply["objective"], objective_type, "objective")  # type: ignore[index]

    @property
    def generation_time_ms(self) -> int | None:
        """``OBJECTIVE_GENERATED.generationTime``, once it arrived."""
        reply = self._request.reply
        return None if reply is None else reply.get("generationTime")

    async def stop(self) -> None:
        """Ask the server to stop this generation (it ends with ``user_cancelled``)."""
        await self._client.stop_generation(self._request.message_id or self._request.id)


# --- the client -----------------------------------------------------------------------------


class StreamcoreClient:
    """Client of a streamcore server.

    Use ``async with StreamcoreClient(url) as client:``, or ``await client.connect()`` then
    ``await client.aclose()`` from the same task (the client runs its connection in a task
    group opened by ``connect()`` and closed by ``aclose()``).

    Args:
        url: ``ws://`` or ``wss://`` URL of the server's WebSocket endpoint.
        reconnect: reconnect automatically after a drop (and resume streaming replies).
        reconnect_attempts: consecutive failed attempts before giving up (state ``closed``).
        reconnect_delay: first delay between attempts, in seconds.
        reconnect_delay_max: largest delay, in seconds.
        reconnect_decay: factor applied to the delay after each failed attempt.
        jitter: random fraction (0..1) added to or removed from each delay, so that many
            clients do not reconnect in lockstep.
        timeout: seconds to open a connection.
        ping_interval: seconds between application PINGs while connected (None: off).
        token: a JWT, sent as ``Authorization: Bearer``; read at every connection attempt,
            so assigning a fresh one to ``client.token`` is used from the next reconnect.
        max_queue: messages kept while offline; past it, :class:`QueueFullError`.
        auto_retry: resend a request after a retryable ERROR received before any chunk,
            waiting ``retryAfter`` (or the reconnect delay), up to ``max_retries`` times.
        max_retries: see ``auto_retry``; also bounds the retries of a refused ``RESUME``.
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
        self._resumes: dict[str, _Request] = {}  # RESUME frame id -> request
        #: PING timestamp -> woken by its PONG (which removes the entry), or by a drop or
        #: a close (which leaves it: that ping() raises).
        self._pongs: dict[int, anyio.Event] = {}
        self._connected = anyio.Event()
        self._first_attempt = anyio.Event()
        self._tg: Any = None
        self._supervising = False
        self._stopping = False
        self._connect_error: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> StreamcoreClient:
        """Start connecting; return once the first attempt is over.

        With ``reconnect`` on, a failed first attempt leaves the client retrying in the
        background (sends are queued meanwhile). Calling it again after the client gave up
        (state ``closed``) starts over; while connected or connecting it does nothing.

        Raises:
            MissingDependency: the ``websockets`` package is not installed.
            ConnectFailed: the attempt failed and ``reconnect`` is off.
        """
        ws_connect = _load_websockets()
        if self._supervising:
            await self._first_attempt.wait()
            return self
        created = self._tg is None
        if created:
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
        self._stopping = False
        self._connect_error = None
        self._first_attempt = anyio.Event()
        self._supervising = True
        self._tg.start_soon(self._supervise, ws_connect)
        try:
            await self._first_attempt.wait()
        except BaseException:
            if created:
                await self._shutdown()
            raise
        if self.connection_state == ClientState.CLOSED:
            cause = self._connect_error
            await self._shutdown()
            raise ConnectFailed(f"could not connect to {self.url}"
                                + (f": {type(cause).__name__}: {cause}" if cause else "")) from cause
        return self

    async def aclose(self) -> None:
        """Close the connection and stop reconnecting.

        Replies still waiting fail with :class:`ConnectionLost`. Idempotent.
        """
        await self._shutdown()

    close = aclose  # the name of earlier releases

    async def __aenter__(self) -> StreamcoreClient:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        # The body's exception is not handed to the task group, which would wrap it in an
        # ExceptionGroup: it propagates as it is.
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with anyio.move_on_after(2, shield=True):
                await ws.close()
        self._set_state(ClientState.CLOSED)
        self._fail_all("the client was closed")
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

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

    async def _supervise(self, ws_connect: Callable[..., Any]) -> None:
        # Never lets an exception out: a failing child would cancel the task group, and with
        # it the caller's own task, hiding the error behind a bare CancelledError.
        try:
            await self._connection_loop(ws_connect)
        except Exception as exc:
            _log.exception("client.failed", url=self.url)
            self._connect_error = exc
            self._set_state(ClientState.CLOSED)
            self._fail_all(f"the client failed: {type(exc).__name__}: {exc}")
        finally:
            self._supervising = False
            self._first_attempt.set()

    async def _connection_loop(self, ws_connect: Callable[..., Any]) -> None:
        attempts = 0  # reconnection attempts in the current outage
        first = True
        while not self._stopping:
            if not first:
                if attempts >= self.reconnect_attempts:
                    self._set_state(ClientState.CLOSED)
                    self._fail_all(f"could not reconnect to {self.url} after {attempts} attempts")
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
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            if attempts:
                # Reported so the server can count reconnections (docs/SPEC.md, Connection).
                headers["X-Streamcore-Reconnect"] = str(self.reconnect_count + 1)
            try:
                with anyio.fail_after(self.timeout):
                    ws = await ws_connect(self.url, additional_headers=headers, open_timeout=self.timeout,
                                          max_size=None, ping_interval=None)
            except Exception as exc:
                _log.info("client.connect_failed", url=self.url, attempts=attempts, error=type(exc).__name__)
                self._connect_error = exc
                if not self.reconnect:
                    self._set_state(ClientState.CLOSED)
                    self._fail_all(f"could not connect to {self.url}")
                    return
                self._first_attempt.set()
                continue
            if attempts:
                self.reconnect_count += 1
            attempts = 0
            self._connect_error = None
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
            self._dropped(ws.close_code, ws.close_reason or "")
            await self._emit("disconnected", {"code": ws.close_code, "reason": ws.close_reason})
            if not self.reconnect:
                self._set_state(ClientState.CLOSED)
                return

    async def _run(self, ws: Any) -> None:
        async with anyio.create_task_group() as tg:
            if self.ping_interval:
                tg.start_soon(self._pinger)
            try:
                # Resume the replies the last connection left unfinished, then flush the
                # offline queue in order, before anything new goes out.
                for unfinished in [r for r in self._requests.values() if r.resuming]:
                    unfinished.resuming = False
                    await ws.send(self._resume_frame(unfinished))
                while self._queue:
                    raw, request = self._queue[0]
                    await ws.send(raw)
                    self._queue.popleft()
                    if request is not None:
                        request.sent = True
                async for raw in ws:
                    try:
                        frame = json.loads(raw)
                    except ValueError:
                        _log.warning("client.bad_frame", url=self.url)
                        continue
                    await self._dispatch(frame)
            except Exception as exc:  # the connection broke; the supervisor reconnects
                _log.info("client.connection_ended", url=self.url, error=type(exc).__name__)
            tg.cancel_scope.cancel()

    async def _pinger(self) -> None:
        while True:
            await anyio.sleep(self.ping_interval)  # type: ignore[arg-type]
            with anyio.move_on_after(self.timeout):
                try:
                    await self.ping()
                except QueueFullError:
                    pass

    def _lose_pings(self) -> None:
        """Pings waiting for a PONG that cannot come: their ``ping()`` raises ConnectionLost."""
        for event in self._pongs.values():
            event.set()

    def _dropped(self, code: int | None, reason: str) -> None:
        # Replies already under way are resumed on the next connection; requests still
        # queued go out then. What cannot be resumed fails now.
        self._lose_pings()
        for request in list(self._requests.values()):
            if not request.sent:
                continue
            if self.reconnect and request.message_id is not None:
                request.resuming = True
                continue
            why = ("the connection dropped before the reply started" if request.message_id is None
                   else "the connection dropped and reconnection is off")
            self._fail(request, ConnectionLost(why, code=code, reason=reason))

    def _fail_all(self, why: str) -> None:
        self._lose_pings()
        for request in list(self._requests.values()):
            self._fail(request, ConnectionLost(why))
        # A request whose caller got an error must never go out later.
        self._queue = deque(item for item in self._queue if item[1] is None)

    def _fail(self, request: _Request, error: BaseException) -> None:
        request.fail(error)
        self._forget(request)

    def _resume_frame(self, request: _Request) -> str:
        rid = new_id("req")
        if request.resume_id is not None:
            self._resumes.pop(request.resume_id, None)
        request.resume_id = rid
        self._resumes[rid] = request
        data: dict[str, Any] = {"messageId": request.message_id}
        if request.last_seq is not None:
            data["lastSeq"] = request.last_seq
        return json.dumps({"id": rid, "type": EventType.RESUME, "timestamp": now_ms(), "data": data})

    async def _resume_later(self, request: _Request, wait: float) -> None:
        await anyio.sleep(wait)
        ws = self._ws
        if request.done or ws is None or not self.is_connected:
            return  # finished, or offline: the next connection resumes it
        try:
            await ws.send(self._resume_frame(request))
        except Exception:
            pass  # dropped just now: the next connection resumes it

    # --- events ---------------------------------------------------------------------------

    def on(self, event: str, handler: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``handler(data)`` for each ``event``; returns a function that unsubscribes.

        Events: every server ``type`` (``AI_MESSAGE_CHUNK``, ``AI_REASONING_CHUNK``,
        ``ERROR``, ``FOLLOW_UP_QUESTIONS``, ``INDEXING_PROGRESS``...), ``"*"`` for every
        frame (handler gets the envelope), and the lifecycle events ``connected``,
        ``disconnected``, ``reconnecting``, ``reconnect_failed``. Handlers may be coroutine
        functions. Events a resume replays that were already seen are not repeated.
        """
        self._handlers.setdefault(event, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(event, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    async def _emit(self, event: str, data: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            await _call(handler, data, event)

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type", "")
        data: Any = frame.get("data") or {}  # JSON from the server
        meta: Any = frame.get("metadata") or {}
        if kind == EventType.PONG:
            await self._emit("*", frame)
            await self._emit(kind, data)
            event = self._pongs.pop(data.get("timestamp"), None)
            if event is not None:
                event.set()
            return
        rid = meta.get("requestId") or (data.get("requestId") if kind == EventType.ERROR else None)
        # A refused RESUME is an ERROR without a seq; one with a seq is the resumed run's
        # own failure (it echoes the RESUME's id too) and goes to its request below.
        if kind == EventType.ERROR and rid is not None and rid in self._resumes and data.get("seq") is None:
            await self._emit("*", frame)
            await self._emit(kind, data)
            self._resume_refused(self._resumes.pop(rid), remote_error(data))
            return
        request = None
        if rid is not None:
            request = self._requests.get(rid) or self._resumes.get(rid)
        mid = data.get("messageId")
        if request is None and mid is not None:
            request = self._by_message.get(mid)
        if request is not None and mid is not None and (
            mid == request.message_id or kind == EventType.AI_MESSAGE_START
        ):
            seq = data.get("seq")
            if isinstance(seq, int):
                if request.last_seq is not None and mid == request.message_id and seq <= request.last_seq:
                    return  # already seen: replayed by a RESUME
                request.last_seq = seq
        await self._emit("*", frame)
        await self._emit(kind, data)
        if request is None or request.done or kind in (EventType.AI_THINKING, EventType.FOLLOW_UP_QUESTIONS):
            return  # informational: not an answer that settles the request
        if kind == EventType.AI_MESSAGE_START:
            if request.message_id is not None and request.message_id != mid:
                self._by_message.pop(request.message_id, None)
            request.message_id = mid
            request.model = data.get("model")
            self._by_message[mid] = request
        elif kind == EventType.AI_MESSAGE_CHUNK:
            request.texts.append(data["content"])
            request.notify()
        elif kind == EventType.AI_REASONING_CHUNK:
            request.reasoning.append(data["content"])
            request.notify()
            if request.on_reasoning is not None:
                await _call(request.on_reasoning, data["content"], "on_reasoning")
        elif kind == EventType.ERROR:
            error = remote_error(data)
            if (self.auto_retry and error.retryable and not request.texts and not request.reasoning
                    and request.retries < self.max_retries):
                request.retries += 1
                # A generation that failed still sends its AI_MESSAGE_END: swallow that one.
                request.retrying = request.message_id is not None
                request.sent = False  # it goes out again: nothing to resume meanwhile
                wait = error.retry_after if error.retry_after is not None else self._delay(request.retries - 1)
                self._tg.start_soon(self._resend, request, wait)
                return
            request.fail(error)
            if request.message_id is None or request.end is not None:  # no AI_MESSAGE_END to come
                self._forget(request)
        elif kind == EventType.AI_MESSAGE_END:
            if request.retrying:
                request.retrying = False
                return
            request.end = data
            request.notify()
            if request.frame["type"] != EventType.GENERATE_OBJECTIVE or data.get("stopReason") != "complete":
                self._forget(request)
        else:  # OBJECTIVE_GENERATED, OBJECTIVE_UPDATED, application replies
            request.reply = data
            request.notify()
            self._forget(request)

    def _resume_refused(self, request: _Request, error: RemoteError) -> None:
        if request.done:
            return
        if error.retryable and request.resume_retries < self.max_retries:  # e.g. RATE_LIMIT
            request.resume_retries += 1
            wait = error.retry_after if error.retry_after is not None else self._delay(request.resume_retries - 1)
            self._tg.start_soon(self._resume_later, request, wait)
            return
        lost = ConnectionLost(f"the reply could not be resumed: {error.code}: {error.message}")
        lost.__cause__ = error
        self._fail(request, lost)

    def _forget(self, request: _Request) -> None:
        request.done = True
        self._requests.pop(request.id, None)
        if request.message_id and self._by_message.get(request.message_id) is request:
            del self._by_message[request.message_id]
        if request.resume_id is not None:
            self._resumes.pop(request.resume_id, None)

    async def _resend(self, request: _Request, wait: float) -> None:
        await anyio.sleep(wait)
        if request.done:
            return
        if request.message_id:
            if self._by_message.get(request.message_id) is request:
                del self._by_message[request.message_id]
            request.message_id = None
            request.last_seq = None
        try:
            await self._send_raw(json.dumps(request.frame), request)
        except QueueFullError as exc:  # offline meanwhile, and the queue is full
            self._fail(request, exc)

    # --- sending --------------------------------------------------------------------------

    async def send(self, type: str, data: Any = None, *, id: str | None = None) -> str:
        """Send one frame (queued while offline); return its ``id``.

        Raises:
            QueueFullError: offline and the queue already holds ``max_queue`` messages.
        """
        frame_id = id or new_id("req")
        frame = {"id": frame_id, "type": type, "timestamp": now_ms(), "data": {} if data is None else data}
        await self._send_raw(json.dumps(frame))
        return frame_id

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
            raise QueueFullError(f"offline queue is full ({self.max_queue} messages)")
        self._queue.append((raw, request))

    async def _request(
        self, type: str, data: dict[str, Any], on_reasoning: Callable[[str], Any] | None = None
    ) -> _Request:
        frame = {"id": new_id("req"), "type": type, "timestamp": now_ms(), "data": data}
        request = _Request(frame, on_reasoning)
        self._requests[request.id] = request
        try:
            await self._send_raw(json.dumps(frame), request)
        except QueueFullError:
            self._requests.pop(request.id, None)
            raise
        return request

    async def send_message(
        self, content: str, *, context: Any = None, conversation_id: str | None = None,
        on_reasoning: Callable[[str], Any] | None = None,
    ) -> MessageStream:
        """Send USER_MESSAGE; returns the streamed reply.

        Args:
            content: the user's message.
            context: application data about the user's situation (any JSON value).
            conversation_id: the conversation the reply continues (history kept per user and
                conversation, across reconnects); None: the connection's own conversation.
            on_reasoning: called with each reasoning piece as it arrives (may be async).

        Raises:
            QueueFullError: offline and the queue is full.
        """
        data: dict[str, Any] = {"content": content}
        if context is not None:
            data["context"] = context
        if conversation_id is not None:
            data["conversationId"] = conversation_id
        return MessageStream(self, await self._request(EventType.USER_MESSAGE, data, on_reasoning))

    async def generate_objective(
        self, prompt: str, *, difficulty: str | None = None, category: str | None = None,
        on_chunk: Callable[[str], Any] | None = None, objective_type: type[T] = Objective,  # type: ignore[assignment]
    ) -> T:
        """Send GENERATE_OBJECTIVE and return the generated objective.

        Args:
            on_chunk: called with each piece of the model's text as it streams.
            objective_type: the type the wire objective is converted to with
                ``msgspec.convert``: :class:`~streamcore.objectives.Objective` (the spec's
                default schema), an application's own Struct, or ``dict``.
        """
        data = {"prompt": prompt, **({"difficulty": difficulty} if difficulty else {}),
                **({"category": category} if category else {})}
        stream = MessageStream(self, await self._request(EventType.GENERATE_OBJECTIVE, data))
        async for text in stream:
            if on_chunk is not None:
                on_chunk(text)
        return await stream.objective(objective_type)

    async def update_objective(
        self, objective_id: str, updates: dict[str, Any], *, objective_type: type[T] = Objective,  # type: ignore[assignment]
    ) -> T:
        """Send UPDATE_OBJECTIVE and return the updated objective (see ``generate_objective``)."""
        request = await self._request(EventType.UPDATE_OBJECTIVE, {"objectiveId": objective_id, "updates": updates})
        while request.reply is None:
            if request.error is not None:
                raise request.error
            await request.changed.wait()
        return _convert(request.reply["objective"], objective_type, "objective")

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
        try:
            await self.send(EventType.PING, {"timestamp": stamp})
            await event.wait()
            if stamp in self._pongs:  # woken by _lose_pings: the PONG removes its entry
                raise ConnectionLost("the connection dropped before the PONG came")
        finally:
            self._pongs.pop(stamp, None)
        return time.perf_counter() - t0


async def _call(handler: Callable[[Any], Any], data: Any, event: str) -> None:
    try:
        result = handler(data)
        if inspect.isawaitable(result):
            await result
    except Exception:
        _log.exception("client.handler_failed", client_event=event)
