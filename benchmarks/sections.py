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
                f"{r['chunks']:,} chunks in messages of {r['chunks_per_message']}; provider alone "
                f"{r['provider_alone_us_per_chunk']:.3f} us/chunk, subtracted; per-message work "
                "(THINKING/START/END, task, log line) included.")


SECTIONS: dict[str, Callable[[Report, bool], None]] = {
    "codec": codec,
    "engine": engine,
}
