"""``[server] gc_freeze``: the server runners freeze the start-up heap, once per process.

``gc.freeze()`` is process-wide and never undone, so each case runs in a process of its
own (a frozen heap in the test process would keep every later test's garbage alive).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import gc, sys
import anyio
from tests.helpers import ScriptedProvider, check_stream, connect, make_engine, running

adapter, freeze = sys.argv[1], sys.argv[2] == "1"

async def serve_once():
    engine = make_engine(ScriptedProvider(), server={"gc_freeze": freeze})
    async with running(engine, adapter) as url:
        frozen = gc.get_freeze_count()
        # The server streams as before: a whole reply over a real connection.
        async with connect(url) as client:
            await client.send("USER_MESSAGE", {"content": "hi"})
            assert check_stream(await client.until("AI_MESSAGE_END"))["isComplete"]
        return frozen

async def main():
    before = gc.get_freeze_count()
    first = await serve_once()
    second = await serve_once()  # a second server in the same process freezes nothing more
    print(before, first, second, gc.get_freeze_count())

anyio.run(main)
"""


def _freeze_counts(adapter: str, freeze: bool) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, adapter, "1" if freeze else "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [int(n) for n in out.stdout.split()]


@pytest.mark.parametrize("adapter", ["websockets", "asgi", "starlette"])
def test_gc_freeze_freezes_the_heap_once_the_server_listens(adapter):
    before, first, second, after = _freeze_counts(adapter, True)
    assert before == 0
    # Everything alive at start-up: the modules, the engine, the server (tens of thousands).
    assert first > 10_000
    # Once per process: the second server's start froze nothing more (objects frozen then
    # are only ever fewer, as some of them are freed).
    assert second <= first and after <= first


@pytest.mark.parametrize("adapter", ["websockets", "asgi"])
def test_the_heap_is_not_frozen_unless_asked(adapter):
    assert _freeze_counts(adapter, False) == [0, 0, 0, 0]
