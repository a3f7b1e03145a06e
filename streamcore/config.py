"""One configuration object, loaded from TOML with environment overrides.

Unknown keys and bad values fail at start-up with a message that names them. Secrets never
live in the file: API keys and the JWT secret come from the environment.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal, Union

import msgspec

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Config",
    "ServerConfig",
    "ProviderConfig",
    "LimitsConfig",
    "AuthConfig",
    "SecurityConfig",
    "FeaturesConfig",
    "RunsConfig",
    "RedisConfig",
    "SSEConfig",
    "MetricsConfig",
    "load_config",
]

# Option names that hold credentials (max_tokens is not one of them).
_SECRET_KEY = re.compile(r"(^|_)(api_key|secret|password|access_token|auth_token|token)$")


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    """``[server]``: where and how ``streamcore serve`` listens."""

    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/ws"
    server: Literal["uvicorn", "websockets"] = "uvicorn"
    #: permessage-deflate: off by default, it adds latency per frame for little gain on
    #: short chunks (see benchmarks/README.md).
    compression: bool = False
    #: seconds open generations get to end before the process exits on SIGINT/SIGTERM.
    shutdown_timeout: float = 5.0
    #: send a chunk from the run's own task while the connection's writer task is idle,
    #: saving a task switch per chunk, on ASGI servers known to allow it (uvicorn).
    eager_send: bool = True
    #: the event loop of ``streamcore serve``: "auto" runs on uvloop when it is installed
    #: (the ``fast`` extra, as ``uvicorn[standard]`` does), "asyncio" on the standard loop,
    #: "uvloop" requires it. An app served by its own server keeps that server's loop.
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: once the server listens, collect and freeze the heap (``gc.freeze()``): the
    #: collector's full passes then skip the start-up objects, and pause every stream for
    #: less (see streamcore/_heap.py). Process-wide, hence off unless asked; for a process
    #: that only serves streamcore.
    gc_freeze: bool = False


class ProviderConfig(_Section):
    """``[provider]``: which provider, which model, and its options table."""

    name: str = "demo"
    model: Union[str, None] = None
    #: prepended to every chat conversation as a system message.
    system_prompt: Union[str, None] = None
    options: dict[str, Any] = {}


class LimitsConfig(_Section):
    """``[limits]``: sizes, timeouts and rates (documented in README.md)."""

    max_message_bytes: int = 1 << 20
    max_concurrent_generations: int = 3
    #: runs live at once in this process, all users together.
    max_generations: int = 1000
    first_chunk_timeout: float = 30.0
    generation_timeout: float = 300.0
    history_messages: int = 20
    #: history kept per conversation, in bytes of text (the oldest turns go first).
    history_bytes: int = 256 * 1024
    #: conversations kept per user (least recently used dropped first).
    conversations_per_owner: int = 50
    #: conversations kept in all (least recently used dropped first).
    max_conversations: int = 10_000
    #: client frames whose handlers may run at once per connection (application
    #: handlers and UPDATE_OBJECTIVE run beside the reader, so STOP and PING never wait).
    max_pending_handlers: int = 8
    #: consecutive frames refused by the rate limit before the connection is closed
    #: (1008); each refusal past the first gets no reply.
    flood_close_after: int = 200
    #: connections this process serves at once; past it: ERROR RATE_LIMIT, close 1008.
    max_connections: int = 10_000
    #: connections at once from one IP address (IPv6: one /64); behind a proxy, raise it.
    max_connections_per_ip: int = 100
    #: connections at once of one authenticated user.
    max_connections_per_user: int = 20
    #: bytes of one server frame at most; an event that would be larger is not sent (the
    #: client gets ERROR SERVER_ERROR instead). 0: ``max_message_bytes``.
    max_frame_bytes: int = 0
    #: objectives kept per user (per connection when anonymous); the oldest go first.
    objectives_per_owner: int = 100
    #: owners whose objectives are kept in memory; the least recently used go first.
    max_objective_owners: int = 10_000
    #: steps one objective may have; an UPDATE_OBJECTIVE past it gets INVALID_MESSAGE.
    max_objective_steps: int = 100
    #: bytes one objective may take (serialized); likewise.
    max_objective_bytes: int = 64 * 1024
    #: seconds without a client frame (and nothing streaming) before a connection is
    #: closed (1001); 0: never, for listen-only clients such as the RAG seed's page,
    #: which never sends a frame and never reconnects (protocol pings still find dead peers).
    idle_timeout: float = 300.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    messages_per_interval: int = 30
    interval: float = 10.0
    send_buffer_bytes: int = 256 * 1024
    #: merge pending chunks of one message into one frame when the client reads slower
    #: than the provider writes (off: every chunk is its own frame, producers wait).
    coalesce_chunks: bool = True
    slow_client_timeout: float = 15.0
    retry_after_ms: int = 1000


class AuthConfig(_Section):
    """``[auth]``: JWT authentication, off unless a secret or public key is set."""

    jwt_secret: Union[str, None] = None
    jwt_public_key: Union[str, None] = None
    algorithms: list[str] = []
    audience: Union[str, None] = None
    issuer: Union[str, None] = None

    @property
    def enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key)


class RunsConfig(_Section):
    """``[runs]``: how long a reply outlives its connection, and the run log's bounds."""

    #: seconds a run keeps going after its last watcher left, waiting for a RESUME.
    grace_period: float = 30.0
    #: never cancel a run whose watchers left (it finishes and stays resumable).
    always_finish: bool = False
    #: seconds a finished run stays resumable.
    retention: float = 300.0
    #: text one run may log; a longer reply is cut with ``stopReason: "length"``.
    max_run_bytes: int = 4 * 1024 * 1024
    #: runs kept in the log, running and finished (the oldest finished go first).
    max_runs: int = 10_000
    #: bytes the log holds in all; past it, the oldest finished runs are dropped and new
    #: runs are refused while running ones alone exceed it.
    max_log_bytes: int = 256 * 1024 * 1024
    #: seconds any cleanup (closing a provider stream, a store) may take before it is
    #: abandoned.
    cleanup_timeout: float = 5.0


