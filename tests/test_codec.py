"""The codec: envelopes as the spec writes them, and every malformed frame explained."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcore import Codec, ProtocolError
from streamcore.ids import stamp
from streamcore.protocol import (
    Envelope,
    ErrorData,
    GenerateObjective,
    MessageChunkData,
    ReasoningChunkData,
    MessageEndData,
    Ping,
    StopGeneration,
    UpdateObjective,
    UserMessage,
)

json_codec = Codec()
mp_codec = Codec("msgpack")


def test_envelope_shape_matches_the_spec():
    frame = json.loads(json_codec.encode("AI_MESSAGE_END", MessageEndData("msg-1", True, "complete", 9, "Hi")))
    assert set(frame) == {"id", "type", "timestamp", "data"}
    assert frame["type"] == "AI_MESSAGE_END" and isinstance(frame["timestamp"], int)
    assert frame["data"] == {"messageId": "msg-1", "isComplete": True, "stopReason": "complete", "seq": 9, "content": "Hi"}
    err = json.loads(json_codec.encode("ERROR", ErrorData("TIMEOUT", "late", True, "r1", 500)))["data"]
    assert err == {"code": "TIMEOUT", "message": "late", "retryable": True, "requestId": "r1", "retryAfter": 500}


def test_ids_are_unique_and_timestamps_are_milliseconds():
    frames = [json.loads(json_codec.encode("PONG", {"timestamp": 1})) for _ in range(1000)]
    assert len({f["id"] for f in frames}) == 1000
    assert all(1_700_000_000_000 < f["timestamp"] < 4_000_000_000_000 for f in frames)


@pytest.mark.parametrize("content", ["Voici ", 'quote " and \\ backslash', "é\u2028\n\t\x00", "%s %d %%", "🙂" * 3])
@pytest.mark.parametrize("metadata", [None, {"sessionId": "s-1", "userId": "u%1"}])
# Indexes and seqs below 4096 take the precomputed bytes, the others are formatted.
@pytest.mark.parametrize("index, seq", [(0, 2), (7, 9000), (4095, 4095), (4095, 4096), (4096, 4097), (12345, 67890)])
def test_fast_chunk_path_equals_the_generic_envelope(content, metadata, index, seq):
    encode = json_codec.chunk_encoder("msg-%d", metadata)
    now = stamp()
    fast = json.loads(encode(content, index, seq, now))
    generic = json.loads(
        msgspec.json.encode(
            Envelope(
                f"msg-%d.{seq}", "AI_MESSAGE_CHUNK", now[0], MessageChunkData("msg-%d", content, index, seq), metadata
            )
        )
    )
    assert fast == generic
    reasoning = json_codec.chunk_encoder("msg-%d", metadata, reasoning=True)
    fast = json.loads(reasoning(content, 0, 12, now))
    generic = json.loads(
        msgspec.json.encode(
            Envelope("msg-%d.12", "AI_REASONING_CHUNK", now[0], ReasoningChunkData("msg-%d", content, 12), metadata)
        )
    )
    assert fast == generic


def test_msgpack_chunk_has_the_same_shape():
    encode = mp_codec.chunk_encoder("msg-1", {"sessionId": "s"})
    frame = msgspec.msgpack.decode(encode("abc", 0, 5, stamp()))
    assert frame["data"] == {"messageId": "msg-1", "content": "abc", "index": 0, "seq": 5}
    assert frame["type"] == "AI_MESSAGE_CHUNK" and frame["metadata"] == {"sessionId": "s"}


@pytest.mark.parametrize(
    "raw, cls",
    [
        ('{"type":"USER_MESSAGE","data":{"content":"hi","context":{"a":[1]}}}', UserMessage),
        ('{"type":"GENERATE_OBJECTIVE","data":{"prompt":"p","difficulty":"hard"},"id":"x"}', GenerateObjective),
        ('{"type":"STOP_GENERATION","data":{}}', StopGeneration),
        ('{"type":"STOP_GENERATION","data":{"messageId":"msg-1"}}', StopGeneration),
        ('{"type":"UPDATE_OBJECTIVE","data":{"objectiveId":"o","updates":{"title":"t"}}}', UpdateObjective),
        ('{"type":"PING","data":{"timestamp":1732370000123},"timestamp":1,"metadata":{"k":"v"}}', Ping),
    ],
)
def test_valid_client_frames_decode(raw, cls):
    assert type(json_codec.decode(raw)) is cls
    assert type(mp_codec.decode(msgspec.msgpack.encode(json.loads(raw)))) is cls


MALFORMED = [
    # (frame, expected fragment of the message, requestId echoed)
    ("not json", "not valid JSON", None),
    ("", "not valid JSON", None),
    ("[1, 2]", "must be a JSON object", None),
    ('"USER_MESSAGE"', "must be a JSON object", None),
    ("null", "must be a JSON object", None),
    ('{"data": {}}', "missing field `type`", None),
    ('{"type": 5, "data": {}, "id": "r1"}', "`type` must be a string", "r1"),
    ('{"type": "HELLO", "data": {}, "id": "r2"}', "unknown message type 'HELLO'", "r2"),
    ('{"type": "USER_MESSAGE", "id": "r3"}', "missing required field `data`", "r3"),
    ('{"type": "USER_MESSAGE", "data": {}, "id": "r4"}', "missing required field `content` - at `$.data`", "r4"),
    ('{"type": "USER_MESSAGE", "data": {"content": 42}, "id": "r5"}', "Expected `str`, got `int` - at `$.data.content`", "r5"),
    ('{"type": "USER_MESSAGE", "data": "hello", "id": "r6"}', "at `$.data`", "r6"),
    ('{"type": "PING", "data": {"timestamp": "now"}, "id": "r7"}', "at `$.data.timestamp`", "r7"),
    ('{"type": "UPDATE_OBJECTIVE", "data": {"objectiveId": "o", "updates": []}, "id": "r8"}', "at `$.data.updates`", "r8"),
    ('{"type": "GENERATE_OBJECTIVE", "data": {"prompt": "p", "category": 3}, "id": "r9"}', "at `$.data.category`", "r9"),
    ('{"type": "STOP_GENERATION", "data": {"messageId": 1}, "id": "r10"}', "at `$.data.messageId`", "r10"),
    ('{"type": "USER_MESSAGE", "data": {"content": "x"}, "id": 12}', "at `$.id`", None),
    ('{"type": "USER_MESSAGE", "data": {"content": "x"}', "not valid JSON", None),
]


@pytest.mark.parametrize("raw, fragment, request_id", MALFORMED)
def test_malformed_frames_are_explained(raw, fragment, request_id):
    with pytest.raises(ProtocolError) as info:
        json_codec.decode(raw)
    err = info.value
    assert err.code == "INVALID_MESSAGE" and err.retryable is False
    assert fragment in err.message
    assert err.request_id == request_id


def test_binary_frame_on_a_json_connection():
    with pytest.raises(ProtocolError, match="binary frame"):
        json_codec.decode(b'{"type":"PING","data":{"timestamp":1}}')


def test_oversized_frame_is_refused_before_parsing():
    small = Codec(max_message_bytes=64)
    with pytest.raises(ProtocolError, match=r"max_message_bytes \(64\)"):
        small.decode('{"type":"USER_MESSAGE","data":{"content":"' + "x" * 100 + '"}}')
    # Multi-byte text is measured in bytes, not characters.
    with pytest.raises(ProtocolError):
        small.decode('{"type":"USER_MESSAGE","data":{"content":"' + "é" * 30 + '"}}')
    assert small.decode('{"type":"PING","data":{"timestamp":1}}')


def test_msgpack_garbage_is_explained():
    with pytest.raises(ProtocolError, match="MessagePack"):
        mp_codec.decode(b"\xc1\xc1")


# Finite floats only: json.dumps writes inf as `Infinity`, which is not JSON (no id can be read from it).
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_frames = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["USER_MESSAGE", "PING", "STOP_GENERATION", "UPDATE_OBJECTIVE", "GENERATE_OBJECTIVE", "X"]) | _json,
        "data": _json | st.fixed_dictionaries({}, optional={"content": _json, "timestamp": _json, "prompt": _json, "objectiveId": _json, "updates": _json, "messageId": _json}),
        "id": _json,
    },
)


@settings(max_examples=400, deadline=None)
@given(frame=_frames | _json)
def test_any_json_either_decodes_or_is_a_protocol_error(frame):
    raw = json.dumps(frame)
    try:
        json_codec.decode(raw)
    except ProtocolError as exc:
        assert exc.message and "Traceback" not in exc.message
        if isinstance(frame, dict) and isinstance(frame.get("id"), str):
            # An id that could be read is always echoed.
            assert exc.request_id == frame["id"]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64))
def test_arbitrary_bytes_never_escape_as_other_exceptions(raw):
    for codec in (json_codec, mp_codec):
        try:
            codec.decode(raw)
        except ProtocolError:
            pass


@pytest.mark.parametrize("codec", [json_codec, mp_codec], ids=["json", "msgpack"])
@pytest.mark.parametrize("levels", [40, 100_000])
def test_deep_nesting_is_an_invalid_message_with_the_request_id(codec, levels):
    context: Any = []
    for _ in range(min(levels, 40)):
        context = [context]
    frame = {"type": "USER_MESSAGE", "id": "deep", "data": {"content": "hi", "context": context}}
    if codec is json_codec:
        raw: Any = json.dumps(frame)
        if levels > 40:
            raw = raw.replace('"context": ' + json.dumps(context), '"context": ' + "[" * levels + "]" * levels)
    else:
        raw = msgspec.msgpack.encode(frame)
        if levels > 40:
            # 0x91 is a one-element msgpack array: `levels` of them around an empty one.
            raw = raw.replace(msgspec.msgpack.encode(context), b"\x91" * levels + b"\x90")
    with pytest.raises(ProtocolError) as info:
        codec.decode(raw)
    assert info.value.code == "INVALID_MESSAGE" and not info.value.retryable
    assert "nested too deeply" in info.value.message
    if levels == 40:
        assert info.value.request_id == "deep"


def test_nesting_within_the_limit_is_accepted():
    frame = {"type": "USER_MESSAGE", "data": {"content": "hi", "context": {"a": [[[{"b": 1}]]]}}}
    assert json_codec.decode(json.dumps(frame)).data.context == {"a": [[[{"b": 1}]]]}


def test_stamp_changes_exactly_at_each_millisecond(monkeypatch):
    import streamcore.ids as ids

    monkeypatch.setattr(ids, "_clock", ids._Clock())
    readings = iter([5_000_000_000, 5_000_999_999, 5_001_000_000, 5_001_000_001, 4_999_999_999, 7_000_000_000])
    monkeypatch.setattr(ids, "_time_ns", lambda: next(readings))
    got = [ids.stamp() for _ in range(6)]
    assert [s[0] for s in got] == [5000, 5000, 5001, 5001, 4999, 7000]
    assert all(s[1] == str(s[0]).encode() for s in got)
    assert got[1] is got[0] and got[3] is got[2]  # the bytes are made once per millisecond
