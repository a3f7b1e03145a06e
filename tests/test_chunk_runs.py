"""One frame per chunk queued as runs of pieces: pure checks (no socket, no task, no sleep).

- The send buffer's bound in bytes, with the envelopes streamcore really sends (a
  ``msg-`` + 22 characters message id, ``metadata`` on by default).
- The eager path (writer idle, ``send_now``) interleaved with queued runs, lagging,
  catch-up and a reader attaching mid-run: the delivery model of test_delivery_model.py
  does not exercise it.
- The stateful SSE dialects (AI SDK, AG-UI) fed through a Subscription and an Outbox in
  batches: chunk runs are encoded by ``take()`` before the LATE entries of the same
  batch are rendered, and the events must be those of an unbatched stream.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcore.codec import Codec
from streamcore.dialects import AGUIDialect, AISDKDialect
from streamcore.dialects.base import LATE
from streamcore.events import Failure, Kind, expand
from streamcore.outbox import Outbox
from streamcore.run import Run, Subscription

from .helpers import LoggedRun, check_delivered, render_unbatched

#: the shape of a real message id (Engine: "msg-" + secrets.token_urlsafe(16)).
MESSAGE_ID = "msg-" + "A1b2C3d4E5f6G7h8I9j0Kx"
#: the shape of the default metadata (Session: {"sessionId": "session-" + token_urlsafe(12)}).
METADATA = {"sessionId": "session-" + "Zy9Xw8Vu7Ts6Rq5P"}


def _session(outbox: Outbox, merge: bool, *, codec: Any = None, metadata: Any = None) -> Any:
    closed: list[Subscription] = []
    return SimpleNamespace(
        codec=codec if codec is not None else Codec(), limits=SimpleNamespace(coalesce_chunks=merge),
        metadata=metadata, metadata_for=lambda request_id: metadata, outbox=outbox, max_frame_bytes=1 << 20,
        subscription_closed=closed.append, closed=closed,
    )


# --- the bound in bytes -----------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, METADATA], ids=["no metadata", "default metadata"])
@pytest.mark.parametrize("piece", ["a", "tok "], ids=["1 char", "4 chars"])
def test_one_frame_per_chunk_buffer_holds_at_most_its_limit_in_bytes_plus_one_frame(metadata, piece):
    """A queued piece counts its text plus its frame's envelope, measured once per reader
    (a fixed 160-byte estimate let the frames of a full buffer reach 1.4 times its limit
    with the default metadata). The frames those pieces become must fit in the limit, plus
    the one piece put past it (the check comes before a put). ASCII text, so characters
    and bytes agree."""
    limit = 16 * 1024
    outbox = Outbox(limit)
    run = LoggedRun(MESSAGE_ID)
    sub = Subscription(_session(outbox, False, metadata=metadata), run, MESSAGE_ID, None)  # type: ignore[arg-type]
    seq = 0
    while not sub.lagging:
        seq += 1
        sub.deliver_text(seq, piece)
    frames = outbox.take()
    assert len(frames) == seq - 1
    assert sum(map(len, frames)) <= limit + max(map(len, frames))


# --- the eager path among queued runs ---------------------------------------------------------


class _Waiter:
    """The writer's wake-up while it waits (Outbox._loop is None outside an event loop)."""

    def set(self) -> None:
        pass


