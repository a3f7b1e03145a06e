"""``streamcore serve --workers 2`` with metrics: every worker's /metrics reports the sum.

Real worker processes on one port (SO_REUSEPORT) sharing a real redis-server, as in
test_workers.py; the supervisor gives them one PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import anyio
import pytest

pytest.importorskip("prometheus_client")

from .helpers import connect  # noqa: E402
from .test_metrics import sample, samples  # noqa: E402
from .test_redis_fixtures import redis_server, unique_prefix  # noqa: E402,F401 - fixtures
from .test_workers import bearer, make_server, write_config  # noqa: E402,F401 - fixtures

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_every_worker_reports_the_sum_of_all(redis_server, make_server, tmp_path):  # noqa: F811 - fixture
    import httpx

    config = write_config(tmp_path, redis_server.url, unique_prefix())
    config.write_text(config.read_text() + '\n[metrics]\nenabled = true\n')
    server = make_server(config, workers=2)
    url = await server.ready()
    sessions = set()
    for i in range(12):  # the kernel spreads connections over both workers
        async with connect(url, **bearer(f"u{i}")) as c:
            await c.send("USER_MESSAGE", {"content": "hi"})
            sessions.add((await c.until("AI_MESSAGE_START"))[-1]["metadata"]["sessionId"])
            await c.send("STOP_GENERATION", {})
            await c.until("AI_MESSAGE_END")
    base = url.replace("ws://", "http://").rsplit("/", 1)[0]
    chat = {"provider": "demo", "model": "demo-1", "purpose": "chat"}
    seen = []
    async with httpx.AsyncClient(base_url=base) as http:
        with anyio.fail_after(15):
            # Each worker publishes every second; any worker's answer covers all of them.
            while len(seen) < 8:
                response = await http.get("/metrics", headers={"Connection": "close"})
                assert response.status_code == 200
                m = samples(response.text)
                if sample(m, "streamcore_runs_started_total", **chat) < 12:
                    await anyio.sleep(0.3)
                    continue
                seen.append(m)
    for m in seen:
        assert sample(m, "streamcore_connections_total") == 12
        assert sample(m, "streamcore_runs_started_total", **chat) == 12
        assert sample(m, "streamcore_runs_ended_total", **chat, stop_reason="user_cancelled") == 12
        assert sample(m, "streamcore_connections_open") == 0
        assert sample(m, "streamcore_runs_active") == 0
        assert sample(m, "streamcore_frames_sent_total") >= 12 * 4
    server.terminate()
    assert server.proc.returncode == 0
