"""TaskSet: plain asyncio tasks the engine starts per reply, and how it finds the loop."""

from __future__ import annotations

import asyncio

import pytest

from streamcore import _tasks

from .helpers import ScriptedProvider, check_stream, connect, make_engine, running


def test_running_loop_without_sniffio(monkeypatch):
    # anyio 4.16 no longer installs sniffio: without it, an asyncio loop is found, or none.
    monkeypatch.setattr(_tasks, "sniffio", None)
    assert _tasks.running_loop() is None

    async def inside() -> object:
        return _tasks.running_loop()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(inside()) is loop
    finally:
        loop.close()


@pytest.mark.anyio
async def test_an_app_task_factory_without_context_still_runs_replies():
    # A task factory written for Python 3.10 takes (loop, coro) only; a reply's task is
    # then made without a context argument, as before.
    made: list[object] = []

    def factory(loop, coro):
        task = asyncio.Task(coro, loop=loop)
        made.append(task)
        return task

    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        engine = make_engine(ScriptedProvider())
        async with running(engine, "asgi") as url, connect(url) as client:
            await client.send("USER_MESSAGE", {"content": "hi"})
            assert check_stream(await client.until("AI_MESSAGE_END"))["content"] == "Hello, world!"
    finally:
        loop.set_task_factory(previous)
    assert made  # the factory made the tasks (the run's among them)


def test_streamcore_imports_and_streams_without_sniffio():
    # anyio 4.16 installs no sniffio: the core must import and serve without it.
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys; sys.modules['sniffio'] = None\n"  # an import of it now fails
        "import anyio\n"
        "from streamcore import ConnectionInfo, Engine\n"
        "from streamcore.testing import memory_pair\n"
        "from tests.helpers import ScriptedProvider\n"
        "async def main():\n"
        "    async with Engine(provider=ScriptedProvider()) as engine:\n"
        "        conn, client = memory_pair()\n"
        "        async with anyio.create_task_group() as tg:\n"
        "            tg.start_soon(engine.serve, conn, ConnectionInfo())\n"
        "            await client.send('USER_MESSAGE', {'content': 'hi'})\n"
        "            while (f := await client.receive())['type'] != 'AI_MESSAGE_END':\n"
        "                pass\n"
        "            print(f['data']['content'])\n"
        "            tg.cancel_scope.cancel()\n"
        "anyio.run(main)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Hello, world!"
