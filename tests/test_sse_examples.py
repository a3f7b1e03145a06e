"""The SSE examples (examples/sse_aisdk.mjs, examples/sse_agui.mjs) against a real server.

Each runs with Node.js as its header says, the libraries resolved from a node_modules
beside it (here: a temporary directory linking to the pinned tests/sse_clients ones).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio
import pytest

from .helpers import make_engine
from .test_sse import sse_server
from .test_sse_clients import node_clients  # noqa: F401 - the fixture that installs Node

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def run_example(name: str, base: str, tmp_path: Path, node_modules: Path) -> tuple[str, str]:
    (tmp_path / "node_modules").symlink_to(node_modules, target_is_directory=True)
    script = tmp_path / name
    shutil.copy(EXAMPLES / name, script)
    env = {**os.environ, "SUPPRESS_TRANSFORMATION_WARNINGS": "1"}
    with anyio.fail_after(60):
        result = await anyio.run_process(["node", str(script), base, "Bonjour"], env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode(), result.stderr.decode()


@pytest.mark.parametrize("name", ["sse_aisdk.mjs", "sse_agui.mjs"])
async def test_sse_example_runs_against_streamcore(name, tmp_path, node_clients):  # noqa: F811
    engine = make_engine(provider={"name": "demo", "options": {"delay_ms": 0}})
    async with sse_server(engine) as (base, _, _app):
        out, err = await run_example(name, base, tmp_path, node_clients)
    assert "Bonjour" in out  # the demo provider answers about the prompt
    assert "[finished: complete]" in out, out + err
