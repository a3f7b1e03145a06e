"""The ``litellm`` provider: any litellm model string, or a Router with fallbacks.

Configuration::

    [provider]
    name = "litellm"
    model = "openai/gpt-4o-mini"
    options = { temperature = 0.3, api_base = "http://127.0.0.1:8080/v1" }

    # or a Router: model_list and fallbacks as litellm documents them
    [provider.options.router]
    model_list = [ ... ]
    fallbacks = [ { "primary" = ["backup"] } ]

Retries live in exactly one layer: litellm's own (``num_retries`` in options or in the
router); the SDK's hidden retries are turned off (``max_retries = 0``), and the engine never
retries (clients retry on ``retryable`` errors). litellm is imported when the provider is
created, never by ``import streamcore``.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator, Union

from streamcore.errors import ConfigError
from streamcore.protocol import Usage
from streamcore.provider import Completion, GenerationRequest, close_stream
from streamcore.upstream import chat_messages, error_for_exception, stop_reason

__all__ = ["LiteLLMProvider"]


class LiteLLMProvider:
    """Streams through ``litellm.acompletion`` (or ``Router.acompletion``).

    Args:
        model: a litellm model string (``openai/gpt-4o-mini``, ``anthropic/...``) or, with a
            router, a ``model_name`` of its ``model_list``.
        router: keyword arguments of ``litellm.Router`` (``model_list``, ``fallbacks``...).
        api_key_env: the environment variable holding the API key, read at each call
            (litellm also reads the usual ``OPENAI_API_KEY``... by itself).
        structured_output: ask for ``response_format: json_object`` when the engine needs
            JSON (GENERATE_OBJECTIVE); models that do not support it ignore it.
        **options: passed to every ``acompletion`` call (``temperature``, ``api_base``,
            ``mock_response``, ``timeout``...).
    """

    name = "litellm"

    def __init__(
        self,
        *,
        model: str | None = None,
        router: dict[str, Any] | None = None,
        structured_output: bool = True,
        api_key_env: str | None = None,
        **options: Any,
    ) -> None:
        # litellm fetches its model cost map from the network at import unless told not
        # to; a server must not stall on that (and has no network in many deployments).
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError("the litellm provider needs litellm: pip install 'streamcore-llm[litellm]'") from None
        self._litellm = litellm
        self._router = None
        if router is not None:
            router = dict(router)
            router.setdefault("num_retries", 0)
            try:
                self._router = litellm.Router(**router)
            except Exception as exc:
                raise ConfigError(f"litellm provider: invalid router: {exc}") from None
            if model is None:
                names = self._router.get_model_names()
                model = names[0] if names else None
        if not model:
            raise ConfigError("the litellm provider needs a model (provider.model)")
        self.model = model
        self.structured_output = structured_output
        options.setdefault("max_retries", 0)
        self.options = options
        self.api_key_env = api_key_env

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Union[str, Completion]]:
        kwargs = {**self.options, **request.options}
        if self.api_key_env:
            kwargs["api_key"] = os.environ.get(self.api_key_env, "")
        if request.json_mode and self.structured_output:
            kwargs.setdefault("response_format", {"type": "json_object"})
            kwargs.setdefault("drop_params", True)
        kwargs.setdefault("stream_options", {"include_usage": True})
        messages = chat_messages(request)
        model = request.model or self.model
        call = self._router.acompletion if self._router is not None else self._litellm.acompletion
        try:
            response = await call(model=model, messages=messages, stream=True, **kwargs)
        except Exception as exc:
            raise error_for_exception(exc) from exc
        finish = None
        usage = None
        reported_model = None
        started = False
        try:
            async for chunk in response:
                reported_model = getattr(chunk, "model", None) or reported_model
                choices = chunk.choices
                if choices:
                    choice = choices[0]
                    text = choice.delta.content
                    if text:
                        started = True
                        yield text
                    if choice.finish_reason:
                        finish = choice.finish_reason
                u = getattr(chunk, "usage", None)
                if u is not None and getattr(u, "total_tokens", None):
                    usage = Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
        except Exception as exc:
            raise error_for_exception(exc, midway=started) from exc
        finally:
            await close_stream(response)
        yield Completion(
            finish_reason=stop_reason(finish),
            usage=usage,
            model=reported_model or model,
        )
