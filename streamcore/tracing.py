"""OpenTelemetry spans of runs, after the GenAI semantic conventions.

One span per run, ``streamcore.run`` (kind SERVER), from the client frame that asked for
it to its AI_MESSAGE_END, and one child span for the provider call, ``chat {model}``
(kind CLIENT), carrying the ``gen_ai.*`` attributes: ``gen_ai.operation.name``,
``gen_ai.provider.name`` (and the older ``gen_ai.system``), ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens``/``output_tokens``,
``gen_ai.response.finish_reasons``, plus ``streamcore.time_to_first_chunk`` (seconds)
and a ``first_chunk`` event at the moment the first delta arrived. Usage is on the
provider span only, so GenAI-aware backends do not count it twice.

While the provider streams, its span is the current span of the run's task: an
instrumented HTTP client (httpx, aiohttp...) inside the provider nests under it.

The parent of a run span is the trace context the client sent in its handshake: the W3C
``traceparent`` (and ``tracestate``) header, read through the global propagator, or the
same names as query parameters (browsers cannot set WebSocket headers). Without one, the
run span continues whatever span is current (an instrumented server's), else starts a
trace. Spans go wherever the tracer provider sends them (the global one by default);
streamcore configures no exporter.

Needs ``opentelemetry-api`` (the ``otel`` extra); the SDK is the application's choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .run import Run
    from .transport import ConnectionInfo

__all__ = ["Tracing", "finish_reason"]

_FINISH = {"complete": "stop", "length": "length"}


def finish_reason(stop_reason: str) -> str:
    """``gen_ai.response.finish_reasons`` value of a stop reason (``complete`` -> ``stop``)."""
    return _FINISH.get(stop_reason, stop_reason)


class Tracing:
    """Starts and ends the spans of runs.

    Args:
        tracer_provider: where spans go (``opentelemetry.trace``'s global provider when
            None: configure it with the SDK and an exporter of your choice).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import context, propagate, trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise ConfigError(
                "the Python package 'opentelemetry' is not installed ([metrics] otel = true): "
                "pip install 'streamcore-llm[otel]'"
            ) from None
        from . import __version__

        self._trace = trace
        self._context = context
        self._propagate = propagate
        self._w3c = TraceContextTextMapPropagator()
        self._server = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT
        self._error = trace.StatusCode.ERROR
        self.tracer = trace.get_tracer("streamcore", __version__, tracer_provider=tracer_provider)

    def extract(self, info: ConnectionInfo) -> Any:
        """The trace context the handshake carried (header, else query), or None."""
        trace = self._trace
        headers = info.headers
        if headers.get("traceparent") or any(k in headers for k in ("b3", "x-b3-traceid", "uber-trace-id")):
            ctx = self._propagate.extract(dict(headers))
            if trace.get_current_span(ctx).get_span_context().is_valid:
                return ctx
        query = info.query
        if query.get("traceparent"):
            carrier = {"traceparent": query["traceparent"]}
            if query.get("tracestate"):
                carrier["tracestate"] = query["tracestate"]
            ctx = self._w3c.extract(carrier)
            if trace.get_current_span(ctx).get_span_context().is_valid:
                return ctx
        return None

    def start_run(self, run: Run, parent: Any, *, session_id: str | None = None) -> Any:
        attributes = {
            "streamcore.message_id": run.message_id,
            "streamcore.purpose": run.purpose or "chat",
        }
        if session_id:
            attributes["streamcore.session_id"] = session_id
        if run.request_id is not None:
            attributes["streamcore.request_id"] = run.request_id
        return self.tracer.start_span("streamcore.run", context=parent, kind=self._server, attributes=attributes)

    def start_provider(self, run: Run, run_span: Any, provider: str, model: str) -> tuple[Any, Any]:
        """The provider call's span, made current in the run's task; returns (span, token)."""
        trace = self._trace
        request = run.request
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
        }
        options = request.options or {}
        for key, name in (
            ("temperature", "gen_ai.request.temperature"),
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("top_p", "gen_ai.request.top_p"),
        ):
            value = options.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[name] = value
        if request.json_mode:
            attributes["gen_ai.output.type"] = "json"
        span = self.tracer.start_span(
            f"chat {model}", context=trace.set_span_in_context(run_span), kind=self._client, attributes=attributes
        )
        token = self._context.attach(trace.set_span_in_context(span))
        return span, token

    def first_chunk(self, span: Any, ttft: float) -> None:
        span.set_attribute("streamcore.time_to_first_chunk", ttft)
        span.add_event("first_chunk")

    def end_run(
        self,
        run: Run,
        state: Any,
        stop_reason: str,
        code: str | None,
        failure: Exception | None,
        usage: Any,
        model: str | None,
        ttft: float | None,
        chunks: int,
        reasoning_chunks: int,
    ) -> None:
        """End the provider span (if any), then the run span."""
        message = getattr(failure, "message", None) or code
        span = state.provider_span
        if span is not None:
            state.provider_span = None
            attributes: dict[str, Any] = {
                "gen_ai.response.model": model or state.model,
                "gen_ai.response.finish_reasons": (finish_reason(stop_reason),),
            }
            if usage is not None:
                if usage.prompt_tokens is not None:
                    attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
                if usage.completion_tokens is not None:
                    attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            if code is not None:
                attributes["error.type"] = code
                span.set_status(self._error, message)
            span.set_attributes(attributes)
            span.end()
        token, state.token = state.token, None
        if token is not None:
            try:
                self._context.detach(token)
            except Exception:  # another task's token: nothing to restore here
                pass
        span = state.span
        if span is None:
            return
        state.span = None
        attributes = {"streamcore.stop_reason": stop_reason, "streamcore.chunks": chunks}
        if reasoning_chunks:
            attributes["streamcore.reasoning_chunks"] = reasoning_chunks
        if ttft is not None:
            attributes["streamcore.time_to_first_chunk"] = ttft
        if code is not None:
            attributes["error.type"] = code
            span.set_status(self._error, message)
        span.set_attributes(attributes)
        span.end()
