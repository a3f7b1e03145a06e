"""`streamcore serve` as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import anyio
import pytest

from .helpers import connect

pytestmark = pytest.mark.anyio


async def start(*args: str, env: dict[str, str] | None = None):
    proc = await anyio.open_process(
        [sys.executable, "-m", "streamcore.cli", "serve", "--port", "0", "--log-format", "json", *args],
        env={**os.environ, **(env or {})},
    )
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
    assert line.startswith(b"streamcore listening on ws://127.0.0.1:"), line
    return proc, line.decode().split()[-1]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("server", ["uvicorn", "websockets"])
async def test_serve_then_sigterm_ends_generations_and_exits(server, loop):
    proc, url = await start("--server", server, env={"STREAMCORE_PROVIDER": "demo", "STREAMCORE_SERVER_LOOP": loop})
    try:
        async with connect(url) as c:
            await c.send("USER_MESSAGE", {"content": "bonjour"})
            frames = await c.until("AI_MESSAGE_CHUNK")
            assert frames[1]["data"]["model"] == "demo-1"
            proc.send_signal(signal.SIGTERM)
            frames += await c.until("AI_MESSAGE_END")
            assert frames[-1]["data"]["stopReason"] == "server_shutdown"
            code, _ = await c.closed()
            assert code == 1001
        with anyio.fail_after(20):
            assert await proc.wait() == 0
        err = b""
        with anyio.fail_after(10):
            async for data in proc.stderr:  # the process exited: read to EOF
                err += data
        logs = [json.loads(l) for l in err.decode().splitlines() if l.startswith("{")]
        events = {l["event"] for l in logs}
        assert {"server.start", "connection.open", "generation.end", "connection.close", "server.stopped"} <= events
        [started] = [l for l in logs if l["event"] == "server.start"]
        assert started["loop"] == loop
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


def test_bad_config_exits_2_with_a_message(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[limits]\nidle_timout = 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "streamcore.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "unknown field `idle_timout`" in out.stderr


def test_unknown_provider_flag():
    out = subprocess.run(
        [sys.executable, "-m", "streamcore.cli", "serve", "--provider", "nope"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "known providers: demo" in out.stderr


def test_providers_command_lists_entry_points():
    out = subprocess.run([sys.executable, "-m", "streamcore.cli", "providers"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and {"demo", "litellm"} <= set(out.stdout.split())


# --- the first hour: one-line errors, --version, plain HTTP on the WebSocket path ---------

import socket  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import streamcore  # noqa: E402
from streamcore.http import StaticRoutes  # noqa: E402


def cli(*args: str, hide: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter; ``hide`` makes modules unimportable (an install without extras)."""
    code = (
        "import sys\n"
        f"for name in {list(hide)!r}: sys.modules[name] = None\n"
        "from streamcore.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"streamcore-llm {streamcore.__version__}"


@pytest.mark.parametrize(
    "args, hidden, extra",
    [
        ((), ("uvicorn",), "asgi"),
        (("--server", "uvicorn"), ("websockets",), "asgi"),
        (("--server", "websockets"), ("websockets",), "websockets"),
        (("--provider", "openai", "--model", "m"), ("httpx",), "openai"),
        (("--provider", "litellm"), ("litellm",), "litellm"),
    ],
)
def test_a_missing_optional_dependency_is_one_line_naming_the_extra(args, hidden, extra):
    out = cli("serve", "--port", "0", *args, hide=hidden)
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.splitlines()
    assert f"pip install 'streamcore-llm[{extra}]'" in line and "Traceback" not in out.stderr


def test_uvloop_required_but_missing_is_one_line_naming_the_extra():
    out = cli("serve", "--port", "0", hide=("uvloop",), env={"STREAMCORE_SERVER_LOOP": "uvloop"})
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.splitlines()
    assert "pip install 'streamcore-llm[fast]'" in line and "Traceback" not in out.stderr


def test_loop_auto_takes_uvloop_when_installed_and_asyncio_otherwise(monkeypatch):
    from streamcore.cli import loop_options

    assert loop_options("auto") == {"use_uvloop": True} == loop_options("uvloop")
    assert loop_options("asyncio") == {}
    monkeypatch.setitem(sys.modules, "uvloop", None)  # an install without the fast extra
    assert loop_options("auto") == {}
    with pytest.raises(ModuleNotFoundError):
        loop_options("uvloop")


def test_jwt_auth_without_pyjwt_names_the_extra():
    out = cli("serve", "--port", "0", hide=("jwt",), env={"STREAMCORE_JWT_SECRET": "s" * 32})
    assert out.returncode == 2 and "streamcore-llm[jwt]" in out.stderr and len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize("server", ["uvicorn", "websockets"])
def test_a_busy_port_is_one_line_and_a_non_zero_exit(server):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli("serve", "--port", str(port), "--server", server)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"streamcore: cannot listen on 127.0.0.1:{port}: address already in use "
        "(another server is running there: stop it or pick another port with --port)"
    ]
    assert out.stdout == ""


def test_an_unknown_host_is_one_line():
    out = cli("serve", "--host", "no-such-host.invalid", "--port", "8765")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1
    assert out.stderr.startswith("streamcore: cannot listen on no-such-host.invalid:8765")


def test_a_bad_environment_variable_is_one_line():
    out = cli("serve", env={"STREAMCORE_LIMITS_IDLE_TIMOUT": "3"})
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "$STREAMCORE_LIMITS_IDLE_TIMOUT (did you mean $STREAMCORE_LIMITS_IDLE_TIMEOUT?)" in out.stderr


class _Engine:
    closing = False
    sessions: dict = {}


def test_static_routes_answer_426_on_the_websocket_path_and_always_have_a_favicon():
    routes = StaticRoutes(_Engine(), "/api/ws")
    status, headers, body = routes.respond("/api/ws")
    assert status == 426 and ("Upgrade", "websocket") in headers and b"WebSocket" in body
    assert routes.respond("/ws")[0] == 404
    for path in ("/favicon.ico", "/favicon.svg"):
        status, headers, body = routes.respond(path)
        assert status == 200 and body
        assert dict(headers)["Content-Type"] in ("image/svg+xml", "image/x-icon")
    # Only /healthz and the 426 hint when static files are off.
    bare = StaticRoutes(_Engine(), "/ws", static=False)
    assert bare.respond("/ws")[0] == 426 and bare.respond("/favicon.ico")[0] == 404


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize("server", ["uvicorn", "websockets"])
async def test_plain_http_routes_of_serve(server):
    proc, url = await start("--server", server)
    try:
        http = url.replace("ws://", "http://").rsplit("/", 1)[0]
        status, headers, body = await anyio.to_thread.run_sync(_get, http + "/ws")
        assert status == 426 and headers.get("Upgrade", headers.get("upgrade")) == "websocket", (status, headers)
        status, headers, body = await anyio.to_thread.run_sync(_get, http + "/favicon.ico")
        assert status == 200 and body
        status, _, _ = await anyio.to_thread.run_sync(_get, http + "/healthz")
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            await proc.wait()
        await proc.aclose()


def test_each_favicon_path_serves_its_own_file_first():
    from importlib import resources

    routes = StaticRoutes(_Engine())
    folder = resources.files("streamcore.static")
    for name, kind in (("favicon.svg", "image/svg+xml"), ("favicon.ico", "image/x-icon")):
        status, headers, body = routes.respond("/" + name)
        if folder.joinpath(name).is_file():
            assert body == folder.joinpath(name).read_bytes() and dict(headers)["Content-Type"] == kind
        else:
            assert status == 200 and body  # the other file, or the built-in SVG
