"""What the SSE dialects share: SSE framing, late rendering of run events, resume priming.

An SSE dialect is a :class:`~streamcore.dialect.Dialect` (one instance per HTTP response,
so it may keep the per-stream state its protocol needs: which text or reasoning part is
open) plus what an SSE driver (:mod:`streamcore.adapters.sse`) asks of it:

- :meth:`SSEDialect.parse` turns the request body into one command (a msgspec Struct of
  :mod:`streamcore.protocol` or an application's), dispatched by the engine's one handler
  registry; the driver hands the body to the session as the connection's first "frame",
  so it goes through the same rate limit and error path as a WebSocket frame;
- every SSE event of a run carries ``id: <seq>`` (on the last event of the group one log
  entry produces), so ``Last-Event-ID`` resumes exactly after it;
- :meth:`SSEDialect.trailer` is what closes a completed stream (``data: [DONE]`` for the
  AI SDK, ``RUN_FINISHED`` for AG-UI).

Late rendering. Text and reasoning deltas are encoded when the connection's writer takes
them from the outbox (merged under backpressure), whereas other run-log entries are
encoded when they are put in it. A stateful dialect (``text-end`` must close an open text
part before ``finish``) therefore encodes those entries at send time instead: its
:meth:`~SSEDialect.encode_entry` queues the entry and returns the :data:`LATE`
placeholder, and the driver calls :meth:`~SSEDialect.render_late` when it reaches that
frame, after every delta before it was encoded. Frames leave the outbox in the order they
were put, so the queue and the placeholders stay in step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec

from ..errors import ProtocolError
from ..events import Entry
from ..log import get_logger
from ..protocol import EventType

__all__ = ["SSEDialect", "LATE", "HEARTBEAT", "NOTHING", "sse_event", "kebab", "seq_bytes", "encode_json"]

_log = get_logger("streamcore")

#: The placeholder frame of an entry rendered at send time (a real frame never is 1 byte).
LATE = b"\x00"
#: An SSE comment: keeps proxies and load balancers from closing an idle stream.
HEARTBEAT = b": keep-alive\n\n"
#: Frames a dialect gives for events it has no equivalent for (AI_THINKING, PONG); the
#: driver sends nothing, but the first one commits the response headers.
NOTHING = b""

_SMALL = [str(i).encode() for i in range(4096)]

_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode


def seq_bytes(seq: int) -> bytes:
    return _SMALL[seq] if 0 <= seq < 4096 else str(seq).encode()


def sse_event(payload: bytes, seq: int | None = None) -> bytes:
    """One SSE event: ``id: <seq>`` (when given) and one ``data:`` line.

    JSON from msgspec never holds a raw newline (it escapes them), so one line suffices.
    """
    if seq is None:
        return b"data: " + payload + b"\n\n"
    return b"id: " + seq_bytes(seq) + b"\ndata: " + payload + b"\n\n"


def kebab(type: str) -> str:
    """``OBJECTIVE_GENERATED`` -> ``objective-generated`` (AI SDK ``data-*`` part names)."""
    return type.lower().replace("_", "-")


class SSEDialect:
    """Base of the SSE dialects (one instance per response).

    Attributes:
        name: the dialect's name in logs and routes (``envelope``, ``aisdk``, ``agui``).
        message_id: the run this response streams, once known.
        error: ``(frame, ErrorData)`` of the last non-run ERROR encoded: when it is the
            first frame of a response, the driver answers with an HTTP error status.
        ended: the run's END was rendered (the trailer may close the stream).
        prepared: a command the driver built itself (a resume), returned by the next
            :meth:`decode` instead of parsing the body.
    """

    name = "sse"
    binary = False
    #: response headers besides the SSE ones (the AI SDK's protocol header...).
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, *, max_message_bytes: int = 1 << 20) -> None:
        self.max_message_bytes = max_message_bytes
        self.message_id: str | None = None
        self.error: tuple[bytes, Any] | None = None
        self.ended = False
        self.prepared: Any = None
        self._late: deque = deque()

    # --- requests ---------------------------------------------------------------------------

    def decode(self, raw: str | bytes) -> Any:
        """The request's command: the prepared one (a resume), else the parsed body."""
        prepared, self.prepared = self.prepared, None
        if prepared is not None:
            return prepared
        return self.parse(raw)

    def parse(self, raw: str | bytes) -> Any:
        """The request body -> one command Struct; raises ProtocolError naming the problem."""
        raise ProtocolError(f"the {self.name} dialect takes no request body here")

    def request_id(self, raw: str | bytes) -> str | None:
        return None

    # --- events -----------------------------------------------------------------------------

    def encode(self, type: str, data: Any, metadata: Any = None) -> bytes:
        frame = self.encode_event(type, data, metadata)
        if type == EventType.ERROR:
            self.error = (frame, data)  # the driver compares identity: never NOTHING
        return frame

    def encode_event(self, type: str, data: Any, metadata: Any = None) -> bytes:
        raise NotImplementedError

    def learn(self, message_id: str) -> None:
        """The run this response follows (called when its subscription is created)."""
        if self.message_id is None:
            self.message_id = message_id

    def encode_entry(
        self, entry: Entry, message_id: str, metadata: Any = None, request_id: str | None = None
    ) -> bytes:
        """Queue the entry and return :data:`LATE`: rendered by :meth:`render_late`."""
        self._late.append((entry, message_id, metadata, request_id))
        return LATE

    def defer_event(self, type: str, data: Any) -> bytes:
        """Queue an event without a run (a broadcast) to render in order at send time."""
        self._late.append((None, type, data, None))
        return LATE

    def render_late(self) -> bytes:
        """Render the oldest queued item, now that every delta before it was encoded."""
        entry, message_id, metadata, request_id = self._late.popleft()
        try:
            if entry is None:  # a deferred event: (None, type, data, None)
                return self.render_event(message_id, metadata)
            return self.render_entry(entry, message_id, metadata, request_id)
        except Exception:
            # An application payload that cannot be encoded: skip it, keep the stream.
            _log.exception("sse.encode_failed", message_id=self.message_id, dialect=self.name)
            return NOTHING

    def render_event(self, type: str, data: Any) -> bytes:
        """A deferred event (see :meth:`defer_event`)."""
        return NOTHING

    def render_entry(self, entry: Entry, message_id: str, metadata: Any, request_id: str | None) -> bytes:
        raise NotImplementedError

    def trailer(self) -> bytes:
        """What closes a stream whose END was rendered (nothing by default)."""
        return NOTHING

    def prime(self, entries: Iterable[Entry]) -> None:
        """Set the per-stream state as if ``entries`` had been sent (a Last-Event-ID resume)."""

    def preamble(self) -> bytes:
        """What a resumed stream starts with, before the entries after its cursor.

        Protocols whose clients check each stream on its own (AG-UI) restate the run and
        reopen what was open at the cursor; the client appends to what it already has.
        """
        return NOTHING


