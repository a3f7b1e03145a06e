"""Runs and resume (SPEC.md), engine-level: in-memory connections, real engine and log."""

from __future__ import annotations

import gc
from typing import Any

import anyio
import msgspec
import pytest

from streamcore import Config, ConnectionInfo, Engine, MemoryRunLog, Reasoning
from streamcore.errors import ConnectionClosed
from streamcore.events import AppEvent, Kind
from streamcore.testing import memory_pair

from .helpers import ScriptedProvider, check_stream, make_engine, memory_session, types

pytestmark = pytest.mark.anyio

PIECES = tuple(f"w{i} " for i in range(12))
FULL = "".join(PIECES)


connection = memory_session


def chunks_text(frames: list[dict[str, Any]]) -> str:
    return "".join(f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK")


def assert_seqs_increase(frames: list[dict[str, Any]]) -> None:
    seqs = [f["data"]["seq"] for f in frames if "seq" in f.get("data", {})]
    assert seqs == sorted(set(seqs)), seqs


async def wait_for(predicate, what: str) -> None:
    with anyio.fail_after(5, ):
        while not predicate():
            await anyio.wait_all_tasks_blocked()
            if not predicate():
                await anyio.sleep(0.005)


async def test_every_event_with_a_message_id_carries_an_increasing_seq():
    engine = make_engine(ScriptedProvider(PIECES))
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"}, id="r1")
        frames = await c.receive_until("AI_MESSAGE_END")
    check_stream(frames)
    with_id = [f for f in frames if "messageId" in f["data"]]
    assert all(isinstance(f["data"]["seq"], int) for f in with_id)
    seqs = [f["data"]["seq"] for f in with_id]
    # START is 1, END the last entry; merged chunks skip the seqs of their inner pieces.
    assert seqs[0] == 1 and seqs[-1] == len(PIECES) + 2 and seqs == sorted(set(seqs))
    assert len(frames[1]["data"]["messageId"]) >= len("msg-") + 22  # 128 random bits, base64
    await engine.aclose()


async def test_resume_mid_run_on_another_connection_nothing_missing_or_repeated():
    provider = ScriptedProvider(PIECES, gate_after=5)
    engine = make_engine(provider)
    async with connection(engine, user_id="ann") as a:
        await a.send("USER_MESSAGE", {"content": "hi"}, id="r1")
        before = await a.receive_until("AI_MESSAGE_CHUNK")
        with anyio.fail_after(5):
            await provider.reached_gate.wait()
        # Read what was sent so far, then drop the connection mid-run.
        while chunks_text(before) != "".join(PIECES[:5]):
            before.append(await a.receive())
    message_id = before[1]["data"]["messageId"]
    last_seq = before[-1]["data"]["seq"]
    assert message_id in engine.runs  # the run outlived its connection
    async with connection(engine, user_id="ann") as b:
        await b.send("RESUME", {"messageId": message_id, "lastSeq": last_seq}, id="res")
        provider.gate.set()
        after = await b.receive_until("AI_MESSAGE_END")
    assert chunks_text(before) + chunks_text(after) == FULL
    assert after[-1]["data"]["content"] == FULL and after[-1]["data"]["stopReason"] == "complete"
    assert min(f["data"]["seq"] for f in after) > last_seq
    assert_seqs_increase(before + after)
    assert after[-1]["metadata"]["requestId"] == "res"
    await engine.aclose()


async def test_resume_of_a_live_run_with_a_cursor_ahead_of_it_gets_only_what_follows_the_cursor():
    """A lastSeq past what the run has logged yet (made up by the client): every event
    sent has a greater seq, as the spec says, the live ones included."""
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider)
    async with connection(engine, user_id="ann") as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        message_id = (await a.receive_until("AI_MESSAGE_START"))[-1]["data"]["messageId"]
        with anyio.fail_after(5):
            await provider.reached_gate.wait()
        ahead = 8  # START is seq 1, piece i seq i + 2: two pieces logged so far
        assert engine.runs[message_id].machine.seq < ahead
        async with connection(engine, user_id="ann") as b:
            await b.send("RESUME", {"messageId": message_id, "lastSeq": ahead})
            await b.send("PING", {"timestamp": 1})  # answered once the RESUME is handled
            await b.receive_until("PONG")
            provider.gate.set()
            after = await b.receive_until("AI_MESSAGE_END")
    assert min(f["data"]["seq"] for f in after if "seq" in f["data"]) > ahead
    assert chunks_text(after) == "".join(PIECES[ahead - 1:])
    assert_seqs_increase(after)
    await engine.aclose()


