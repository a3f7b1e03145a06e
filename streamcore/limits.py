"""Limits on what each user may do: messages per interval, generations at once.

A :class:`Limiter` answers two questions for the engine:

- **rate**: may this connection's next frame go through? ``rate(session)`` returns a bucket
  whose ``take()`` gives 0 (allowed) or the milliseconds until a frame would be; for a
  shared backend ``take()`` may return an awaitable of that number (the read loop awaits it).
  A user's connections share one bucket; an anonymous connection has its own.
- **concurrency**: may ``owner`` start one more run? ``try_acquire`` decides at once when it
  can (in memory, always), or returns None when the answer needs I/O: then the engine awaits
  ``acquire`` in the run's own task before the provider is called.

:class:`MemoryLimiter` is the default: one process, no dependency, exact. The Redis limiter
(:mod:`streamcore.backends.redis`) holds the same limits across every worker, atomically.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any, Protocol, Union

from .ratelimit import TokenBucket

__all__ = ["Limiter", "RateBucket", "MemoryLimiter"]


class RateBucket(Protocol):
    def take(self) -> Union[int, Awaitable[int]]:
        """Take one token: 0 when allowed, else milliseconds until one is free."""


class Limiter(Protocol):
    """Rate and concurrency limits, per user (memory now; Redis behind the same interface)."""

    #: True when the limits hold across processes (a shared backend).
    shared: bool

    def rate(self, session: Any) -> RateBucket:
        """The message bucket of ``session``'s user (its own when anonymous)."""

    def release_rate(self, session: Any) -> None:
        """``session`` closed: forget its bucket when it was the last user of it."""

    def try_acquire(self, owner: str, run_id: str, limit: int) -> bool | None:
        """Take a generation slot at once (True/False), or None to decide in :meth:`acquire`."""

    async def acquire(self, owner: str, run_id: str, limit: int) -> bool:
        """Take a generation slot for ``run_id``; False when ``owner`` has ``limit`` already."""

    async def release(self, owner: str, run_id: str) -> None:
        """Give back ``run_id``'s slot (idempotent)."""

    async def aclose(self) -> None:
        """Release the backend's resources."""


class MemoryLimiter:
    """The in-process limiter.

    Args:
        messages: messages per ``interval`` (the bucket's burst too).
        interval: seconds of a full refill.
        max_idle: buckets kept for users with no open connection.
    """

    shared = False

    def __init__(self, messages: int = 30, interval: float = 10.0, *, max_idle: int = 10_000) -> None:
        self.messages = messages
        self.interval = interval
        #: user id -> [bucket, connections using it]
        self._buckets: dict[str, list] = {}
        #: buckets of users with no connection left, most recent last: a user who
        #: reconnects (or sends one SSE request per reply) finds their budget spent, not
        #: refilled. Bounded: the oldest go first (they are the most likely refilled).
        self._idle: OrderedDict[str, TokenBucket] = OrderedDict()
        self.max_idle = max_idle
        #: owner -> the run ids holding a slot: the id alone while it is the only one (the
        #: usual case: a set per streaming connection is one more object for the garbage
        #: collector to walk), a set of them past one.
        self._slots: dict[str, Union[str, set[str]]] = {}

    def active(self, owner: str) -> int:
        mine = self._slots.get(owner)
        if mine is None:
            return 0
        return 1 if isinstance(mine, str) else len(mine)

    def rate(self, session: Any) -> TokenBucket:
        user_id = getattr(session, "user_id", None)
        if not user_id:
            return TokenBucket(self.messages, self.interval)
        entry = self._buckets.get(user_id)
        if entry is None:
            bucket = self._idle.pop(user_id, None) or TokenBucket(self.messages, self.interval)
            entry = self._buckets[user_id] = [bucket, 0]
        entry[1] += 1
        return entry[0]

    def release_rate(self, session: Any) -> None:
        user_id = getattr(session, "user_id", None) or ""
        entry = self._buckets.get(user_id)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._buckets[user_id]
                self._idle[user_id] = entry[0]
                while len(self._idle) > self.max_idle:
                    self._idle.popitem(last=False)

    def try_acquire(self, owner: str, run_id: str, limit: int) -> bool:
        slots = self._slots
        mine = slots.get(owner)
        if mine is None:
            if limit < 1:
                return False
            slots[owner] = run_id
            return True
        if isinstance(mine, str):
            if mine == run_id:
                return True
            if limit < 2:
                return False
            mine = slots[owner] = {mine}
        if run_id in mine:
            return True
        if len(mine) >= limit:
            return False
        mine.add(run_id)
        return True

    async def acquire(self, owner: str, run_id: str, limit: int) -> bool:
        return self.try_acquire(owner, run_id, limit)

    async def release(self, owner: str, run_id: str) -> None:
        self.release_now(owner, run_id)

    def release_now(self, owner: str, run_id: str) -> None:
        mine = self._slots.get(owner)
        if mine is None:
            return
        if isinstance(mine, str):
            if mine == run_id:
                del self._slots[owner]
            return
        mine.discard(run_id)
        if not mine:
            del self._slots[owner]

    async def aclose(self) -> None:
        self._buckets.clear()
        self._idle.clear()
        self._slots.clear()
