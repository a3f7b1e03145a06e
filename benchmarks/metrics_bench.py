"""What monitoring costs per chunk: the engine with metrics off, Prometheus, and Prometheus
plus OpenTelemetry spans, measured in the same run.

    .venv/bin/python -m benchmarks.metrics_bench [--quick] [--chunks N] [--rounds R]

Two measures, printed as Markdown and written to ``benchmarks/results/metrics.json``:

Modes: ``off``; ``prometheus``; ``prometheus+otel``, every run traced by the SDK into a
batch processor whose exporter drops the spans; ``prometheus+otel 10%``, the same with
a trace-id ratio sampler keeping one trace in ten.

- **end to end**: microseconds per chunk from provider delta to encoded frame through a
  real Session (the harness of ``benchmarks.core``: a provider that yields instantly, a
  connection whose ``send`` only counts; the provider's and the connection's own costs
  measured alone and subtracted), with replies of 500 and of 50 chunks, one frame per
  chunk. The modes run interleaved, round after round, and each keeps its best round, so
  a slower moment of the machine does not land on one mode only.
- **hooks alone**: the hook calls one run makes (start, provider call, first chunk, end,
  sealed) timed directly on a run-like object, divided by the chunks of a reply: the
  per-chunk share without the noise of the end-to-end figure.

No hook is called per chunk: what a run produced is counted once at its end, what a
writer sent is read from its own counters at collection time.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec

from streamcore import Config, ConnectionInfo, Engine

from .core import InstantProvider, SequentialConnection, _provider_only, _send_alone
from .report import RESULTS, machine

MODES = ("off", "prometheus", "prometheus+otel", "prometheus+otel 10%")


def _quiet_logs() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # no log I/O in timings


def _tracer_provider(ratio: float = 1.0) -> Any:
    """An SDK tracer provider that records spans (all, or a ``ratio`` of the traces) and
    exports them to nowhere, in batches."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased
    except ImportError:
        return None

    class Null(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ALWAYS_ON if ratio >= 1 else TraceIdRatioBased(ratio))
    provider.add_span_processor(BatchSpanProcessor(Null(), max_queue_size=1 << 16))
    return provider


def _hooks_inserted() -> bool:
    try:
        msgspec.convert({"metrics": {"enabled": True}}, Config)
    except msgspec.ValidationError:
        return False
    import inspect

    return "telemetry" in inspect.signature(Engine.__init__).parameters


def _otel(mode: str, tracer_providers: dict[str, Any]) -> Any:
    return tracer_providers.get("sampled" if mode.endswith("%") else "all") if "otel" in mode else None


def _engine(mode: str, per_message: int, tracer_providers: dict[str, Any]) -> Engine:
    sections: dict[str, Any] = {
        "limits": {"coalesce_chunks": False, "messages_per_interval": 1 << 30, "history_messages": 0},
    }
    if mode == "off":
        return Engine(msgspec.convert(sections, Config), provider=InstantProvider(per_message))
    from streamcore.metrics import Instruments

    sections["metrics"] = {"enabled": True}
    tracer_provider = _otel(mode, tracer_providers)
    telemetry = Instruments(otel=tracer_provider is not None, tracer_provider=tracer_provider)
    return Engine(msgspec.convert(sections, Config), provider=InstantProvider(per_message), telemetry=telemetry)


