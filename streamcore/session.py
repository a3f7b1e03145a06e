"""One client connection: reads its frames, runs its generations, writes its events.

A :class:`Session` knows nothing of the web framework underneath: it talks to a
:class:`~streamcore.transport.Connection`. Three kinds of task run in its task group:
the reader (this session's ``run``), one writer draining the :class:`Outbox`, and one task
per generation. Every generation ends with exactly one AI_MESSAGE_END, whatever happens.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any, get_args

import anyio
import structlog

from .errors import ConnectionClosed, ProtocolError, ProviderError, StreamcoreError
from .ids import new_id, now_ms
from .objectives import objective_instructions, parse_objective
from .outbox import ChunkStream, Outbox
from .protocol import (
    ErrorCode,
    ErrorData,
    EventType,
    FollowUpQuestionsData,
    GenerateObjective,
    MessageEndData,
    MessageStartData,
    ObjectiveGeneratedData,
    ObjectiveUpdatedData,
    Ping,
    PongData,
    StopGeneration,
    StopReason,
    ThinkingData,
    UpdateObjective,
    UserMessage,
)
from .provider import ChatMessage, Completion, GenerationRequest, ObjectiveSpec, close_stream

if TYPE_CHECKING:
    from .codec import Codec
    from .engine import Engine
    from .transport import Connection, ConnectionInfo

__all__ = ["Session", "Generation"]

_log = structlog.get_logger("streamcore")


class Generation:
    """The state of one streamed reply."""

    __slots__ = (
        "message_id",
        "request_id",
        "purpose",
        "parts",
        "stop_reason",
        "scope",
        "started",
        "t0",
    )

    def __init__(self, message_id: str, request_id: str | None, purpose: str) -> None:
        self.message_id = message_id
        self.request_id = request_id
        self.purpose = purpose
        self.parts: list[str] = []
        self.stop_reason: str | None = None
        self.scope: anyio.CancelScope | None = None
        self.started = False
        self.t0 = time.perf_counter()

    def stop(self, reason: str) -> None:
        """Stop at once: the provider stream is cancelled and closed."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Session:
    """The engine's side of one connection.

    Applications meet it in custom handlers: ``session.send(type, data)``,
    ``session.user_id``, ``session.id``, ``session.generate(request)``.
    """

    def __init__(self, engine: Engine, conn: Connection, info: ConnectionInfo, codec: Codec) -> None:
        self.engine = engine
        self.conn = conn
        self.info = info
        self.codec = codec
        self.id = new_id("session")
        self.user_id = info.user_id
        cfg = engine.config
        self.limits = cfg.limits
        self.metadata: dict[str, str] | None = None
        if cfg.features.metadata:
            self.metadata = {"sessionId": self.id}
            if self.user_id:
                self.metadata["userId"] = self.user_id
        self.outbox = Outbox(self.limits.send_buffer_bytes)
        self.generations: dict[str, Generation] = {}
        self.history: list[ChatMessage] = []
        self.closed = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._writer_scope = anyio.CancelScope()
        self._generations_done: anyio.Event | None = None
        self._last_frame = time.monotonic()
        self._frames_in = 0
        self._bucket = engine.rate_bucket(self)
        self.log = _log.bind(session_id=self.id, user_id=self.user_id, client=info.client)

    @property
    def owner(self) -> str:
        """Whose objectives this session sees: the user, or this connection when anonymous."""
        return self.user_id or self.id

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes; never raises for anything the client did."""
        t0 = time.perf_counter()
        self.log.info("connection.open", path=self.info.path, subprotocol=self.info.subprotocol)
        close_code: int | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._write_loop)
                tg.start_soon(self._watch)
                try:
                    await self._read_loop()
                except ConnectionClosed as exc:
                    close_code = exc.code
                finally:
                    self.closed = True
                    for gen in list(self.generations.values()):
                        gen.stop("user_cancelled")
                    # Generations close their provider streams under a shield, so cancelling
                    # here still lets them release what they hold.
                    tg.cancel_scope.cancel()
        finally:
            self.closed = True
            self.log.info(
                "connection.close",
                code=close_code,
                frames_in=self._frames_in,
                frames_out=self.outbox.sent,
                duration_ms=round((time.perf_counter() - t0) * 1000, 1),
            )

    async def _read_loop(self) -> None:
        receive = self.conn.receive
        decode = self.codec.decode
        while True:
            raw = await receive()
            self._last_frame = time.monotonic()
            self._frames_in += 1
            frame = None
            try:
                frame = decode(raw)
                if type(frame) not in _UNLIMITED:
                    wait = self._bucket.take()
                    if wait:
                        raise StreamcoreError(
                            "too many messages; slow down",
                            code=ErrorCode.RATE_LIMIT,
                            retry_after_ms=wait,
                        )
                await self._dispatch(frame)
            except ProtocolError as exc:
                self.send_error(exc, exc.request_id or getattr(frame, "id", None))
            except StreamcoreError as exc:
                self.send_error(exc, getattr(frame, "id", None))
            except Exception:
                # A bug in an application handler must not take the connection down.
                self.log.exception("handler.failed")
                self.send_error(StreamcoreError("internal server error"), getattr(frame, "id", None))

    async def _write_loop(self) -> None:
        outbox = self.outbox
        send = self.conn.send
        try:
            with anyio.CancelScope() as self._writer_scope:
                while True:
                    await outbox.wait_ready()
                    frames = outbox.take()
                    outbox.sending = True
                    for frame in frames:
                        await send(frame)
                    outbox.sent += len(frames)
                    outbox.sending = False
        except ConnectionClosed:
            self.closed = True
            if self._tg is not None:
                self._tg.cancel_scope.cancel()

    async def _watch(self) -> None:
        """Close idle connections and clients that stopped reading."""
        lim = self.limits
        tick = min(1.0, lim.idle_timeout / 4, lim.slow_client_timeout / 4)
        outbox = self.outbox
        last_sent, stalled_since = outbox.sent, None
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            if now - self._last_frame > lim.idle_timeout and not self.generations:
                self.log.info("connection.idle", idle_timeout=lim.idle_timeout)
                await self.close(1001, "idle timeout")
                return
            if outbox.sending and outbox.sent == last_sent:
                stalled_since = stalled_since or now
                if now - stalled_since > lim.slow_client_timeout:
                    self.log.warning("connection.slow_client", timeout=lim.slow_client_timeout)
                    for gen in list(self.generations.values()):
                        gen.stop("error")
                    # The writer is blocked in a send that will never finish and may hold
                    # the transport's send lock: cancel it, then close with a bound (the
                    # close frame itself may not fit in a full buffer).
                    self._writer_scope.cancel()
                    with anyio.move_on_after(1.0):
                        await self.close(1008, "client too slow to read")
                    self._tg.cancel_scope.cancel()
                    return
            else:
                stalled_since = None
            last_sent = outbox.sent

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (bounded in time by the adapter)."""
        self.closed = True
        try:
            await self.conn.close(code, reason)
        except ConnectionClosed:
            pass
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def shutdown(self, timeout: float) -> None:
        """End open generations with ``server_shutdown``, flush, then close with 1001."""
        with anyio.move_on_after(timeout):
            for gen in list(self.generations.values()):
                gen.stop("server_shutdown")
            if self.generations:
                self._generations_done = anyio.Event()
                await self._generations_done.wait()
            await self.outbox.wait_flushed()
        with anyio.move_on_after(max(timeout, 1.0)):
            await self.close(1001, "server shutdown")

    # --- sending --------------------------------------------------------------------------

    def send(self, type: str, data: Any, *, request_id: str | None = None) -> None:
        """Queue one event of any type (applications may send their own).

        Args:
            request_id: the ``id`` of the client frame this event answers; it is added to
                ``metadata.requestId`` so clients can match replies to requests.
        """
        metadata = self.metadata
        if request_id is not None and metadata is not None:
            metadata = {**metadata, "requestId": request_id}
        self.outbox.put(self.codec.encode(type, data, metadata))

    def send_error(self, exc: StreamcoreError, request_id: str | None) -> None:
        self.send(
            EventType.ERROR,
            ErrorData(exc.code, exc.message, exc.retryable, request_id, exc.retry_after_ms),
            request_id=request_id,
        )

    # --- dispatch -------------------------------------------------------------------------

    async def _dispatch(self, frame: Any) -> None:
        kind = type(frame)
        if kind is UserMessage:
            self._start_chat(frame)
        elif kind is Ping:
            self.send(EventType.PONG, PongData(frame.data.timestamp), request_id=frame.id)
        elif kind is StopGeneration:
            self._stop(frame.data.messageId)
        elif kind is GenerateObjective:
            self._start_objective(frame)
        elif kind is UpdateObjective:
            objective = await self.engine.objectives.update(
                self.owner, frame.data.objectiveId, frame.data.updates
            )
            self.send(EventType.OBJECTIVE_UPDATED, ObjectiveUpdatedData(objective), request_id=frame.id)
        else:
            handler = self.engine.handlers[frame.__struct_config__.tag]
            result = handler(self, frame)
            if inspect.isawaitable(result):
                await result

    def _stop(self, target: str | None) -> None:
        # Stopping something already finished is not an error: the client may race the end.
        for gen in list(self.generations.values()):
            if target is None or target == gen.message_id or target == gen.request_id:
                gen.stop("user_cancelled")

    def _admit(self) -> None:
        if self.engine.active.get(self.owner, 0) >= self.limits.max_concurrent_generations:
            raise StreamcoreError(
                f"at most {self.limits.max_concurrent_generations} generations at once",
                code=ErrorCode.RATE_LIMIT,
                retry_after_ms=self.limits.retry_after_ms,
            )

    def _start_chat(self, frame: UserMessage) -> None:
        self._admit()
        content = frame.data.content
        if not content.strip():
            raise ProtocolError("`content` must not be empty - at `$.data.content`", request_id=frame.id)
        messages = self.engine.system_messages() + self.history + [ChatMessage("user", content)]
        self._remember(ChatMessage("user", content))
        request = self.engine.request(messages, purpose="chat", context=frame.data.context)
        self.generate(request, request_id=frame.id)

    def _start_objective(self, frame: GenerateObjective) -> None:
        self._admit()
        d = frame.data
        if not d.prompt.strip():
            raise ProtocolError("`prompt` must not be empty - at `$.data.prompt`", request_id=frame.id)
        messages = [
            ChatMessage("system", objective_instructions(d.difficulty, d.category)),
            ChatMessage("user", d.prompt),
        ]
        request = self.engine.request(
            messages,
            purpose="objective",
            json_mode=True,
            objective=ObjectiveSpec(d.prompt, d.difficulty, d.category),
        )
        self.generate(request, request_id=frame.id)

    def _remember(self, message: ChatMessage) -> None:
        limit = self.limits.history_messages
        self.history.append(message)
        if len(self.history) > limit:
            del self.history[: len(self.history) - limit]

    # --- generation -----------------------------------------------------------------------

    def generate(self, request: GenerationRequest, *, request_id: str | None = None) -> Generation:
        """Start streaming a reply to ``request`` in the background; return its state.

        Custom handlers may call this too, to stream replies to their own message types.
        """
        if self._tg is None or self.closed:
            raise StreamcoreError("connection is closing")
        gen = Generation(new_id("msg"), request_id, request.purpose)
        self.generations[gen.message_id] = gen
        active = self.engine.active
        active[self.owner] = active.get(self.owner, 0) + 1
        self.send(EventType.AI_THINKING, ThinkingData(now_ms()), request_id=request_id)
        self._tg.start_soon(self._run_generation, gen, request)
        return gen

    async def _run_generation(self, gen: Generation, request: GenerationRequest) -> None:
        lim = self.limits
        outbox = self.outbox
        chunks = ChunkStream(self.codec.chunk_encoder(gen.message_id, self.metadata), lim.coalesce_chunks)
        completion: Completion | None = None
        error: StreamcoreError | None = None
        ttft = None
        provider = self.engine.provider
        try:
            with anyio.CancelScope() as scope:
                gen.scope = scope
                if gen.stop_reason is not None:  # stopped before it could start
                    scope.cancel()
                start = anyio.current_time()
                scope.deadline = start + min(lim.first_chunk_timeout, lim.generation_timeout)
                stream = provider.stream(request)
                try:
                    # The per-chunk path: locals only, one method call, one comparison.
                    append = gen.parts.append
                    put = outbox.put_chunk
                    limit = outbox.limit
                    async for item in stream:
                        if type(item) is str:
                            if not item:
                                continue
                            if ttft is None:
                                self._announce(gen, request)
                                scope.deadline = start + lim.generation_timeout
                                ttft = time.perf_counter() - gen.t0
                            append(item)
                            put(chunks, item)
                            if outbox.pending > limit:
                                await outbox.wait_for_space()
                        elif isinstance(item, Completion):
                            completion = item
                finally:
                    await close_stream(stream)
            if scope.cancelled_caught and gen.stop_reason is None:
                first = not gen.started
                gen.stop_reason = "timeout"
                error = StreamcoreError(
                    "the provider sent nothing in time" if first else "the generation took too long",
                    code=ErrorCode.TIMEOUT,
                )
        except StreamcoreError as exc:
            error = exc
            gen.stop_reason = gen.stop_reason or "error"
            if isinstance(exc, ProviderError) and exc.misconfigured:
                self.log.error("provider.misconfigured", error=exc.message)
        except Exception as exc:  # a provider bug: never crash the connection
            self.log.exception("provider.failed", message_id=gen.message_id)
            error = ProviderError(f"the provider failed: {type(exc).__name__}")
            gen.stop_reason = "error"
        finally:
            if gen.stop_reason is None and completion is not None and completion.finish_reason != "complete":
                gen.stop_reason = completion.finish_reason if completion.finish_reason in _REASONS else "complete"
            # Structured output is only complete once it parses; a failure sends ERROR first.
            objective = None
            if error is None and gen.stop_reason is None and gen.purpose == "objective":
                try:
                    spec = request.objective
                    objective = parse_objective(
                        gen.text, difficulty=spec and spec.difficulty, category=spec and spec.category
                    )
                except ProviderError as exc:
                    error, gen.stop_reason = exc, "error"
            self._finish(gen, request, completion, error, ttft)
            if objective is not None:
                with anyio.CancelScope(shield=True):
                    await self.engine.objectives.add(self.owner, objective)
                elapsed = round((time.perf_counter() - gen.t0) * 1000)
                self.send(
                    EventType.OBJECTIVE_GENERATED, ObjectiveGeneratedData(objective, elapsed), request_id=gen.request_id
                )

    def _announce(self, gen: Generation, request: GenerationRequest) -> None:
        gen.started = True
        model = request.model or getattr(self.engine.provider, "model", None)
        self.send(EventType.AI_MESSAGE_START, MessageStartData(gen.message_id, model), request_id=gen.request_id)

    def _finish(
        self,
        gen: Generation,
        request: GenerationRequest,
        completion: Completion | None,
        error: StreamcoreError | None,
        ttft: float | None,
    ) -> None:
        self.generations.pop(gen.message_id, None)
        if not self.generations and self._generations_done is not None:
            self._generations_done.set()
        active = self.engine.active
        if active.get(self.owner, 0) <= 1:
            active.pop(self.owner, None)
        else:
            active[self.owner] -= 1
        reason = gen.stop_reason or "complete"
        if not gen.started:
            self._announce(gen, request)
        if error is not None:
            self.send_error(error, gen.request_id)
        text = gen.text
        usage = completion.usage if completion is not None else None
        self.send(
            EventType.AI_MESSAGE_END,
            MessageEndData(gen.message_id, reason == "complete", reason, text, usage),
            request_id=gen.request_id,
        )
        if gen.purpose == "chat" and text:
            self._remember(ChatMessage("assistant", text))
        self.log.info(
            "generation.end",
            message_id=gen.message_id,
            request_id=gen.request_id,
            purpose=gen.purpose,
            stop_reason=reason,
            error=error.code if error is not None else None,
            chars=len(text),
            ttft_ms=round(ttft * 1000, 1) if ttft is not None else None,
            duration_ms=round((time.perf_counter() - gen.t0) * 1000, 1),
        )
        follow = self.engine.config.features.follow_up_questions
        if follow != "off" and reason == "complete" and gen.purpose == "chat" and not self.closed:
            self._tg.start_soon(self._follow_up, gen.message_id, request, text, follow)

    async def _follow_up(self, message_id: str, request: GenerationRequest, answer: str, mode: str) -> None:
        """The RAG seed's follow-up questions, generated in the background after a reply."""
        try:
            with anyio.fail_after(self.limits.generation_timeout):
                questions = await self.engine.follow_up_questions(request.messages[-1].content, answer)
        except Exception as exc:
            self.log.warning("follow_up.failed", error=type(exc).__name__)
            return
        data = FollowUpQuestionsData(message_id, questions)
        if mode == "broadcast":
            self.engine.broadcast(EventType.FOLLOW_UP_QUESTIONS, data)
        else:
            self.send(EventType.FOLLOW_UP_QUESTIONS, data)


_UNLIMITED = (Ping, StopGeneration)  # keep-alives and stops always pass the rate limit
_REASONS = frozenset(get_args(StopReason))