_USAGE_NAMES = (
    ("prompt_tokens", "inputTokens"),
    ("completion_tokens", "outputTokens"),
    ("total_tokens", "totalTokens"),
    ("reasoning_tokens", "reasoningTokens"),
    # a provider written before the neutral types hands the wire Usage
    ("promptTokens", "inputTokens"),
    ("completionTokens", "outputTokens"),
    ("totalTokens", "totalTokens"),
    ("reasoningTokens", "reasoningTokens"),
)


def usage_dict(usage: Any) -> dict[str, Any]:
    """Token counts under the names the AI SDK and AG-UI share (``inputTokens``...)."""
    out: dict[str, Any] = {}
    for attr, name in _USAGE_NAMES:
        value = getattr(usage, attr, None)
        if value is not None:
            out[name] = value
    return out



#: What a parts dialect has open: nothing, a text part, a reasoning part.
PART_NONE, PART_TEXT, PART_REASONING = 0, 1, 2
_END_OF_DELTA = b"}\n\n"


class PartsDialect(SSEDialect):
    """A dialect whose deltas belong to parts opened on first use (the AI SDK's
    ``text-start``/``reasoning-start``, AG-UI's ``TEXT_MESSAGE_START``/``REASONING_*``).

    Subclasses keep ``_open`` (a ``PART_*``), ``_text_head`` and ``_reasoning_head`` (the
    bytes before a delta's JSON-encoded text), and ``_start(part)`` returning the frames
    that close the open part and open ``part``.
    """

    _open: int
    _text_head: bytes
    _reasoning_head: bytes

    def _start(self, part: int) -> bytes:
        raise NotImplementedError

    def chunk_encoder(self, message_id: str, metadata: Any = None, *, reasoning: bool = False) -> Any:
        self.learn(message_id)
        join = b"".join
        encode_str = encode_json
        end = _END_OF_DELTA
        part = PART_REASONING if reasoning else PART_TEXT

        def encode(content: str, index: int, seq: int, stamp: Any) -> bytes:
            if self._open != part:
                opening = self._start(part)  # (re)builds the heads too
                head = self._reasoning_head if reasoning else self._text_head
                return join((opening, b"id: ", seq_bytes(seq), head, encode_str(content), end))
            head = self._reasoning_head if reasoning else self._text_head
            return join((b"id: ", seq_bytes(seq), head, encode_str(content), end))

        return encode
