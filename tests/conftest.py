import os

import pytest

# litellm must never reach the network in tests: no cost-map download, no telemetry.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _fake_upstream_key(monkeypatch):
    # The local OpenAI-format server accepts any key; real keys never appear in tests.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
