"""`streamcore serve` as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import anyio
import pytest

from .helpers import connect

pytestmark = pytest.mark.anyio


async def start(*args: str, env: dict[str, str] | None = None):
    proc = await anyio.open_process(
        [sys.executable, "-m", "streamcore.cli", "serve", "--port", "0", "--log-format", "json", *args],
        env={**os.environ, **(env or {})},
    )
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
    assert line.startswith(b"streamcore listening on ws://127.0.0.1:"), line
    return proc, line.decode().split()[-1]


@pytest.mark.parametrize("server", ["uvicorn", "websockets"])
async def test_serve_then_sigterm_ends_generations_and_exits(server):
    proc, url = await start("--server", server, env={"STREAMCORE_PROVIDER": "demo"})
    try:
        async with connect(url) as c:
            await c.send("USER_MESSAGE", {"content": "bonjour"})
            frames = await c.until("AI_MESSAGE_CHUNK")
            assert frames[1]["data"]["model"] == "demo-1"
            proc.send_signal(signal.SIGTERM)
            frames += await c.until("AI_MESSAGE_END")
            assert frames[-1]["data"]["stopReason"] == "server_shutdown"
            code, _ = await c.closed()
            assert code == 1001
        with anyio.fail_after(20):
            assert await proc.wait() == 0
        err = b""
        with anyio.fail_after(10):
            async for data in proc.stderr:  # the process exited: read to EOF
                err += data
        logs = [json.loads(l) for l in err.decode().splitlines() if l.startswith("{")]
        events = {l["event"] for l in logs}
        assert {"server.start", "connection.open", "generation.end", "connection.close", "server.stopped"} <= events
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


def test_bad_config_exits_2_with_a_message(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[limits]\nidle_timout = 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "streamcore.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "unknown field `idle_timout`" in out.stderr


def test_unknown_provider_flag():
    out = subprocess.run(
        [sys.executable, "-m", "streamcore.cli", "serve", "--provider", "nope"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "known providers: demo" in out.stderr


def test_providers_command_lists_entry_points():
    out = subprocess.run([sys.executable, "-m", "streamcore.cli", "providers"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and {"demo", "litellm"} <= set(out.stdout.split())