async def test_resume_of_a_message_the_connection_follows_does_not_cancel_it_without_grace():
    """Resuming a message the connection already follows replaces the old cursor (SPEC).
    The old reader was detached before the new one was attached: for that instant the run
    had no reader, and with grace_period = 0 it was cancelled (user_cancelled)."""
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider, runs={"grace_period": 0})
    async with connection(engine, user_id="ann") as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        message_id = (await a.receive_until("AI_MESSAGE_START"))[-1]["data"]["messageId"]
        with anyio.fail_after(5):
            await provider.reached_gate.wait()
        await a.send("RESUME", {"messageId": message_id, "lastSeq": 0})
        await a.send("PING", {"timestamp": 1})  # answered once the RESUME is handled
        await a.receive_until("PONG")
        provider.gate.set()
        frames = await a.receive_until("AI_MESSAGE_END")
    end = frames[-1]["data"]
    assert end["stopReason"] == "complete" and end["content"] == FULL
    assert engine.runs == {} and provider.closed == 1
    await engine.aclose()


def _bare_run() -> tuple[Any, Any, list]:
    """A Run with a stand-in engine that records orphaning, and a stand-in session."""
    from types import SimpleNamespace

    from streamcore.codec import Codec
    from streamcore.outbox import Outbox
    from streamcore.run import Run
    from streamcore.session import Session

    orphaned: list = []
    engine = SimpleNamespace(_orphaned=orphaned.append, _run_sealed=lambda run: None)
    engine.unsubscribe = lambda sub: Engine.unsubscribe(engine, sub)  # type: ignore[arg-type]
    session = SimpleNamespace(
        codec=Codec(), limits=SimpleNamespace(coalesce_chunks=True), metadata=None,
        metadata_for=lambda request_id: None, outbox=Outbox(1 << 16), max_frame_bytes=1 << 20,
        subscriptions={}, engine=engine,
    )
    session.subscription_closed = lambda sub: Session.subscription_closed(session, sub)  # type: ignore[arg-type]
    run = Run(engine, "m1", "a:x", SimpleNamespace(purpose="chat"), MemoryRunLog().open("m1", "a:x"))  # type: ignore[arg-type]
    run._emit(run.machine.start("model"))
    return run, session, orphaned


def test_a_resume_replacing_a_reader_of_a_live_run_never_leaves_it_without_one():
    """Pure: with a grace period, the instant without a reader started a grace timer that
    nothing cancelled (its task had not run yet when the new reader attached)."""
    from streamcore.session import Session

    run, session, orphaned = _bare_run()
    Session.follow(session, run.reader(session, "r1"), run)  # the USER_MESSAGE's reader
    Session.follow(session, run.reader(session, "r2", 1), run)  # a RESUME of it
    assert [sub.request_id for sub in run.subscribers] == ["r2"]
    assert orphaned == []


async def test_a_reader_attaching_before_the_grace_task_runs_ends_that_grace_period():
    """Pure: the grace period's scope is made when the run is orphaned, so a RESUME that
    attaches before the grace task first runs cancels it (it once found no scope to
    cancel, and the stale timer later cut the run short)."""
    from streamcore.session import Session

    run, session, _ = _bare_run()
    scope = run.grace_scope()  # what Engine._orphaned does, before starting run.grace
    Session.follow(session, run.reader(session, "r1"), run)
    with anyio.fail_after(5):
        await run.grace(3600, scope)  # returns at once: cancelled before it began
    assert run.stop_reason is None and run._grace is None


