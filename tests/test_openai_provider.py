"""The `openai` provider against a local OpenAI-format server (the paid API's stand-in)."""

from __future__ import annotations

import anyio
import pytest

from streamcore import ChatMessage, GenerationRequest, ProviderError, load_provider
from streamcore.testing import FakeOpenAI

from .helpers import check_stream, make_engine
from .test_engine import session

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api():
    async with FakeOpenAI(slow_seconds=30) as server:
        yield server


def provider(api, model="ok", **options):
    return load_provider("openai", model=model, options={"base_url": api.base_url, **options})


async def collect(p, **fields):
    return [x async for x in p.stream(GenerationRequest([ChatMessage("user", "bonjour")], **fields))]


async def test_plain_stream_with_usage_and_key_from_env(api):
    items = await collect(provider(api, temperature=0.2))
    assert "".join(x for x in items if isinstance(x, str)) == api.text
    assert items[-1].finish_reason == "complete" and items[-1].usage.totalTokens == 5 + len(api.pieces("ok"))
    body = api.requests[0]
    assert body["stream"] is True and body["temperature"] == 0.2 and body["model"] == "ok"
    assert body["stream_options"] == {"include_usage": True}


async def test_error_mapping(api):
    cases = {
        "rate-limit": ("RATE_LIMIT", True),
        "unauthorized": ("GENERATION_FAILED", False),
        "forbidden": ("GENERATION_FAILED", False),
        "not-found": ("GENERATION_FAILED", False),
        "server-error": ("GENERATION_FAILED", True),
        "bad-request": ("INVALID_MESSAGE", False),
    }
    for model, (code, retryable) in cases.items():
        with pytest.raises(ProviderError) as info:
            await collect(provider(api, model))
        assert (info.value.code, info.value.retryable) == (code, retryable), model
        if model == "rate-limit":
            assert info.value.retry_after_ms == 7000
        if model == "unauthorized":
            assert info.value.misconfigured and "sk-test" not in info.value.message
    assert len(api.requests) == len(cases)  # no retries here


async def test_break_midway_through_the_engine(api):
    engine = make_engine(None, provider={"name": "openai", "model": "break", "options": {"base_url": api.base_url}})
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"}, id="b")
        frames = await c.receive_until("AI_MESSAGE_END")
    err = next(f["data"] for f in frames if f["type"] == "ERROR")
    assert err["code"] == "GENERATION_FAILED" and err["retryable"] is True
    end = check_stream(frames)
    assert end["stopReason"] == "error" and end["content"] == "".join(api.pieces("break")[: api.break_after])


async def test_slow_start_times_out_and_closes_upstream(api):
    engine = make_engine(
        None, provider={"name": "openai", "model": "slow", "options": {"base_url": api.base_url}},
        limits={"first_chunk_timeout": 0.5},
    )
    async with session(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        frames = await c.receive_until("AI_MESSAGE_END")
        with anyio.fail_after(10):
            while api.closed_early < 1:
                await anyio.sleep(0.02)
    assert frames[-1]["data"]["stopReason"] == "timeout"


async def test_stop_closes_upstream_and_structured_output():
    async with FakeOpenAI(delay=0.05, chunks=200) as api:
        engine = make_engine(None, provider={"name": "openai", "model": "ok", "options": {"base_url": api.base_url}})
        async with session(engine) as c:
            await c.send("USER_MESSAGE", {"content": "hi"})
            first = await c.receive_until("AI_MESSAGE_CHUNK")
            await c.send("STOP_GENERATION", {})
            end = check_stream(first + await c.receive_until("AI_MESSAGE_END"))
            assert end["stopReason"] == "user_cancelled"
            with anyio.fail_after(10):
                while api.closed_early < 1:
                    await anyio.sleep(0.02)
    async with FakeOpenAI(json_text='{"title": "T", "description": "D", "steps": [{"title": "S"}]}') as api:
        engine = make_engine(None, provider={"name": "openai", "model": "json", "options": {"base_url": api.base_url}})
        async with session(engine) as c:
            await c.send("GENERATE_OBJECTIVE", {"prompt": "p"})
            frames = await c.receive_until("OBJECTIVE_GENERATED")
        assert frames[-1]["data"]["objective"]["title"] == "T"
        assert api.requests[-1]["response_format"] == {"type": "json_object"}


async def test_unreachable_endpoint():
    p = load_provider("openai", model="m", options={"base_url": "http://127.0.0.1:9/v1", "timeout": 2})
    with pytest.raises(ProviderError) as info:
        await collect(p)
    assert info.value.code == "GENERATION_FAILED" and info.value.retryable


def test_model_is_required():
    from streamcore import ConfigError

    with pytest.raises(ConfigError, match="needs a model"):
        load_provider("openai")
