"""The envelope dialect: streamcore's own frames (SPEC.md), JSON or MessagePack (no I/O).

One :class:`Codec` per wire format (JSON, or MessagePack when negotiated) holds the
msgspec encoder and the tagged-union decoder, created once. It implements
:class:`~streamcore.dialect.Dialect`: client frames decode to commands (tagged Structs),
run-log entries encode to envelopes. Chunks, the only frames sent at a high rate, take a
dedicated path: the JSON bytes around the content are fixed per message, so a chunk frame
is one ``bytes.join`` around the encoded content, with no Struct or dict built per chunk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Protocol, Union

import msgspec

from .dialect import ChunkEncoder
from .errors import ProtocolError
from .events import AppEvent, Ended, Entry, Failure, Kind, Started, Usage
from .ids import Stamp, new_id, now_ms
from .protocol import (
    BUILTIN_CLIENT_FRAMES,
    Envelope,
    ErrorData,
    EventType,
    MessageChunkData,
    MessageEndData,
    MessageStartData,
    ReasoningChunkData,
)
from .protocol import Usage as WireUsage

__all__ = ["Codec", "JSON", "MSGPACK", "MSGPACK_SUBPROTOCOL"]

JSON = "json"
MSGPACK = "msgpack"
#: WebSocket subprotocol a client offers to receive and send MessagePack frames.
MSGPACK_SUBPROTOCOL = "streamcore.msgpack"


_SMALL_INTS = [str(i).encode() for i in range(4096)]  # chunk indexes and seqs of most messages
# The bytes between a chunk's content and its seq, for each small index: two join parts
# fewer per chunk (a join's cost grows with its parts; about 240 KB for the process).
_INDEX_SEQ = [b',"index":' + i + b',"seq":' for i in _SMALL_INTS]


class _Probe(msgspec.Struct):
    """What can still be read from a frame that failed validation."""

    id: Any = None
    type: Any = None


class _Decoder(Protocol):
    """A msgspec JSON or MessagePack decoder (the caller gives each the input it reads)."""

    def decode(self, buf: Any, /) -> Any: ...


class Codec:
    """Encoder and decoder for one connection's wire format.

    Args:
        format: ``"json"`` (text frames, the default) or ``"msgpack"`` (binary frames).
        client_types: the tagged Structs accepted from clients; applications add theirs.
        max_message_bytes: client frames larger than this are refused.
        max_nesting: levels of arrays and objects allowed inside a frame's free-form
            fields (``context``, ``updates``, ``metadata``, application data).
    """

    def __init__(
        self,
        format: str = JSON,
        *,
        client_types: Iterable[type[msgspec.Struct]] = BUILTIN_CLIENT_FRAMES,
        max_message_bytes: int = 1 << 20,
        max_nesting: int = 32,
    ) -> None:
        if format not in (JSON, MSGPACK):
            raise ValueError(f"unknown wire format {format!r}; expected 'json' or 'msgpack'")
        self.format = format
        self.binary = format == MSGPACK
        self.max_message_bytes = max_message_bytes
        self.max_nesting = max_nesting
        types = tuple(client_types)
        self._freeform = {t: _freeform_paths(t) for t in types}
        self._known_types = frozenset(t.__struct_config__.tag for t in types)
        union = Union[types] if len(types) > 1 else types[0]
        self._json_decoder: _Decoder = msgspec.json.Decoder(union)
        self._json_probe: _Decoder = msgspec.json.Decoder(_Probe)
        self._json_encoder = msgspec.json.Encoder()
        # Bound once: each chunk encoder keeps it, and a bound method made per encoder (one
        # per reader of every reply) is one more object for the garbage collector.
        self._json_encode = self._json_encoder.encode
        if self.binary:
            self._mp_decoder: _Decoder = msgspec.msgpack.Decoder(union)
            self._mp_probe: _Decoder = msgspec.msgpack.Decoder(_Probe)
            self._encode = msgspec.msgpack.Encoder().encode
        else:
            self._encode = self._json_encode

    # --- server -> client -----------------------------------------------------------------

    def encode(self, type: str, data: Any, metadata: Any = None) -> bytes:
        """Encode one envelope with a fresh id and the current time."""
        return self._encode(Envelope(new_id(), type, now_ms(), data, metadata))

    def chunk_encoder(self, message_id: str, metadata: Any = None, *, reasoning: bool = False) -> ChunkEncoder:
        """Return ``encode(content, index, seq, stamp) -> frame`` for one message's chunks.

        Args:
            message_id: the run's message id.
            metadata: the connection's metadata (None: no ``metadata`` key).
            reasoning: encode AI_REASONING_CHUNK frames (``index`` is ignored).

        ``stamp`` is :func:`streamcore.ids.stamp`, taken once per batch of frames by the
        caller: reading the clock costs more than encoding a short chunk on a slow VM.
        For JSON the bytes around the content are fixed per message, so they are laid out
        once here and each chunk costs one ``bytes.join``; the envelope id is the message
        id plus the chunk's ``seq``, unique within the message and free to compute.
        """
        if self.binary:
            encode = self._encode
            meta = metadata or None
            if reasoning:

                def encode_reasoning_msgpack(content: str, index: int, seq: int, stamp: Stamp) -> bytes:
                    return encode(
                        Envelope(
                            f"{message_id}.{seq}",
                            EventType.AI_REASONING_CHUNK,
                            stamp[0],
                            ReasoningChunkData(message_id, content, seq),
                            meta,
                        )
                    )

                return encode_reasoning_msgpack

            def encode_msgpack(content: str, index: int, seq: int, stamp: Stamp) -> bytes:
                return encode(
                    Envelope(
                        f"{message_id}.{seq}",
                        EventType.AI_MESSAGE_CHUNK,
                        stamp[0],
                        MessageChunkData(message_id, content, index, seq),
                        meta,
                    )
                )

            return encode_msgpack

        mid = self._json_encoder.encode(message_id)
        head = b'{"id":' + mid[:-1] + b"."
        kind = EventType.AI_REASONING_CHUNK if reasoning else EventType.AI_MESSAGE_CHUNK
        middle = b'","type":"' + kind.encode() + b'","timestamp":'
        data = b',"data":{"messageId":' + mid + b',"content":'
        seq_key = b',"seq":'
        tail = b"}}"
        if metadata:
            tail = b'},"metadata":' + self._json_encoder.encode(metadata) + b"}"
        encode_str = self._json_encode
        # The parts are bound as defaults, not closure cells: one tuple per encoder instead
        # of a cell each (an encoder is made per reader of every reply), and faster reads.
        if reasoning:

            def encode_reasoning_json(
                content: str, index: int, seq: int, stamp: Stamp, head: bytes = head, middle: bytes = middle,
                data: bytes = data, seq_key: bytes = seq_key, tail: bytes = tail,
                encode_str: Callable[[Any], bytes] = encode_str, small: list[bytes] = _SMALL_INTS,
            ) -> bytes:
                s = small[seq] if seq < 4096 else str(seq).encode()
                return b"".join((head, s, middle, stamp[1], data, encode_str(content), seq_key, s, tail))

            return encode_reasoning_json

        def encode_json(
            content: str, index: int, seq: int, stamp: Stamp, head: bytes = head, middle: bytes = middle,
            data: bytes = data, tail: bytes = tail, encode_str: Callable[[Any], bytes] = encode_str,
            small: list[bytes] = _SMALL_INTS, index_seq: list[bytes] = _INDEX_SEQ,
        ) -> bytes:
            if (index | seq) < 4096:  # both are >= 0: one test for both
                s = small[seq]
                return b"".join((head, s, middle, stamp[1], data, encode_str(content), index_seq[index], s, tail))
            s = str(seq).encode()
            return b"".join((
                head, s, middle, stamp[1], data, encode_str(content), b',"index":', str(index).encode(), b',"seq":',
                s, tail,
            ))

        return encode_json

    @staticmethod
    def chunk_overhead(encode: ChunkEncoder) -> int:
        """Bytes a frame of ``encode`` (from :meth:`chunk_encoder`) adds to its content, for
        an index, seq and timestamp as long as they get (they have no side effect)."""
        return len(encode("", 99_999, 9_999_999, (9_999_999_999_999, b"9999999999999")))

    def encode_entry(
        self, entry: Entry, message_id: str, metadata: Any = None, request_id: str | None = None
    ) -> bytes:
        """Encode a run-log entry other than a text or reasoning delta.

        Args:
            entry: ``(seq, kind, payload)``.
            message_id: the run's message id.
            metadata: the envelope's metadata for this reader (None: none).
            request_id: the client frame this reader's stream answers, echoed in ERROR.
        """
        seq, kind, payload = entry
        if kind == Kind.STARTED:
            p: Started = payload
            return self.encode(EventType.AI_MESSAGE_START, MessageStartData(p.message_id, seq, p.model), metadata)
        if kind == Kind.ENDED:
            e: Ended = payload
            data = MessageEndData(e.message_id, e.complete, e.stop_reason, seq, e.content, wire_usage(e.usage))
            return self.encode(EventType.AI_MESSAGE_END, data, metadata)
        if kind == Kind.FAILED:
            f: Failure = payload
            error = ErrorData(f.code, f.message, f.retryable, request_id, f.retry_after_ms, message_id, seq)
            return self.encode(EventType.ERROR, error, metadata)
        if kind == Kind.APP:
            a: AppEvent = payload
            return self.encode(a.type, _with_seq(a.data, seq), metadata)
        raise ValueError(f"not an event entry: kind {kind}")  # text goes through chunk_encoder

    # --- client -> server -----------------------------------------------------------------

    def decode(self, raw: str | bytes) -> Any:
        """Decode one client frame into its Struct.

        Raises:
            ProtocolError: with a message naming the problem (the field path for validation
                errors) and the frame's ``id`` as ``request_id`` when it could be read.
        """
        size = len(raw)
        if size > self.max_message_bytes or (
            type(raw) is str and size * 4 > self.max_message_bytes
            and len(raw.encode()) > self.max_message_bytes
        ):
            raise ProtocolError(
                f"frame too large: over max_message_bytes ({self.max_message_bytes})"
            )
        if type(raw) is str:
            decoder, probe = self._json_decoder, self._json_probe
        elif self.binary:
            decoder, probe = self._mp_decoder, self._mp_probe
        else:
            raise ProtocolError("binary frame received; this connection speaks JSON text frames")
        try:
            frame = decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise self._explain(raw, probe, exc) from None
        except RecursionError:
            # msgspec recurses per nesting level; a hostile frame must not become a
            # SERVER_ERROR with a traceback.
            raise ProtocolError("frame is nested too deeply", request_id=_request_id(raw, probe)) from None
        except UnicodeError:
            # A MessagePack string that is not UTF-8 (or a str frame with lone surrogates,
            # which no WebSocket text frame can carry): the client's fault, not a server bug.
            request_id = _request_id(raw, probe)
            raise ProtocolError("frame holds text that is not valid UTF-8", request_id=request_id) from None
        # Free-form fields (context, updates, metadata) reach providers and stores, which
        # recurse too: their nesting is limited well below the interpreter's.
        limit = self.max_nesting
        for path in self._freeform[type(frame)]:
            value = frame
            for name in path:
                value = getattr(value, name)
            if value is not None and type(value) is not str and _depth(value, limit + 1) > limit:
                raise ProtocolError(
                    f"`{'.'.join(path)}` is nested too deeply (more than {limit} levels)", request_id=frame.id
                )
        return frame

    def request_id(self, raw: str | bytes) -> str | None:
        """The ``id`` of a frame without decoding the rest (for replies to refused frames)."""
        probe = self._json_probe if type(raw) is str or not self.binary else self._mp_probe
        return _request_id(raw, probe)

    def _explain(self, raw: str | bytes, probe: Any, exc: msgspec.DecodeError) -> ProtocolError:
        try:
            seen = probe.decode(raw)
        except (msgspec.DecodeError, RecursionError, UnicodeError):
            seen = None
        request_id = seen.id if seen is not None and type(seen.id) is str else None
        text = str(exc)
        if seen is None:
            if text.startswith("Expected `object`"):
                text = "frame must be a JSON object with `type` and `data`"
            elif not isinstance(exc, msgspec.ValidationError):
                text = f"frame is not valid {'MessagePack' if self.binary and type(raw) is bytes else 'JSON'}: {text}"
        elif seen.type is None:
            text = "missing field `type`"
        elif type(seen.type) is not str:
            text = "`type` must be a string - at `$.type`"
        elif seen.type not in self._known_types:
            text = f"unknown message type {seen.type[:64]!r}"
        return ProtocolError(text, request_id=request_id)


def wire_usage(usage: Usage | None) -> WireUsage | None:
    """The protocol's camelCase usage for neutral :class:`~streamcore.events.Usage`."""
    if usage is None or isinstance(usage, WireUsage):
        return usage  # a provider written before the neutral types still works
    return WireUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.reasoning_tokens)


