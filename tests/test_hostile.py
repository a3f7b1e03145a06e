"""Hostile clients and hostile upstreams: every resource bounded, every limit unbypassable.

- The decoder under a structure-aware fuzzer (hypothesis), JSON and MessagePack: a frame
  decodes to a command Struct or raises ``ProtocolError`` (INVALID_MESSAGE), nothing else.
- A live server (real WebSockets on 127.0.0.1) under a seeded structure-aware fuzzer: every
  reply is a valid envelope, every undecodable frame gets INVALID_MESSAGE with its
  ``requestId`` when readable, the connection lives, memory stays bounded.
- The issue's cases as regression tests (rate limit per frame, floods, owners, objectives,
  handlers, admission...).
- Upstream faults at every point, through the engine end to end (the ``openai`` provider
  against FakeOpenAI on 127.0.0.1): exactly one AI_MESSAGE_END and the right ERROR code.
- Flood fairness: one user floods, another's stream stays normal (figures printed).

The default run takes well under a minute; ``STREAMCORE_LONG_TESTS=1`` multiplies the
fuzzing budgets by 10. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamcore import Completion, load_provider
from streamcore.codec import JSON, MSGPACK, Codec
from streamcore.errors import ProtocolError, ProviderError
from streamcore.objectives import (
    MAX_OBJECTIVE_BYTES,
    MAX_STEPS,
    InMemoryObjectiveStore,
    Objective,
    Step,
    apply_updates,
    parse_objective,
)
from streamcore.protocol import BUILTIN_CLIENT_FRAMES, ErrorCode
from streamcore.testing import FakeOpenAI, memory_pair

from .helpers import TIMEOUT, check_stream, connect, make_engine, running

pytestmark = pytest.mark.anyio

LONG = os.environ.get("STREAMCORE_LONG_TESTS", "") not in ("", "0")
SCALE = 10 if LONG else 1
DEMO = {"name": "demo", "options": {"delay_ms": 0, "words": 5}}
ERROR_CODES = {c for c in vars(ErrorCode).values() if isinstance(c, str) and c.isupper()}
SECRET = "test-secret-that-is-long-enough-for-hs256"


# --- the decoder, fuzzed ---------------------------------------------------------------------

TYPES = [t.__struct_config__.tag for t in BUILTIN_CLIENT_FRAMES] + ["SUBSCRIBE", "UNSUBSCRIBE"]
FIELDS = ["content", "context", "conversationId", "prompt", "difficulty", "category", "messageId",
          "objectiveId", "updates", "timestamp", "lastSeq", "topic", "steps", "id", "completed"]
# Text without lone surrogates: a WebSocket text frame is valid UTF-8 (checked by every
# server), so a str frame never holds one. (Surrogates are tested on their own below.)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | text)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | text, inner, max_size=4),
    max_leaves=20,
)
datas = st.dictionaries(st.sampled_from(FIELDS), values, max_size=5) | values
frames = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES) | values,
        "data": datas,
        "id": text | values,
        "timestamp": values,
        "metadata": values,
    },
)


def mutate(raw: str, rnd: random.Random) -> str:
    """Byte-level damage on valid JSON: truncation, insertion, deletion, nesting."""
    choice = rnd.randrange(5)
    if choice == 0 and raw:
        return raw[: rnd.randrange(len(raw))]
    if choice == 1:
        i = rnd.randrange(len(raw) + 1)
        return raw[:i] + rnd.choice(['"', "{", "}", "[", "]", ",", ":", "\\", "\x00", "é", "NaN", "1e999"]) + raw[i:]
    if choice == 2 and raw:
        i = rnd.randrange(len(raw))
        return raw[:i] + raw[i + 1:]
    if choice == 3:
        depth = rnd.choice([64, 1000, 100_000])
        return raw.replace('"data":', '"data":' + "[" * depth, 1)
    return raw


def check_decoded(codec: Codec, raw, expected_id) -> None:
    try:
        frame = codec.decode(raw)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_MESSAGE and exc.message
        # The id is echoed whenever the frame is an object whose `id` is a string.
        if expected_id is not None:
            assert exc.request_id == expected_id
        return
    assert isinstance(frame, msgspec.Struct) and frame.__struct_config__.tag in TYPES


fuzz_settings = settings(
    max_examples=300 * SCALE, deadline=None, derandomize=not LONG,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DECODED = {"json": 0, "msgpack": 0}


@fuzz_settings
@given(frame=frames, seed=st.integers(0, 2**32))
def test_json_decoder_never_fails_but_with_invalid_message(frame, seed):
    codec = Codec(JSON)
    raw = json.dumps(frame, ensure_ascii=False)
    expected = frame.get("id") if isinstance(frame.get("id"), str) else None
    check_decoded(codec, raw, expected)
    check_decoded(codec, mutate(raw, random.Random(seed)), None)
    check_decoded(codec, raw.encode(), None)  # a binary frame on a JSON connection
    DECODED["json"] += 3


@fuzz_settings
@given(frame=frames, seed=st.integers(0, 2**32))
def test_msgpack_decoder_never_fails_but_with_invalid_message(frame, seed):
    codec = Codec(MSGPACK)
    try:
        raw = msgspec.msgpack.encode(frame)
    except OverflowError:  # an integer MessagePack cannot carry
        assume(False)
    expected = frame.get("id") if isinstance(frame.get("id"), str) else None
    check_decoded(codec, raw, expected)
    rnd = random.Random(seed)
    damaged = bytearray(raw)
    for _ in range(rnd.randrange(1, 4)):
        op = rnd.randrange(3)
        if op == 0 and damaged:
            del damaged[rnd.randrange(len(damaged)):]
        elif op == 1:
            damaged.insert(rnd.randrange(len(damaged) + 1), rnd.randrange(256))
        elif damaged:
            damaged[rnd.randrange(len(damaged))] = rnd.randrange(256)
    check_decoded(codec, bytes(damaged), None)
    check_decoded(codec, json.dumps(frame), expected)  # JSON text frames always work
    DECODED["msgpack"] += 3


@settings(max_examples=200 * SCALE, deadline=None, derandomize=not LONG)
@given(raw=st.binary(max_size=256) | st.text(max_size=256).filter(lambda s: not any(0xD800 <= ord(c) < 0xE000 for c in s)))
def test_random_bytes_and_text(raw):
    for fmt in (JSON, MSGPACK):
        check_decoded(Codec(fmt), raw, None)


@pytest.mark.parametrize("fmt", [JSON, MSGPACK])
@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deep_nesting_is_invalid_message(fmt, depth):
    codec = Codec(fmt, max_message_bytes=1 << 20)
    if fmt == JSON:
        raw = '{"type":"PING","id":"r1","data":{"timestamp":' + "[" * depth + "]" * depth + "}}"
    else:
        raw = b"\x83\xa4type\xa4PING\xa2id\xa2r1\xa4data" + b"\x91" * depth + b"\x90"
    with pytest.raises(ProtocolError) as info:
        codec.decode(raw)
    assert info.value.code == ErrorCode.INVALID_MESSAGE


def test_lone_surrogates_in_a_str_frame_are_invalid_message():
    # Unreachable over WebSocket (text frames are valid UTF-8), but a str is a str.
    with pytest.raises(ProtocolError):
        Codec(JSON).decode('{"type":"PING","id":"\ud800","data":{"timestamp":1}}')


def test_fuzz_counts():
    """Print how many frames the decoder fuzzers tried (run after them)."""
    print(f"\n[fuzz] decoder frames tried: json {DECODED['json']}, msgpack {DECODED['msgpack']}")


# --- a live server, fuzzed ---------------------------------------------------------------------


TEMPLATES = [
    {"type": "USER_MESSAGE", "data": {"content": "bonjour"}},
    {"type": "USER_MESSAGE", "data": {"content": "salut", "context": {"page": 3}, "conversationId": "c-1"}},
    {"type": "GENERATE_OBJECTIVE", "data": {"prompt": "piano", "difficulty": "beginner", "category": "music"}},
    {"type": "STOP_GENERATION", "data": {}},
    {"type": "STOP_GENERATION", "data": {"messageId": "msg-nope"}},
    {"type": "UPDATE_OBJECTIVE", "data": {"objectiveId": "obj-1", "updates": {"title": "x"}}},
    {"type": "PING", "data": {"timestamp": 1}},
    {"type": "RESUME", "data": {"messageId": "msg-nope", "lastSeq": 3}},
    {"type": "SUBSCRIBE", "data": {"topic": "t"}},
    {"type": "UNSUBSCRIBE", "data": {"topic": "t"}},
]
HOSTILE_VALUES = [None, True, -1, 2**70, 1.5, "", "x" * 5000, "é\u2028\u202e\U0001f600", [], {}, [[[]]],
                  {"$ref": "#"}, "\\u0000", {"__proto__": {"admin": True}}, "🙂" * 100]


def hostile_frame(rnd: random.Random, n: int) -> tuple[str | bytes, str | None]:
    """One structure-aware hostile frame and the id it carries (None: none readable)."""
    frame = json.loads(json.dumps(rnd.choice(TEMPLATES)))
    request_id: str | None = f"fz-{n}"
    roll = rnd.random()
    if roll < 0.15:
        frame["id"] = rnd.choice([7, None, ["a"], {"x": 1}])
        request_id = None
    else:
        frame["id"] = request_id
    kind = rnd.randrange(12)
    data = frame.get("data")
    if kind == 0:
        frame.pop("data", None)
    elif kind == 1:
        frame.pop("type", None)
    elif kind == 2:
        frame["type"] = rnd.choice(["NOPE", "", "user_message", 1, None, "A" * 300])
    elif kind == 3 and data:
        data[rnd.choice(list(data))] = rnd.choice(HOSTILE_VALUES)
    elif kind == 4 and data:
        data.pop(rnd.choice(list(data)))
    elif kind == 5:
        frame["data"] = rnd.choice(HOSTILE_VALUES)
    elif kind == 6 and isinstance(data, dict):
        data[rnd.choice(FIELDS + ["unknown", "__class__"])] = rnd.choice(HOSTILE_VALUES)
    elif kind == 7:
        return json.dumps([frame]), None
    elif kind == 8:
        return rnd.choice(["", "null", "1", '"str"', "{", "}{", "[]", "\x00", "nan", "{" * 5000]), None
    elif kind == 9:
        raw = json.dumps(frame)
        return raw[: rnd.randrange(1, len(raw))], None
    elif kind == 10:
        depth = rnd.choice([100, 5000, 50_000])
        raw = json.dumps(frame).replace('"data": ', '"data": ' + "[" * depth, 1)
        return raw, request_id
    # kind 11 and fall-through: the frame as built (maybe valid)
    return json.dumps(frame, ensure_ascii=rnd.random() < 0.5), request_id


def check_envelope(frame: dict) -> None:
    assert isinstance(frame, dict)
    assert isinstance(frame.get("id"), str) and isinstance(frame.get("type"), str)
    assert isinstance(frame.get("timestamp"), int)
    assert "data" in frame
    if frame["type"] == "ERROR":
        data = frame["data"]
        assert data["code"] in ERROR_CODES and isinstance(data["message"], str)
        assert isinstance(data["retryable"], bool)
        assert "Traceback" not in data["message"]
        assert data["code"] != "SERVER_ERROR", data  # nothing a client sends is a server bug


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("adapter", ["websockets", "asgi"])
async def test_live_server_survives_structure_aware_fuzzing(adapter):
    engine = make_engine(
        None, provider=DEMO,
        limits={"messages_per_interval": 1_000_000, "max_message_bytes": 256 * 1024, "flood_close_after": 1_000_000},
    )
    local = Codec(JSON, client_types=engine._client_types, max_message_bytes=256 * 1024)
    rnd = random.Random(1234 + SCALE)
    count = 600 * SCALE
    invalid = errors = 0
    async with running(engine, adapter) as url:
        async with connect(url, max_size=None) as c:
            rss0 = None
            t0 = time.perf_counter()
            for n in range(count):
                if n == count // 4:
                    rss0 = rss_bytes()  # after warm-up
                raw, request_id = hostile_frame(rnd, n)
                try:
                    local.decode(raw)
                    expect_invalid = None
                except ProtocolError as exc:
                    expect_invalid = exc
                    invalid += 1
                await c.send_raw(raw)
                await c.send("PING", {"timestamp": n}, id=f"sync-{n}")
                seen = []
                while True:
                    frame = await c.recv()
                    check_envelope(frame)
                    seen.append(frame)
                    if frame["type"] == "PONG" and frame["data"]["timestamp"] == n:
                        break
                errors += sum(f["type"] == "ERROR" for f in seen)
                if expect_invalid is not None:
                    mine = [
                        f for f in seen
                        if f["type"] == "ERROR" and f["data"]["code"] == "INVALID_MESSAGE"
                        and f["data"].get("requestId") == expect_invalid.request_id
                    ]
                    assert mine, (raw[:200], seen)
                    if request_id is not None and expect_invalid.request_id is not None:
                        assert mine[0]["data"]["requestId"] == request_id
            elapsed = time.perf_counter() - t0
            grown = rss_bytes() - rss0
            # The connection lives, nothing piles up.
            await c.send("PING", {"timestamp": -1})
            while (frame := await c.recv())["type"] != "PONG":
                check_envelope(frame)
            session = next(iter(engine.sessions))
            assert len(engine.sessions) == 1 and session.outbox.pending < 64 * 1024
            assert len(session.requests) <= 256
    print(f"\n[fuzz] live {adapter}: {count} hostile frames ({invalid} undecodable) in {elapsed:.1f} s, "
          f"{errors} ERROR replies, server RSS grew {grown / 1e6:.1f} MB over the last 3/4")
    assert grown < 64 << 20


async def test_oversized_frames_are_refused_and_far_oversized_close_1009():
    engine = make_engine(None, provider=DEMO, limits={"max_message_bytes": 4096})
    async with running(engine, "websockets") as url:
        async with connect(url) as c:
            await c.send("PING", {"timestamp": 1}, id="big", pad="x" * 5000)
            err = await c.recv()
            assert err["data"]["code"] == "INVALID_MESSAGE" and "max_message_bytes" in err["data"]["message"]
            await c.send("PING", {"timestamp": 2})
            assert (await c.recv())["type"] == "PONG"
            await c.send_raw("x" * 9000)
            code, _ = await c.closed()
            assert code == 1009


# --- the cases, as regressions ----------------------------------------------------------


async def test_every_frame_costs_a_token_one_reply_per_burst_then_1008():
    engine = make_engine(None, provider=DEMO, limits={"messages_per_interval": 5, "interval": 60, "flood_close_after": 50})
    async with running(engine, "websockets") as url:
        async with connect(url) as c:
            # PINGs, STOPs and garbage all count.
            for i in range(5):
                await c.send_raw(["garbage", json.dumps({"type": "PING", "data": {"timestamp": i}}),
                                  json.dumps({"type": "STOP_GENERATION", "data": {}})][i % 3])
            for i in range(40):
                await c.send("PING", {"timestamp": 100 + i}, id=f"p{i}")
            replies = []
            with anyio.fail_after(TIMEOUT):
                while True:
                    frame = await c.recv()
                    replies.append(frame)
                    if frame["type"] == "ERROR" and frame["data"]["code"] == "RATE_LIMIT":
                        break
            refusal = replies[-1]["data"]
            assert refusal["requestId"] == "p0" and refusal["retryAfter"] > 0
            assert not any(f["type"] == "PONG" and f["data"]["timestamp"] >= 100 for f in replies)
            for i in range(40, 80):  # past flood_close_after consecutive refusals
                try:
                    await c.send("PING", {"timestamp": 100 + i})
                except Exception:
                    break
            rest = []
            with anyio.fail_after(TIMEOUT):
                try:
                    while True:
                        rest.append(await c.recv())
                except Exception:
                    pass
            assert all(f["data"].get("code") != "RATE_LIMIT" for f in rest)  # one reply per burst
            code, _ = await c.closed()
            assert code == 1008


async def test_owners_are_separate_keyspaces_and_anonymous_state_is_freed():
    engine = make_engine(None, provider=DEMO)
    conn, client = memory_pair()
    async with anyio.create_task_group() as tg:
        from streamcore import ConnectionInfo

        tg.start_soon(engine.serve, conn, ConnectionInfo())
        await client.send("GENERATE_OBJECTIVE", {"prompt": "piano"}, id="g")
        frames = await client.receive_until("OBJECTIVE_GENERATED")
        assert frames[-1]["data"]["objective"]["steps"]
        session = next(iter(engine.sessions))
        assert session.owner.startswith("a:session-") and len(session.id) > 20
        assert engine.objectives.owners == 1
        await client.aclose()
        with anyio.fail_after(TIMEOUT):
            while engine.sessions:
                await anyio.sleep(0.01)
        assert engine.objectives.owners == 0  # freed with the anonymous connection
        await engine.aclose()


# --- objectives, bounded -----------------------------------------------------------------------------


def _objective(steps: int = 3, oid: str = "obj-1") -> Objective:
    return Objective(oid, "T", "d", "music", "beginner", [Step(f"s{i}", f"step {i}") for i in range(steps)], 1, 1)


async def test_objective_update_past_max_steps_is_invalid_and_changes_nothing():
    store = InMemoryObjectiveStore(max_steps=5)
    await store.add("u:ann", _objective(4))
    with pytest.raises(ProtocolError, match=r"max_objective_steps") as info:
        await store.update("u:ann", "obj-1", {"steps": [{"title": "a"}, {"title": "b"}]})
    assert info.value.code == ErrorCode.INVALID_MESSAGE
    assert len((await store.get("u:ann", "obj-1")).steps) == 4
    # Remove then append stays within the bound.
    updated = await store.update("u:ann", "obj-1", {"steps": [{"id": "s0", "remove": True}, {"title": "a"}, {"title": "b"}]})
    assert len(updated.steps) == 5


async def test_a_huge_append_list_is_refused_cheaply():
    store = InMemoryObjectiveStore()
    await store.add("u:ann", _objective(1))
    updates = {"steps": [{"title": "x"}] * 80_000}  # what a 1 MiB frame can hold
    t0 = time.perf_counter()
    with pytest.raises(ProtocolError, match=f"at most {MAX_STEPS} steps"):
        await store.update("u:ann", "obj-1", updates)
    assert time.perf_counter() - t0 < 1.0


async def test_objective_update_past_max_bytes_is_invalid():
    store = InMemoryObjectiveStore()
    await store.add("u:ann", _objective(1))
    with pytest.raises(ProtocolError, match=r"max_objective_bytes") as info:
        await store.update("u:ann", "obj-1", {"description": "x" * MAX_OBJECTIVE_BYTES})
    assert info.value.code == ErrorCode.INVALID_MESSAGE
    # Many steps each under the per-field size, together over the bound.
    with pytest.raises(ProtocolError, match=r"max_objective_bytes"):
        await store.update("u:ann", "obj-1", {"steps": [{"title": "y" * 1000} for _ in range(90)]})
    assert (await store.get("u:ann", "obj-1")).description == "d"
    assert store.total_bytes < 1024


async def test_objectives_per_owner_owners_in_total_and_bytes_are_bounded():
    store = InMemoryObjectiveStore(max_per_owner=3, max_owners=4, max_total_bytes=20_000)
    for i in range(10):
        await store.add("u:ann", _objective(1, f"obj-{i}"))
    assert len(store) == 3 and await store.get("u:ann", "obj-0") is None and await store.get("u:ann", "obj-9")
    for u in range(10):
        await store.add(f"u:{u}", _objective(1))
    assert store.owners == 4  # the least recently used went
    await store.get("u:6", "obj-1")  # used: kept
    await store.add("u:new", _objective(1))
    assert await store.get("u:6", "obj-1") is not None and await store.get("u:7", "obj-1") is None
    big = InMemoryObjectiveStore(max_total_bytes=50_000)
    for u in range(100):
        await big.add(f"u:{u}", _objective(40))
    assert big.total_bytes <= 50_000 and big.owners < 100
    assert big.total_bytes == sum(big._owner_bytes.values())
    await big.drop_owner("u:99")
    assert big.total_bytes == sum(big._owner_bytes.values())


def test_generated_objectives_are_bounded_too():
    draft = json.dumps({"title": "t", "description": "d", "steps": [{"title": "s"}] * (MAX_STEPS + 1)})
    with pytest.raises(ProviderError, match="max_objective_steps"):
        parse_objective(draft, difficulty=None, category=None)
    draft = json.dumps({"title": "t", "description": "x" * MAX_OBJECTIVE_BYTES, "steps": [{"title": "s"}]})
    with pytest.raises(ProviderError, match="max_objective_bytes"):
        parse_objective(draft, difficulty=None, category=None)
    with pytest.raises(ProtocolError):  # the shared helper (the Redis store uses it too)
        apply_updates(_objective(MAX_STEPS), {"steps": [{"title": "one more"}]})


async def test_update_objective_over_the_wire_names_the_bound():
    engine = make_engine(None, provider=DEMO)
    async with running(engine, "websockets") as url:
        async with connect(url) as c:
            await c.send("GENERATE_OBJECTIVE", {"prompt": "piano"}, id="g")
            objective = (await c.until("OBJECTIVE_GENERATED"))[-1]["data"]["objective"]
            await c.send("UPDATE_OBJECTIVE", {"objectiveId": objective["id"],
                                              "updates": {"steps": [{"title": "s"}] * (MAX_STEPS + 5)}}, id="u1")
            err = await c.until("ERROR")
            assert err[-1]["data"]["code"] == "INVALID_MESSAGE" and err[-1]["data"]["requestId"] == "u1"
            assert "limits.max_objective_steps" in err[-1]["data"]["message"]
            await c.send("UPDATE_OBJECTIVE", {"objectiveId": objective["id"],
                                              "updates": {"description": "x" * (MAX_OBJECTIVE_BYTES + 1)}}, id="u2")
            err = await c.until("ERROR")
            assert "limits.max_objective_bytes" in err[-1]["data"]["message"]
            await c.send("UPDATE_OBJECTIVE", {"objectiveId": objective["id"], "updates": {"title": "ok"}}, id="u3")
            assert (await c.until("OBJECTIVE_UPDATED"))[-1]["data"]["objective"]["title"] == "ok"


# --- connection caps (streamcore/admission.py) ---------------------------------------------------------

from streamcore.admission import ConnectionLimits, ConnectionRefused, client_ip  # noqa: E402


def test_connection_limits_per_ip_per_user_and_total():
    limits = ConnectionLimits(max_connections=5, max_per_ip=2, max_per_user=3)
    a = [limits.admit("10.0.0.1"), limits.admit("10.0.0.1")]
    with pytest.raises(ConnectionRefused, match="this address") as info:
        limits.admit("10.0.0.1")
    assert info.value.limit == "limits.max_connections_per_ip" and info.value.code == "RATE_LIMIT"
    b = [limits.admit(f"10.0.1.{i}") for i in range(3)]
    with pytest.raises(ConnectionRefused) as info:
        limits.admit("10.0.2.1")
    assert info.value.limit == "limits.max_connections"
    for lease in a + b:
        lease.release()
        lease.release()  # idempotent
    assert limits.total == 0 and not limits.per_ip and not limits.per_user
    users = [limits.admit(f"10.1.0.{i}", "ann") for i in range(3)]
    with pytest.raises(ConnectionRefused) as info:
        lease = limits.admit("10.1.1.1")
        lease.bind_user("ann")
    assert info.value.limit == "limits.max_connections_per_user"
    lease.release()
    assert limits.check("10.1.1.1", "bob") is None and limits.check("10.1.1.1", "ann") == "limits.max_connections_per_user"
    for lease in users:
        lease.release()
    assert limits.total == 0 and not limits.per_ip and not limits.per_user


def test_client_ip_groups_ipv6_by_64_and_strips_ports():
    assert client_ip("203.0.113.5:50123") == "203.0.113.5"
    assert client_ip("2001:db8::1:50123") == client_ip("[2001:db8::ffff]:1") == "2001:db8::/64"
    assert client_ip("::ffff:10.0.0.1:80") == "10.0.0.1"
    assert client_ip(None) is None


@pytest.mark.skipif(not hasattr(make_engine(None, provider=DEMO), "admission"),
                    reason="Engine.serve does not call streamcore.admission yet (see the report)")
@pytest.mark.parametrize("adapter", ["websockets", "asgi"])
async def test_connections_past_the_per_ip_cap_are_refused_1008(adapter):
    engine = make_engine(None, provider=DEMO, limits={"max_connections_per_ip": 3})
    async with running(engine, adapter) as url:
        async with connect(url) as c1, connect(url) as c2, connect(url) as c3:
            async with connect(url) as c4:
                err = await c4.recv()
                assert err["type"] == "ERROR" and err["data"]["code"] == "RATE_LIMIT" and err["data"]["retryable"]
                assert (await c4.closed())[0] == 1008
            for c in (c1, c2, c3):
                await c.send("PING", {"timestamp": 1})
                assert (await c.recv())["type"] == "PONG"
        with anyio.fail_after(TIMEOUT):
            while engine.sessions:
                await anyio.sleep(0.01)
        async with connect(url) as again:  # released: admitted again
            await again.send("PING", {"timestamp": 2})
            assert (await again.recv())["type"] == "PONG"
            assert engine.admission.total == 1


# --- no frame over the maximum ---------------------------------------------------------------------


@pytest.mark.skipif("max_frame_bytes" not in __import__("streamcore.config").config.LimitsConfig.__struct_fields__,
                    reason="Session.send does not cap frames yet (see the report)")
async def test_an_event_over_the_frame_limit_is_not_sent():
    engine = make_engine(None, provider=DEMO, limits={"max_message_bytes": 64 * 1024})

    @engine.on("BIG", dict)
    async def big(session, frame):
        session.send("BIG_RESULT", {"blob": "x" * frame.data["size"]}, request_id=frame.id)

    async with running(engine, "websockets") as url:
        async with connect(url, max_size=None) as c:
            await c.send("BIG", {"size": 100_000}, id="b1")
            err = await c.recv()
            assert err["type"] == "ERROR" and err["data"]["code"] == "SERVER_ERROR"
            assert err["data"]["requestId"] == "b1" and "frame limit" in err["data"]["message"]
            await c.send("BIG", {"size": 1000}, id="b2")
            assert (await c.recv())["type"] == "BIG_RESULT"  # the connection lives


# --- upstream faults, end to end --------------------------------------------------------------------

# mode -> (error code or None, stop reason, FakeOpenAI option overrides, engine limits)
FAULTS = {
    "ok": (None, "complete", {}, {}),
    "quirky": (None, "complete", {}, {}),
    "malformed-sse": (None, "complete", {}, {}),
    "slow": ("TIMEOUT", "timeout", {}, {"first_chunk_timeout": 0.5}),  # hangs before the first chunk
    "hang": ("TIMEOUT", "timeout", {}, {"generation_timeout": 1.0}),  # hangs midway
    "break": ("GENERATION_FAILED", "error", {}, {}),  # dropped midway
    "break-at-end": ("GENERATION_FAILED", "error", {"break_after": -1}, {}),  # dropped before the last piece
    "reset": ("GENERATION_FAILED", "error", {}, {}),
    "reset-early": ("GENERATION_FAILED", "error", {}, {}),
    "error-midway": ("GENERATION_FAILED", "error", {}, {}),
    "error-named": ("GENERATION_FAILED", "error", {}, {}),
    "malformed-data": ("GENERATION_FAILED", "error", {}, {}),
    "endless": ("GENERATION_FAILED", "error", {}, {}),
    "endless-event": ("GENERATION_FAILED", "error", {}, {}),
    "error-flood": ("GENERATION_FAILED", "error", {}, {}),
    "json-error": ("GENERATION_FAILED", "error", {}, {}),
    "rate-limit": ("RATE_LIMIT", "error", {}, {}),
    "server-error": ("GENERATION_FAILED", "error", {}, {}),
    "bad-gateway": ("GENERATION_FAILED", "error", {}, {}),
    "unavailable": ("GENERATION_FAILED", "error", {}, {}),
    "unauthorized": ("GENERATION_FAILED", "error", {}, {}),
    "context-length": ("INVALID_MESSAGE", "error", {}, {}),
}


@pytest.mark.parametrize("mode", list(FAULTS))
async def test_upstream_fault_gives_one_end_and_the_right_error(mode):
    code, reason, api_options, limits = FAULTS[mode]
    model = "break" if mode == "break-at-end" else mode
    options = {"slow_seconds": 60, "endless_bytes": 4 << 20, **api_options}
    async with FakeOpenAI(**{k: v for k, v in options.items() if k != "break_after"}) as api:
        if options.get("break_after") == -1:
            api.break_after = len(api.pieces(model)) - 1
        provider = load_provider("openai", model=model, options={"base_url": api.base_url})
        engine = make_engine(provider, limits=limits)
        async with running(engine, "websockets") as url:
            async with connect(url) as c:
                await c.send("USER_MESSAGE", {"content": "bonjour"}, id="q1")
                frames = await c.until("AI_MESSAGE_END")
                end = check_stream(frames)
                assert end["stopReason"] == reason, (mode, end)
                errors = [f["data"] for f in frames if f["type"] == "ERROR"]
                if code is None:
                    assert not errors and end["content"] == api.text
                else:
                    assert [e["code"] for e in errors] == [code], (mode, errors)
                    assert errors[0]["requestId"] == "q1" and errors[0]["messageId"] == end["messageId"]
                    assert "Traceback" not in errors[0]["message"] and "fake failure" not in errors[0]["message"]
                    if code == "RATE_LIMIT":
                        assert errors[0]["retryAfter"] == 7000
                    # What streamed before the fault is kept, never more than the upstream sent.
                    assert api.text.startswith(end.get("content", ""))
                # Exactly one END: nothing more about this message arrives, the connection lives.
                await c.send("PING", {"timestamp": 42})
                later = await c.until("PONG")
                assert not any(f["type"] == "AI_MESSAGE_END" for f in later)
        assert not engine.runs


# --- flood fairness ------------------------------------------------------------------------------------


class Steady:
    """A model that writes one chunk every ``interval`` seconds."""

    model = "steady"

    def __init__(self, chunks: int, interval: float) -> None:
        self.chunks, self.interval = chunks, interval

    async def stream(self, request):
        for i in range(self.chunks):
            await anyio.sleep(self.interval)
            yield f"{i:04d} "
        yield Completion()


def _token(sub: str) -> str:
    import jwt

    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def _measure_stream(url: str) -> dict:
    async with connect(url, additional_headers={"Authorization": f"Bearer {_token('bob')}"}) as c:
        t0 = time.perf_counter()
        await c.send("USER_MESSAGE", {"content": "hello"})
        gaps, last, first, frames = [], None, None, []
        while True:
            frame = await c.recv()
            now = time.perf_counter()
            frames.append(frame)
            if frame["type"] == "AI_MESSAGE_CHUNK":
                if last is not None:
                    gaps.append(now - last)
                else:
                    first = now - t0
                last = now
            if frame["type"] == "AI_MESSAGE_END":
                break
        end = check_stream(frames)
        assert end["stopReason"] == "complete"
        return {"total": now - t0, "first": first, "p50": statistics.median(gaps),
                "p99": sorted(gaps)[int(len(gaps) * 0.99) - 1], "max": max(gaps), "chunks": len(gaps) + 1}


# User "ann" floods from another process (so the flood costs the server, not the test's
# own event loop): junk, PINGs and USER_MESSAGEs as fast as the socket takes them, from
# three connections, reconnecting whenever the server closes one (flood_close_after).
FLOOD = r"""
import asyncio, json, sys, time
from websockets.asyncio.client import connect
url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
junk = ["garbage", '{"type":"PING","data":{"timestamp":1}}', '{"type":"USER_MESSAGE","data":{"content":"x"}}',
        '{"type":"NOPE","data":{}}', "[" * 2000]
