"""The Vercel AI SDK's UI message stream (protocol ``v1``), for ``useChat`` and its transports.

Response: SSE with the header ``x-vercel-ai-ui-message-stream: v1``; each event is
``data: <one UI message chunk as JSON>``, the stream ends with ``data: [DONE]``. A run
maps onto the chunks the SDK's ``processUIMessageStream`` reads (ai 5 and 6):

==========================  ===========================================================
streamcore run-log entry    UI message chunks
==========================  ===========================================================
STARTED                     ``start`` ``{messageId}`` (the run's message id)
reasoning delta             ``reasoning-start`` (first of a span), ``reasoning-delta``
text delta                  ``reasoning-end`` (closing a span), ``text-start`` (first of
                            a part), ``text-delta``
FAILED                      ``text-end``/``reasoning-end`` of what is open, ``error``
ENDED complete/length/...   what is open ends, ``finish`` ``{finishReason: stop|length|
                            error, messageMetadata: {stopReason, usage}}``
ENDED user_cancelled,       what is open ends, ``abort`` ``{reason}``
server_shutdown
application event (APP)     ``data-<kebab-case type>`` ``{id, data}``
broadcast (no run)          ``data-<kebab-case type>`` ``{data, transient: true}``
==========================  ===========================================================

The request body is what ``useChat`` (``DefaultChatTransport``) posts: ``{id, messages,
trigger, messageId, ...body}``. The reply continues the conversation ``id`` (streamcore
keeps its history, as for ``USER_MESSAGE`` with ``conversationId``); the text parts of the
last ``user`` message are the new turn.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from ..errors import ProtocolError
from ..events import AppEvent, Ended, Entry, Failure, Kind
from ..protocol import EventType, UserMessage, UserMessageData
from .base import NOTHING, PartsDialect, encode_json, kebab, sse_event, usage_dict

__all__ = ["AISDKDialect", "UI_MESSAGE_STREAM_HEADER"]

#: The response header by which the AI SDK recognises a UI message stream.
UI_MESSAGE_STREAM_HEADER = (b"x-vercel-ai-ui-message-stream", b"v1")

_NONE, _TEXT, _REASONING = 0, 1, 2
_FINISH_REASONS = {"complete": "stop", "length": "length", "error": "error", "timeout": "error"}
_ABORTED = frozenset({"user_cancelled", "server_shutdown"})
_DONE = b"data: [DONE]\n\n"
_END_OF_DELTA = b"}\n\n"


class _Part(msgspec.Struct):
    type: str = ""
    text: Any = None


class _Message(msgspec.Struct):
    role: str = ""
    id: Any = None
    parts: list[_Part] = []
    #: ai 4's messages had a ``content`` string; accepted for older clients.
    content: Any = None


class ChatRequest(msgspec.Struct):
    """The body ``DefaultChatTransport`` sends (unknown fields are ignored)."""

    id: str
    messages: list[_Message]
    trigger: Union[str, None] = None
    messageId: Union[str, None] = None
    #: application data about the user's situation (SPEC.md's ``context``), optional.
    context: Any = None


_request = msgspec.json.Decoder(ChatRequest)


class AISDKDialect(PartsDialect):
    """One response's AI SDK UI message stream.

    Attributes:
        chat_id: the ``id`` of the request (the chat), once parsed.
    """

    name = "aisdk"
    extra_headers = (UI_MESSAGE_STREAM_HEADER,)

    def __init__(self, *, max_message_bytes: int = 1 << 20) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.chat_id: str | None = None
        self._open = _NONE
        self._parts = 0
        self._part_id = b""
        self._text_head = b""
        self._reasoning_head = b""
        self._failed = False

    # --- request ----------------------------------------------------------------------------

    def parse(self, raw: str | bytes) -> Any:
        try:
            body = _request.decode(raw)
        except msgspec.DecodeError as exc:
            text = str(exc)
            if text.startswith("Object missing required field `id`"):
                text = "missing field `id` (the chat id useChat sends)"
            raise ProtocolError(f"not a useChat request body: {text}") from None
        if not 0 < len(body.id) <= 256:
            raise ProtocolError("`id` (the chat id) must be 1 to 256 characters - at `$.id`")
        self.chat_id = body.id
        for message in reversed(body.messages):
            if message.role != "user":
                continue
            text = "".join(p.text for p in message.parts if p.type == "text" and isinstance(p.text, str))
            if not text and isinstance(message.content, str):
                text = message.content
            if not text.strip():
                break
            request_id = message.id if isinstance(message.id, str) else None
            return UserMessage(
                data=UserMessageData(content=text, context=body.context, conversationId=body.id),
                id=request_id,
            )
        raise ProtocolError("no text in the last `user` message of `messages`")

    # --- events without a run -------------------------------------------------------------

    def encode_event(self, type: str, data: Any, metadata: Any = None) -> bytes:
        if type == EventType.ERROR:
            return sse_event(encode_json({"type": "error", "errorText": data.message}))
        if type in (EventType.AI_THINKING, EventType.PONG):
            return NOTHING
        # Broadcasts: data parts that reach onData without being added to the message.
        return sse_event(encode_json({"type": "data-" + kebab(type), "data": data, "transient": True}))

    # --- deltas: the hot path --------------------------------------------------------------

    def _close(self) -> bytes:
        """The chunk closing the open part, if any."""
        kind, self._open = self._open, _NONE
        if kind == _TEXT:
            return b'data: {"type":"text-end","id":' + self._part_id + b"}\n\n"
        if kind == _REASONING:
            return b'data: {"type":"reasoning-end","id":' + self._part_id + b"}\n\n"
        return NOTHING

    def _start(self, kind: int) -> bytes:
        """Close what is open and start a new part of ``kind``; return their chunks."""
        closing = self._close()
        label = "text" if kind == _TEXT else "reasoning"
        part_id = self._part_id = encode_json(f"{label}-{self._parts}")
        self._parts += 1
        self._open = kind
        head = b'\ndata: {"type":"' + label.encode() + b'-delta","id":' + part_id + b',"delta":'
        if kind == _TEXT:
            self._text_head = head
        else:
            self._reasoning_head = head
        return closing + b'data: {"type":"' + label.encode() + b'-start","id":' + part_id + b"}\n\n"

    # --- other entries, rendered at send time ------------------------------------------------

    def render_entry(self, entry: Entry, message_id: str, metadata: Any, request_id: str | None) -> bytes:
        seq, kind, payload = entry
        if kind == Kind.STARTED:
            return sse_event(encode_json({"type": "start", "messageId": message_id}), seq)
        if kind == Kind.APP:
            a: AppEvent = payload
            part = {"type": "data-" + kebab(a.type), "id": f"{message_id}.{seq}", "data": a.data}
            return sse_event(encode_json(part), seq)
        if kind == Kind.FAILED:
            f: Failure = payload
            self._failed = True
            return self._close() + sse_event(encode_json({"type": "error", "errorText": f.message}), seq)
        if kind == Kind.ENDED:
            e: Ended = payload
            out = self._close()
            reason = e.stop_reason
            self.ended = True
            if reason in _ABORTED:
                return out + sse_event(encode_json({"type": "abort", "reason": reason}), seq)
            if reason in ("error", "timeout") and not self._failed:
                out += sse_event(encode_json({"type": "error", "errorText": f"the generation ended: {reason}"}))
            meta: dict[str, Any] = {"stopReason": reason}
            if e.usage is not None:
                meta["usage"] = usage_dict(e.usage)
            finish = {"type": "finish", "finishReason": _FINISH_REASONS.get(reason, "other"), "messageMetadata": meta}
            return out + sse_event(encode_json(finish), seq)
        raise ValueError(f"not an event entry: kind {kind}")

    def trailer(self) -> bytes:
        return _DONE if self.ended else NOTHING

    def prime(self, entries: Any) -> None:
        for _seq, kind, payload in entries:
            if kind == Kind.STARTED:
                self.learn(payload.message_id)
            elif kind == Kind.TEXT:
                if self._open != _TEXT:
                    self._start(_TEXT)
            elif kind == Kind.REASONING:
                if self._open != _REASONING:
                    self._start(_REASONING)
            elif kind == Kind.FAILED:
                self._close()
                self._failed = True
            elif kind == Kind.ENDED:
                self._close()
                self.ended = True

