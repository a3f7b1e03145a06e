"""Cheap unique ids and integer-millisecond clocks.

uuid4 costs a syscall-backed random read per call; at tens of thousands of chunks a second
that adds up. An id here is a random per-process prefix (so two processes never collide)
followed by a counter, which is unique within the process by construction.
"""

from __future__ import annotations

import itertools
import os
import time

__all__ = ["new_id", "now_ms", "stamp", "Stamp"]

#: A timestamp as (integer ms, its decimal ASCII bytes), taken once and shared by a batch.
Stamp = tuple[int, bytes]

_PREFIX = os.urandom(5).hex()
_counter = itertools.count(1)


def new_id(kind: str = "") -> str:
    """Return a process-unique id such as ``msg-1a2b3c4d5e-2f``.

    Args:
        kind: optional prefix naming what the id is for (``"msg"``, ``"obj"``...).
    """
    n = next(_counter)
    return f"{kind}-{_PREFIX}-{n:x}" if kind else f"{_PREFIX}-{n:x}"


def now_ms() -> int:
    """Milliseconds since the Unix epoch, as the spec's integer ``timestamp``."""
    return time.time_ns() // 1_000_000


class _Clock:
    """The last stamp handed out, and the clock readings (ns) for which it holds."""

    __slots__ = ("stamp", "since", "until")

    def __init__(self) -> None:
        self.stamp: Stamp = (0, b"0")
        self.since = 0
        self.until = 0


_clock = _Clock()
_time_ns = time.time_ns


def stamp() -> Stamp:
    """Return the current time as a :data:`Stamp` for a batch of frames.

    The decimal bytes are made once per millisecond: frames encoded one by one within
    the same millisecond share them, and cost one clock read and a comparison (no
    division: the reading is compared with that millisecond's bounds in nanoseconds,
    both of them, as a wall clock may be set back).
    """
    ns = _time_ns()
    clock = _clock
    if clock.since <= ns < clock.until:
        return clock.stamp
    ms = ns // 1_000_000
    clock.since = ms * 1_000_000
    clock.until = clock.since + 1_000_000
    clock.stamp = last = (ms, str(ms).encode())
    return last
