"""A connection's send buffer: frames waiting for the socket, chunks merged under backpressure.

Runs and the session put frames here without waiting; one writer task per connection takes
them out and sends them. While the socket is slower than the provider, consecutive chunks
of the same message pile up in one run and leave as a single AI_MESSAGE_CHUNK whose
content is their concatenation and whose ``seq`` is the last piece's: order kept, nothing
dropped, ``index`` still counting up by one per frame actually sent. A client that reads
slowly thus sees fewer, larger chunks instead of growing latency.

The buffer is bounded: once ``limit`` bytes are pending, a run's subscription stops
putting and is marked *lagging*; when the writer has drained the buffer it asks each
lagging subscription to catch up from the run log, from its cursor. The provider is never
paused by a slow reader, and no other reader of the same run waits for it.

When the writer is idle (nothing pending) and the transport allows it (``send_now``, see
:mod:`streamcore.transport`), a chunk skips the buffer: the run sends it from its own task
(:meth:`Outbox.send_eager`), and a send that has to wait is finished by the writer before
anything queued after it. That saves a task switch per chunk when the provider waits
between chunks, the usual case with a model; a reply's AI_THINKING and AI_MESSAGE_END
take the same path (:meth:`Outbox.put_eager`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import anyio

from ._tasks import running_loop
from .errors import ConnectionClosed
from .ids import Stamp, stamp
from .log import get_logger

__all__ = ["Outbox", "ChunkStream", "max_chunk_text"]

_log = get_logger("streamcore")


def max_chunk_text(max_frame_bytes: int) -> int:
    """Characters of text a chunk frame may carry and stay under ``max_frame_bytes``.

    JSON escapes a control character as six bytes (``\\u001f``), and the envelope around
    the text takes a few hundred: the bound holds whatever the text is.
    """
    return max(256, max_frame_bytes // 6 - 1024)


#: What a chunk frame adds to its text when its encoder cannot be measured (an SSE
#: dialect's, which keeps per-stream state): above what those dialects add (63-100 bytes).
FRAME_OVERHEAD = 160


class ChunkStream:
    """The chunk-encoding state of one message for one reader: its encoder and next index.

    Attributes:
        merge: pieces queued together leave as one frame (else one frame each).
        overhead: pending bytes a queued piece counts beyond its text: its frame's
            envelope when each piece leaves as its own frame, so that the send buffer's
            bound holds in bytes.
    """

    __slots__ = ("encode", "index", "merge", "overhead")

    def __init__(
        self, encode: Callable[[str, int, int, Stamp], bytes], merge: bool = True, overhead: int = FRAME_OVERHEAD
    ) -> None:
        self.encode = encode
        self.index = 0
        self.merge = merge
        self.overhead = 0 if merge else overhead


class Outbox:
    """Pending frames of one connection.

    Args:
        limit: pending bytes (characters of chunk text count one each) above which
            :attr:`full` is true: subscriptions stop putting and catch up later.

    Attributes:
        sent: frames handed to the socket so far.
        sent_bytes: bytes handed to the socket so far (progress for the slow-client check).
        sending: the writer is inside a send.
    """

    def __init__(self, limit: int, *, max_text: int = 1 << 30) -> None:
        # Each item is encoded bytes, or a run of pending chunks of one message stored as
        # a list [stream, seq, text, text...] (a list is four times cheaper to build than
        # an object). A run of a stream that does not merge leaves as one frame per piece.
        # A list, not a deque: it is only appended to and emptied whole, and a deque keeps
        # a 600-byte block per connection even when empty.
        self._items: list[Union[bytes, list]] = []
        self.pending = 0
        #: a chunk run (a list) is pending: take() must encode; else it hands the list over.
        self._runs = False
        self.limit = limit
        #: characters one chunk frame may carry (see max_chunk_text): longer merged runs
        #: leave as several frames, split between pieces.
        self.max_text = max_text
        self.sending = False
        self.sent = 0
        self.sent_bytes = 0
        #: chunks sent inside another chunk's frame (merged under backpressure).
        self.merged = 0
        #: subscriptions that stopped putting because the buffer was full.
        self.lagging: list[Any] = []
        # The writer's wake-up while it waits (None otherwise): on asyncio a bare future
        # made per wait. A fresh anyio.Event per wait costs several microseconds, paid per
        # chunk when the provider yields between chunks, and an asyncio.Event keeps a
        # 600-byte deque per connection for its one waiter. Other backends: anyio's Event.
        self._waiter: Any = None
        #: ``conn.send_now`` when the transport offers it (see streamcore.transport).
        self.send_now: Callable[[bytes], Any] | None = None
        #: the rest of a send a run started and could not finish, for the writer.
        self.inflight: Any = None
        #: a send from a run failed: the writer ends the connection.
        self.broken = False
        #: sends a run started that had to wait and were finished by the writer.
        self.handed_over = 0
        # None under another backend, or when made outside an event loop (tests).
        self._loop = running_loop()
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
        if self._waiter is not None:  # one wake-up per batch, not per frame
            self.wake()

    def put_eager(self, frame: bytes) -> None:
        """Send ``frame`` from the calling task if the writer is idle, else queue it.

        For a reply's AI_THINKING and AI_MESSAGE_END: a writer wake-up (a task switch and
        a loop turn) each, per reply, saved. Not for AI_MESSAGE_START: queued, it wakes the
        writer, and the chunks of a provider that bursts without awaiting then wait
        behind it and leave in batches instead of one socket write each.
        """
        if self._waiter is not None and self.send_now is not None:
            self.send_eager(frame)
        else:
            self.put(frame)

    def put_chunk(self, stream: ChunkStream, content: str, seq: int) -> None:
        """Queue chunk text in the last pending run of the same stream, or a new one.

        A run is encoded by :meth:`take`: as one frame when its stream merges, else one
        frame per piece. Either way it is one list per batch, not an object per chunk
        (thousands per connection when the provider outruns the socket, each walked by
        every full garbage collection).
        """
        items = self._items
        self.pending += len(content) + stream.overhead
        if items:
            last = items[-1]
            if type(last) is list and last[0] is stream and last[1] == seq - 1:  # consecutive seqs only
                last[1] = seq
                last.append(content)
                return
        items.append([stream, seq, content])
        self._runs = True
        if self._waiter is not None:  # one wake-up per batch, not per frame
            self.wake()

    def take(self) -> list[bytes]:
        """Take every pending frame, encoding chunk runs now (one clock read for all)."""
        items = self._items
        if not items:
            return []
        if not self._runs:  # encoded frames only: no copy
            self._items = []
            self.pending = 0
            return items  # type: ignore[return-value]  # bytes only, see _runs
        self._runs = False
        now = None
        frames: list[bytes] = []
        append = frames.append
        # bytes, or a chunk run [stream, seq, text, ...] (see __init__); ``type(item) is
        # bytes`` does not narrow the other branch to the list, hence Any.
        item: Any
        s: ChunkStream
        for item in items:
            if type(item) is bytes:
                append(item)
            else:
                s = item[0]
                if now is None:
                    now = stamp()
                if len(item) == 3:
                    append(s.encode(item[2], s.index, item[1], now))
                    s.index += 1
                    continue
                if not s.merge:  # one frame per piece; pieces of one run have consecutive seqs
                    encode = s.encode
                    index = s.index
                    seq = item[1] - (len(item) - 3)
                    for k in range(2, len(item)):
                        append(encode(item[k], index, seq, now))
                        index += 1
                        seq += 1
                    s.index = index
                    continue
                text = "".join(item[2:])
                if len(text) <= self.max_text:
                    self.merged += len(item) - 3  # pieces of the run beyond the first
                    append(s.encode(text, s.index, item[1], now))
                    s.index += 1
                    continue
                # Too long for one frame: split between pieces. Pieces of one run have
                # consecutive seqs, so each frame carries its own last piece's seq.
                self.merged += len(item) - 2  # its pieces, less one per frame below
                first = item[1] - (len(item) - 3)
                start = 2
                size = 0
                for k in range(2, len(item)):
                    size += len(item[k])
                    last = k + 1 == len(item)
                    if last or size + len(item[k + 1]) > self.max_text:
                        append(s.encode("".join(item[start:k + 1]), s.index, first + k - 2, now))
                        self.merged -= 1
                        s.index += 1
                        start, size = k + 1, 0
        items.clear()
        self.pending = 0
        return frames

    def catch_up(self) -> None:
        """Let lagging subscriptions refill the (now drained) buffer from the run log."""
        lagging, self.lagging = self.lagging, []
        for sub in lagging:
            sub.catch_up()

    async def wait_ready(self) -> None:
        """Wait until something is pending."""
        if self._items:
            return
        if self.lagging:
            self.catch_up()
            if self._items:
                return
        if self._idle is not None:
            self._idle.set()
            self._idle = None
        if self._loop is not None:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        else:
            event = self._waiter = anyio.Event()
            try:
                await event.wait()
            finally:
                self._waiter = None

    def send_eager(self, frame: bytes) -> None:
        """Send ``frame`` from the calling task (a run's) while the writer is idle.

        Call only when ``_waiter`` is set (the writer waits and nothing is pending) and
        ``send_now`` is not None. A send that must wait is finished by the writer, before
        anything queued after it; a send that fails wakes the writer to end the
        connection. Either way the run goes on at once.
        """
        try:
            rest = self.send_now(frame)  # type: ignore[misc]  # checked by the caller
        except Exception as exc:
            if not isinstance(exc, ConnectionClosed):
                _log.exception("send.failed")
            self.broken = True
            self.wake()
            return
        self.sent += 1
        self.sent_bytes += len(frame)
        if rest is not None:
            self.inflight = rest
            self.handed_over += 1
            self.wake()

    def wake(self) -> None:
        """Wake the waiting writer (call only while ``_waiter`` is set)."""
        waiter, self._waiter = self._waiter, None
        if self._loop is None:
            waiter.set()
        elif not waiter.done():
            waiter.set_result(None)

    async def wait_flushed(self) -> None:
        """Wait until every queued frame has been handed to the socket."""
        while self._items or self.sending or self.lagging or self.inflight is not None:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
