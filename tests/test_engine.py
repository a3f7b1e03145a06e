"""Engine-level tests: every flow of SPEC.md over an in-memory connection."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
import msgspec
import pytest

from streamcore import ConnectionInfo, EventType, ProviderError
from streamcore.errors import ConnectionClosed
from streamcore.testing import MemoryClient, memory_pair

from .helpers import ScriptedProvider, check_stream, make_engine, types
from .helpers import memory_session as session

pytestmark = pytest.mark.anyio


async def test_user_message_streams_in_order():
    provider = ScriptedProvider()
    engine = make_engine(provider)
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "Bonjour"}, id="req-1")
        frames = await c.receive_until("AI_MESSAGE_END")
    assert types(frames)[:2] == ["AI_THINKING", "AI_MESSAGE_START"]
    end = check_stream(frames)
    assert end["stopReason"] == "complete" and end["isComplete"] is True
    assert end["content"] == "Hello, world!"
    assert end["usage"] == {"promptTokens": 3, "completionTokens": 4, "totalTokens": 7}
    assert frames[1]["data"]["model"] is None or isinstance(frames[1]["data"]["model"], str)
    assert frames[0]["metadata"]["sessionId"].startswith("session-")
    assert provider.closed == 1


async def test_multi_turn_history_is_kept_and_bounded():
    provider = ScriptedProvider(("ok",))
    engine = make_engine(provider, limits={"history_messages": 4})
    async with session(engine) as c:
        for text in ["one", "two", "three", "four"]:
            await c.send("USER_MESSAGE", {"content": text})
            await c.receive_until("AI_MESSAGE_END")
    second = provider.requests[1].messages
    assert [(m.role, m.content) for m in second] == [("user", "one"), ("assistant", "ok"), ("user", "two")]
    fourth = provider.requests[3].messages
    # 4 messages of history at most (the oldest turn dropped), then the new question.
    assert [(m.role, m.content) for m in fourth] == [
        ("user", "two"), ("assistant", "ok"), ("user", "three"), ("assistant", "ok"), ("user", "four")
    ]


async def test_system_prompt_and_context_reach_the_provider():
    provider = ScriptedProvider(("ok",))
    engine = make_engine(provider, provider={"system_prompt": "Be brief."})
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "q", "context": {"page": 3}})
        await c.receive_until("AI_MESSAGE_END")
    req = provider.requests[0]
    assert req.messages[0].role == "system" and req.messages[0].content == "Be brief."
    assert req.context == {"page": 3}


async def test_generate_objective_with_the_demo_provider():
    engine = make_engine(None, provider={"name": "demo", "options": {"delay_ms": 0}})
    async with session(engine, user_id="user-456") as c:
        await c.send(
            "GENERATE_OBJECTIVE",
            {"prompt": "Apprendre le piano", "difficulty": "beginner", "category": "music"},
            id="gen-1",
        )
        frames = await c.receive_until("OBJECTIVE_GENERATED")
    end = check_stream(frames[:-1])
    assert end["stopReason"] == "complete"
    generated = frames[-1]["data"]
    objective = generated["objective"]
    assert isinstance(generated["generationTime"], int) and generated["generationTime"] >= 0
    assert objective["title"] == "Apprendre le piano"
    assert objective["difficulty"] == "beginner" and objective["category"] == "music"
    assert len(objective["steps"]) == 3
    assert all(s["completed"] is False and s["id"] for s in objective["steps"])
    assert set(objective) == {"id", "title", "description", "category", "difficulty", "steps", "createdAt", "updatedAt"}
    # Replies name the request they answer, so clients can match them.
    assert frames[-1]["metadata"] == {
        "sessionId": frames[0]["metadata"]["sessionId"], "userId": "user-456", "requestId": "gen-1"
    }
    assert all(f["metadata"].get("requestId") == "gen-1" for f in frames if f["type"] != "AI_MESSAGE_CHUNK")


async def test_invalid_objective_output_is_a_retryable_generation_failure():
    provider = ScriptedProvider(('{"title": ', '"no steps"}'))
    engine = make_engine(provider)
    async with session(engine) as c:
        await c.send("GENERATE_OBJECTIVE", {"prompt": "x"}, id="g")
        frames = await c.receive_until("AI_MESSAGE_END")
    error = next(f["data"] for f in frames if f["type"] == "ERROR")
    assert error["code"] == "GENERATION_FAILED" and error["retryable"] is True
    assert error["requestId"] == "g"
    assert "description" in error["message"]  # names the missing field
    end = check_stream(frames)
    assert end["stopReason"] == "error" and end["isComplete"] is False
    assert types(frames).index("ERROR") < types(frames).index("AI_MESSAGE_END")


async def test_objective_in_markdown_fence_is_accepted():
    body = '```json\n{"title": "Run", "description": "d", "steps": [{"title": "s1"}]}\n```'
    engine = make_engine(ScriptedProvider((body,)))
    async with session(engine) as c:
        await c.send("GENERATE_OBJECTIVE", {"prompt": "run", "difficulty": "advanced"})
        frames = await c.receive_until("OBJECTIVE_GENERATED")
    obj = frames[-1]["data"]["objective"]
    assert obj["title"] == "Run" and obj["difficulty"] == "advanced" and obj["category"] == "general"


async def _generate_objective(c: MemoryClient) -> dict[str, Any]:
    await c.send("GENERATE_OBJECTIVE", {"prompt": "Courir un marathon"})
    return (await c.receive_until("OBJECTIVE_GENERATED"))[-1]["data"]["objective"]


async def test_update_objective_merges_steps_and_refreshes_updated_at():
    engine = make_engine(None, provider={"name": "demo", "options": {"delay_ms": 0}})
    async with session(engine, user_id="u1") as c:
        obj = await _generate_objective(c)
        first, second = obj["steps"][0]["id"], obj["steps"][1]["id"]
        await c.send(
            "UPDATE_OBJECTIVE",
            {
                "objectiveId": obj["id"],
                "updates": {
                    "title": "Marathon 2027",
                    "steps": [{"id": first, "completed": True}, {"id": second, "remove": True}, {"title": "Rest"}],
                },
            },
        )
        updated = (await c.receive())["data"]["objective"]
    assert updated["title"] == "Marathon 2027"
    assert updated["id"] == obj["id"] and updated["createdAt"] == obj["createdAt"]
    assert updated["updatedAt"] >= obj["updatedAt"]
    ids = [s["id"] for s in updated["steps"]]
    assert second not in ids and ids[0] == first and updated["steps"][0]["completed"] is True
    assert updated["steps"][-1]["title"] == "Rest" and len(ids) == len(obj["steps"])


@pytest.mark.parametrize(
    "updates, fragment",
    [
        ({"colour": "red"}, "unknown field `colour`"),
        ({"title": 5}, "$.data.updates.title"),
        ({"steps": [{"id": "nope", "completed": True}]}, "unknown step id 'nope'"),
        ({"steps": [{"completed": True}]}, "needs a `title`"),
        ({"id": "other"}, "unknown field `id`"),
    ],
)
async def test_update_objective_rejects_bad_updates(updates, fragment):
    engine = make_engine(None, provider={"name": "demo", "options": {"delay_ms": 0}})
    async with session(engine) as c:
        obj = await _generate_objective(c)
        await c.send("UPDATE_OBJECTIVE", {"objectiveId": obj["id"], "updates": updates}, id="up")
        err = (await c.receive())["data"]
    assert err["code"] == "INVALID_MESSAGE" and err["requestId"] == "up" and fragment in err["message"]


async def test_unknown_objective_id_is_named_and_objectives_are_scoped_by_user():
    engine = make_engine(None, provider={"name": "demo", "options": {"delay_ms": 0}})
    async with session(engine, user_id="alice") as alice:
        obj = await _generate_objective(alice)
        async with session(engine, user_id="mallory") as mallory:
            await mallory.send("UPDATE_OBJECTIVE", {"objectiveId": obj["id"], "updates": {"title": "pwned"}})
            err = (await mallory.receive())["data"]
            await mallory.send("UPDATE_OBJECTIVE", {"objectiveId": "obj-missing", "updates": {}})
            err2 = (await mallory.receive())["data"]
        await alice.send("UPDATE_OBJECTIVE", {"objectiveId": obj["id"], "updates": {}})
        still = (await alice.receive())["data"]["objective"]
    assert err["code"] == "INVALID_MESSAGE" and obj["id"] in err["message"]
    assert "obj-missing" in err2["message"]
    assert still["title"] == obj["title"]


async def test_ping_pong_echoes_timestamp():
    engine = make_engine(ScriptedProvider())
    async with session(engine) as c:
        await c.send("PING", {"timestamp": 1732370000123})
        pong = await c.receive()
    assert pong["type"] == "PONG" and pong["data"] == {"timestamp": 1732370000123}


async def test_stop_generation_by_message_id_closes_the_provider():
    provider = ScriptedProvider(("a", "b", "c"), gate_after=1)
    engine = make_engine(provider)
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "go"})
        frames = await c.receive_until("AI_MESSAGE_CHUNK")
        mid = frames[-1]["data"]["messageId"]
        await provider.reached_gate.wait()
        await c.send("STOP_GENERATION", {"messageId": mid})
        frames += await c.receive_until("AI_MESSAGE_END")
    end = check_stream(frames)
    assert end["stopReason"] == "user_cancelled" and end["isComplete"] is False
    assert end["content"] == "a"
    assert provider.closed == 1


async def test_stop_generation_by_client_request_id_and_stop_all():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider)
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "one"}, id="first")
        await c.send("USER_MESSAGE", {"content": "two"}, id="second")
        seen = []
        while sum(1 for f in seen if f["type"] == "AI_MESSAGE_CHUNK") < 2:
            seen.append(await c.receive())
        await c.send("STOP_GENERATION", {"messageId": "first"})
        ends = []
        while len(ends) < 1:
            f = await c.receive()
            if f["type"] == "AI_MESSAGE_END":
                ends.append(f)
        await c.send("STOP_GENERATION", {})  # no messageId: every stream of the connection
        while len(ends) < 2:
            f = await c.receive()
            if f["type"] == "AI_MESSAGE_END":
                ends.append(f)
        # Stopping what already ended is not an error: nothing more is sent.
        await c.send("STOP_GENERATION", {"messageId": "first"})
        await c.send("PING", {"timestamp": 1})
        assert (await c.receive())["type"] == "PONG"
    assert all(e["data"]["stopReason"] == "user_cancelled" for e in ends)
    assert provider.closed == 2


@pytest.mark.parametrize(
    "error, code, retryable",
    [
        (ProviderError("upstream 500"), "GENERATION_FAILED", True),
        (ProviderError("slow down", code="RATE_LIMIT", retry_after_ms=1500), "RATE_LIMIT", True),
        (ProviderError("bad key", retryable=False, misconfigured=True), "GENERATION_FAILED", False),
        (RuntimeError("provider bug"), "GENERATION_FAILED", True),
    ],
)
async def test_provider_failure_sends_error_then_end(error, code, retryable):
    provider = ScriptedProvider(("par", "tial"), error=error, error_after=1)
    engine = make_engine(provider)
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"}, id="r9")
        frames = await c.receive_until("AI_MESSAGE_END")
    err = next(f["data"] for f in frames if f["type"] == "ERROR")
    assert err["code"] == code and err["retryable"] is retryable and err["requestId"] == "r9"
    assert "Traceback" not in err["message"] and "provider bug" not in err["message"]
    if code == "RATE_LIMIT":
        assert err["retryAfter"] == 1500
    end = check_stream(frames)
    assert end["stopReason"] == "error" and end["content"] == "par"
    assert provider.closed == 1


async def test_failure_before_first_chunk_still_announces_then_ends():
    provider = ScriptedProvider(error=ProviderError("refused"), error_after=0)
    engine = make_engine(provider)
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"})
        frames = await c.receive_until("AI_MESSAGE_END")
    assert types(frames) == ["AI_THINKING", "AI_MESSAGE_START", "ERROR", "AI_MESSAGE_END"]
    assert frames[-1]["data"]["content"] == ""


async def test_first_chunk_timeout():
    provider = ScriptedProvider(hang_before_first=True)
    engine = make_engine(provider, limits={"first_chunk_timeout": 0.2})
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"}, id="t")
        frames = await c.receive_until("AI_MESSAGE_END")
    err = next(f["data"] for f in frames if f["type"] == "ERROR")
    assert err["code"] == "TIMEOUT" and err["retryable"] is True and err["requestId"] == "t"
    assert frames[-1]["data"]["stopReason"] == "timeout"
    assert provider.closed == 1


async def test_total_generation_timeout_keeps_partial_text():
    provider = ScriptedProvider(("a", "b", "c"), hang_after=2)
    engine = make_engine(provider, limits={"generation_timeout": 0.3, "first_chunk_timeout": 5})
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"})
        frames = await c.receive_until("AI_MESSAGE_END")
    end = check_stream(frames)
    assert end["stopReason"] == "timeout" and end["content"] == "ab"
    assert "took too long" in next(f["data"]["message"] for f in frames if f["type"] == "ERROR")


async def test_first_delta_moves_the_deadline_to_the_generation_timeout():
    # The engine's sweeper enforces both deadlines (no timer per run): after the first
    # delta, the first-chunk deadline no longer applies, the generation's does.
    provider = ScriptedProvider(("a", "b"), hang_after=1)
    engine = make_engine(provider, limits={"first_chunk_timeout": 0.2, "generation_timeout": 0.6})
    async with session(engine) as c:
        t0 = time.monotonic()
        await c.send("USER_MESSAGE", {"content": "x"})
        frames = await c.receive_until("AI_MESSAGE_END")
        # Never before the generation's deadline (a lower bound: no timing luck involved).
        assert time.monotonic() - t0 >= 0.6
    end = check_stream(frames)
    assert end["stopReason"] == "timeout" and end["content"] == "a"
    assert "took too long" in next(f["data"]["message"] for f in frames if f["type"] == "ERROR")


async def test_run_expire_cancels_only_past_its_deadline():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider, limits={"first_chunk_timeout": 60, "generation_timeout": 600})
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"})
        with anyio.fail_after(5):
            await provider.reached_gate.wait()
        run = next(iter(engine.runs.values()))
        assert 540 < run.deadline - time.monotonic() <= 600  # the generation's, not the first chunk's
        run.expire(run.deadline - 1)  # not yet: nothing happens
        assert not run.scope.cancel_called
        run.expire(run.deadline)
        frames = await c.receive_until("AI_MESSAGE_END")
    end = check_stream(frames)
    assert end["stopReason"] == "timeout" and end["content"] == "a"
    assert "took too long" in next(f["data"]["message"] for f in frames if f["type"] == "ERROR")


async def test_length_finish_reason():
    # The demo provider honours max_tokens the way a model does: it stops with "length".
    engine = make_engine(None, provider={"name": "demo", "options": {"delay_ms": 0, "max_tokens": 5}})
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "tell me more"})
        frames = await c.receive_until("AI_MESSAGE_END")
    end = check_stream(frames)
    assert end["stopReason"] == "length" and end["isComplete"] is False
    assert len(end["content"].split()) == 5


async def test_concurrency_limit_answers_rate_limit():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider, limits={"max_concurrent_generations": 2, "retry_after_ms": 750})
    async with session(engine) as c:
        for i in range(3):
            await c.send("USER_MESSAGE", {"content": "go"}, id=f"r{i}")
        err = None
        while err is None:
            f = await c.receive()
            if f["type"] == "ERROR":
                err = f["data"]
        provider.gate.set()
    assert err == {
        "code": "RATE_LIMIT",
        "message": "at most 2 generations at once",
        "retryable": True,
        "requestId": "r2",
        "retryAfter": 750,
    }
    assert provider.opened == 2


async def test_message_rate_limit_token_bucket():
    engine = make_engine(ScriptedProvider(("a",)), limits={"messages_per_interval": 2, "interval": 60})
    async with session(engine) as c:
        for i in range(3):
            await c.send("UPDATE_OBJECTIVE", {"objectiveId": f"o{i}", "updates": {}}, id=f"m{i}")
        errors = [(await c.receive())["data"] for _ in range(3)]
        # Every frame costs a token, PINGs too; a refusal past the first gets no reply.
        await c.send("PING", {"timestamp": 2})
        await c.send("USER_MESSAGE", {"content": "hi"})
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.3):
                await c.receive()
    # UPDATE_OBJECTIVE runs beside the reader, so the refusal may overtake its replies.
    assert sorted(e["code"] for e in errors) == ["INVALID_MESSAGE", "INVALID_MESSAGE", "RATE_LIMIT"]
    limited = next(e for e in errors if e["code"] == "RATE_LIMIT")
    assert 0 < limited["retryAfter"] <= 30_000


async def test_a_client_that_keeps_flooding_is_closed_1008():
    engine = make_engine(
        ScriptedProvider(("a",)), limits={"messages_per_interval": 2, "interval": 60, "flood_close_after": 5}
    )
    conn, client = memory_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(10):
            for i in range(7):
                await client.send("PING", {"timestamp": i})
            frames = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(await client.receive())
    assert types(frames) == ["PONG", "PONG", "ERROR"]
    assert conn.close_code == 1008


@contextlib.asynccontextmanager
async def held_stream(engine, provider):
    """A connection whose first reply is streaming, held at the provider's gate."""
    conn, client = memory_pair()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.serve, conn, ConnectionInfo())
            await client.send("USER_MESSAGE", {"content": "x"})
            await client.receive_until("AI_MESSAGE_CHUNK")
            await provider.reached_gate.wait()
            yield conn, client
        # serve() returned: the session's task group (reader, writer, generation) is done.


