"""The dialect interface: how a connection's frames map to commands and events.

A dialect decodes what a client sends into commands (tagged msgspec Structs dispatched by
the engine's handler registry) and encodes run-log entries and application events into
the frames that connection receives. The engine and the run log never see a wire format;
adding a dialect (the SSE ones: Vercel AI SDK, AG-UI) means adding an encoder, not an
engine. :class:`~streamcore.codec.Codec` is streamcore's own envelope dialect, in JSON
or MessagePack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .events import Entry
from .ids import Stamp

__all__ = ["Dialect", "ChunkEncoder"]

#: ``encode(content, index, seq, stamp) -> frame`` for the text (or reasoning) chunks of
#: one message; called once per frame actually sent, with merged text when the reader
#: fell behind.
ChunkEncoder = Callable[[str, int, int, Stamp], bytes]


class Dialect(Protocol):
    """What a connection needs to speak one wire format."""

    #: frames are binary (True) or text (False) on a WebSocket.
    binary: bool
    #: client frames larger than this are refused.
    max_message_bytes: int

    def decode(self, raw: str | bytes) -> Any:
        """One client frame -> a command Struct; raises ProtocolError naming the problem."""

    def request_id(self, raw: str | bytes) -> str | None:
        """The ``id`` of a client frame that is not decoded (one over the rate limit), if any."""

    def encode(self, type: str, data: Any, metadata: Any = None) -> bytes:
        """An application event (PONG, ERROR, broadcasts, custom types) -> one frame."""

    def chunk_encoder(self, message_id: str, metadata: Any = None, *, reasoning: bool = False) -> ChunkEncoder:
        """The per-message encoder of text (or reasoning) deltas: the hot path."""

    def encode_entry(
        self, entry: Entry, message_id: str, metadata: Any = None, request_id: str | None = None
    ) -> bytes:
        """Any other run-log entry (start, failure, end, application events) -> one frame."""
