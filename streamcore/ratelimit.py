"""A token bucket: ``rate`` messages per ``interval``, with bursts up to ``rate``."""

from __future__ import annotations

import math
import time

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows ``capacity`` messages per ``interval`` seconds, refilled continuously.

    Args:
        capacity: the burst size, and the number of messages per interval.
        interval: seconds for a full refill.
    """

    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, capacity: int, interval: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / interval
        self.tokens = float(capacity)
        self.stamp = time.monotonic()

    def take(self) -> int:
        """Take one token; return 0 if allowed, else the milliseconds until one is free."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0
        return max(1, math.ceil((1 - self.tokens) / self.rate * 1000))
