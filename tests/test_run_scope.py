"""A run's cancellation on asyncio (streamcore._tasks.TaskScope) through the engine: STOP
and deadlines end the provider stream and log one END; shielded provider cleanup runs to
its end; a provider that swallows a cancellation is cancelled again; the engine closing
its run tasks still ends them."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from streamcore import Completion, ConnectionInfo, load_provider
from streamcore.events import Kind
from streamcore.testing import FakeOpenAI, memory_pair

from .helpers import check_stream, make_engine, memory_session

pytestmark = pytest.mark.anyio
WAIT = 10


@pytest.fixture
def anyio_backend():
    return "asyncio"


@contextlib.asynccontextmanager
async def session(engine):
    async with engine, memory_session(engine) as client:  # the engine closed after
        yield client


async def _stop_after_first_chunk(client):
    await client.send("USER_MESSAGE", {"content": "go"})
    frames = await client.receive_until("AI_MESSAGE_CHUNK")
    await client.send("STOP_GENERATION", {"messageId": frames[-1]["data"]["messageId"]})
    frames += await client.receive_until("AI_MESSAGE_END")
    return check_stream(frames), frames


class ShieldedCleanup:
    """Releases its upstream in a shielded ``finally`` that takes several loop turns."""

    model = "shielded"

    def __init__(self) -> None:
        self.released: list[int] = []

    async def stream(self, request):
        try:
            yield "a"
            await anyio.sleep(3600)
            yield "never"
        finally:
            with anyio.CancelScope(shield=True):
                for i in range(5):
                    await anyio.sleep(0.002)
                    self.released.append(i)


class Stubborn:
    """Swallows the first cancellations it gets and keeps streaming (a provider bug)."""

    model = "stubborn"

    def __init__(self) -> None:
        self.swallowed = 0

    async def stream(self, request):
        yield "a"
        for _ in range(3):
            try:
                await anyio.sleep(3600)
            except BaseException:  # noqa: BLE001 - what the test is about
                self.swallowed += 1
                yield "b"
        await anyio.sleep(3600)
        yield Completion()


async def test_stop_lets_a_shielded_provider_cleanup_finish_then_ends_once():
    provider = ShieldedCleanup()
    async with session(make_engine(provider)) as client:
        end, _ = await _stop_after_first_chunk(client)
    assert end["stopReason"] == "user_cancelled" and end["content"] == "a"
    assert provider.released == [0, 1, 2, 3, 4]


async def test_stop_cancels_again_a_provider_that_swallows_the_cancellation():
    provider = Stubborn()
    async with session(make_engine(provider)) as client:
        end, frames = await _stop_after_first_chunk(client)
    assert end["stopReason"] == "user_cancelled"
    assert provider.swallowed == 3
    assert [f["type"] for f in frames].count("AI_MESSAGE_END") == 1


async def test_stop_during_an_openai_stream_releases_the_upstream_connection():
    async with FakeOpenAI(delay=0.05, chunks=200) as api:
        provider = load_provider("openai", model="ok", options={"base_url": api.base_url})
        async with session(make_engine(provider)) as client:
            end, _ = await _stop_after_first_chunk(client)
            with anyio.fail_after(WAIT):
                await api.wait_closed_early(1)
    assert end["stopReason"] == "user_cancelled" and end["content"]


async def test_the_generation_deadline_still_ends_a_run_with_timeout():
    provider = ShieldedCleanup()
    engine = make_engine(provider, limits={"generation_timeout": 0.2, "first_chunk_timeout": 0.2})
    async with session(engine) as client:
        await client.send("USER_MESSAGE", {"content": "go"})
        frames = await client.receive_until("AI_MESSAGE_END")
    end = check_stream(frames)
    assert end["stopReason"] == "timeout" and end["content"] == "a"
    assert any(f["type"] == "ERROR" and f["data"]["code"] == "TIMEOUT" for f in frames)
    assert provider.released == [0, 1, 2, 3, 4]


async def test_closing_the_engine_ends_a_run_whose_stream_ignores_a_stop():
    """Shutdown stops every run, then cancels the run tasks still there: a provider that
    swallows cancellations still ends, with one END."""
    provider = Stubborn()
    engine = make_engine(provider, server={"shutdown_timeout": 0.5})
    conn, client = memory_pair()
    async with engine, anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(WAIT):
            await client.send("USER_MESSAGE", {"content": "go"})
            frames = await client.receive_until("AI_MESSAGE_CHUNK")
            await engine.shutdown()
            frames += await client.receive_until("AI_MESSAGE_END")
    end = check_stream(frames)
    assert end["stopReason"] == "server_shutdown"
    assert not engine.runs


class HangsInShieldedCleanup:
    """Its shielded cleanup never ends (a provider bug): only shutdown can end the run."""

    model = "hangs"

    async def stream(self, request):
        try:
            yield "a"
            await anyio.sleep(3600)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep_forever()


async def test_shutdown_ends_a_run_stuck_in_a_shielded_provider_cleanup():
    """A STOP cannot end it (the cleanup hangs, shielded); the engine closing does, within
    its deadlines, and the run logs its one END."""
    engine = make_engine(HangsInShieldedCleanup(), server={"shutdown_timeout": 0.3}, runs={"cleanup_timeout": 0.3})
    conn, client = memory_pair()
    with anyio.fail_after(WAIT):
        async with engine, anyio.create_task_group() as tg:
            tg.start_soon(engine.serve, conn, ConnectionInfo())
            await client.send("USER_MESSAGE", {"content": "go"})
            frames = await client.receive_until("AI_MESSAGE_CHUNK")
            (run,) = engine.runs.values()
            await client.send("STOP_GENERATION", {"messageId": frames[-1]["data"]["messageId"]})
            with anyio.move_on_after(0.2):
                frames += await client.receive_until("AI_MESSAGE_END")
            assert "AI_MESSAGE_END" not in [f["type"] for f in frames] and not run.sealed
            await engine.shutdown()
    assert run.sealed and not engine.runs
    ends = [e for e in run.entries if type(e) is tuple and e[1] == Kind.ENDED]
    assert len(ends) == 1 and ends[0][2].stop_reason == "user_cancelled"
