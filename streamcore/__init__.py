"""streamcore: stream LLM replies to browsers and other clients as typed WebSocket events.

The core is framework-agnostic: :class:`Engine` runs the protocol of SPEC.md over any
:class:`Connection`; providers (``streamcore.providers``) turn a model's token stream into
text deltas; adapters (``streamcore.adapters``) serve the engine over websockets, ASGI and
Starlette; :class:`StreamcoreClient` (and ``streamcore.js`` for browsers) is the other end.
Nothing heavy is imported here: litellm, httpx and the web frameworks load lazily.
"""

from .client import StreamcoreClient
from .codec import MSGPACK_SUBPROTOCOL, Codec
from .config import Config, load_config
from .conversations import ConversationStore, MemoryConversationStore
from .dialect import Dialect
from .engine import Engine
from .errors import (
    ConfigError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    NotFound,
    ProtocolError,
    ProviderError,
    RunStateError,
    StreamcoreError,
)
from .events import Reasoning, Usage
from .ids import new_id, now_ms
from .lifecycle import RunMachine, RunState
from .objectives import InMemoryObjectiveStore, Objective, ObjectiveStore, Step
from .protocol import ErrorCode, EventType
from .provider import (
    ChatMessage,
    Completion,
    GenerationRequest,
    ObjectiveSpec,
    Provider,
    available_providers,
    load_provider,
)
from .run import Run, Subscription
from .runlog import MemoryRunLog, RunLog
from .session import Session
from .transport import Connection, ConnectionInfo

__version__ = "0.1.0"

__all__ = [
    "ChatMessage",
    "Codec",
    "Completion",
    "Config",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConversationStore",
    "Dialect",
    "MemoryConversationStore",
    "MemoryRunLog",
    "NotFound",
    "Reasoning",
    "Run",
    "RunLog",
    "RunMachine",
    "RunState",
    "RunStateError",
    "Subscription",
    "Usage",
    "ConnectionInfo",
    "Engine",
    "ErrorCode",
    "EventType",
    "GenerationRequest",
    "InMemoryObjectiveStore",
    "MSGPACK_SUBPROTOCOL",
    "Objective",
    "ObjectiveSpec",
    "ObjectiveStore",
    "ProtocolError",
    "Provider",
    "ProviderError",
    "Session",
    "Step",
    "StreamcoreClient",
    "StreamcoreError",
    "available_providers",
    "load_config",
    "load_provider",
    "new_id",
    "now_ms",
    "__version__",
]
