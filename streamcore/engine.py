"""The engine: one per application, shared by every connection and every adapter.

It owns the configuration, the provider, the stores (run log, conversations, objectives),
the dialects, the handler registry and the live runs and sessions. Runs execute in the
engine's task group, not a connection's, so a reply outlives the socket that asked for it.
It imports no web framework: adapters hand it a :class:`~streamcore.transport.Connection`.

The engine is an async context manager (``async with Engine(...) as engine``) that opens
and closes what it owns; adapters enter it for you, and an engine used without ``async
with`` starts itself on the first connection (asyncio only) and is closed by
:meth:`Engine.aclose`.
"""

from __future__ import annotations

import inspect
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Union, cast

import anyio
import msgspec

from ._tasks import TaskSet
from .admission import ConnectionLimits, ConnectionRefused, client_ip, refuse
from .auth import AuthError, JWTVerifier, Verifier, authenticate, origin_allowed
from .broker import ALL, STOP, TOPIC, USER, WATCH, Broker, BusMessage, LocalBroker
from .codec import JSON, MSGPACK, MSGPACK_SUBPROTOCOL, Codec
from .config import Config
from .conversations import ConversationStore, MemoryConversationStore
from .dialect import Dialect
from .errors import ConnectionClosed, NotFound, ProviderError, StreamcoreError
from .events import Entry, Failure
from .handlers import register_builtins
from .ids import now_ms
from .limits import Limiter, MemoryLimiter, RateBucket
from .log import get_logger
from .metrics import Telemetry, make_telemetry
from .objectives import InMemoryObjectiveStore, ObjectiveStore, strip_code_fence
from .protocol import BUILTIN_CLIENT_FRAMES, ErrorCode, ErrorData, EventType, ThinkingData
from .provider import ChatMessage, GenerationRequest, Provider, close_provider, collect_text, load_provider
from .run import Conversation, Run, Subscription
from .runlog import MemoryRunLog, RunLog
from .session import Session
from .transport import Connection, ConnectionInfo

__all__ = ["Engine", "Handler"]

_log = get_logger("streamcore")

_questions = msgspec.json.Decoder(Union[list[str], dict[str, list[str]]])

#: ``handler(session, frame)``; may be a coroutine function. ``frame.data`` is typed.
Handler = Callable[[Session, Any], Any]


class _PulledSource:
    """Entries of a run read from the log (a finished run, or one on another worker)."""

    __slots__ = ("entries", "base", "sealed")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        #: the seq before ``entries[0]``, set from the first entries the log returns (read
        #: only once there are entries).
        self.base = 0
        self.sealed = False


