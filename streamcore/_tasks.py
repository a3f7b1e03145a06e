"""Cheap background tasks and cancel scopes for what the engine starts per reply and per
connection (:class:`TaskSet`, :class:`TaskScope`).

On asyncio, anyio's ``TaskGroup.start_soon`` wraps every task in a ``TaskHandle`` with its
own cancel scope and event: about 15 us and 2 KiB per task, against 2 us and a few hundred
bytes for a plain task (measured on the benchmark machine). streamcore starts one task per
reply and one writer per connection, so at a thousand connections that difference is a
large share of the server's time and memory.

A :class:`TaskSet` starts plain asyncio tasks and owns them: it holds a strong reference to
each, logs what escapes one, and cancels what is left when its owner closes. On any other
backend it hands the work to the owner's anyio task group, unchanged. The tasks it starts
see anyio cancel scopes as usual (a scope entered in a plain task works the same).
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

try:  # anyio >= 4.16 no longer installs it; trio does (and needs it)
    import sniffio
except ModuleNotFoundError:  # pragma: no cover - depends on what is installed
    sniffio = None  # type: ignore[assignment]

from .log import get_logger

__all__ = ["TaskScope", "TaskSet", "cancel_scope", "running_loop"]

#: ``create_task(context=...)`` exists from Python 3.11.
_SHARED_CONTEXT = sys.version_info >= (3, 11)

_log = get_logger("streamcore")


def running_loop() -> Any:
    """The running asyncio loop, or None under another anyio backend (or outside any)."""
    if sniffio is None:  # then no trio either: an asyncio loop, or nothing (as anyio decides)
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None
    try:
        if sniffio.current_async_library() != "asyncio":
            return None
    except sniffio.AsyncLibraryNotFoundError:
        return None
    return asyncio.get_running_loop()


class TaskSet:
    """Tasks owned by one object (the engine, a connection), started cheaply.

    Args:
        tg: the owner's task group, used on backends other than asyncio.
    """

    __slots__ = ("_tg", "_loop", "_tasks", "_on_done")

    def __init__(self, tg: Any) -> None:
        self._tg = tg
        # Made at the first task: an empty set is 216 bytes, and most connections never
        # start one here (their writer is a task of its own).
        self._tasks: set[Any] | None = None
        self._loop = running_loop()
        # One bound method for every task's done callback, not one made (and tracked by
        # the garbage collector for the task's lifetime) per task; made at the first task.
        self._on_done: Any = None

    @property
    def loop(self) -> Any:
        """The asyncio loop its tasks run on; None on other backends."""
        return self._loop

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in a new task."""
        if self._loop is None:
            self._tg.start_soon(fn, *args)
            return
        if self._tasks is None:
            self._tasks = set()
            self._on_done = self._done
        loop = self._loop
        if _SHARED_CONTEXT and loop.get_task_factory() is None:
            # The task and its done callback share one copy of the caller's context:
            # add_done_callback() would make a second copy, one more object per task for
            # the garbage collector while the task lives. (An app's task factory may not
            # take ``context``: then as before.)
            context = contextvars.copy_context()
            task = loop.create_task(fn(*args), context=context)
            task.add_done_callback(self._on_done, context=context)
        else:
            task = loop.create_task(fn(*args))
            task.add_done_callback(self._on_done)
        self._tasks.add(task)

    def _done(self, task: Any) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:  # callers catch their own errors: this is a bug
                _log.error("task.failed", task=task.get_name(), exc_info=exc)

    def cancel(self) -> None:
        """Cancel every task still running (their ``finally`` blocks run)."""
        for task in list(self._tasks or ()):
            task.cancel()

    async def wait(self, timeout: float) -> None:
        """Wait for the tasks to finish, at most ``timeout`` seconds (shielded)."""
        if not self._tasks:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(timeout):
                await asyncio.wait(list(self._tasks))


