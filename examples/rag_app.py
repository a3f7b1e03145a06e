"""A FastAPI app in the shape of the RAG seed, with streamcore mounted at /api/v1/ws.

Its own HTTP routes sit beside the WebSocket:

- ``POST /api/v1/query`` answers a question over plain HTTP, then generates follow-up
  questions in the background and broadcasts them (FOLLOW_UP_QUESTIONS) to every client;
- ``POST /api/v1/index`` "indexes" documents and broadcasts INDEXING_PROGRESS after each;
- ``GET /api/v1/health``.

The WebSocket speaks the whole streamcore protocol (streamed chat, objectives...).

Run it with ``uvicorn examples.rag_app:app`` (demo provider, no key needed), or point
``STREAMCORE_CONFIG`` at a config file to use a real model.
"""

from __future__ import annotations

import anyio
import structlog
from fastapi import BackgroundTasks, FastAPI
from pydantic import BaseModel

from streamcore import ChatMessage, Engine, EventType, load_config
from streamcore.adapters.starlette import streamcore_lifespan, websocket_endpoint
from streamcore.protocol import FollowUpQuestionsData
from streamcore.provider import collect_text

log = structlog.get_logger("rag_app")

engine = Engine(load_config())
app = FastAPI(title="RAG service", lifespan=streamcore_lifespan(engine))
app.add_api_websocket_route("/api/v1/ws", websocket_endpoint(engine))


class Query(BaseModel):
    question: str


class Documents(BaseModel):
    names: list[str]


@app.get("/api/v1/health")
async def health() -> dict:
    return {"status": "ok", "clients": len(engine.sessions)}


@app.post("/api/v1/query")
async def query(body: Query, background: BackgroundTasks) -> dict:
    answer = await collect_text(engine.provider, engine.request([ChatMessage("user", body.question)]))
    background.add_task(broadcast_follow_ups, body.question, answer)
    return {"answer": answer}


async def broadcast_follow_ups(question: str, answer: str) -> None:
    """The seed's generate_follow_up_questions: errors are logged, never raised."""
    try:
        questions = await engine.follow_up_questions(question, answer)
    except Exception as exc:
        log.error("follow_up.failed", error=str(exc))
        return
    if questions:
        engine.broadcast(EventType.FOLLOW_UP_QUESTIONS, FollowUpQuestionsData("", questions))


@app.post("/api/v1/index")
async def index(body: Documents) -> dict:
    total = len(body.names)
    for done, name in enumerate(body.names, 1):
        await anyio.sleep(0)  # real indexing work would happen here
        engine.broadcast(EventType.INDEXING_PROGRESS, {"document": name, "done": done, "total": total})
    return {"indexed": total}
