"""Config loading: TOML, environment overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from streamcore import ConfigError, Engine, load_config


def write(tmp_path, text):
    path = tmp_path / "streamcore.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file():
    cfg = load_config(env={})
    assert cfg.provider.name == "demo" and cfg.server.port == 8000 and cfg.server.path == "/ws"
    assert cfg.limits.max_message_bytes <= 1 << 20


def test_file_then_env_then_overrides(tmp_path):
    path = write(
        tmp_path,
        """
[server]
port = 9001
[provider]
name = "litellm"
model = "openai/gpt-4o-mini"
options = { temperature = 0.2, mock_response = "hi" }
[limits]
max_concurrent_generations = 5
""",
    )
    cfg = load_config(path, env={})
    assert cfg.server.port == 9001 and cfg.provider.options == {"temperature": 0.2, "mock_response": "hi"}
    assert cfg.limits.max_concurrent_generations == 5
    env = {"STREAMCORE_CONFIG": str(path), "STREAMCORE_PROVIDER": "demo", "STREAMCORE_MODEL": "demo-2"}
    cfg = load_config(env=env)
    assert (cfg.provider.name, cfg.provider.model, cfg.server.port) == ("demo", "demo-2", 9001)
    cfg = load_config(env=env, overrides={"server.port": 7000, "provider.model": None})
    assert cfg.server.port == 7000 and cfg.provider.model == "demo-2"


def test_swapping_provider_is_one_line_of_config(tmp_path):
    demo = Engine(load_config(write(tmp_path, '[provider]\nname = "demo"\n'), env={}))
    assert type(demo.provider).__name__ == "DemoProvider"
    path = write(tmp_path, '[provider]\nname = "litellm"\nmodel = "openai/gpt-4o-mini"\n')
    swapped = Engine(load_config(path, env={}))
    assert type(swapped.provider).__name__ == "LiteLLMProvider"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[server]\nprot = 1\n", "unknown field `prot` - at `server`"),
        ("[limits]\nidle_timeout = 'soon'\n", "Expected `float`, got `str` - at `limits.idle_timeout`"),
        ("[limits]\nidle_timeout = -1\n", "limits.idle_timeout must be >= 0"),
        ("[serverr]\n", "unknown field `serverr`"),
        ("[server]\nserver = 'tornado'\n", "at `server.server`"),
        ("[server]\npath = 'ws'\n", "server.path must start with '/'"),
        ("[provider]\noptions = { api_key = 'sk-123' }\n", "provider.options.api_key: secrets do not belong"),
        ("[auth]\njwt_secret = 'a'\njwt_public_key = 'b'\n", "not both"),
        ("not = [valid", "not valid TOML"),
    ],
)
def test_bad_config_fails_with_a_message_naming_the_key(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert fragment in str(info.value)
    assert str(path) in str(info.value)
    assert "sk-123" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_unknown_provider_lists_the_known_ones():
    cfg = load_config(env={"STREAMCORE_PROVIDER": "nope"})
    with pytest.raises(ConfigError) as info:
        Engine(cfg)
    assert "unknown provider 'nope'" in str(info.value)
    assert "demo" in str(info.value) and "litellm" in str(info.value)


def test_bad_provider_options_fail_at_start():
    cfg = load_config(env={}, overrides={})
    cfg.provider.options = {"delay": 3}
    with pytest.raises(ConfigError, match="unknown field `delay`"):
        Engine(cfg)


def test_jwt_secret_from_env_is_redacted():
    cfg = load_config(env={"STREAMCORE_JWT_SECRET": "s3cret"})
    assert cfg.auth.enabled and cfg.auth.jwt_secret == "s3cret"
    assert "s3cret" not in repr(cfg.redacted())


# --- the environment: STREAMCORE_<SECTION>_<KEY> for every key ----------------------------

import msgspec  # noqa: E402

from streamcore.config import Config, ENV_ALIASES, env_variables, parse_env_value  # noqa: E402


def test_every_key_of_every_section_has_an_environment_variable():
    names = env_variables()
    expected = set()
    for section in msgspec.structs.fields(Config):
        for key in msgspec.structs.fields(section.type):
            expected.add(f"STREAMCORE_{section.name}_{key.name}".upper())
    assert set(names) == expected
    assert names["STREAMCORE_LIMITS_MAX_MESSAGE_BYTES"][0] == ("limits", "max_message_bytes")
    assert set(ENV_ALIASES.values()) <= set(names)


def test_environment_values_are_toml_values_when_they_parse_else_strings():
    env = {
        "STREAMCORE_LIMITS_MAX_MESSAGE_BYTES": "2048",
        "STREAMCORE_SERVER_PORT": "9000",
        "STREAMCORE_SERVER_HOST": "0.0.0.0",
        "STREAMCORE_SERVER_PATH": "/api/ws",
        "STREAMCORE_SERVER_COMPRESSION": "true",
        "STREAMCORE_LIMITS_IDLE_TIMEOUT": "30",  # an integer for a float key
        "STREAMCORE_LIMITS_COALESCE_CHUNKS": "false",
        "STREAMCORE_SECURITY_ALLOWED_ORIGINS": '["https://a.example", "https://b.example"]',
        "STREAMCORE_PROVIDER_MODEL": "123",  # a string key keeps the text
        "STREAMCORE_PROVIDER_SYSTEM_PROMPT": "Be brief.",
        "STREAMCORE_PROVIDER_OPTIONS": "{ delay_ms = 0, words = 5 }",
        "STREAMCORE_FEATURES_FOLLOW_UP_QUESTIONS": "session",
        "STREAMCORE_AUTH_AUDIENCE": "streamcore",
        "STREAMCORE_UNRELATED": "ignored",
        "OTHER": "ignored",
    }
    cfg = load_config(env=env)
    assert cfg.limits.max_message_bytes == 2048 and cfg.server.port == 9000
    assert (cfg.server.host, cfg.server.path, cfg.server.compression) == ("0.0.0.0", "/api/ws", True)
    assert cfg.limits.idle_timeout == 30.0 and cfg.limits.coalesce_chunks is False
    assert cfg.security.allowed_origins == ["https://a.example", "https://b.example"]
    assert cfg.provider.model == "123" and cfg.provider.system_prompt == "Be brief."
    assert cfg.provider.options == {"delay_ms": 0, "words": 5}
    assert cfg.features.follow_up_questions == "session" and cfg.auth.audience == "streamcore"


def test_parse_env_value():
    assert parse_env_value("12") == 12 and parse_env_value("1.5") == 1.5
    assert parse_env_value("true") is True and parse_env_value("[1, 2]") == [1, 2]
    assert parse_env_value("127.0.0.1") == "127.0.0.1" and parse_env_value("demo") == "demo"
    assert parse_env_value('"quoted"') == "quoted"
    assert parse_env_value("12", str) == "12" and parse_env_value("true", str) == "true"


def test_precedence_defaults_file_environment_flags(tmp_path):
    path = write(tmp_path, "[server]\nport = 9001\nhost = '0.0.0.0'\n[limits]\nidle_timeout = 60\n")
    env = {"STREAMCORE_CONFIG": str(path), "STREAMCORE_SERVER_PORT": "9002", "STREAMCORE_LIMITS_INTERVAL": "5"}
    cfg = load_config(env=env)
    assert (cfg.server.port, cfg.server.host, cfg.limits.idle_timeout, cfg.limits.interval) == (9002, "0.0.0.0", 60.0, 5.0)
    cfg = load_config(env=env, overrides={"server.port": 9003})
    assert cfg.server.port == 9003 and cfg.limits.interval == 5.0


def test_short_names_still_work_and_equal_the_canonical_ones():
    cfg = load_config(env={"STREAMCORE_PROVIDER": "demo", "STREAMCORE_MODEL": "m", "STREAMCORE_JWT_SECRET": "s"})
    assert (cfg.provider.name, cfg.provider.model, cfg.auth.jwt_secret) == ("demo", "m", "s")
    cfg = load_config(env={"STREAMCORE_PROVIDER": "demo", "STREAMCORE_PROVIDER_NAME": "demo"})
    assert cfg.provider.name == "demo"
    with pytest.raises(ConfigError, match=r"\$STREAMCORE_PROVIDER and \$STREAMCORE_PROVIDER_NAME both set"):
        load_config(env={"STREAMCORE_PROVIDER": "demo", "STREAMCORE_PROVIDER_NAME": "litellm"})


def test_an_empty_variable_counts_as_unset():
    assert load_config(env={"STREAMCORE_SERVER_PORT": "", "STREAMCORE_MODEL": ""}).server.port == 8000


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("STREAMCORE_LIMITS_MAX_MESAGE_BYTES", "did you mean $STREAMCORE_LIMITS_MAX_MESSAGE_BYTES?"),
        ("STREAMCORE_LIMIT_IDLE_TIMEOUT", "did you mean $STREAMCORE_LIMITS_IDLE_TIMEOUT?"),
        ("STREAMCORE_SERVER_PROT", "$STREAMCORE_SERVER_PROT"),
        ("STREAMCORE_PROVIDER_OPTIONS_TEMPERATURE", "$STREAMCORE_PROVIDER_OPTIONS_TEMPERATURE"),
    ],
)
def test_unknown_variables_that_look_like_keys_are_named(name, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(env={name: "1"})
    assert fragment in str(info.value) and "STREAMCORE_<SECTION>_<KEY>" in str(info.value)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"STREAMCORE_LIMITS_IDLE_TIMEOUT": "soon"}, "$STREAMCORE_LIMITS_IDLE_TIMEOUT: Expected `float`, got `str`"),
        ({"STREAMCORE_LIMITS_IDLE_TIMEOUT": "-1"}, "$STREAMCORE_LIMITS_IDLE_TIMEOUT: limits.idle_timeout must be >= 0"),
        ({"STREAMCORE_SERVER_SERVER": "tornado"}, "$STREAMCORE_SERVER_SERVER: Invalid enum value 'tornado'"),
        ({"STREAMCORE_PROVIDER_OPTIONS": "{ api_key = 'sk-1' }"}, "provider.options.api_key: secrets do not belong"),
    ],
)
def test_bad_environment_values_name_the_variable(env, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert fragment in str(info.value)
    assert "sk-1" not in str(info.value)


def test_a_bad_flag_is_reported_as_the_command_line():
    with pytest.raises(ConfigError, match=r"^command line: server.port must be in 0..65535"):
        load_config(env={}, overrides={"server.port": 70000})