async def test_resume_after_the_end_replays_from_start_within_retention():
    engine = make_engine(ScriptedProvider(PIECES))
    async with connection(engine, user_id="ann") as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        first = await a.receive_until("AI_MESSAGE_END")
    message_id = first[-1]["data"]["messageId"]
    async with connection(engine, user_id="ann") as b:
        await b.send("RESUME", {"messageId": message_id})
        replay = await b.receive_until("AI_MESSAGE_END")
        await b.send("RESUME", {"messageId": message_id, "lastSeq": first[-2]["data"]["seq"]})
        tail = await b.receive_until("AI_MESSAGE_END")
    assert types(replay)[0] == "AI_MESSAGE_START"
    assert chunks_text(replay) == FULL == replay[-1]["data"]["content"]
    assert types(tail) == ["AI_MESSAGE_END"]
    assert_seqs_increase(replay)
    await engine.aclose()


async def test_two_tabs_follow_one_run_and_either_stops_it():
    provider = ScriptedProvider(PIECES, gate_after=3)
    engine = make_engine(provider)
    async with connection(engine, user_id="ann") as tab1, connection(engine, user_id="ann") as tab2:
        await tab1.send("USER_MESSAGE", {"content": "hi"})
        first = await tab1.receive_until("AI_MESSAGE_START")
        message_id = first[-1]["data"]["messageId"]
        await tab2.send("RESUME", {"messageId": message_id}, id="follow")
        second = await tab2.receive_until("AI_MESSAGE_START")
        with anyio.fail_after(5):
            await provider.reached_gate.wait()
        await tab2.send("STOP_GENERATION", {"messageId": message_id})
        end1 = await tab1.receive_until("AI_MESSAGE_END")
        end2 = await tab2.receive_until("AI_MESSAGE_END")
    for frames in (first + end1, second + end2):
        assert frames[-1]["data"]["stopReason"] == "user_cancelled"
        assert chunks_text(frames) == frames[-1]["data"]["content"] == "".join(PIECES[:3])
    assert provider.closed == 1
    await engine.aclose()


async def test_a_foreign_user_cannot_resume_follow_or_stop():
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider)
    async with connection(engine, user_id="ann") as ann, connection(engine, user_id="bob") as bob:
        await ann.send("USER_MESSAGE", {"content": "private"})
        frames = await ann.receive_until("AI_MESSAGE_START")
        message_id = frames[-1]["data"]["messageId"]
        await bob.send("RESUME", {"messageId": message_id}, id="steal")
        err = (await bob.receive())["data"]
        await bob.send("STOP_GENERATION", {"messageId": message_id}, id="stop")
        err2 = (await bob.receive())["data"]
        await bob.send("RESUME", {"messageId": "msg-does-not-exist"}, id="guess")
        err3 = (await bob.receive())["data"]
        provider.gate.set()
        end = (await ann.receive_until("AI_MESSAGE_END"))[-1]["data"]
    assert err == {"code": "NOT_FOUND", "message": err["message"], "retryable": False, "requestId": "steal"}
    assert err2["code"] == "NOT_FOUND" and err2["requestId"] == "stop"
    # Unknown and foreign are indistinguishable.
    assert err3["code"] == "NOT_FOUND" and err3["message"].replace("msg-does-not-exist", message_id) == err["message"]
    assert end["stopReason"] == "complete" and end["content"] == FULL
    await engine.aclose()


async def test_anonymous_runs_are_reachable_by_their_id_only():
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider)
    async with connection(engine) as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        message_id = (await a.receive_until("AI_MESSAGE_START"))[-1]["data"]["messageId"]
    async with connection(engine) as b, connection(engine, user_id="mallory") as m:
        await m.send("RESUME", {"messageId": message_id})
        assert (await m.receive())["data"]["code"] == "NOT_FOUND"  # users and anonymous never meet
        await b.send("RESUME", {"messageId": message_id})
        provider.gate.set()
        frames = await b.receive_until("AI_MESSAGE_END")
    assert chunks_text(frames) == FULL
    await engine.aclose()


