"""AG-UI (the Agent-User Interaction protocol) events over SSE, from a ``RunAgentInput``.

Each event is ``data: <event JSON>`` (what ``@ag-ui/client``'s ``HttpAgent`` parses),
with ``id: <seq>`` on the last event each run-log entry produces. A run maps onto:

==========================  ===========================================================
streamcore run-log entry    AG-UI events
==========================  ===========================================================
STARTED                     ``RUN_STARTED`` ``{threadId, runId}``
reasoning delta             ``TEXT_MESSAGE_END`` (when text was open), ``REASONING_START``
                            and ``REASONING_MESSAGE_START`` (first of a span),
                            ``REASONING_MESSAGE_CONTENT``
text delta                  ``REASONING_MESSAGE_END`` and ``REASONING_END`` (closing a
                            span), ``TEXT_MESSAGE_START`` (first of a message, role
                            ``assistant``, ``messageId`` = the run's message id),
                            ``TEXT_MESSAGE_CONTENT``
FAILED                      what is open ends, ``RUN_ERROR`` ``{message, code}`` (last)
ENDED error/timeout         what is open ends, ``RUN_ERROR`` (when no FAILED came first)
ENDED other reasons         what is open ends; ``RUN_FINISHED`` closes the stream once
                            the run is sealed (application events come before it):
                            ``{threadId, runId, result: {messageId, stopReason},
                            usage?}``, with ``outcome: {type: "cancelled"}`` for
                            ``user_cancelled`` and ``server_shutdown``
application event (APP)     ``CUSTOM`` ``{name: <type>, value: <data>}``
broadcast (no run)          ``CUSTOM``, between ``RUN_STARTED`` and the end only
==========================  ===========================================================

The request body is a ``RunAgentInput``. With the ``ag-ui-protocol`` package installed
(``pip install 'streamcore-llm[agui]'``) it is validated by its official model; without
it, by a msgspec Struct holding the fields streamcore reads. The reply continues the
conversation ``threadId``; the text of the last ``user`` message is the new turn;
``context`` becomes the request's ``context``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import msgspec

if TYPE_CHECKING:
    from ag_ui.core import RunAgentInput as _Official

from ..errors import ProtocolError
from ..events import AppEvent, Ended, Entry, Failure, Kind, Started
from ..protocol import ErrorCode, EventType, UserMessage, UserMessageData
from .base import NOTHING, PartsDialect, encode_json, seq_bytes, sse_event, usage_dict

__all__ = ["AGUIDialect", "official_types"]

_NONE, _TEXT, _REASONING = 0, 1, 2
_CANCELLED = frozenset({"user_cancelled", "server_shutdown"})
_END_OF_DELTA = b"}\n\n"

_OfficialInput: type[_Official] | None
try:  # the official types, when the optional extra is installed
    from ag_ui.core import RunAgentInput as _OfficialInput
except ImportError:  # pragma: no cover - depends on the install
    _OfficialInput = None


def official_types() -> bool:
    """Whether requests are validated by the ``ag-ui-protocol`` package's models."""
    return _OfficialInput is not None


class _Message(msgspec.Struct):
    role: str = ""
    id: Any = None
    content: Any = None


class _Context(msgspec.Struct):
    description: str
    value: str


class RunAgentInput(msgspec.Struct):
    """The fields of AG-UI's ``RunAgentInput`` streamcore reads (the fallback parser)."""

    threadId: str
    runId: str
    messages: list[_Message]
    context: Union[list[_Context], None] = None


_request = msgspec.json.Decoder(RunAgentInput)