class Engine:
    """Runs the protocol for any number of connections.

    Args:
        config: the configuration (defaults when omitted).
        provider: a provider instance; loaded from ``config.provider`` when omitted.
        objectives: where objectives live (in memory by default).
        verifier: authenticates connections (``[auth]``'s JWT check when configured);
            ``verifier(token, info)`` returns a user id or claims, or raises AuthError.
        runlog, conversations, limiter, broker: backends; in memory by default, on Redis
            when ``[redis] url`` is set (each one passed here wins over the default).

    Example::

        engine = Engine(load_config("streamcore.toml"))
        app = streamcore.adapters.asgi.StreamcoreASGI(engine)
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        provider: Provider | None = None,
        objectives: ObjectiveStore | None = None,
        verifier: Verifier | None = None,
        runlog: RunLog | None = None,
        conversations: ConversationStore | None = None,
        limiter: Limiter | None = None,
        broker: Broker | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config or Config()
        cfg = self.config
        pc = cfg.provider
        self.provider: Provider = (
            load_provider(pc.name, model=pc.model, options=pc.options) if provider is None else provider
        )
        #: the Redis backends when ``[redis] url`` is set (built lazily: redis is optional).
        self.backends: Any = None
        if cfg.redis.url and None in (objectives, runlog, conversations, limiter, broker):
            from .backends import redis_backends

            self.backends = redis_backends(cfg)
            b = self.backends
            objectives = b.objectives if objectives is None else objectives
            runlog = b.runlog if runlog is None else runlog
            conversations = b.conversations if conversations is None else conversations
            limiter = b.limiter if limiter is None else limiter
            broker = b.broker if broker is None else broker
        lim = cfg.limits
        # `is None`, not `or`: an empty store has a length of 0 and is falsy.
        self.objectives: ObjectiveStore = (
            InMemoryObjectiveStore(
                lim.objectives_per_owner,
                max_owners=lim.max_objective_owners,
                max_steps=lim.max_objective_steps,
                max_bytes=lim.max_objective_bytes,
            )
            if objectives is None
            else objectives
        )
        #: connections held per IP, per user and in all (``[limits] max_connections*``).
        self.admission = ConnectionLimits.from_config(lim)
        rc = cfg.runs
        self.runlog: RunLog = (
            MemoryRunLog(retention=rc.retention, max_runs=rc.max_runs, max_bytes=rc.max_log_bytes)
            if runlog is None
            else runlog
        )
        lim = cfg.limits
        self.conversations: ConversationStore = (
            MemoryConversationStore(
                max_messages=lim.history_messages,
                max_bytes=lim.history_bytes,
                per_owner=lim.conversations_per_owner,
                max_conversations=lim.max_conversations,
            )
            if conversations is None
            else conversations
        )
        self.limiter: Limiter = MemoryLimiter(lim.messages_per_interval, lim.interval) if limiter is None else limiter
        self.broker: Broker = LocalBroker() if broker is None else broker
        #: this engine's id on the broker (its own messages come back and are skipped).
        self.origin = "w-" + secrets.token_urlsafe(9)
        self.broker.subscribe(self._on_bus)
        #: topic -> sessions subscribed to it (SUBSCRIBE, :meth:`subscribe_topic`).
        self.topics: dict[str, set[Session]] = {}
        self._session_topics: dict[Session, set[str]] = {}
        self._topic_authorizer: Callable[[Session, str], Any] | None = None
        #: remote watchers' last heartbeat per live run here (see :meth:`_on_bus`).
        self._backends_started = False
        if verifier is None and cfg.auth.enabled:
            verifier = JWTVerifier(cfg.auth)
        self.verifier = verifier
        #: envelope type -> (handler, is a coroutine function): built-ins and applications.
        self.handlers: dict[str, tuple[Handler, bool]] = {}
        self._client_types: list[type[msgspec.Struct]] = []
        self._codecs: dict[str, Codec] = {}
        self.sessions: set[Session] = set()
        #: live runs (not yet sealed) of this process, by message id.
        self.runs: dict[str, Run] = {}
        #: live runs per owner, for the concurrency limit.
        self.active: dict[str, int] = {}
        self.closing = False
        self._tg: Any = None
        #: the runs' tasks (plain asyncio tasks, see _tasks.py), made with the task group.
        self._run_tasks: TaskSet | None = None
        self._host: Any = None
        self._host_stop: anyio.Event | None = None
        self._runs_idle: anyio.Event | None = None
        register_builtins(self)
        #: metrics and traces: a no-op unless ``[metrics] enabled`` or ``telemetry=`` given.
        self.telemetry: Telemetry = make_telemetry(self, telemetry)
        if cfg.features.follow_up_questions == "broadcast":
            _log.warning(
                "follow_up.broadcast",
                note="follow-up questions derived from one user's conversation go to every client",
            )

    # --- extension points -----------------------------------------------------------------

    def on(self, type: str, data_type: Any = Any) -> Callable[[Handler], Handler]:
        """Register a handler for an application's own client message type.

        Args:
            type: the envelope ``type`` to handle; must not be a built-in one.
            data_type: what ``data`` must decode to (a msgspec Struct, ``dict``...);
                frames that do not match get ``INVALID_MESSAGE`` naming the field.

        Example::

            @engine.on("SEARCH", SearchData)
            async def search(session, frame):
                session.send("SEARCH_RESULTS", {"hits": await find(frame.data.query)})
        """
        if any(t.__struct_config__.tag == type for t in BUILTIN_CLIENT_FRAMES):
            raise ValueError(f"{type!r} is a built-in message type")

        def register(handler: Handler) -> Handler:
            frame_type = msgspec.defstruct(
                f"Frame_{type}",
                [
                    ("data", data_type),
                    ("id", Union[str, None], None),
                    ("timestamp", Union[int, None], None),
                    ("metadata", Union[dict[str, Any], None], None),
                ],
                tag=type,
                tag_field="type",
                kw_only=True,
            )
            self._register(frame_type, handler)
            return handler

        return register

    def _register(self, frame_type: type[msgspec.Struct], handler: Handler) -> None:
        """Put a command type and its handler in the one registry every frame goes through."""
        # msgspec types a tag as str | int | None; every client frame is tagged by its str type.
        tag = cast(str, frame_type.__struct_config__.tag)
        self._client_types = [t for t in self._client_types if t.__struct_config__.tag != tag]
        self._client_types.append(frame_type)
        self.handlers[tag] = (handler, inspect.iscoroutinefunction(handler))
        self._build_codecs()

    def _build_codecs(self) -> None:
        max_bytes = self.config.limits.max_message_bytes
        self._codecs = {
            fmt: Codec(fmt, client_types=self._client_types, max_message_bytes=max_bytes)
            for fmt in (JSON, MSGPACK)
        }

    # --- what adapters call ---------------------------------------------------------------

    #: WebSocket subprotocols the server accepts besides plain JSON.
    subprotocols = (MSGPACK_SUBPROTOCOL,)

    def select_subprotocol(self, offered: Iterable[str]) -> str | None:
        """Pick the subprotocol to accept from the client's offer (None: plain JSON)."""
        return MSGPACK_SUBPROTOCOL if MSGPACK_SUBPROTOCOL in offered else None

    def codec_for(self, subprotocol: str | None) -> Codec:
        return self._codecs[MSGPACK if subprotocol == MSGPACK_SUBPROTOCOL else JSON]

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a handshake from ``origin`` passes ``[security] allowed_origins``."""
        if origin_allowed(self.config.security.allowed_origins, origin):
            return True
        self.telemetry.on_rejected("origin")
        return False

    async def serve(
        self,
        conn: Connection,
        info: ConnectionInfo,
        *,
        dialect: Dialect | None = None,
        commands: Iterable[Any] = (),
    ) -> None:
        """Run the protocol on one accepted connection until it closes.

        When authentication is on, a bad token gets ``ERROR AUTH_FAILED`` and close 1008,
        and never reaches a session.

        Args:
            conn: the connection (duplex, or send-only with a ``receive`` that waits for
                the client to leave).
            info: what the handshake said.
            dialect: how frames are encoded and decoded (the envelope codec negotiated by
                ``info.subprotocol`` by default; the SSE drivers pass theirs).
            commands: decoded commands to handle at once (an SSE request's own).
        """
        if self.closing:
            await conn.close(1001, "server shutting down")
            return
        await self.start()
        codec = dialect or self.codec_for(info.subprotocol)
        # Counted before authentication, so a flood of handshakes holds no more places.
        try:
            lease = self.admission.admit(client_ip(info.client))
        except ConnectionRefused as exc:
            await refuse(conn, codec, exc, client=info.client, timeout=self.config.runs.cleanup_timeout)
            return
        # One coroutine frame for the whole connection (each is kept while it is open).
        try:
            if self.verifier is not None:
                authenticated = await self._authenticate(conn, info, codec, lease)
                if authenticated is None:
                    return
                info = authenticated
            session = Session(self, conn, info, codec)
            self.sessions.add(session)
            try:
                await session.run(commands)
            finally:
                self.sessions.discard(session)
                self._release_bucket(session)
                self._leave_topics(session)
                if session.user_id is None:
                    # What belongs to an anonymous connection dies with it (its runs excepted:
                    # they are resumable by id until they end and expire).
                    with anyio.move_on_after(self.config.runs.cleanup_timeout, shield=True):
                        await self.objectives.drop_owner(session.owner)
                        await self.conversations.drop_owner(session.owner)
        finally:
            lease.release()

    async def _authenticate(
        self, conn: Connection, info: ConnectionInfo, codec: Any, lease: Any
    ) -> ConnectionInfo | None:
        """The connection's identity, or None once a refusal was sent (ERROR, close 1008)."""
        assert self.verifier is not None  # called only when authentication is on
        try:
            info = await authenticate(self.verifier, info)
        except AuthError as exc:
            _log.info("connection.auth_failed", client=info.client, reason=exc.message)
            self.telemetry.on_rejected("auth")
            self.telemetry.on_error(exc.code)
            try:
                await conn.send(codec.encode(EventType.ERROR, ErrorData(exc.code, exc.message, False)))
                await conn.close(1008, "authentication failed")
            except ConnectionClosed:
                pass
            return None
        try:
            lease.bind_user(info.user_id)
        except ConnectionRefused as exc:
            await refuse(conn, codec, exc, client=info.client, timeout=self.config.runs.cleanup_timeout)
            return None
        return info

    # --- delivery: everyone, one user, a topic (any process, through the broker) ---------

    def broadcast(self, type: str, data: Any) -> int:
        """Send one event to every connected client (the RAG seed's broadcasts).

        With a shared broker, the clients of every worker get it. The frame is encoded
        once per wire format, not once per client. Returns how many sessions of this
        process it was queued for.
        """
        self.broker.publish(BusMessage(self.origin, ALL, None, type, data))
        return self._deliver(self.sessions, type, data)

    def send_to_user(self, user_id: str, type: str, data: Any) -> int:
        """Send one event to every connection of ``user_id``, on any worker.

        Returns how many sessions of this process it was queued for.
        """
        self.broker.publish(BusMessage(self.origin, USER, user_id, type, data))
        return self._deliver([s for s in self.sessions if s.user_id == user_id], type, data)

    def publish(self, topic: str, type: str, data: Any) -> int:
        """Send one event to the clients subscribed to ``topic``, on any worker.

        The frame's ``metadata`` is ``{"topic": topic}``. A process that is not a server
        publishes with ``streamcore.backends.RedisPublisher(url).publish(topic, type, data)``.
        Returns how many sessions of this process it was queued for.
        """
        self.broker.publish(BusMessage(self.origin, TOPIC, topic, type, data))
        return self._deliver(self.topics.get(topic, ()), type, data, {"topic": topic})

    @staticmethod
    def _deliver(sessions: Iterable[Session], type: str, data: Any, metadata: Any = None) -> int:
        # Outboxes never block: a dead or slow connection cannot stall the others (the
        # writer's watchdog closes clients that stop reading).
        frames: dict[int, bytes | None] = {}  # None: this codec cannot encode the event
        count = 0
        for session in list(sessions):
            if session.closed:
                continue
            codec = session.codec
            key = id(codec)
            if key in frames:
                frame = frames[key]
            else:
                try:
                    frame = frames[key] = codec.encode(type, data, metadata)
                except Exception:
                    # One wire format failing (MessagePack and an int past 64 bits) does
                    # not keep the event from the clients of the others.
                    _log.exception("delivery.encode_failed", type=type, codec=codec.__class__.__name__)
                    frame = frames[key] = None
            if frame is not None and session.queue(frame):
                count += 1
        return count

    def _on_bus(self, msg: BusMessage) -> None:
        """A message from the broker (another worker, a publisher, or this engine's own)."""
        if msg.origin == self.origin:
            return
        kind = msg.kind
        # What publishes ALL, USER and TOPIC messages (broadcast, send_to_user, publish) always
        # gives their event type, and TOPIC, STOP and WATCH messages their target.
        if kind == ALL:
            assert msg.type is not None
            self._deliver(self.sessions, msg.type, msg.data)
        elif kind == USER:
            assert msg.type is not None
            self._deliver([s for s in self.sessions if s.user_id == msg.target], msg.type, msg.data)
        elif kind == TOPIC:
            assert msg.type is not None and msg.target is not None
            self._deliver(self.topics.get(msg.target, ()), msg.type, msg.data, {"topic": msg.target})
        elif kind == STOP:
            assert msg.target is not None
            run = self.runs.get(msg.target)
            if run is not None and self.may_read(msg.data, run.owner):
                run.stop("user_cancelled")
        elif kind == WATCH:
            assert msg.target is not None
            run = self.runs.get(msg.target)
            if run is not None:
                self._remote_watch(run)

    def topic_authorizer(self, func: Callable[[Session, str], Any]) -> Callable[[Session, str], Any]:
        """Register the hook that decides whether a client may SUBSCRIBE to a topic.

        ``func(session, topic)`` returns (or, as a coroutine function, resolves to) a bool.
        Without a hook, every SUBSCRIBE is refused (``NOT_FOUND``). Usable as a decorator::

            @engine.topic_authorizer
            async def may_follow(session, topic):
                return topic == "indexing" or topic == f"user:{session.user_id}"
        """
        self._topic_authorizer = func
        return func

    async def authorize_topic(self, session: Session, topic: str) -> bool:
        func = self._topic_authorizer
        if func is None:
            return False
        allowed = func(session, topic)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        return bool(allowed)

    #: topics one connection may follow at once.
    max_topics_per_session = 64

    def subscribe_topic(self, session: Session, topic: str) -> None:
        """Make ``session`` receive what is published to ``topic`` (no authorisation check:
        applications call it for their own reasons; clients go through SUBSCRIBE)."""
        mine = self._session_topics.setdefault(session, set())
        if topic in mine:
            return
        if len(mine) >= self.max_topics_per_session:
            raise StreamcoreError(
                f"at most {self.max_topics_per_session} topics per connection",
                code=ErrorCode.RATE_LIMIT,
                retry_after_ms=self.config.limits.retry_after_ms,
            )
        mine.add(topic)
        self.topics.setdefault(topic, set()).add(session)

    def unsubscribe_topic(self, session: Session, topic: str) -> bool:
        """Stop ``session`` receiving ``topic``; False when it was not subscribed."""
        mine = self._session_topics.get(session)
        if not mine or topic not in mine:
            return False
        mine.discard(topic)
        if not mine:
            del self._session_topics[session]
        members = self.topics.get(topic)
        if members is not None:
            members.discard(session)
            if not members:
                del self.topics[topic]
        return True

    def _leave_topics(self, session: Session) -> None:
        for topic in list(self._session_topics.get(session, ())):
            self.unsubscribe_topic(session, topic)

    # --- runs -----------------------------------------------------------------------------

    def start_run(
        self,
        session: Session,
        request: GenerationRequest,
        *,
        request_id: str | None = None,
        conversation: Conversation | None = None,
    ) -> Run:
        """Admit and start a run for ``session``'s owner; ``session`` follows it.

        Raises:
            StreamcoreError: ``SERVER_ERROR`` while shutting down, ``RATE_LIMIT`` past the
                owner's concurrency limit, the total limit, or a full run log.
        """
        if self.closing or self._tg is None:
            self.telemetry.on_rejected("shutting_down")
            raise StreamcoreError("the server is shutting down; try again shortly", code=ErrorCode.SERVER_ERROR)
        lim = self.config.limits
        owner = session.owner
        # 128 random bits: an anonymous run is reachable by its id alone.
        message_id = "msg-" + secrets.token_urlsafe(16)
        # In memory the slot is taken here; a shared limiter decides in the run's task
        # (the answer needs I/O), before the provider is called.
        slot = self.limiter.try_acquire(owner, message_id, lim.max_concurrent_generations)
        if slot is False:
            self.telemetry.on_rejected("concurrency")
            raise StreamcoreError(
                f"at most {lim.max_concurrent_generations} generations at once",
                code=ErrorCode.RATE_LIMIT,
                retry_after_ms=lim.retry_after_ms,
            )
        try:
            if len(self.runs) >= lim.max_generations:
                raise StreamcoreError(
                    "the server is busy; try again shortly",
                    code=ErrorCode.RATE_LIMIT,
                    retry_after_ms=lim.retry_after_ms,
                )
            writer = self.runlog.open(message_id, owner)
        except BaseException as exc:
            if slot:
                self._release_slot(owner, message_id)
            if isinstance(exc, StreamcoreError):  # max_generations, or the run log full
                self.telemetry.on_rejected("capacity")
            raise
        run = Run(self, message_id, owner, request, writer, request_id=request_id, conversation=conversation)
        self.runs[message_id] = run
        self.active[owner] = self.active.get(owner, 0) + 1
        self.telemetry.on_run_start(run, session)
        session.send(EventType.AI_THINKING, ThinkingData(now_ms()), request_id=request_id, eager=True)
        session.follow(Subscription(session, run, message_id, request_id), run)
        assert self._run_tasks is not None  # made with _tg
        if slot:  # admitted here: nothing to wait for before running
            self._run_tasks.start_soon(run.execute)
        else:
            self._run_tasks.start_soon(self._admit_and_execute, run, True)
        return run

    async def _admit_and_execute(self, run: Run, acquire: bool) -> None:
        """Take the run's slot from a shared limiter if needed, then run it; refused: ERROR
        and END. Nothing a run raises reaches the engine's task group (other runs go on)."""
        limit = self.config.limits.max_concurrent_generations
        admitted = True
        if acquire:
            try:
                admitted = await self.limiter.acquire(run.owner, run.message_id, limit)
            except Exception:  # a limiter bug: the worker's own count decides
                _log.exception("limits.failed", message_id=run.message_id)
                admitted = self.active.get(run.owner, 0) <= limit
        if admitted:
            try:
                await run.execute()
            except Exception:
                _log.exception("run.failed", message_id=run.message_id)
            return
        lim = self.config.limits
        _log.info("generation.refused", message_id=run.message_id, reason="concurrency", limit=limit)
        self.telemetry.on_rejected("concurrency")
        failure = Failure(ErrorCode.RATE_LIMIT, f"at most {limit} generations at once", True, lim.retry_after_ms)
        for entry in run.machine.finish("error", failure=failure):
            run._emit(entry)
        run._seal()

    def _release_slot(self, owner: str, message_id: str) -> None:
        release_now = getattr(self.limiter, "release_now", None)
        if release_now is not None:
            release_now(owner, message_id)
        elif self._tg is not None:
            self._tg.start_soon(self.limiter.release, owner, message_id)

    @staticmethod
    def may_read(reader: str, owner: str) -> bool:
        # A user reaches only their own runs; anonymous runs are reachable by any
        # anonymous connection that knows the (unguessable) message id.
        return reader == owner or (reader.startswith("a:") and owner.startswith("a:"))

    async def resume(
        self, session: Session, message_id: str, last_seq: int = 0, *, request_id: str | None = None
    ) -> None:
        """Make ``session`` follow a run from ``last_seq`` (the RESUME command).

        Raises:
            NotFound: unknown, expired, or another owner's run (indistinguishable).
        """
        last_seq = max(0, last_seq)  # every seq is greater than a negative one: all of them
        run = self.runs.get(message_id)
        if run is not None:
            if not self.may_read(session.owner, run.owner):
                raise NotFound(f"no such message {message_id[:128]!r}")
            self.telemetry.on_resume("live", run.machine.seq - last_seq)
            session.follow(run.reader(session, request_id, last_seq), run)
            return
        # A finished run kept by this process's memory log is read in place: nothing to
        # copy, expand or wait for. A shared log is pulled (below).
        record = self._kept(message_id)
        if record is not None and record.sealed:
            if not self.may_read(session.owner, record.owner):
                raise NotFound(f"no such message {message_id[:128]!r}")
            self.telemetry.on_resume("log", len(record.entries) - last_seq)
            session.follow(Subscription(session, record, message_id, request_id, last_seq))
            return
        info = await self.runlog.info(message_id)
        if info is None or not self.may_read(session.owner, info.owner):
            raise NotFound(f"no such message {message_id[:128]!r}")
        self.telemetry.on_resume("log", info.last_seq - last_seq)
        source = _PulledSource()
        sub = Subscription(session, source, message_id, request_id, last_seq)
        session.follow(sub)
        if session._tasks is not None and not sub.closed:
            session._tasks.start_soon(self._pull, sub, source, message_id)

    async def _pull(self, sub: Subscription, source: _PulledSource, message_id: str) -> None:
        """Read a run that is not live here from the log into ``sub``, until it is sealed.

        With a shared broker it tells the worker running it, every third of the grace
        period, that someone still follows (so the run is not abandoned). When the log
        cannot be read it retries for up to ``grace_period`` (at least 5 s), then sends a
        retryable ERROR and lets go (the client may RESUME from its last ``seq``).
        """
        cursor = sub.cursor
        shared = self.broker.shared
        rc = self.config.runs
        beat_every = max(1.0, rc.grace_period / 3)
        next_beat = 0.0
        failing_since: float | None = None
        backoff = 0.05
        while not sub.closed and not source.sealed:
            now = anyio.current_time()
            if shared and now >= next_beat:
                self.broker.publish(BusMessage(self.origin, WATCH, message_id))
                next_beat = now + beat_every
            try:
                entries, done = await self.runlog.read(message_id, cursor, wait=1.0)
            except StreamcoreError as exc:
                failing_since = failing_since or now
                if now - failing_since > max(5.0, rc.grace_period):
                    sub.session.send_error(exc, sub.request_id)
                    sub.close()
                    return
                await anyio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            failing_since, backoff = None, 0.05
            if entries:
                if not source.entries:  # what the log holds decides, not what was asked
                    source.base = entries[0][0] - 1
                source.entries.extend(entries)
                cursor = entries[-1][0]
            source.sealed = done
            sub.pump()

    def stop_run(self, message_id: str, owner: str) -> bool:
        """Stop a live run of ``owner``; False when there is no such live run here."""
        run = self.runs.get(message_id)
        if run is None or not self.may_read(owner, run.owner):
            return False
        run.stop("user_cancelled")
        return True

    def stop_elsewhere(self, message_id: str, owner: str) -> None:
        """Ask the worker running ``message_id`` to stop it (it checks ``owner`` again)."""
        if self.broker.shared:
            self.broker.publish(BusMessage(self.origin, STOP, message_id, None, owner))

    async def stop_anywhere(self, message_id: str, owner: str) -> bool:
        """Stop a run of ``owner`` on whichever worker runs it.

        Returns False when the run is unknown, expired or another owner's; True when it was
        stopped, asked to stop, or had already ended (a client racing the end).

        Raises:
            StreamcoreError: the shared log is unreachable (retryable).
        """
        if self.stop_run(message_id, owner):
            return True
        if not self.broker.shared:
            return self.run_known(message_id, owner)
        info = await self.runlog.info(message_id)
        if info is None or not self.may_read(owner, info.owner):
            return False
        if not info.done:
            self.stop_elsewhere(message_id, owner)
        return True

    def _remote_watch(self, run: Run) -> None:
        """A reader on another worker follows ``run``: restart its grace period."""
        if run.sealed or self._tg is None or self.closing or self.config.runs.always_finish:
            return
        # A new period; grace_scope() ends the one under way. A run with readers has no
        # grace period (subscribe() ends it), so there is nothing to restart then.
        if not run.subscribers:
            self._tg.start_soon(run.grace, self.config.runs.grace_period, run.grace_scope())

    def run_known(self, message_id: str, owner: str) -> bool:
        """Whether ``owner`` may know ``message_id`` as a finished, retained run."""
        record = self._kept(message_id)
        return record is not None and self.may_read(owner, record.owner)

    def _kept(self, message_id: str) -> Any:
        """The run's record in this process's memory log (its synchronous ``get``), or None:
        not kept, or a shared log, which has no local look-up."""
        get = getattr(self.runlog, "get", None)
        return get(message_id) if get is not None else None

    def unsubscribe(self, sub: Subscription) -> None:
        if isinstance(sub.source, Run):
            sub.source.unsubscribe(sub)

    def _orphaned(self, run: Run) -> None:
        """The last reader of a live run left: wait for a RESUME, then cancel it."""
        rc = self.config.runs
        if rc.always_finish or self.closing or self._tg is None:
            return
        if rc.grace_period == 0:
            run.stop("user_cancelled")
        else:
            self._tg.start_soon(run.grace, rc.grace_period, run.grace_scope())

    def _run_sealed(self, run: Run) -> None:
        self.telemetry.on_run_sealed(run)
        self.runs.pop(run.message_id, None)
        self._release_slot(run.owner, run.message_id)
        count = self.active.get(run.owner, 0)
        if count <= 1:
            self.active.pop(run.owner, None)
        else:
            self.active[run.owner] = count - 1
        if not self.runs and self._runs_idle is not None:
            self._runs_idle.set()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        if self._tg is None:
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            self._run_tasks = TaskSet(self._tg)
            self._start_sweepers(self._tg)
            await self._start_backends()
        return self

    async def _start_backends(self) -> None:
        """Start the backends' background tasks (flushing, Pub/Sub) in the engine's group."""
        if self._backends_started or self._tg is None:
            return
        self._backends_started = True
        for backend in (self.runlog, self.broker, self.limiter):
            start = getattr(backend, "start", None)
            if start is not None:
                start(self._tg)
        wait_ready = getattr(self.broker, "wait_ready", None)
        if wait_ready is not None and not await wait_ready(2.0):
            _log.warning("broker.not_ready", note="serving; messages from other workers arrive once it connects")

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the engine's task group if no ``async with`` did (asyncio only)."""
        if self._tg is not None:
            return
        import asyncio

        started = anyio.Event()
        self._host_stop = anyio.Event()
        self._host = asyncio.get_running_loop().create_task(self._hold(started))
        await started.wait()
        await self._start_backends()

    async def _hold(self, started: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._run_tasks = TaskSet(tg)
            self._start_sweepers(tg)
            started.set()
            assert self._host_stop is not None  # set by start() before this task
            await self._host_stop.wait()
            tg.cancel_scope.cancel()

    def _start_sweepers(self, tg: Any) -> None:
        tg.start_soon(self._sweep)
        tg.start_soon(self._sweep_runs)

    async def _sweep(self) -> None:
        """One timer for every connection: idle ones and clients that stopped reading."""
        lim = self.config.limits
        # A quarter of the shortest timeout it enforces, at most a second (idle_timeout 0: off).
        timeouts = [lim.slow_client_timeout] + ([lim.idle_timeout] if lim.idle_timeout else [])
        tick = min(1.0, min(timeouts) / 4)
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            for session in list(self.sessions):
                session.check(now)

    async def _sweep_runs(self) -> None:
        """One timer for every run's deadline (``first_chunk_timeout``,
        ``generation_timeout``), instead of two timers set and cancelled per reply. A
        deadline is enforced at most a tenth of its own length late, and at most a second
        (at least 10 ms: a tiny timeout must not make this a busy loop)."""
        lim = self.config.limits
        tick = max(0.01, min(1.0, lim.first_chunk_timeout / 10, lim.generation_timeout / 10))
        runs = self.runs
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            for run in [run for run in runs.values() if run.deadline <= now]:
                run.expire(now)

    async def shutdown(self, timeout: float | None = None) -> None:
        """End every run with ``server_shutdown``, flush, and close every socket with 1001.

        Returns within ``timeout`` (``server.shutdown_timeout``) plus about a second,
        whatever clients and providers do.
        """
        self.closing = True
        timeout = self.config.server.shutdown_timeout if timeout is None else timeout
        deadline = anyio.current_time() + timeout
        sessions = list(self.sessions)
        _log.info("server.shutdown", sessions=len(sessions), runs=len(self.runs))
        for run in list(self.runs.values()):
            run.stop("server_shutdown")
        if self.runs:
            self._runs_idle = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._runs_idle.wait()
        remaining = max(0.0, deadline - anyio.current_time())
        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(session.shutdown, remaining)

    async def aclose(self) -> None:
        """Cancel what still runs and close the provider and the stores (bounded in time)."""
        self.closing = True
        for run in list(self.runs.values()):
            run.stop("server_shutdown")
        cleanup = self.config.runs.cleanup_timeout
        if self.runs:
            self._runs_idle = anyio.Event()
            with anyio.move_on_after(cleanup):
                await self._runs_idle.wait()
        if self._run_tasks is not None:  # what is left after the runs sealed (or did not)
            self._run_tasks.cancel()
            await self._run_tasks.wait(cleanup)
        tg, self._tg = self._tg, None
        if self._host is not None:
            assert self._host_stop is not None  # start() sets both
            self._host_stop.set()
            with anyio.move_on_after(cleanup):
                await self._host
            self._host = None
        elif tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            await close_provider(self.provider, cleanup)
            for store in (self.runlog, self.conversations, self.objectives, self.broker, self.limiter, self.backends):
                aclose = getattr(store, "aclose", None)
                if aclose is not None:
                    with anyio.move_on_after(cleanup):
                        try:
                            await aclose()
                        except Exception:  # a backend that fails to close never fails shutdown
                            _log.exception("backend.close_failed", backend=type(store).__name__)

    # --- helpers for sessions -------------------------------------------------------------

    def system_messages(self) -> list[ChatMessage]:
        prompt = self.config.provider.system_prompt
        return [ChatMessage("system", prompt)] if prompt else []

    def request(self, messages: list[ChatMessage], **fields: Any) -> GenerationRequest:
        """A :class:`GenerationRequest` with the configured model."""
        return GenerationRequest(messages=messages, model=self.config.provider.model, **fields)

    async def follow_up_questions(self, question: str, answer: str) -> list[str]:
        """Ask the provider for follow-up questions to ``question`` answered by ``answer``.

        Used after each reply when ``[features] follow_up_questions`` is on; applications
        call it too (the RAG seed generates them after an HTTP query, then broadcasts).

        Raises:
            ProviderError: the provider failed or its output was not a list of strings.
        """
        request = self.request(
            [
                ChatMessage(
                    "system",
                    "Suggest three short follow-up questions the user might ask next. "
                    "Answer with a JSON array of strings and nothing else.",
                ),
                ChatMessage("user", question),
                ChatMessage("assistant", answer),
            ],
            purpose="follow_up",
            json_mode=True,
        )
        text = await collect_text(self.provider, request)
        try:
            value = _questions.decode(strip_code_fence(text))
        except msgspec.DecodeError as exc:
            raise ProviderError(f"the model's follow-up questions were not valid: {exc}") from None
        if isinstance(value, dict):  # {"questions": [...]}, which JSON modes often produce
            value = next(iter(value.values()), [])
        return [q.strip() for q in value if q.strip()][:5]

    def rate_bucket(self, session: Session) -> RateBucket:
        """The message bucket of the session's user (its own when anonymous).

        Its ``take()`` returns 0 or the milliseconds to wait; with a shared limiter it may
        return an awaitable of that number.
        """
        return self.limiter.rate(session)

    def _release_bucket(self, session: Session) -> None:
        self.limiter.release_rate(session)

