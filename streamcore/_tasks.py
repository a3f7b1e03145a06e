"""Cheap background tasks for what the engine starts per reply and per connection.

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

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import sniffio

from .log import get_logger

__all__ = ["TaskSet", "running_loop"]

_log = get_logger("streamcore")


def running_loop() -> Any:
    """The running asyncio loop, or None under another anyio backend (or outside any)."""
    try:
        if sniffio.current_async_library() != "asyncio":
            return None
    except sniffio.AsyncLibraryNotFoundError:
        return None
    import asyncio

    return asyncio.get_running_loop()


class TaskSet:
    """Tasks owned by one object (the engine, a connection), started cheaply.

    Args:
        tg: the owner's task group, used on backends other than asyncio.
    """

    __slots__ = ("_tg", "_loop", "_tasks")

    def __init__(self, tg: Any) -> None:
        self._tg = tg
        # Made at the first task: an empty set is 216 bytes, and most connections never
        # start one here (their writer is a task of its own).
        self._tasks: set[Any] | None = None
        self._loop = running_loop()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in a new task."""
        if self._loop is None:
            self._tg.start_soon(fn, *args)
            return
        task = self._loop.create_task(fn(*args))
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._done)

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
        import asyncio

        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(timeout):
                await asyncio.wait(list(self._tasks))