_steps = st.lists(
    st.sampled_from(["text", "text", "text", "reasoning", "app", "writer", "writer", "idle"]), min_size=5, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(
    steps=_steps,
    attach_at=st.integers(0, 8),
    cursor=st.one_of(st.just(0), st.integers(0, 12)),
    limit=st.one_of(st.integers(0, 2000), st.just(1 << 20)),
    merge=st.booleans(),
    waits=st.lists(st.booleans(), min_size=1, max_size=7),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8),
)
def test_eager_sends_queued_runs_lag_and_catch_up_deliver_everything_once_in_order(
    steps: list[str], attach_at: int, cursor: int, limit: int, merge: bool, waits: list[bool],
    sizes: list[int],
) -> None:
    outbox = Outbox(limit)
    wire: list[bytes] = []  # what reached the socket, in order
    calls = [0]

    def send_now(frame: bytes) -> Any:
        wire.append(frame)  # the send has started: it goes before anything queued after it
        calls[0] += 1
        return object() if waits[calls[0] % len(waits)] else None

    outbox.send_now = send_now  # the transport allows eager sends (the model test has none)
    session = _session(outbox, merge, metadata=METADATA)
    run = LoggedRun(MESSAGE_ID)
    run.emit(run.machine.start("model"))
    sub: Subscription = Subscription(session, run, MESSAGE_ID, None, cursor)  # type: ignore[arg-type]

    def writer_turn() -> None:
        """One pass of Session._write_loop (wait_ready, then inflight and take)."""
        if outbox._waiter is not None:
            return  # idle, and nothing woke it
        if not len(outbox) and outbox.lagging:
            outbox.catch_up()
        if not len(outbox) and outbox.inflight is None and not outbox.broken:
            outbox._waiter = _Waiter()  # goes idle: the next chunk may be sent eagerly
            return
        outbox.inflight = None  # the rest of an eager send, finished first
        wire.extend(outbox.take())

    for i, step in enumerate([*steps, "end"]):
        if i == attach_at:
            sub = Run.reader(run, session, None, cursor)  # type: ignore[arg-type]
            run.subscribe(sub)
        if step == "writer":
            writer_turn()
        elif step == "idle":  # the writer sends all it has and waits
            for _ in range(10_000):
                if outbox._waiter is not None:
                    break
                writer_turn()
        else:
            run.play(step, sizes[i % len(sizes)])
        assert outbox.pending >= 0
    if not sub.closed and not sub.lagging and sub not in run.subscribers:
        run.subscribe(sub)
    for _ in range(10_000):
        if sub.closed and not len(outbox) and outbox.inflight is None:
            break
        outbox._waiter = None  # woken (a real writer is, by the puts above)
        writer_turn()
    assert sub.closed

    received, expected = check_delivered(wire, run, cursor)
    assert all(f["id"] == f"{MESSAGE_ID}.{f['data']['seq']}" for f in received if "CHUNK" in f["type"])
    if not merge:  # one frame per piece, each with its own seq
        chunks = [f["data"] for f in received if f["type"] == "AI_MESSAGE_CHUNK"]
        assert [(c["seq"], c["content"]) for c in chunks] == [(e[0], e[2]) for e in expected if e[1] == Kind.TEXT]
    assert all(f["metadata"] == METADATA for f in received if "CHUNK" in f["type"])


# --- stateful SSE dialects, batched -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from(["text", "text", "reasoning", "app", "drain"]), max_size=40),
    limit=st.integers(0, 1500),
    agui=st.booleans(),
    failed=st.booleans(),
)
def test_sse_dialects_fed_in_batches_one_frame_per_chunk_match_the_unbatched_stream(
    steps: list[str], limit: int, agui: bool, failed: bool
) -> None:
    make = AGUIDialect if agui else AISDKDialect
    dialect = make()
    outbox = Outbox(limit)
    session = _session(outbox, False, codec=dialect)
    run = LoggedRun(MESSAGE_ID)
    sub = Subscription(session, run, MESSAGE_ID, None)  # type: ignore[arg-type]
    run.subscribe(sub)
    out = b""

    def drain() -> bytes:
        """The writer's turn and the SSE driver's send: LATE rendered when reached."""
        if not len(outbox) and outbox.lagging:
            outbox.catch_up()
        return b"".join(dialect.render_late() if f is LATE else f for f in outbox.take())

    run.emit(run.machine.start("model"))
    for i, step in enumerate(steps):
        if step == "text":
            run.emit(run.machine.text_delta(f"t{i} "))
        elif step == "reasoning":
            run.emit(run.machine.reasoning_delta(f"r{i} "))
        elif step == "app":
            run.emit(run.machine.app("CUSTOM_EVENT", {"n": i}))
        else:
            out += drain()
    failure = Failure("GENERATION_FAILED", "boom", True) if failed else None
    for entry in run.machine.finish("error" if failed else "complete", failure=failure):
        run.emit(entry)
    run.seal()
    for _ in range(10_000):
        if sub.closed and not len(outbox):
            break
        out += drain()
    assert sub.closed
    out += dialect.trailer()
    assert out == render_unbatched(make(), expand(run.entries), MESSAGE_ID)
