"""Exceptions that carry an ``ERROR`` code, so every layer can fail in the wire's terms."""

from __future__ import annotations

from .protocol import RETRYABLE, ErrorCode

__all__ = [
    "StreamcoreError",
    "ProtocolError",
    "ProviderError",
    "ConfigError",
    "ConnectionClosed",
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

    def __init__(self, message: str, *, request_id: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.request_id = request_id


class ProviderError(StreamcoreError):
    """A provider failed; the code says how (``GENERATION_FAILED``, ``TIMEOUT``...).

    Args:
        misconfigured: the server's own credentials or model are wrong; logged loudly.
    """

    code = ErrorCode.GENERATION_FAILED

    def __init__(self, message: str, *, misconfigured: bool = False, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.misconfigured = misconfigured


class ConfigError(ValueError):
    """The configuration is invalid; raised at start-up with the offending key named."""


class ConnectionClosed(Exception):
    """The peer went away. Adapters translate their framework's variant into this one."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
