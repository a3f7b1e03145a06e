"""The benchmark sections, in the order they run."""

from __future__ import annotations

from typing import Callable

from .report import Report


def codec(report: Report, quick: bool) -> None:
    from .core import bench_codec

    r = bench_codec(30_000 if quick else 300_000)
    report.add("codec: AI_MESSAGE_CHUNK encode", {
        "encoder": "streamcore chunk path, clock read per frame",
        "frames_per_s": r["streamcore_chunk_per_s"],
        "x_json_dumps": r["streamcore_chunk_per_s"] / r["json_dumps_dict_per_s"],
    })
    report.add("codec: AI_MESSAGE_CHUNK encode", {
        "encoder": "streamcore chunk path, clock read per batch (as the writer does)",
        "frames_per_s": r["streamcore_chunk_batched_per_s"],
        "x_json_dumps": r["streamcore_chunk_batched_per_s"] / r["json_dumps_dict_per_s"],
    })
    report.add("codec: AI_MESSAGE_CHUNK encode", {
        "encoder": "json.dumps(dict) + new_id + now_ms", "frames_per_s": r["json_dumps_dict_per_s"], "x_json_dumps": 1.0,
    })
    if "orjson_dict_per_s" in r:
        report.add("codec: AI_MESSAGE_CHUNK encode", {
            "encoder": "orjson.dumps(dict) + new_id + now_ms", "frames_per_s": r["orjson_dict_per_s"],
            "x_json_dumps": r["orjson_dict_per_s"] / r["json_dumps_dict_per_s"],
        })
    report.add("codec: AI_MESSAGE_CHUNK encode", {
        "encoder": "seed's naive loop: json.dumps + uuid4 + time", "frames_per_s": r["naive_seed_per_s"],
        "x_json_dumps": r["naive_seed_per_s"] / r["json_dumps_dict_per_s"],
    })
    for key, label in [
        ("streamcore_decode_validated_per_s", "streamcore decode (tagged union, validated)"),
        ("json_loads_per_s", "json.loads (parse only, no validation)"),
        ("orjson_loads_per_s", "orjson.loads (parse only, no validation)"),
    ]:
        if key in r:
            report.add("codec: client frame decode", {"decoder": label, "frames_per_s": r[key]})


def engine(report: Report, quick: bool) -> None:
    from .core import bench_engine

    r = bench_engine(20_000 if quick else 200_000)
    report.add("engine: provider delta to encoded frame", {
        "mode": "one frame per chunk (coalesce_chunks = false)",
        "us_per_chunk": r["engine_us_per_chunk_one_frame_each"],
        "frames": r["frames_one_frame_each"],
    })
    report.add("engine: provider delta to encoded frame", {
        "mode": "merged (default; instant provider, nothing awaits between chunks)",
        "us_per_chunk": r["engine_us_per_chunk_merged"],
        "frames": r["frames_merged"],
    })
    report.note("engine: provider delta to encoded frame",
                f"{r['chunks']:,} chunks in messages of {r['chunks_per_message']}; subtracted: the provider "
                f"alone ({r['provider_alone_us_per_chunk']:.3f} us/chunk) and the test connection's send "
                f"({r['connection_send_us_per_frame']:.3f} us/frame); per-message work (THINKING/START/END, "
                "task, log line) included.")


SECTIONS: dict[str, Callable[[Report, bool], None]] = {
    "codec": codec,
    "engine": engine,
}


ADAPTERS = ("websockets", "asgi", "starlette")


