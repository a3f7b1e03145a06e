"""OpenTelemetry spans of runs (streamcore.tracing), read from an in-memory exporter."""

from __future__ import annotations

import anyio
import msgspec
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from streamcore import Config, ConnectionInfo, Engine  # noqa: E402
from streamcore.metrics import Instruments  # noqa: E402

from .test_metrics import MODEL, ByContentProvider, connection  # noqa: E402

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def traced_engine(tracer_provider, model_provider=None, *, prometheus: bool = True, **sections) -> Engine:
    telemetry = Instruments(prometheus=prometheus, otel=True, tracer_provider=tracer_provider)
    config = msgspec.convert(sections, Config)
    return Engine(config, provider=model_provider or ByContentProvider(), telemetry=telemetry)


def by_name(spans, name):
    return [s for s in spans if s.name == name]


async def test_a_chat_is_a_run_span_with_the_provider_call_as_child_after_genai_conventions(provider, exporter):
    engine = traced_engine(provider)
    info = ConnectionInfo(headers={"traceparent": TRACEPARENT})
    async with connection(engine, info) as c:
        await c.send("USER_MESSAGE", {"content": "chat"}, id="r1")
        frames = await c.until("AI_MESSAGE_END")
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == [f"chat {MODEL}", "streamcore.run"]
    (run,) = by_name(spans, "streamcore.run")
    (call,) = by_name(spans, f"chat {MODEL}")
    # The tree: the client's span -> the run -> the provider call.
    assert run.context.trace_id == int(TRACE_ID, 16) == call.context.trace_id
    assert run.parent.span_id == int(PARENT_ID, 16) and run.parent.is_remote
    assert call.parent.span_id == run.context.span_id
    assert run.kind is SpanKind.SERVER and call.kind is SpanKind.CLIENT
    # The run span covers the provider call.
    assert run.start_time <= call.start_time and call.end_time <= run.end_time
    a = call.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "by-content" == a["gen_ai.system"]
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.response.model"] == f"{MODEL}-0613"
    assert a["gen_ai.usage.input_tokens"] == 3 and a["gen_ai.usage.output_tokens"] == 4
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert 0 < a["streamcore.time_to_first_chunk"] < 5
    assert [e.name for e in call.events] == ["first_chunk"]
    r = run.attributes
    assert r["streamcore.message_id"] == frames[-1]["data"]["messageId"]
    assert r["streamcore.request_id"] == "r1"
    assert r["streamcore.purpose"] == "chat"
    assert r["streamcore.stop_reason"] == "complete"
    assert r["streamcore.chunks"] == 4
    assert r["streamcore.time_to_first_chunk"] == a["streamcore.time_to_first_chunk"]
    assert "gen_ai.usage.input_tokens" not in r  # usage once, on the inference span
    assert run.status.status_code is StatusCode.UNSET
    await engine.aclose()


async def test_a_failure_marks_both_spans_with_the_error_code(provider, exporter):
    engine = traced_engine(provider)
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "fail"})
        await c.until("AI_MESSAGE_END")
    (run,) = by_name(exporter.get_finished_spans(), "streamcore.run")
    (call,) = by_name(exporter.get_finished_spans(), f"chat {MODEL}")
    for span in (run, call):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "GENERATION_FAILED"
    assert "upstream broke" in call.status.description
    assert run.attributes["streamcore.stop_reason"] == "error"
    assert tuple(call.attributes["gen_ai.response.finish_reasons"]) == ("error",)
    await engine.aclose()


async def test_a_stopped_run_is_not_an_error_and_ends_at_the_stop(provider, exporter):
    engine = traced_engine(provider)
    model = engine.provider
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "hold"})
        with anyio.fail_after(5):
            await model.holding.wait()
        assert exporter.get_finished_spans() == ()  # still streaming: nothing ended yet
        await c.send("STOP_GENERATION", {})
        await c.until("AI_MESSAGE_END")
    (run,) = by_name(exporter.get_finished_spans(), "streamcore.run")
    assert run.attributes["streamcore.stop_reason"] == "user_cancelled"
    assert run.status.status_code is StatusCode.UNSET
    await engine.aclose()


