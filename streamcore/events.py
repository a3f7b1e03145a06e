"""Neutral, wire-independent events: what providers produce and what runs record.

Providers yield three kinds of item from ``stream(request)``:

- ``str``: a piece of the answer (the hot path: a plain ``str``, nothing wrapped);
- :class:`Reasoning`: a piece of the model's reasoning ("thinking") text, a ``str``
  subclass so that building one costs no more than the text itself;
- :class:`Completion`: optional and last, the finish reason, :class:`Usage` and model.

A run turns them into log entries ``(seq, kind, payload)`` (see :class:`Kind`); dialects
encode entries into their own frames (streamcore envelopes, later SSE dialects). Nothing
here knows a wire format: field names are Python's, not the protocol's camelCase.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import msgspec

__all__ = [
    "Reasoning",
    "Usage",
    "Completion",
    "Kind",
    "Started",
    "Ended",
    "Failure",
    "AppEvent",
    "Entry",
    "expand",
    "STOP_REASONS",
]

#: Why a run ended; ``complete`` is the only successful one.
STOP_REASONS = frozenset({"complete", "user_cancelled", "length", "timeout", "error", "server_shutdown"})


class Reasoning(str):
    """A reasoning ("thinking") delta, kept apart from the answer and from the history."""

    __slots__ = ()


class Usage(msgspec.Struct, omit_defaults=True, frozen=True, gc=False):
    """Token counts of one generation, when the provider reports them."""

    prompt_tokens: Union[int, None] = None
    completion_tokens: Union[int, None] = None
    total_tokens: Union[int, None] = None
    #: reasoning tokens, part of ``completion_tokens`` where the upstream reports them.
    reasoning_tokens: Union[int, None] = None


class Completion(msgspec.Struct):
    """The optional last item of a provider stream.

    Attributes:
        finish_reason: one of :data:`STOP_REASONS` (providers map their own first).
        usage: token counts, when known.
        model: the model that answered, when the upstream says.
    """

    finish_reason: str = "complete"
    usage: Union[Usage, None] = None
    model: Union[str, None] = None


# Usage, Started, Ended and Failure hold only strings, numbers and Usage, so they can never be
# part of a reference cycle: ``gc=False`` keeps the run log's entries (retained for resume)
# out of the garbage collector's walks.


class Kind:
    """The kind of a run-log entry. Integers: compared once per entry on the hot path."""

    STARTED = 1  #: payload :class:`Started`
    TEXT = 2  #: payload ``str``
    REASONING = 3  #: payload ``str``
    FAILED = 4  #: payload :class:`Failure` (always followed by ENDED)
    ENDED = 5  #: payload :class:`Ended`
    APP = 6  #: payload :class:`AppEvent` (objective generated, follow-up questions...)


class Started(msgspec.Struct, frozen=True, gc=False):
    """The run's first entry: its message id and the model answering."""

    message_id: str
    model: Union[str, None] = None


class Ended(msgspec.Struct, frozen=True, gc=False):
    """The run's end: exactly one per run."""

    message_id: str
    stop_reason: str
    content: Union[str, None]
    usage: Union[Usage, None] = None

    @property
    def complete(self) -> bool:
        return self.stop_reason == "complete"


class Failure(msgspec.Struct, frozen=True, gc=False):
    """Why a run failed, in the protocol's error vocabulary."""

    code: str
    message: str
    retryable: bool
    retry_after_ms: Union[int, None] = None


class AppEvent(msgspec.Struct, frozen=True):
    """An event of a run that is not text: ``type`` is the wire type, ``data`` its payload.

    ``data`` gets the run's ``messageId`` and ``seq`` added when it is a dict or a Struct
    with those fields.
    """

    type: str
    data: Any


#: One log entry: ``(seq, kind, payload)``; ``seq`` strictly increases within a run.
Entry = tuple[int, int, Any]


def expand(entries: Sequence[Any], start: int = 0, stop: int | None = None) -> list[Entry]:
    """A run's own entry list, from position ``start`` to ``stop``, as ``(seq, kind, payload)``.

    A run's list (a log writer's ``entries``) numbers its entries from seq 1 without gaps,
    and holds each text delta as its bare ``str``: its seq is its position + 1, its kind
    :attr:`Kind.TEXT`. A tuple per delta, kept for the run's retention, was one more
    object per chunk for the garbage collector to track: at a thousand paced streams,
    enough survivors to set off gen1 and full collections mid-stream (measured: full
    collections of 72 and 95 ms, pausing every stream). A ``str`` is not tracked. Other
    entries are stored as tuples.
    """
    stop = len(entries) if stop is None else stop
    return [(i, Kind.TEXT, e) if type(e) is str else e for i, e in enumerate(entries[start:stop], start + 1)]