async def test_grace_expiry_cancels_an_abandoned_run():
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider, runs={"grace_period": 0.05})
    async with connection(engine) as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        await a.receive_until("AI_MESSAGE_CHUNK")
        run = next(iter(engine.runs.values()))
    with anyio.fail_after(5):
        await run.done.wait()
    assert run.machine.ended.stop_reason == "user_cancelled"
    assert provider.closed == 1 and engine.active == {}
    await engine.aclose()


async def test_always_finish_keeps_an_abandoned_run_going_to_the_end():
    provider = ScriptedProvider(PIECES)
    engine = make_engine(provider, runs={"grace_period": 0, "always_finish": True})
    provider.gate_after = 1
    async with connection(engine) as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        await a.receive_until("AI_MESSAGE_CHUNK")
        run = next(iter(engine.runs.values()))
    provider.gate.set()
    with anyio.fail_after(5):
        await run.done.wait()
    assert run.machine.ended.stop_reason == "complete" and run.machine.ended.content == FULL
    await engine.aclose()


async def test_retention_expiry_gives_not_found():
    now = [1000.0]
    log = MemoryRunLog(retention=60, clock=lambda: now[0])
    engine = Engine(msgspec.convert({}, Config), provider=ScriptedProvider(PIECES), runlog=log)
    async with connection(engine) as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        message_id = (await a.receive_until("AI_MESSAGE_END"))[-1]["data"]["messageId"]
        await wait_for(lambda: not engine.runs, "run sealed")
        now[0] += 59
        await a.send("RESUME", {"messageId": message_id}, id="in-time")
        assert (await a.receive_until("AI_MESSAGE_END"))[-1]["data"]["content"] == FULL
        now[0] += 2
        await a.send("RESUME", {"messageId": message_id}, id="late")
        err = (await a.receive())["data"]
    assert err["code"] == "NOT_FOUND" and err["requestId"] == "late"
    assert len(log) == 0 and log.bytes == 0
    await engine.aclose()


async def test_shutdown_during_a_resume_ends_the_run_for_the_follower():
    provider = ScriptedProvider(PIECES, gate_after=2)
    engine = make_engine(provider)
    async with connection(engine, user_id="ann") as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        message_id = (await a.receive_until("AI_MESSAGE_CHUNK"))[1]["data"]["messageId"]
    conn, b = memory_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo(user_id="ann"))
        with anyio.fail_after(10):
            await b.send("RESUME", {"messageId": message_id, "lastSeq": 0})
            await b.receive_until("AI_MESSAGE_START")
            await engine.shutdown(timeout=5)
            frames = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(await b.receive())
    assert frames[-1]["type"] == "AI_MESSAGE_END" and frames[-1]["data"]["stopReason"] == "server_shutdown"
    assert conn.close_code == 1001 and provider.closed == 1
    await engine.aclose()


async def test_logged_text_deltas_are_not_tracked_by_the_garbage_collector():
    """Every chunk stays in the log for resume. A tuple per chunk was a tracked survivor:
    at a thousand paced streams enough of them to set off full collections mid-stream,
    each pausing every stream. A text delta is logged as its bare str, read back whole."""
    engine = make_engine(ScriptedProvider(PIECES))
    enabled = gc.isenabled()
    gc.disable()  # a collection would untrack plain tuples and hide what this counts
    try:
        async with connection(engine) as c:
            await c.send("USER_MESSAGE", {"content": "hi"})
            frames = await c.receive_until("AI_MESSAGE_END")
        message_id = frames[-1]["data"]["messageId"]
        logged = engine.runlog.get(message_id).entries
        assert len(logged) == len(PIECES) + 2
        assert sum(gc.is_tracked(e) for e in logged) == 2  # START and END only
    finally:
        if enabled:
            gc.enable()
    got, done = await engine.runlog.read(message_id, 0)
    assert done and [e[0] for e in got] == list(range(1, len(PIECES) + 3))
    assert [e for e in got if e[1] == Kind.TEXT] == [(i + 2, Kind.TEXT, p) for i, p in enumerate(PIECES)]
    assert (await engine.runlog.info(message_id)).last_seq == len(PIECES) + 2
    await engine.aclose()


