"""Prometheus metrics (streamcore.metrics): a scripted session, then /metrics read back.

The session chats, stops, fails, resumes and hits the rate and concurrency limits over
in-memory connections driving the real engine; then ``GET /metrics`` (through the ASGI
adapter) and ``engine.telemetry.value`` must report exactly what happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import msgspec
import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from streamcore import Completion, Config, ConnectionInfo, Engine, Reasoning  # noqa: E402
from streamcore.auth import AuthError  # noqa: E402
from streamcore.errors import ConnectionClosed, ProviderError  # noqa: E402
from streamcore.events import Usage  # noqa: E402
from streamcore.http import StaticRoutes  # noqa: E402
from streamcore.metrics import NOOP, Instruments, Telemetry, metrics_app, multiprocess_metrics  # noqa: E402
from streamcore.provider import GenerationRequest  # noqa: E402
from streamcore.testing import memory_pair  # noqa: E402

from .helpers import ScriptedProvider  # noqa: E402

pytestmark = pytest.mark.anyio

MODEL = "scripted-1"
LABELS = {"provider": "by-content", "model": MODEL}


class ByContentProvider:
    """Behaves according to the user's last message: chat, hold (until stopped), fail."""

    name = "by-content"
    model = MODEL

    def __init__(self) -> None:
        self.holding = anyio.Event()

    async def stream(self, request):
        content = request.messages[-1].content if request.messages else ""
        if content == "hold":
            yield "a"
            self.holding.set()
            await anyio.sleep_forever()
        if content == "fail":
            yield "x"
            raise ProviderError("upstream broke")
        if content == "think":
            yield Reasoning("hmm ")
            yield Reasoning("ok ")
            yield "yes"
            yield Completion("complete", Usage(2, 5, 7, reasoning_tokens=3), f"{MODEL}-0613")
            return
        for piece in ("Hello", ", ", "world", "!"):
            yield piece
        yield Completion("complete", Usage(3, 4, 7), f"{MODEL}-0613")