class RedisConfig(_Section):
    """``[redis]``: a shared backend for several workers (off when ``url`` is unset)."""

    #: ``redis://host:port/db``; unset: everything stays in this process's memory.
    url: Union[str, None] = None
    #: prefix of every key and channel, so several apps can share one server.
    key_prefix: str = "streamcore:"
    #: milliseconds a run's appends may wait to be sent in one pipelined batch.
    flush_interval_ms: float = 2.0


class SSEConfig(_Section):
    """``[sse]``: the Server-Sent Events routes of ``streamcore serve`` (uvicorn only)."""

    #: the Vercel AI SDK UI message stream (``useChat``'s default); empty: off.
    aisdk_path: str = "/api/chat"
    #: AG-UI events (``RunAgentInput`` in, AG-UI events out); empty: off.
    agui_path: str = "/agui"
    #: streamcore's own envelopes as SSE events; empty: off.
    envelope_path: str = "/sse"
    #: seconds of silence before a ``: keep-alive`` comment (proxies close idle streams).
    heartbeat: float = 15.0


class MetricsConfig(_Section):
    """``[metrics]``: Prometheus metrics and OpenTelemetry traces (off by default)."""

    #: collect metrics (and traces when ``otel`` is on); nothing is counted per chunk.
    enabled: bool = False
    #: where plain HTTP ``GET`` serves the Prometheus text, beside /healthz; "" keeps
    #: the metrics in the process (readable from Python) without serving them.
    path: str = "/metrics"
    #: keep Prometheus metrics (the ``prometheus`` extra: prometheus-client).
    prometheus: bool = True
    #: a span per run through the global OpenTelemetry tracer provider (the ``otel``
    #: extra: opentelemetry-api; configure the SDK and an exporter in the application).
    otel: bool = False