async def _run(mode: str, n: int, per_message: int, tracer_providers: dict[str, Any]) -> tuple[float, int, Engine]:
    engine = _engine(mode, per_message, tracer_providers)
    conn = SequentialConnection(n // per_message)
    gc.collect()
    t0 = time.perf_counter()
    await engine.serve(conn, ConnectionInfo())
    elapsed = time.perf_counter() - t0
    await engine.aclose()
    return elapsed, conn.frames, engine


def end_to_end(
    n: int, per_message: int, rounds: int, modes: tuple[str, ...], tracer_providers: dict[str, Any]
) -> dict[str, Any]:
    async def main():
        base = min([await _provider_only(n, per_message) for _ in range(3)])
        send = min([await _send_alone(n) for _ in range(3)]) / n
        best: dict[str, tuple[float, int]] = {}
        counted = None
        for r in range(rounds):
            order = modes if r % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                elapsed, frames, engine = await _run(mode, n, per_message, tracer_providers)
                if mode == "prometheus":
                    counted = engine.telemetry.value(
                        "streamcore_chunks_total", provider="InstantProvider", model="instant", kind="text"
                    )
                if mode not in best or elapsed < best[mode][0]:
                    best[mode] = (elapsed, frames)
        return base, send, best, counted

    base, send, best, counted = anyio.run(main)
    out: dict[str, Any] = {"chunks": n, "chunks_per_message": per_message, "rounds": rounds, "modes": {}}
    for mode, (elapsed, frames) in best.items():
        out["modes"][mode] = {"us_per_chunk": (elapsed - base - send * frames) / n * 1e6, "frames": frames}
    off = out["modes"]["off"]["us_per_chunk"]
    for mode in best:
        out["modes"][mode]["added_us_per_chunk"] = out["modes"][mode]["us_per_chunk"] - off
    out["chunks_counted_by_prometheus"] = counted
    return out


def hooks_alone(calls: int, tracer_providers: dict[str, Any]) -> dict[str, Any]:
    """Microseconds one run's hook calls take, per mode, timed directly."""
    from streamcore.metrics import NOOP, Instruments

    provider = SimpleNamespace(name="bench", model="m")
    session = SimpleNamespace(id="session-1", info=ConnectionInfo(), outbox=None)
    out: dict[str, Any] = {}
    for mode in MODES:
        if mode == "off":
            t: Any = NOOP
        else:
            tracer_provider = _otel(mode, tracer_providers)
            if "otel" in mode and tracer_provider is None:
                continue
            t = Instruments(otel=tracer_provider is not None, tracer_provider=tracer_provider)
            t.bind(SimpleNamespace(provider=provider, _tg=None))
        machine_ = SimpleNamespace(parts=["x"] * 500, seq=502, ended=None)
        request = SimpleNamespace(model="m", options={}, json_mode=False)

        def one_run(t: Any = t, request: Any = request, machine_: Any = machine_) -> None:
            run = SimpleNamespace(
                message_id="msg-1", request_id=None, purpose="chat", request=request,
                t0=time.perf_counter(), machine=machine_, entries=[],
            )
            t.on_run_start(run, session)
            t.on_provider_call(run)
            t.on_first_chunk(run, 0.2)
            t.on_run_end(run, "complete", None, None, "m", 0.2)
            t.on_run_sealed(run)

        for _ in range(min(calls, 2000)):  # warm up (label children, code paths)
            one_run()
        best = float("inf")
        for _ in range(5):
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(calls):
                one_run()
            best = min(best, time.perf_counter() - t0)
        us = best / calls * 1e6
        out[mode] = {"us_per_run": us, "us_per_chunk_500": us / 500, "us_per_chunk_50": us / 50}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_bench")
    parser.add_argument("--quick", action="store_true", help="fewer chunks and rounds (a smoke run)")
    parser.add_argument("--chunks", type=int, default=None, help="chunks per measured run (default 200,000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per mode (default 7)")
    args = parser.parse_args(argv)
    _quiet_logs()
    n = args.chunks or (20_000 if args.quick else 200_000)
    rounds = args.rounds or (3 if args.quick else 7)
    hooks = _hooks_inserted()
    tracer_providers = {"all": _tracer_provider(), "sampled": _tracer_provider(0.1)}
    modes = MODES if tracer_providers["all"] is not None else MODES[:2]
    results: dict[str, Any] = {"machine": machine(), "hooks_inserted": hooks, "target_added_us_per_chunk": 0.3}
    if not hooks:
        print("WARNING: the telemetry hooks are not in the engine yet (no [metrics] config or Engine(telemetry=)):"
              " end-to-end figures skipped")
    else:
        results["end_to_end"] = [
            end_to_end(n, per, rounds, modes, tracer_providers) for per in (500, 50)
        ]
    results["hooks_alone"] = hooks_alone(20_000 if args.quick else 100_000, tracer_providers)
    for tracer_provider in tracer_providers.values():
        if tracer_provider is not None:
            tracer_provider.shutdown()

    print("\n## Monitoring cost per chunk\n")
    if hooks:
        print("| chunks per reply | mode | engine µs/chunk | added µs/chunk |")
        print("|---:|---|---:|---:|")
        for r in results["end_to_end"]:
            for mode, m in r["modes"].items():
                per, us, added = r["chunks_per_message"], m["us_per_chunk"], m["added_us_per_chunk"]
                print(f"| {per} | {mode} | {us:.3f} | {added:+.3f} |")
        print(f"\n{n:,} chunks per run, best of {rounds} interleaved rounds; one frame per chunk.")
    print("\n| mode | hooks µs/run | µs/chunk, 500-chunk replies | µs/chunk, 50-chunk replies |")
    print("|---|---:|---:|---:|")
    for mode, m in results["hooks_alone"].items():
        print(f"| {mode} | {m['us_per_run']:.2f} | {m['us_per_chunk_500']:.4f} | {m['us_per_chunk_50']:.4f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("metrics-quick.json" if args.quick else "metrics.json")
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