def _with_seq(data: Any, seq: int) -> Any:
    # Application events of a run carry the run's cursor like every other event.
    if isinstance(data, dict):
        return {**data, "seq": seq}
    if isinstance(data, msgspec.Struct) and "seq" in data.__struct_fields__:
        return msgspec.structs.replace(data, seq=seq)
    return data


def _request_id(raw: str | bytes, probe: Any) -> str | None:
    try:
        seen = probe.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return None
    return seen.id if type(seen.id) is str else None


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value`` (Structs, dicts, lists), counting no further than ``limit``.

    Iterative, so a hostile value cannot exhaust the interpreter's stack here either.
    """
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest >= limit:
                return deepest
        if isinstance(item, msgspec.Struct):
            stack.extend((getattr(item, f), level + 1) for f in item.__struct_fields__)
        elif isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, level + 1) for v in item)
    return deepest


_FREEFORM = (msgspec.inspect.AnyType, msgspec.inspect.DictType, msgspec.inspect.ListType,
             msgspec.inspect.TupleType, msgspec.inspect.VarTupleType, msgspec.inspect.SetType)


@functools.cache
def _freeform_paths(cls: type) -> tuple[tuple[str, ...], ...]:
    """Attribute paths of a frame type whose values are free-form (any, dict, list...).

    Cached: msgspec.inspect is slow (milliseconds per type), and every engine builds codecs.
    """
    paths: list[tuple[str, ...]] = []
    # An explicit stack, not a recursive closure (which is a reference cycle left to the GC).
    stack: list[tuple[Any, tuple[str, ...], frozenset]] = [(msgspec.inspect.type_info(cls), (), frozenset())]
    while stack:
        t, path, seen = stack.pop()
        if isinstance(t, msgspec.inspect.UnionType):
            if any(isinstance(u, _FREEFORM) for u in t.types):
                paths.append(path)
            else:
                stack.extend((u, path, seen) for u in reversed(t.types))
        elif isinstance(t, _FREEFORM):
            paths.append(path)
        elif isinstance(t, msgspec.inspect.StructType) and t.cls not in seen:
            stack.extend((f.type, path + (f.name,), seen | {t.cls}) for f in reversed(t.fields))
    return tuple(paths)
