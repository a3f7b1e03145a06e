"""The run log: every run's entries, numbered by ``seq``, readable from a cursor.

A run appends ``(seq, kind, payload)`` entries (see :mod:`streamcore.events`) through a
:class:`LogWriter`; any reader, in this process or (with a shared backend) another one,
reads them after a cursor. The log knows nothing of dialects or connections.

:class:`MemoryRunLog` is the default backend: one process, no dependency. It is bounded in
runs and bytes, keeps finished runs for ``retention`` seconds, and drops the oldest
finished runs first when a bound is reached; when running runs alone fill it, new runs
are refused (the caller answers ``RATE_LIMIT``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import anyio

from .errors import StreamcoreError
from .events import Entry, expand
from .protocol import ErrorCode

__all__ = ["RunLog", "LogWriter", "RunInfo", "MemoryRunLog"]


class RunInfo:
    """What the log knows of a run without reading it."""

    __slots__ = ("run_id", "owner", "done", "last_seq")

    def __init__(self, run_id: str, owner: str, done: bool, last_seq: int) -> None:
        self.run_id = run_id
        self.owner = owner
        self.done = done
        self.last_seq = last_seq


class LogWriter(Protocol):
    """A run's handle on the log.

    Attributes:
        entries: every entry appended so far, in order, seqs from 1 without gaps (the run
            reads it for its local readers; a shared backend keeps its own copy too). A
            text delta is appended as its bare ``str`` (seq: its position + 1), any other
            entry as ``(seq, kind, payload)``; :func:`~streamcore.events.expand` gives
            them all as tuples. The run appends to this list itself, once per delta: a
            shared backend sends what is new from it in the background, never blocking.
    """

    entries: list[Entry | str]

    @property
    def append(self) -> Callable[[Entry | str], None]:
        """``entries.append``: recording an entry is appending it to ``entries``."""

    def finish(self, size: int = 0) -> None:
        """The run sealed: start its retention period (``size``: the text it logged)."""

    async def flush(self) -> None:
        """Wait until what was appended is durable (a no-op in memory)."""


class RunLog(Protocol):
    """A backend of the run log (memory now; Redis Streams behind the same interface)."""

    def open(self, run_id: str, owner: str) -> LogWriter:
        """Create the log of a new run.

        Raises:
            StreamcoreError: ``RATE_LIMIT`` when the log is full of running runs.
        """

    async def info(self, run_id: str) -> RunInfo | None:
        """The run's owner and state, or None when unknown or expired."""

    async def read(self, run_id: str, after: int, *, wait: float = 0.0) -> tuple[list[Entry], bool]:
        """Entries with ``seq > after`` and whether the run is sealed.

        Waits up to ``wait`` seconds for at least one new entry when there is none yet and
        the run is not sealed. An unknown or expired run reads as ``([], True)``.
        """

    async def aclose(self) -> None:
        """Release the backend's resources."""


class _Record:
    """One run's entries in memory; also its :class:`LogWriter`, and once finished the
    source a resuming reader reads in place (see :class:`~streamcore.run.Subscription`)."""

    __slots__ = ("run_id", "owner", "entries", "bytes", "done", "ended_at", "_log")

    #: the seq before ``entries[0]``: a run's entries start at seq 1.
    base = 0

    def __init__(self, log: MemoryRunLog, run_id: str, owner: str) -> None:
        self.run_id = run_id
        self.owner = owner
        self.entries: list[Entry | str] = []
        self.bytes = 0
        self.done = False
        self.ended_at = 0.0
        self._log = log

    @property
    def append(self) -> Callable[[Entry | str], None]:
        """The per-delta call: the list's own append, nothing else to do in memory. Made
        when asked (a run asks once), not kept: a bound method per run is one more object
        for the garbage collector to walk while the run lives."""
        return self.entries.append

    @property
    def sealed(self) -> bool:
        return self.done

    def finish(self, size: int = 0) -> None:
        if self.done:
            return
        self.done = True
        self.ended_at = self._log.clock()
        # Counted once, at the end: a running run is bounded by max_run_bytes already, and
        # the per-delta path stays a bare list append. Each entry counts 64 bytes more.
        self.bytes = size + 64 * len(self.entries)
        self._log.bytes += self.bytes
        self._log._finished(self)

    async def flush(self) -> None:
        return None


class MemoryRunLog:
    """The in-process run log.

    Args:
        retention: seconds a finished run stays readable.
        max_runs: runs kept, running and finished.
        max_bytes: text bytes kept in all by finished runs (running ones are bounded by
            ``[runs] max_run_bytes`` each and ``[limits] max_generations`` in number).
        clock: seconds, monotonic (tests pass a fake one to expire runs without waiting).
    """

    def __init__(
        self,
        *,
        retention: float = 300.0,
        max_runs: int = 10_000,
        max_bytes: int = 256 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.retention = retention
        self.max_runs = max_runs
        self.max_bytes = max_bytes
        self.bytes = 0
        self._runs: dict[str, _Record] = {}
        #: finished runs, oldest first: what expires or is evicted first.
        self._finished_order: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def open(self, run_id: str, owner: str) -> _Record:
        self._expire()
        while len(self._runs) >= self.max_runs or self.bytes >= self.max_bytes:
            if not self._finished_order:
                raise StreamcoreError(
                    "the server is busy with too many replies; try again shortly",
                    code=ErrorCode.RATE_LIMIT,
                    retry_after_ms=1000,
                )
            self._drop(next(iter(self._finished_order)))
        record = self._runs[run_id] = _Record(self, run_id, owner)
        return record

    def get(self, run_id: str) -> _Record | None:
        """The record of ``run_id`` if it is still kept (a synchronous, local look-up)."""
        record = self._runs.get(run_id)
        if record is not None and record.done and self.clock() - record.ended_at > self.retention:
            self._drop(run_id)
            return None
        return record

    async def info(self, run_id: str) -> RunInfo | None:
        record = self.get(run_id)
        if record is None:
            return None
        return RunInfo(run_id, record.owner, record.done, len(record.entries))

    async def read(self, run_id: str, after: int, *, wait: float = 0.0) -> tuple[list[Entry], bool]:
        record = self.get(run_id)
        if record is None:
            return [], True
        # In one process live runs are read through the Run itself; this wait serves other
        # readers (tests, tools) by polling, so appends stay a bare list append.
        deadline = anyio.current_time() + wait
        while not record.done and not _after(record.entries, after) and anyio.current_time() < deadline:
            await anyio.sleep(min(0.01, wait))
        return _after(record.entries, after), record.done

    async def aclose(self) -> None:
        self._runs.clear()
        self._finished_order.clear()
        self.bytes = 0

    def _finished(self, record: _Record) -> None:
        self._finished_order[record.run_id] = None
        self._expire()

    def _expire(self) -> None:
        # Finished runs expire in the order they finished: stop at the first still kept.
        now = self.clock()
        order = self._finished_order
        while order:
            run_id = next(iter(order))
            record = self._runs.get(run_id)
            if record is not None and now - record.ended_at <= self.retention:
                break
            self._drop(run_id)

    def _drop(self, run_id: str) -> None:
        self._finished_order.pop(run_id, None)
        record = self._runs.pop(run_id, None)
        if record is not None:
            self.bytes -= record.bytes


def _after(entries: list[Entry | str], after: int) -> list[Entry]:
    """Entries with ``seq > after``. Seqs are contiguous from 1, so this is a slice."""
    return expand(entries, max(0, after))