async def test_trace_context_from_the_query_string_for_browsers(provider, exporter):
    engine = traced_engine(provider, prometheus=False)
    info = ConnectionInfo(query={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    async with connection(engine, info) as c:
        await c.send("USER_MESSAGE", {"content": "chat"})
        await c.until("AI_MESSAGE_END")
    (run,) = by_name(exporter.get_finished_spans(), "streamcore.run")
    assert run.context.trace_id == int(TRACE_ID, 16)
    assert run.parent.span_id == int(PARENT_ID, 16)
    assert run.context.trace_state.get("vendor") == "1"
    await engine.aclose()


async def test_without_trace_context_each_run_starts_a_trace_and_bad_headers_are_ignored(provider, exporter):
    engine = traced_engine(provider)
    async with connection(engine, ConnectionInfo(headers={"traceparent": "garbage"})) as c:
        for _ in range(2):
            await c.send("USER_MESSAGE", {"content": "chat"})
            await c.until("AI_MESSAGE_END")
    runs = by_name(exporter.get_finished_spans(), "streamcore.run")
    assert len(runs) == 2 and all(r.parent is None for r in runs)
    assert runs[0].context.trace_id != runs[1].context.trace_id
    await engine.aclose()


async def test_spans_made_inside_the_provider_nest_under_the_provider_call(provider, exporter):
    tracer = provider.get_tracer("an-http-client")

    class Instrumented:
        name = "instrumented"
        model = "m1"

        async def stream(self, request):
            with tracer.start_as_current_span("POST /v1/chat/completions"):
                yield "hello"
            yield " world"

    engine = traced_engine(provider, Instrumented())
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "x"})
        await c.until("AI_MESSAGE_END")
    spans = exporter.get_finished_spans()
    (http,) = by_name(spans, "POST /v1/chat/completions")
    (call,) = by_name(spans, "chat m1")
    (run,) = by_name(spans, "streamcore.run")
    assert http.parent.span_id == call.context.span_id
    assert call.parent.span_id == run.context.span_id
    # The provider's context does not leak out of the run's task.
    assert trace.get_current_span().get_span_context().is_valid is False
    await engine.aclose()


async def test_a_run_refused_at_admission_still_ends_its_span(provider, exporter):
    from streamcore.limits import MemoryLimiter

    class Shared(MemoryLimiter):  # answers asynchronously, like the Redis limiter, and refuses
        def try_acquire(self, owner, run_id, limit):
            return None

        async def acquire(self, owner, run_id, limit):
            return False

    telemetry = Instruments(otel=True, tracer_provider=provider)
    engine = Engine(Config(), provider=ByContentProvider(), telemetry=telemetry, limiter=Shared())
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "chat"})
        frames = await c.until("AI_MESSAGE_END")
    assert [f["data"]["code"] for f in frames if f["type"] == "ERROR"] == ["RATE_LIMIT"]
    (run,) = exporter.get_finished_spans()
    assert run.name == "streamcore.run" and run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "RATE_LIMIT"
    labels = {"provider": "by-content", "model": MODEL, "purpose": "chat"}
    assert telemetry.value("streamcore_runs_ended_total", **labels, stop_reason="error") == 1
    assert telemetry.value("streamcore_rejections_total", reason="concurrency") == 1
    assert telemetry.value("streamcore_errors_total", code="RATE_LIMIT") == 1
    assert telemetry.value("streamcore_runs_active") == 0
    await engine.aclose()


async def test_config_otel_uses_the_global_tracer_provider():
    engine = Engine(msgspec.convert({"metrics": {"enabled": True, "otel": True, "prometheus": False}}, Config),
                    provider=ByContentProvider())
    assert engine.telemetry.tracing is not None and engine.telemetry.prom is None
    assert engine.telemetry.metrics_path is None  # nothing to serve without Prometheus
    async with connection(engine) as c:  # the API's no-op provider unless the app set one
        await c.send("USER_MESSAGE", {"content": "chat"})
        assert (await c.until("AI_MESSAGE_END"))[-1]["data"]["stopReason"] == "complete"
    await engine.aclose()
