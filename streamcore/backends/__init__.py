"""Shared backends: what lets several processes serve one application.

With ``[redis] url`` set, :class:`~streamcore.engine.Engine` builds the Redis backends of
:mod:`streamcore.backends.redis` (run log, broker, limiter, conversation and objective
stores) unless explicit ones are passed. They need the ``redis`` extra
(``pip install 'streamcore-llm[redis]'``); ``import streamcore`` never imports it.

A background job that is not a server publishes to clients with
:class:`~streamcore.backends.redis.RedisPublisher` (``from streamcore.backends import
RedisPublisher``): ``RedisPublisher(url).publish("indexing", "INDEXING_PROGRESS", {...})``.
"""

from __future__ import annotations

from typing import Any

from ..errors import StreamcoreError
from ..protocol import ErrorCode

__all__ = ["BackendUnavailable", "RedisBackends", "RedisPublisher", "AsyncRedisPublisher", "redis_backends"]


class BackendUnavailable(StreamcoreError):
    """The shared backend could not be reached: retryable ``SERVER_ERROR``."""

    code = ErrorCode.SERVER_ERROR

    def __init__(self, message: str = "the shared store is unavailable; try again shortly") -> None:
        super().__init__(message, retryable=True, retry_after_ms=1000)


def redis_backends(config: Any) -> Any:
    """The Redis backends for ``config`` (``[redis] url`` must be set)."""
    from .redis import RedisBackends

    return RedisBackends(config)


def __getattr__(name: str) -> Any:
    # Lazy: importing streamcore.backends never imports redis.
    if name in ("RedisBackends", "RedisPublisher", "AsyncRedisPublisher"):
        from . import redis as _redis

        return getattr(_redis, name)
    raise AttributeError(name)
