"""The FastAPI example runs under real uvicorn: HTTP routes beside the WebSocket, broadcasts."""

from __future__ import annotations

import httpx
import pytest

from streamcore.adapters.uvicorn import serve

from .helpers import check_stream, connect

pytestmark = pytest.mark.anyio


async def test_fastapi_rag_example(monkeypatch):
    monkeypatch.setenv("STREAMCORE_PROVIDER", "demo")
    from examples import rag_app

    async with serve(rag_app.engine, "127.0.0.1", 0, app=rag_app.app) as (host, port):
        base = f"http://{host}:{port}/api/v1"
        url = f"ws://{host}:{port}/api/v1/ws"
        async with connect(url) as a, connect(url) as b, httpx.AsyncClient(base_url=base, timeout=15) as http:
            assert (await http.get("/health")).json() == {"status": "ok", "clients": 2}
            # Indexing progress is broadcast to every client.
            r = await http.post("/index", json={"names": ["a.pdf", "b.pdf", "c.pdf"]})
            assert r.json() == {"indexed": 3}
            for client in (a, b):
                progress = [await client.recv() for _ in range(3)]
                assert [p["type"] for p in progress] == ["INDEXING_PROGRESS"] * 3
                assert [p["data"]["done"] for p in progress] == [1, 2, 3]
            # A query over HTTP; its follow-up questions reach every WebSocket client.
            r = await http.post("/query", json={"question": "Comment fonctionne l'indexation ?"})
            assert "indexation" in r.json()["answer"]
            for client in (a, b):
                follow = await client.recv()
                assert follow["type"] == "FOLLOW_UP_QUESTIONS" and len(follow["data"]["questions"]) == 3
            # And the WebSocket speaks the full protocol.
            await a.send("USER_MESSAGE", {"content": "Bonjour"})
            assert check_stream(await a.until("AI_MESSAGE_END"))["stopReason"] == "complete"
            assert (await http.get(f"http://{host}:{port}/openapi.json")).status_code == 200


async def test_asgi_app_mounts_under_any_path():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from streamcore import Config, Engine
    from streamcore.adapters.asgi import StreamcoreASGI

    config = Config()
    config.provider.options = {"delay_ms": 0}
    engine = Engine(config)
    app = Starlette(routes=[
        Route("/", lambda request: PlainTextResponse("home")),
        Mount("/chat", app=StreamcoreASGI(engine, lifespan=False)),  # serves /chat/ws
    ])
    async with serve(engine, "127.0.0.1", 0, app=app) as (host, port):
        async with connect(f"ws://{host}:{port}/chat/ws") as c:
            await c.send("USER_MESSAGE", {"content": "mounted"})
            assert check_stream(await c.until("AI_MESSAGE_END"))["isComplete"]
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"http://{host}:{port}/")).text == "home"
            assert (await http.get(f"http://{host}:{port}/chat/healthz")).json()["status"] == "ok"
