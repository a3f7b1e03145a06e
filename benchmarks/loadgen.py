"""A minimal, fast WebSocket load generator on a bare asyncio Protocol.

It parses only frame headers (server frames are unmasked), counts frames, recognises
AI_MESSAGE_END by a bounded ``bytes.find`` and, in latency mode, reads the production time
stamped at the start of each chunk's content. No JSON is decoded per frame, so it reads
faster than any of the servers writes; its own ceiling is measured against ``blast``, a
server that writes pre-built frames in one ``write``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from typing import Any, Callable

REQUEST = b'{"type":"USER_MESSAGE","data":{"content":"go"}}'


def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + struct.pack("!H", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class Client(asyncio.Protocol):
    """One connection: send a request, count frames until AI_MESSAGE_END."""

    def __init__(self, latency: list[int] | None, deflate: bool = False, gaps: list[int] | None = None) -> None:
        self.deflate = deflate
        self.inflater = zlib.decompressobj(wbits=-15) if deflate else None
        self.wire_bytes = 0
        self.buf = bytearray()
        self.open = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future | None = None
        self.handshaken = False
        self.frames = 0
        self.first_frame_at: int | None = None
        self.latency = latency
        #: arrival time between consecutive chunk frames of a stream (pacing kept or not).
        self.gaps = gaps
        self.last_chunk_at: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + ("Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.deflate else "")
            + "\r\n"
            ).encode()
        )

    def request(self) -> asyncio.Future:
        self.done = asyncio.get_running_loop().create_future()
        self.first_frame_at = None
        self.last_chunk_at = None
        self.transport.write(_masked_text(REQUEST))
        return self.done

    def data_received(self, data):
        buf = self.buf
        buf += data
        self.wire_bytes += len(data)
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in bytes(buf[:20]):
                self.open.set_exception(ConnectionError(bytes(buf[:80]).decode(errors="replace")))
                return
            del buf[: end + 4]
            self.handshaken = True
            self.open.set_result(None)
        pos = 0
        n = len(buf)
        latency = self.latency
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            opcode = buf[pos] & 0x0F
            if b1 < 126:
                start = pos + 2
            elif b1 == 126:
                if n - pos < 4:
                    break
                b1 = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                b1 = struct.unpack_from("!Q", buf, pos + 2)[0]
                start = pos + 10
            end = start + b1
            if end > n:
                break
            if (opcode == 1 or opcode == 2) and buf[pos] & 0x40:  # RSV1: compressed
                payload = self.inflater.decompress(bytes(buf[start:end]) + b"\x00\x00\xff\xff")
                self.frames += 1
                if payload.find(b"AI_MESSAGE_END", 0, 120) != -1 and self.done is not None and not self.done.done():
                    self.done.set_result(None)
            elif opcode == 1 or opcode == 2:
                self.frames += 1
                # Time to first *chunk*: AI_THINKING and AI_MESSAGE_START come earlier.
                if self.first_frame_at is None and buf.find(b"AI_MESSAGE_CHUNK", start, min(end, start + 80)) != -1:
                    self.first_frame_at = time.time_ns()
                if buf.find(b"AI_MESSAGE_END", start, min(end, start + 120)) != -1:
                    if self.done is not None and not self.done.done():
                        self.done.set_result(None)
                elif latency is not None:
                    at = buf.find(b'"content":"', start, end)
                    if at != -1:
                        now = time.time_ns()
                        latency.append(now - int(buf[at + 11 : at + 30]))
                        if self.gaps is not None:
                            if self.last_chunk_at is not None:
                                self.gaps.append(now - self.last_chunk_at)
                            self.last_chunk_at = now
            elif opcode == 9:  # ping: answer with a masked pong
                payload = bytes(buf[start:end])
                mask = os.urandom(4)
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask
                                     + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
            elif opcode == 8:
                if self.done is not None and not self.done.done():
                    self.done.set_exception(ConnectionError("closed by server"))
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc):
        for fut in (self.open, self.done):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection lost"))


async def connect(port: int, latency: list[int] | None = None, deflate: bool = False,
                  gaps: list[int] | None = None) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(latency, deflate, gaps), "127.0.0.1", port)
    await asyncio.wait_for(client.open, 30)
    return client


async def run(port: int, connections: int, messages: int = 1, latency: list[int] | None = None,
              ttft: list[int] | None = None, deflate: bool = False, gaps: list[int] | None = None,
              on_start: Callable[[], Any] | None = None, on_end: Callable[[], Any] | None = None) -> dict:
    """Open ``connections``, then each asks ``messages`` replies in turn; returns timings.

    ``on_start`` and ``on_end`` are called right before the first request and right after
    the last reply (connecting is not timed): the caller reads the server's CPU time there.
    """
    clients = []
    for i in range(0, connections, 100):  # connect in waves so the backlog never overflows
        clients += await asyncio.gather(*(connect(port, latency, deflate, gaps)
                                          for _ in range(min(100, connections - i))))

    async def one(client: Client) -> None:
        for _ in range(messages):
            sent = time.time_ns()
            await asyncio.wait_for(client.request(), 600)
            if ttft is not None and client.first_frame_at:
                ttft.append(client.first_frame_at - sent)

    if on_start is not None:
        on_start()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in clients))
    elapsed = time.perf_counter() - t0
    if on_end is not None:
        on_end()
    frames = sum(c.frames for c in clients)
    wire = sum(c.wire_bytes for c in clients)
    for c in clients:
        c.transport.close()
    return {"elapsed": elapsed, "frames": frames, "wire_bytes": wire}


async def blast_ceiling(frames: int, size: int) -> float:
    """Frames per second this client parses when a server writes pre-built frames at once."""
    frame = (b'{"id":"m.1","type":"AI_MESSAGE_CHUNK","timestamp":1,"data":{"messageId":"m","content":"'
             + b"x" * size + b'","index":1}}')
    end = b'{"type":"AI_MESSAGE_END","data":{}}'

    def ws(payload: bytes) -> bytes:
        n = len(payload)
        head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + struct.pack("!H", n)
        return head + payload

    burst = ws(frame) * frames + ws(end)

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: x\r\n\r\n")
            while await reader.read(4096):
                writer.write(burst)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run(port, 1, messages=3)
    finally:
        server.close()
    return result["frames"] / result["elapsed"]
