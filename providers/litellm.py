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

Options are checked when the provider is created: a key that is neither a keyword of
``litellm.acompletion`` nor one of litellm's own parameters (``temprature``...) is refused,
with the closest known name suggested. A provider-specific keyword that litellm forwards
as is but does not list can be allowed by name: ``allow_options = ["my_param"]``.

Reasoning models: the delta's ``reasoning_content`` (litellm's name for every provider's
reasoning or "thinking" text) becomes :class:`~streamcore.events.Reasoning` deltas, never
answer text; ``usage.completion_tokens_details.reasoning_tokens`` is reported.

Retries live in exactly one layer: litellm's own (``num_retries`` in options or in the
router); the SDK's hidden retries are turned off (``max_retries = 0``), and the engine never
retries (clients retry on ``retryable`` errors). litellm is imported when the provider is
created, never by ``import streamcore``.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any, Union

from streamcore.errors import ConfigError, ProviderError
from streamcore.events import Completion, Reasoning, Usage
from streamcore.provider import GenerationRequest, close_stream
from streamcore.upstream import chat_messages, error_for_exception, stop_reason

__all__ = ["LiteLLMProvider"]

# Keywords litellm forwards to providers that its own lists do not name, but that are
# common enough to accept without allow_options.
_COMMON_EXTRA = frozenset({
    "extra_body", "drop_params", "additional_drop_params", "top_k", "min_p", "repetition_penalty",
})
_known_options: frozenset[str] | None = None


def _known(litellm: Any) -> frozenset[str]:
    """Every keyword ``litellm.acompletion`` is documented to take (computed once)."""
    global _known_options
    if _known_options is None:
        names = set(_COMMON_EXTRA)
        params = inspect.signature(litellm.acompletion).parameters.values()
        names.update(p.name for p in params if p.kind is not p.VAR_KEYWORD)
        names.update(getattr(litellm, "OPENAI_CHAT_COMPLETION_PARAMS", ()) or ())
        try:
            from litellm.types.utils import all_litellm_params
        except ImportError:  # pragma: no cover - depends on litellm's version
            all_litellm_params = []
        names.update(all_litellm_params)
        names.difference_update({"self", "model", "messages", "stream"})
        _known_options = frozenset(names)
    return _known_options


def _unknown_option(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"litellm provider: unknown option {key!r}{hint}; a provider-specific keyword that "
        f"litellm forwards as is can be allowed with allow_options = [{key!r}]"
    )


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
        allow_options: option names accepted although litellm does not list them
            (provider-specific keywords it forwards as is).
        **options: passed to every ``acompletion`` call (``temperature``, ``api_base``,
            ``mock_response``, ``timeout``...); unknown names are refused.

    Raises:
        ConfigError: an unknown option (the closest known name is suggested), a bad router.
    """

    name = "litellm"

    def __init__(
        self,
        *,
        model: str | None = None,
        router: dict[str, Any] | None = None,
        structured_output: bool = True,
        api_key_env: str | None = None,
        allow_options: list[str] | tuple[str, ...] = (),
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
        self._wrapper = getattr(litellm, "CustomStreamWrapper", None)
        self._allowed = _known(litellm) | frozenset(allow_options)
        for key in options:
            if key not in self._allowed:
                raise ConfigError(_unknown_option(key, self._allowed))
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

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Union[str, Reasoning, Completion]]:
        if request.options:
            for key in request.options:
                if key not in self._allowed:
                    raise ProviderError(_unknown_option(key, self._allowed), retryable=False, misconfigured=True)
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
                    delta = choice.delta
                    # litellm drops the attribute from deltas that carry no reasoning.
                    thought = getattr(delta, "reasoning_content", None)
                    if thought and type(thought) is str:
                        started = True
                        yield Reasoning(thought)
                    text = delta.content
                    if text:
                        started = True
                        yield text
                    if choice.finish_reason:
                        finish = choice.finish_reason
                u = getattr(chunk, "usage", None)
                if u is not None and getattr(u, "total_tokens", None):
                    details = getattr(u, "completion_tokens_details", None)
                    usage = Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens,
                                  getattr(details, "reasoning_tokens", None))
            if (
                type(response) is self._wrapper
                and response.received_finish_reason is None
                and response.custom_llm_provider == "openai"
                and "mock_response" not in kwargs
            ):
                # An OpenAI-compatible upstream whose stream ended without a finish reason
                # (cut short, or a JSON error body instead of a stream): litellm makes up
                # "stop" for it, which would end a truncated reply "complete". (Checked on
                # litellm's plain stream wrapper only: a Router's does not keep it.)
                raise ProviderError("the model provider's stream broke off")
        except Exception as exc:
            raise error_for_exception(exc, midway=started) from exc
        finally:
            await close_stream(response)
        yield Completion(
            finish_reason=stop_reason(finish),
            usage=usage,
            model=reported_model or model,
        )
