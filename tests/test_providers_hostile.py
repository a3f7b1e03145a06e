"""Hostile and broken upstreams, through real HTTP on 127.0.0.1, for both HTTP providers.

streamcore.testing.FakeOpenAI is the only stand-in (at the HTTP boundary): endless lines,
error events after the 200, malformed events, hangs, resets, 429, 5xx, error bodies that
never end. Whatever the upstream does, a reply either completes whole or fails with a
``ProviderError``: it never ends ``complete`` and truncated, and the `openai` provider
never holds more than a bounded amount of memory for it.

Also: the demo provider builds long replies in linear time and never blocks the loop.
"""

from __future__ import annotations

import time
import tracemalloc

import anyio
import pytest

from streamcore import ChatMessage, GenerationRequest, ProviderError, load_provider
from streamcore.events import Completion, Reasoning
from streamcore.testing import FakeOpenAI

pytestmark = pytest.mark.anyio

WAIT = 20  # seconds: the bound of every wait
PROVIDERS = ["openai", "litellm"]


def make(name, api, model, **options):
    if name == "openai":
        return load_provider("openai", model=model, options={"base_url": api.base_url, **options})
    return load_provider("litellm", model=f"openai/{model}", options={"api_base": api.base_url, **options})


async def run(provider, content="bonjour"):
    """(items, error): everything the stream yielded, and the ProviderError it raised."""
    items, error = [], None
    with anyio.fail_after(WAIT):
        try:
            async for item in provider.stream(GenerationRequest([ChatMessage("user", content)])):
                items.append(item)
        except ProviderError as exc:
            error = exc
    return items, error


def text(items):
    return "".join(x for x in items if type(x) is str)


def failed(items, error, code="GENERATION_FAILED", retryable=True):
    """The reply failed (with ``code``) and did not pretend to complete."""
    assert error is not None, f"expected {code}, the stream ended with {items[-1:]!r}"
    assert (error.code, error.retryable) == (code, retryable), error.message
    assert not any(type(x) is Completion for x in items)
    return error


@pytest.fixture
async def api():
    async with FakeOpenAI(slow_seconds=60, endless_bytes=2 << 20) as server:
        yield server


# --- error events after the 200 -------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("mode", ["error-midway", "error-named"])
async def test_error_event_mid_stream_fails_the_reply(api, name, mode):
    items, error = await run(make(name, api, mode))
    failed(items, error)
    # What came before the error was delivered; nothing after it (the [DONE] that vLLM
    # sends after its error event does not turn the reply into a complete one).
    assert text(items) == "".join(api.pieces(mode)[: api.break_after])
    assert "fake failure" not in error.message  # the upstream's text is not echoed


@pytest.mark.parametrize("name", PROVIDERS)
async def test_json_error_body_instead_of_a_stream(api, name):
    items, error = await run(make(name, api, "json-error"))
    failed(items, error)
    assert items == []


# --- malformed streams ----------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_malformed_json_event_fails(api, name):
    items, error = await run(make(name, api, "malformed-data"))
    failed(items, error)
    assert text(items) == "".join(api.pieces("ok")[: api.break_after])


@pytest.mark.parametrize("name", PROVIDERS)
async def test_garbage_lines_never_truncate_a_reply(api, name):
    items, error = await run(make(name, api, "malformed-sse"))
    if name == "openai" or error is None:
        # SSE says: unknown fields, lines without a colon and events without data are
        # ignored. (The OpenAI SDK under litellm refuses the data-less event instead.)
        assert error is None and text(items) == api.text and items[-1].finish_reason == "complete"
    else:
        failed(items, error)


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("fragment", [1, 2, 7, 50])
async def test_every_legal_sse_shape_in_any_fragments(name, fragment):
    # CRLF line ends split between fragments, comments, id/retry fields, "data:" with and
    # without a space, one JSON spread over several data lines.
    async with FakeOpenAI(fragment=fragment) as api:
        items, error = await run(make(name, api, "quirky"))
    assert error is None and text(items) == api.text
    assert items[-1].finish_reason == "complete" and items[-1].usage.completion_tokens == len(api.pieces("ok"))


# --- endless lines and bodies: bounded ------------------------------------------------


async def test_openai_endless_line_is_bounded_in_memory_and_time():
    async with FakeOpenAI(endless_bytes=256 << 20) as api:
        tracemalloc.start()
        try:
            started = time.perf_counter()
            items, error = await run(make("openai", api, "endless"))
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        failed(items, error)
        assert "longer than 1048576 bytes" in error.message
        assert text(items) == "".join(api.pieces("ok")[: api.break_after])
        # The provider gave up after about 1 MiB, not after the 256 MiB the server had
        # to send; the peak includes the server's own buffers (same process).
        assert api.body_bytes < 32 << 20, api.body_bytes
        assert peak < 24 << 20, peak
        assert elapsed < 10, elapsed
        with anyio.fail_after(WAIT):
            await api.wait_closed_early(1)


async def test_openai_endless_event_of_short_lines_is_bounded():
    # Short "data:" lines and never a blank line: one event whose data never ends. Joined
    # once at the end (not concatenated line by line, which is quadratic) and capped.
    async with FakeOpenAI(endless_bytes=256 << 20) as api:
        started = time.perf_counter()
        items, error = await run(make("openai", api, "endless-event"))
        failed(items, error)
        assert "longer than 1048576 bytes" in error.message
        assert api.body_bytes < 32 << 20 and time.perf_counter() - started < 10


