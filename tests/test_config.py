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
        ("[limits]\nidle_timeout = -1\n", "limits.idle_timeout must be > 0"),
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