class TaskScope:
    """What ``anyio.CancelScope`` does for a run's provider stream, made cheaply on asyncio.

    A run enters one scope per reply so that STOP, shutdown, abandonment and its deadline
    can cancel the provider stream and the run still logs its END. On asyncio, anyio's
    scope costs about 8 us and six objects for the garbage collector per reply (its task
    state, two sets, a weak reference, the scope and its bound ``__exit__``); this one is
    a few attributes. It keeps anyio's behaviour where a run depends on it:

    - ``cancel()`` before the body reaches an await, or from the task itself, is delivered
      at the body's next suspension, never into code after the scope;
    - the cancellation is level-triggered: while the body stays in a cancelled scope, each
      turn of the loop cancels it again, so a provider that swallows one ``CancelledError``
      cannot keep the run streaming;
    - an anyio scope with ``shield=True`` inside the body (a provider releasing its HTTP
      response in a ``finally``) is not cancelled: delivery waits until the body is out of
      it, looking every 10 ms (anyio is told when a shield ends; this scope is not);
    - it swallows only its own cancellation: a ``Task.cancel()`` from elsewhere (the engine
      closing its tasks) also landing in the scope propagates, as asyncio's own ``timeout``
      does it, by counting ``cancel()`` and ``uncancel()`` calls.

    One difference remains: anyio scopes inside the body do not see this one. A
    ``fail_after`` in a provider whose deadline passes in the same turn of the loop as a
    ``cancel()`` raises its ``TimeoutError`` (the run logs a provider failure) where
    anyio would have let the outer cancellation win.

    Get one from :func:`cancel_scope`, which gives anyio's scope where this one does not
    apply: other backends, Python 3.10 (no ``Task.uncancel``), or an anyio without the
    record of each task's scopes that seeing its shields takes (a private one, checked
    once at import).
    """

    __slots__ = ("_task", "_loop", "_inside", "_sent", "_at_enter", "_outer", "cancel_called", "cancelled_caught")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._task: Any = None
        self._inside = False
        self._sent = 0  # cancel() calls made on the task, each taken back at the exit
        self._at_enter = 0
        self._outer: Any = None  # the task's anyio scope around this one, if any
        self.cancel_called = False
        self.cancelled_caught = False

    def __enter__(self) -> TaskScope:
        task: Any = asyncio.current_task()  # Any: mypy checks against Python 3.10
        self._task = task
        if task is None:
            raise RuntimeError("a TaskScope is entered in a task")
        self._at_enter = task.cancelling()
        self._outer = _anyio_scope(task)
        self._inside = True
        if self.cancel_called:
            self._loop.call_soon(self._deliver)
        return self

    def cancel(self) -> None:
        """Cancel the body: at its next await, and at each one after while it stays inside."""
        if self.cancel_called:
            return
        self.cancel_called = True
        if self._inside:
            self._deliver()

    def _deliver(self) -> None:
        task = self._task
        if not self._inside or task.done():
            return
        # Not into a running task (it would raise at its next await, maybe past the
        # scope), not twice before it is delivered, not in place of a result already
        # there: anyio's rules, for the same reasons.
        if task is not asyncio.current_task() and not task._must_cancel:
            if self._shielded(task):
                # anyio resumes delivery when the shield ends; nothing tells this scope,
                # so it looks again a little later, not at every turn of the loop (which
                # would keep the loop from ever sleeping while a cleanup runs).
                self._loop.call_later(_SHIELD_POLL, self._deliver)
                return
            waiter = task._fut_waiter
            if waiter is None or not waiter.done():
                task.cancel()
                self._sent += 1
        self._loop.call_soon(self._deliver)

    def _shielded(self, task: Any) -> bool:
        scope = _anyio_scope(task)
        while scope is not None and scope is not self._outer:
            if scope.shield:
                return True
            scope = scope._parent_scope
        return False

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._inside = False
        task = self._task
        self._task = self._outer = None
        if not self._sent:
            return False
        while self._sent:
            task.uncancel()
            self._sent -= 1
        # Ours alone: a cancel() from elsewhere in the same turn folded into this error.
        if task.cancelling() > self._at_enter or exc_type is None:
            return False
        if issubclass(exc_type, asyncio.CancelledError):
            self.cancelled_caught = True
            return True
        if _ExceptionGroup is not None and isinstance(exc, _ExceptionGroup):
            # As anyio does: the cancellations in a group are this scope's; the rest goes on.
            cancelled, rest = exc.split(asyncio.CancelledError)
            if cancelled is not None:
                self.cancelled_caught = True
                if rest is None:
                    return True
                context = rest.__context__
                try:
                    raise rest
                finally:
                    rest.__context__ = context  # as it was, not the group it came from
        return False


def cancel_scope(loop: Any) -> Any:
    """A :class:`TaskScope` on asyncio (``loop``: :func:`running_loop`'s), else anyio's."""
    if loop is not None and _task_states is not None:
        return TaskScope(loop)
    return anyio.CancelScope()


def _anyio_scope(task: Any) -> Any:
    """The innermost anyio cancel scope ``task`` is in, or None."""
    assert _task_states is not None
    state = _task_states.get(task)
    return state.cancel_scope if state is not None else None


def _anyio_task_states() -> Any:
    """anyio's record of each asyncio task's cancel scope, if this anyio has it as
    :class:`TaskScope` reads it; None also before Python 3.11 (no ``Task.uncancel``)."""
    if not hasattr(asyncio.Task, "uncancel"):
        return None
    try:
        from anyio._backends._asyncio import CancelScope, TaskState, _task_states
    except ImportError:
        return None
    if "cancel_scope" not in TaskState.__slots__ or not hasattr(CancelScope, "_parent_scope"):
        return None
    return _task_states


_task_states = _anyio_task_states()
#: How often a cancelled scope whose body is in an anyio shield looks again (seconds).
_SHIELD_POLL = 0.01
#: Python 3.11's BaseExceptionGroup (TaskScope is only used where it exists).
_ExceptionGroup: Any = getattr(builtins, "BaseExceptionGroup", None)
