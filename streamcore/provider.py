"""The provider plugin interface and the registry that finds providers.

A provider turns a :class:`GenerationRequest` into an async stream of text deltas::

    class EchoProvider:
        name = "echo"

        def __init__(self, *, model: str | None = None, **options):
            self.model = model or "echo-1"

        async def stream(self, request):
            for word in request.messages[-1].content.split():
                yield word + " "
            yield Completion(finish_reason="complete", model=self.model)

``stream`` is an async generator: it yields ``str`` deltas of the answer,
:class:`~streamcore.events.Reasoning` deltas of the model's reasoning when it exposes
them, and may yield one :class:`Completion` last (finish reason, usage, model); these are
the neutral types of :mod:`streamcore.events`, never wire types. It raises
:class:`~streamcore.errors.ProviderError` for failures it can name, and must release what
it holds when closed early (the engine always closes it, on stop, timeout or disconnect).

Providers are registered under the ``streamcore.providers`` entry-point group, the built-in
ones included, so a third-party distribution adds one with::

    [project.entry-points."streamcore.providers"]
    echo = "my_package:EchoProvider"
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from typing import Any, Protocol, Union, runtime_checkable

import anyio
import msgspec

from .errors import ConfigError
from .events import Completion, Reasoning, Usage

__all__ = [
    "ChatMessage",
    "ObjectiveSpec",
    "GenerationRequest",
    "Completion",
    "Reasoning",
    "Usage",
    "Provider",
    "ENTRY_POINT_GROUP",
    "available_providers",
    "load_provider",
    "close_stream",
    "close_provider",
    "collect_text",
]

ENTRY_POINT_GROUP = "streamcore.providers"


class ChatMessage(msgspec.Struct):
    role: str
    content: str


class ObjectiveSpec(msgspec.Struct):
    """The GENERATE_OBJECTIVE parameters, for providers that build objectives themselves."""

    prompt: str
    difficulty: Union[str, None] = None
    category: Union[str, None] = None


class GenerationRequest(msgspec.Struct):
    """What a provider is asked to generate.

    Attributes:
        purpose: ``"chat"``, ``"objective"`` or ``"follow_up"``, so a provider may route
            each to a different model.
        messages: the conversation, oldest first, system prompt included.
        model: the model name from the config (the provider's default when None).
        options: per-request options, merged over the provider's configured ones.
        json_mode: the reply must be one JSON object (structured output).
        objective: set for GENERATE_OBJECTIVE.
        context: the client's ``context`` of USER_MESSAGE, if any.
    """

    messages: list[ChatMessage]
    purpose: str = "chat"
    model: Union[str, None] = None
    options: dict[str, Any] = {}
    json_mode: bool = False
    objective: Union[ObjectiveSpec, None] = None
    context: Any = None


@runtime_checkable
class Provider(Protocol):
    """What the engine needs of a provider."""

    #: the model reported in AI_MESSAGE_START when the request names none.
    model: str | None

    # Optional: ``async def aclose(self) -> None`` releases pooled resources; the engine
    # calls it when it closes.

    def stream(self, request: GenerationRequest) -> AsyncIterator[Union[str, Reasoning, Completion]]:
        """Yield text (and reasoning) deltas, then optionally one :class:`Completion`."""
        ...


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_providers() -> list[str]:
    """Names of every provider installed under the ``streamcore.providers`` group."""
    return sorted(_entry_points())


def load_provider(name: str, *, model: str | None = None, options: dict[str, Any] | None = None) -> Provider:
    """Instantiate the provider registered as ``name``.

    Args:
        name: the entry-point name (``demo``, ``litellm``, a third party's...).
        model: passed as ``model=``.
        options: passed as keyword arguments; the provider rejects those it does not know.

    Raises:
        ConfigError: the name is unknown (the message lists the known ones), or the
            provider rejected its options.
    """
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        known = ", ".join(sorted(eps)) or "none installed"
        raise ConfigError(f"unknown provider {name!r}; known providers: {known}")
    factory = ep.load()
    try:
        provider: Provider = factory(model=model, **(options or {}))
        return provider
    except TypeError as exc:
        raise ConfigError(f"provider {name!r}: bad options: {exc}") from None


#: Seconds a provider stream gets to release what it holds once closed; a stream whose
#: ``aclose`` hangs is abandoned after this, so no cleanup can hold a run or a shutdown.
CLOSE_TIMEOUT = 5.0


async def close_stream(stream: Any, timeout: float = CLOSE_TIMEOUT) -> bool:
    """Close a provider stream even from a cancelled scope, within ``timeout`` seconds.

    Returns:
        False when ``aclose`` did not finish in time (it is abandoned), else True.
    """
    if getattr(stream, "ag_frame", True) is None:
        return True  # an async generator that already ran to its end holds nothing
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return True
    with anyio.CancelScope(shield=True) as scope:
        scope.deadline = anyio.current_time() + timeout
        try:
            await aclose()
        except Exception:
            # The stream failed while closing; what it held is released with it.
            return True
    return not scope.cancelled_caught


async def close_provider(provider: Any, timeout: float = CLOSE_TIMEOUT) -> None:
    """Call the provider's optional ``aclose()`` (pooled HTTP clients...), bounded in time."""
    aclose = getattr(provider, "aclose", None)
    if aclose is None:
        return
    with anyio.move_on_after(timeout):
        await aclose()


async def collect_text(provider: Provider, request: GenerationRequest) -> str:
    """Run ``request`` to the end and return the whole text (the stream is always closed)."""
    stream = provider.stream(request)
    try:
        return "".join([item async for item in stream if type(item) is str])
    finally:
        await close_stream(stream)