class SecurityConfig(_Section):
    """``[security]``: the Origin allow-list; empty means any Origin (documented)."""

    allowed_origins: list[str] = []


class FeaturesConfig(_Section):
    """``[features]``: optional behaviours of the RAG seed."""

    #: after each complete reply, ask the provider for follow-up questions and send them
    #: as FOLLOW_UP_QUESTIONS to the asking connection ("session") or to all ("broadcast").
    follow_up_questions: Literal["off", "session", "broadcast"] = "off"
    #: include ``metadata`` {sessionId, userId} in every server frame.
    metadata: bool = True
    #: the model's reasoning text: "stream" sends AI_REASONING_CHUNK, "hide" drops it.
    reasoning: Literal["stream", "hide"] = "stream"


class Config(_Section):
    """The whole configuration; every section has working defaults."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    provider: ProviderConfig = msgspec.field(default_factory=ProviderConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    runs: RunsConfig = msgspec.field(default_factory=RunsConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    sse: SSEConfig = msgspec.field(default_factory=SSEConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    features: FeaturesConfig = msgspec.field(default_factory=FeaturesConfig)

    def __post_init__(self) -> None:
        _validate(self)

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with every secret replaced, safe to log."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        if data["auth"].get("jwt_secret"):
            data["auth"]["jwt_secret"] = "***"
        return data


def _validate(cfg: Config) -> None:
    lim = cfg.limits
    positive = {
        "limits.max_message_bytes": lim.max_message_bytes,
        "limits.max_concurrent_generations": lim.max_concurrent_generations,
        "limits.max_generations": lim.max_generations,
        "limits.first_chunk_timeout": lim.first_chunk_timeout,
        "limits.generation_timeout": lim.generation_timeout,
        "limits.ping_interval": lim.ping_interval,
        "limits.ping_timeout": lim.ping_timeout,
        "limits.messages_per_interval": lim.messages_per_interval,
        "limits.interval": lim.interval,
        "limits.send_buffer_bytes": lim.send_buffer_bytes,
        "limits.slow_client_timeout": lim.slow_client_timeout,
        "server.shutdown_timeout": cfg.server.shutdown_timeout,
        "limits.history_bytes": lim.history_bytes,
        "limits.conversations_per_owner": lim.conversations_per_owner,
        "limits.max_conversations": lim.max_conversations,
        "limits.max_pending_handlers": lim.max_pending_handlers,
        "limits.flood_close_after": lim.flood_close_after,
        "limits.max_connections": lim.max_connections,
        "limits.max_connections_per_ip": lim.max_connections_per_ip,
        "limits.max_connections_per_user": lim.max_connections_per_user,
        "limits.objectives_per_owner": lim.objectives_per_owner,
        "limits.max_objective_owners": lim.max_objective_owners,
        "limits.max_objective_steps": lim.max_objective_steps,
        "limits.max_objective_bytes": lim.max_objective_bytes,
        "runs.retention": cfg.runs.retention,
        "runs.max_run_bytes": cfg.runs.max_run_bytes,
        "runs.max_runs": cfg.runs.max_runs,
        "runs.max_log_bytes": cfg.runs.max_log_bytes,
        "runs.cleanup_timeout": cfg.runs.cleanup_timeout,
    }
    mpath = cfg.metrics.path
    if mpath and (not mpath.startswith("/") or mpath == cfg.server.path):
        raise ConfigError(
            f'metrics.path must start with "/" and differ from server.path (or be ""), got {mpath!r}'
        )
    if cfg.runs.grace_period < 0:
        raise ConfigError(f"runs.grace_period must be >= 0, got {cfg.runs.grace_period!r}")
    for key, value in positive.items():
        # NaN compares false with everything and inf never elapses: both refused.
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{key} must be > 0 (and finite), got {value!r}")
    if not (math.isfinite(lim.idle_timeout) and lim.idle_timeout >= 0):
        raise ConfigError(f"limits.idle_timeout must be >= 0 (and finite; 0: never), got {lim.idle_timeout!r}")
    if lim.max_frame_bytes < 0:
        raise ConfigError(f"limits.max_frame_bytes must be >= 0, got {lim.max_frame_bytes!r}")
    if lim.history_messages < 0:
        raise ConfigError(f"limits.history_messages must be >= 0, got {lim.history_messages!r}")
    if not 0 < cfg.server.port < 65536 and cfg.server.port != 0:
        raise ConfigError(f"server.port must be in 0..65535, got {cfg.server.port!r}")
    if not cfg.server.path.startswith("/"):
        raise ConfigError(f"server.path must start with '/', got {cfg.server.path!r}")
    for key in cfg.provider.options:
        if _SECRET_KEY.search(key.lower()):
            raise ConfigError(
                f"provider.options.{key}: secrets do not belong in the config file; "
                f"put it in an environment variable (e.g. with the provider's api_key_env option)"
            )
    if cfg.auth.jwt_secret is not None and cfg.auth.jwt_public_key is not None:
        raise ConfigError("auth: set jwt_secret (HS256) or jwt_public_key (RS256/ES256), not both")


#: Prefix of every environment variable that sets a config key.
ENV_PREFIX = "STREAMCORE_"
#: Short names kept from 0.1, each equal to its canonical ``STREAMCORE_<SECTION>_<KEY>``.
ENV_ALIASES = {
    "STREAMCORE_PROVIDER": "STREAMCORE_PROVIDER_NAME",
    "STREAMCORE_MODEL": "STREAMCORE_PROVIDER_MODEL",
    "STREAMCORE_JWT_SECRET": "STREAMCORE_AUTH_JWT_SECRET",
}
#: STREAMCORE_* variables that are not config keys.
ENV_OTHER = frozenset({"STREAMCORE_CONFIG"})


def _struct_type(tp: Any) -> Any:
    """The Struct class of a section field (``ServerConfig``, or inside ``Optional``)."""
    for candidate in (tp, *typing.get_args(tp)):
        if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
            return candidate
    return None


def env_variables(config_type: type | None = None) -> dict[str, tuple[tuple[str, ...], Any]]:
    """Every environment variable that sets a config key: ``{name: ((section, key), type)}``.

    Derived from the Struct fields of :class:`Config`, so a new key is settable from the
    environment as soon as it exists: ``[limits] max_message_bytes`` is
    ``STREAMCORE_LIMITS_MAX_MESSAGE_BYTES``. A top-level key outside any section would be
    ``STREAMCORE_<KEY>``.
    """
    config_type = Config if config_type is None else config_type
    names: dict[str, tuple[tuple[str, ...], Any]] = {}
    for field in msgspec.structs.fields(config_type):
        section = _struct_type(field.type)
        if section is None:
            names[f"{ENV_PREFIX}{field.encode_name}".upper()] = ((field.encode_name,), field.type)
            continue
        for key in msgspec.structs.fields(section):
            name = f"{ENV_PREFIX}{field.encode_name}_{key.encode_name}".upper()
            names[name] = ((field.encode_name, key.encode_name), key.type)
    return names


def _accepts(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp)
    except (msgspec.ValidationError, TypeError, ConfigError):
        return False
    return True


def parse_env_value(text: str, tp: Any = Any) -> Any:
    """An environment value: a TOML value when it parses as one and fits ``tp``, else the text.

    ``2048`` is an integer, ``true`` a boolean, ``["https://a.example"]`` an array,
    ``{ temperature = 0.3 }`` a table; ``127.0.0.1``, ``/ws`` and ``demo`` stay strings, and
    so does ``123`` for a string key (a model named ``123``).
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if tp is Any or _accepts(value, tp) or not _accepts(text, tp):
        return value
    return text


