"""Delivery from the run log to one reader, as a pure model: no socket, no task.

A run appends entries and hands them to its live readers; a reader whose buffer is full
falls behind and later catches up from the log, from its cursor; the connection's writer
drains the buffer. Hypothesis drives random interleavings of these steps (appends, drains,
a reader attaching mid-run with any cursor, tiny buffers, merged or one frame per chunk,
long merged runs split across frames) and checks what the reader would have received:
nothing lost, nothing repeated, seqs increasing, chunk indexes contiguous, one END.
A lag on the last entry of a catch-up once skipped that entry (see test_runs.py).
"""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from streamcore.codec import Codec
from streamcore.outbox import FRAME_OVERHEAD, Outbox
from streamcore.run import Run, Subscription

from .helpers import LoggedRun, check_delivered

MESSAGE_ID = "m1"


def _drain(outbox: Outbox) -> list[bytes]:
    """One turn of the connection's writer: what is pending, else catch-up then pending."""
    if len(outbox):
        return outbox.take()
    if outbox.lagging:
        outbox.catch_up()
        return outbox.take()
    return []


_steps = st.lists(st.sampled_from(["text", "text", "text", "reasoning", "app", "drain", "drain"]), max_size=60)


@settings(max_examples=400, deadline=None)
@given(
    steps=_steps,
    attach_at=st.integers(0, 60),
    cursor=st.integers(-3, 70),
    limit=st.integers(0, 400),
    merge=st.booleans(),
    max_text=st.integers(1, 40),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8),
)
def test_a_reader_gets_every_entry_after_its_cursor_once_in_order(
    steps: list[str], attach_at: int, cursor: int, limit: int, merge: bool, max_text: int, sizes: list[int]
) -> None:
    outbox = Outbox(limit, max_text=max_text)
    closed: list[Subscription] = []
    session = SimpleNamespace(
        codec=Codec(), limits=SimpleNamespace(coalesce_chunks=merge), metadata=None,
        metadata_for=lambda request_id: None, outbox=outbox, max_frame_bytes=1 << 20,
        subscription_closed=closed.append,
    )
    run = LoggedRun(MESSAGE_ID)
    run.emit(run.machine.start("model"))
    sub: Subscription = Subscription(session, run, MESSAGE_ID, None, cursor)  # type: ignore[arg-type]
    frames: list[bytes] = []
    # A frame's worth of slack: the check comes before a put, so the last put may pass it.
    # The largest is END's, which carries the whole text: the bound grows with it.
    bound = limit + max(sizes) * 6 + 200 + FRAME_OVERHEAD
    for i, step in enumerate([*steps, "end"]):
        if i == attach_at:
            # As Engine.resume attaches a reader to a live run (a cursor past what it logged
            # yet gets a reader that skips up to it).
            sub = Run.reader(run, session, None, cursor)  # type: ignore[arg-type]
            run.subscribe(sub)
        if step == "drain":
            frames += _drain(outbox)
        else:
            bound += len(run.play(step, sizes[i % len(sizes)]) or "")
        assert outbox.pending <= bound
    if not sub.closed and not sub.lagging and sub not in run.subscribers:
        run.subscribe(sub)  # attached after the run ended: a RESUME of a finished run
    for _ in range(10_000):  # the writer goes on until the reader has everything
        if sub.closed and not len(outbox):
            break
        frames += _drain(outbox)
    assert sub.closed and closed == [sub]

    check_delivered(frames, run, cursor)
