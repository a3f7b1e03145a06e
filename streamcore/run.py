"""A run: one generation, owned by its user, executed by the engine, read from its log.

A :class:`Run` drives a provider stream through its :class:`~streamcore.lifecycle.RunMachine`
and appends every entry to the run log; it does not know who reads it. Readers are
:class:`Subscription` objects: a connection's cursor on a run, delivering entries into that
connection's outbox in its dialect. A subscription that falls behind (its outbox is full)
stops receiving live entries and later catches up from the log, from its cursor, so
nothing is lost or repeated and no reader slows the run or another reader.

The run's task belongs to the engine's task group, not to a connection: when the last
reader leaves, the run goes on for ``[runs] grace_period`` seconds waiting for a RESUME,
then is cancelled (``user_cancelled``), unless ``[runs] always_finish`` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._tasks import TaskScope, cancel_scope
from .errors import ProviderError, StreamcoreError
from .events import STOP_REASONS, Completion, Failure, Kind, Reasoning, Usage
from .ids import stamp
from .lifecycle import RunMachine, RunState
from .log import get_logger
from .objectives import parse_objective
from .outbox import ChunkStream, max_chunk_text
from .protocol import ErrorCode, EventType, FollowUpQuestionsData, ObjectiveGeneratedData
from .provider import ChatMessage, GenerationRequest, close_stream

if TYPE_CHECKING:
    from .engine import Engine
    from .runlog import LogWriter
    from .session import Session

__all__ = ["Run", "Subscription", "Conversation"]

_log = get_logger("streamcore")
_TEXT, _REASONING = Kind.TEXT, Kind.REASONING
_NEVER = float("inf")


class Conversation(msgspec.Struct, gc=False):
    """Which history a chat run continues and records its turn into.

    Never tracked by the garbage collector (``gc=False``): it holds strings and a message
    of strings, so it can be in no reference cycle, and a run lives for a whole reply.
    """

    owner: str
    id: str
    user_message: ChatMessage


class Subscription:
    """One reader's cursor on one run, delivering into one connection's outbox.

    Args:
        session: the connection that reads.
        source: what holds the run's entries: an object with ``entries`` (a list of
            ``(seq, kind, payload)``, seqs contiguous; a text delta may be its bare
            ``str``, see :func:`~streamcore.events.expand`), ``base`` (the seq before
            ``entries[0]``) and ``sealed`` (nothing more will be appended).
        message_id: the run's message id.
        request_id: the client frame this reader's stream answers (USER_MESSAGE or RESUME).
        cursor: the last ``seq`` this reader already has.
    """

    __slots__ = (
        "session", "source", "message_id", "request_id", "cursor", "lagging", "closed",
        "text", "reasoning", "metadata", "_outbox",
    )

    def __init__(self, session: Session, source: Any, message_id: str, request_id: str | None, cursor: int = 0) -> None:
        self.session = session
        self.source = source
        self.message_id = message_id
        self.request_id = request_id
        self.cursor = cursor
        self.lagging = False
        self.closed = False
        codec = session.codec
        merge = session.limits.coalesce_chunks
        self.text = _chunk_stream(codec, codec.chunk_encoder(message_id, session.metadata), merge)
        self.reasoning: ChunkStream | None = None  # made at the first reasoning delta
        self.metadata = session.metadata_for(request_id)
        self._outbox = session.outbox

    def deliver_text(self, seq: int, text: str) -> None:
        """Put one answer delta in the outbox: the per-chunk path.

        The outbox's chunk queueing is inlined (one call per chunk instead of two), and the
        cursor is not written per chunk: seqs are contiguous, so when this reader starts
        lagging at ``seq``, it has everything up to ``seq - 1``.
        """
        if self.lagging:
            return
        outbox = self._outbox
        if outbox.pending > outbox.limit:
            self._lag(seq)
            return
        stream = self.text
        if outbox._waiter is not None and outbox.send_now is not None:
            # The writer is idle and nothing is queued: send from this task (one task
            # switch per chunk less when the provider waits between chunks).
            outbox.send_eager(stream.encode(text, stream.index, seq, stamp()))
            stream.index += 1
            return
        # Queued as a run of pieces (see Outbox.put_chunk), encoded by the writer with one
        # clock read per batch: merged into one frame, or one frame each.
        outbox.pending += len(text) + stream.overhead
        items = outbox._items
        if items:
            last = items[-1]
            # A run's pieces have consecutive seqs (the writer derives each piece's from
            # the last's); an entry skipped in between (see deliver) starts a new run.
            if type(last) is list and last[0] is stream and last[1] == seq - 1:
                last[1] = seq
                last.append(text)
                return
        items.append([stream, seq, text])
        outbox._runs = True
        if outbox._waiter is not None:  # one wake-up per batch, not per chunk
            outbox.wake()

    def deliver(self, entry: tuple) -> None:
        """Put any entry in the outbox, or fall behind when the outbox is full.

        Entries arrive in seq order, each once: a replay and the live tail never overlap,
        because attaching happens right after the replay with no await between them.
        """
        if self.lagging:
            return
        seq, kind, payload = entry
        if kind == _TEXT:
            self.deliver_text(seq, payload)
            return
        outbox = self._outbox
        if outbox.pending > outbox.limit:
            self._lag(seq)
            return
        if kind == _REASONING:
            if self.reasoning is None:
                session = self.session
                encoder = session.codec.chunk_encoder(self.message_id, session.metadata, reasoning=True)
                self.reasoning = _chunk_stream(session.codec, encoder, self.text.merge)
            outbox.put_chunk(self.reasoning, payload, seq)
        else:
            try:
                frame = self.session.codec.encode_entry(entry, self.message_id, self.metadata, self.request_id)
                if len(frame) > self.session.max_frame_bytes:
                    frame = self._too_large(entry, len(frame))
                if kind == Kind.ENDED:  # the last frame: from this task if the writer is idle
                    outbox.put_eager(frame)
                else:
                    outbox.put(frame)
            except Exception:
                # An application payload that cannot be encoded: skip it, keep the stream.
                _log.exception("run.encode_failed", message_id=self.message_id, seq=seq)

    def _too_large(self, entry: tuple, size: int) -> bytes:
        """A frame over ``max_frame_bytes``: END goes without its (optional) ``content``,
        which the chunks carried already; anything else becomes an ERROR in its place."""
        seq, kind, payload = entry
        if kind == Kind.ENDED:
            lean = (seq, kind, msgspec.structs.replace(payload, content=None))
            return self.session.codec.encode_entry(lean, self.message_id, self.metadata, self.request_id)
        _log.warning("send.frame_too_large", message_id=self.message_id, seq=seq, bytes=size)
        failure = (seq, Kind.FAILED, Failure(
            ErrorCode.SERVER_ERROR,
            f"an event of this message ({size} bytes) exceeds the frame limit and was not sent",
            False,
        ))
        return self.session.codec.encode_entry(failure, self.message_id, self.metadata, self.request_id)

    def _lag(self, seq: int) -> None:
        self.lagging = True
        self.cursor = seq - 1
        self._outbox.lagging.append(self)

    def pump(self) -> None:
        """Deliver what the source holds after the cursor, until the outbox is full."""
        source = self.source
        entries = source.entries
        if entries:
            base = source.base
            deliver = self.deliver
            deliver_text = self.deliver_text
            for i in range(max(0, self.cursor - base), len(entries)):
                if self.lagging or self.closed:
                    return
                entry = entries[i]
                if type(entry) is str:  # a text delta, stored bare: see events.expand
                    deliver_text(base + i + 1, entry)
                else:
                    deliver(entry)
            if self.lagging or self.closed:
                # Fell behind on the last entry: the cursor is before it (see _lag), and
                # moving it to the end would skip that entry for good.
                return
            self.cursor = max(self.cursor, base + len(entries))
        if source.sealed and not self.lagging:
            self.close()

    def catch_up(self) -> None:
        """Called by the outbox once drained: resume from the cursor."""
        self.lagging = False
        self.pump()

    def close(self) -> None:
        """Stop reading: the run sealed and everything was delivered, or the reader left."""
        if self.closed:
            return
        self.closed = True
        self.session.subscription_closed(self)


def _chunk_stream(codec: Any, encode: Any, merge: bool) -> ChunkStream:
    """A reader's chunk stream; one frame per piece counts its codec's real envelope
    (a dialect's encoder keeps state and cannot be measured: the outbox's estimate)."""
    if merge:
        return ChunkStream(encode, True)
    measure = getattr(codec, "chunk_overhead", None)
    return ChunkStream(encode, False) if measure is None else ChunkStream(encode, False, measure(encode))


class _AheadSubscription(Subscription):
    """A reader of a live run whose cursor is past what the run has logged yet (only a
    client that made its ``lastSeq`` up can send one): it skips live entries up to its
    cursor, as a read of the log would. Its own class, so that the per-chunk path of
    every other reader carries no such check."""

    __slots__ = ("ahead",)

    def __init__(self, session: Session, source: Any, message_id: str, request_id: str | None, cursor: int) -> None:
        super().__init__(session, source, message_id, request_id, cursor)
        self.ahead = cursor

    def deliver_text(self, seq: int, text: str) -> None:
        if seq > self.ahead:
            Subscription.deliver_text(self, seq, text)

    def deliver(self, entry: tuple) -> None:
        if entry[0] > self.ahead:
            Subscription.deliver(self, entry)


class Run:
    """One generation: its lifecycle, its log, its readers.

    Attributes:
        message_id: the run's id, 128 random bits (anonymous runs are reachable by it).
        owner: ``u:<user id>``, or ``a:<connection id>`` for anonymous connections.
        machine: the lifecycle state machine.
        entries: every entry logged so far (shared with the in-memory log), text deltas
            as bare ``str`` (see :func:`~streamcore.events.expand`).
        sealed: nothing more will be appended.
    """

    #: the seq before ``entries[0]``: a run's entries start at seq 1.
    base = 0

    __slots__ = (
        "engine", "message_id", "owner", "request", "request_id", "purpose", "conversation", "machine",
        "writer", "entries", "sealed", "subscribers", "stop_reason", "stopped", "scope", "deadline", "t0", "_done",
        "_grace",
        "_telemetry", "__weakref__",
    )

    def __init__(
        self,
        engine: Engine,
        message_id: str,
        owner: str,
        request: GenerationRequest,
        writer: LogWriter,
        *,
        request_id: str | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        self.engine = engine
        self.message_id = message_id
        self.owner = owner
        self.request = request
        self.request_id = request_id
        self.purpose = request.purpose
        self.conversation = conversation
        self.machine = RunMachine(message_id)
        self.writer = writer
        self.entries: list = writer.entries
        self.sealed = False
        self.subscribers: list[Subscription] = []
        self.stop_reason: str | None = None
        #: stop() was called, at any point (stop_reason is only set while the answer runs).
        self.stopped = False
        self.scope: anyio.CancelScope | TaskScope | None = None
        #: when (``time.monotonic()``) the engine's sweeper cancels the provider stream for
        #: taking too long: see :meth:`expire`.
        self.deadline = _NEVER
        self.t0 = time.perf_counter()
        self._done: anyio.Event | None = None  # made on demand: most runs are never awaited
        self._grace: anyio.CancelScope | None = None

    @property
    def done(self) -> anyio.Event:
        """Set once the run is sealed (nothing more will be logged)."""
        if self._done is None:
            self._done = anyio.Event()
            if self.sealed:
                self._done.set()
        return self._done

    # --- readers ---------------------------------------------------------------------------

    def reader(self, session: Session, request_id: str | None, cursor: int = 0) -> Subscription:
        """A reader of this run for ``session``, after ``cursor`` (a RESUME's ``lastSeq``)."""
        cls = Subscription if cursor <= self.machine.seq else _AheadSubscription
        return cls(session, self, self.message_id, request_id, cursor)

    def subscribe(self, sub: Subscription) -> None:
        """Attach a reader; it first gets what was logged after its cursor, then the live rest."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        sub.pump()
        if not sub.closed:
            self.subscribers.append(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        """Detach a reader; the last one leaving starts the grace period."""
        try:
            self.subscribers.remove(sub)
        except ValueError:
            return
        if not self.subscribers and not self.sealed:
            self.engine._orphaned(self)

    def grace_scope(self) -> anyio.CancelScope:
        """The scope of a grace period about to start (see :meth:`grace`), made now: a
        reader attaching before the grace task runs cancels it (a scope cancelled before
        it is entered cancels at once), and a period never outlives the next one."""
        if self._grace is not None:
            self._grace.cancel()
        self._grace = scope = anyio.CancelScope()
        return scope

    async def grace(self, seconds: float, scope: anyio.CancelScope) -> None:
        """Cancel the run if nobody resumes it within ``seconds`` (the engine starts this
        with :meth:`grace_scope`)."""
        with scope:
            await anyio.sleep(seconds)
            if not self.subscribers and not self.sealed:
                _log.info("run.abandoned", message_id=self.message_id, grace_period=seconds)
                self.stop("user_cancelled")
        if self._grace is scope:
            self._grace = None

    # --- control ---------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Stop at once (stop, shutdown, abandonment): the provider stream is cancelled.
        After the END (while the turn is recorded) it still keeps the follow-up questions
        call from starting."""
        self.stopped = True
        if self.stop_reason is None and self.machine.state in (RunState.PENDING, RunState.STREAMING):
            self.stop_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    def expire(self, now: float) -> None:
        """Cancel the provider stream if the run's deadline passed (the engine's sweeper
        calls this every tick for every run: one timer for all runs, not two per run)."""
        if now >= self.deadline and self.scope is not None:
            self.deadline = _NEVER
            self.scope.cancel()

    def _emit(self, entry: tuple) -> None:
        self.entries.append(entry)
        for sub in self.subscribers:
            sub.deliver(entry)

    # --- execution -------------------------------------------------------------------------

    async def execute(self) -> None:
        """Run the provider to the end; log exactly one END whatever happens."""
        engine = self.engine
        lim = engine.config.limits
        cleanup = engine.config.runs.cleanup_timeout
        max_bytes = engine.config.runs.max_run_bytes
        hide_reasoning = engine.config.features.reasoning == "hide"
        machine = self.machine
        provider = engine.provider
        model = self.request.model or getattr(provider, "model", None)
        completion: Completion | None = None
        failure: StreamcoreError | None = None
        ttft: float | None = None
        stream: Any = None
        try:
            try:
                run_tasks = engine._run_tasks
                with cancel_scope(run_tasks.loop if run_tasks is not None else None) as scope:
                    self.scope = scope
                    if self.stop_reason is not None:  # stopped before it could start
                        scope.cancel()
                    # The deadlines are enforced by the engine's sweeper (expire()), not by
                    # the scope's own: two timers per reply cost more than the rest of its
                    # set-up (about 18 us).
                    start = time.monotonic()
                    self.deadline = start + min(lim.first_chunk_timeout, lim.generation_timeout)
                    request = await self._prepare()
                    engine.telemetry.on_provider_call(self)
                    stream = provider.stream(request)
                    # The per-chunk path: locals only. A text delta does what
                    # RunMachine.text_delta does, inline (a method call per chunk is
                    # measurable here); the state is checked once, at START.
                    # The lists themselves, not their bound ``append``s: ``list.append`` is
                    # specialised by the interpreter, and a bound method kept for the run's
                    # life is one more object per reply for the garbage collector to walk.
                    parts = machine.parts
                    entries = self.entries  # the log's own list (see LogWriter.entries)
                    subscribers = self.subscribers
                    size = 0  # machine.size, kept in a local on the per-chunk path
                    # One delta never makes a frame over [limits] max_frame_bytes.
                    max_piece = max_chunk_text(lim.max_frame_bytes or lim.max_message_bytes)
                    try:
                        async for item in stream:
                            if type(item) is str:
                                if not item:
                                    continue
                                if len(item) > max_piece:  # rare: cut so no frame is too large
                                    if ttft is None:
                                        ttft = self._first_delta(model, start + lim.generation_timeout)
                                    head = len(item) - (len(item) % max_piece or max_piece)
                                    for i in range(0, head, max_piece):
                                        piece = item[i:i + max_piece]
                                        _check_encodable(piece)
                                        parts.append(piece)
                                        size += len(piece)
                                        seq = machine.seq = machine.seq + 1
                                        entries.append(piece)  # a text entry is its bare str
                                        for sub in subscribers:
                                            sub.deliver_text(seq, piece)
                                    item = item[head:]
                                if not item.isascii():
                                    _check_encodable(item)
                                if ttft is None:
                                    ttft = self._first_delta(model, start + lim.generation_timeout)
                                parts.append(item)
                                size += len(item)
                                seq = machine.seq = machine.seq + 1
                                # A text entry is its bare str (seq: its position):
                                # no object per chunk for the garbage collector.
                                entries.append(item)
                                for sub in subscribers:
                                    sub.deliver_text(seq, item)
                                if size > max_bytes:
                                    self.stop_reason = "length"
                                    break
                            elif type(item) is Reasoning:
                                if not item or hide_reasoning:
                                    continue
                                _check_encodable(item)
                                if ttft is None:
                                    ttft = self._first_delta(model, start + lim.generation_timeout)
                                machine.size = size
                                entry = machine.reasoning_delta(item)
                                size = machine.size
                                entries.append(entry)
                                for sub in subscribers:
                                    sub.deliver(entry)
                                if size > max_bytes:
                                    self.stop_reason = "length"
                                    break
                            elif isinstance(item, Completion):
                                completion = item
                    finally:
                        machine.size = size
                if scope.cancelled_caught and self.stop_reason is None:
                    self.stop_reason = "timeout"
                    failure = StreamcoreError(
                        "the provider sent nothing in time" if ttft is None else "the generation took too long",
                        code=ErrorCode.TIMEOUT,
                    )
            except StreamcoreError as exc:
                failure = exc
                if isinstance(exc, ProviderError) and exc.misconfigured:
                    _log.error("provider.misconfigured", error=exc.message)
            except Exception as exc:  # a provider bug: never crash anything else
                _log.exception("provider.failed", message_id=self.message_id)
                failure = ProviderError(f"the provider failed: {type(exc).__name__}")
            # The provider part is over, however it ended: the sweeper must not cancel
            # what follows (the follow-up questions reuse self.scope).
            self.deadline = _NEVER
            # END first, then release the stream: readers are not kept waiting by a slow
            # (or hung: bounded by cleanup_timeout) close.
            objective = self._log_end(completion, failure, model, ttft)
            await self._release(stream, cleanup)
            stream = None
            await self._after_end(objective)
        finally:
            # Whatever happened above (even a bug or a cancellation), the run ends once.
            if machine.state in (RunState.PENDING, RunState.STREAMING, RunState.FAILED):
                reason = self.stop_reason if self.stop_reason in STOP_REASONS else "error"
                for entry in machine.finish(reason, model=model):
                    self._emit(entry)
            if stream is not None:
                await self._release(stream, cleanup)
            self._seal()

    def _first_delta(self, model: str | None, deadline: float) -> float:
        """The model spoke: log START, allow the whole generation time; return the TTFT."""
        self._emit(self.machine.start(model))
        self.machine.expect_streaming()
        self.deadline = deadline
        ttft = time.perf_counter() - self.t0
        self.engine.telemetry.on_first_chunk(self, ttft)
        return ttft

    async def _release(self, stream: Any, timeout: float) -> None:
        if stream is not None and not await close_stream(stream, timeout):
            _log.warning("provider.close_timeout", message_id=self.message_id, timeout=timeout)

    async def _prepare(self) -> GenerationRequest:
        """The request with the conversation's history (read here, off the reader's path)."""
        conv = self.conversation
        if conv is None:
            return self.request
        history = await self.engine.conversations.history(conv.owner, conv.id)
        request = self.request
        request.messages = self.engine.system_messages() + history + [conv.user_message]
        return request

    def _log_end(
        self, completion: Completion | None, failure: StreamcoreError | None, model: str | None, ttft: float | None
    ) -> Any:
        """Log the failure if any and the END; return the parsed objective, if any."""
        machine = self.machine
        reason = self.stop_reason
        if failure is not None:
            reason = reason or "error"
        if reason is None and completion is not None and completion.finish_reason != "complete":
            reason = completion.finish_reason if completion.finish_reason in STOP_REASONS else "complete"
        reason = reason or "complete"
        # Structured output is complete only once it parses; a failure logs ERROR first.
        objective = None
        if failure is None and reason == "complete" and self.purpose == "objective":
            spec = self.request.objective
            try:
                lim = self.engine.config.limits
                objective = parse_objective(
                    machine.text,
                    difficulty=spec.difficulty if spec is not None else None,
                    category=spec.category if spec is not None else None,
                    max_steps=lim.max_objective_steps,
                    max_bytes=lim.max_objective_bytes,
                )
            except ProviderError as exc:
                failure, reason = exc, "error"
        usage: Usage | None = completion.usage if completion is not None else None
        fail = None
        if failure is not None:
            fail = Failure(failure.code, failure.message, failure.retryable, failure.retry_after_ms)
        answered_by = (completion and completion.model) or model
        for entry in machine.finish(reason, usage=usage, failure=fail, model=answered_by):
            self._emit(entry)
        self.engine.telemetry.on_run_end(
            self, reason, failure, usage, (completion and completion.model) or model, ttft
        )
        if _log.isEnabledFor(logging.INFO):  # its arguments cost more than the disabled call
            _log.info(
                "generation.end",
                message_id=self.message_id,
                request_id=self.request_id,
                purpose=self.purpose,
                stop_reason=reason,
                error=failure.code if failure is not None else None,
                chars=len(machine.text),
                ttft_ms=round(ttft * 1000, 1) if ttft is not None else None,
                duration_ms=round((time.perf_counter() - self.t0) * 1000, 1),
            )
        return objective

    async def _after_end(self, objective: Any) -> None:
        """Record the turn, store the objective, ask for follow-ups: each bounded in time."""
        engine = self.engine
        reason = self.machine.ended.stop_reason if self.machine.ended else "error"
        cleanup = engine.config.runs.cleanup_timeout
        text = self.machine.text
        conv = self.conversation
        if conv is not None:
            turn = [conv.user_message] + ([ChatMessage("assistant", text)] if text else [])
            conversations = engine.conversations
            await _store_call(conversations, conversations.add_turn(conv.owner, conv.id, turn), cleanup)
        if objective is not None:
            objectives = engine.objectives
            await _store_call(objectives, objectives.add(self.owner, objective), cleanup)
            elapsed = round((time.perf_counter() - self.t0) * 1000)
            self._emit(self.machine.app(
                EventType.OBJECTIVE_GENERATED, ObjectiveGeneratedData(objective, elapsed, self.message_id)
            ))
        mode = engine.config.features.follow_up_questions
        if mode != "off" and reason == "complete" and self.purpose == "chat" and not self.stopped:
            await self._follow_up(mode, text)

    async def _follow_up(self, mode: str, answer: str) -> None:
        """The RAG seed's follow-up questions: part of the run, so counted and stoppable."""
        question = self.conversation.user_message.content if self.conversation else ""
        with anyio.CancelScope() as scope:
            self.scope = scope
            scope.deadline = anyio.current_time() + self.engine.config.limits.generation_timeout
            try:
                questions = await self.engine.follow_up_questions(question, answer)
            except Exception as exc:
                _log.warning("follow_up.failed", message_id=self.message_id, error=type(exc).__name__)
                return
        if scope.cancelled_caught:
            return
        data = FollowUpQuestionsData(self.message_id, questions)
        if mode == "broadcast":
            self.engine.broadcast(EventType.FOLLOW_UP_QUESTIONS, data)
        else:
            self._emit(self.machine.app(EventType.FOLLOW_UP_QUESTIONS, data))

    def _seal(self) -> None:
        if self.sealed:
            return
        if self.machine.state is RunState.ENDED:
            self.machine.seal()
        self.sealed = True
        self.writer.finish(self.machine.size)
        for sub in list(self.subscribers):
            if not sub.lagging:
                sub.close()
        self.subscribers.clear()
        self.engine._run_sealed(self)
        if self._done is not None:
            self._done.set()


async def _store_call(store: Any, call: Awaitable[None], timeout: float) -> None:
    """Await a store's ``call`` once the run has ended: shielded from the run's cancellation
    and bounded by ``timeout``, unless the store never waits (``immediate``), which needs
    neither (a cancel scope per reply is measurable: about 20 us)."""
    if getattr(store, "immediate", False):
        await call
        return
    with anyio.move_on_after(timeout, shield=True):
        await call


def _check_encodable(text: str) -> None:
    # A lone surrogate (which json.loads lets through from an upstream) cannot be encoded
    # as UTF-8: it ends the run with an ERROR instead of killing every reader's writer.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProviderError("the provider sent text that cannot be encoded (a lone surrogate)") from None


