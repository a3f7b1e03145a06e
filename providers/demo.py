"""The ``demo`` provider: offline, deterministic, readable, paced like a real model.

It needs no key and no network, so ``streamcore serve`` works anywhere. The same request
always yields the same reply, which makes it useful in tests too. With ``reasoning = true``
it "thinks" first: a few deterministic reasoning deltas before the answer, as a reasoning
model does, so clients can be built against ``AI_REASONING_CHUNK`` offline.

Replies are produced lazily, word by word, in time linear in their length, and the stream
gives the event loop a turn at least every :data:`YIELD_EVERY` deltas even with
``delay_ms = 0``: a reply of any length never blocks the loop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Union

import anyio
import anyio.lowlevel
import msgspec

from streamcore.errors import ConfigError
from streamcore.events import Completion, Reasoning, Usage
from streamcore.provider import GenerationRequest

__all__ = ["DemoProvider", "YIELD_EVERY"]

#: With no delay, the stream checkpoints (lets other tasks run) once per this many deltas.
YIELD_EVERY = 256

_OPENINGS = [
    "Good question.",
    "Here is how I would think about it.",
    "Let us take this step by step.",
    "That is worth a careful answer.",
]
_SENTENCES = [
    "Start with the smallest version that works and make it visible.",
    "Measure before you change anything, then measure again.",
    "Write down what done looks like so you know when to stop.",
    "Break the work into steps you can finish in one sitting.",
    "Ask for feedback early, while changes are still cheap.",
    "Keep the parts that surprised you and drop the ones that did not help.",
    "Practice a little every day rather than a lot once a week.",
    "Name the one risk that would hurt most and address it first.",
    "Review what you learned at the end of each week.",
]
_STEP_TITLES = [
    ("Define the goal", "Write one sentence that says what success means for {p}."),
    ("Gather the basics", "Collect the resources and tools you need to start {p}."),
    ("Plan the first week", "Schedule short, regular sessions dedicated to {p}."),
    ("Practise deliberately", "Work on the hardest part of {p} while you are fresh."),
    ("Get feedback", "Show your progress on {p} to someone who knows the field."),
    ("Review and adjust", "Look back at what worked for {p} and adapt the plan."),
]


# Each sentence as its word pieces (a trailing space on every word): built once.
_SENTENCE_PIECES = [tuple(w + " " for w in s.split()) for s in _SENTENCES]
_PLANS = {
    "chat": "I will acknowledge the question, then give practical advice, the most useful point first.",
    "objective": "I need one JSON object: a title, a description and a few concrete, ordered steps.",
    "follow_up": "I will suggest three short follow-up questions that go deeper into the topic.",
}


class _Options(msgspec.Struct, forbid_unknown_fields=True):
    delay_ms: float = 25.0
    words: int = 60
    max_tokens: Union[int, None] = None
    reasoning: bool = False


class DemoProvider:
    """Deterministic offline replies.

    Args:
        model: reported in AI_MESSAGE_START (default ``demo-1``).
        delay_ms: pause between chunks, to look like a real model (0: as fast as possible).
        words: how many words a chat reply has.
        max_tokens: cut replies after this many chunks, ending with ``length``.
        reasoning: stream a few reasoning deltas before the answer.

    ``delay_ms``, ``words``, ``max_tokens`` and ``reasoning`` can also be set per request
    (``GenerationRequest.options``).
    """

    name = "demo"

    def __init__(self, *, model: str | None = None, **options: object) -> None:
        try:
            opts = msgspec.convert(options, _Options)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"demo provider options: {exc}") from None
        if opts.delay_ms < 0 or opts.words < 1:
            raise ConfigError("demo provider options: delay_ms must be >= 0 and words >= 1")
        self.model = model or "demo-1"
        self.delay = opts.delay_ms / 1000
        self.words = opts.words
        self.max_tokens = opts.max_tokens
        self.reasoning = opts.reasoning

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Union[str, Reasoning, Completion]]:
        options = request.options
        words = max(1, int(options.get("words", self.words)))
        delay = max(0.0, float(options.get("delay_ms", self.delay * 1000)) / 1000)
        max_tokens = options.get("max_tokens", self.max_tokens)
        reasoning = options.get("reasoning", self.reasoning) is True
        prompt = request.messages[-1].content if request.messages else ""
        pieces: Iterator[str]
        if request.purpose == "objective" and request.objective is not None:
            parts = _objective_json(request.objective).split(" ")
            count = len(parts)
            pieces = iter([p + " " for p in parts[:-1]] + [parts[-1]])
            prompt = request.objective.prompt
        elif request.purpose == "follow_up":
            count, pieces = 1, iter([json.dumps(_follow_ups(request))])
        else:
            count, pieces = words, _reply_words(prompt, words, len(request.messages))
        finish = "complete"
        if isinstance(max_tokens, int) and 0 < max_tokens < count:
            count, finish = max_tokens, "length"
        thoughts = _reasoning(prompt, request.purpose) if reasoning else ()
        sent = 0
        for thought in thoughts:
            if delay:
                await anyio.sleep(delay)
            yield Reasoning(thought)
        for piece in pieces:
            if delay:
                await anyio.sleep(delay)
            elif not sent % YIELD_EVERY:
                await anyio.lowlevel.checkpoint()
            yield piece
            sent += 1
            if sent == count:
                break
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        completion_tokens = sent + len(thoughts)
        yield Completion(
            finish_reason=finish,
            usage=Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens,
                        len(thoughts) if reasoning else None),
            model=request.model or self.model,
        )


def _seed(text: str) -> int:
    # hash() is salted per process; a stable digest keeps replies identical across runs.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _reply_words(prompt: str, words: int, turn: int) -> Iterator[str]:
    """The reply's ``words`` pieces, lazily: each word with a space, the last without.

    Linear in ``words``: an opening, then the sentences walked with a step coprime to their
    count (no repeats until all are used).
    """
    seed = _seed(f"{turn}:{prompt}")
    quoted = " ".join(prompt.split()[:12])
    opening = f"{_OPENINGS[seed % len(_OPENINGS)]} You asked: \u201c{quoted}\u201d.".split()
    n = len(_SENTENCE_PIECES)
    step = (1, 2, 4, 5, 7, 8)[seed % 6] if n == 9 else 1
    left = words
    for word in opening:
        left -= 1
        if not left:
            yield word
            return
        yield word + " "
    k = seed
    while True:
        for piece in _SENTENCE_PIECES[k % n]:
            left -= 1
            if not left:
                yield piece[:-1]
                return
            yield piece
        k += step


def _reasoning(prompt: str, purpose: str) -> tuple[str, ...]:
    """Deterministic "thinking" for a prompt, as word pieces (the last without a space)."""
    quoted = " ".join(prompt.split()[:12]) or "nothing in particular"
    text = (
        f"The user asks about \u201c{quoted}\u201d. "
        + _PLANS.get(purpose, _PLANS["chat"])
        + " Keep it concrete and short."
    ).split()
    return tuple(w + " " for w in text[:-1]) + (text[-1],)


def _objective_json(spec) -> str:
    subject = " ".join(spec.prompt.split()) or "your goal"
    difficulty = spec.difficulty or "intermediate"
    n = {"beginner": 3, "advanced": 6}.get(difficulty, 4)
    return json.dumps(
        {
            "title": subject[:1].upper() + subject[1:80],
            "description": f"A {difficulty} plan to {subject[:1].lower() + subject[1:200]}.",
            "category": spec.category or "personal",
            "difficulty": difficulty,
            "steps": [
                {"title": t, "description": d.format(p=subject[:1].lower() + subject[1:80])}
                for t, d in _STEP_TITLES[:n]
            ],
        },
        ensure_ascii=False,
    )


def _follow_ups(request: GenerationRequest) -> list[str]:
    question = next((m.content for m in request.messages if m.role == "user"), "this")
    topic = " ".join(question.split()[:8]).rstrip("?.!")
    return [
        f"Can you give an example about {topic}?",
        f"What are common mistakes with {topic}?",
        f"Where should I start with {topic}?",
    ]