counts = {"sent": 0, "replies": 0, "closed": 0}
async def one(deadline):
    while time.monotonic() < deadline:
        try:
            async with connect(url, additional_headers={"Authorization": "Bearer " + token}, open_timeout=10, close_timeout=1) as ws:
                async def drain():
                    async for _ in ws:
                        counts["replies"] += 1
                task = asyncio.ensure_future(drain())
                i = 0
                try:
                    while time.monotonic() < deadline:
                        await ws.send(junk[i % len(junk)])
                        counts["sent"] += 1
                        i += 1
                        if i % 50 == 0:
                            await asyncio.sleep(0)
                finally:
                    task.cancel()
        except Exception:
            counts["closed"] += 1
async def main():
    print("FLOODING", flush=True)
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(one(deadline) for _ in range(3)))
    print(json.dumps(counts), flush=True)
asyncio.run(main())
"""


async def test_flood_fairness_one_user_floods_another_streams_normally():
    import sys

    provider = Steady(chunks=100, interval=0.01)
    engine = make_engine(provider, auth={"jwt_secret": SECRET})
    async with running(engine, "websockets") as url:
        baseline = await _measure_stream(url)
        proc = await anyio.open_process([sys.executable, "-c", FLOOD, url, _token("ann"), "6"])
        try:
            with anyio.fail_after(TIMEOUT):
                line = b""
                while not line.endswith(b"\n"):
                    line += await proc.stdout.receive(1)
                assert line == b"FLOODING\n"
                # Measure once the flood is under way: the server has seen ann's frames.
                while sum(s._frames_in for s in engine.sessions if s.user_id == "ann") < 2000:
                    await anyio.sleep(0.01)
            flooded = await _measure_stream(url)
            with anyio.fail_after(TIMEOUT):
                out = b""
                async for data in proc.stdout:
                    out += data
                await proc.wait()
            counts = json.loads(out.decode().strip().splitlines()[-1])
        finally:
            if proc.returncode is None:
                proc.kill()
                with anyio.move_on_after(5, shield=True):
                    await proc.wait()
            await proc.aclose()
    fmt = lambda m: (f"total {m['total']:.2f} s, first chunk {m['first'] * 1000:.1f} ms, gap p50 {m['p50'] * 1000:.1f} ms, "
                     f"p99 {m['p99'] * 1000:.1f} ms, max {m['max'] * 1000:.1f} ms")
    print(f"\n[fairness] bob alone:             {fmt(baseline)}")
    print(f"[fairness] bob while ann floods: {fmt(flooded)}")
    print(f"[fairness] ann sent {counts['sent']} frames in 6 s from 3 connections, got {counts['replies']} replies, "
          f"was disconnected {counts['closed']} times (flood_close_after)")
    assert counts["sent"] > 1000
    # Generous: the flood may cost bob some latency on 2 shared cores, never his stream.
    assert flooded["total"] < baseline["total"] * 4 + 2.0
    assert flooded["max"] < 1.0
