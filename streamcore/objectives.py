"""Objectives: the default schema, how model output becomes one, and where they are kept.

GENERATE_OBJECTIVE asks the model for JSON of :class:`ObjectiveDraft`; the text is parsed
and validated here, then completed with ids and timestamps into an :class:`Objective`.
UPDATE_OBJECTIVE goes through an :class:`ObjectiveStore`, scoped by user, so that one
user can never read or change another's objectives.

Every objective is bounded, whoever wrote it (the model or an UPDATE_OBJECTIVE): at most
``max_steps`` steps and ``max_bytes`` bytes serialized. An update that would cross a bound
is refused whole with ``INVALID_MESSAGE`` naming the bound; nothing is changed. The
in-memory store also bounds objectives per owner (the oldest go first), owners in all
(the least recently used go first) and bytes in all.
"""

from __future__ import annotations

from typing import Any, Protocol, Union

import anyio
import msgspec

from .errors import ProtocolError, ProviderError
from .ids import new_id, now_ms
from .log import get_logger

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
    "check_bounds",
    "objective_size",
    "MAX_STEPS",
    "MAX_OBJECTIVE_BYTES",
    "OBJECTIVES_PER_OWNER",
    "MAX_OWNERS",
    "MAX_STORE_BYTES",
]

#: Steps one objective may have (``[limits] max_objective_steps``).
MAX_STEPS = 100
#: Bytes one objective may take, serialized as JSON (``[limits] max_objective_bytes``).
MAX_OBJECTIVE_BYTES = 64 * 1024
#: Objectives kept per owner; the oldest go first (``[limits] objectives_per_owner``).
OBJECTIVES_PER_OWNER = 100
#: Owners kept in memory; the least recently used go first (``[limits] max_objective_owners``).
MAX_OWNERS = 10_000
#: Bytes the in-memory store holds in all; the least recently used owners go first.
MAX_STORE_BYTES = 256 * 1024 * 1024

_size_encoder = msgspec.json.Encoder()
_log = get_logger("streamcore")


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


def strip_code_fence(text: str) -> str:
    """The text inside one Markdown code fence, which models often wrap JSON in.

    String operations, not a regular expression: a fence pattern with several optional
    whitespace runs backtracks in cubic time on a reply of an open fence and whitespace
    (5,000 characters took a minute, on the event loop).
    """
    s = text.strip()
    if len(s) >= 6 and s.startswith("```") and s.endswith("```"):
        s = s[3:-3]
        if s.startswith("json"):
            s = s[4:]
        return s.strip()
    return s


_draft_decoder = msgspec.json.Decoder(ObjectiveDraft)


def parse_objective(
    text: str,
    *,
    difficulty: str | None,
    category: str | None,
    max_steps: int = MAX_STEPS,
    max_bytes: int = MAX_OBJECTIVE_BYTES,
) -> Objective:
    """Parse and validate a model's reply into a complete :class:`Objective`.

    Models often wrap JSON in a Markdown fence, so one fence is tolerated.

    Raises:
        ProviderError: ``GENERATION_FAILED``, retryable, when the text is not a valid draft
            or the objective is over ``max_steps`` steps or ``max_bytes`` bytes.
    """
    try:
        draft = _draft_decoder.decode(strip_code_fence(text))
    except msgspec.DecodeError as exc:
        raise ProviderError(f"the model's objective was not valid: {exc}") from None
    if not draft.title.strip() or not draft.steps:
        raise ProviderError("the model's objective was not valid: empty title or no steps")
    if len(draft.steps) > max_steps:
        raise ProviderError(
            f"the model's objective was not valid: {len(draft.steps)} steps, over max_objective_steps ({max_steps})"
        )
    now = now_ms()
    objective = Objective(
        id=new_id("obj"),
        title=draft.title.strip(),
        description=draft.description.strip(),
        category=(category or draft.category or "general"),
        difficulty=(difficulty or draft.difficulty or "intermediate"),
        steps=[Step(new_id("step"), s.title, s.description) for s in draft.steps],
        createdAt=now,
        updatedAt=now,
    )
    try:
        check_bounds(objective, max_steps=max_steps, max_bytes=max_bytes)
    except ProtocolError as exc:
        raise ProviderError(f"the model's objective was not valid: {exc.message}") from None
    return objective


