"""One client connection: the thin driver between a transport and the engine.

A :class:`Session` reads frames, decodes them with its dialect, and dispatches each
command through the engine's handler registry (built-ins and applications alike). It
writes through one writer task draining its :class:`~streamcore.outbox.Outbox`. It does
not run generations: runs belong to the engine and this session reads them through
subscriptions; when the connection goes, its subscriptions go, and the runs live on for
their grace period.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._tasks import TaskScope, TaskSet, cancel_scope, running_loop
from .errors import ConnectionClosed, ProtocolError, StreamcoreError
from .log import StdlibBoundLogger, get_logger
from .outbox import Outbox, max_chunk_text
from .protocol import ErrorCode, ErrorData, EventType
from .transport import CloseReason

if TYPE_CHECKING:
    from .dialect import Dialect
    from .engine import Engine
    from .limits import RateBucket
    from .provider import GenerationRequest
    from .run import Run, Subscription
    from .transport import Connection, ConnectionInfo

__all__ = ["Session"]

_log = get_logger("streamcore")

#: request ids remembered per connection, for STOP_GENERATION by the client's frame id.
_MAX_REQUEST_IDS = 256


#: bytes per ``send_many`` call: progress (``Outbox.sent_bytes``, read by the slow-client
#: check) is counted per call, so a batch stays about the size of a socket's write buffer.
_BATCH_BYTES = 32 * 1024

#: ``async with`` this instead of a task group on asyncio: stateless, so one for all.
_NO_GROUP = contextlib.nullcontext()


#: pending bytes, in ``[limits] send_buffer_bytes``, past which a frame no log can replay
#: is dropped and the connection closed as too slow (see :meth:`Session.queue`).
UNREPLAYABLE_FACTOR = 4


async def _send_batches(frames: list[bytes], send: Any, send_many: Any, outbox: Outbox) -> None:
    """Send ``frames`` through ``send_many`` in batches of about ``_BATCH_BYTES``."""
    i, n = 0, len(frames)
    while i < n:
        j, size = i + 1, len(frames[i])
        while j < n and size + len(frames[j]) <= _BATCH_BYTES:
            size += len(frames[j])
            j += 1
        if j - i == 1:
            await send(frames[i])
        else:
            await send_many(frames[i:j])
        outbox.sent_bytes += size
        i = j


class Session:
    """The engine's side of one connection.

    Applications meet it in handlers: ``session.send(type, data)``, ``session.user_id``,
    ``session.id``, ``session.generate(request)``.

    Attributes:
        id: the connection's id, random (it is published in every frame's metadata).
        user_id: the authenticated subject, or None.
        owner: whose runs, objectives and conversations this connection reaches:
            ``u:<user id>``, or ``a:<connection id>`` when anonymous. The two keyspaces
            never meet, whatever a verifier returns as subject.
    """

    def __init__(self, engine: Engine, conn: Connection, info: ConnectionInfo, codec: Dialect) -> None:
        self.engine = engine
        self.conn = conn
        self.info = info
        self.codec = codec
        self.id = "session-" + secrets.token_urlsafe(12)
        self.user_id = info.user_id
        self.owner = f"u:{self.user_id}" if self.user_id else f"a:{self.id}"
        cfg = engine.config
        self.limits = cfg.limits
        self.metadata: dict[str, str] | None = None
        if cfg.features.metadata:
            self.metadata = {"sessionId": self.id}
            if self.user_id:
                self.metadata["userId"] = self.user_id
        #: the largest frame this connection is sent (``[limits] max_frame_bytes``).
        self.max_frame_bytes = self.limits.max_frame_bytes or self.limits.max_message_bytes
        self.outbox = Outbox(self.limits.send_buffer_bytes, max_text=max_chunk_text(self.max_frame_bytes))
        self.outbox.send_now = getattr(conn, "send_now", None)
        #: the runs this connection reads, by message id.
        self.subscriptions: dict[str, Subscription] = {}
        #: client frame id -> message id of the runs this connection started.
        self.requests: dict[str, str] = {}
        self.closed = False
        # While run() serves: the reader's cancel scope (cancelled to stop serving) and the
        # connection's background tasks (handlers, closes, resume polling), plain asyncio
        # tasks (see _tasks.py) or, on other backends, tasks of a task group.
        self._scope: anyio.CancelScope | TaskScope | None = None
        self._tasks: TaskSet | None = None
        # The writer: a plain task on asyncio, else a task of the task group.
        self._writer_task: Any = None
        self._writer_scope: anyio.CancelScope | None = None
        self._last_frame = time.monotonic()
        # The sweeper's view of this connection (see check()).
        self._last_sent = 0
        self._stalled_since: float | None = None
        self._closing_for: str | None = None
        self._frames_in = 0
        self._handlers_running = 0
        self._rejected = 0
        self._bucket: RateBucket = engine.rate_bucket(self)
        self._bound_log: StdlibBoundLogger | None = None

    @property
    def log(self) -> StdlibBoundLogger:
        """This connection's logger, bound to its ids on first use (most never log)."""
        log = self._bound_log
        if log is None:
            log = self._bound_log = _log.bind(session_id=self.id, user_id=self.user_id, client=self.info.client)
        return log

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, commands: Iterable[Any] = ()) -> None:
        """Serve the connection until it closes; never raises for anything the client did.

        Args:
            commands: decoded commands to handle first (an SSE request's own command).
        """
        t0 = time.perf_counter()
        if _log.isEnabledFor(logging.INFO):
            self.log.info("connection.open", path=self.info.path, subprotocol=self.info.subprotocol)
        self.engine.telemetry.on_connection_open(self)
        close_code: int | None = None
        try:
            # A task group only where TaskSet needs one (not on asyncio).
            loop = running_loop()
            group: Any = _NO_GROUP if loop is not None else anyio.create_task_group()
            async with group as tg:
                tasks = self._tasks = TaskSet(tg)
                # Cancelled by _stop(); a TaskScope on asyncio (see _tasks.py): six objects
                # fewer per connection than anyio's.
                with cancel_scope(loop) as self._scope:
                    if loop is not None:  # a plain task (see _tasks.py), cancelled below
                        self._writer_task = loop.create_task(self._write_loop())
                    else:
                        tg.start_soon(self._write_loop_scoped)
                    try:
                        for command in commands:
                            self.dispatch(command)
                        await self._read_loop()
                    except ConnectionClosed as exc:
                        close_code = exc.code
                    finally:
                        self.closed = True
                        self._cancel_writer()
                        tasks.cancel()
                        if tg is not None:
                            tg.cancel_scope.cancel()
                        else:  # what they hold is released before the connection is gone
                            await tasks.wait(self.engine.config.runs.cleanup_timeout)
        finally:
            self.closed = True
            self._cancel_writer()  # however run() ends, the writer ends with it
            # Drop the references from this session to its tasks: their tracebacks refer
            # back to this session, and a cycle waits for a full garbage collection (which
            # walks every live object of the server).
            self._writer_task = self._writer_scope = self._scope = self._tasks = None
            self._detach_all()
            self.engine.telemetry.on_connection_close(self, close_code)
            if _log.isEnabledFor(logging.INFO):
                self.log.info(
                    "connection.close",
                    code=close_code,
                    frames_in=self._frames_in,
                    frames_out=self.outbox.sent,
                    duration_ms=round((time.perf_counter() - t0) * 1000, 1),
                )

    def _stop(self) -> None:
        """Stop serving: the reader and every background task of this connection."""
        if self._scope is not None:
            self._scope.cancel()

    def _detach_all(self) -> None:
        for sub in list(self.subscriptions.values()):
            sub.closed = True
            self.engine.unsubscribe(sub)
        self.subscriptions.clear()

    def dispatch(self, frame: Any) -> None:
        """Handle one decoded command as if the client had sent it (errors become ERROR).

        Send-only drivers (SSE) use it for the command their request carries.
        """
        try:
            handler, is_async = self.engine.handlers[frame.__struct_config__.tag]
            if is_async:
                self._spawn_handler(handler, frame)
            else:
                handler(self, frame)
        except ProtocolError as exc:
            self.send_error(exc, exc.request_id or frame.id)
        except ConnectionClosed:
            raise
        except StreamcoreError as exc:
            self.send_error(exc, frame.id)
        except Exception:
            # A bug in an application handler must not take the connection down.
            self.log.exception("handler.failed")
            self.send_error(StreamcoreError("internal server error"), frame.id)

    async def _read_loop(self) -> None:
        # No bound methods kept in locals: a client frame is rare next to chunks, and each
        # would be one more object per connection for every garbage collection to walk.
        while True:
            raw = await self.conn.receive()
            self._last_frame = time.monotonic()
            self._frames_in += 1
            try:
                # Every frame costs a token, decodable or not: a flood of bad frames or
                # of PINGs is limited like a flood of messages.
                # int, or an awaitable of it: mypy does not narrow on ``__class__``.
                wait: Any = self._bucket.take()
                if wait.__class__ is not int:  # a shared limiter answers asynchronously
                    wait = await wait
                if wait:
                    self._over_limit(wait, raw)
                    # A flooding client's frames are already buffered, so receive() may
                    # never suspend: yield, or one flood starves every other connection.
                    await anyio.lowlevel.checkpoint()
                    continue
                self._rejected = 0
                frame = self.codec.decode(raw)
            except ProtocolError as exc:  # a frame that cannot be decoded
                self.send_error(exc, exc.request_id)
                continue
            self.dispatch(frame)
            # Not kept while the next frame is awaited (minutes, often): the decoded
            # frame is two tracked objects per connection for every garbage collection.
            del frame, raw

    def _over_limit(self, wait: int, raw: str | bytes) -> None:
        """A frame over the rate limit: one RATE_LIMIT reply per burst, close if it goes on."""
        self._rejected += 1
        self.engine.telemetry.on_rejected("rate")
        if self._rejected == 1:
            # Only the id is read (clients match the refusal to their request to retry).
            request_id = self.codec.request_id(raw) if len(raw) <= self.codec.max_message_bytes else None
            self.send_error(
                StreamcoreError("too many messages; slow down", code=ErrorCode.RATE_LIMIT, retry_after_ms=wait),
                request_id,
            )
        if self._rejected == self.limits.flood_close_after:  # once: the close is under way
            self.log.warning("connection.flood", rejected=self._rejected)
            self.engine.telemetry.on_rejected("flood")
            assert self._tasks is not None  # frames are read inside run()
            self._tasks.start_soon(self.close, CloseReason.POLICY, "too many messages")

    def _spawn_handler(self, handler: Any, frame: Any) -> None:
        # Slow handlers (a store, an application's I/O) run beside the reader, so STOP and
        # PING are answered at once; their number per connection is bounded.
        if self._handlers_running >= self.limits.max_pending_handlers:
            self.engine.telemetry.on_rejected("handlers")
            raise StreamcoreError(
                "too many requests in progress on this connection",
                code=ErrorCode.RATE_LIMIT,
                retry_after_ms=self.limits.retry_after_ms,
            )
        self._handlers_running += 1
        assert self._tasks is not None  # handlers are dispatched inside run()
        self._tasks.start_soon(self._run_handler, handler, frame)

    async def _run_handler(self, handler: Any, frame: Any) -> None:
        try:
            await handler(self, frame)
        except ProtocolError as exc:
            self.send_error(exc, exc.request_id or frame.id)
        except StreamcoreError as exc:
            self.send_error(exc, frame.id)
        except Exception:
            self.log.exception("handler.failed")
            self.send_error(StreamcoreError("internal server error"), frame.id)
        finally:
            self._handlers_running -= 1

    async def _write_loop_scoped(self) -> None:
        with anyio.CancelScope() as self._writer_scope:
            await self._write_loop()

    def _cancel_writer(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
        elif self._writer_scope is not None:
            self._writer_scope.cancel()

    async def _write_loop(self) -> None:
        outbox = self.outbox
        send = self.conn.send
        # A transport that can write several frames at once (one system call for a batch
        # of pending chunks; see streamcore.transport).
        batches = hasattr(self.conn, "send_many")
        try:
            while True:
                await outbox.wait_ready()
                if outbox.inflight is not None:  # a send a run started: it goes first
                    rest, outbox.inflight = outbox.inflight, None
                    outbox.sending = True
                    await rest
                    outbox.sending = False
                if outbox.broken:
                    break
                frames = outbox.take()
                outbox.sending = True
                if not batches or len(frames) == 1:
                    for frame in frames:
                        await send(frame)
                        outbox.sent_bytes += len(frame)
                else:
                    await _send_batches(frames, send, self.conn.send_many, outbox)  # type: ignore[attr-defined]
                outbox.sent += len(frames)
                outbox.sending = False
                frames, frame = [], b""  # the batch is not kept while waiting
        except ConnectionClosed:
            pass
        except Exception:  # a transport bug: close this connection, nothing else
            self.log.exception("send.failed")
        # The connection cannot be written to any more: stop reading it too.
        self.closed = True
        self._stop()

    def check(self, now: float) -> None:
        """Close an idle connection, or a client that stopped reading (the engine's sweeper
        calls this every tick for every connection: one timer for all, not one each)."""
        if self._closing_for is not None or self._tasks is None:
            return
        lim = self.limits
        if lim.idle_timeout and now - self._last_frame > lim.idle_timeout and not self._streaming():
            self._closing_for = "idle"
            self._tasks.start_soon(self._close_idle)
            return
        # Progress is counted in bytes actually written, frame by frame: a slow but steady
        # reader is never taken for a dead one.
        outbox = self.outbox
        if outbox.sending and outbox.sent_bytes == self._last_sent:
            self._stalled_since = self._stalled_since or now
            if now - self._stalled_since > lim.slow_client_timeout:
                self._close_slow_soon()
        else:
            self._stalled_since = None
        self._last_sent = outbox.sent_bytes

    async def _close_idle(self) -> None:
        self.log.info("connection.idle", idle_timeout=self.limits.idle_timeout)
        await self.close(CloseReason.GOING_AWAY, "idle timeout")

    def _close_slow_soon(self) -> None:
        """Close this client as too slow (1008), from a task, unless a close is under way."""
        if self._closing_for is None and self._tasks is not None:
            self._closing_for = "slow"
            self._tasks.start_soon(self._close_slow)

    async def _close_slow(self) -> None:
        self.log.warning(
            "connection.slow_client", timeout=self.limits.slow_client_timeout, pending_bytes=self.outbox.pending
        )
        # The writer is blocked in a send that will never finish and may hold the
        # transport's send lock: cancel it, then close with a bound (the close frame itself
        # may not fit in a full buffer).
        self._cancel_writer()
        with anyio.move_on_after(1.0):
            await self.close(CloseReason.POLICY, "client too slow to read")
        self._stop()

    def _streaming(self) -> bool:
        return any(not sub.source.sealed for sub in self.subscriptions.values())

    async def close(self, code: int = CloseReason.NORMAL, reason: str = "") -> None:
        """Close the connection, within ``[runs] cleanup_timeout``: a close handshake
        waits for the client to read what is queued, and one that stopped reading never
        does; the connection is then dropped all the same."""
        self.closed = True
        with anyio.move_on_after(self.engine.config.runs.cleanup_timeout):
            try:
                await self.conn.close(code, reason)
            except ConnectionClosed:
                pass
        self._stop()

    async def shutdown(self, timeout: float) -> None:
        """Flush what is queued (bounded), then close with 1001."""
        with anyio.move_on_after(timeout):
            await self.outbox.wait_flushed()
        with anyio.move_on_after(1.0):
            await self.close(CloseReason.GOING_AWAY, "server shutdown")
        self._stop()

    # --- sending --------------------------------------------------------------------------

    def metadata_for(self, request_id: str | None) -> dict[str, str] | None:
        """This connection's metadata, plus ``requestId`` when answering a client frame."""
        metadata = self.metadata
        if request_id is not None and metadata is not None:
            metadata = {**metadata, "requestId": request_id}
        return metadata

    def send(self, type: str, data: Any, *, request_id: str | None = None, eager: bool = False) -> None:
        """Queue one event of any type (applications may send their own).

        Args:
            request_id: the ``id`` of the client frame this event answers; it is added to
                ``metadata.requestId`` so clients can match replies to requests.
            eager: send it from the calling task if the connection's writer is idle
                (see :meth:`~streamcore.outbox.Outbox.put_eager`).
        """
        frame = self.codec.encode(type, data, self.metadata_for(request_id))
        if len(frame) > self.max_frame_bytes:
            # Never send a frame the configured maximum forbids (a client sized its buffers
            # by it): the event is dropped, the client told, the operator warned.
            self.log.warning("send.frame_too_large", type=type, bytes=len(frame), limit=self.max_frame_bytes)
            frame = self.codec.encode(
                EventType.ERROR,
                ErrorData(
                    ErrorCode.SERVER_ERROR,
                    f"a {type[:64]} event of {len(frame)} bytes is over the frame limit "
                    f"({self.max_frame_bytes} bytes) and was not sent",
                    False,
                    request_id,
                ),
                self.metadata_for(request_id),
            )
        self.queue(frame, eager)

    def queue(self, frame: bytes, eager: bool = False) -> bool:
        """Queue an encoded frame that no run log can replay (an application event, a
        broadcast, an ERROR); False when it was dropped.

        A run's chunks wait in the log for a reader that falls behind; these cannot. Past
        :data:`UNREPLAYABLE_FACTOR` × ``[limits] send_buffer_bytes`` pending, the client is
        not keeping up with what it is sent (a busy topic, a flood of events): the frame
        is dropped and the connection closed (1008), which bounds this buffer too.
        """
        outbox = self.outbox
        if outbox.pending > UNREPLAYABLE_FACTOR * self.limits.send_buffer_bytes:
            self._close_slow_soon()
            return False
        if eager:
            outbox.put_eager(frame)
        else:
            outbox.put(frame)
        return True

    def send_error(self, exc: StreamcoreError, request_id: str | None) -> None:
        self.engine.telemetry.on_error(exc.code)
        self.send(
            EventType.ERROR,
            ErrorData(exc.code, exc.message, exc.retryable, request_id, exc.retry_after_ms),
            request_id=request_id,
        )

    # --- runs -----------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, *, request_id: str | None = None, **kwargs: Any) -> Run:
        """Start a run for ``request`` and follow it on this connection.

        Custom handlers call this to stream replies to their own message types; it goes
        through the same admission (closing, limits) as USER_MESSAGE.

        Raises:
            StreamcoreError: ``RATE_LIMIT`` past a limit, ``SERVER_ERROR`` while closing.
        """
        if self.closed:
            raise StreamcoreError("connection is closing")
        run = self.engine.start_run(self, request, request_id=request_id, **kwargs)
        if request_id is not None:
            self.requests[request_id] = run.message_id
            if len(self.requests) > _MAX_REQUEST_IDS:
                del self.requests[next(iter(self.requests))]
        return run

    def follow(self, sub: Subscription, run: Any = None) -> None:
        """Read a run through ``sub`` (a new run, or a RESUME)."""
        old = self.subscriptions.pop(sub.message_id, None)
        if old is not None:
            old.closed = True
        self.subscriptions[sub.message_id] = sub
        if run is not None:
            run.subscribe(sub)
        else:
            sub.pump()
        if old is not None:
            # Detached only once the new reader is attached: in between, the run would
            # have no reader and be taken for abandoned (cancelled at once with no grace).
            self.engine.unsubscribe(old)

    def subscription_closed(self, sub: Subscription) -> None:
        if self.subscriptions.get(sub.message_id) is sub:
            del self.subscriptions[sub.message_id]
