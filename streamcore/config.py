"""One configuration object, loaded from TOML with environment overrides.

Unknown keys and bad values fail at start-up with a message that names them. Secrets never
live in the file: API keys and the JWT secret come from the environment.
"""

from __future__ import annotations

import os
import re
import sys
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
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    features: FeaturesConfig = msgspec.field(default_factory=FeaturesConfig)

    def __post_init__(self) -> None:
        _validate(self)

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with every secret replaced, safe to log."""
        data = msgspec.to_builtins(self)
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
        "limits.idle_timeout": lim.idle_timeout,
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
        "runs.retention": cfg.runs.retention,
        "runs.max_run_bytes": cfg.runs.max_run_bytes,
        "runs.max_runs": cfg.runs.max_runs,
        "runs.max_log_bytes": cfg.runs.max_log_bytes,
        "runs.cleanup_timeout": cfg.runs.cleanup_timeout,
    }
    if cfg.runs.grace_period < 0:
        raise ConfigError(f"runs.grace_period must be >= 0, got {cfg.runs.grace_period!r}")
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value!r}")
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


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load the configuration.

    Precedence, lowest first: defaults, the TOML file (``path`` or ``STREAMCORE_CONFIG``),
    the environment (``STREAMCORE_PROVIDER``, ``STREAMCORE_MODEL``,
    ``STREAMCORE_JWT_SECRET``), then ``overrides`` (the CLI flags), given as
    ``{"provider.name": "demo", "server.port": 9000}``.

    Raises:
        ConfigError: naming the file and the offending key.
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
    dotted: dict[str, Any] = {}
    if env.get("STREAMCORE_PROVIDER"):
        dotted["provider.name"] = env["STREAMCORE_PROVIDER"]
    if env.get("STREAMCORE_MODEL"):
        dotted["provider.model"] = env["STREAMCORE_MODEL"]
    if env.get("STREAMCORE_JWT_SECRET"):
        dotted["auth.jwt_secret"] = env["STREAMCORE_JWT_SECRET"]
    dotted.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        raw[section][name] = value
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "at `$.limits`"; users think in TOML keys, so say "in [limits]".
    text = str(exc)
    head, sep, path = text.partition(" - at `$.")
    if not sep:
        return text
    path = path.rstrip("`")
    return f"{head} - at `{path}`"
