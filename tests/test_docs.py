"""The documentation site builds with warnings as errors, and its generated parts are whole."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamcore.config import env_variables

ROOT = Path(__file__).resolve().parent.parent


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _have_mkdocs() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("mkdocs", "mkdocstrings"))


def test_site_builds_strict(tmp_path):
    if not _have_mkdocs():
        message = "MKDOCS IS NOT INSTALLED: the docs site was NOT built (pip install -e '.[docs]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    site = tmp_path / "site"
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docs.sh")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SITE_DIR": str(site), "PYTHON": sys.executable},
    )
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout}\n{out.stderr}"
    assert "WARNING" not in out.stderr, out.stderr
    page = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    for name in env_variables():
        assert name in page, f"{name} missing from the generated configuration reference"
    assert "config-reference" not in page
    assert (site / "SPEC" / "index.html").is_file()
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "StreamcoreASGI" in api and "load_config" in api


def test_config_reference_lists_every_key_with_a_description():
    hooks = _hooks()
    keys = hooks.config_keys()
    assert {k.env for k in keys} == set(env_variables())
    undocumented = [f"{k.section}.{k.name}" for k in keys if not k.doc]
    assert not undocumented, (
        f"config keys without a description: {undocumented}; add a `#:` comment above the "
        "field in streamcore/config.py"
    )
    table = hooks.render_reference()
    assert "| `max_message_bytes` | integer | `1048576` (1 MiB) | `STREAMCORE_LIMITS_MAX_MESSAGE_BYTES` |" in table


def test_config_defaults_file_is_valid_toml_and_loads(tmp_path):
    from streamcore import load_config

    text = _hooks().render_defaults()
    path = tmp_path / "defaults.toml"
    path.write_text(text.removeprefix("```toml\n").removesuffix("```\n"))
    assert load_config(path, env={}) == load_config(env={})


def test_readme_key_table_names_only_real_keys():
    real = {".".join(path) for path, _ in env_variables().values()}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set()
    for line in readme.splitlines():
        if line.startswith("| `"):
            named |= set(re.findall(r"`((?:server|provider|limits|auth|runs|security|features)\.[a-z_]+)`", line.split("|")[1]))
    assert named, "README.md has no key table"
    assert named <= real, f"README.md names keys that do not exist: {sorted(named - real)}"


def test_docs_pages_in_nav_exist():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = re.findall(r"([\w-]+\.md)\s*$", nav, re.M)
    assert "SPEC.md" in pages and "configuration.md" in pages
    for page in pages:
        assert (ROOT / "docs" / page).is_file(), page


def test_changelog_keeps_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in text
    assert re.search(r"^## \[0\.1\.0\] - \d{4}-\d{2}-\d{2}$", text, re.M)
