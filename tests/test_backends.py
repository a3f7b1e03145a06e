"""Contract suites every backend passes: run log, conversations, objectives, limiter, broker.

Each test runs once in memory and once on a real redis-server (started by a fixture on a
free loopback port; skipped loudly without one, failed under CI=true).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator

import anyio
import msgspec
import pytest

from streamcore import Config
from streamcore.broker import ALL, TOPIC, BusMessage, LocalBroker
from streamcore.conversations import MemoryConversationStore
from streamcore.errors import ProtocolError
from streamcore.events import AppEvent, Ended, Failure, Kind, Started, Usage
from streamcore.limits import MemoryLimiter
from streamcore.objectives import InMemoryObjectiveStore, Objective, Step
from streamcore.provider import ChatMessage
from streamcore.runlog import MemoryRunLog

from .test_redis_fixtures import redis_server, unique_prefix  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio
BACKENDS = ["memory", "redis"]
TIMEOUT = 10


class Backends:
    """One "worker's" set of backends."""

    runlog: Any
    conversations: Any
    objectives: Any
    limiter: Any
    broker: Any


def _config(url: str | None, prefix: str, **limits: Any) -> Config:
    return msgspec.convert(
        {
            "redis": {"url": url, "key_prefix": prefix, "flush_interval_ms": 1.0},
            "limits": {"history_messages": 6, "history_bytes": 200, "conversations_per_owner": 3, **limits},
            "runs": {"retention": 60.0},
        },
        Config,
    )


@contextlib.asynccontextmanager
async def open_backends(kind: str, request: Any, *, workers: int = 1, **limits: Any) -> AsyncIterator[list[Backends]]:
    """``workers`` sets of backends sharing state: one set for memory (one process)."""
    if kind == "memory":
        cfg = _config(None, "", **limits)
        lim = cfg.limits
        b = Backends()
        b.runlog = MemoryRunLog(retention=60.0)
        b.conversations = MemoryConversationStore(
            max_messages=lim.history_messages, max_bytes=lim.history_bytes, per_owner=lim.conversations_per_owner
        )
        b.objectives = InMemoryObjectiveStore(max_per_owner=3)
        b.limiter = MemoryLimiter(lim.messages_per_interval, lim.interval)
        b.broker = LocalBroker()
        yield [b] * workers
        return
    server = request.getfixturevalue("redis_server")
    from streamcore.backends.redis import RedisBackends, RedisObjectiveStore

    prefix = unique_prefix()
    sets = []
    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            rb = RedisBackends(_config(server.url, prefix, **limits))
            rb.objectives = RedisObjectiveStore(rb.client, prefix=prefix, max_per_owner=3, health=rb.health)
            for backend in (rb.runlog, rb.broker):
                backend.start(tg)
            with anyio.fail_after(TIMEOUT):
                assert await rb.broker.wait_ready(TIMEOUT)
            sets.append(rb)
        try:
            yield sets
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                for rb in sets:
                    await rb.runlog.aclose()
                    await rb.aclose()


# --- run log --------------------------------------------------------------------------------


def _entries(n: int) -> list[tuple]:
    out = [(1, Kind.STARTED, Started("m", "model-x"))]
    out += [(i, Kind.TEXT, f"w{i} ") for i in range(2, n)]
    return out


def _as_appended(entries: list[tuple]) -> list:
    """What a run appends: text deltas as bare str (events.expand), the rest as tuples."""
    return [e[2] if e[1] == Kind.TEXT else e for e in entries]


async def _logged(backends: Backends, run_id: str, n: int) -> tuple[Any, list[tuple]]:
    """A run of ``u:ann`` with ``_entries(n)`` appended as a run does, and flushed."""
    writer = backends.runlog.open(run_id, "u:ann")
    entries = _entries(n)
    for e in _as_appended(entries):
        writer.append(e)
    with anyio.fail_after(TIMEOUT):
        await writer.flush()
    return writer, entries


@pytest.mark.parametrize("kind", BACKENDS)
async def test_runlog_append_read_info_and_seal(kind, request):
    async with open_backends(kind, request, workers=2) as (a, b):
        writer, entries = await _logged(a, "run1", 50)
        info = await b.runlog.info("run1")
        assert (info.owner, info.done, info.last_seq) == ("u:ann", False, 49)
        got, done = await b.runlog.read("run1", 0)
        assert got == entries and not done
        got, done = await b.runlog.read("run1", 30)
        assert got == entries[30:] and not done
        end = [
            (50, Kind.REASONING, "hmm"),
            (51, Kind.FAILED, Failure("GENERATION_FAILED", "boom", True, 500)),
            (52, Kind.ENDED, Ended("m", "error", "w2 w3", Usage(1, 2, 3))),
            (53, Kind.APP, AppEvent("FOLLOW_UP_QUESTIONS", {"questions": ["a", "b"]})),
        ]
        for e in end:
            writer.append(e)
        writer.finish()
        with anyio.fail_after(TIMEOUT):
            await writer.flush()
        got, done = await b.runlog.read("run1", 49)
        assert got == end and done
        info = await b.runlog.info("run1")
        assert info.done and info.last_seq == 53
        got, done = await b.runlog.read("run1", 53)
        assert got == [] and done


@pytest.mark.parametrize("kind", BACKENDS)
async def test_runlog_unknown_run(kind, request):
    async with open_backends(kind, request) as (a,):
        assert await a.runlog.info("nope") is None
        with anyio.fail_after(TIMEOUT):
            assert await a.runlog.read("nope", 0, wait=0.5) == ([], True)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_runlog_waiting_reader_wakes_on_append(kind, request):
    async with open_backends(kind, request, workers=2) as (a, b):
        writer = a.runlog.open("run2", "a:x")
        writer.append((1, Kind.STARTED, Started("run2")))
        with anyio.fail_after(TIMEOUT):
            await writer.flush()
        result: list = []
        started = anyio.Event()

        async def reader() -> None:
            started.set()
            result.append(await b.runlog.read("run2", 1, wait=TIMEOUT))

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await started.wait()
                t0 = anyio.current_time()
                writer.append((2, Kind.TEXT, "late"))
            elapsed = anyio.current_time() - t0
        assert result == [([(2, Kind.TEXT, "late")], False)]
        assert elapsed < TIMEOUT / 2  # woken by the append, not by the wait's end


class _LandsBeforeDone:
    """A Redis client (the real one underneath) that runs ``before`` ahead of the reader's
    look at ``done``: the writer's last flush then lands exactly between a read that
    found nothing new and that look, as it may when two workers race."""

    def __init__(self, client: Any, before: Any) -> None:
        self._client = client
        self._before = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def hget(self, *args: Any) -> Any:
        before, self._before = self._before, None
        if before is not None:
            await before()
        return await self._client.hget(*args)


async def test_redis_runlog_read_that_finds_the_run_sealed_returns_its_last_entries(request):
    """A read found nothing after its cursor, then the run's last flush (its END and the
    seal) landed before the read looked at ``done``: it once answered "nothing, sealed",
    and a reader pulling the run (Engine._pull) stopped without its AI_MESSAGE_END."""
    async with open_backends("redis", request, workers=2) as (a, b):
        writer, _ = await _logged(a, "run-last", 4)
        end = (4, Kind.ENDED, Ended("m", "complete", "w2 w3", None))

        async def last_flush() -> None:
            writer.append(end)
            writer.finish()
            with anyio.fail_after(TIMEOUT):
                await writer.flush()

        b.runlog.client = _LandsBeforeDone(b.runlog.client, last_flush)
        with anyio.fail_after(TIMEOUT):
            got, done = await b.runlog.read("run-last", 3, wait=0.05)
        assert (got, done) == ([end], True)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_runlog_many_interleaved_runs(kind, request):
    async with open_backends(kind, request, workers=2) as (a, b):
        writers = [a.runlog.open(f"r{i}", f"u:{i}") for i in range(20)]
        for seq in range(1, 101):
            for w in writers:
                w.append((seq, Kind.TEXT, f"{w.run_id}.{seq}"))
            if seq % 10 == 0:
                await anyio.sleep(0)  # let a flush window pass now and then
        for w in writers:
            w.finish()
        with anyio.fail_after(TIMEOUT):
            for w in writers:
                await w.flush()
        for w in writers:
            got, done = await b.runlog.read(w.run_id, 0)
            assert [e[2] for e in got] == [f"{w.run_id}.{s}" for s in range(1, 101)] and done


# --- conversations --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
async def test_conversations_turns_bounds_and_owners(kind, request):
    async with open_backends(kind, request, workers=2) as (a, b):
        assert await a.conversations.history("u:ann", "c1") == []
        for i in range(5):
            await a.conversations.add_turn("u:ann", "c1", [ChatMessage("user", f"q{i}"), ChatMessage("assistant", f"a{i}")])
        history = await b.conversations.history("u:ann", "c1")
        # bounded to 6 messages, the oldest first out, turns kept whole and in order
        assert [m.content for m in history] == ["q2", "a2", "q3", "a3", "q4", "a4"]
        assert await b.conversations.history("u:bob", "c1") == []  # owners never meet
        # bytes: one long answer pushes older messages out, the newest turn stays
        await a.conversations.add_turn("u:ann", "c1", [ChatMessage("user", "long"), ChatMessage("assistant", "x" * 150)])
        history = await b.conversations.history("u:ann", "c1")
        assert [m.content for m in history][-2:] == ["long", "x" * 150]
        assert sum(len(m.content) for m in history) <= 200
        # a single message larger than the bound is cut from its start
        await a.conversations.add_turn("u:ann", "c2", [ChatMessage("user", "y" * 500)])
        (only,) = await b.conversations.history("u:ann", "c2")
        assert only.content == "y" * len(only.content) and 150 <= len(only.content) <= 200


@pytest.mark.parametrize("kind", BACKENDS)
async def test_conversations_per_owner_and_drop(kind, request):
    async with open_backends(kind, request) as (a,):
        for cid in ("c1", "c2", "c3", "c4"):
            await a.conversations.add_turn("a:x", cid, [ChatMessage("user", cid)])
        assert await a.conversations.history("a:x", "c1") == []  # least recently used went
        assert [m.content for m in await a.conversations.history("a:x", "c4")] == ["c4"]
        await a.conversations.add_turn("a:y", "c1", [ChatMessage("user", "other")])
        await a.conversations.drop_owner("a:x")
        for cid in ("c2", "c3", "c4"):
            assert await a.conversations.history("a:x", cid) == []
        assert [m.content for m in await a.conversations.history("a:y", "c1")] == ["other"]


# --- objectives -----------------------------------------------------------------------------


def _objective(i: int) -> Objective:
    return Objective(f"obj-{i}", f"T{i}", "d", "music", "beginner", [Step("s1", "first")], 1, 1)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_objectives_add_update_bounds_and_owners(kind, request):
    async with open_backends(kind, request, workers=2) as (a, b):
        await a.objectives.add("u:ann", _objective(1))
        updated = await b.objectives.update("u:ann", "obj-1", {"title": "New", "steps": [{"id": "s1", "completed": True}]})
        assert updated.title == "New" and updated.steps[0].completed
        assert (await a.objectives.get("u:ann", "obj-1")).title == "New"
        with pytest.raises(ProtocolError):
            await b.objectives.update("u:bob", "obj-1", {"title": "mine"})  # another owner's
        with pytest.raises(ProtocolError):
            await b.objectives.update("u:ann", "obj-unknown", {"title": "x"})
        for i in range(2, 6):
            await a.objectives.add("u:ann", _objective(i))
        assert await a.objectives.get("u:ann", "obj-1") is None  # bounded: the oldest went
        assert await a.objectives.get("u:ann", "obj-5") is not None
        await a.objectives.drop_owner("u:ann")
        assert await b.objectives.get("u:ann", "obj-5") is None


# --- limiter --------------------------------------------------------------------------------


class _Session:
    def __init__(self, user_id: str | None) -> None:
        self.user_id = user_id


async def _take(bucket: Any) -> int:
    wait = bucket.take()
    if wait.__class__ is not int:
        wait = await wait
    return wait


@pytest.mark.parametrize("kind", BACKENDS)
async def test_limiter_rate_is_per_user_across_workers(kind, request):
    async with open_backends(kind, request, workers=2, messages_per_interval=5, interval=60.0) as (a, b):
        on_a, on_b = a.limiter.rate(_Session("ann")), b.limiter.rate(_Session("ann"))
        waits = [await _take(on_a if i % 2 else on_b) for i in range(5)]
        assert waits == [0] * 5
        assert await _take(on_a) > 0 and await _take(on_b) > 0  # the user's bucket is empty everywhere
        assert await _take(b.limiter.rate(_Session("bob"))) == 0  # another user's is not
        anon = a.limiter.rate(_Session(None))
        assert await _take(anon) == 0


@pytest.mark.parametrize("kind", BACKENDS)
async def test_limiter_concurrency_is_per_owner_across_workers(kind, request):
    async with open_backends(kind, request, workers=2) as (a, b):
        assert await a.limiter.acquire("u:ann", "r1", 2)
        assert await b.limiter.acquire("u:ann", "r2", 2)
        assert not await a.limiter.acquire("u:ann", "r3", 2)
        assert not await b.limiter.acquire("u:ann", "r3", 2)
        assert await b.limiter.acquire("u:bob", "r4", 2)
        await a.limiter.release("u:ann", "r1")
        assert await b.limiter.acquire("u:ann", "r3", 2)
        await a.limiter.release("u:ann", "r1")  # idempotent
        assert not await a.limiter.acquire("u:ann", "r5", 2)


def test_memory_limiter_slots_from_one_to_many_and_back():
    # One slot is held as the run id alone, several as a set: every way between the two.
    lim = MemoryLimiter()
    assert lim.active("a") == 0
    assert not lim.try_acquire("a", "r0", 0)  # a limit of 0 admits nothing
    assert lim.active("a") == 0 and "a" not in lim._slots
    assert lim.try_acquire("a", "r1", 1) and lim.try_acquire("a", "r1", 1)  # held: idempotent
    assert lim.active("a") == 1
    assert not lim.try_acquire("a", "r2", 1)
    assert lim.try_acquire("a", "r2", 3) and lim.try_acquire("a", "r3", 3)
    assert lim.active("a") == 3 and not lim.try_acquire("a", "r4", 3)
    assert lim.try_acquire("a", "r2", 3)  # held already: still True at the limit
    lim.release_now("a", "r9")  # not held: nothing changes
    assert lim.active("a") == 3
    for run_id, left in (("r2", 2), ("r1", 1), ("r1", 1), ("r3", 0)):
        lim.release_now("a", run_id)
        assert lim.active("a") == left
    assert "a" not in lim._slots  # an owner with no run holds nothing
    assert lim.try_acquire("a", "r5", 1)
    lim.release_now("a", "r6")  # another id than the one held: kept
    assert lim.active("a") == 1
    lim.release_now("a", "r5")
    assert "a" not in lim._slots


# --- broker ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
async def test_broker_reaches_every_subscriber_in_order(kind, request):
    async with open_backends(kind, request, workers=2) as (a, b):
        got_a: list[BusMessage] = []
        got_b: list[BusMessage] = []
        done = anyio.Event()

        def on_b(msg: BusMessage) -> None:
            got_b.append(msg)
            if len(got_b) == 100:
                done.set()

        a.broker.subscribe(got_a.append)
        b.broker.subscribe(on_b)
        for i in range(99):
            a.broker.publish(BusMessage("w-a", ALL, None, "EVT", {"i": i}))
        a.broker.publish(BusMessage("w-a", TOPIC, "news", "NEWS", {"title": "é"}))
        with anyio.fail_after(TIMEOUT):
            await done.wait()
        assert [m.data["i"] for m in got_b[:99]] == list(range(99))
        assert (got_b[99].kind, got_b[99].target, got_b[99].data) == (TOPIC, "news", {"title": "é"})
        with anyio.fail_after(TIMEOUT):
            while len(got_a) < 100:  # the publisher's own subscriber gets them too
                await anyio.sleep(0.01)


async def test_redis_publisher_from_another_thread_reaches_a_broker(request):
    """A job that is not a server (here: a thread with the sync client) publishes."""
    server = request.getfixturevalue("redis_server")
    async with open_backends("redis", request) as (a,):
        from streamcore.backends import RedisPublisher

        got: list[BusMessage] = []
        arrived = anyio.Event()

        def on(msg: BusMessage) -> None:
            got.append(msg)
            arrived.set()

        a.broker.subscribe(on)
        prefix = a.runlog.prefix

        def job() -> int:
            with RedisPublisher(server.url, key_prefix=prefix) as pub:
                return pub.publish("indexing", "INDEXING_PROGRESS", {"done": 3, "total": 10})

        receivers = await anyio.to_thread.run_sync(job)
        with anyio.fail_after(TIMEOUT):
            await arrived.wait()
        assert receivers >= 1
        assert (got[0].kind, got[0].target, got[0].type, got[0].data) == (
            TOPIC, "indexing", "INDEXING_PROGRESS", {"done": 3, "total": 10}
        )


async def test_redis_background_loops_outlive_a_client_error_that_is_not_a_connection_error(
    request, monkeypatch, caplog
):
    # redis-py has raised AttributeError and TypeError from a connection torn down under it
    # (redis/redis-py#2349, #3546). A worker's flusher and broker must take that for an
    # outage and go on, not end (an ended background task took the whole engine down).
    from streamcore.backends.redis import RedisRunLog

    failures = {"runlog": 1, "publish": 1}
    real_write = RedisRunLog._write

    async def flaky_write(self: Any, batch: list) -> None:
        if failures["runlog"]:
            failures["runlog"] -= 1
            raise AttributeError("'NoneType' object has no attribute 'feed'")
        await real_write(self, batch)

    monkeypatch.setattr(RedisRunLog, "_write", flaky_write)
    caplog.set_level(logging.ERROR, logger="streamcore")
    async with open_backends("redis", request, workers=2) as (a, b):
        real_pipeline = a.broker.client.pipeline

        def flaky_pipeline(*args: Any, **kwargs: Any) -> Any:
            if failures["publish"]:
                failures["publish"] -= 1
                raise TypeError("'NoneType' object is not callable")
            return real_pipeline(*args, **kwargs)

        monkeypatch.setattr(a.broker.client, "pipeline", flaky_pipeline)
        got: list[BusMessage] = []
        arrived = anyio.Event()

        def handler(message: BusMessage) -> None:
            got.append(message)
            if message.data == {"n": 2}:
                arrived.set()

        b.broker.subscribe(handler)
        writer, entries = await _logged(a, "run-after-a-client-error", 5)  # flushed once retried
        got_entries, _ = await b.runlog.read("run-after-a-client-error", 0)
        assert got_entries == entries and failures["runlog"] == 0
        a.broker.publish(BusMessage("w-a", ALL, None, "ANNOUNCE", {"n": 1}))  # dropped: the publish fails
        with anyio.fail_after(TIMEOUT):
            while failures["publish"]:
                await anyio.sleep(0.01)
        a.broker.publish(BusMessage("w-a", ALL, None, "ANNOUNCE", {"n": 2}))  # the publisher is still there
        with anyio.fail_after(TIMEOUT):
            await arrived.wait()
    assert [r for r in caplog.records if r.getMessage() == "redis.unexpected_error"]