def transport(report: Report, quick: bool) -> None:
    """Chunks per second through each adapter, beside its raw transport and the naive loop."""
    from . import e2e

    ceiling = e2e.client_ceiling(20_000 if quick else 100_000)
    report.add("load generator ceiling", {"client": "benchmarks/loadgen.py (asyncio Protocol, header-only parsing)",
                                          "frames_per_s": ceiling})
    total = 10_000 if quick else 60_000
    levels = (1, 100) if quick else (1, 100, 1000)
    results: dict[tuple[str, str, int], dict] = {}
    for adapter in ADAPTERS:
        for connections in levels:
            runs = 1 if quick else 3
            chunks = max(10, total // connections)
            for impl, coalesce, label in [
                ("raw", False, "raw transport, pre-encoded frames"),
                ("streamcore", False, "streamcore, one frame per chunk"),
                ("streamcore", True, "streamcore, merging (provider faster than socket)"),
                ("naive", False, "seed's naive loop"),
            ]:
                r = e2e.median_of(runs, e2e.throughput, adapter, impl, connections, chunks, coalesce=coalesce)
                results[(adapter, label, connections)] = r
                report.add("end to end: chunks per second delivered", {
                    "adapter": adapter, "connections": connections, "server": label,
                    "chunks_per_s": r["chunks_per_s"], "frames_per_s": r["frames_per_s"],
                })
            raw = results[(adapter, "raw transport, pre-encoded frames", connections)]["chunks_per_s"]
            sc = results[(adapter, "streamcore, one frame per chunk", connections)]["chunks_per_s"]
            merged = results[(adapter, "streamcore, merging (provider faster than socket)", connections)]["chunks_per_s"]
            naive = results[(adapter, "seed's naive loop", connections)]["chunks_per_s"]
            report.add("end to end: ratios", {
                "adapter": adapter, "connections": connections,
                "streamcore_vs_raw": sc / raw, "merged_vs_raw_frames": merged / raw, "streamcore_vs_naive": sc / naive,
            })
    report.note("end to end: chunks per second delivered",
                f"{total:,} chunks of 24 characters per case, split over the connections; median of "
                f"{'1' if quick else '3'} runs; " + e2e.env_note())

    def draw(path):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(ADAPTERS), figsize=(13, 4), sharey=True)
        for ax, adapter in zip(axes, ADAPTERS, strict=True):
            for label in ("raw transport, pre-encoded frames", "streamcore, one frame per chunk", "seed's naive loop"):
                ax.plot(levels, [results[(adapter, label, c)]["chunks_per_s"] for c in levels], marker="o", label=label)
            ax.set_xscale("log")
            ax.set_title(adapter)
            ax.set_xlabel("concurrent connections")
        axes[0].set_ylabel("chunks per second")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=90)

    report.chart("throughput", draw)


def latency(report: Report, quick: bool) -> None:
    """Paced streams: chunk latency and time to first chunk, streamcore beside raw."""
    from . import e2e

    streams = 100 if quick else 1000
    rows = {}
    for adapter in ADAPTERS:
        for impl in ("raw", "streamcore"):
            r = e2e.latency(adapter, impl, streams, rate=50, chunks=25 if quick else 100)
            rows[(adapter, impl)] = r
            report.add("latency: streams of 50 chunks/s", {"adapter": adapter, "server": impl, **r})
        added = rows[(adapter, "streamcore")]["chunk_p99_ms"] - rows[(adapter, "raw")]["chunk_p99_ms"]
        report.add("latency: added by streamcore", {
            "adapter": adapter, "streams": streams,
            "added_p50_ms": rows[(adapter, "streamcore")]["chunk_p50_ms"] - rows[(adapter, "raw")]["chunk_p50_ms"],
            "added_p99_ms": added,
        })

    def draw(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        labels, p50, p99 = [], [], []
        for (adapter, impl), r in rows.items():
            labels.append(f"{adapter}\n{impl}")
            p50.append(r["chunk_p50_ms"])
            p99.append(r["chunk_p99_ms"])
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_ylabel("chunk latency, ms")
        ax.set_title(f"{streams} streams x 50 chunks/s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=90)

    report.chart("latency", draw)


def memory(report: Report, quick: bool) -> None:
    from . import e2e

    for adapter in ADAPTERS:
        report.add("memory per connection (server RSS)", {"adapter": adapter, **e2e.memory(adapter, 200 if quick else 1000)})


def deflate(report: Report, quick: bool) -> None:
    """permessage-deflate: its cost in chunk rate, its saving in bytes."""
    from . import e2e

    for adapter in ("websockets", "asgi"):
        for compression in (False, True):
            r = e2e.median_of(1, e2e.throughput, adapter, "streamcore", 1, 5_000 if quick else 20_000, compression=compression)
            report.add("permessage-deflate", {"adapter": adapter, "compression": compression,
                                              "chunks_per_s": r["chunks_per_s"],
                                              "wire_bytes_per_chunk": r["wire_bytes_per_chunk"]})
    report.note("permessage-deflate", "one connection, one frame per chunk of 24 identical characters (highly "
                "compressible: real text saves less); wire bytes include WebSocket framing.")


SECTIONS.update({"transport": transport, "latency": latency, "memory": memory, "deflate": deflate})


def providers(report: Report, quick: bool) -> None:
    from .providers import bench_providers

    r = bench_providers(1000 if quick else 5000, runs=2 if quick else 3)
    report.add("providers: microseconds per chunk, same local stream", {
        "openai_us_per_chunk": r["openai_us_per_chunk"],
        "litellm_us_per_chunk": r["litellm_us_per_chunk"],
        "litellm_over_openai": r["litellm_us_per_chunk"] / r["openai_us_per_chunk"],
    })
    report.note("providers: microseconds per chunk, same local stream",
                "the OpenAI-format server runs in its own process and sends each reply as one burst, "
                "so the figure is the provider's own work (HTTP, SSE, decoding); best of the runs.")


SECTIONS = {name: SECTIONS[name] for name in ("codec", "engine")} | {"providers": providers} | {
    name: SECTIONS[name] for name in ("transport", "latency", "memory", "deflate")
}
