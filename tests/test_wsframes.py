"""Data frames encoded by ``adapters._wsframes`` for the direct write paths: the same bytes
as the websockets library's own, read back by its client parser, and the protocol's own
path whenever it must see the frame (an extension, frame logging, a write it queued)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from streamcore.adapters import _wsframes
from streamcore.adapters._direct import DirectConnection
from streamcore.adapters.websockets import WebsocketsConnection

SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70_000]


def _payload(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


@pytest.mark.parametrize("first, opcode", [(_wsframes.TEXT, Opcode.TEXT), (_wsframes.BINARY, Opcode.BINARY)])
@pytest.mark.parametrize("size", SIZES)
def test_a_frame_is_byte_for_byte_the_libraries_own(first: int, opcode: Opcode, size: int):
    payload = _payload(size)
    expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
    assert _wsframes.encode_one(first, payload) == expected
    assert _wsframes.encode(first, [payload]) == expected


def _client_reads(data: bytes) -> list[tuple[Opcode, bytes]]:
    """What the websockets client parser makes of ``data``: (opcode, payload) per frame."""
    client = Protocol(Side.CLIENT)  # open: parses frames
    client.receive_data(data)
    events = client.events_received()
    assert client.parser_exc is None
    return [(e.opcode, bytes(e.data)) for e in events]


def test_a_batch_is_each_payload_its_own_frame_in_order():
    payloads = [_payload(n) for n in SIZES]
    data = _wsframes.encode(_wsframes.TEXT, payloads)
    assert _client_reads(data) == [(Opcode.TEXT, p) for p in payloads]
    assert _client_reads(_wsframes.encode(_wsframes.BINARY, payloads[:3])) == [(Opcode.BINARY, p) for p in payloads[:3]]


def _server(**kwargs: Any) -> Protocol:
    """An open server connection's protocol (the state after the handshake)."""
    return Protocol(Side.SERVER, **kwargs)


def test_plain_only_for_a_server_with_no_extension_and_no_frame_logging():
    assert _wsframes.plain_server(_server())
    deflate = _server()
    deflate.extensions = [PerMessageDeflate(False, False, 15, 15)]
    assert not _wsframes.plain_server(deflate)
    logger = logging.getLogger("test_wsframes.debug")
    logger.setLevel(logging.DEBUG)
    assert not _wsframes.plain_server(_server(logger=logger))
    assert not _wsframes.plain_server(Protocol(Side.CLIENT))
    assert not _wsframes.plain_server(SimpleNamespace(side=_server().side))  # attributes missing


class _Transport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


def _with_a_queued_pong(conn: Protocol) -> None:
    """Make ``conn`` queue a pong in its ``writes``, as a ping it read does."""
    client = Protocol(Side.CLIENT)
    client.send_ping(b"hb")
    conn.receive_data(b"".join(client.data_to_send()))
    assert conn.writes  # the pong, not flushed yet


def _direct(conn: Protocol, binary: bool = False) -> tuple[DirectConnection, _Transport]:
    writable = asyncio.Event()
    writable.set()
    transport = _Transport()
    proto = SimpleNamespace(conn=conn, transport=transport, writable=writable, disconnected=False,
                            close_sent=False, handshake_complete=True, initial_response=None)

    async def never(*args: Any) -> Any:
        raise AssertionError("the ASGI path was taken")

    return DirectConnection(never, never, proto, binary=binary), transport


def _websockets(conn: Protocol) -> tuple[WebsocketsConnection, _Transport]:
    transport = _Transport()

    async def drain() -> None:
        pass

    ws = SimpleNamespace(protocol=conn, send_in_progress=None, paused=False, drain=drain, transport=transport)
    return WebsocketsConnection(ws, binary=False), transport  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [_direct, _websockets])
def test_frames_written_here_and_a_pong_the_protocol_queued_goes_first(make: Any):
    conn = _server()
    connection, transport = make(conn)
    assert connection._write([b"one", b"two"])
    assert connection._plain  # decided by now (the direct path: at its first write)
    assert connection._write((b"three",))
    assert _client_reads(transport.data) == [(Opcode.TEXT, b"one"), (Opcode.TEXT, b"two"), (Opcode.TEXT, b"three")]
    transport.data = b""
    _with_a_queued_pong(conn)
    assert connection._write((b"four",))
    assert _client_reads(transport.data) == [(Opcode.PONG, b"hb"), (Opcode.TEXT, b"four")]
    assert not conn.writes


@pytest.mark.parametrize("make", [_direct, _websockets])
def test_a_connection_that_is_not_open_is_left_to_the_library(make: Any):
    conn = _server()
    connection, transport = make(conn)
    conn.send_close(1000)  # CLOSING: a data frame must not follow the close frame
    transport.data = b""
    assert not connection._write((b"late",))
    assert transport.data == b""


def test_the_direct_path_sends_binary_frames_for_msgpack():
    connection, transport = _direct(_server(), binary=True)
    assert connection._write((b"\x81\xa1a\x01",))
    assert _client_reads(transport.data) == [(Opcode.BINARY, b"\x81\xa1a\x01")]


def test_with_deflate_frames_go_through_the_protocols_extension():
    conn = _server()
    conn.extensions = [PerMessageDeflate(False, False, 15, 15)]
    connection, transport = _direct(conn)
    assert connection._write((b"x" * 1000,))
    assert connection._plain is False
    assert len(transport.data) < 100  # compressed by the extension, not written as is


@pytest.mark.parametrize("make", [_direct, _websockets])
def test_after_a_client_close_frames_are_left_to_the_library(make: Any):
    # The usual way out: the client's close frame is read, the protocol echoes it (queued
    # in its writes) and moves to CLOSING; no data frame may follow.
    conn = _server()
    connection, transport = make(conn)
    client = Protocol(Side.CLIENT)
    client.send_close(1000)
    conn.receive_data(b"".join(client.data_to_send()))
    assert conn.writes  # the echoed close, not flushed yet
    assert not connection._write((b"late",))
    assert transport.data == b""


def test_a_fragmented_send_under_way_is_left_to_the_library():
    conn = _server()
    connection, transport = _websockets(conn)
    connection._ws.send_in_progress = object()  # websockets' own send() is mid-message
    assert not connection._write((b"x",))
    assert transport.data == b""