async def test_a_slow_reader_catches_up_from_the_log_merged_nothing_lost():
    pieces = tuple(f"piece-{i:04d} " for i in range(400))
    provider = ScriptedProvider(pieces)
    engine = make_engine(provider, limits={"send_buffer_bytes": 256})
    # A one-frame transport buffer: the writer blocks until the client reads.
    async with connection(engine, buffer=1) as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        # The provider runs to its end while this client reads nothing: no reader pauses it.
        await wait_for(lambda: provider.closed == 1, "provider done")
        frames = await c.receive_until("AI_MESSAGE_END")
    check_stream(frames)
    chunks = [f for f in frames if f["type"] == "AI_MESSAGE_CHUNK"]
    assert chunks_text(frames) == "".join(pieces)
    assert len(chunks) < len(pieces)  # merged while it lagged
    assert_seqs_increase(frames)
    await engine.aclose()


class _SharedLookingLog:
    """A memory log without the in-process look-up (``get``), as a shared log is: a
    finished run is then pulled through ``read`` instead of read in place."""

    def __init__(self) -> None:
        self._log = MemoryRunLog()

    def __getattr__(self, name: str) -> Any:
        if name == "get":
            raise AttributeError(name)
        return getattr(self._log, name)


@pytest.mark.parametrize("read", ["in place", "pulled"])
@pytest.mark.parametrize("last_seq", [0, 10, -3, -50])
async def test_a_lagging_resume_from_the_log_loses_nothing_whatever_the_cursor(last_seq, read):
    """A finished run read back from the log by a reader that falls behind and catches up.
    A negative lastSeq asks for every event (every seq is greater): it once offset the
    reader's position in what the log returned, skipping entries or never reaching END."""
    pieces = tuple(f"piece-{i:04d} " for i in range(400))
    config = msgspec.convert({"limits": {"send_buffer_bytes": 256}}, Config)
    runlog = _SharedLookingLog() if read == "pulled" else None
    engine = Engine(config, provider=ScriptedProvider(pieces), runlog=runlog)
    async with connection(engine) as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        message_id = (await a.receive_until("AI_MESSAGE_END"))[-1]["data"]["messageId"]
    async with connection(engine, buffer=1) as b:
        await b.send("RESUME", {"messageId": message_id, "lastSeq": last_seq})
        frames = await b.receive_until("AI_MESSAGE_END")
    assert [f["type"] for f in frames].count("AI_MESSAGE_END") == 1
    assert_seqs_increase(frames)
    # START is seq 1 and piece i seq i + 2: the text after the cursor, whole.
    assert chunks_text(frames) == "".join(pieces[max(0, last_seq - 1):])
    await engine.aclose()


