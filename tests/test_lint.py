"""The code passes ruff and mypy with the configuration of pyproject.toml.

``py.typed`` ships: applications type-check against streamcore, so its own annotations
must hold (strict on the public API, see ``[tool.mypy]``). Both tools run from the
repository root with the interpreter running the tests; without them (``pip install -e
'.[dev]'``) the tests skip loudly, and fail when ``CI`` is set.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(tool: str, *args: str) -> None:
    if importlib.util.find_spec(tool) is None:
        message = f"{tool.upper()} IS NOT INSTALLED: the code was NOT checked by {tool} (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run(
        [sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    command = " ".join((tool, *args))
    print(f"$ {command}\n{out.stdout}{out.stderr}")  # shown by pytest when the test fails
    assert out.returncode == 0, f"`{command}` exited {out.returncode}: see its output above (captured stdout)"


def test_ruff():
    _run("ruff", "check", "streamcore", "adapters", "providers")


@pytest.mark.slow
def test_mypy():
    # The files and the strictness are those of [tool.mypy] in pyproject.toml.
    _run("mypy")
