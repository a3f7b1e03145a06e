"""Reasoning ("thinking") deltas: every provider yields them as ``Reasoning``, apart.

``Reasoning`` is a ``str`` subclass: consumers tell it from answer text by ``type(x) is
str``. The answer text never contains reasoning, and ``Usage.reasoning_tokens`` carries the
upstream's ``completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

import json
import re

import anyio
import pytest

from streamcore import ChatMessage, ConfigError, GenerationRequest, load_provider
from streamcore.events import Completion, Reasoning
from streamcore.provider import ObjectiveSpec, collect_text
from streamcore.testing import FakeOpenAI

pytestmark = pytest.mark.anyio

WAIT = 15  # seconds: the bound of every wait


def request(content="bonjour", **fields):
    return GenerationRequest([ChatMessage("user", content)], **fields)


async def collect(provider, req=None):
    with anyio.fail_after(WAIT):
        return [x async for x in provider.stream(req or request())]


def split(items):
    """(reasoning text, answer text, completion), checking the order on the way."""
    kinds = "".join("r" if type(x) is Reasoning else "t" if type(x) is str else "c" for x in items)
    assert re.fullmatch("r*t+c", kinds), kinds  # reasoning, then the answer, then the end
    reasoning = "".join(x for x in items if type(x) is Reasoning)
    answer = "".join(x for x in items if type(x) is str)
    return reasoning, answer, items[-1]


@pytest.fixture
async def api():
    async with FakeOpenAI() as server:
        yield server


def make(name, api, model):
    if name == "openai":
        return load_provider("openai", model=model, options={"base_url": api.base_url})
    return load_provider("litellm", model=f"openai/{model}", options={"api_base": api.base_url})


@pytest.mark.parametrize("name", ["openai", "litellm"])
@pytest.mark.parametrize("mode", ["reasoning", "reasoning-alt", "reasoning-both"])
async def test_http_providers_yield_reasoning_apart(api, name, mode):
    # reasoning_content (DeepSeek, LiteLLM's proxy), reasoning (vLLM, OpenRouter, Ollama),
    # or both carrying the same text (read once).
    reasoning, answer, end = split(await collect(make(name, api, mode)))
    assert reasoning == api.reasoning_text
    assert answer == api.text
    thoughts = len(api.reasoning_pieces())
    assert end.usage.reasoning_tokens == thoughts
    assert end.usage.completion_tokens == len(api.pieces("ok")) + thoughts
    assert end.finish_reason == "complete"


async def test_collect_text_keeps_only_the_answer(api):
    provider = make("openai", api, "reasoning")
    with anyio.fail_after(WAIT):
        assert await collect_text(provider, request()) == api.text


async def test_openai_without_reasoning_reports_none(api):
    _, answer, end = split(await collect(make("openai", api, "ok")))
    assert answer == api.text and end.usage.reasoning_tokens is None


# --- the demo provider ----------------------------------------------------------------


async def test_demo_reasoning_option_is_deterministic_and_apart():
    plain = load_provider("demo", options={"delay_ms": 0, "words": 30})
    thinking = load_provider("demo", options={"delay_ms": 0, "words": 30, "reasoning": True})
    r1, a1, end1 = split(await collect(thinking, request("Comment apprendre le piano ?")))
    r2, a2, _ = split(await collect(thinking, request("Comment apprendre le piano ?")))
    r0, a0, end0 = split(await collect(plain, request("Comment apprendre le piano ?")))
    assert r1 == r2 and a1 == a2  # deterministic
    assert r1 and "Comment apprendre le piano ?" in r1 and r0 == ""
    assert a1 == a0  # the answer is the same with or without reasoning
    assert r1 not in a1
    n = len(r1.split())
    assert end1.usage.reasoning_tokens == n and end1.usage.completion_tokens == 30 + n
    assert end0.usage.reasoning_tokens is None and end0.usage.completion_tokens == 30


async def test_demo_reasoning_per_request_override():
    off = load_provider("demo", options={"delay_ms": 0})
    on = load_provider("demo", options={"delay_ms": 0, "reasoning": True})
    reasoning, _, _ = split(await collect(off, request(options={"reasoning": True})))
    assert reasoning
    reasoning, _, _ = split(await collect(on, request(options={"reasoning": False})))
    assert reasoning == ""


async def test_demo_reasoning_never_enters_structured_output():
    provider = load_provider("demo", options={"delay_ms": 0, "reasoning": True})
    req = GenerationRequest(
        [ChatMessage("user", "Apprendre le piano")], purpose="objective", json_mode=True,
        objective=ObjectiveSpec("Apprendre le piano", "beginner", "music"),
    )
    reasoning, answer, end = split(await collect(provider, req))
    assert reasoning and json.loads(answer)["title"] == "Apprendre le piano"
    assert type(end) is Completion and end.finish_reason == "complete"


def test_demo_reasoning_option_is_typed():
    with pytest.raises(ConfigError, match="reasoning"):
        load_provider("demo", options={"reasoning": "yes"})
    with pytest.raises(ConfigError, match="unknown field"):
        load_provider("demo", options={"reasonning": True})