class _Source:
    """What a Subscription reads: a run's entries (text deltas bare), not sealed yet."""

    base = 0
    sealed = False

    def __init__(self, entries: list) -> None:
        self.entries = entries


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "one frame per chunk"])
@pytest.mark.parametrize("count", [2, 3, 5])
def test_a_reader_that_falls_behind_on_the_last_entry_it_was_given_gets_it_later(count, merge):
    """Pure: a Subscription and a real Outbox, no socket, no task. Catching up, a reader
    whose buffer fills exactly at the last entry of the log must resume from that entry:
    the cursor once moved past it, and that delta never reached the reader (seen once in
    CI under load, as a short concatenation of a 6.4 MB reply)."""
    from types import SimpleNamespace

    from streamcore.codec import Codec
    from streamcore.outbox import Outbox
    from streamcore.run import Subscription

    pieces = [f"p{i}." for i in range(count)]  # 3 characters each
    # Pending size counts a merged chunk's characters, else also its frame's envelope:
    # full once every piece but the last is pending.
    size = 3 if merge else 3 + Codec.chunk_overhead(Codec().chunk_encoder("m1"))
    outbox = Outbox(limit=size * (count - 1) - 1)
    session = SimpleNamespace(
        codec=Codec(), limits=SimpleNamespace(coalesce_chunks=merge), metadata=None,
        metadata_for=lambda request_id: None, outbox=outbox, max_frame_bytes=1 << 20,
        subscription_closed=lambda sub: None,
    )
    source = _Source(list(pieces))
    sub = Subscription(session, source, "m1", None)  # type: ignore[arg-type]
    sub.pump()
    assert sub.lagging and len(outbox) == 1  # one run of count - 1 pieces
    frames = outbox.take()
    assert len(frames) == (1 if merge else count - 1)
    outbox.catch_up()  # what the writer does once it has drained the buffer
    frames += outbox.take()
    assert not sub.lagging
    source.entries.append("end.")  # the live tail goes on from the cursor
    sub.deliver_text(count + 1, "end.")
    frames += outbox.take()
    chunks = [msgspec.json.decode(f)["data"] for f in frames]
    assert "".join(c["content"] for c in chunks) == "".join(pieces) + "end."
    assert [c["index"] for c in chunks] == list(range(len(chunks)))


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "one frame per chunk"])
def test_queued_chunks_keep_their_seqs_across_an_event_that_could_not_be_encoded(merge):
    """Pure: text, an application event whose payload cannot be encoded (skipped, with a
    log line), text. The two texts are queued back to back, yet their seqs are not
    consecutive: each frame must carry its own piece's seq, whether the run is merged and
    then cut (``max_text``) or sent one frame per piece."""
    from types import SimpleNamespace

    from streamcore.codec import Codec
    from streamcore.outbox import Outbox
    from streamcore.run import Subscription

    outbox = Outbox(limit=1 << 20, max_text=4)  # each piece is a frame of its own
    session = SimpleNamespace(
        codec=Codec(), limits=SimpleNamespace(coalesce_chunks=merge), metadata=None,
        metadata_for=lambda request_id: None, outbox=outbox, max_frame_bytes=1 << 20,
        subscription_closed=lambda sub: None,
    )
    sub = Subscription(session, _Source([]), "m1", None)  # type: ignore[arg-type]
    sub.deliver((1, Kind.APP, AppEvent("CUSTOM_EVENT", {"fine": True})))
    sub.deliver_text(2, "abc.")
    sub.deliver((3, Kind.APP, AppEvent("CUSTOM_EVENT", object())))  # not encodable: skipped
    sub.deliver_text(4, "def.")
    frames = [msgspec.json.decode(f) for f in outbox.take()]
    chunks = [f["data"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK"]
    assert [(c["content"], c["seq"]) for c in chunks] == [("abc.", 2), ("def.", 4)]
    assert [c["index"] for c in chunks] == [0, 1]


async def test_reasoning_is_streamed_apart_and_never_in_the_answer_or_history():
    provider = ScriptedProvider((Reasoning("Let me think. "), Reasoning("Done. "), "Answer", "!"))
    engine = make_engine(provider)
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "q1"})
        frames = await c.receive_until("AI_MESSAGE_END")
        await c.send("USER_MESSAGE", {"content": "q2"})
        await c.receive_until("AI_MESSAGE_END")
    reasoning = [f["data"] for f in frames if f["type"] == "AI_REASONING_CHUNK"]
    assert "".join(r["content"] for r in reasoning) == "Let me think. Done. "
    assert all(set(r) == {"messageId", "content", "seq"} for r in reasoning)
    assert frames[-1]["data"]["content"] == "Answer!" == chunks_text(frames)
    assert_seqs_increase(frames)
    history = [(m.role, m.content) for m in provider.requests[1].messages]
    assert history == [("user", "q1"), ("assistant", "Answer!"), ("user", "q2")]
    await engine.aclose()


