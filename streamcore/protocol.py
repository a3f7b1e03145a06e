"""The wire protocol of SPEC.md as msgspec Structs.

Nothing here performs I/O. Field names are the wire names, camelCase exactly as the spec
writes them, so that a Struct encodes to the frame a client expects without renaming.

Client frames form one tagged union on the envelope's ``type`` field; the server's
payloads are plain Structs wrapped in :class:`Envelope` when sent.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

__all__ = [
    "EventType",
    "ErrorCode",
    "StopReason",
    "RETRYABLE",
    "Envelope",
    "ClientFrame",
    "UserMessage",
    "GenerateObjective",
    "StopGeneration",
    "UpdateObjective",
    "Ping",
    "Resume",
    "ResumeData",
    "UserMessageData",
    "GenerateObjectiveData",
    "StopGenerationData",
    "UpdateObjectiveData",
    "PingData",
    "ThinkingData",
    "MessageStartData",
    "MessageChunkData",
    "ReasoningChunkData",
    "MessageEndData",
    "Usage",
    "ObjectiveGeneratedData",
    "ObjectiveUpdatedData",
    "ErrorData",
    "PongData",
    "FollowUpQuestionsData",
    "BUILTIN_CLIENT_FRAMES",
]


class EventType:
    """Envelope ``type`` values, as constants so a typo is a NameError, not a silent bug."""

    USER_MESSAGE = "USER_MESSAGE"
    GENERATE_OBJECTIVE = "GENERATE_OBJECTIVE"
    STOP_GENERATION = "STOP_GENERATION"
    UPDATE_OBJECTIVE = "UPDATE_OBJECTIVE"
    PING = "PING"
    RESUME = "RESUME"

    AI_THINKING = "AI_THINKING"
    AI_MESSAGE_START = "AI_MESSAGE_START"
    AI_MESSAGE_CHUNK = "AI_MESSAGE_CHUNK"
    AI_REASONING_CHUNK = "AI_REASONING_CHUNK"
    AI_MESSAGE_END = "AI_MESSAGE_END"
    OBJECTIVE_GENERATED = "OBJECTIVE_GENERATED"
    OBJECTIVE_UPDATED = "OBJECTIVE_UPDATED"
    ERROR = "ERROR"
    PONG = "PONG"
    FOLLOW_UP_QUESTIONS = "FOLLOW_UP_QUESTIONS"
    INDEXING_PROGRESS = "INDEXING_PROGRESS"


class ErrorCode:
    """``ERROR`` codes of the spec."""

    RATE_LIMIT = "RATE_LIMIT"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    AUTH_FAILED = "AUTH_FAILED"
    GENERATION_FAILED = "GENERATION_FAILED"
    TIMEOUT = "TIMEOUT"
    SERVER_ERROR = "SERVER_ERROR"
    NOT_FOUND = "NOT_FOUND"


#: Default ``retryable`` flag of each code (a provider may override it, e.g. a 401 upstream).
RETRYABLE: dict[str, bool] = {
    ErrorCode.RATE_LIMIT: True,
    ErrorCode.INVALID_MESSAGE: False,
    ErrorCode.AUTH_FAILED: False,
    ErrorCode.GENERATION_FAILED: True,
    ErrorCode.TIMEOUT: True,
    ErrorCode.SERVER_ERROR: True,
    ErrorCode.NOT_FOUND: False,
}

StopReason = Literal["complete", "user_cancelled", "length", "timeout", "error", "server_shutdown"]


class Envelope(msgspec.Struct, omit_defaults=True):
    """One server frame: ``{id, type, timestamp, data, metadata?}``."""

    id: str
    type: str
    timestamp: int
    data: Any
    metadata: Any = None


# --- client -> server ---------------------------------------------------------------------


class UserMessageData(msgspec.Struct):
    content: str
    context: Any = None
    conversationId: Union[str, None] = None


class GenerateObjectiveData(msgspec.Struct):
    prompt: str
    difficulty: Union[str, None] = None
    category: Union[str, None] = None


class StopGenerationData(msgspec.Struct):
    messageId: Union[str, None] = None


class UpdateObjectiveData(msgspec.Struct):
    objectiveId: str
    updates: dict[str, Any]


class PingData(msgspec.Struct):
    timestamp: int


class ResumeData(msgspec.Struct):
    messageId: str
    lastSeq: Union[int, None] = None


class _ClientFrame(msgspec.Struct, tag_field="type", kw_only=True):
    """Fields every client frame may carry besides ``type`` and ``data``.

    ``kw_only`` lets subclasses declare a required ``data`` after these optional fields.
    """

    id: Union[str, None] = None
    timestamp: Union[int, None] = None
    metadata: Union[dict[str, Any], None] = None


class UserMessage(_ClientFrame, tag=EventType.USER_MESSAGE):
    data: UserMessageData


class GenerateObjective(_ClientFrame, tag=EventType.GENERATE_OBJECTIVE):
    data: GenerateObjectiveData


class StopGeneration(_ClientFrame, tag=EventType.STOP_GENERATION):
    data: StopGenerationData = msgspec.field(default_factory=StopGenerationData)


class UpdateObjective(_ClientFrame, tag=EventType.UPDATE_OBJECTIVE):
    data: UpdateObjectiveData


class Ping(_ClientFrame, tag=EventType.PING):
    data: PingData


class Resume(_ClientFrame, tag=EventType.RESUME):
    data: ResumeData


ClientFrame = Union[UserMessage, GenerateObjective, StopGeneration, UpdateObjective, Ping, Resume]
BUILTIN_CLIENT_FRAMES: tuple[type[msgspec.Struct], ...] = (
    UserMessage,
    GenerateObjective,
    StopGeneration,
    UpdateObjective,
    Ping,
    Resume,
)


# --- server -> client ---------------------------------------------------------------------


class ThinkingData(msgspec.Struct):
    timestamp: int


class MessageStartData(msgspec.Struct, omit_defaults=True):
    messageId: str
    seq: int
    model: Union[str, None] = None


class MessageChunkData(msgspec.Struct):
    messageId: str
    content: str
    index: int
    seq: int


class ReasoningChunkData(msgspec.Struct):
    messageId: str
    content: str
    seq: int


class Usage(msgspec.Struct, omit_defaults=True):
    """Token counts of one generation, when the provider reports them (wire names)."""

    promptTokens: Union[int, None] = None
    completionTokens: Union[int, None] = None
    totalTokens: Union[int, None] = None
    reasoningTokens: Union[int, None] = None


class MessageEndData(msgspec.Struct, omit_defaults=True):
    messageId: str
    isComplete: bool
    stopReason: str
    seq: int
    content: Union[str, None] = None
    usage: Union[Usage, None] = None


class ObjectiveGeneratedData(msgspec.Struct, omit_defaults=True):
    objective: Any
    generationTime: int
    messageId: Union[str, None] = None
    seq: Union[int, None] = None


class ObjectiveUpdatedData(msgspec.Struct):
    objective: Any


class ErrorData(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    retryable: bool
    requestId: Union[str, None] = None
    retryAfter: Union[int, None] = None
    messageId: Union[str, None] = None
    seq: Union[int, None] = None


class PongData(msgspec.Struct):
    timestamp: int


class FollowUpQuestionsData(msgspec.Struct, omit_defaults=True):
    messageId: str
    questions: list[str]
    seq: Union[int, None] = None
