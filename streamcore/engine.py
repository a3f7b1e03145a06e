"""The engine: one per application, shared by every connection and every adapter.

It owns the configuration, the provider, the objective store, the codecs, the registry of
application handlers and the live sessions (for broadcasts and graceful shutdown). It
imports no web framework: adapters hand it a :class:`~streamcore.transport.Connection`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Union

import anyio
import msgspec
import structlog

from .codec import JSON, MSGPACK, MSGPACK_SUBPROTOCOL, Codec
from .auth import AuthError, JWTVerifier, Verifier, authenticate, origin_allowed
from .config import Config
from .errors import ConnectionClosed, ProviderError
from .objectives import InMemoryObjectiveStore, ObjectiveStore, strip_code_fence
from .protocol import BUILTIN_CLIENT_FRAMES, ErrorData, EventType
from .provider import ChatMessage, GenerationRequest, Provider, collect_text, load_provider
from .ratelimit import TokenBucket
from .session import Session
from .transport import Connection, ConnectionInfo

__all__ = ["Engine", "Handler"]

_log = structlog.get_logger("streamcore")

_questions = msgspec.json.Decoder(Union[list[str], dict[str, list[str]]])

#: ``handler(session, frame)``; may be a coroutine function. ``frame.data`` is typed.
Handler = Callable[[Session, Any], Any]


class Engine:
    """Runs the protocol for any number of connections.

    Args:
        config: the configuration (defaults when omitted).
        provider: a provider instance; loaded from ``config.provider`` when omitted.
        objectives: where objectives live (in memory by default).
        verifier: authenticates connections (``[auth]``'s JWT check when configured);
            ``verifier(token, info)`` returns a user id or claims, or raises AuthError.

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
    ) -> None:
        self.config = config or Config()
        pc = self.config.provider
        self.provider: Provider = provider or load_provider(pc.name, model=pc.model, options=pc.options)
        self.objectives: ObjectiveStore = objectives or InMemoryObjectiveStore()
        if verifier is None and self.config.auth.enabled:
            verifier = JWTVerifier(self.config.auth)
        self.verifier = verifier
        self.handlers: dict[str, Handler] = {}
        self._client_types: list[type] = list(BUILTIN_CLIENT_FRAMES)
        self._codecs: dict[str, Codec] = {}
        self.sessions: set[Session] = set()
        #: generations running per owner (user id, or session id when anonymous).
        self.active: dict[str, int] = {}
        self._buckets: dict[str, list] = {}
        self.closing = False
        self._build_codecs()

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
            self._client_types = [t for t in self._client_types if t.__struct_config__.tag != type]
            self._client_types.append(frame_type)
            self.handlers[type] = handler
            self._build_codecs()
            return handler

        return register

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
        return origin_allowed(self.config.security.allowed_origins, origin)

    async def serve(self, conn: Connection, info: ConnectionInfo) -> None:
        """Run the protocol on one accepted connection until it closes.

        When authentication is on, a bad token gets ``ERROR AUTH_FAILED`` and close 1008,
        and never reaches a session.
        """
        if self.closing:
            await conn.close(1001, "server shutting down")
            return
        if self.verifier is not None:
            try:
                info = await authenticate(self.verifier, info)
            except AuthError as exc:
                _log.info("connection.auth_failed", client=info.client, reason=exc.message)
                codec = self.codec_for(info.subprotocol)
                try:
                    await conn.send(
                        codec.encode(EventType.ERROR, ErrorData(exc.code, exc.message, False))
                    )
                    await conn.close(1008, "authentication failed")
                except ConnectionClosed:
                    pass
                return
        session = Session(self, conn, info, self.codec_for(info.subprotocol))
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self._release_bucket(session)

    def broadcast(self, type: str, data: Any) -> int:
        """Send one event to every connected client (the RAG seed's broadcasts).

        The frame is encoded once per wire format, not once per client. Returns how many
        sessions it was queued for.
        """
        frames: dict[int, bytes] = {}
        count = 0
        for session in list(self.sessions):
            if session.closed:
                continue
            codec = session.codec
            frame = frames.get(id(codec))
            if frame is None:
                frame = frames[id(codec)] = codec.encode(type, data)
            session.outbox.put(frame)
            count += 1
        return count

    async def shutdown(self, timeout: float | None = None) -> None:
        """End every open generation with ``server_shutdown`` and close every socket with 1001."""
        self.closing = True
        timeout = self.config.server.shutdown_timeout if timeout is None else timeout
        sessions = list(self.sessions)
        _log.info("server.shutdown", sessions=len(sessions))
        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(session.shutdown, timeout)

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

    def rate_bucket(self, session: Session) -> TokenBucket:
        """The message bucket of the session's user (its own when anonymous)."""
        lim = self.config.limits
        if not session.user_id:
            return TokenBucket(lim.messages_per_interval, lim.interval)
        entry = self._buckets.get(session.user_id)
        if entry is None:
            entry = self._buckets[session.user_id] = [TokenBucket(lim.messages_per_interval, lim.interval), 0]
        entry[1] += 1
        return entry[0]

    def _release_bucket(self, session: Session) -> None:
        entry = self._buckets.get(session.user_id or "")
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._buckets[session.user_id]