async def test_reasoning_hidden_by_config():
    provider = ScriptedProvider((Reasoning("secret thoughts"), "Answer"))
    engine = make_engine(provider, features={"reasoning": "hide"})
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "q"})
        frames = await c.receive_until("AI_MESSAGE_END")
    assert "AI_REASONING_CHUNK" not in types(frames)
    assert frames[-1]["data"]["content"] == "Answer"
    await engine.aclose()


async def test_conversation_history_follows_the_conversation_across_reconnects():
    provider = ScriptedProvider(("ok",))
    engine = make_engine(provider)
    async with connection(engine, user_id="ann") as a:
        await a.send("USER_MESSAGE", {"content": "one", "conversationId": "c1"})
        await a.receive_until("AI_MESSAGE_END")
        await a.send("USER_MESSAGE", {"content": "other", "conversationId": "c2"})
        await a.receive_until("AI_MESSAGE_END")
    async with connection(engine, user_id="ann") as b, connection(engine, user_id="bob") as bob:
        await b.send("USER_MESSAGE", {"content": "two", "conversationId": "c1"})
        await b.receive_until("AI_MESSAGE_END")
        await bob.send("USER_MESSAGE", {"content": "bob's", "conversationId": "c1"})
        await bob.receive_until("AI_MESSAGE_END")
    seen = [(m.role, m.content) for m in provider.requests[2].messages]
    assert seen == [("user", "one"), ("assistant", "ok"), ("user", "two")]
    assert [(m.role, m.content) for m in provider.requests[3].messages] == [("user", "bob's")]
    await engine.aclose()


async def test_overlapping_replies_in_one_conversation_never_interleave():
    provider = ScriptedProvider(("answer",), gate_after=1)
    engine = make_engine(provider)
    async with connection(engine, user_id="ann") as c:
        await c.send("USER_MESSAGE", {"content": "A", "conversationId": "c"})
        await c.send("USER_MESSAGE", {"content": "B", "conversationId": "c"})
        with anyio.fail_after(5):
            while provider.opened < 2:
                await anyio.sleep(0.005)
        provider.gate.set()
        await c.receive_until("AI_MESSAGE_END")
        await c.receive_until("AI_MESSAGE_END")
        provider.gate_after = None
        await c.send("USER_MESSAGE", {"content": "C", "conversationId": "c"})
        await c.receive_until("AI_MESSAGE_END")
    history = [(m.role, m.content) for m in provider.requests[2].messages][:-1]
    pairs = {tuple(history[0:2]), tuple(history[2:4])}
    assert pairs == {(("user", "A"), ("assistant", "answer")), (("user", "B"), ("assistant", "answer"))}
    await engine.aclose()


async def test_history_is_bounded_in_bytes():
    provider = ScriptedProvider(("ok",))
    engine = make_engine(provider, limits={"history_bytes": 100})
    async with connection(engine) as c:
        for i in range(3):
            await c.send("USER_MESSAGE", {"content": f"{i}" * 60})
            await c.receive_until("AI_MESSAGE_END")
    sent = provider.requests[2].messages
    assert sum(len(m.content) for m in sent[:-1]) <= 100
    assert sent[-1].content == "2" * 60
    await engine.aclose()


# --- regressions: each of these broke "exactly one AI_MESSAGE_END" before ------------------


async def test_user_message_during_shutdown_is_refused_and_starts_no_run():
    provider = ScriptedProvider(PIECES, gate_after=1)
    engine = make_engine(provider)
    conn, c = memory_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(10):
            await c.send("USER_MESSAGE", {"content": "first"})
            await c.receive_until("AI_MESSAGE_CHUNK")
            engine.closing = True  # shutdown has begun and waits for open generations
            await c.send("USER_MESSAGE", {"content": "late"}, id="late")
            err = await c.receive()
            provider.gate.set()
            await engine.shutdown(timeout=5)
            frames = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(await c.receive())
    assert err["type"] == "ERROR" and err["data"]["requestId"] == "late" and err["data"]["retryable"] is True
    assert types(frames).count("AI_THINKING") == 0
    assert types(frames).count("AI_MESSAGE_END") == 1
    assert provider.opened == 1


