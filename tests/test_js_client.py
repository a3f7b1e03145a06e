"""The TypeScript client (clients/js) against the server's own definitions.

- The wire types generated from ``streamcore/protocol.py`` (msgspec JSON Schema ->
  ``clients/js/src/schema.generated.ts``) are committed up to date: regenerating gives no
  diff. The compiler then checks the hand-written types against them (``drift-check.ts``).
- With Node and ``clients/js/node_modules`` installed (``bash scripts/test_js.sh`` does it),
  the committed browser module ``streamcore/static/streamcore.js`` is the build of the
  TypeScript source, and ``STREAMCORE_JS_TESTS=1`` runs the whole Node suite (the client and
  hooks against a real ``streamcore serve``) from pytest too; ``scripts/test_js.sh`` is the
  usual way to run it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "clients" / "js"


def _gen_schema():
    spec = importlib.util.spec_from_file_location("gen_schema", JS / "scripts" / "gen_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_wire_types_match_the_server_structs():
    gen = _gen_schema()
    json_text, ts_text = gen.build()
    assert gen.JSON_OUT.read_text() == json_text, "run: .venv/bin/python clients/js/scripts/gen_schema.py"
    assert gen.TS_OUT.read_text() == ts_text, "run: .venv/bin/python clients/js/scripts/gen_schema.py"


def test_every_server_payload_struct_has_a_typescript_interface():
    from streamcore import protocol

    ts = (JS / "src" / "schema.generated.ts").read_text()
    payloads = [n for n in protocol.__all__ if n.endswith("Data") or n == "Usage"]
    for name in payloads:
        assert f"export interface {name} {{" in ts, name
    hand = (JS / "src" / "types.ts").read_text()
    for name in payloads:
        assert f"export interface {name} {{" in hand, f"types.ts lacks {name}"


def _node_ready() -> bool:
    return shutil.which("node") is not None and (JS / "node_modules" / "esbuild").exists()


@pytest.mark.skipif(not _node_ready(), reason="Node and clients/js/node_modules needed (bash scripts/test_js.sh)")
def test_static_streamcore_js_is_built_from_the_typescript_source():
    out = subprocess.run(["node", "scripts/bundle-static.mjs", "--check"], cwd=JS, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(not _node_ready() or os.environ.get("STREAMCORE_JS_TESTS") != "1",
                    reason="STREAMCORE_JS_TESTS=1 runs the Node suite here (scripts/test_js.sh runs it anyway)")
def test_node_suite_against_a_real_server():
    env = {**os.environ, "STREAMCORE_BIN": str(ROOT / ".venv" / "bin" / "streamcore"), "CI": "true"}
    out = subprocess.run(["npx", "vitest", "run"], cwd=JS, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
