"""streamcore's own envelopes (SPEC.md) as SSE events.

Each envelope is one SSE event: ``data: <the envelope's JSON>``, plus ``id: <seq>`` for
the events of a run (AI_MESSAGE_START, chunks, ERROR of a run, AI_MESSAGE_END,
application events), so a ``Last-Event-ID`` resumes after it. There is no ``event:``
field: an ``EventSource``'s ``onmessage`` sees every envelope and reads its ``type``.

The request body of ``POST`` is one client frame of SPEC.md (``USER_MESSAGE``,
``GENERATE_OBJECTIVE``, ``RESUME`` or an application's own type), decoded by the engine's
codec: the same validation and messages as on the WebSocket.
"""

from __future__ import annotations

from typing import Any

from ..codec import Codec
from ..dialect import ChunkEncoder
from ..errors import ProtocolError
from ..events import Entry
from ..ids import Stamp
from ..protocol import EventType
from .base import SSEDialect, encode_json, seq_bytes, sse_event

__all__ = ["EnvelopeSSE"]

#: Built-in commands that answer with one frame or none: they have no stream to follow.
_NOT_STREAMING = frozenset({EventType.PING, EventType.STOP_GENERATION, EventType.UPDATE_OBJECTIVE})


class EnvelopeSSE(SSEDialect):
    """SPEC.md envelopes over SSE (stateless: entries are encoded at once).

    Args:
        codec: the engine's JSON codec (``engine.codec_for(None)``): it knows the
            application's own command types.
    """

    name = "envelope"

    def __init__(self, codec: Codec) -> None:
        super().__init__(max_message_bytes=codec.max_message_bytes)
        self.codec = codec

    def parse(self, raw: str | bytes) -> Any:
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("the request body is not UTF-8 JSON") from None
        frame = self.codec.decode(raw)
        tag = frame.__struct_config__.tag
        if tag in _NOT_STREAMING:
            raise ProtocolError(
                f"{tag} does not stream a reply: send it on the WebSocket "
                "(stop a run with POST <path>/<messageId>/stop)",
                request_id=getattr(frame, "id", None),
            )
        return frame

    def request_id(self, raw: str | bytes) -> str | None:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        return self.codec.request_id(raw)

    def encode_event(self, type: str, data: Any, metadata: Any = None) -> bytes:
        return sse_event(self.codec.encode(type, data, metadata))

    def encode_entry(
        self, entry: Entry, message_id: str, metadata: Any = None, request_id: str | None = None
    ) -> bytes:
        return self.render_entry(entry, message_id, metadata, request_id)

    def render_entry(self, entry: Entry, message_id: str, metadata: Any, request_id: str | None) -> bytes:
        return sse_event(self.codec.encode_entry(entry, message_id, metadata, request_id), entry[0])

    #: its chunk encoder has no state: a reader measures its envelope as on a WebSocket.
    chunk_overhead = staticmethod(Codec.chunk_overhead)

    def chunk_encoder(self, message_id: str, metadata: Any = None, *, reasoning: bool = False) -> ChunkEncoder:
        """The envelope chunk of :class:`~streamcore.codec.Codec`, framed as one SSE event.

        The bytes around the content are laid out once per message, as the WebSocket
        codec does; a chunk costs one ``bytes.join``.
        """
        self.learn(message_id)
        mid = encode_json(message_id)
        kind = EventType.AI_REASONING_CHUNK if reasoning else EventType.AI_MESSAGE_CHUNK
        # id: <seq>\ndata: {"id":"<mid>.<seq>","type":...,"timestamp":<ms>,"data":{...}}\n\n
        data_head = b'\ndata: {"id":' + mid[:-1] + b"."
        middle = b'","type":"' + kind.encode() + b'","timestamp":'
        data = b',"data":{"messageId":' + mid + b',"content":'
        index_key = b',"index":'
        seq_key = b',"seq":'
        tail = b"}}\n\n"
        if metadata:
            tail = b'},"metadata":' + encode_json(metadata) + b"}\n\n"
        encode_str = encode_json
        join = b"".join

        if reasoning:

            def encode_reasoning(content: str, index: int, seq: int, stamp: Stamp) -> bytes:
                s = seq_bytes(seq)
                return join((b"id: ", s, data_head, s, middle, stamp[1], data, encode_str(content), seq_key, s, tail))

            return encode_reasoning

        def encode_text(content: str, index: int, seq: int, stamp: Stamp) -> bytes:
            s = seq_bytes(seq)
            return join((
                b"id: ", s, data_head, s, middle, stamp[1], data, encode_str(content),
                index_key, seq_bytes(index), seq_key, s, tail,
            ))

        return encode_text
