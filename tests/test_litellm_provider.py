"""The litellm provider through litellm's real streaming code.

`mock_response` exercises the plain path and errors raised before the first chunk; a local
OpenAI-format server on 127.0.0.1 (streamcore.testing.FakeOpenAI) stands in for the paid
API at the HTTP boundary for 429 with retry-after, 401, 5xx, breaks midway and slow starts.
The provider is driven directly (``provider.stream(request)``). Hostile upstreams are in
test_providers_hostile.py, reasoning in test_provider_reasoning.py.
"""

from __future__ import annotations

import anyio
import pytest

from streamcore import ChatMessage, ConfigError, GenerationRequest, ProviderError, load_provider
from streamcore.events import Completion, Usage
from streamcore.provider import close_stream
from streamcore.testing import FakeOpenAI

pytestmark = pytest.mark.anyio

WAIT = 15  # seconds: the bound of every wait


def request(content="bonjour", **fields):
    return GenerationRequest([ChatMessage("user", content)], **fields)


async def collect(provider, req=None):
    with anyio.fail_after(WAIT):
        return [x async for x in provider.stream(req or request())]


async def test_mock_response_streams_text_and_completion():
    provider = load_provider("litellm", model="openai/gpt-4o-mini", options={"mock_response": "Voici une réponse."})
    items = await collect(provider)
    text = [x for x in items if type(x) is str]
    assert "".join(text) == "Voici une réponse." and len(text) > 1
    end = items[-1]
    assert type(end) is Completion and end.finish_reason == "complete"
    assert type(end.usage) is Usage and end.usage.total_tokens > 0
    assert end.model == "gpt-4o-mini" or end.model == "openai/gpt-4o-mini"


@pytest.mark.parametrize(
    "mock, code, retryable",
    [
        ("litellm.RateLimitError", "RATE_LIMIT", True),
        ("litellm.ContextWindowExceededError", "INVALID_MESSAGE", False),
        ("litellm.InternalServerError", "GENERATION_FAILED", True),
    ],
)
async def test_mock_errors_before_first_chunk_are_mapped(mock, code, retryable):
    provider = load_provider("litellm", model="openai/gpt-4o-mini", options={"mock_response": mock})
    with pytest.raises(ProviderError) as info:
        await collect(provider)
    assert info.value.code == code and info.value.retryable is retryable
    if "ContextWindow" in mock:
        assert "context window" in info.value.message


def test_unknown_options_are_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown option 'temprature' \(did you mean 'temperature'\?\)"):
        load_provider("litellm", model="openai/x", options={"temprature": 0.2})
    with pytest.raises(ConfigError, match="unknown option 'my_param'.*allow_options"):
        load_provider("litellm", model="openai/x", options={"my_param": 1})
    # litellm's own keywords, acompletion's, common provider-specific ones, and allowed names
    provider = load_provider(
        "litellm",
        model="openai/x",
        options={"temperature": 0.2, "api_base": "http://127.0.0.1:9/v1", "timeout": 3, "num_retries": 1,
                 "mock_response": "x", "top_k": 3, "extra_body": {}, "reasoning_effort": "low",
                 "my_param": 1, "allow_options": ["my_param"]},
    )
    assert provider.options["my_param"] == 1 and "allow_options" not in provider.options


async def test_unknown_per_request_option_fails_the_request_not_silently():
    provider = load_provider("litellm", model="openai/x", options={"mock_response": "x"})
    with pytest.raises(ProviderError) as info:
        await collect(provider, request(options={"temprature": 1}))
    assert info.value.misconfigured and not info.value.retryable and "temperature" in info.value.message


@pytest.fixture
async def api():
    async with FakeOpenAI(slow_seconds=30) as server:
        yield server


def local(api, model, **options):
    return load_provider("litellm", model=f"openai/{model}", options={"api_base": api.base_url, **options})