async def test_client_disconnect_without_grace_cancels_the_provider_and_leaks_nothing():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider, runs={"grace_period": 0})
    async with held_stream(engine, provider) as (_, client):
        await client.aclose()  # the client goes away mid-stream
    with anyio.fail_after(5):
        while engine.runs:
            await anyio.wait_all_tasks_blocked()
    assert provider.closed == 1
    assert engine.sessions == set() and engine.active == {}
    await engine.aclose()


async def test_shutdown_ends_generations_with_server_shutdown_and_closes_1001():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider)
    async with held_stream(engine, provider) as (conn, client):
        await engine.shutdown(timeout=5)
        frames = []
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(await client.receive())
    assert frames[-1]["type"] == "AI_MESSAGE_END"
    assert frames[-1]["data"]["stopReason"] == "server_shutdown"
    assert conn.close_code == 1001
    assert provider.closed == 1


async def test_custom_handler_and_custom_event_and_broadcast():
    class SearchData(msgspec.Struct):
        query: str

    engine = make_engine(ScriptedProvider())

    @engine.on("SEARCH", SearchData)
    async def search(session, frame):
        session.send("SEARCH_RESULTS", {"query": frame.data.query, "hits": 2})
        engine.broadcast(EventType.INDEXING_PROGRESS, {"done": 1, "total": 4})

    async with session(engine) as a, session(engine) as b:
        await a.send("SEARCH", {"query": "piano"}, id="s1")
        got = await a.receive()
        assert got["type"] == "SEARCH_RESULTS" and got["data"] == {"query": "piano", "hits": 2}
        assert (await a.receive())["data"] == {"done": 1, "total": 4}
        progress = await b.receive()
        assert progress["type"] == "INDEXING_PROGRESS" and progress["data"] == {"done": 1, "total": 4}
        await a.send("SEARCH", {"query": 3}, id="s2")
        err = (await a.receive())["data"]
        assert err["code"] == "INVALID_MESSAGE" and "$.data.query" in err["message"] and err["requestId"] == "s2"