def _from_env(env: typing.Mapping[str, str]) -> tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], str]]:
    """Config values set by the environment, and the variable that set each."""
    known = env_variables()
    values: dict[tuple[str, ...], Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    unknown: list[str] = []
    sections = {path[0].upper() for path, _ in known.values() if len(path) == 2}
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_OTHER:
            continue
        canonical = ENV_ALIASES.get(name, name)
        if canonical not in known:
            rest = name[len(ENV_PREFIX):]
            # Only what looks like a config key: a known section, or a near miss of a key.
            if any(rest.startswith(section + "_") for section in sections) or difflib.get_close_matches(
                name, list(known) + list(ENV_ALIASES), n=1, cutoff=0.85
            ):
                unknown.append(name)
            continue
        if text == "":  # an empty variable counts as unset
            continue
        path, tp = known[canonical]
        value = parse_env_value(text, tp)
        if path in values and values[path] != value:
            raise ConfigError(
                f"${origin[path]} and ${name} both set {'.'.join(path)} and disagree: keep one"
            )
        values[path] = value
        origin[path] = name
    if unknown:
        hints = []
        for name in sorted(unknown):
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            hints.append(f"${name}" + (f" (did you mean ${close[0]}?)" if close else ""))
        raise ConfigError(
            "unknown environment variable" + ("s " if len(hints) > 1 else " ") + ", ".join(hints)
            + f": a config key [section] key is set by {ENV_PREFIX}<SECTION>_<KEY>"
        )
    return values, origin


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: typing.Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load the configuration.

    Precedence, lowest first: defaults, the TOML file (``path`` or ``$STREAMCORE_CONFIG``),
    the environment, then ``overrides`` (the CLI flags), given as
    ``{"provider.name": "demo", "server.port": 9000}`` (``None`` values are ignored).

    Every key can come from the environment as ``STREAMCORE_<SECTION>_<KEY>`` in upper
    case (``STREAMCORE_LIMITS_MAX_MESSAGE_BYTES=2048``, ``STREAMCORE_SERVER_PORT=9000``).
    A value is read as a TOML value when it parses as one of the key's type (numbers,
    ``true``/``false``, ``["a", "b"]`` arrays, ``{ k = 1 }`` tables, which replace the
    file's table), else as a string; an empty variable counts as unset. The short
    ``STREAMCORE_PROVIDER``, ``STREAMCORE_MODEL`` and ``STREAMCORE_JWT_SECRET`` still work.

    Args:
        path: TOML file; ``$STREAMCORE_CONFIG`` when omitted; defaults alone when neither.
        env: the environment to read (``os.environ``).
        overrides: dotted keys set last.

    Raises:
        ConfigError: naming the file or variable and the offending key, including for a
            ``STREAMCORE_<SECTION>_...`` variable that names no key.
    """
    env = os.environ if env is None else env
    path = path or env.get("STREAMCORE_CONFIG") or None
    raw: dict[str, Any] = {}
    source = "defaults"
    if path:
        source = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values, origin = _from_env(env)
    env_origin = {".".join(k): f"${name}" for k, name in origin.items()}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[tuple(key.split(".", 1))] = value
            env_origin.pop(key, None)
            env_origin[key] = "command line"
    for keys, value in values.items():
        table = raw
        for part in keys[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [{part}] must be a table")
        table[keys[-1]] = value
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        text = _describe(exc)
        raise ConfigError(f"{_source_of(text, env_origin, source)}: {text}") from None
    except ConfigError as exc:
        raise ConfigError(f"{_source_of(str(exc), env_origin, source)}: {exc}") from None


def _source_of(message: str, origin: dict[str, str], default: str) -> str:
    """Where the key a message names came from: ``$STREAMCORE_...``, command line, or the file."""
    for key, where in origin.items():
        if f"`{key}`" in message or message.startswith(key + " ") or message.startswith(key + ":"):
            return where
    return default


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "at `$.limits`"; users think in TOML keys, so say "in [limits]".
    text = str(exc)
    head, sep, path = text.partition(" - at `$.")
    if not sep:
        return text
    path = path.rstrip("`")
    return f"{head} - at `{path}`"
