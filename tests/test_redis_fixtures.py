"""A real redis-server per test session (and per test when a test kills it), on a free
loopback port. No tests here: the fixtures are imported by the Redis test modules.

Without ``redis-server`` or the ``redis`` package, the Redis tests skip with a loud reason;
under CI (``CI=true``) they fail instead, so a missing server never passes silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import warnings

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_SERVER = os.environ.get("STREAMCORE_REDIS_SERVER") or shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)


def _unavailable(reason: str) -> None:
    message = f"REDIS TESTS NOT RUN: {reason} (apt-get install redis-server; pip install 'streamcore-llm[redis]')"
    if IN_CI:
        pytest.fail(message + " - CI=true: the Redis suites must run in CI", pytrace=False)
    warnings.warn(message)
    pytest.skip(message)


def require_redis() -> None:
    if REDIS_SERVER is None:
        _unavailable("redis-server is not installed")
    try:
        import redis  # noqa: F401
    except ImportError:
        _unavailable("the Python package 'redis' is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drain(stream) -> None:
    try:
        for _ in stream:
            pass
    except (OSError, ValueError):
        pass


class RedisServer:
    """One redis-server process, no persistence, on 127.0.0.1:``port``; restartable."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="streamcore-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--daemonize", "no", "--loglevel", "notice", "--logfile", "",
                "--protected-mode", "no", "--maxclients", "10000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Its own "Ready to accept connections" line is the event to wait for.
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ready to accept connections" in line:
                # Keep draining its log so a full pipe never blocks the server.
                threading.Thread(target=_drain, args=(self.proc.stdout,), daemon=True).start()
                return
        self.stop()
        raise RuntimeError("redis-server did not start:\n" + "".join(lines[-20:]))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=10)


    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server shared by the session (tests isolate themselves by key prefix)."""
    require_redis()
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def own_redis_server():
    """A redis-server of this test alone (it may kill and restart it)."""
    require_redis()
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"
