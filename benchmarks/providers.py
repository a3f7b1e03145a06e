"""Provider cost per chunk: ``openai`` and ``litellm`` against the same local stream.

The OpenAI-format server runs in its own process and sends each response as one pre-built
burst, so what is measured is the provider's own work per chunk (HTTP, SSE parsing,
decoding), not the server's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent


def _measure(name: str, port: int, chunks: int, runs: int) -> float:
    os.environ.setdefault("OPENAI_API_KEY", "sk-local-benchmark")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from streamcore import ChatMessage, GenerationRequest, load_provider

    base = f"http://127.0.0.1:{port}/v1"
    if name == "openai":
        provider = load_provider("openai", model="ok", options={"base_url": base})
    else:
        provider = load_provider("litellm", model="openai/ok", options={"api_base": base})
    request = GenerationRequest([ChatMessage("user", "go")])

    async def once() -> float:
        t0 = time.perf_counter()
        n = 0
        async for item in provider.stream(request):
            n += isinstance(item, str)
        assert n == chunks, (name, n)
        return time.perf_counter() - t0

    async def main() -> float:
        await once()  # warm-up: connection pool, imports
        return min([await once() for _ in range(runs)])

    return anyio.run(main) / chunks * 1e6


def bench_providers(chunks: int, runs: int = 3) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-m", "streamcore.testing", "--chunks", str(chunks), "--burst"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])
        return {
            "openai_us_per_chunk": _measure("openai", port, chunks, runs),
            "litellm_us_per_chunk": _measure("litellm", port, chunks, runs),
        }
    finally:
        proc.terminate()
        proc.wait(10)