def objective_size(objective: Any) -> int:
    """Bytes of ``objective`` serialized as JSON (what OBJECTIVE_UPDATED carries)."""
    return len(_size_encoder.encode(objective))


def check_bounds(objective: Any, *, max_steps: int = MAX_STEPS, max_bytes: int = MAX_OBJECTIVE_BYTES) -> int:
    """Check ``objective`` against the bounds; return its size in bytes.

    Raises:
        ProtocolError: ``INVALID_MESSAGE`` naming the bound crossed
            (``limits.max_objective_steps`` or ``limits.max_objective_bytes``).
    """
    steps = getattr(objective, "steps", None)
    if steps is not None and len(steps) > max_steps:
        raise ProtocolError(
            f"an objective has at most {max_steps} steps (limits.max_objective_steps); "
            f"this update would make {len(steps)} - at `$.data.updates.steps`"
        )
    size = objective_size(objective)
    if size > max_bytes:
        raise ProtocolError(
            f"an objective takes at most {max_bytes} bytes (limits.max_objective_bytes); "
            f"this update would make {size} - at `$.data.updates`"
        )
    return size


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


def apply_updates(
    objective: Objective,
    updates: dict[str, Any],
    *,
    max_steps: int = MAX_STEPS,
    max_bytes: int = MAX_OBJECTIVE_BYTES,
) -> Objective:
    """Return ``objective`` with ``updates`` applied, ``updatedAt`` refreshed.

    ``title``, ``description``, ``category`` and ``difficulty`` replace the current values.
    ``steps`` is a list of step changes merged by ``id``: an entry naming an existing step
    changes the fields it gives (``{"id": "step-1", "completed": true}``), an entry with
    ``"remove": true`` deletes that step, and an entry without ``id`` appends a new step.
    Steps not mentioned are kept as they are.

    The result must stay within ``max_steps`` steps and ``max_bytes`` bytes serialized;
    otherwise nothing is applied.

    Raises:
        ProtocolError: ``INVALID_MESSAGE`` naming the field that cannot be set, or the bound
            the update would cross.
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
        # Checked as it goes, so a hostile list of appends costs at most the bound.
        grow = max(len(steps), max_steps)
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
                if len(steps) >= grow:
                    raise ProtocolError(
                        f"an objective has at most {max_steps} steps (limits.max_objective_steps) - at `{where}`"
                    )
                new = Step(new_id("step"), upd.title)
                steps[new.id] = msgspec.structs.replace(new, **fields)
            elif upd.id not in steps:
                raise ProtocolError(f"unknown step id {upd.id[:128]!r} - at `{where}.id`")
            elif upd.remove:
                del steps[upd.id]
            else:
                steps[upd.id] = msgspec.structs.replace(steps[upd.id], **fields)
        changes["steps"] = list(steps.values())
    updated = msgspec.structs.replace(objective, **changes, updatedAt=now_ms())
    check_bounds(updated, max_steps=max_steps, max_bytes=max_bytes)
    return updated


class ObjectiveStore(Protocol):
    """Where objectives live. Every call is scoped by the owner's id.

    A store whose coroutines never wait may set ``immediate = True``: a run then stores its
    objective without the deadline and shield it gives stores that do I/O.
    """

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
    """The default store: objectives per owner in memory, bounded in every direction.

    Args:
        max_per_owner: objectives kept per owner; the oldest are dropped beyond this many.
        max_owners: owners kept; the least recently used (added, updated or read) go first.
        max_steps: steps one objective may have (an update past it: ``INVALID_MESSAGE``).
        max_bytes: bytes one objective may take serialized (likewise).
        max_total_bytes: bytes of objectives held in all; the least recently used owners
            go first (never the owner being served).
    """

    #: Its coroutines finish without ever waiting (see ObjectiveStore).
    immediate = True

    def __init__(
        self,
        max_per_owner: int = OBJECTIVES_PER_OWNER,
        *,
        max_owners: int = MAX_OWNERS,
        max_steps: int = MAX_STEPS,
        max_bytes: int = MAX_OBJECTIVE_BYTES,
        max_total_bytes: int = MAX_STORE_BYTES,
    ) -> None:
        for name, value in (("max_per_owner", max_per_owner), ("max_owners", max_owners),
                            ("max_steps", max_steps), ("max_bytes", max_bytes),
                            ("max_total_bytes", max_total_bytes)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        # owner -> {objective id -> (objective, size)}; dicts keep insertion order, so the
        # first owner is the least recently used and an owner's first objective the oldest.
        self._by_owner: dict[str, dict[str, tuple[Objective, int]]] = {}
        self._owner_bytes: dict[str, int] = {}
        self.max_per_owner = max_per_owner
        self.max_owners = max_owners
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        #: bytes held in all (serialized size of every objective).
        self.total_bytes = 0
        self._lock = anyio.Lock()

    def __len__(self) -> int:
        """Objectives held, all owners together."""
        return sum(len(mine) for mine in self._by_owner.values())

    @property
    def owners(self) -> int:
        return len(self._by_owner)

    def _touch(self, owner: str) -> dict[str, tuple[Objective, int]] | None:
        mine = self._by_owner.pop(owner, None)
        if mine is not None:
            self._by_owner[owner] = mine  # most recently used last
        return mine

    def _put(self, owner: str, objective: Objective, size: int) -> None:
        mine = self._touch(owner)
        if mine is None:
            mine = self._by_owner[owner] = {}
            self._owner_bytes[owner] = 0
        old = mine.pop(objective.id, None)
        if old is not None:
            self._account(owner, -old[1])
        mine[objective.id] = (objective, size)
        self._account(owner, size)
        while len(mine) > self.max_per_owner:
            _, (_, dropped) = next(iter(mine.items()))
            del mine[next(iter(mine))]
            self._account(owner, -dropped)
        while len(self._by_owner) > self.max_owners or (
            self.total_bytes > self.max_total_bytes and len(self._by_owner) > 1
        ):
            victim = next(iter(self._by_owner))
            if victim == owner:
                break
            self._forget(victim)

    def _account(self, owner: str, delta: int) -> None:
        self._owner_bytes[owner] += delta
        self.total_bytes += delta

    def _forget(self, owner: str) -> None:
        if self._by_owner.pop(owner, None) is not None:
            self.total_bytes -= self._owner_bytes.pop(owner, 0)

    async def add(self, owner: str, objective: Objective) -> None:
        # A generated objective is bounded when parsed; one over this store's bounds (an
        # application's, or tighter limits) is not kept: the client has its
        # OBJECTIVE_GENERATED, and a later UPDATE_OBJECTIVE of it gets INVALID_MESSAGE.
        try:
            size = check_bounds(objective, max_steps=self.max_steps, max_bytes=self.max_bytes)
        except ProtocolError as exc:
            _log.warning("objectives.not_stored", objective_id=getattr(objective, "id", None), reason=exc.message)
            return
        self._put(owner, objective, size)

    async def drop_owner(self, owner: str) -> None:
        self._forget(owner)

    async def get(self, owner: str, objective_id: str) -> Objective | None:
        mine = self._touch(owner)
        held = mine.get(objective_id) if mine is not None else None
        return held[0] if held is not None else None

    async def update(self, owner: str, objective_id: str, updates: dict[str, Any]) -> Objective:
        async with self._lock:
            mine = self._touch(owner)
            held = mine.get(objective_id) if mine is not None else None
            if held is None:
                raise ProtocolError(f"unknown objective {objective_id[:128]!r}")
            updated = apply_updates(held[0], updates, max_steps=self.max_steps, max_bytes=self.max_bytes)
            self._put(owner, updated, objective_size(updated))
            return updated
