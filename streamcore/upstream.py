"""How a failure of the model's API becomes an ``ERROR`` the client can act on.

Status codes decide first, because every SDK reports them and they mean the same thing
everywhere; exception types only fill in when there is no status (timeouts, broken
connections). The messages are ours, not the upstream's: they never echo keys or URLs.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any, Mapping

from .errors import ProviderError
from .protocol import ErrorCode

__all__ = ["error_for_status", "retry_after_ms", "error_for_exception", "stop_reason", "chat_messages"]

# OpenAI-style finish reasons as the spec's stop reasons.
_FINISH = {"stop": "complete", "length": "length", "tool_calls": "complete", "function_call": "complete",
           "content_filter": "error"}


def stop_reason(finish: str | None) -> str:
    """The spec's ``stopReason`` for an OpenAI-style ``finish_reason`` (None: complete)."""
    return _FINISH.get(finish or "stop", "complete")


def chat_messages(request: Any) -> list[dict[str, str]]:
    """A request's messages in the OpenAI chat format, the client's ``context`` included.

    The context travels as a system message just before the user's last message.
    """
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.context is not None:
        messages.insert(
            len(messages) - 1,
            {"role": "system", "content": "Context from the client: " + json.dumps(request.context, ensure_ascii=False)},
        )
    return messages


def retry_after_ms(headers: Mapping[str, str] | None) -> int | None:
    """Milliseconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    get = headers.get
    value = get("retry-after-ms") or get("Retry-After-Ms")
    if value:
        try:
            return max(0, math.ceil(float(value)))
        except ValueError:
            pass
    value = get("retry-after") or get("Retry-After")
    if not value:
        return None
    try:
        return max(0, math.ceil(float(value) * 1000))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        if when is None:
            return None
        return max(0, math.ceil((when.timestamp() - time.time()) * 1000))


def error_for_status(
    status: int, *, headers: Mapping[str, str] | None = None, kind: str = ""
) -> ProviderError:
    """The :class:`ProviderError` for an upstream HTTP status.

    Args:
        status: the upstream status code.
        headers: the upstream response headers (for ``retry-after``).
        kind: a short, safe description of the failure (e.g. "context window exceeded").
    """
    detail = f": {kind}" if kind else ""
    if status == 429:
        return ProviderError(
            f"the model provider is rate limiting requests{detail}",
            code=ErrorCode.RATE_LIMIT,
            retry_after_ms=retry_after_ms(headers),
        )
    if status in (408, 504):
        return ProviderError(f"the model provider timed out{detail}", code=ErrorCode.TIMEOUT)
    if status in (401, 403, 404):
        # The server's own key or model is wrong: the client can do nothing about it, and
        # AUTH_FAILED would wrongly blame the client's token.
        return ProviderError(
            f"the model provider refused the server's credentials or model ({status}); "
            "the server is misconfigured",
            retryable=False,
            misconfigured=True,
        )
    if status in (400, 413, 422):
        return ProviderError(
            f"the model provider rejected the request{detail or ' as invalid'}",
            code=ErrorCode.INVALID_MESSAGE,
        )
    return ProviderError(f"the model provider failed ({status}){detail}")


def error_for_exception(exc: BaseException, *, midway: bool = False) -> ProviderError:
    """The :class:`ProviderError` for any exception an SDK raised.

    Args:
        exc: the exception; its ``status_code`` (and ``response.headers``) are used if set.
        midway: the stream had already started (a break, not a refusal).
    """
    if isinstance(exc, ProviderError):
        return exc
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if isinstance(status, int) and not midway:
        # litellm keeps the upstream headers in litellm_response_headers; the OpenAI SDK
        # and httpx on the response.
        response = getattr(exc, "response", None)
        headers = (
            getattr(exc, "litellm_response_headers", None)
            or getattr(response, "headers", None)
            or getattr(exc, "headers", None)
        )
        kind = ""
        if "ContextWindow" in name:
            kind = "context window exceeded"
        elif "ContentPolicy" in name:
            kind = "content policy violation"
        return error_for_status(status, headers=headers, kind=kind)
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return ProviderError("the model provider timed out", code=ErrorCode.TIMEOUT)
    if midway:
        return ProviderError("the model provider's stream broke off")
    return ProviderError(f"the model provider could not be reached ({name})")


