"""Freezing the start-up heap: the collector's full passes skip what lives for good.

CPython's generational collector walks every tracked object on a full pass: the modules,
classes and functions imported at start-up (some 35,000 objects under uvicorn) and every
open connection's state. A server streaming to a thousand clients runs such passes while
its replies start, and each one stops every stream for tens of milliseconds (measured in
``benchmarks/``: the longest gaps between two chunks of a stream come from them).
``gc.freeze()`` moves what exists now to a permanent generation the collector no longer
walks. Called once a server listens, it takes the start-up heap out of every later pass.

It is a process-wide setting, so streamcore never does it on its own: ``[server]
gc_freeze = true`` asks the server runners (``streamcore serve``, the ``serve`` helpers of
the websockets and uvicorn adapters) for it. An application that runs its own server can
call :func:`gc.freeze` itself at the end of its start-up, after a :func:`gc.collect`.
"""

from __future__ import annotations

import gc

from .log import get_logger

__all__ = ["freeze_startup_heap"]

_log = get_logger("streamcore")

_frozen = False


def freeze_startup_heap() -> bool:
    """Collect once, then freeze every object alive (once per process).

    Objects frozen are never collected, so it is done once, when start-up is over: what
    exists then (modules, the engine, the server) lives as long as the process anyway.

    Returns:
        True when this call froze the heap, False when an earlier one had.
    """
    global _frozen
    if _frozen:
        return False
    _frozen = True
    gc.collect()
    gc.freeze()
    _log.info("gc.frozen", objects=gc.get_freeze_count())
    return True
