"""The ``openai`` provider: any OpenAI-compatible streaming endpoint, read directly.

OpenAI, vLLM, Ollama, llama.cpp's server, Groq, Together, OpenRouter, DeepSeek, LiteLLM's
proxy... anything that speaks ``POST {base_url}/chat/completions`` with ``stream: true``.
It parses the server-sent events itself, straight from the response bytes, and decodes
each event with msgspec into only the fields it needs, on one pooled
``httpx.AsyncClient``, so a chunk costs a few microseconds instead of the hundreds an SDK
wrapper spends.

Configuration::

    [provider]
    name = "openai"
    model = "gpt-4o-mini"
    options = { base_url = "http://127.0.0.1:8080/v1", api_key_env = "OPENAI_API_KEY", temperature = 0.3 }

Reasoning models: ``delta.reasoning_content`` (DeepSeek, LiteLLM's proxy, older vLLM) and
``delta.reasoning`` (vLLM, OpenRouter, Ollama) become :class:`~streamcore.events.Reasoning`
deltas, never answer text; ``usage.completion_tokens_details.reasoning_tokens`` is
reported as ``Usage.reasoning_tokens``.

Hostile or broken upstreams cannot hold more than a bounded amount of memory: one SSE
line, and the data of one event, are capped at ``max_line_bytes`` (default 1 MiB); an
error body is read up to 64 KiB; the stream is asked not to be compressed. An error event
sent inside a ``200`` stream (``{"error": {...}}``, as vLLM, OpenRouter and LiteLLM's proxy
do) fails the reply with ``GENERATION_FAILED`` instead of ending it ``complete`` and
truncated.

Same error mapping and cancellation guarantees as the litellm provider: failures become
:class:`~streamcore.errors.ProviderError` by status code first, the response is always
closed (shielded from cancellation) on stop, timeout, disconnect or error, and nothing
retries here (clients retry on ``retryable`` errors). Works under any anyio backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any, Union

import anyio
import anyio.lowlevel
import msgspec

from streamcore.errors import ConfigError, ProviderError
from streamcore.events import Completion, Reasoning, Usage
from streamcore.provider import GenerationRequest
from streamcore.upstream import (
    chat_messages,
    error_for_event,
    error_for_exception,
    error_for_status,
    error_kind,
    stop_reason,
)

__all__ = ["OpenAIProvider", "MAX_LINE_BYTES", "MAX_ERROR_BODY"]

#: Default cap on one SSE line and on the data of one event.
MAX_LINE_BYTES = 1 << 20
#: How much of an error response's body is read (to name the failure), at most.
MAX_ERROR_BODY = 64 << 10


class _Delta(msgspec.Struct, frozen=True):
    content: Union[str, None] = None
    reasoning_content: Union[str, None] = None
    # Any: a server that sends something other than text here must not fail the reply.
    reasoning: Any = None


class _Choice(msgspec.Struct):
    delta: _Delta = _Delta()
    finish_reason: Union[str, None] = None


class _Details(msgspec.Struct):
    reasoning_tokens: Union[int, None] = None


class _Usage(msgspec.Struct):
    prompt_tokens: Union[int, None] = None
    completion_tokens: Union[int, None] = None
    total_tokens: Union[int, None] = None
    completion_tokens_details: Union[_Details, None] = None


class _Event(msgspec.Struct):
    """The fields of a chat.completion.chunk this provider reads; the rest is skipped."""

    choices: list[_Choice] = []
    usage: Union[_Usage, None] = None
    model: Union[str, None] = None
    error: Any = None


_decode_event = msgspec.json.Decoder(_Event).decode
_encode_body = msgspec.json.Encoder().encode


def _usage(u: _Usage) -> Usage:
    details = u.completion_tokens_details
    return Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens,
                 details.reasoning_tokens if details is not None else None)


def _too_long(limit: int) -> ProviderError:
    return ProviderError(f"the model provider sent an event line longer than {limit} bytes")


def _loop_token() -> Any:
    """What identifies the running event loop (asyncio's loop, trio's token...)."""
    current = getattr(anyio.lowlevel, "current_token", None)  # anyio >= 4.11
    return current().native_token if current is not None else None


class OpenAIProvider:
    """Streams from an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the model name sent upstream.
        base_url: the API root (default ``https://api.openai.com/v1``).
        api_key_env: the environment variable holding the key, read at each call
            (default ``OPENAI_API_KEY``; an endpoint without auth may leave it unset).
        timeout: seconds to connect and between bytes of the stream.
        structured_output: send ``response_format: json_object`` when JSON is needed.
        headers: extra request headers (no secrets: those belong in the environment).
        max_line_bytes: the longest SSE line (and event data) accepted; a longer one fails
            the reply with ``GENERATION_FAILED`` (default 1 MiB).
        **options: added to every request body (``temperature``, ``max_tokens``...).
    """

    name = "openai"

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        structured_output: bool = True,
        headers: dict[str, str] | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        **options: Any,
    ) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError("the openai provider needs httpx: pip install 'streamcore-llm[openai]'") from None
        if not model:
            raise ConfigError("the openai provider needs a model (provider.model)")
        if not isinstance(max_line_bytes, int) or max_line_bytes < 1024:
            raise ConfigError("openai provider: max_line_bytes must be an integer >= 1024")
        self._httpx = httpx
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.timeout = httpx.Timeout(timeout)
        self.structured_output = structured_output
        # identity: a compressed stream could inflate one network read into megabytes.
        self.headers = {"content-type": "application/json", "accept": "text/event-stream",
                        "accept-encoding": "identity", **(headers or {})}
        self.max_line_bytes = max_line_bytes
        self.options = options
        self._http: Any = None
        self._http_loop: Any = None

    def _client(self) -> Any:
        """The pooled client, created on first use (an httpx pool never crosses loops)."""
        loop = _loop_token()
        client = self._http
        if client is None or loop is not self._http_loop:
            # A client of another (finished) loop is dropped, not closed: its connections
            # belong to that loop and go with it.
            client = self._http = self._httpx.AsyncClient(
                timeout=self.timeout, limits=self._httpx.Limits(max_keepalive_connections=100)
            )
            self._http_loop = loop
        return client

    async def aclose(self) -> None:
        """Close the pooled HTTP client (the engine calls this when it closes)."""
        client, self._http, self._http_loop = self._http, None, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def _body(self, request: GenerationRequest) -> bytes:
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": chat_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.options,
            **request.options,
        }
        if request.json_mode and self.structured_output:
            body.setdefault("response_format", {"type": "json_object"})
        return _encode_body(body)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Union[str, Reasoning, Completion]]:
        headers = self.headers
        key = os.environ.get(self.api_key_env)
        if key:
            headers = {**headers, "authorization": f"Bearer {key}"}
        client = self._client()
        http_request = client.build_request("POST", self.url, content=self._body(request), headers=headers)
        try:
            response = await client.send(http_request, stream=True)
        except Exception as exc:
            raise error_for_exception(exc) from exc
        started = False
        try:
            if response.status_code >= 400:
                body = await _read_bounded(response, MAX_ERROR_BODY)
                raise error_for_status(response.status_code, headers=response.headers, kind=error_kind(_json(body)))
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                # Not a stream: an error object (some proxies answer 200 with one).
                body = _json(await _read_bounded(response, MAX_ERROR_BODY))
                if isinstance(body, dict) and "error" in body:
                    raise error_for_event(body["error"])
                raise ProviderError("the model provider answered without an event stream")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            # Raw bytes when uncompressed (the usual case, and the cheaper path); a server
            # that compresses anyway is decoded by httpx, each piece checked below.
            chunks = response.aiter_raw() if encoding in ("identity", "") else response.aiter_bytes()

            limit = self.max_line_bytes
            decode = _decode_event
            finish = None
            usage = None
            model = None
            done = False
            held: list[bytes] = []  # an unfinished line, in pieces (joined once: linear)
            held_len = 0
            cr = False  # the last piece ended with "\r": its "\n" may start the next one
            data = None  # the data of the event being read (its first line)
            parts: list[bytes] = []  # all its data lines, when it has several
            parts_len = 0
            error_event = False  # the event being read is named "error"
            eof = False
            it = chunks.__aiter__()
            # Server-sent events (WHATWG): lines end with \n, \r\n or \r; "data:" lines
            # accumulate until a blank line dispatches the event; ":" lines are comments.
            while not done:
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    if eof:
                        break
                    # End of body: an unfinished line is a break (dropped) unless a "\r"
                    # ended it; an event whose data is complete but misses its blank line
                    # is dispatched.
                    if not cr:
                        held = []
                    eof, cr, chunk = True, False, b"\n\n"
                if cr:
                    chunk = b"\r" + chunk
                    cr = False
                if b"\r" in chunk:
                    if chunk[-1] == 13:
                        cr = True
                        chunk = chunk[:-1]
                    chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                lines = chunk.split(b"\n")
                if held:
                    first = lines[0]
                    held_len += len(first)
                    if held_len > limit:
                        raise _too_long(limit)
                    held.append(first)
                    if len(lines) == 1:
                        continue
                    lines[0] = b"".join(held)
                    held = []
                tail = lines.pop()
                if tail:
                    held_len = len(tail)
                    if held_len > limit:
                        raise _too_long(limit)
                    held = [tail]
                if len(chunk) > limit and max(map(len, lines), default=0) > limit:
                    raise _too_long(limit)
                for line in lines:
                    if line:
                        if line[:5] == b"data:":
                            # The space after "data:" is kept: JSON ignores it (cheaper).
                            if data is None:
                                data = line[5:]
                            else:  # more data lines: joined once, at the blank line
                                if not parts:
                                    parts.append(data)
                                    parts_len = len(data)
                                value = line[5:]
                                parts.append(value)
                                parts_len += len(value) + 1
                                if parts_len > limit:
                                    raise _too_long(limit)
                        elif line[:6] == b"event:":
                            error_event = line[6:].strip() == b"error"
                        # comments (": keep-alive"), id:, retry: and unknown fields: skipped
                        continue
                    if data is None:
                        error_event = False
                        continue
                    # A blank line: dispatch the event. The per-event work stays inline
                    # (no helper shared with the litellm provider): it runs tens of
                    # thousands of times a second.
                    if parts:
                        payload = b"\n".join(parts)
                        parts = []
                    else:
                        payload = data
                    data = None
                    if payload == b" [DONE]" or payload == b"[DONE]":
                        done = True
                        break
                    if error_event:
                        raise error_for_event(_json(payload))
                    event = decode(payload)
                    choices = event.choices
                    if choices:
                        choice = choices[0]
                        delta = choice.delta
                        thought = delta.reasoning_content or delta.reasoning
                        if thought and type(thought) is str:
                            started = True
                            yield Reasoning(thought)
                        text = delta.content
                        if text:
                            started = True
                            yield text
                        if choice.finish_reason:
                            finish = choice.finish_reason
                    elif event.error is not None:
                        raise error_for_event(event.error)
                    if event.usage is not None:
                        usage = _usage(event.usage)
                    if event.model:
                        model = event.model
            if not done and finish is None:
                raise ProviderError("the model provider's stream broke off")
            yield Completion(stop_reason(finish), usage, model or request.model or self.model)
        except ProviderError:
            raise
        except msgspec.DecodeError as exc:
            raise ProviderError(f"the model provider sent an invalid event: {exc}") from None
        except Exception as exc:
            raise error_for_exception(exc, midway=started) from exc
        finally:
            # Release the connection even when cancelled (stop, timeout, disconnect).
            with anyio.CancelScope(shield=True):
                await response.aclose()


async def _read_bounded(response: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of a response's body (the rest is never read)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def _json(body: bytes) -> Any:
    """``body`` decoded as JSON, or None."""
    try:
        return json.loads(body)
    except ValueError:
        return None