class CountingClient:
    """The client side of an in-memory connection that counts what it sends and receives."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_out = 0

    async def send(self, type: str, data: Any = None, **fields: Any) -> None:
        await self.send_raw(json.dumps({"type": type, "data": {} if data is None else data, **fields}))

    async def send_raw(self, raw: str) -> None:
        self.frames_out += 1
        await self._client.send_raw(raw)

    async def receive(self) -> dict[str, Any]:
        try:
            raw = await self._client._inbound.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise ConnectionClosed(1000) from None
        self.frames_in += 1
        self.bytes_in += len(raw)
        return msgspec.json.decode(raw)

    async def until(self, type: str, message_id: str | None = None) -> list[dict[str, Any]]:
        frames = []
        while True:
            frame = await self.receive()
            frames.append(frame)
            if frame["type"] == type and (message_id is None or frame["data"].get("messageId") == message_id):
                return frames


@contextlib.asynccontextmanager
async def connection(engine: Engine, info: ConnectionInfo | None = None, *, buffer: int = 1 << 16):
    """An in-memory connection; on exit the client leaves and every frame the server wrote
    is read (so the client's counts are complete)."""
    conn, client = memory_pair(buffer)
    counting = CountingClient(client)
    served = anyio.Event()

    async def serve() -> None:
        try:
            await engine.serve(conn, info or ConnectionInfo())
        finally:
            served.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.fail_after(10):
            yield counting
            await client.aclose()
            while not served.is_set():  # read while the server finishes (its writer may wait on us)
                with anyio.move_on_after(0.05):
                    await counting.receive()
    with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
        while True:
            raw = client._inbound.receive_nowait()
            counting.frames_in += 1
            counting.bytes_in += len(raw)


def metrics_engine(provider: Any = None, **sections: Any) -> Engine:
    sections.setdefault("metrics", {"enabled": True})
    return Engine(msgspec.convert(sections, Config), provider=provider or ByContentProvider())


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(table: dict, name: str, **labels: str) -> float:
    return table.get((name, frozenset(labels.items())), 0.0)


async def http_get(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.get(path)
    return response.status_code, dict(response.headers), response.content


USERS = {"good": "ann", "good-too": "bob"}


def verifier(token: str | None, info: ConnectionInfo) -> str:
    if token not in USERS:
        raise AuthError("bad token")
    return USERS[token]


async def test_a_scripted_session_is_counted_exactly_in_metrics_and_from_python():
    from streamcore.adapters.asgi import StreamcoreASGI

    provider = ByContentProvider()
    engine = Engine(
        msgspec.convert(
            {
                "metrics": {"enabled": True},
                "limits": {"messages_per_interval": 12, "interval": 3600, "max_concurrent_generations": 1},
            },
            Config,
        ),
        provider=provider,
        verifier=verifier,
    )
    good = {"authorization": "Bearer good"}
    clients = []
    async with connection(engine, ConnectionInfo(headers=good, query={"reconnect": "2"})) as a:
        clients.append(a)
        # 1. a complete chat
        await a.send("USER_MESSAGE", {"content": "chat"}, id="r1")
        first = await a.until("AI_MESSAGE_END")
        chat_id = first[-1]["data"]["messageId"]
        assert first[-1]["data"]["stopReason"] == "complete"
        # 2. a run stopped by the user, and a second one refused meanwhile (concurrency 1)
        await a.send("USER_MESSAGE", {"content": "hold"}, id="r2")
        await a.until("AI_MESSAGE_CHUNK")
        await a.send("USER_MESSAGE", {"content": "chat"}, id="r3")
        refused = await a.until("ERROR")
        assert refused[-1]["data"]["code"] == "RATE_LIMIT"
        await a.send("STOP_GENERATION", {})
        stopped = await a.until("AI_MESSAGE_END")
        assert stopped[-1]["data"]["stopReason"] == "user_cancelled"
        # 3. a provider failure
        await a.send("USER_MESSAGE", {"content": "fail"}, id="r4")
        failed = await a.until("AI_MESSAGE_END")
        assert [f["data"]["code"] for f in failed if f["type"] == "ERROR"] == ["GENERATION_FAILED"]
        # 4. a resume of the finished chat (from the log), and one of nothing
        await a.send("RESUME", {"messageId": chat_id}, id="r5")
        replay = await a.until("AI_MESSAGE_END")
        assert replay[0]["type"] == "AI_MESSAGE_START"
        await a.send("RESUME", {"messageId": "msg-nothing"}, id="r6")
        assert (await a.until("ERROR"))[-1]["data"]["code"] == "NOT_FOUND"
        # 5. an invalid frame
        await a.send_raw("{not json")
        assert (await a.until("ERROR"))[-1]["data"]["code"] == "INVALID_MESSAGE"
        # 6. the message rate: 8 frames so far, 12 allowed; the 13th and 14th are refused,
        # the first refusal answered, the next silent
        for i in range(6):
            await a.send("PING", {"timestamp": i})
        replies = [await a.receive() for _ in range(5)]
        assert [f["type"] for f in replies] == ["PONG"] * 4 + ["ERROR"]
        assert replies[-1]["data"]["code"] == "RATE_LIMIT"
    # Another user: ann's message budget is spent, and stays spent across her reconnects.
    async with connection(engine, ConnectionInfo(headers={"authorization": "Bearer good-too"})) as b:
        clients.append(b)
        await b.send("PING", {"timestamp": 1})
        await b.until("PONG")
    async with connection(engine, ConnectionInfo(headers={"authorization": "Bearer bad"})) as bad:
        clients.append(bad)
        assert (await bad.until("ERROR"))[-1]["data"]["code"] == "AUTH_FAILED"

    status, headers, body = await http_get(StreamcoreASGI(engine), "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    m = samples(body.decode())

    assert sample(m, "streamcore_connections_total") == 2  # the refused one never opened
    assert sample(m, "streamcore_connections_open") == 0
    assert sample(m, "streamcore_client_reconnects_total") == 1
    chat = {**LABELS, "purpose": "chat"}
    assert sample(m, "streamcore_runs_started_total", **chat) == 3
    assert sample(m, "streamcore_runs_ended_total", **chat, stop_reason="complete") == 1
    assert sample(m, "streamcore_runs_ended_total", **chat, stop_reason="user_cancelled") == 1
    assert sample(m, "streamcore_runs_ended_total", **chat, stop_reason="error") == 1
    assert sample(m, "streamcore_runs_active") == 0
    assert sample(m, "streamcore_errors_total", code="GENERATION_FAILED") == 1
    assert sample(m, "streamcore_errors_total", code="NOT_FOUND") == 1
    assert sample(m, "streamcore_errors_total", code="INVALID_MESSAGE") == 1
    assert sample(m, "streamcore_errors_total", code="RATE_LIMIT") == 2  # concurrency + rate
    assert sample(m, "streamcore_errors_total", code="AUTH_FAILED") == 1
    assert sample(m, "streamcore_provider_failures_total", **LABELS, code="GENERATION_FAILED") == 1
    assert sample(m, "streamcore_rejections_total", reason="rate") == 2
    assert sample(m, "streamcore_rejections_total", reason="concurrency") == 1
    assert sample(m, "streamcore_rejections_total", reason="auth") == 1
    assert sample(m, "streamcore_resumes_total", source="log") == 1
    assert sample(m, "streamcore_replayed_entries_total") == 6  # START, 4 chunks, END
    assert sample(m, "streamcore_chunks_total", **LABELS, kind="text") == 4 + 1 + 1
    assert sample(m, "streamcore_tokens_total", **LABELS, type="input") == 3
    assert sample(m, "streamcore_tokens_total", **LABELS, type="output") == 4
    assert sample(m, "streamcore_time_to_first_chunk_seconds_count", **LABELS) == 3
    assert sample(m, "streamcore_run_duration_seconds_count", **LABELS) == 3
    assert sample(m, "streamcore_provider_duration_seconds_count", **LABELS) == 3
    assert sample(m, "streamcore_chunk_latency_seconds_count", **LABELS) == 1  # one run had > 1 delta
    # What the writers sent is exactly what the clients received.
    assert sample(m, "streamcore_frames_sent_total") == sum(c.frames_in for c in clients[:2])
    assert sample(m, "streamcore_sent_bytes_total") == sum(c.bytes_in for c in clients[:2])
    assert sample(m, "streamcore_frames_received_total") == sum(c.frames_out for c in clients[:2])
    assert sample(m, "streamcore_send_buffer_pending_bytes") == 0

    # The same numbers from Python.
    t = engine.telemetry
    assert t.value("streamcore_runs_started_total", **chat) == 3
    assert t.value("streamcore_errors_total", code="RATE_LIMIT") == 2
    assert t.value("streamcore_frames_sent_total") == sample(m, "streamcore_frames_sent_total")
    assert t.value("streamcore_runs_started_total", **{**chat, "model": "nope"}) is None
    await engine.aclose()


async def test_chunks_merged_under_backpressure_are_counted():
    pieces = tuple(f"piece-{i:04d} " for i in range(400))
    provider = ScriptedProvider(pieces)
    engine = metrics_engine(provider, limits={"send_buffer_bytes": 256})
    async with connection(engine, buffer=1) as c:
        await c.send("USER_MESSAGE", {"content": "hi"})
        with anyio.fail_after(5):
            while provider.closed < 1:
                await anyio.sleep(0.01)
        frames = await c.until("AI_MESSAGE_END")
    chunk_frames = sum(1 for f in frames if f["type"] == "AI_MESSAGE_CHUNK")
    assert chunk_frames < len(pieces)
    t = engine.telemetry
    assert t.value("streamcore_chunks_merged_total") == len(pieces) - chunk_frames
    assert t.value("streamcore_chunks_total", provider="ScriptedProvider", model="scripted-1", kind="text") == 400
    await engine.aclose()


async def test_reasoning_deltas_and_tokens_are_counted_apart():
    engine = metrics_engine()
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "think"})
        await c.until("AI_MESSAGE_END")
    t = engine.telemetry
    assert t.value("streamcore_chunks_total", **LABELS, kind="text") == 1
    assert t.value("streamcore_chunks_total", **LABELS, kind="reasoning") == 2
    assert t.value("streamcore_tokens_total", **LABELS, type="reasoning") == 3
    assert t.value("streamcore_chunk_latency_seconds_count", **LABELS) == 1
    await engine.aclose()


async def test_live_resume_counts_what_was_replayed_and_the_reconnect_header():
    provider = ScriptedProvider(tuple(f"w{i} " for i in range(8)), gate_after=3)
    engine = metrics_engine(provider)
    async with connection(engine, ConnectionInfo(user_id="ann")) as a:
        await a.send("USER_MESSAGE", {"content": "hi"})
        frames = await a.until("AI_MESSAGE_CHUNK")
        with anyio.fail_after(5):
            await provider.reached_gate.wait()
    message_id = frames[-1]["data"]["messageId"]
    info = ConnectionInfo(user_id="ann", headers={"x-streamcore-reconnect": "1"})
    async with connection(engine, info) as b:
        await b.send("RESUME", {"messageId": message_id, "lastSeq": 1})
        await b.until("AI_MESSAGE_CHUNK")  # the replay has begun: the run is still live
        provider.gate.set()
        await b.until("AI_MESSAGE_END")
    t = engine.telemetry
    assert t.value("streamcore_resumes_total", source="live") == 1
    assert t.value("streamcore_replayed_entries_total") == 3  # seqs 2..4: the three gated chunks
    assert t.value("streamcore_client_reconnects_total") == 1
    assert t.value("streamcore_connections_total") == 2
    await engine.aclose()


async def test_capacity_and_shutting_down_rejections():
    engine = metrics_engine(limits={"max_generations": 1, "max_concurrent_generations": 5})
    provider = engine.provider
    async with connection(engine, ConnectionInfo(user_id="ann")) as a:
        await a.send("USER_MESSAGE", {"content": "hold"})
        with anyio.fail_after(5):
            await provider.holding.wait()
        await a.send("USER_MESSAGE", {"content": "chat"})
        assert (await a.until("ERROR"))[-1]["data"]["code"] == "RATE_LIMIT"
        await a.send("STOP_GENERATION", {})
        await a.until("AI_MESSAGE_END")
    assert engine.telemetry.value("streamcore_rejections_total", reason="capacity") == 1
    await engine.aclose()


async def test_metrics_are_off_by_default_and_the_path_is_not_served():
    engine = Engine(provider=ByContentProvider())
    assert engine.telemetry is NOOP and not engine.telemetry.enabled
    assert engine.telemetry.value("streamcore_connections_total") is None
    status, _, _ = StaticRoutes(engine).respond("/metrics")
    assert status == 404
    await engine.aclose()


async def test_the_metrics_path_is_configurable_and_can_be_unserved():
    engine = metrics_engine(metrics={"enabled": True, "path": "/internal/metrics"})
    routes = StaticRoutes(engine)
    assert routes.respond("/metrics")[0] == 404
    status, headers, body = routes.respond("/internal/metrics")
    assert status == 200 and b"streamcore_connections_total 0.0" in body
    assert ("Cache-Control", "no-store") in headers
    hidden = metrics_engine(metrics={"enabled": True, "path": ""})
    assert StaticRoutes(hidden).respond("/metrics")[0] == 404
    assert hidden.telemetry.metrics_path is None
    assert hidden.telemetry.value("streamcore_connections_total") == 0  # still readable from Python
    await engine.aclose()
    await hidden.aclose()


def test_the_metrics_path_is_validated():
    from streamcore import load_config
    from streamcore.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics.path"):
        load_config(env={"STREAMCORE_METRICS_PATH": "metrics"})
    with pytest.raises(ConfigError, match="metrics.path"):
        load_config(env={"STREAMCORE_METRICS_PATH": "/ws"})
    assert load_config(env={"STREAMCORE_METRICS_ENABLED": "true"}).metrics.enabled


async def test_two_engines_in_one_process_keep_their_own_registries():
    one, two = metrics_engine(), metrics_engine()
    async with connection(one) as c:
        await c.send("USER_MESSAGE", {"content": "chat"})
        await c.until("AI_MESSAGE_END")
    chat = {**LABELS, "purpose": "chat"}
    assert one.telemetry.value("streamcore_runs_started_total", **chat) == 1
    assert two.telemetry.value("streamcore_runs_started_total", **chat) is None
    assert one.telemetry.registry is not two.telemetry.registry
    await one.aclose()
    await two.aclose()


def _register_model_handler(engine: Engine) -> None:
    @engine.on("MODEL", dict)
    def model(session, frame):
        session.generate(GenerationRequest([], model=frame.data["model"]))


async def test_model_labels_are_bounded():
    class Models:
        name = "many"
        model = None

        async def stream(self, request):
            yield "x"

    engine = Engine(msgspec.convert({"metrics": {"enabled": True}}, Config), provider=Models(),
                    telemetry=Instruments(max_label_values=2))
    _register_model_handler(engine)
    async with connection(engine) as c:
        for i in range(4):
            await c.send("MODEL", {"model": f"m{i}"})
            await c.until("AI_MESSAGE_END")
    t = engine.telemetry
    started = [t.value("streamcore_runs_started_total", provider="many", model=m, purpose="chat")
               for m in ("m0", "m1", "other")]
    assert started == [1, 1, 2], started
    await engine.aclose()


async def test_a_broken_hook_never_breaks_a_connection():
    telemetry = Instruments()
    engine = Engine(msgspec.convert({}, Config), provider=ByContentProvider(), telemetry=telemetry)
    # A session-like object missing everything: the hook logs once and returns.
    telemetry.on_connection_open(object())
    telemetry.on_run_start(object(), object())
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "chat"})
        end = (await c.until("AI_MESSAGE_END"))[-1]
    assert end["data"]["stopReason"] == "complete"
    await engine.aclose()


