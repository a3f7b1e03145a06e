"""The litellm provider through litellm's real streaming code.

`mock_response` exercises the plain path and errors raised before the first chunk; a local
OpenAI-format server on 127.0.0.1 (streamcore.testing.FakeOpenAI) stands in for the paid
API at the HTTP boundary for 429 with retry-after, 401, 5xx, breaks midway and slow starts.
"""

from __future__ import annotations

import anyio
import pytest

from streamcore import ChatMessage, GenerationRequest, ProviderError, load_provider
from streamcore.testing import FakeOpenAI

from .test_engine import session
from .helpers import check_stream, make_engine

pytestmark = pytest.mark.anyio


async def collect(provider, request=None):
    request = request or GenerationRequest([ChatMessage("user", "bonjour")])
    return [x async for x in provider.stream(request)]


async def test_mock_response_streams_text_and_completion():
    provider = load_provider("litellm", model="openai/gpt-4o-mini", options={"mock_response": "Voici une réponse."})
    items = await collect(provider)
    text = "".join(x for x in items if isinstance(x, str))
    assert text == "Voici une réponse." and len([x for x in items if isinstance(x, str)]) > 1
    assert items[-1].finish_reason == "complete" and items[-1].usage.totalTokens > 0


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


async def test_litellm_through_the_engine_with_mock_response():
    engine = make_engine(
        None, provider={"name": "litellm", "model": "openai/gpt-4o-mini", "options": {"mock_response": "Salut à toi"}}
    )
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        frames = await c.receive_until("AI_MESSAGE_END")
    end = check_stream(frames)
    assert end["content"] == "Salut à toi" and end["stopReason"] == "complete"
    assert frames[1]["data"]["model"] == "openai/gpt-4o-mini"


@pytest.fixture
async def api():
    async with FakeOpenAI(slow_seconds=30) as server:
        yield server


def local(api, model, **options):
    return load_provider("litellm", model=f"openai/{model}", options={"api_base": api.base_url, **options})


async def test_local_stream_plain(api):
    items = await collect(local(api, "ok"))
    assert "".join(x for x in items if isinstance(x, str)) == api.text
    assert items[-1].usage.completionTokens == len(api.pieces("ok"))
    assert api.requests[0]["stream"] is True and api.requests[0]["messages"][-1]["content"] == "bonjour"


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


async def test_stream_breaking_midway_through_the_engine(api):
    engine = make_engine(
        None, provider={"name": "litellm", "model": "openai/break", "options": {"api_base": api.base_url}}
    )
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"}, id="b")
        frames = await c.receive_until("AI_MESSAGE_END")
    err = next(f["data"] for f in frames if f["type"] == "ERROR")
    assert err["code"] == "GENERATION_FAILED" and err["retryable"] is True and err["requestId"] == "b"
    end = check_stream(frames)
    assert end["stopReason"] == "error" and end["content"] == "".join(api.pieces("break")[: api.break_after])


async def test_slow_start_hits_first_chunk_timeout_and_closes_upstream(api):
    engine = make_engine(
        None,
        provider={"name": "litellm", "model": "openai/slow", "options": {"api_base": api.base_url}},
        limits={"first_chunk_timeout": 0.5},
    )
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        frames = await c.receive_until("AI_MESSAGE_END")
        with anyio.fail_after(10):
            while api.closed_early < 1:  # the upstream sees the connection closed
                await anyio.sleep(0.02)
    assert next(f["data"]["code"] for f in frames if f["type"] == "ERROR") == "TIMEOUT"
    assert frames[-1]["data"]["stopReason"] == "timeout"


async def test_stop_generation_closes_the_upstream_stream():
    async with FakeOpenAI(delay=0.05, chunks=200) as api:
        engine = make_engine(
            None, provider={"name": "litellm", "model": "openai/ok", "options": {"api_base": api.base_url}}
        )
        async with session(engine) as c:
            await c.send("USER_MESSAGE", {"content": "hi"})
            first = await c.receive_until("AI_MESSAGE_CHUNK")
            await c.send("STOP_GENERATION", {"messageId": first[-1]["data"]["messageId"]})
            frames = first + await c.receive_until("AI_MESSAGE_END")
            with anyio.fail_after(10):
                while api.closed_early < 1:
                    await anyio.sleep(0.02)
    end = check_stream(frames)
    assert end["stopReason"] == "user_cancelled" and 0 < len(end["content"]) < len(api.text)


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
    assert "".join(x for x in items if isinstance(x, str)) == api.text
    assert [r["model"] for r in api.requests] == ["server-error", "ok"]


async def test_structured_output_asks_for_json(api):
    api.json_text = '{"title": "T", "description": "D", "steps": [{"title": "S"}]}'
    engine = make_engine(
        None, provider={"name": "litellm", "model": "openai/json", "options": {"api_base": api.base_url}}
    )
    async with session(engine) as c:
        await c.send("GENERATE_OBJECTIVE", {"prompt": "p"})
        frames = await c.receive_until("OBJECTIVE_GENERATED")
    assert frames[-1]["data"]["objective"]["title"] == "T"
    assert api.requests[0]["response_format"] == {"type": "json_object"}