async def test_openai_max_line_bytes_option():
    async with FakeOpenAI(endless_bytes=8 << 20) as api:
        items, error = await run(make("openai", api, "endless", max_line_bytes=4096))
        failed(items, error)
        assert "longer than 4096 bytes" in error.message
        # A normal stream still passes under a small limit.
        items, error = await run(make("openai", api, "ok", max_line_bytes=4096))
        assert error is None and text(items) == api.text


async def test_litellm_endless_line_fails_instead_of_completing(api):
    # The OpenAI SDK under litellm buffers the line itself (unbounded: the upstream's
    # timeouts and the engine's bound it); the provider must at least not report the
    # truncated reply as complete when the body finally ends.
    items, error = await run(make("litellm", api, "endless"))
    failed(items, error)
    assert text(items) == "".join(api.pieces("ok")[: api.break_after])


async def test_openai_error_body_is_read_bounded():
    async with FakeOpenAI(endless_bytes=256 << 20) as api:
        started = time.perf_counter()
        items, error = await run(make("openai", api, "error-flood"))
        failed(items, error)
        assert "(500)" in error.message
        assert api.body_bytes < 32 << 20, api.body_bytes  # read 64 KiB, then hung up
        assert time.perf_counter() - started < 10


# --- hangs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_hang_before_the_first_chunk_times_out(api, name):
    items, error = await run(make(name, api, "slow", timeout=0.5))
    failed(items, error, code="TIMEOUT")
    assert items == []
    with anyio.fail_after(WAIT):
        await api.wait_closed_early(1)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_hang_midway_times_out_keeping_the_text(api, name):
    items, error = await run(make(name, api, "hang", timeout=0.5))
    failed(items, error, code="TIMEOUT")
    assert text(items) == "".join(api.pieces("hang")[: api.break_after])
    with anyio.fail_after(WAIT):
        await api.wait_closed_early(1)


# --- refusals and broken connections --------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_429_is_rate_limit_with_retry_after(api, name):
    items, error = await run(make(name, api, "rate-limit"))
    failed(items, error, code="RATE_LIMIT")
    assert error.retry_after_ms == 7000 and len(api.requests) == 1


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("model, status", [("server-error", 500), ("bad-gateway", 502), ("unavailable", 503)])
async def test_5xx_is_a_retryable_generation_failure(api, name, model, status):
    items, error = await run(make(name, api, model))
    failed(items, error)
    assert str(status) in error.message and items == []


@pytest.mark.parametrize("name", PROVIDERS)
async def test_connection_reset_midway(api, name):
    items, error = await run(make(name, api, "reset"))
    failed(items, error)
    assert text(items) == "".join(api.pieces("reset")[: api.break_after])


@pytest.mark.parametrize("name", PROVIDERS)
async def test_connection_reset_before_answering(api, name):
    items, error = await run(make(name, api, "reset-early"))
    failed(items, error)
    assert items == []


# --- the demo provider: linear, never blocking ----------------------------------------


async def test_demo_long_reply_is_linear_and_yields_to_the_loop():
    provider = load_provider("demo", options={"delay_ms": 0})
    req = GenerationRequest([ChatMessage("user", "un très long texte")], options={"words": 100_000})
    ticks = 0
    pieces = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    started = time.perf_counter()
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            async for item in provider.stream(req):
                if type(item) is str:
                    pieces += 1
                else:
                    end = item
            tg.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    assert pieces == 100_000 and end.usage.completion_tokens == 100_000
    # The consumer never awaits anything but the stream, so the ticker runs only when the
    # provider gives the loop a turn: it does every 256 pieces (a quadratic, synchronous
    # build ran 0 times in 11 s here).
    assert ticks >= 100_000 // 256 - 1
    # Linear: ~0.2 s here; the quadratic build took 11 s for these 100000 words.
    assert elapsed < 5, elapsed


def test_demo_reply_builder_is_linear():
    from streamcore.providers.demo import _reply_words

    started = time.perf_counter()
    assert sum(1 for _ in _reply_words("x", 300_000, 1)) == 300_000
    assert time.perf_counter() - started < 3  # the quadratic builder needed minutes


async def test_demo_is_deterministic_and_cut_by_max_tokens():
    provider = load_provider("demo", options={"delay_ms": 0, "words": 40})
    req = GenerationRequest([ChatMessage("user", "Comment apprendre le piano ?")])
    first, _ = await run(provider, "Comment apprendre le piano ?")
    second, _ = await run(provider, "Comment apprendre le piano ?")
    assert first == second and len([x for x in first if type(x) is str]) == 40
    assert not text(first).endswith(" ") and "Comment apprendre le piano ?" in text(first)
    with anyio.fail_after(WAIT):
        cut = [x async for x in provider.stream(GenerationRequest(req.messages, options={"max_tokens": 5}))]
    assert len([x for x in cut if type(x) is str]) == 5 and cut[-1].finish_reason == "length"
    assert not any(type(x) is Reasoning for x in first + cut)
