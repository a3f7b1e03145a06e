"""Monitoring: the seed's metrics in Prometheus, its runs as OpenTelemetry spans.

Every engine has a :class:`Telemetry`, ``engine.telemetry``. The base class is a no-op
whose methods are the *hook points* the engine, sessions and runs call; none of them is
called per chunk. What a run sends is counted once, when it ends (it knows how many
chunks it logged); what a connection writes is read from counters the writer keeps anyway
(``outbox.sent``, ``outbox.sent_bytes``, ``outbox.merged``) when metrics are collected.

:class:`Instruments` is the real one, built from ``[metrics]`` of the configuration (or
passed as ``Engine(telemetry=...)``): Prometheus metrics in a registry of its own (so
several engines in one process never collide), served at ``[metrics] path`` beside
``/healthz`` and readable from Python with :meth:`Instruments.value`, and, with ``otel``
on, one OpenTelemetry span per run with the provider call as its child
(:mod:`streamcore.tracing`).

Both extras are optional: ``pip install 'streamcore-llm[prometheus]'`` and
``'streamcore-llm[otel]'``. See ``docs/monitoring.md`` for every metric.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from .errors import ConfigError, ProviderError
from .events import Kind
from .log import get_logger
from .protocol import ErrorCode

if TYPE_CHECKING:
    from .engine import Engine
    from .events import Usage
    from .run import Run
    from .session import Session

__all__ = [
    "Telemetry",
    "Instruments",
    "NOOP",
    "make_telemetry",
    "metrics_app",
    "multiprocess_metrics",
    "worker_exited",
    "provider_name",
    "REJECTION_REASONS",
]

_log = get_logger("streamcore")

#: Why a request was refused (the ``reason`` label of ``streamcore_rejections_total``).
REJECTION_REASONS = (
    "rate",  # [limits] messages_per_interval: a client frame over the message rate
    "flood",  # [limits] flood_close_after: the connection was closed for it
    "concurrency",  # [limits] max_concurrent_generations of one user
    "capacity",  # [limits] max_generations of the process, or the run log full
    "handlers",  # [limits] max_pending_handlers of one connection
    "shutting_down",  # a generation asked for while the server stops
    "auth",  # a bad or missing token at the handshake
    "origin",  # an Origin outside [security] allowed_origins
)

#: Error codes whose failure is the provider's (``streamcore_provider_failures_total``).
_PROVIDER_CODES = frozenset({ErrorCode.GENERATION_FAILED, ErrorCode.TIMEOUT})

#: Handshake parameter (query) and header by which a client says it reconnected.
RECONNECT_QUERY = "reconnect"
RECONNECT_HEADER = "x-streamcore-reconnect"

# Histogram buckets, in seconds.
TTFC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
CHUNK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


def provider_name(provider: Any) -> str:
    """The ``provider`` label: the provider's ``name`` attribute, else its class name."""
    name = getattr(provider, "name", None)
    return name if isinstance(name, str) and name else type(provider).__name__


