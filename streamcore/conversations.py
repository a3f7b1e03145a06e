"""Conversation history: kept per owner and conversation, not per connection.

A USER_MESSAGE names its conversation (``conversationId``; one per connection when
absent), and the reply continues that conversation's history, across reconnects. A turn
(the user's message and the answer) is recorded when its reply ends, in one step, so two
overlapping replies in one conversation never interleave: the history reads
``[user A, answer A, user B, answer B]``, never ``[user A, user B, answer B, answer A]``.

Every conversation is bounded in messages and bytes; conversations are bounded per owner
and in total (the least recently used go first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Protocol

from .provider import ChatMessage

__all__ = ["ConversationStore", "MemoryConversationStore"]


class ConversationStore(Protocol):
    """Where conversation history lives (memory now; Redis behind the same interface).

    A store whose coroutines never wait may set ``immediate = True``: a run then records
    its turn without the deadline and shield it gives stores that do I/O.
    """

    async def history(self, owner: str, conversation_id: str) -> list[ChatMessage]:
        """The conversation's messages, oldest first (empty when unknown)."""

    async def add_turn(self, owner: str, conversation_id: str, messages: list[ChatMessage]) -> None:
        """Append one turn's messages (the user's, then the answer) in one step."""

    async def drop_owner(self, owner: str) -> None:
        """Forget every conversation of ``owner`` (an anonymous connection that closed)."""

    async def aclose(self) -> None:
        """Release the store's resources."""


class _Conversation:
    __slots__ = ("messages", "bytes")

    def __init__(self) -> None:
        self.messages: deque[ChatMessage] = deque()
        self.bytes = 0


class MemoryConversationStore:
    """In-process history, bounded everywhere.

    Args:
        max_messages: messages kept per conversation.
        max_bytes: characters of content kept per conversation.
        per_owner: conversations kept per owner.
        max_conversations: conversations kept in all.
    """

    #: Its coroutines finish without ever waiting (see ConversationStore).
    immediate = True

    def __init__(
        self,
        *,
        max_messages: int = 20,
        max_bytes: int = 256 * 1024,
        per_owner: int = 50,
        max_conversations: int = 10_000,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.per_owner = per_owner
        self.max_conversations = max_conversations
        # (owner, conversation id) -> conversation, least recently used first.
        self._all: OrderedDict[tuple[str, str], _Conversation] = OrderedDict()
        self._by_owner: dict[str, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._all)

    async def history(self, owner: str, conversation_id: str) -> list[ChatMessage]:
        conv = self._all.get((owner, conversation_id))
        if conv is None:
            return []
        self._touch(owner, conversation_id)
        return list(conv.messages)

    async def add_turn(self, owner: str, conversation_id: str, messages: list[ChatMessage]) -> None:
        if self.max_messages == 0:
            return
        key = (owner, conversation_id)
        conv = self._all.get(key)
        if conv is None:
            conv = self._all[key] = _Conversation()
            self._by_owner.setdefault(owner, OrderedDict())[conversation_id] = None
            self._evict(owner)
        else:
            self._touch(owner, conversation_id)
        for message in messages:
            conv.messages.append(message)
            conv.bytes += _utf8_len(message.content)
        # The oldest messages go first; the newest turn stays even when it alone is large
        # (trimmed to the byte bound from its start), so a reply always sees its question.
        while conv.messages and (len(conv.messages) > self.max_messages or conv.bytes > self.max_bytes):
            if len(conv.messages) == 1:
                only = conv.messages[0]
                # Cut in bytes, at a character boundary (a partial character is dropped).
                raw = only.content.encode("utf-8", "surrogatepass")
                keep = raw[-self.max_bytes:].decode("utf-8", "ignore") if self.max_bytes else ""
                conv.messages[0] = ChatMessage(only.role, keep)
                conv.bytes = _utf8_len(keep)
                break
            conv.bytes -= _utf8_len(conv.messages.popleft().content)

    async def drop_owner(self, owner: str) -> None:
        for conversation_id in self._by_owner.pop(owner, ()):
            self._all.pop((owner, conversation_id), None)

    async def aclose(self) -> None:
        self._all.clear()
        self._by_owner.clear()

    def _touch(self, owner: str, conversation_id: str) -> None:
        self._all.move_to_end((owner, conversation_id))
        self._by_owner[owner].move_to_end(conversation_id)

    def _evict(self, owner: str) -> None:
        mine = self._by_owner[owner]
        while len(mine) > self.per_owner:
            oldest, _ = mine.popitem(last=False)
            self._all.pop((owner, oldest), None)
        while len(self._all) > self.max_conversations:
            (old_owner, old_id), _ = self._all.popitem(last=False)
            theirs = self._by_owner.get(old_owner)
            if theirs is not None:
                theirs.pop(old_id, None)
                if not theirs:
                    del self._by_owner[old_owner]


def _utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (``[limits] history_bytes`` counts bytes, as Redis does)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
