"""The broker: delivery of events to everyone, to one user, to a topic, across processes.

An engine delivers to its own connections directly, and hands every delivery to its broker
too so that other processes serving the same application deliver to theirs (and, for the
engine's control messages, stop a run or keep it alive from another worker). A broker only
moves :class:`BusMessage` values; it knows nothing of sessions.

- :class:`LocalBroker` (the default) connects the engines of one process: with one engine
  it delivers nothing anywhere else, at no cost.
- The Redis broker (:mod:`streamcore.backends.redis`) publishes on one Pub/Sub channel;
  any process, a server or not, can publish (``RedisPublisher``).

Handlers are plain functions that must not block: they queue frames in outboxes (bounded,
watched for slow readers), so a dead or slow connection never stalls the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, Union

import msgspec

from .log import get_logger

__all__ = ["Broker", "BusMessage", "LocalBroker", "ALL", "USER", "TOPIC", "STOP", "WATCH"]

_log = get_logger("streamcore")

#: message kinds: every client; a user's connections; a topic's subscribers.
ALL, USER, TOPIC = "all", "user", "topic"
#: control: stop a run (target: message id, data: owner); a remote reader follows a run.
STOP, WATCH = "stop", "watch"


class BusMessage(msgspec.Struct, array_like=True, frozen=True):
    """One delivery: ``origin`` (who sent it), ``kind``, ``target`` (user, topic or run id),
    and the event (``type``, ``data``)."""

    origin: str
    kind: str
    target: Union[str, None] = None
    type: Union[str, None] = None
    data: Any = None


class Broker(Protocol):
    """Moves :class:`BusMessage` values between the processes of one application."""

    #: True when messages reach other processes.
    shared: bool

    def subscribe(self, handler: Callable[[BusMessage], None]) -> None:
        """Call ``handler`` with every message published from now on (its own included)."""

    def start(self, task_group: Any) -> None:
        """Start background delivery in ``task_group`` (a no-op in memory)."""

    def publish(self, message: BusMessage) -> None:
        """Send ``message`` to every subscriber; never blocks, never raises for I/O."""

    async def aclose(self) -> None:
        """Stop delivering and release resources."""


class LocalBroker:
    """Delivers to the subscribers of this process, synchronously."""

    shared = False

    def __init__(self) -> None:
        self._handlers: list[Callable[[BusMessage], None]] = []

    def subscribe(self, handler: Callable[[BusMessage], None]) -> None:
        self._handlers.append(handler)

    def unsubscribe(self, handler: Callable[[BusMessage], None]) -> None:
        try:
            self._handlers.remove(handler)
        except ValueError:
            pass

    def start(self, task_group: Any) -> None:
        return None

    def publish(self, message: BusMessage) -> None:
        for handler in list(self._handlers):
            try:
                handler(message)
            except Exception:  # one bad handler never stops the others
                _log.exception("broker.handler_failed", kind=message.kind)

    async def aclose(self) -> None:
        self._handlers.clear()
