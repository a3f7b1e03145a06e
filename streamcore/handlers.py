"""The built-in commands of SPEC.md, registered like any application's handler.

Chat, objectives, stop, ping and resume go through the same registry as ``engine.on``:
one dispatch path. A handler is ``handler(session, frame)``; a coroutine function runs
beside the connection's reader (bounded per connection), a plain function inline.
Handlers that start runs are plain functions: admission and AI_THINKING happen at once,
in frame order, and the run does its slow work (history, the provider) in its own task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .errors import NotFound, ProtocolError
from .objectives import objective_instructions
from .protocol import (
    EventType,
    GenerateObjective,
    ObjectiveUpdatedData,
    Ping,
    PongData,
    Resume,
    StopGeneration,
    UpdateObjective,
    UserMessage,
    _ClientFrame,
)
from .provider import ChatMessage, ObjectiveSpec
from .run import Conversation

if TYPE_CHECKING:
    from .engine import Engine
    from .session import Session

__all__ = ["register_builtins"]


def user_message(session: Session, frame: UserMessage) -> None:
    d = frame.data
    if not d.content.strip():
        raise ProtocolError("`content` must not be empty - at `$.data.content`", request_id=frame.id)
    conversation_id = d.conversationId
    if conversation_id is not None and not 0 < len(conversation_id) <= 256:
        raise ProtocolError(
            "`conversationId` must be 1 to 256 characters - at `$.data.conversationId`", request_id=frame.id
        )
    engine = session.engine
    owner = session.owner
    if conversation_id is None:
        conversation_id = f"conn:{session.id}"  # without an id, the history is this connection's
    elif session.user_id is None:
        # An anonymous client keeps its conversation across reconnects (a new connection
        # id each time) through the id alone, like its runs: clients make it unguessable.
        # Each such conversation is its own owner: the per-owner bound must not let one
        # anonymous client evict another's history ([limits] max_conversations bounds them).
        owner = "a:*" + conversation_id
    conversation = Conversation(owner, conversation_id, ChatMessage("user", d.content))
    request = engine.request([], purpose="chat", context=d.context)
    session.generate(request, request_id=frame.id, conversation=conversation)


def generate_objective(session: Session, frame: GenerateObjective) -> None:
    d = frame.data
    if not d.prompt.strip():
        raise ProtocolError("`prompt` must not be empty - at `$.data.prompt`", request_id=frame.id)
    messages = [
        ChatMessage("system", objective_instructions(d.difficulty, d.category)),
        ChatMessage("user", d.prompt),
    ]
    request = session.engine.request(
        messages, purpose="objective", json_mode=True, objective=ObjectiveSpec(d.prompt, d.difficulty, d.category)
    )
    session.generate(request, request_id=frame.id)


def stop_generation(session: Session, frame: StopGeneration) -> None:
    target = frame.data.messageId
    engine = session.engine
    if target is None:
        # Every stream this connection reads (started or resumed, here or on another
        # worker: that worker checks the owner again) stops.
        for message_id in list(session.subscriptions):
            if not engine.stop_run(message_id, session.owner):
                engine.stop_elsewhere(message_id, session.owner)
        return
    message_id = session.requests.get(target, target)
    if engine.stop_run(message_id, session.owner):
        return
    if engine.broker.shared:
        # Maybe running on another worker: asking the shared log takes I/O, so it runs
        # beside the reader like any coroutine handler.
        session._spawn_handler(_stop_anywhere, frame)
        return
    # Finished and still retained: a client racing the end is not an error.
    if not engine.run_known(message_id, session.owner):
        raise NotFound(f"no such message {target[:128]!r}")


async def _stop_anywhere(session: Session, frame: StopGeneration) -> None:
    target = frame.data.messageId or ""
    message_id = session.requests.get(target, target)
    if not await session.engine.stop_anywhere(message_id, session.owner):
        raise NotFound(f"no such message {target[:128]!r}")


async def update_objective(session: Session, frame: UpdateObjective) -> None:
    objective = await session.engine.objectives.update(session.owner, frame.data.objectiveId, frame.data.updates)
    session.send(EventType.OBJECTIVE_UPDATED, ObjectiveUpdatedData(objective), request_id=frame.id)


def ping(session: Session, frame: Ping) -> None:
    session.send(EventType.PONG, PongData(frame.data.timestamp), request_id=frame.id)


async def resume(session: Session, frame: Resume) -> None:
    d = frame.data
    await session.engine.resume(session, d.messageId, d.lastSeq or 0, request_id=frame.id)


#: the longest topic name a client may SUBSCRIBE to.
MAX_TOPIC_LENGTH = 256


class TopicData(msgspec.Struct):
    topic: str


class Subscribe(_ClientFrame, tag="SUBSCRIBE"):
    """``SUBSCRIBE {topic}``: receive what is published to ``topic`` (if authorised)."""

    data: TopicData


class Unsubscribe(_ClientFrame, tag="UNSUBSCRIBE"):
    """``UNSUBSCRIBE {topic}``: stop receiving ``topic``."""

    data: TopicData


def _topic(frame: Any) -> str:
    topic = frame.data.topic
    if not 0 < len(topic) <= MAX_TOPIC_LENGTH:
        raise ProtocolError(
            f"`topic` must be 1 to {MAX_TOPIC_LENGTH} characters - at `$.data.topic`", request_id=frame.id
        )
    return topic


async def subscribe(session: Session, frame: Subscribe) -> None:
    topic = _topic(frame)
    engine = session.engine
    # Unknown and forbidden topics are indistinguishable, like runs.
    if not await engine.authorize_topic(session, topic):
        raise NotFound(f"no such topic {topic[:128]!r}")
    if not session.closed:
        engine.subscribe_topic(session, topic)
        session.send("SUBSCRIBED", TopicData(topic), request_id=frame.id)


def unsubscribe(session: Session, frame: Unsubscribe) -> None:
    topic = _topic(frame)
    session.engine.unsubscribe_topic(session, topic)
    session.send("UNSUBSCRIBED", TopicData(topic), request_id=frame.id)


def register_builtins(engine: Engine) -> None:
    """Register the protocol's own commands in ``engine``'s handler registry."""
    table: dict[type, Any] = {
        UserMessage: user_message,
        GenerateObjective: generate_objective,
        StopGeneration: stop_generation,
        UpdateObjective: update_objective,
        Ping: ping,
        Resume: resume,
        Subscribe: subscribe,
        Unsubscribe: unsubscribe,
    }
    for frame_type, handler in table.items():
        engine._register(frame_type, handler)