async def test_local_stream_plain(api):
    items = await collect(local(api, "ok"))
    assert "".join(x for x in items if type(x) is str) == api.text
    assert items[-1].usage.completion_tokens == len(api.pieces("ok"))
    assert items[-1].finish_reason == "complete"
    assert api.requests[0]["stream"] is True and api.requests[0]["messages"][-1]["content"] == "bonjour"


async def test_client_context_has_user_authority_never_system(api):
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "bonjour")]
    await collect(local(api, "ok"), GenerationRequest(messages, context={"page": 3}))
    sent = api.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"] and sent[0]["content"] == "Be brief."
    assert sent[1]["content"].startswith("<client_context>") and sent[1]["content"].endswith("\n\nbonjour")


async def test_429_maps_to_rate_limit_with_retry_after(api):
    with pytest.raises(ProviderError) as info:
        await collect(local(api, "rate-limit"))
    assert info.value.code == "RATE_LIMIT" and info.value.retryable and info.value.retry_after_ms == 7000
    assert len(api.requests) == 1  # no hidden SDK retries: retries live in one layer


@pytest.mark.parametrize("model, status", [("unauthorized", 401), ("forbidden", 403), ("not-found", 404)])
async def test_upstream_auth_errors_are_server_misconfiguration_not_auth_failed(api, model, status):
    with pytest.raises(ProviderError) as info:
        await collect(local(api, model))
    err = info.value
    assert err.code == "GENERATION_FAILED" and err.retryable is False and err.misconfigured
    assert str(status) in err.message and "sk-test" not in err.message


async def test_5xx_and_bad_request(api):
    with pytest.raises(ProviderError) as info:
        await collect(local(api, "server-error"))
    assert info.value.code == "GENERATION_FAILED" and info.value.retryable
    with pytest.raises(ProviderError) as info:
        await collect(local(api, "bad-request"))
    assert info.value.code == "INVALID_MESSAGE" and not info.value.retryable


async def test_stream_breaking_midway_keeps_the_text_and_fails(api):
    items = []
    with pytest.raises(ProviderError) as info:
        with anyio.fail_after(WAIT):
            async for item in local(api, "break").stream(request()):
                items.append(item)
    assert info.value.code == "GENERATION_FAILED" and info.value.retryable
    assert "".join(items) == "".join(api.pieces("break")[: api.break_after])


async def test_cancelled_before_the_first_chunk_closes_upstream(api):
    stream = local(api, "slow").stream(request())
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream.__anext__)
        with anyio.fail_after(WAIT):
            await api.wait_requests(1)
        tg.cancel_scope.cancel()  # the engine's first-chunk timeout, a stop, a disconnect
    assert await close_stream(stream)
    with anyio.fail_after(WAIT):
        await api.wait_closed_early(1)


async def test_stop_midway_closes_the_upstream_stream():
    async with FakeOpenAI(delay=0.05, chunks=200) as api:
        stream = local(api, "ok").stream(request())
        with anyio.fail_after(WAIT):
            first = await stream.__anext__()
            assert first and type(first) is str
            assert await close_stream(stream)  # what the engine does on STOP_GENERATION
            await api.wait_closed_early(1)


async def test_router_with_fallbacks(api):
    router = {
        "model_list": [
            {"model_name": "primary", "litellm_params": {"model": "openai/server-error", "api_base": api.base_url}},
            {"model_name": "backup", "litellm_params": {"model": "openai/ok", "api_base": api.base_url}},
        ],
        "fallbacks": [{"primary": ["backup"]}],
    }
    provider = load_provider("litellm", model="primary", options={"router": router})
    items = await collect(provider)
    assert "".join(x for x in items if type(x) is str) == api.text
    assert [r["model"] for r in api.requests] == ["server-error", "ok"]


async def test_structured_output_asks_for_json(api):
    api.json_text = '{"title": "T", "description": "D", "steps": [{"title": "S"}]}'
    items = await collect(local(api, "json"), request("p", json_mode=True, purpose="objective"))
    assert "".join(x for x in items if type(x) is str) == api.json_text
    assert api.requests[0]["response_format"] == {"type": "json_object"}
