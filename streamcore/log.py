"""Logging for a library: structlog's API, records in the standard ``logging`` tree.

streamcore never configures logging. :func:`get_logger` returns a structlog bound logger
(``log.info("generation.end", session_id=..., chunks=...)``) whose every call becomes one
:class:`logging.LogRecord` on the stdlib logger of the same name (``streamcore`` by
default): the event is the record's message and the key-values travel as record
attributes (``extra``), so the host application's handlers, levels and filters decide
what is kept and how it looks. A disabled level costs one ``isEnabledFor`` check.

structlog's global configuration is never touched: an application that configures
structlog for its own loggers changes nothing here, and vice versa.

To render the key-values, a handler may use :class:`structlog.stdlib.ProcessorFormatter`
with :class:`structlog.stdlib.ExtraAdder` in its ``foreign_pre_chain`` (what
``streamcore serve --log-format console|json`` does), or any formatter that reads record
attributes (``%(session_id)s``, python-json-logger...).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from types import FrameType

    from structlog.typing import Processor

__all__ = ["RESERVED_RENAMES", "configure_logging", "get_logger", "to_stdlib"]

# LogRecord attributes an ``extra`` may not overwrite (logging raises KeyError): a key
# of this name is passed on with a trailing underscore (``name`` becomes ``name_``).
_RESERVED = frozenset(logging.LogRecord("n", 0, "p", 0, "m", (), None).__dict__) | {"message", "asctime"}
RESERVED_RENAMES = {key: key + "_" for key in _RESERVED}

# Keyword arguments of logging.Logger methods (not record attributes).
_LOG_KWARGS = ("exc_info", "stack_info", "stacklevel")

_STRUCTLOG_DIR = os.path.dirname(structlog.__file__)
_THIS_FILE = os.path.normcase(__file__)


def _internal(code_file: str) -> bool:
    return code_file.startswith(_STRUCTLOG_DIR) or os.path.normcase(code_file) == _THIS_FILE


def to_stdlib(logger: logging.Logger, method_name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: the event dict as keyword arguments of a stdlib logger call.

    ``event`` becomes ``msg``; ``exc_info``, ``stack_info`` and ``stacklevel`` stay
    keyword arguments; every other key goes into ``extra``. ``stacklevel`` points the
    record's ``funcName``/``lineno`` at the code that logged, not at structlog.
    """
    kwargs: dict[str, Any] = {"msg": event_dict.pop("event", "")}
    for key in _LOG_KWARGS:
        if key in event_dict:
            kwargs[key] = event_dict.pop(key)
    extra = {}
    for key, value in event_dict.items():
        extra[RESERVED_RENAMES.get(key, key)] = value
    kwargs["extra"] = extra
    if "stacklevel" not in kwargs:
        # Frames between logging.Logger.<method> and the caller: structlog's own and ours.
        frame: FrameType | None = sys._getframe(1)
        level = 1
        while frame is not None and _internal(frame.f_code.co_filename):
            level += 1
            frame = frame.f_back
        kwargs["stacklevel"] = level - 1 if level > 1 else 1
    return kwargs


class StdlibBoundLogger(structlog.stdlib.BoundLogger):
    """A :class:`structlog.stdlib.BoundLogger` that returns at once for a disabled level."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return self._proxy_to_logger("debug", event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        return self._proxy_to_logger("info", event, *args, **kw)

    def warning(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.WARNING):
            return None
        return self._proxy_to_logger("warning", event, *args, **kw)

    warn = warning

    def error(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.ERROR):
            return None
        return self._proxy_to_logger("error", event, *args, **kw)

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.ERROR):
            return None
        kw.setdefault("exc_info", True)
        return self._proxy_to_logger("error", event, *args, **kw)

    def critical(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.CRITICAL):
            return None
        return self._proxy_to_logger("critical", event, *args, **kw)

    fatal = critical


_PROCESSORS: list[Processor] = [
    # For log(level, ...) and anything that bypasses the early checks above.
    structlog.stdlib.filter_by_level,
    structlog.stdlib.PositionalArgumentsFormatter(),
    to_stdlib,
]


def get_logger(name: str = "streamcore", **initial_values: Any) -> StdlibBoundLogger:
    """A structlog bound logger writing to ``logging.getLogger(name)``.

    Use it in place of ``structlog.get_logger("streamcore")``: same calls
    (``info(event, **key_values)``, ``bind``, ``exception``), but the records reach the
    stdlib ``logging`` tree and structlog's global configuration is never read or changed.

    Args:
        name: the stdlib logger's name (``streamcore`` or a child such as
            ``streamcore.client``).
        **initial_values: key-values bound to every record of this logger.
    """
    return StdlibBoundLogger(logging.getLogger(name), list(_PROCESSORS), dict(initial_values))


def configure_logging(
    fmt: str = "console", level: str | int = "info", stream: Any = None, *, route_structlog: bool = True
) -> logging.Handler:
    """Configure stdlib logging for a program: one line per record, console or JSON.

    For programs (``streamcore serve`` calls it), never called by the library. Records of
    every logger reach one handler on the root logger; ``streamcore`` records at ``level``
    and above, other libraries' at WARNING and above. Key-values passed through
    :func:`get_logger` (and any ``extra``) are rendered as fields.

    Args:
        fmt: ``"console"`` (human-readable, coloured on a terminal) or ``"json"`` (one
            JSON object a line: ``event``, ``level``, ``logger``, ``timestamp``, fields).
        level: level name or number of the ``streamcore`` loggers.
        stream: where lines go (``sys.stderr``).
        route_structlog: also configure structlog globally so that code logging with
            ``structlog.get_logger()`` writes to the same stdlib handler (a program may
            configure structlog; a library must not).

    Returns:
        The installed handler (remove it from the root logger to undo).
    """
    if fmt not in ("console", "json"):
        raise ValueError(f"log format must be 'console' or 'json', not {fmt!r}")
    stream = sys.stderr if stream is None else stream
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        tail: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        isatty = getattr(stream, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty()))
        tail = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("streamcore").setLevel(numeric)
    if route_structlog:
        structlog.configure(
            processors=list(_PROCESSORS),
            wrapper_class=StdlibBoundLogger,
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=True,
        )
    return handler


# A library adds no handler but this one: without any logging configuration, records are
# dropped instead of reaching logging's last-resort handler on stderr.
logging.getLogger("streamcore").addHandler(logging.NullHandler())
