"""Shutdown is bounded: a real ``streamcore serve`` process, hostile clients and upstreams.

One client stopped reading (a tiny receive buffer, never reads) and 30 clients whose
upstream hangs mid-reply (the ``openai`` provider against FakeOpenAI's ``hang`` mode, on
127.0.0.1). SIGTERM must make the process exit within ``shutdown_timeout`` plus a small
fixed margin, with every reading client getting ``stopReason: "server_shutdown"`` and a
1001 close. Both transports of ``serve``. The measured times are printed (``-s``).
"""

from __future__ import annotations

import array
import base64
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import time

import anyio
import pytest

from streamcore.testing import FakeOpenAI

from .helpers import TIMEOUT, connect

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SHUTDOWN_TIMEOUT = 3.0
MARGIN = 2.0  # the promise: exit within shutdown_timeout + this
READERS = int(os.environ.get("STREAMCORE_SHUTDOWN_READERS", "30"))
CHUNKS_BEFORE_HANG = 40
PIECE = 16 * 1024  # bytes of text per upstream chunk: the stuck client's reply overflows every buffer


async def start_server(tmp_path, server: str, base_url: str):
    config = tmp_path / "streamcore.toml"
    config.write_text(
        f'[server]\nshutdown_timeout = {SHUTDOWN_TIMEOUT}\n'
        f'[provider]\nname = "openai"\nmodel = "hang"\noptions = {{ base_url = "{base_url}" }}\n'
        # Long enough that nothing but the shutdown ends these replies.
        '[limits]\nfirst_chunk_timeout = 600.0\ngeneration_timeout = 600.0\nslow_client_timeout = 600.0\n'
        'messages_per_interval = 1000\n'
    )
    proc = await anyio.open_process(
        [sys.executable, "-m", "streamcore.cli", "serve", "--port", "0", "--server", server,
         "--config", str(config), "--log-format", "json"],
        env={**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key"},
    )
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
    assert line.startswith(b"streamcore listening on ws://127.0.0.1:"), line
    return proc, line.decode().split()[-1]


def masked_text_frame(payload: bytes) -> bytes:
    """One client->server WebSocket text frame (clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stuck_client(url: str) -> socket.socket:
    """A client that completes the handshake, asks for a reply, and never reads again."""
    host, port = url.split("/")[2].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(TIMEOUT)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # the 101 only; whatever follows stays unread
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(masked_text_frame(json.dumps({"type": "USER_MESSAGE", "data": {"content": "flood me"}}).encode()))
    return sock


def unread_bytes(sock: socket.socket) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


async def reader(url: str, results: list, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    async with connect(url, max_size=None) as c:
        await c.send("USER_MESSAGE", {"content": "bonjour"})
        seq = 0
        while seq <= CHUNKS_BEFORE_HANG:  # the upstream hangs after these (chunks may merge)
            frame = await c.recv()
            if frame["type"] == "AI_MESSAGE_CHUNK":
                seq = frame["data"]["seq"]  # START is seq 1, chunk k is seq k + 1
        task_status.started()
        with anyio.fail_after(SHUTDOWN_TIMEOUT + MARGIN + TIMEOUT):
            frames = await c.until("AI_MESSAGE_END")
            code, _ = await c.closed()
        results.append((frames[-1]["data"]["stopReason"], code, time.monotonic()))


@pytest.mark.parametrize("server", ["uvicorn", "websockets"])
async def test_sigterm_exits_within_the_timeout_whatever_clients_and_upstreams_do(tmp_path, server):
    text = "".join(f"{i:06d}" + "x" * (PIECE - 7) + " " for i in range(CHUNKS_BEFORE_HANG * 2))
    async with FakeOpenAI(text=text, chunks=CHUNKS_BEFORE_HANG * 2, break_after=CHUNKS_BEFORE_HANG,
                          slow_seconds=3600) as api:
        proc, url = await start_server(tmp_path, server, api.base_url)
        stuck = None
        try:
            results: list = []
            async with anyio.create_task_group() as tg:
                for _ in range(READERS):
                    await tg.start(reader, url, results)
                stuck = stuck_client(url)
                with anyio.fail_after(TIMEOUT):
                    await api.wait_requests(READERS + 1)  # every upstream call is under way
                    while unread_bytes(stuck) < 2048:  # the stuck client's window is full
                        await anyio.sleep(0.01)
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(SHUTDOWN_TIMEOUT + MARGIN + TIMEOUT):
                    status = await proc.wait()
                elapsed = time.monotonic() - t0
            last_close = max(t for _, _, t in results) - t0
            print(f"\n[shutdown] --server {server}: {READERS} hung readers + 1 stuck client, "
                  f"shutdown_timeout={SHUTDOWN_TIMEOUT}s: process exited after {elapsed:.2f} s "
                  f"(last reader closed after {last_close:.2f} s), status {status}")
            assert status == 0
            assert {(reason, code) for reason, code, _ in results} == {("server_shutdown", 1001)}
            assert len(results) == READERS
            assert elapsed < SHUTDOWN_TIMEOUT + MARGIN, f"exit took {elapsed:.2f} s"
        finally:
            if stuck is not None:
                stuck.close()
            if proc.returncode is None:
                proc.kill()
                with anyio.move_on_after(10, shield=True):
                    await proc.wait()
            await proc.aclose()
