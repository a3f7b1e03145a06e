"""The ``demo`` provider: offline, deterministic, readable, paced like a real model.

It needs no key and no network, so ``streamcore serve`` works anywhere. The same request
always yields the same reply, which makes it useful in tests too.
"""

from __future__ import annotations

import hashlib
import json
from typing import AsyncIterator, Union

import anyio
import msgspec

from streamcore.errors import ConfigError
from streamcore.protocol import Usage
from streamcore.provider import Completion, GenerationRequest

__all__ = ["DemoProvider"]

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


class _Options(msgspec.Struct, forbid_unknown_fields=True):
    delay_ms: float = 25.0
    words: int = 60
    max_tokens: Union[int, None] = None


class DemoProvider:
    """Deterministic offline replies.

    Args:
        model: reported in AI_MESSAGE_START (default ``demo-1``).
        delay_ms: pause between chunks, to look like a real model (0: as fast as possible).
        words: how many words a chat reply has.
        max_tokens: cut replies after this many chunks, ending with ``length``.
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

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Union[str, Completion]]:
        options = request.options
        words = int(options.get("words", self.words))
        delay = float(options.get("delay_ms", self.delay * 1000)) / 1000
        max_tokens = options.get("max_tokens", self.max_tokens)
        prompt = request.messages[-1].content if request.messages else ""
        if request.purpose == "objective" and request.objective is not None:
            pieces = _objective_json(request.objective).split(" ")
            pieces = [p + " " for p in pieces[:-1]] + [pieces[-1]]
        elif request.purpose == "follow_up":
            pieces = [json.dumps(_follow_ups(request))]
        else:
            pieces = _reply_words(prompt, words, len(request.messages))
        finish = "complete"
        if isinstance(max_tokens, int) and 0 < max_tokens < len(pieces):
            pieces, finish = pieces[:max_tokens], "length"
        for piece in pieces:
            if delay:
                await anyio.sleep(delay)
            yield piece
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        yield Completion(
            finish_reason=finish,
            usage=Usage(prompt_tokens, len(pieces), prompt_tokens + len(pieces)),
            model=request.model or self.model,
        )


def _seed(text: str) -> int:
    # hash() is salted per process; a stable digest keeps replies identical across runs.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _reply_words(prompt: str, words: int, turn: int) -> list[str]:
    seed = _seed(f"{turn}:{prompt}")
    quoted = " ".join(prompt.split()[:12])
    text = [f"{_OPENINGS[seed % len(_OPENINGS)]} You asked: \u201c{quoted}\u201d."]
    # Walk the sentences with a step coprime to their count: no repeats until all are used.
    n = len(_SENTENCES)
    step = (1, 2, 4, 5, 7, 8)[seed % 6] if n == 9 else 1
    k = seed
    while sum(len(t.split()) for t in text) < words:
        text.append(_SENTENCES[k % n])
        k += step
    tokens = " ".join(text).split()[:words]
    return [t + " " for t in tokens[:-1]] + [tokens[-1]]


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
                {"title": t, "description": d.format(p=subject[:1].lower() + subject[1:80])} for t, d in _STEP_TITLES[:n]
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
