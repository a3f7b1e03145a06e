"""A bounded soak: waves of hundreds of concurrent streams against a real server process.

Each wave opens ``STREAMS`` WebSocket connections at once to a ``streamcore serve``
subprocess (demo provider, which streams deterministically), each asks for one reply,
and every reply is checked against the provider's own full text, computed here
independently (a hash per message): exactly one AI_MESSAGE_END per run, ``index``
contiguous, ``seq`` strictly increasing, nothing lost, repeated or reordered. The server's
RSS is read after every wave and must stay flat (a generous bound). Figures are printed
(``pytest -s``).

The default run stays under a minute on 2 cores; ``STREAMCORE_LONG_TESTS=1`` (or
``STREAMCORE_SOAK_WAVES`` / ``STREAMCORE_SOAK_STREAMS``) runs longer.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import anyio
import msgspec
import pytest

from streamcore import ChatMessage, GenerationRequest, load_provider
from streamcore.config import LimitsConfig

from .helpers import TIMEOUT

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LONG = os.environ.get("STREAMCORE_LONG_TESTS", "") not in ("", "0")
WAVES = int(os.environ.get("STREAMCORE_SOAK_WAVES", "30" if LONG else "5"))
STREAMS = int(os.environ.get("STREAMCORE_SOAK_STREAMS", "500" if LONG else "200"))
WORDS = 120  # chunks per reply
RSS_GROWTH_BOUND = 40 << 20  # bytes the server may grow from wave 2 to the last


def server_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def expected_hash(prompt: str) -> tuple[str, int]:
    """The provider's full text for ``prompt`` (as the server will stream it), hashed."""
    provider = load_provider("demo", options={"delay_ms": 0, "words": WORDS})
    text = ""
    async for item in provider.stream(GenerationRequest([ChatMessage("user", prompt)])):
        if type(item) is str:
            text += item
    return hashlib.sha256(text.encode()).hexdigest(), len(text)


async def start_server(tmp_path, server: str):
    limits = f"messages_per_interval = 100\nmax_generations = {STREAMS * 2}\n"
    if "max_connections_per_ip" in LimitsConfig.__struct_fields__:  # every client is 127.0.0.1
        limits += f"max_connections_per_ip = {STREAMS * 2}\n"
    config = tmp_path / "soak.toml"
    config.write_text(
        '[provider]\nname = "demo"\noptions = { delay_ms = 2, words = %d }\n' % WORDS
        + "[limits]\n" + limits
        # Finished runs leave the log quickly, so memory should return to its level.
        + "[runs]\nretention = 1.0\n"
    )
    proc = await anyio.open_process(
        [sys.executable, "-m", "streamcore.cli", "serve", "--port", "0", "--server", server,
         "--config", str(config), "--log-level", "warning", "--log-format", "json"],
    )
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
    assert line.startswith(b"streamcore listening on ws://127.0.0.1:"), line
    return proc, line.decode().split()[-1]


_decode = msgspec.json.Decoder()


async def one_stream(url: str, prompt: str, results: list) -> None:
    from websockets.asyncio.client import connect

    with anyio.fail_after(TIMEOUT * 4):
        async with connect(url, open_timeout=TIMEOUT, close_timeout=2, max_size=None) as ws:
            await ws.send(b'{"type":"USER_MESSAGE","data":{"content":' + msgspec.json.encode(prompt) + b"}}", text=True)
            digest = hashlib.sha256()
            ends, index, last_seq, chunks, length, message_id = 0, 0, 0, 0, 0, None
            while True:
                frame = _decode.decode(await ws.recv())
                kind, data = frame["type"], frame["data"]
                if kind == "AI_MESSAGE_START":
                    message_id = data["messageId"]
                elif kind == "AI_MESSAGE_CHUNK":
                    assert data["messageId"] == message_id and data["index"] == index and data["seq"] > last_seq
                    index += 1
                    last_seq = data["seq"]
                    digest.update(data["content"].encode())
                    length += len(data["content"])
                    chunks += 1
                elif kind == "AI_MESSAGE_END":
                    ends += 1
                    assert data["stopReason"] == "complete", data
                    assert hashlib.sha256(data["content"].encode()).hexdigest() == digest.hexdigest()
                    break
                elif kind == "ERROR":
                    raise AssertionError(f"ERROR {data}")
            # Exactly one END: a PING's PONG comes next, nothing else about the message.
            await ws.send('{"type":"PING","data":{"timestamp":1}}')
            while (frame := _decode.decode(await ws.recv()))["type"] != "PONG":
                assert frame["type"] != "AI_MESSAGE_END"
    results.append((prompt, digest.hexdigest(), length, chunks))


@pytest.mark.parametrize("server", ["websockets", "uvicorn"])
async def test_soak_waves_of_concurrent_streams_lose_nothing_and_memory_stays_flat(tmp_path, server):
    prompts = [f"question {i} about topic {i % 17}" for i in range(STREAMS)]
    expected = {p: await expected_hash(p) for p in prompts}
    proc, url = await start_server(tmp_path, server)
    try:
        rss, rates, total_chunks, total_streams = [], [], 0, 0
        t_all = time.perf_counter()
        for wave in range(WAVES):
            results: list = []
            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for p in prompts:
                    tg.start_soon(one_stream, url, p, results)
            elapsed = time.perf_counter() - t0
            assert len(results) == STREAMS
            for prompt, digest, length, chunks in results:
                assert (digest, length) == expected[prompt], prompt  # nothing lost, nothing extra
            chunks = sum(r[3] for r in results)
            total_chunks += chunks
            total_streams += len(results)
            rates.append((STREAMS / elapsed, chunks / elapsed))
            # Let retention (1 s) expire the finished runs before reading the RSS.
            await anyio.sleep(1.5)
            rss.append(server_rss(proc.pid))
        duration = time.perf_counter() - t_all
        growth = rss[-1] - rss[min(1, len(rss) - 1)]
        print(f"\n[soak] --server {server}: {WAVES} waves x {STREAMS} concurrent streams x {WORDS} chunks "
              f"in {duration:.1f} s: {total_streams} replies, {total_chunks} chunks, all verified, 0 lost")
        print(f"[soak] per wave: {', '.join(f'{c:.0f} conn/s {k:.0f} chunks/s' for c, k in rates)}")
        print(f"[soak] server RSS after each wave (MB): {', '.join(f'{r / 1e6:.1f}' for r in rss)}; "
              f"growth from wave 2: {growth / 1e6:+.1f} MB")
        assert growth < RSS_GROWTH_BOUND
    finally:
        if proc.returncode is None:
            proc.terminate()
            with anyio.move_on_after(15, shield=True):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                with anyio.move_on_after(5, shield=True):
                    await proc.wait()
        await proc.aclose()
