"""Every ```python block of README.md runs as written.

The blocks run in order, in one namespace (a later block may use what an earlier one
defined, as a reader going down the page would), in a fresh interpreter whose working
directory is an empty temporary folder and whose environment has no ``STREAMCORE_*``
variable. A file a block names as a string literal (``"streamcore.toml"``...) is created
empty first. Top-level ``await``/``async with`` runs in an event loop.

A block that needs a running server, the network or a secret is marked by the line
``<!-- skip-snippet: why -->`` right before its opening fence, and only compiled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*skip-snippet\b:?\s*(.*?)\s*-->")
# Names of files a snippet may open, created empty before it runs.
FILE_LITERAL = re.compile(r"""["']([\w./-]+\.(?:toml|json|txt|pem))["']""")


class Snippet:
    def __init__(self, line: int, code: str, skip: str | None) -> None:
        self.line, self.code, self.skip = line, code, skip

    def __repr__(self) -> str:
        return f"README.md:{self.line}"


def snippets(text: str) -> list[Snippet]:
    found: list[Snippet] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() in ("```python", "```py", "```python3"):
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            previous = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            match = SKIP.search(previous)
            skip = (match.group(1) or "marked skip-snippet") if match else None
            found.append(Snippet(start + 1, "\n".join(lines[start + 1 : j]) + "\n", skip))
            i = j
        i += 1
    return found


RUNNER = r'''
import ast, asyncio, json, sys, traceback
results = []
namespace = {"__name__": "__readme__"}
for line, code, skip in json.loads(sys.stdin.read()):
    try:
        compiled = compile(code, f"README.md:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if skip is None:
            result = eval(compiled, namespace)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        results.append({"line": line, "ok": True})
    except BaseException as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{f.filename} line {f.lineno}" for f in reversed(tb) if f.filename.startswith("README.md")), "")
        results.append({"line": line, "ok": False, "error": f"{type(exc).__name__}: {exc}", "where": where})
print("RESULTS " + json.dumps(results))
'''


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[int, dict]:
    found = snippets(README.read_text(encoding="utf-8"))
    workdir = tmp_path_factory.mktemp("readme")
    for snippet in found:
        if snippet.skip is None:
            for name in FILE_LITERAL.findall(snippet.code):
                path = workdir / name
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCORE_")}
    out = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([(s.line, s.code, s.skip) for s in found]),
        capture_output=True, text=True, timeout=120, cwd=workdir, env=env,
    )
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULTS ")), None)
    assert line is not None, f"the snippet runner crashed:\n{out.stdout}\n{out.stderr}"
    return {r["line"]: r for r in json.loads(line[len("RESULTS "):])}


def _ids() -> list[Snippet]:
    return snippets(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_snippets():
    assert _ids(), "no ```python block found in README.md"


@pytest.mark.parametrize("snippet", _ids(), ids=repr)
def test_readme_snippet_runs_as_written(snippet, results):
    result = results[snippet.line]
    assert result["ok"], (
        f"the ```python block at README.md line {snippet.line} fails ({result['where']}): {result['error']}"
        "\n(make it self-contained, or mark it <!-- skip-snippet: why --> if it needs a server)"
    )
    if snippet.skip:
        pytest.skip(f"compiled only: {snippet.skip}")


def test_snippet_parser_honours_the_skip_marker():
    text = "x\n<!-- skip-snippet: needs a server -->\n```python\nawait f()\n```\n\n```python\nprint(1)\n```\n"
    first, second = snippets(text)
    assert (first.skip, first.code, first.line) == ("needs a server", "await f()\n", 3)
    assert second.skip is None and second.code == "print(1)\n"
