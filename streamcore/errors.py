"""Exceptions of streamcore, under one root: :class:`StreamcoreError`.

Every exception carries an ``ERROR`` code, so every layer can fail in the wire's terms::

    StreamcoreError
    ├── ProtocolError        a client frame that cannot be accepted (INVALID_MESSAGE...)
    ├── ProviderError        the model's provider failed (GENERATION_FAILED, TIMEOUT...)
    ├── NotFound             a run that does not exist, expired, or is someone else's
    ├── RunStateError        an illegal run lifecycle transition (a bug: loud in tests)
    ├── ConfigError          the configuration is invalid (also a ValueError)
    └── ConnectionClosed     the peer went away
        ├── ConnectionClosedOK
        └── ConnectionClosedError
"""

from __future__ import annotations

from typing import Any

from .protocol import RETRYABLE, ErrorCode

__all__ = [
    "StreamcoreError",
    "ProtocolError",
    "ProviderError",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "NotFound",
    "RunStateError",
]


class StreamcoreError(Exception):
    """An error that maps onto one ``ERROR`` frame.

    Args:
        message: what went wrong, safe to show the client (no secrets, no traceback).
        code: one of :class:`~streamcore.protocol.ErrorCode`.
        retryable: overrides the code's default retryable flag.
        retry_after_ms: when the client may retry, for ``RATE_LIMIT`` and the like.
    """

    code: str = ErrorCode.SERVER_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retryable = RETRYABLE.get(self.code, True) if retryable is None else retryable
        self.retry_after_ms = retry_after_ms


class ProtocolError(StreamcoreError):
    """A client frame that cannot be accepted (``INVALID_MESSAGE`` unless told otherwise).

    Args:
        request_id: the frame's ``id`` when it could be read, echoed as ``requestId``.
    """

    code = ErrorCode.INVALID_MESSAGE

    def __init__(self, message: str, *, request_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.request_id = request_id


class ProviderError(StreamcoreError):
    """A provider failed; the code says how (``GENERATION_FAILED``, ``TIMEOUT``...).

    Args:
        misconfigured: the server's own credentials or model are wrong; logged loudly.
    """

    code = ErrorCode.GENERATION_FAILED

    def __init__(self, message: str, *, misconfigured: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.misconfigured = misconfigured


class NotFound(StreamcoreError):
    """A run that does not exist, has expired, or belongs to another user (all alike)."""

    code = ErrorCode.NOT_FOUND

    def __init__(self, message: str = "no such message", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class RunStateError(StreamcoreError):
    """An illegal transition of a run's lifecycle: a bug in streamcore or a caller."""


class ConfigError(StreamcoreError, ValueError):
    """The configuration is invalid; raised at start-up with the offending key named."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=ErrorCode.SERVER_ERROR)


class ConnectionClosed(StreamcoreError):
    """The peer went away. Adapters translate their framework's variant into this one.

    Attributes:
        code: the WebSocket close code when there was one (1006: no close frame).
        reason: the close reason, if any.
    """

    # Deliberately not StreamcoreError's ERROR code: as in the WebSocket libraries' own
    # ConnectionClosed, ``code`` is the close code (an int), an incompatible override.
    code: int | None  # type: ignore[assignment]

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed (code {code})" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # keep pickling (and copies across processes) working
        return (type(self), (self.code, self.reason))


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection broke or closed with an error code."""
