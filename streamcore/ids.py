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


_last_stamp: Stamp = (0, b"0")


def stamp() -> Stamp:
    """Return the current time as a :data:`Stamp` for a batch of frames.

    The decimal bytes are made once per millisecond: frames encoded one by one within
    the same millisecond share them.
    """
    global _last_stamp
    ms = time.time_ns() // 1_000_000
    last = _last_stamp
    if last[0] == ms:
        return last
    _last_stamp = last = (ms, str(ms).encode())
    return last