async def test_metrics_app_serves_the_metrics_for_framework_routes():
    engine = metrics_engine()
    status, headers, body = await http_get(metrics_app(engine), "/")
    assert status == 200 and b"# TYPE streamcore_runs_started_total counter" in body
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=metrics_app(engine)), base_url="http://t") as h:
        assert (await h.post("/")).status_code == 405
    await engine.aclose()


def test_the_noop_telemetry_accepts_every_hook():
    t = Telemetry()
    for hook, args in (
        ("on_connection_open", (None,)), ("on_connection_close", (None, 1000)), ("on_run_start", (None, None)),
        ("on_provider_call", (None,)), ("on_first_chunk", (None, 0.1)),
        ("on_run_end", (None, "complete", None, None, None, None)), ("on_run_sealed", (None,)),
        ("on_error", ("X",)), ("on_rejected", ("rate",)), ("on_resume", ("live", 1)),
    ):
        assert getattr(t, hook)(*args) is None
    assert t.metrics_response()[0] == 404


def test_a_missing_extra_is_a_config_error(monkeypatch):
    from streamcore.errors import ConfigError

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"streamcore-llm\[prometheus\]"):
        Instruments()


# --- multi-process mode -------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import anyio, msgspec, structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # stdout: metrics only
    from streamcore import Config, ConnectionInfo, Engine
    from streamcore.testing import memory_pair
    from tests.helpers import ScriptedProvider

    async def main():
        engine = Engine(msgspec.convert({"metrics": {"enabled": True}}, Config), provider=ScriptedProvider())
        assert engine.telemetry.prom.multiprocess
        conn, client = memory_pair()
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.serve, conn, ConnectionInfo())
            await client.send("USER_MESSAGE", {"content": "hi"})
            await client.receive_until("AI_MESSAGE_END")
            if sys.argv[2] == "stay":
                await anyio.sleep(1.5)  # a worker publishes every second: no scrape needed
                print("open", flush=True)
                sys.stdin.readline()  # keep the connection open until told
            await client.aclose()
        if sys.argv[2] == "read":
            print(engine.telemetry.metrics_response()[2].decode())
        await engine.aclose()

    anyio.run(main)
    """
)


def test_multiprocess_mode_sums_every_worker(tmp_path):
    from streamcore.metrics import worker_exited

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    config = msgspec.convert({"metrics": {"enabled": True}}, Config)
    env_before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    with multiprocess_metrics(config) as directory:
        assert directory and os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory
        env = {**os.environ}
        run = [sys.executable, str(script), root]
        staying = subprocess.Popen([*run, "stay"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            while (line := staying.stdout.readline()) and line.strip() != "open":
                pass  # log lines
            assert line.strip() == "open"
            subprocess.run([*run, "quiet"], env=env, check=True, timeout=60)
            out = subprocess.run([*run, "read"], env=env, check=True, timeout=60, capture_output=True, text=True).stdout
            m = samples(out)
            labels = {"provider": "ScriptedProvider", "model": "scripted-1", "purpose": "chat"}
            assert sample(m, "streamcore_runs_started_total", **labels) == 3
            assert sample(m, "streamcore_connections_total") == 3
            assert sample(m, "streamcore_connections_open") == 1  # the staying worker's
            # THINKING, START, at least one CHUNK, END: from the two that closed at least
            assert sample(m, "streamcore_frames_sent_total") >= 2 * 4
            # The staying worker dies without closing: its live gauges go with it.
            staying.kill()
            staying.wait(10)
            worker_exited(staying.pid)
            out = subprocess.run([*run, "read"], env=env, check=True, timeout=60, capture_output=True, text=True).stdout
            m = samples(out)
            assert sample(m, "streamcore_connections_open") == 0
            assert sample(m, "streamcore_runs_started_total", **labels) == 4  # counters stay
        finally:
            if staying.poll() is None:
                staying.kill()
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == env_before
    assert not os.path.exists(directory)


def test_multiprocess_metrics_is_a_no_op_when_metrics_are_off():
    with multiprocess_metrics(Config()) as directory:
        assert directory is None


def test_the_grafana_dashboard_queries_only_metrics_that_exist():
    import re
    from pathlib import Path

    path = Path(__file__).parent.parent / "docs" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    assert len(exprs) > 20
    text = Instruments().metrics_response()[2].decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    known = {name + s for name, kind in families.items() for s in suffixes[kind]}
    used = {name for e in exprs for name in re.findall(r"\bstreamcore_\w+", e)}
    assert used <= known, sorted(used - known)
    # Every metric is on the dashboard.
    assert {n for n in families if not any(u.startswith(n) for u in used)} == set()


async def test_a_refused_origin_is_counted():
    engine = metrics_engine(security={"allowed_origins": ["https://app.example.com"]})
    assert engine.origin_allowed("https://app.example.com")
    assert not engine.origin_allowed("https://evil.example.net")
    assert engine.telemetry.value("streamcore_rejections_total", reason="origin") == 1
    await engine.aclose()


async def test_without_histogram_internals_every_hook_publishes_at_once(monkeypatch):
    import streamcore.metrics

    monkeypatch.setattr(streamcore.metrics, "_histogram_internals", lambda children: False)
    engine = metrics_engine()
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "chat"})
        await c.until("AI_MESSAGE_END")
    registry = engine.telemetry.registry  # read without a collection-time sync
    assert registry.get_sample_value("streamcore_runs_started_total", {**LABELS, "purpose": "chat"}) == 1
    assert registry.get_sample_value("streamcore_time_to_first_chunk_seconds_count", LABELS) == 1
    assert registry.get_sample_value("streamcore_chunk_latency_seconds_count", LABELS) == 1
    assert engine.telemetry.value("streamcore_chunks_total", **LABELS, kind="text") == 4
    await engine.aclose()


async def test_a_collection_from_another_thread_sees_the_runs():
    engine = metrics_engine()
    async with connection(engine) as c:
        await c.send("USER_MESSAGE", {"content": "chat"})
        await c.until("AI_MESSAGE_END")
    # prometheus_client.start_http_server collects in its own thread.
    body = await anyio.to_thread.run_sync(lambda: engine.telemetry.prom.pc.generate_latest(engine.telemetry.registry))
    m = samples(body.decode())
    assert sample(m, "streamcore_runs_ended_total", **LABELS, purpose="chat", stop_reason="complete") == 1
    assert sample(m, "streamcore_run_duration_seconds_count", **LABELS) == 1
    await engine.aclose()
