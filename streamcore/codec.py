"""Encoding of server envelopes and decoding of client frames (no I/O).

One :class:`Codec` per wire format (JSON, or MessagePack when negotiated) holds the
msgspec encoder and the tagged-union decoder, created once. Chunks, the only frames sent
at a high rate, take a dedicated path: the JSON bytes around the content are fixed per
message, so a chunk frame is one ``bytes % tuple`` around the encoded content, with no
Struct or dict built per chunk.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Union

import msgspec

from .errors import ProtocolError
from .ids import Stamp, new_id, now_ms
from .protocol import BUILTIN_CLIENT_FRAMES, Envelope, EventType, MessageChunkData

__all__ = ["Codec", "JSON", "MSGPACK", "MSGPACK_SUBPROTOCOL"]

JSON = "json"
MSGPACK = "msgpack"
#: WebSocket subprotocol a client offers to receive and send MessagePack frames.
MSGPACK_SUBPROTOCOL = "streamcore.msgpack"


ChunkEncoder = Callable[[str, int, Stamp], bytes]
_SMALL_INTS = [str(i).encode() for i in range(4096)]  # chunk indexes of most messages


class _Probe(msgspec.Struct):
    """What can still be read from a frame that failed validation."""

    id: Any = None
    type: Any = None


class Codec:
    """Encoder and decoder for one connection's wire format.

    Args:
        format: ``"json"`` (text frames, the default) or ``"msgpack"`` (binary frames).
        client_types: the tagged Structs accepted from clients; applications add theirs.
        max_message_bytes: client frames larger than this are refused.
    """

    def __init__(
        self,
        format: str = JSON,
        *,
        client_types: Iterable[type] = BUILTIN_CLIENT_FRAMES,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        if format not in (JSON, MSGPACK):
            raise ValueError(f"unknown wire format {format!r}; expected 'json' or 'msgpack'")
        self.format = format
        self.binary = format == MSGPACK
        self.max_message_bytes = max_message_bytes
        types = tuple(client_types)
        self._known_types = frozenset(t.__struct_config__.tag for t in types)
        union = Union[types] if len(types) > 1 else types[0]  # type: ignore[valid-type]
        self._json_decoder = msgspec.json.Decoder(union)
        self._json_probe = msgspec.json.Decoder(_Probe)
        self._json_encoder = msgspec.json.Encoder()
        if self.binary:
            self._mp_decoder = msgspec.msgpack.Decoder(union)
            self._mp_probe = msgspec.msgpack.Decoder(_Probe)
            self._encode = msgspec.msgpack.Encoder().encode
        else:
            self._encode = self._json_encoder.encode

    # --- server -> client -----------------------------------------------------------------

    def encode(self, type: str, data: Any, metadata: Any = None) -> bytes:
        """Encode one envelope with a fresh id and the current time."""
        return self._encode(Envelope(new_id(), type, now_ms(), data, metadata))

    def chunk_encoder(self, message_id: str, metadata: Any = None) -> ChunkEncoder:
        """Return ``encode(content, index, stamp) -> frame`` for the chunks of one message.

        ``stamp`` is :func:`streamcore.ids.stamp`, taken once per batch of frames by the
        caller: reading the clock costs more than encoding a short chunk on a slow VM.
        For JSON the bytes around the content are fixed per message, so they are laid out
        once here and each chunk costs one ``bytes.join``; the envelope id is the message
        id plus the index, unique and free to compute.
        """
        if self.binary:
            encode = self._encode

            def encode_msgpack(content: str, index: int, stamp: Stamp) -> bytes:
                return encode(
                    Envelope(
                        f"{message_id}.{index}",
                        EventType.AI_MESSAGE_CHUNK,
                        stamp[0],
                        MessageChunkData(message_id, content, index),
                        metadata or None,
                    )
                )

            return encode_msgpack

        mid = self._json_encoder.encode(message_id)
        head = b'{"id":' + mid[:-1] + b"."
        middle = b'","type":"AI_MESSAGE_CHUNK","timestamp":'
        data = b',"data":{"messageId":' + mid + b',"content":'
        index_key = b',"index":'
        tail = b"}}"
        if metadata:
            tail = b'},"metadata":' + self._json_encoder.encode(metadata) + b"}"
        encode_str = self._json_encoder.encode
        join = b"".join
        small = _SMALL_INTS

        def encode_json(content: str, index: int, stamp: Stamp) -> bytes:
            i = small[index] if index < 4096 else str(index).encode()
            return join((head, i, middle, stamp[1], data, encode_str(content), index_key, i, tail))

        return encode_json

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
            return decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise self._explain(raw, probe, exc) from None

    def _explain(self, raw: str | bytes, probe: Any, exc: msgspec.DecodeError) -> ProtocolError:
        try:
            seen = probe.decode(raw)
        except msgspec.DecodeError:
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
