"""A connection's send buffer: frames waiting for the socket, chunks merged under backpressure.

The engine puts frames here without waiting; one writer task per connection takes them out
and sends them. While the socket is slower than the provider, consecutive chunks of the
same message pile up in one run and leave as a single AI_MESSAGE_CHUNK whose content is
their concatenation: order kept, nothing dropped, ``index`` still counting up by one per
frame actually sent. A client that reads slowly thus sees fewer, larger chunks instead of
growing latency, and the buffer stays bounded because producers wait (pausing the
provider) once ``limit`` bytes are pending.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Union

import anyio

from .ids import Stamp, stamp

__all__ = ["Outbox", "ChunkStream"]


class ChunkStream:
    """The chunk-encoding state of one message: its encoder and next index."""

    __slots__ = ("encode", "index", "merge")

    def __init__(self, encode: Callable[[str, int, Stamp], bytes], merge: bool = True) -> None:
        self.encode = encode
        self.index = 0
        self.merge = merge


class _Signal:
    """A reusable wake-up for the one writer task of a connection.

    On asyncio it is one ``asyncio.Event`` cleared after each wake-up: a fresh
    ``anyio.Event`` per wait costs several microseconds, paid once per chunk when the
    provider yields to the event loop between chunks. Other backends get anyio's.
    """

    __slots__ = ("_event", "_asyncio")

    def __init__(self) -> None:
        try:
            import sniffio

            self._asyncio = sniffio.current_async_library() == "asyncio"
        except Exception:  # created outside an event loop
            self._asyncio = False
        self._event: Any = None
        if self._asyncio:
            import asyncio

            self._event = asyncio.Event()

    def set(self) -> None:
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._asyncio:
            await self._event.wait()
            self._event.clear()
            return
        self._event = anyio.Event()
        try:
            await self._event.wait()
        finally:
            self._event = None


class Outbox:
    """Pending frames of one connection.

    Args:
        limit: pending bytes (roughly: characters of chunk text count one each) above which
            :attr:`full` is true and producers should ``await wait_for_space()``.
    """

    def __init__(self, limit: int) -> None:
        # Each item is encoded bytes, or a run of pending chunks of one message stored as
        # a list [stream, text, text...]: a list is four times cheaper to build than an
        # object, and this is built once per chunk when chunks are not merged.
        self._items: deque[Union[bytes, list]] = deque()
        self.pending = 0
        self.limit = limit
        self.sending = False
        self.sent = 0
        self._ready = _Signal()
        self._writer_waiting = False
        self._space: anyio.Event | None = None
        self._idle: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return self.pending > self.limit

    def put(self, frame: bytes) -> None:
        """Queue an encoded frame."""
        self._items.append(frame)
        self.pending += len(frame)
        if self._writer_waiting:
            self._ready.set()

    def put_chunk(self, stream: ChunkStream, content: str) -> None:
        """Queue chunk text, merging it into the last pending run of the same message."""
        items = self._items
        self.pending += len(content)
        if items:
            last = items[-1]
            if type(last) is list and last[0] is stream and stream.merge:
                last.append(content)
                return
        items.append([stream, content])
        if self._writer_waiting:
            self._ready.set()

    def take(self) -> list[bytes]:
        """Take every pending frame, encoding chunk runs now (one clock read for all)."""
        items = self._items
        if not items:
            return []
        now = None
        frames = []
        append = frames.append
        for item in items:
            if type(item) is bytes:
                append(item)
            else:
                s = item[0]
                if now is None:
                    now = stamp()
                append(s.encode(item[1] if len(item) == 2 else "".join(item[1:]), s.index, now))
                s.index += 1
        items.clear()
        self.pending = 0
        if self._space is not None:
            self._space.set()
            self._space = None
        return frames

    async def wait_ready(self) -> None:
        """Wait until something is pending."""
        if self._items:
            return
        if self._idle is not None:
            self._idle.set()
            self._idle = None
        self._writer_waiting = True
        try:
            await self._ready.wait()
        finally:
            self._writer_waiting = False

    async def wait_for_space(self) -> None:
        """Wait until the writer has taken the pending frames (producers call this when full)."""
        while self.pending > self.limit:
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()

    async def wait_flushed(self) -> None:
        """Wait until every queued frame has been handed to the socket."""
        while self._items or self.sending:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
