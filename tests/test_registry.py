"""Providers are found through the `streamcore.providers` entry-point group."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import streamcore


def test_builtin_providers_are_entry_points():
    assert {"demo", "litellm"} <= set(streamcore.available_providers())


def test_importing_streamcore_does_not_import_litellm_or_frameworks():
    code = "import sys, streamcore, streamcore.adapters.asgi, streamcore.adapters.websockets; " \
           "print(sorted(m for m in ('litellm', 'websockets', 'uvicorn', 'starlette', 'openai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_packages_install_under_streamcore_only():
    import importlib.util

    assert streamcore.__file__ is not None
    assert importlib.util.find_spec("streamcore.providers.demo") is not None
    assert importlib.util.find_spec("streamcore.adapters.asgi") is not None
    out = subprocess.run(
        [sys.executable, "-c", "import providers"], capture_output=True, text=True, cwd="/", timeout=60
    )
    assert out.returncode != 0  # never a top-level `providers` module


@pytest.mark.slow
def test_third_party_distribution_is_found_by_its_entry_point(tmp_path):
    src = tmp_path / "src"
    (src / "echo_provider").mkdir(parents=True)
    (src / "echo_provider" / "__init__.py").write_text(textwrap.dedent('''
        from streamcore import Completion

        class EchoProvider:
            model = "echo-1"

            def __init__(self, *, model=None, shout=False):
                self.shout = shout

            async def stream(self, request):
                text = request.messages[-1].content
                yield text.upper() if self.shout else text
                yield Completion()
    '''))
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "streamcore-echo-test"
        version = "1.0"

        [project.entry-points."streamcore.providers"]
        echo = "echo_provider:EchoProvider"

        [tool.setuptools]
        packages = ["echo_provider"]
    '''))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(src)],
        check=True, timeout=300, capture_output=True,
    )
    code = textwrap.dedent('''
        import anyio, streamcore
        from streamcore import ChatMessage, GenerationRequest
        print(",".join(streamcore.available_providers()))
        provider = streamcore.load_provider("echo", options={"shout": True})
        async def main():
            return [x async for x in provider.stream(GenerationRequest([ChatMessage("user", "bonjour")])) if isinstance(x, str)]
        print(anyio.run(main))
    ''')
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    names, result = out.stdout.strip().splitlines()
    assert "echo" in names.split(",") and "demo" in names.split(",")
    assert result == "['BONJOUR']"
