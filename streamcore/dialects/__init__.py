"""SSE dialects: small encoders over the engine's run-log entries, one per wire format.

- :class:`EnvelopeSSE`: streamcore's own envelopes (SPEC.md) as SSE events;
- :class:`AISDKDialect`: the Vercel AI SDK UI message stream (``useChat``);
- :class:`AGUIDialect`: AG-UI events (``@ag-ui/client``'s ``HttpAgent``).

Each implements :class:`streamcore.dialect.Dialect` and is created once per HTTP
response by :mod:`streamcore.adapters.sse`, which serves them; none of them runs
anything: runs, the log, resume and stop are the engine's.
"""

from .agui import AGUIDialect
from .aisdk import AISDKDialect
from .base import HEARTBEAT, LATE, NOTHING, SSEDialect, sse_event
from .envelope_sse import EnvelopeSSE

__all__ = ["SSEDialect", "EnvelopeSSE", "AISDKDialect", "AGUIDialect", "LATE", "HEARTBEAT", "NOTHING", "sse_event"]