def _text_of(content: Any) -> str:
    """A user message's text: a string, or the ``text`` parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
            text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
            if kind == "text" and isinstance(text, str):
                out.append(text)
        return "".join(out)
    return ""


class AGUIDialect(PartsDialect):
    """One response's AG-UI event stream.

    Attributes:
        thread_id, run_id: the AG-UI ids this stream carries (from the request, or from
            the run index on a resume).
    """

    name = "agui"

    def __init__(
        self, *, max_message_bytes: int = 1 << 20, thread_id: str | None = None, run_id: str | None = None
    ) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.thread_id = thread_id
        self.run_id = run_id
        self._open = _NONE
        self._texts = 0
        self._spans = 0
        self._text_id = b""
        self._span_id = b""
        self._reasoning_id = b""
        self._text_head = b""
        self._reasoning_head = b""
        self._model: str | None = None
        self._running = False  # RUN_STARTED was sent
        self._terminated = False  # RUN_ERROR was sent: nothing may follow
        self._finish: dict[str, Any] | None = None

    # --- request ----------------------------------------------------------------------------

    def parse(self, raw: str | bytes) -> Any:
        if _OfficialInput is not None:
            import pydantic

            try:
                official = _OfficialInput.model_validate_json(raw)
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ()))
                raise ProtocolError(f"not a RunAgentInput: {first.get('msg')} - at `${where}`") from None
            thread_id, run_id = official.thread_id, official.run_id
            messages: list[tuple[str, Any, Any]] = [
                (m.role, getattr(m, "content", None), getattr(m, "id", None)) for m in official.messages
            ]
            context = [{"description": c.description, "value": c.value} for c in official.context or ()]
        else:
            try:
                body = _request.decode(raw)
            except msgspec.DecodeError as exc:
                raise ProtocolError(f"not a RunAgentInput: {exc}") from None
            thread_id, run_id = body.threadId, body.runId
            messages = [(m.role, m.content, m.id) for m in body.messages]
            context = [{"description": c.description, "value": c.value} for c in body.context or ()]
        if not 0 < len(thread_id) <= 256:
            raise ProtocolError("`threadId` must be 1 to 256 characters - at `$.threadId`", request_id=run_id)
        self.thread_id, self.run_id = thread_id, run_id
        for role, content, _ in reversed(messages):
            if role != "user":
                continue
            text = _text_of(content)
            if not text.strip():
                break
            return UserMessage(
                data=UserMessageData(content=text, context=context or None, conversationId=thread_id),
                id=run_id,
            )
        raise ProtocolError("no text in the last `user` message of `messages`", request_id=run_id)

    # --- events without a run -------------------------------------------------------------

    def encode_event(self, type: str, data: Any, metadata: Any = None) -> bytes:
        if type == EventType.ERROR:
            return sse_event(encode_json({"type": "RUN_ERROR", "message": data.message, "code": data.code}))
        if type in (EventType.AI_THINKING, EventType.PONG):
            return NOTHING
        # Broadcasts become CUSTOM events, in order with the run's events (and only
        # inside the run: AG-UI allows nothing before RUN_STARTED or after its end).
        return self.defer_event(type, data)

    def render_event(self, type: str, data: Any) -> bytes:
        if not self._running or self._terminated or self._finish is not None:
            return NOTHING
        return sse_event(encode_json({"type": "CUSTOM", "name": type, "value": data}))

    # --- deltas: the hot path --------------------------------------------------------------

    def _close(self) -> bytes:
        kind, self._open = self._open, _NONE
        if kind == _TEXT:
            return b'data: {"type":"TEXT_MESSAGE_END","messageId":' + self._text_id + b"}\n\n"
        if kind == _REASONING:
            return (
                b'data: {"type":"REASONING_MESSAGE_END","messageId":' + self._reasoning_id + b"}\n\n"
                b'data: {"type":"REASONING_END","messageId":' + self._span_id + b"}\n\n"
            )
        return NOTHING

    def _start(self, kind: int) -> bytes:
        closing = self._close()
        mid = self.message_id or ""
        self._open = kind
        if kind == _TEXT:
            n, self._texts = self._texts, self._texts + 1
            text_id = self._text_id = encode_json(mid if n == 0 else f"{mid}-{n}")
            self._text_head = b'\ndata: {"type":"TEXT_MESSAGE_CONTENT","messageId":' + text_id + b',"delta":'
            return closing + (
                b'data: {"type":"TEXT_MESSAGE_START","messageId":' + text_id + b',"role":"assistant"}\n\n'
            )
        n, self._spans = self._spans, self._spans + 1
        span = self._span_id = encode_json(f"{mid}-reasoning-{n}")
        message = self._reasoning_id = encode_json(f"{mid}-reasoning-{n}-message")
        self._reasoning_head = b'\ndata: {"type":"REASONING_MESSAGE_CONTENT","messageId":' + message + b',"delta":'
        return closing + (
            b'data: {"type":"REASONING_START","messageId":' + span + b"}\n\n"
            b'data: {"type":"REASONING_MESSAGE_START","messageId":' + message + b',"role":"reasoning"}\n\n'
        )

    # --- other entries, rendered at send time ------------------------------------------------

    def _run_ids(self) -> dict[str, str]:
        mid = self.message_id or ""
        return {"threadId": self.thread_id or mid, "runId": self.run_id or mid}

    def _run_error(self, message: str, code: str | None, seq: int | None) -> bytes:
        self._terminated = True
        self.ended = True
        event: dict[str, Any] = {"type": "RUN_ERROR", "message": message}
        if code:
            event["code"] = code
        return self._close() + sse_event(encode_json(event), seq)

    def render_entry(self, entry: Entry, message_id: str, metadata: Any, request_id: str | None) -> bytes:
        seq, kind, payload = entry
        if self._terminated:
            return NOTHING
        if kind == Kind.STARTED:
            self._model = payload.model
            self._running = True
            return sse_event(encode_json({"type": "RUN_STARTED", **self._run_ids()}), seq)
        if kind == Kind.APP:
            a: AppEvent = payload
            return sse_event(encode_json({"type": "CUSTOM", "name": a.type, "value": a.data}), seq)
        if kind == Kind.FAILED:
            f: Failure = payload
            return self._run_error(f.message, f.code, seq)
        if kind == Kind.ENDED:
            e: Ended = payload
            reason = e.stop_reason
            if reason in ("error", "timeout"):
                code = ErrorCode.TIMEOUT if reason == "timeout" else ErrorCode.GENERATION_FAILED
                return self._run_error(f"the generation ended: {reason}", code, seq)
            self._finish = self._finished(e)
            self.ended = True
            closing = self._close()
            if not closing:
                return NOTHING
            # The id goes on the group's last event (the closing one).
            head, _, last = closing[:-2].rpartition(b"\n\n")
            return (head + b"\n\n" if head else b"") + b"id: " + seq_bytes(seq) + b"\n" + last + b"\n\n"
        raise ValueError(f"not an event entry: kind {kind}")

    def _finished(self, e: Ended) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "RUN_FINISHED",
            **self._run_ids(),
            "result": {"messageId": e.message_id, "stopReason": e.stop_reason},
        }
        if e.stop_reason in _CANCELLED:
            event["outcome"] = {"type": "cancelled"}
        if e.usage is not None:
            usage = usage_dict(e.usage)
            if usage:
                if self._model:
                    usage["model"] = self._model
                event["usage"] = [usage]
        return event

    def trailer(self) -> bytes:
        """``RUN_FINISHED``, once the run is sealed (after its application events)."""
        if self._finish is None or self._terminated:
            return NOTHING
        return sse_event(encode_json(self._finish))

    def preamble(self) -> bytes:
        """``RUN_STARTED`` and the reopening of what was open at the cursor (same ids).

        ``@ag-ui/client`` checks each stream on its own (the first event must be
        ``RUN_STARTED``; content needs an open message) and appends the content of a
        ``TEXT_MESSAGE_START`` whose message it already has: a resumed stream continues
        the message in place.
        """
        if not self._running or self._terminated:
            return NOTHING
        out = sse_event(encode_json({"type": "RUN_STARTED", **self._run_ids()}))
        if self._open == _TEXT:
            out += b'data: {"type":"TEXT_MESSAGE_START","messageId":' + self._text_id + b',"role":"assistant"}\n\n'
        elif self._open == _REASONING:
            out += (
                b'data: {"type":"REASONING_START","messageId":' + self._span_id + b"}\n\n"
                b'data: {"type":"REASONING_MESSAGE_START","messageId":' + self._reasoning_id
                + b',"role":"reasoning"}\n\n'
            )
        return out

    def prime(self, entries: Any) -> None:
        for seq, kind, payload in entries:
            if self._terminated:
                return
            if kind == Kind.STARTED:
                started: Started = payload
                self.learn(started.message_id)
                self._model = started.model
                self._running = True
            elif kind == Kind.TEXT:
                if self._open != _TEXT:
                    self._start(_TEXT)
            elif kind == Kind.REASONING:
                if self._open != _REASONING:
                    self._start(_REASONING)
            elif kind in (Kind.FAILED, Kind.ENDED):
                self.render_entry((seq, kind, payload), self.message_id or "", None, None)