class Telemetry:
    """The hook points, doing nothing: what ``engine.telemetry`` is when metrics are off.

    Subclass it to send the same events elsewhere (StatsD, a log...). No hook is called
    per chunk; each is called once per connection, per run, per batch of replayed entries
    or per refused request. Hooks must not raise and must not block.
    """

    #: whether anything is recorded (False for the no-op).
    enabled = False
    #: the HTTP path the Prometheus text is served at, or None (not served).
    metrics_path: str | None = None

    def bind(self, engine: Engine) -> None:
        """Called once by the engine that owns this object, at the engine's construction."""

    # --- connections -----------------------------------------------------------------------

    def on_connection_open(self, session: Session) -> None:
        """An authenticated connection starts being served (``session.info``: the handshake)."""

    def on_connection_close(self, session: Session, code: int | None) -> None:
        """The connection ended (``code``: the peer's close code, when it closed)."""

    # --- runs ------------------------------------------------------------------------------

    def on_run_start(self, run: Run, session: Session) -> None:
        """A run was admitted for ``session`` (AI_THINKING is about to be sent)."""

    def on_provider_call(self, run: Run) -> None:
        """The run is about to call its provider (in the run's own task)."""

    def on_first_chunk(self, run: Run, ttft: float) -> None:
        """The run's first delta arrived, ``ttft`` seconds after the client's frame."""

    def on_run_end(
        self,
        run: Run,
        stop_reason: str,
        failure: Exception | None,
        usage: Usage | None,
        model: str | None,
        ttft: float | None,
    ) -> None:
        """The run logged its AI_MESSAGE_END (``model``: the model that answered)."""

    def on_run_sealed(self, run: Run) -> None:
        """Nothing more will be logged for the run (always called, once per run)."""

    # --- everything else -------------------------------------------------------------------

    def on_error(self, code: str) -> None:
        """An ERROR frame was sent to a client outside a run (a run's own is in on_run_end)."""

    def on_rejected(self, reason: str) -> None:
        """A request was refused; ``reason`` is one of :data:`REJECTION_REASONS`."""

    def on_resume(self, source: str, replayed: int) -> None:
        """A RESUME was accepted: ``source`` is ``live`` or ``log``; ``replayed`` entries."""

    # --- reading ---------------------------------------------------------------------------

    def metrics_response(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """``(status, headers, body)`` for ``GET metrics_path``."""
        return 404, [("Content-Type", "text/plain; charset=utf-8")], b"metrics are off\n"

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (``streamcore_runs_started_total``...), or None."""
        return None


#: The shared no-op instance.
NOOP = Telemetry()


def make_telemetry(engine: Engine, telemetry: Telemetry | None = None) -> Telemetry:
    """The engine's telemetry: ``telemetry`` if given, else built from ``[metrics]``.

    Raises:
        ConfigError: metrics are on but the extra they need is not installed.
    """
    if telemetry is None:
        cfg = getattr(engine.config, "metrics", None)
        if cfg is None or not cfg.enabled:
            return NOOP
        telemetry = Instruments(prometheus=cfg.prometheus, otel=cfg.otel, path=cfg.path or None)
    telemetry.bind(engine)
    return telemetry


class _RunState:
    """What the telemetry keeps about one run (set as ``run._telemetry``)."""

    __slots__ = ("labels", "t_call", "t_first", "ended", "span", "provider_span", "token", "model")

    def __init__(self, labels: Any, model: str) -> None:
        self.labels = labels
        self.model = model
        self.t_call: float | None = None
        self.t_first: float | None = None
        self.ended = False
        self.span: Any = None
        self.provider_span: Any = None
        self.token: Any = None


_TTFC, _DURATION, _CHUNK, _PROVIDER = range(4)


class _Labels:
    """One (provider, model, purpose): its Prometheus children, looked up once, and the
    run deltas not yet published to them.

    Run hooks add to plain integers and bucket lists here (a bisect and an addition: a
    Histogram.observe costs ten times that, with its locks); :meth:`flush` publishes them
    when the metrics are collected.
    """

    __slots__ = (
        "key", "prom", "started", "hists", "bounds", "deferred", "text", "reasoning", "tokens", "ended_children",
        "p_started", "p_text", "p_reasoning", "p_tokens", "p_ended", "p_hists", "dirty",
    )

    def __init__(self, prom: _Prometheus, provider: str, model: str, purpose: str) -> None:
        self.key = (provider, model, purpose)
        self.prom = prom
        self.started = prom.runs_started.labels(provider, model, purpose)
        self.hists = (
            prom.ttfc.labels(provider, model),
            prom.duration.labels(provider, model),
            prom.chunk_latency.labels(provider, model),
            prom.provider_duration.labels(provider, model),
        )
        #: the run deltas wait for the next collection; False (a prometheus_client
        #: without the internals flush uses): each hook publishes at once.
        self.deferred = _histogram_internals(self.hists)
        #: each histogram's upper bounds, +Inf last (prometheus_client's own list).
        self.bounds = tuple(getattr(h, "_upper_bounds", ()) for h in self.hists)
        self.text = prom.chunks.labels(provider, model, "text")
        self.reasoning = prom.chunks.labels(provider, model, "reasoning")
        self.tokens = (
            prom.tokens.labels(provider, model, "input"),
            prom.tokens.labels(provider, model, "output"),
            prom.tokens.labels(provider, model, "reasoning"),
        )
        self.ended_children: dict[str, Any] = {}
        self.p_started = self.p_text = self.p_reasoning = 0
        self.p_tokens = [0, 0, 0]
        self.p_ended: dict[str, int] = {}
        self.p_hists: list[Any] = [None, None, None, None]
        self.dirty = False

    def observe(self, i: int, value: float) -> None:
        if not self.deferred:
            self.hists[i].observe(value)
            return
        h = self.p_hists[i]
        if h is None:
            h = self.p_hists[i] = [[0] * len(self.bounds[i]), 0.0]
        h[0][bisect_left(self.bounds[i], value)] += 1
        h[1] += value

    def flush(self) -> None:
        """Publish the pending deltas to the Prometheus children, and zero them."""
        self.dirty = False
        if self.p_started:
            self.started.inc(self.p_started)
            self.p_started = 0
        if self.p_text:
            self.text.inc(self.p_text)
            self.p_text = 0
        if self.p_reasoning:
            self.reasoning.inc(self.p_reasoning)
            self.p_reasoning = 0
        tokens = self.p_tokens
        for i in range(3):
            if tokens[i]:
                self.tokens[i].inc(tokens[i])
                tokens[i] = 0
        if self.p_ended:
            for reason, n in self.p_ended.items():
                child = self.ended_children.get(reason)
                if child is None:
                    child = self.ended_children[reason] = self.prom.runs_ended.labels(*self.key, reason)
                child.inc(n)
            self.p_ended = {}
        for i, h in enumerate(self.p_hists):
            if h is None:
                continue
            self.p_hists[i] = None
            child = self.hists[i]
            # What Histogram.observe does once per value, for all pending values at once
            # (its buckets are stored non-cumulative; +Inf is the last).
            child._sum.inc(h[1])
            for j, n in enumerate(h[0]):
                if n:
                    child._buckets[j].inc(n)


class _Prometheus:
    """The metrics, in one registry per engine."""

    def __init__(self, registry: Any = None) -> None:
        try:
            import prometheus_client as pc
            from prometheus_client import values
        except ImportError:
            raise ConfigError(
                "the Python package 'prometheus_client' is not installed ([metrics] prometheus = true): "
                "pip install 'streamcore-llm[prometheus]'"
            ) from None
        self.pc = pc
        #: prometheus_client chose mmap'ed values: PROMETHEUS_MULTIPROC_DIR was set.
        self.multiprocess = values.ValueClass is not values.MutexValue
        self.registry = pc.CollectorRegistry(auto_describe=True) if registry is None else registry
        self._sync_hook: Any = None
        r = self.registry
        # First in the registry: brings the derived counters up to date on every collect.
        r.register(_SyncFirst(self))
        C, G, H = pc.Counter, pc.Gauge, pc.Histogram
        pm = ("provider", "model")
        self.connections = C(
            "streamcore_connections", "WebSocket/SSE connections accepted (after authentication)", registry=r
        )
        self.connections_open = G(
            "streamcore_connections_open", "Connections open now", registry=r, multiprocess_mode="livesum"
        )
        self.reconnects = C(
            "streamcore_client_reconnects", "Connections that clients reported as reconnections", registry=r
        )
        self.frames_in = C("streamcore_frames_received", "Client frames received", registry=r)
        self.frames_out = C("streamcore_frames_sent", "Frames handed to the socket", registry=r)
        self.bytes_out = C("streamcore_sent_bytes", "Bytes of frames handed to the socket", registry=r)
        self.merged = C(
            "streamcore_chunks_merged", "Chunks sent inside another chunk's frame (backpressure)", registry=r
        )
        self.pending = G(
            "streamcore_send_buffer_pending_bytes", "Bytes waiting in send buffers, all connections",
            registry=r, multiprocess_mode="livesum",
        )
        self.fill = G(
            "streamcore_send_buffer_max_fill_ratio", "Fullest send buffer: pending bytes / limit",
            registry=r, multiprocess_mode="livemax",
        )
        self.lagging = G(
            "streamcore_lagging_readers", "Run readers catching up from the run log (their buffer was full)",
            registry=r, multiprocess_mode="livesum",
        )
        self.runs_active = G("streamcore_runs_active", "Runs not yet ended", registry=r, multiprocess_mode="livesum")
        self.runs_started = C("streamcore_runs_started", "Runs admitted", (*pm, "purpose"), registry=r)
        self.runs_ended = C(
            "streamcore_runs_ended", "Runs ended, by stop reason", (*pm, "purpose", "stop_reason"), registry=r
        )
        self.chunks = C("streamcore_chunks", "Deltas produced by runs (text or reasoning)", (*pm, "kind"), registry=r)
        self.errors = C("streamcore_errors", "ERROR events sent, by code (a run's once)", ("code",), registry=r)
        self.rejections = C("streamcore_rejections", "Requests refused, by reason", ("reason",), registry=r)
        self.resumes = C("streamcore_resumes", "RESUMEs accepted", ("source",), registry=r)
        self.replayed = C("streamcore_replayed_entries", "Run entries replayed to resuming readers", registry=r)
        self.provider_failures = C(
            "streamcore_provider_failures", "Provider calls that failed, by error code", (*pm, "code"), registry=r
        )
        self.tokens = C("streamcore_tokens", "Tokens reported by providers", (*pm, "type"), registry=r)
        self.ttfc = H(
            "streamcore_time_to_first_chunk_seconds", "From the client's frame to the run's first delta",
            pm, registry=r, buckets=TTFC_BUCKETS,
        )
        self.duration = H(
            "streamcore_run_duration_seconds", "From the client's frame to AI_MESSAGE_END",
            pm, registry=r, buckets=DURATION_BUCKETS,
        )
        self.chunk_latency = H(
            "streamcore_chunk_latency_seconds", "Mean time between a run's deltas after the first (one per run)",
            pm, registry=r, buckets=CHUNK_BUCKETS,
        )
        self.provider_duration = H(
            "streamcore_provider_duration_seconds", "From the provider call to the end of its stream",
            pm, registry=r, buckets=DURATION_BUCKETS,
        )

    def collect_registry(self) -> Any:
        """The registry to expose: this one, or every process's files in multi-process mode."""
        if not self.multiprocess:
            return self.registry
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry


class _SyncFirst:
    """A collector with no metrics of its own that syncs the derived ones when collected."""

    def __init__(self, prom: _Prometheus) -> None:
        self._prom = prom

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        hook = self._prom._sync_hook
        if hook is not None:
            hook()
        return []


def _histogram_internals(children: tuple) -> bool:
    """Whether these histogram children keep ``_upper_bounds`` (+Inf last), ``_buckets``
    (non-cumulative, one per bound) and ``_sum``, as prometheus_client's have for years:
    :meth:`_Labels.flush` adds pending observations to them directly."""
    try:
        return all(
            list(h._upper_bounds)[-1] == float("inf") and len(h._buckets) == len(h._upper_bounds)
            and hasattr(h._sum, "inc")
            for h in children
        )
    except Exception:
        return False


def _bounded(seen: set, value: str, limit: int) -> str:
    """``value``, or ``"other"`` once ``limit`` distinct values were seen (bounded labels)."""
    if value in seen:
        return value
    if len(seen) >= limit:
        return "other"
    seen.add(value)
    return value


class Instruments(Telemetry):
    """Prometheus metrics and OpenTelemetry spans of one engine.

    Args:
        prometheus: keep Prometheus metrics (the ``prometheus`` extra).
        otel: emit OpenTelemetry spans (the ``otel`` extra): one per run, from the client
            frame to AI_MESSAGE_END, with the provider call as a child span.
        path: where ``GET`` serves the metrics beside ``/healthz``; None: not served.
        registry: a ``prometheus_client.CollectorRegistry`` to register into (a new one
            per engine by default).
        tracer_provider: the OpenTelemetry tracer provider (the global one by default).
        max_label_values: distinct models (and purposes) labelled before the rest are
            counted as ``other``.
        sync_interval: seconds between publications of the per-connection counters in
            multi-process mode (other workers' scrapes see them that late at most).

    Example::

        engine = Engine(config, telemetry=Instruments(otel=True))
        engine.telemetry.value("streamcore_runs_started_total", provider="demo", model="demo-1", purpose="chat")
    """

    enabled = True

    def __init__(
        self,
        *,
        prometheus: bool = True,
        otel: bool = False,
        path: str | None = "/metrics",
        registry: Any = None,
        tracer_provider: Any = None,
        max_label_values: int = 64,
        sync_interval: float = 1.0,
    ) -> None:
        self.engine: Any = None
        self.prom: _Prometheus | None = _Prometheus(registry) if prometheus else None
        self.tracing: Any = None
        if otel:
            from .tracing import Tracing

            self.tracing = Tracing(tracer_provider)
        self.metrics_path = path if self.prom is not None else None
        self.max_label_values = max_label_values
        self.sync_interval = sync_interval
        self.provider = "unknown"
        self._models: set[str] = set()
        self._purposes: set[str] = set()
        self._by_key: dict[tuple[str, str], _Labels] = {}
        #: label sets with unpublished run deltas; runs not yet sealed.
        self._pending: list[_Labels] = []
        self._active = 0
        #: hooks run on the event loop, collection may come from another thread
        #: (prometheus_client.start_http_server): the pending deltas are shared.
        self._lock = threading.Lock()

        #: live connections -> what of their writer's counters (frames out, bytes out,
        #: merged, frames in) was published; the rest is added at collection and at close.
        self._live: dict[Any, list[int]] = {}
        self._sync_task = False
        self._warned = False
        if self.prom is not None:
            self.prom._sync_hook = self.sync
            if self.prom.multiprocess:
                # A worker that exits publishes what it did since its last sync.
                import atexit
                import weakref

                ref = weakref.WeakMethod(self.sync)
                atexit.register(lambda: (ref() or (lambda: None))())

    @property
    def registry(self) -> Any:
        """This engine's ``prometheus_client.CollectorRegistry`` (None without Prometheus)."""
        return self.prom.registry if self.prom is not None else None

    def bind(self, engine: Engine) -> None:
        self.engine = engine
        self.provider = provider_name(engine.provider)

    def _failed(self, hook: str) -> None:
        # A bug here must never take a connection or a run down: log it once.
        if not self._warned:
            self._warned = True
            _log.exception("telemetry.failed", hook=hook)

    # --- connections -----------------------------------------------------------------------

    def on_connection_open(self, session: Session) -> None:
        try:
            self._live[session] = [0, 0, 0, 0]
            info = session.info
            if self.tracing is not None:
                # The handshake's trace context, parent of this connection's run spans.
                setattr(session, "_trace_context", self.tracing.extract(info))  # noqa: B010
            prom = self.prom
            if prom is None:
                return
            prom.connections.inc()
            prom.connections_open.inc()
            reported = info.query.get(RECONNECT_QUERY) or info.headers.get(RECONNECT_HEADER)
            if reported:
                try:
                    if int(reported) > 0:
                        prom.reconnects.inc()
                except ValueError:
                    pass
            if prom.multiprocess and not self._sync_task:
                tg = getattr(self.engine, "_tg", None)
                if tg is not None:
                    self._sync_task = True
                    tg.start_soon(self._sync_loop)
        except Exception:
            self._failed("on_connection_open")

    def on_connection_close(self, session: Session, code: int | None) -> None:
        try:
            published = self._live.pop(session, None)
            if published is None:
                return
            if self.prom is not None:
                with self._lock:
                    self._publish(session, published)
                self.prom.connections_open.dec()
        except Exception:
            self._failed("on_connection_close")

    def _publish(self, session: Any, published: list[int]) -> None:
        """Add what ``session``'s writer sent since last time to the counters."""
        out = session.outbox
        prom = cast(_Prometheus, self.prom)
        for i, (counter, now) in enumerate((
            (prom.frames_out, out.sent),
            (prom.bytes_out, out.sent_bytes),
            (prom.merged, getattr(out, "merged", 0)),
            (prom.frames_in, getattr(session, "_frames_in", 0)),
        )):
            delta = now - published[i]
            if delta > 0:
                counter.inc(delta)
                published[i] = now

    # --- runs ------------------------------------------------------------------------------

    def _labels(self, model: str, purpose: str) -> _Labels | None:
        prom = self.prom
        if prom is None:
            return None
        key = (model, purpose)
        labels = self._by_key.get(key)
        if labels is None:
            labels = self._by_key[key] = _Labels(prom, self.provider, model, purpose)
        return labels

    def on_run_start(self, run: Run, session: Session) -> None:
        try:
            requested = run.request.model or getattr(self.engine.provider, "model", None) or "unknown"
            model = _bounded(self._models, str(requested), self.max_label_values)
            purpose = _bounded(self._purposes, str(run.purpose or "chat"), self.max_label_values)
            labels = self._labels(model, purpose)
            state = _RunState(labels, model)
            setattr(run, "_telemetry", state)  # noqa: B010 - the run's own slot for telemetry
            if labels is not None:
                with self._lock:
                    labels.p_started += 1
                    self._active += 1
                    self._dirty(labels)
            if self.tracing is not None:
                state.span = self.tracing.start_run(
                    run, getattr(session, "_trace_context", None), session_id=getattr(session, "id", None)
                )
        except Exception:
            self._failed("on_run_start")

    def _dirty(self, labels: _Labels) -> None:
        # Under the lock. Published at the next collection, or at once when deferring is
        # off (a prometheus_client without the histogram internals used by flush).
        if not labels.deferred:
            labels.flush()
        elif not labels.dirty:
            labels.dirty = True
            self._pending.append(labels)

    def on_provider_call(self, run: Run) -> None:
        state = getattr(run, "_telemetry", None)
        if state is None:
            return
        try:
            state.t_call = time.perf_counter()
            if self.tracing is not None and state.span is not None:
                state.provider_span, state.token = self.tracing.start_provider(
                    run, state.span, self.provider, state.model
                )
        except Exception:
            self._failed("on_provider_call")

    def on_first_chunk(self, run: Run, ttft: float) -> None:
        state = getattr(run, "_telemetry", None)
        if state is None:
            return
        try:
            state.t_first = time.perf_counter()
            labels = state.labels
            if labels is not None:
                with self._lock:
                    labels.observe(_TTFC, ttft)
                    self._dirty(labels)
            if state.provider_span is not None:
                self.tracing.first_chunk(state.provider_span, ttft)
        except Exception:
            self._failed("on_first_chunk")

    def on_run_end(
        self,
        run: Run,
        stop_reason: str,
        failure: Exception | None,
        usage: Usage | None,
        model: str | None,
        ttft: float | None,
    ) -> None:
        state = getattr(run, "_telemetry", None)
        if state is None or state.ended:
            return
        state.ended = True
        try:
            now = time.perf_counter()
            machine = run.machine
            text = len(machine.parts)
            # Entries logged so far: START, the deltas, FAILED if any, END.
            reasoning = max(0, machine.seq - text - 2 - (failure is not None))
            code = getattr(failure, "code", None) if failure is not None else None
            labels = state.labels
            if labels is not None:
                with self._lock:
                    labels.p_ended[stop_reason] = labels.p_ended.get(stop_reason, 0) + 1
                    labels.observe(_DURATION, now - run.t0)
                    labels.p_text += text
                    labels.p_reasoning += reasoning
                    deltas = text + reasoning
                    if deltas > 1 and state.t_first is not None:
                        labels.observe(_CHUNK, (now - state.t_first) / (deltas - 1))
                    if state.t_call is not None:
                        labels.observe(_PROVIDER, now - state.t_call)
                    if usage is not None:
                        tokens = labels.p_tokens
                        tokens[0] += usage.prompt_tokens or 0
                        tokens[1] += usage.completion_tokens or 0
                        tokens[2] += usage.reasoning_tokens or 0
                    self._dirty(labels)
                if code is not None:
                    self._count_error(labels, code, isinstance(failure, ProviderError))
            if self.tracing is not None and state.span is not None:
                self.tracing.end_run(
                    run, state, stop_reason, code, failure, usage, model, ttft, text, reasoning
                )
        except Exception:
            self._failed("on_run_end")

    def _count_error(self, labels: _Labels, code: str, provider_error: bool) -> None:
        """A run's failure (rare: published at once)."""
        prom = cast(_Prometheus, self.prom)
        prom.errors.labels(code).inc()
        if provider_error or code in _PROVIDER_CODES:
            prom.provider_failures.labels(labels.key[0], labels.key[1], code).inc()

    def on_run_sealed(self, run: Run) -> None:
        state = getattr(run, "_telemetry", None)
        if state is None:
            return
        try:
            labels = state.labels
            if labels is not None:
                with self._lock:
                    self._active -= 1
            if state.ended:
                return
            # Ended without on_run_end: refused at admission, or an unexpected path.
            state.ended = True
            ended = run.machine.ended
            stop_reason = ended.stop_reason if ended is not None else "error"
            code = None
            for entry in run.entries[-3:]:
                if type(entry) is not str and entry[1] == Kind.FAILED:  # str: a text delta
                    code = entry[2].code
            if labels is not None:
                with self._lock:
                    labels.p_ended[stop_reason] = labels.p_ended.get(stop_reason, 0) + 1
                    self._dirty(labels)
                if code is not None:
                    self._count_error(labels, code, False)
            if self.tracing is not None and state.span is not None:
                self.tracing.end_run(run, state, stop_reason, code, None, None, None, None, 0, 0)
        except Exception:
            self._failed("on_run_sealed")

    # --- everything else -------------------------------------------------------------------

    def on_error(self, code: str) -> None:
        if self.prom is not None:
            try:
                self.prom.errors.labels(str(code)).inc()
            except Exception:
                self._failed("on_error")

    def on_rejected(self, reason: str) -> None:
        if self.prom is not None:
            try:
                self.prom.rejections.labels(reason if reason in REJECTION_REASONS else "other").inc()
            except Exception:
                self._failed("on_rejected")

    def on_resume(self, source: str, replayed: int) -> None:
        if self.prom is not None:
            try:
                self.prom.resumes.labels(source).inc()
                if replayed > 0:
                    self.prom.replayed.inc(replayed)
            except Exception:
                self._failed("on_resume")

    # --- collection ------------------------------------------------------------------------

    def sync(self) -> None:
        """Publish what runs and connections did since the last call to the metrics.

        Called when the registry is collected (every scrape, every :meth:`value`), and
        every ``sync_interval`` seconds in multi-process mode (and at exit; a closing
        connection publishes its own rest at once). O(open connections + label sets
        used since the last call). Safe from any thread.
        """
        prom = self.prom
        if prom is None:
            return
        with self._lock:
            pending_labels, self._pending = self._pending, []
            for labels in pending_labels:
                labels.flush()
            prom.runs_active.set(self._active)
            pending = lagging = 0
            fill = 0.0
            for session, published in list(self._live.items()):
                self._publish(session, published)
                out = session.outbox
                pending += out.pending
                lagging += len(out.lagging)
                if out.limit and out.pending / out.limit > fill:
                    fill = out.pending / out.limit
            prom.pending.set(pending)
            prom.lagging.set(lagging)
            prom.fill.set(fill)

    async def _sync_loop(self) -> None:
        import anyio

        while True:
            await anyio.sleep(self.sync_interval)
            try:
                self.sync()
            except Exception:
                self._failed("sync")

    def metrics_response(self) -> tuple[int, list[tuple[str, str]], bytes]:
        prom = self.prom
        if prom is None:
            return super().metrics_response()
        self.sync()
        body = prom.pc.generate_latest(prom.collect_registry())
        kind = getattr(prom.pc, "CONTENT_TYPE_PLAIN_0_0_4", "text/plain; version=0.0.4; charset=utf-8")
        return 200, [("Content-Type", kind), ("Cache-Control", "no-store")], body

    def value(self, name: str, **labels: str) -> float | None:
        prom = self.prom
        if prom is None:
            return None
        self.sync()
        return prom.collect_registry().get_sample_value(name, labels)


# --- serving and multi-process mode -------------------------------------------------------------


def metrics_app(engine: Engine) -> Any:
    """An ASGI app answering ``GET`` with ``engine``'s metrics (mount it anywhere).

    ``StreamcoreASGI`` and ``streamcore serve`` already serve ``[metrics] path``; this is
    for applications that route HTTP themselves (Starlette, FastAPI)::

        app.mount("/metrics", metrics_app(engine))
    """

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            status, headers, body = 405, [("Allow", "GET, HEAD")], b"method not allowed\n"
        else:
            status, headers, body = engine.telemetry.metrics_response()
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    return app


_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def multiprocess_metrics(config: Any) -> Iterator[str | None]:
    """In the parent of ``--workers``: one metrics directory shared by every worker.

    With ``[metrics] enabled`` and ``prometheus`` on, sets ``PROMETHEUS_MULTIPROC_DIR``
    (workers are spawned after, and inherit it) to a fresh temporary directory removed on
    exit, unless the environment already names one (then it is used as is: wipe it
    between runs yourself). Any worker's ``/metrics`` then reports the sum of all.
    Yields the directory, or None when metrics are off.
    """
    cfg = getattr(config, "metrics", None)
    if cfg is None or not cfg.enabled or not cfg.prometheus:
        yield None
        return
    existing = os.environ.get(_MULTIPROC_ENV) or os.environ.get(_MULTIPROC_ENV.lower())
    if existing:
        os.makedirs(existing, exist_ok=True)
        yield existing
        return
    path = tempfile.mkdtemp(prefix="streamcore-metrics-")
    os.environ[_MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(_MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """In the parent of ``--workers``: a worker died; drop its live gauges (open
    connections, active runs, buffers). Its counters stay: they only go up."""
    path = os.environ.get(_MULTIPROC_ENV)
    if not path:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(pid, path)