async def test_handler_bug_is_a_server_error_and_the_connection_lives():
    engine = make_engine(ScriptedProvider())

    @engine.on("BOOM")
    def boom(session, frame):
        raise KeyError("secret-internal-detail")

    async with session(engine) as c:
        await c.send("BOOM", {}, id="b1")
        err = (await c.receive())["data"]
        await c.send("PING", {"timestamp": 3})
        assert (await c.receive())["type"] == "PONG"
    assert err["code"] == "SERVER_ERROR" and err["retryable"] is True and err["requestId"] == "b1"
    assert "secret" not in err["message"]


def test_builtin_types_cannot_be_overridden():
    engine = make_engine(ScriptedProvider())
    with pytest.raises(ValueError):
        engine.on("PING")


@pytest.mark.parametrize("mode", ["session", "broadcast"])
async def test_follow_up_questions(mode):
    engine = make_engine(
        None,
        provider={"name": "demo", "options": {"delay_ms": 0}},
        features={"follow_up_questions": mode},
    )
    async with session(engine) as asker, session(engine) as other:
        await asker.send("USER_MESSAGE", {"content": "Comment indexer mes documents ?"})
        end = (await asker.receive_until("AI_MESSAGE_END"))[-1]
        follow = await asker.receive()
        assert follow["type"] == "FOLLOW_UP_QUESTIONS"
        assert follow["data"]["messageId"] == end["data"]["messageId"]
        assert len(follow["data"]["questions"]) == 3
        assert all("Comment indexer" in q for q in follow["data"]["questions"])
        await other.send("PING", {"timestamp": 9})
        first = await other.receive()
    # Broadcast reaches the other client too (before its PONG); session mode does not.
    assert first["type"] == ("FOLLOW_UP_QUESTIONS" if mode == "broadcast" else "PONG")


async def test_empty_content_is_invalid():
    engine = make_engine(ScriptedProvider())
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "   "}, id="e")
        err = (await c.receive())["data"]
    assert err["code"] == "INVALID_MESSAGE" and "$.data.content" in err["message"] and err["requestId"] == "e"


async def test_a_users_message_budget_survives_a_reconnect():
    engine = make_engine(ScriptedProvider(("a",)), limits={"messages_per_interval": 2, "interval": 600})
    async with session(engine, user_id="ann") as c:
        for i in range(2):
            await c.send("PING", {"timestamp": i})
            await c.receive()
    async with session(engine, user_id="ann") as c:  # a new connection: the budget is spent
        await c.send("PING", {"timestamp": 9}, id="p")
        err = (await c.receive())["data"]
    assert err["code"] == "RATE_LIMIT" and err["requestId"] == "p"
