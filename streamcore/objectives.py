"""Objectives: the default schema, how model output becomes one, and where they are kept.

GENERATE_OBJECTIVE asks the model for JSON of :class:`ObjectiveDraft`; the text is parsed
and validated here, then completed with ids and timestamps into an :class:`Objective`.
UPDATE_OBJECTIVE goes through an :class:`ObjectiveStore`, scoped by user, so that one
user can never read or change another's objectives.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, Union

import anyio
import msgspec

from .errors import ProtocolError, ProviderError
from .ids import new_id, now_ms

__all__ = [
    "Step",
    "Objective",
    "ObjectiveDraft",
    "ObjectiveStore",
    "InMemoryObjectiveStore",
    "objective_instructions",
    "parse_objective",
    "strip_code_fence",
    "apply_updates",
]


class Step(msgspec.Struct):
    id: str
    title: str
    description: str = ""
    completed: bool = False


class Objective(msgspec.Struct):
    """The spec's default Objective, wire names as written."""

    id: str
    title: str
    description: str
    category: str
    difficulty: str
    steps: list[Step]
    createdAt: int
    updatedAt: int


class _DraftStep(msgspec.Struct):
    title: str
    description: str = ""


class ObjectiveDraft(msgspec.Struct):
    """What the model is asked to produce; ids and timestamps are the server's to assign."""

    title: str
    description: str
    steps: list[_DraftStep]
    category: Union[str, None] = None
    difficulty: Union[str, None] = None


def objective_instructions(difficulty: str | None, category: str | None) -> str:
    """The system prompt that asks a model for an objective as JSON."""
    return (
        "You turn a person's goal into an actionable objective. Answer with one JSON object "
        "and nothing else, of this shape: "
        '{"title": str, "description": str, "category": str, "difficulty": str, '
        '"steps": [{"title": str, "description": str}]} with 3 to 7 steps. '
        f"Difficulty: {difficulty or 'choose one of beginner, intermediate, advanced'}. "
        f"Category: {category or 'choose a short lowercase category'}."
    )


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def strip_code_fence(text: str) -> str:
    """The text inside one Markdown code fence, which models often wrap JSON in."""
    match = _FENCE.match(text)
    return match.group(1) if match else text.strip()


_draft_decoder = msgspec.json.Decoder(ObjectiveDraft)


def parse_objective(text: str, *, difficulty: str | None, category: str | None) -> Objective:
    """Parse and validate a model's reply into a complete :class:`Objective`.

    Models often wrap JSON in a Markdown fence, so one fence is tolerated.

    Raises:
        ProviderError: ``GENERATION_FAILED``, retryable, when the text is not a valid draft.
    """
    try:
        draft = _draft_decoder.decode(strip_code_fence(text))
    except msgspec.DecodeError as exc:
        raise ProviderError(f"the model's objective was not valid: {exc}") from None
    if not draft.title.strip() or not draft.steps:
        raise ProviderError("the model's objective was not valid: empty title or no steps")
    now = now_ms()
    return Objective(
        id=new_id("obj"),
        title=draft.title.strip(),
        description=draft.description.strip(),
        category=(category or draft.category or "general"),
        difficulty=(difficulty or draft.difficulty or "intermediate"),
        steps=[Step(new_id("step"), s.title, s.description) for s in draft.steps],
        createdAt=now,
        updatedAt=now,
    )


class _StepUpdate(msgspec.Struct, forbid_unknown_fields=True):
    id: Union[str, None] = None
    title: Union[str, None] = None
    description: Union[str, None] = None
    completed: Union[bool, None] = None
    remove: bool = False


class _Updates(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    title: Union[str, None] = None
    description: Union[str, None] = None
    category: Union[str, None] = None
    difficulty: Union[str, None] = None
    steps: Union[list[_StepUpdate], None] = None


def apply_updates(objective: Objective, updates: dict[str, Any]) -> Objective:
    """Return ``objective`` with ``updates`` applied, ``updatedAt`` refreshed.

    ``title``, ``description``, ``category`` and ``difficulty`` replace the current values.
    ``steps`` is a list of step changes merged by ``id``: an entry naming an existing step
    changes the fields it gives (``{"id": "step-1", "completed": true}``), an entry with
    ``"remove": true`` deletes that step, and an entry without ``id`` appends a new step.
    Steps not mentioned are kept as they are.

    Raises:
        ProtocolError: ``INVALID_MESSAGE`` naming the field that cannot be set.
    """
    try:
        parsed = msgspec.convert(updates, _Updates)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid objective update: {exc}".replace("`$", "`$.data.updates")) from None
    changes: dict[str, Any] = {
        f: getattr(parsed, f)
        for f in ("title", "description", "category", "difficulty")
        if getattr(parsed, f) is not None
    }
    if parsed.steps is not None:
        steps = {s.id: s for s in objective.steps}
        for i, upd in enumerate(parsed.steps):
            where = f"$.data.updates.steps[{i}]"
            fields = {
                f: getattr(upd, f)
                for f in ("title", "description", "completed")
                if getattr(upd, f) is not None
            }
            if upd.id is None:
                if upd.title is None or upd.remove:
                    raise ProtocolError(f"a new step needs a `title` - at `{where}`")
                new = Step(new_id("step"), upd.title)
                steps[new.id] = msgspec.structs.replace(new, **fields)
            elif upd.id not in steps:
                raise ProtocolError(f"unknown step id {upd.id[:128]!r} - at `{where}.id`")
            elif upd.remove:
                del steps[upd.id]
            else:
                steps[upd.id] = msgspec.structs.replace(steps[upd.id], **fields)
        changes["steps"] = list(steps.values())
    return msgspec.structs.replace(objective, **changes, updatedAt=now_ms())


class ObjectiveStore(Protocol):
    """Where objectives live. Every call is scoped by the owner's id."""

    async def add(self, owner: str, objective: Any) -> None:
        """Store a newly generated objective."""

    async def update(self, owner: str, objective_id: str, updates: dict[str, Any]) -> Any:
        """Apply ``updates`` and return the updated objective.

        Raises:
            ProtocolError: the id is unknown to this owner, or an update is invalid.
        """

    async def drop_owner(self, owner: str) -> None:
        """Forget every objective of ``owner`` (an anonymous connection that closed)."""


class InMemoryObjectiveStore:
    """The default store: a dict per owner, bounded so one user cannot exhaust memory.

    Args:
        max_per_owner: the oldest objectives of an owner are dropped beyond this many.
    """

    def __init__(self, max_per_owner: int = 1000) -> None:
        self._by_owner: dict[str, dict[str, Objective]] = {}
        self._max = max_per_owner
        self._lock = anyio.Lock()

    async def add(self, owner: str, objective: Objective) -> None:
        mine = self._by_owner.setdefault(owner, {})
        mine[objective.id] = objective
        while len(mine) > self._max:
            del mine[next(iter(mine))]

    async def drop_owner(self, owner: str) -> None:
        self._by_owner.pop(owner, None)

    async def get(self, owner: str, objective_id: str) -> Objective | None:
        return self._by_owner.get(owner, {}).get(objective_id)

    async def update(self, owner: str, objective_id: str, updates: dict[str, Any]) -> Objective:
        async with self._lock:
            current = self._by_owner.get(owner, {}).get(objective_id)
            if current is None:
                raise ProtocolError(f"unknown objective {objective_id[:128]!r}")
            updated = apply_updates(current, updates)
            self._by_owner[owner][objective_id] = updated
            return updated