async def test_a_delta_that_cannot_be_encoded_ends_the_run_with_error_and_the_connection_lives():
    engine = make_engine(ScriptedProvider(("ok ", "\ud83d", "never")))
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"}, id="r")
        frames = await c.receive_until("AI_MESSAGE_END")
        await c.send("PING", {"timestamp": 1})
        pong = await c.receive()
    assert types(frames)[-2:] == ["ERROR", "AI_MESSAGE_END"]
    assert frames[-2]["data"]["code"] == "GENERATION_FAILED" and frames[-2]["data"]["requestId"] == "r"
    assert frames[-2]["data"]["messageId"] == frames[-1]["data"]["messageId"]
    assert frames[-1]["data"]["stopReason"] == "error" and frames[-1]["data"]["content"] == "ok "
    assert pong["type"] == "PONG"
    await engine.aclose()


class HangingClose:
    """A provider whose stream never finishes closing (an SDK stuck in aclose)."""

    model = "hang"

    def __init__(self) -> None:
        self.close_started = anyio.Event()

    def stream(self, request):
        provider = self

        class Stream:
            def __aiter__(self):
                return self

            async def __anext__(self):
                await anyio.sleep_forever()

            async def aclose(self):
                provider.close_started.set()
                await anyio.sleep_forever()

        return Stream()


async def test_a_hanging_aclose_is_abandoned_after_cleanup_timeout():
    provider = HangingClose()
    engine = make_engine(provider, runs={"cleanup_timeout": 0.2})
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        await c.receive()  # THINKING
        await c.send("STOP_GENERATION", {})
        frames = await c.receive_until("AI_MESSAGE_END")
        assert frames[-1]["data"]["stopReason"] == "user_cancelled"
        run = None
    with anyio.fail_after(5):
        while engine.runs:
            await anyio.sleep(0.01)
        await engine.shutdown(timeout=1)
        await engine.aclose()
    assert provider.close_started.is_set() and run is None


async def test_no_chunk_frame_exceeds_the_frame_limit_whatever_the_deltas():
    # One delta far over the limit, then many small ones merged while the client lags.
    big = "x" * 20_000
    pieces = (big,) + tuple(f"\x01{i:05d}" for i in range(3000))
    engine = make_engine(
        ScriptedProvider(pieces),
        limits={"max_frame_bytes": 8192, "max_message_bytes": 8192, "send_buffer_bytes": 1 << 20},
    )
    conn, c = memory_pair(1)
    raw: list[bytes] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(10):
            await c.send("USER_MESSAGE", {"content": "hi"})
            while True:
                frame = await c._inbound.receive()
                raw.append(frame)
                if b'"AI_MESSAGE_END"' in frame[:120]:
                    break
        await c.aclose()
    chunks = [f for f in raw if b'"AI_MESSAGE_CHUNK"' in f[:120]]
    assert max(len(f) for f in chunks) <= 8192
    frames = [msgspec.json.decode(f) for f in raw]
    assert chunks_text(frames) == "".join(pieces)
    assert_seqs_increase(frames)
    await engine.aclose()


async def test_an_end_too_large_for_a_frame_goes_without_its_content():
    text = "y" * 30_000
    engine = make_engine(ScriptedProvider((text,)), limits={"max_frame_bytes": 8192, "max_message_bytes": 8192})
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        frames = await c.receive_until("AI_MESSAGE_END")
    end = frames[-1]["data"]
    assert "content" not in end and end["stopReason"] == "complete" and end["isComplete"] is True
    assert chunks_text(frames) == text
    await engine.aclose()
