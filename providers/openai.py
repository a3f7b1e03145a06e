"""The ``openai`` provider: any OpenAI-compatible streaming endpoint, read directly.

OpenAI, vLLM, Ollama, llama.cpp's server, Groq, Together... anything that speaks
``POST {base_url}/chat/completions`` with ``stream: true``. It parses the server-sent
events itself and decodes each event with msgspec into only the fields it needs, on one
pooled ``httpx.AsyncClient`` per event loop, so a chunk costs a few microseconds instead of
the hundreds an SDK wrapper spends.

Configuration::

    [provider]
    name = "openai"
    model = "gpt-4o-mini"
    options = { base_url = "http://127.0.0.1:8080/v1", api_key_env = "OPENAI_API_KEY", temperature = 0.3 }

Same error mapping and cancellation guarantees as the litellm provider: failures become
:class:`~streamcore.errors.ProviderError` by status code first, the response is always
closed (shielded from cancellation) on stop, timeout, disconnect or error, and nothing
retries here (clients retry on ``retryable`` errors).
"""

from __future__ import annotations

import os
import weakref
from typing import Any, AsyncIterator, Union

import anyio
import msgspec

from streamcore.errors import ConfigError, ProviderError
from streamcore.protocol import Usage
from streamcore.provider import Completion, GenerationRequest
from streamcore.upstream import chat_messages, error_for_exception, error_for_status, stop_reason

__all__ = ["OpenAIProvider"]


class _Delta(msgspec.Struct, frozen=True):
    content: Union[str, None] = None


class _Choice(msgspec.Struct):
    delta: _Delta = _Delta()
    finish_reason: Union[str, None] = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Event(msgspec.Struct):
    """The fields of a chat.completion.chunk this provider reads; the rest is skipped."""

    choices: list[_Choice] = []
    usage: Union[_Usage, None] = None
    model: Union[str, None] = None


_decode_event = msgspec.json.Decoder(_Event).decode
_encode_body = msgspec.json.Encoder().encode


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
        **options: Any,
    ) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError("the openai provider needs httpx: pip install 'streamcore-llm[openai]'") from None
        if not model:
            raise ConfigError("the openai provider needs a model (provider.model)")
        self._httpx = httpx
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.timeout = httpx.Timeout(timeout)
        self.structured_output = structured_output
        self.headers = dict(headers or {})
        self.options = options
        # One pooled client per event loop: an httpx pool must not cross loops.
        self._clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def _client(self) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._httpx.AsyncClient(
                timeout=self.timeout, limits=self._httpx.Limits(max_keepalive_connections=100)
            )
        return client

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

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Union[str, Completion]]:
        headers = {"content-type": "application/json", "accept": "text/event-stream", **self.headers}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["authorization"] = f"Bearer {key}"
        client = self._client()
        http_request = client.build_request("POST", self.url, content=self._body(request), headers=headers)
        try:
            response = await client.send(http_request, stream=True)
        except Exception as exc:
            raise error_for_exception(exc) from exc
        started = False
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_for_status(response.status_code, headers=response.headers)
            finish = None
            usage = None
            model = None
            done = False
            buffer = b""
            decode = _decode_event
            async for data in response.aiter_bytes():
                buffer = buffer + data if buffer else data
                start = 0
                # Server-sent events: one "data: {...}" line per event; blank lines and
                # comments (": keep-alive") are skipped.
                while True:
                    end = buffer.find(b"\n", start)
                    if end == -1:
                        break
                    line = buffer[start:end]
                    start = end + 1
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    # The per-chunk work stays inline (no helper shared with the litellm
                    # provider): it runs tens of thousands of times a second.
                    event = decode(payload)
                    if event.choices:
                        choice = event.choices[0]
                        text = choice.delta.content
                        if text:
                            started = True
                            yield text
                        if choice.finish_reason:
                            finish = choice.finish_reason
                    if event.usage is not None:
                        u = event.usage
                        usage = Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
                    if event.model:
                        model = event.model
                buffer = buffer[start:] if start < len(buffer) else b""
                if done:
                    break
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
