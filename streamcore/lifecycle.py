"""The lifecycle of one run as a pure state machine (no I/O, no tasks, no clock).

Modelled on h11's ``_state.py``: the legal transitions live in one table,
:data:`TRANSITIONS`, and anything else raises :class:`~streamcore.errors.RunStateError`.
Each input returns the log entries it produces, numbered with the run's ``seq``::

    PENDING ──start──▶ STREAMING ──text/reasoning/app──▶ STREAMING
       │                  │  └──fail──▶ FAILED ──end──▶ ENDED ──app──▶ ENDED ──seal──▶ SEALED
       └──(finish)────────┴──────────────end───────────▶ ENDED

:meth:`RunMachine.finish` is the one way a driver ends a run: from PENDING it logs the
START first, after a failure it logs the FAILED entry, then the single ENDED entry. A
second END is an illegal transition, so "exactly one AI_MESSAGE_END" holds by
construction; stop, timeout, provider error, shutdown and encoding failure are all just
arguments of ``finish``.
"""

from __future__ import annotations

import enum
from typing import Any

from .errors import RunStateError
from .events import STOP_REASONS, AppEvent, Ended, Entry, Failure, Kind, Started, Usage

__all__ = ["RunState", "Input", "TRANSITIONS", "RunMachine"]


class RunState(enum.Enum):
    # Members are singletons: hashed by identity, as compared (Enum's own __hash__ is a
    # Python call per TRANSITIONS look-up, four per reply).
    __hash__ = object.__hash__

    PENDING = "pending"  #: created: AI_THINKING sent, nothing logged yet
    STREAMING = "streaming"  #: START logged; deltas flow
    FAILED = "failed"  #: a failure was logged; only END may follow
    ENDED = "ended"  #: END logged; only application events (objective, follow-ups) follow
    SEALED = "sealed"  #: nothing more will be logged


class Input(enum.Enum):
    __hash__ = object.__hash__  # see RunState

    START = "start"
    TEXT = "text"
    REASONING = "reasoning"
    APP = "app"
    FAIL = "fail"
    END = "end"
    SEAL = "seal"


S, In = RunState, Input

#: (state, input) -> next state. Nothing else is legal.
TRANSITIONS: dict[tuple[RunState, Input], RunState] = {
    (S.PENDING, In.START): S.STREAMING,
    (S.STREAMING, In.TEXT): S.STREAMING,
    (S.STREAMING, In.REASONING): S.STREAMING,
    (S.STREAMING, In.APP): S.STREAMING,
    (S.STREAMING, In.FAIL): S.FAILED,
    (S.STREAMING, In.END): S.ENDED,
    (S.FAILED, In.END): S.ENDED,
    (S.ENDED, In.APP): S.ENDED,
    (S.ENDED, In.SEAL): S.SEALED,
}

_STREAMING = RunState.STREAMING
_TEXT, _REASONING = Kind.TEXT, Kind.REASONING


class RunMachine:
    """The state of one run and the entries it logs.

    Args:
        message_id: the run's id, as clients see it (``messageId``).

    Attributes:
        state: the current :class:`RunState`.
        seq: the ``seq`` of the last entry produced (0 before the first).
        parts: the answer's text deltas, in order (reasoning is not part of it).
        size: characters of text and reasoning logged so far.
        ended: the :class:`~streamcore.events.Ended` payload once the run ended.
    """

    __slots__ = ("message_id", "state", "seq", "parts", "size", "ended")

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.state = RunState.PENDING
        self.seq = 0
        self.parts: list[str] = []
        self.size = 0
        self.ended: Ended | None = None

    def _go(self, event: Input) -> None:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise RunStateError(
                f"run {self.message_id}: illegal transition {event.value!r} in state {self.state.value!r}"
            ) from None

    def _entry(self, kind: int, payload: Any) -> Entry:
        self.seq += 1
        return (self.seq, kind, payload)

    @property
    def started(self) -> bool:
        return self.state is not RunState.PENDING

    @property
    def text(self) -> str:
        """The answer so far (once ended, the END's content: joined once)."""
        if self.ended is not None:
            return self.ended.content or ""
        return "".join(self.parts)

    def start(self, model: str | None = None) -> Entry:
        """Log AI_MESSAGE_START (sent when the first delta arrives, or just before the end)."""
        self._go(Input.START)
        return self._entry(Kind.STARTED, Started(self.message_id, model))

    def expect_streaming(self) -> None:
        """Raise unless deltas are legal now (a driver that logs deltas inline checks once)."""
        if self.state is not _STREAMING:
            self._go(Input.TEXT)

    def text_delta(self, delta: str) -> Entry:
        """Log a piece of the answer. The per-chunk path: one state check, no table look-up."""
        if self.state is not _STREAMING:
            self._go(Input.TEXT)  # raises: TEXT is legal only while streaming
        self.parts.append(delta)
        self.size += len(delta)
        self.seq += 1
        return (self.seq, _TEXT, delta)

    def reasoning_delta(self, delta: str) -> Entry:
        """Log a piece of the model's reasoning (never part of the answer)."""
        if self.state is not _STREAMING:
            self._go(Input.REASONING)
        self.size += len(delta)
        self.seq += 1
        return (self.seq, _REASONING, str(delta))

    def app(self, type: str, data: Any) -> Entry:
        """Log an application event of this run (OBJECTIVE_GENERATED, FOLLOW_UP_QUESTIONS...)."""
        self._go(Input.APP)
        return self._entry(Kind.APP, AppEvent(type, data))

    def finish(
        self,
        stop_reason: str,
        *,
        usage: Usage | None = None,
        failure: Failure | None = None,
        model: str | None = None,
    ) -> list[Entry]:
        """End the run: START first if it never started, the failure if any, then END.

        Raises:
            RunStateError: the run already ended (a second END is a bug), or the stop
                reason is not one of the protocol's.
        """
        if stop_reason not in STOP_REASONS:
            raise RunStateError(f"run {self.message_id}: unknown stop reason {stop_reason!r}")
        if self.state in (RunState.ENDED, RunState.SEALED):
            raise RunStateError(f"run {self.message_id}: already ended")
        entries = []
        if self.state is RunState.PENDING:
            entries.append(self.start(model))
        if failure is not None:
            self._go(Input.FAIL)
            entries.append(self._entry(Kind.FAILED, failure))
        self._go(Input.END)
        self.ended = Ended(self.message_id, stop_reason, self.text, usage)
        entries.append(self._entry(Kind.ENDED, self.ended))
        return entries

    def seal(self) -> None:
        """Nothing more will be logged; watchers may let go."""
        self._go(Input.SEAL)
