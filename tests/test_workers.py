"""Several server processes, one Redis: what a load balancer in front of workers needs.

Two server processes (A and B, each on its own port so a test can pick one) share a real
redis-server started by a fixture. A third process that is not a server publishes. Every
process started here is killed in the fixture's teardown; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from .helpers import connect
from .test_policy import SECRET, token
from .test_redis_fixtures import own_redis_server, redis_server, unique_prefix  # noqa: F401 - fixtures

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
START = 45  # seconds a server process may take to start (imports included)


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["data"]["content"] for f in frames if f["type"] == "AI_MESSAGE_CHUNK")


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["data"]["seq"] for f in frames if "seq" in f["data"]]


def bearer(sub: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {token(sub)}"}}


def write_config(directory: Path, url: str, prefix: str, *, words: int = 300, delay_ms: int = 15) -> Path:
    path = directory / f"streamcore-{prefix.strip(':')}.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0
shutdown_timeout = 3.0

[auth]
jwt_secret = "{SECRET}"

[redis]
url = "{url}"
key_prefix = "{prefix}"

[provider]
name = "demo"
options = {{ delay_ms = {delay_ms}, words = {words} }}

[limits]
max_concurrent_generations = 2

[runs]
grace_period = 30.0
"""
    )
    return path


class ServerProcess:
    """``python -m tests.test_workers_server CONFIG N`` in its own process group."""

    def __init__(self, config: Path, workers: int = 1, *, name: str = "A") -> None:
        self.log = config.parent / f"server-{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._err = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_workers_server", str(config), str(workers)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )
        self.url = ""

    async def ready(self) -> str:
        with anyio.fail_after(START):
            line = await anyio.to_thread.run_sync(self.proc.stdout.readline)
        assert line.startswith("streamcore listening on "), (line, self.log.read_text()[-2000:])
        self.url = line.split()[3]
        return self.url

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def terminate(self) -> float:
        """SIGTERM the supervisor; return the seconds it took to exit (killed past 20 s)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        return time.monotonic() - t0

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the supervisor and its workers
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self._err.close()


@pytest.fixture
def make_server(tmp_path):
    started: list[ServerProcess] = []

    def make(config: Path, workers: int = 1, name: str = "A") -> ServerProcess:
        server = ServerProcess(config, workers, name=name)
        started.append(server)
        return server

    yield make
    for server in started:
        server.terminate()
        server.kill()


async def two_servers(make_server, config: Path) -> tuple[str, str]:
    a, b = make_server(config, name="A"), make_server(config, name="B")
    return await a.ready(), await b.ready()


async def test_a_publisher_process_reaches_clients_on_both_workers(redis_server, make_server, tmp_path):  # noqa: F811 - fixture
    prefix = unique_prefix()
    url_a, url_b = await two_servers(make_server, write_config(tmp_path, redis_server.url, prefix))
    async with connect(url_a, **bearer("ann")) as on_a, connect(url_b, **bearer("bob")) as on_b:
        for c in (on_a, on_b):
            await c.send("SUBSCRIBE", {"topic": "indexing"}, id="s")
            assert (await c.recv())["type"] == "SUBSCRIBED"
        await on_a.send("SUBSCRIBE", {"topic": "secret"}, id="x")  # refused by the app's hook
        refused = await on_a.recv()
        assert refused["type"] == "ERROR" and refused["data"]["code"] == "NOT_FOUND"
        job = (
            "import sys; from streamcore.backends import RedisPublisher\n"
            "with RedisPublisher(sys.argv[1], key_prefix=sys.argv[2]) as p:\n"
            "    p.publish('indexing', 'INDEXING_PROGRESS', {'done': 3, 'total': 10})\n"
            "    p.broadcast('ANNOUNCE', {'text': 'hello all'})\n"
            "    p.send_to_user('bob', 'NOTE', {'for': 'bob'})\n"
        )
        done = subprocess.run([sys.executable, "-c", job, redis_server.url, prefix], cwd=ROOT, timeout=START)
        assert done.returncode == 0
        got_a = [await on_a.recv(), await on_a.recv()]
        got_b = [await on_b.recv(), await on_b.recv(), await on_b.recv()]
    for got in (got_a, got_b):
        assert got[0]["type"] == "INDEXING_PROGRESS" and got[0]["data"] == {"done": 3, "total": 10}
        assert got[0]["metadata"] == {"topic": "indexing"}
        assert got[1]["type"] == "ANNOUNCE"
    assert got_b[2]["type"] == "NOTE" and got_b[2]["data"] == {"for": "bob"}


async def test_a_reply_started_on_a_is_resumed_on_b_whole(redis_server, make_server, tmp_path):  # noqa: F811 - fixture
    url_a, url_b = await two_servers(make_server, write_config(tmp_path, redis_server.url, unique_prefix()))
    async with connect(url_a, **bearer("ann")) as a:
        await a.send("USER_MESSAGE", {"content": "raconte"}, id="q")
        before = await a.until("AI_MESSAGE_START")
        message_id = before[-1]["data"]["messageId"]
        while len(text_of(before)) < 200:
            before.append(await a.recv())
    # A's client is gone (a dropped connection); the run goes on on A.
    async with connect(url_b, **bearer("ann")) as b:
        await b.send("RESUME", {"messageId": message_id, "lastSeq": seqs(before)[-1]}, id="r")
        after = await b.until("AI_MESSAGE_END")
    end = after[-1]["data"]
    assert end["stopReason"] == "complete"
    assert text_of(before) + text_of(after) == end["content"]
    both = seqs(before + after)
    assert both == sorted(set(both))  # nothing repeated, in order
    # A second tab on B follows the finished run from the start too.
    async with connect(url_b, **bearer("ann")) as tab:
        await tab.send("RESUME", {"messageId": message_id})
        replay = await tab.until("AI_MESSAGE_END")
    assert text_of(replay) == end["content"]
    # Another user cannot.
    async with connect(url_b, **bearer("eve")) as eve:
        await eve.send("RESUME", {"messageId": message_id}, id="e")
        assert (await eve.recv())["data"]["code"] == "NOT_FOUND"


async def test_stop_sent_to_b_stops_the_run_on_a(redis_server, make_server, tmp_path):  # noqa: F811 - fixture
    url_a, url_b = await two_servers(make_server, write_config(tmp_path, redis_server.url, unique_prefix()))
    async with connect(url_a, **bearer("ann")) as a, connect(url_b, **bearer("ann")) as b:
        await a.send("USER_MESSAGE", {"content": "long"}, id="q")
        frames = await a.until("AI_MESSAGE_START")
        message_id = frames[-1]["data"]["messageId"]
        frames.append(await a.recv())  # streaming
        await b.send("STOP_GENERATION", {"messageId": message_id}, id="s")
        t0 = time.monotonic()
        frames += await a.until("AI_MESSAGE_END")
        stopped_in = time.monotonic() - t0
        async with connect(url_b, **bearer("eve")) as eve:  # another user's STOP: NOT_FOUND
            await eve.send("STOP_GENERATION", {"messageId": message_id}, id="e")
            assert (await eve.recv())["data"]["code"] == "NOT_FOUND"
    end = frames[-1]["data"]
    assert end["stopReason"] == "user_cancelled" and text_of(frames) == end["content"]
    assert len(end["content"]) < 1000 and stopped_in < 3  # the 300-word reply was cut short


async def test_a_users_concurrency_limit_holds_across_workers(redis_server, make_server, tmp_path):  # noqa: F811 - fixture
    url_a, url_b = await two_servers(make_server, write_config(tmp_path, redis_server.url, unique_prefix()))
    async with connect(url_a, **bearer("ann")) as a, connect(url_b, **bearer("ann")) as b:
        await a.send("USER_MESSAGE", {"content": "one"}, id="1")
        await a.until("AI_MESSAGE_CHUNK")
        await b.send("USER_MESSAGE", {"content": "two"}, id="2")
        await b.until("AI_MESSAGE_CHUNK")
        await b.send("USER_MESSAGE", {"content": "three"}, id="3")  # limit 2: refused
        third = []
        while not (third and third[-1]["type"] == "ERROR" and third[-1]["metadata"].get("requestId") == "3"):
            third.append(await b.recv())
        assert third[-1]["data"]["code"] == "RATE_LIMIT" and third[-1]["data"]["retryable"]
        async with connect(url_a, **bearer("bob")) as bob:  # another user is not limited by ann
            await bob.send("USER_MESSAGE", {"content": "bob"}, id="b")
            assert (await bob.until("AI_MESSAGE_CHUNK"))[-1]["type"] == "AI_MESSAGE_CHUNK"
            await bob.send("STOP_GENERATION", {})
        await a.send("STOP_GENERATION", {})
        await a.until("AI_MESSAGE_END")
        # A slot freed on A is usable from B (released at the run's end; bounded retry).
        with anyio.fail_after(10):
            while True:
                await b.send("USER_MESSAGE", {"content": "four"}, id="4")
                frames = []
                while not frames or frames[-1]["type"] not in ("AI_MESSAGE_CHUNK", "ERROR"):
                    frames.append(await b.recv())
                if frames[-1]["type"] == "AI_MESSAGE_CHUNK":
                    break
                await anyio.sleep(0.1)


async def test_redis_killed_and_restarted_mid_run(own_redis_server, make_server, tmp_path):  # noqa: F811 - fixture
    redis = own_redis_server
    server_a = make_server(write_config(tmp_path, redis.url, "k:"), name="A")
    server_b = make_server(write_config(tmp_path, redis.url, "k:"), name="B")
    url_a, url_b = await server_a.ready(), await server_b.ready()
    async with connect(url_a, **bearer("ann")) as a:
        await a.send("USER_MESSAGE", {"content": "during the outage"}, id="q")
        frames = await a.until("AI_MESSAGE_CHUNK")
        running_id = frames[-1]["data"]["messageId"]
        redis.stop()  # killed mid-run
        # The running stream finishes on A, whole.
        frames += await a.until("AI_MESSAGE_END")
        end = frames[-1]["data"]
        # On failure, A's last log lines say why (a closing engine gives server_shutdown).
        assert end["stopReason"] == "complete" and text_of(frames) == end["content"], server_a.logs()[-20:]
        # A resume on B during the outage gets a clear, retryable ERROR.
        async with connect(url_b, **bearer("ann")) as b:
            await b.send("RESUME", {"messageId": running_id}, id="r")
            error = await b.recv()
        assert error["type"] == "ERROR" and error["data"]["code"] == "SERVER_ERROR" and error["data"]["retryable"]
        redis.start()  # same port, empty
        # Recovered without a restart: a new reply on A resumes on B, whole.
        with anyio.fail_after(30):
            while True:
                await a.send("USER_MESSAGE", {"content": "after"}, id="n")
                frames = []
                while not frames or frames[-1]["type"] not in ("AI_MESSAGE_CHUNK", "ERROR"):
                    frames.append(await a.recv())
                if frames[-1]["type"] == "AI_MESSAGE_CHUNK":
                    break
                await a.until("AI_MESSAGE_END")
                await anyio.sleep(0.2)
        new_id = frames[-1]["data"]["messageId"]
        with anyio.fail_after(30):
            while True:  # the flusher's backoff is at most 1 s
                async with connect(url_b, **bearer("ann")) as b:
                    await b.send("RESUME", {"messageId": new_id}, id="r2")
                    first = await b.recv()
                    if first["type"] != "ERROR":
                        rest = [first] + await b.until("AI_MESSAGE_END")
                        break
                await anyio.sleep(0.2)
        assert text_of(rest) == rest[-1]["data"]["content"] and rest[-1]["data"]["stopReason"] == "complete"
        # The broker resubscribed: a broadcast from another process reaches B's clients.
        async with connect(url_b, **bearer("bob")) as bob:
            await bob.send("PING", {"timestamp": 1})
            await bob.until("PONG")
            job = (
                "import sys; from streamcore.backends import RedisPublisher\n"
                "with RedisPublisher(sys.argv[1], key_prefix='k:') as p: p.broadcast('ANNOUNCE', {'n': 1})\n"
            )
            assert subprocess.run([sys.executable, "-c", job, redis.url], cwd=ROOT, timeout=START).returncode == 0
            assert (await bob.until("ANNOUNCE"))[-1]["data"] == {"n": 1}
    for server in (server_a, server_b):
        events = [line.get("event") for line in server.logs()]
        # The outage is logged, once per outage, and so is the recovery.
        assert 1 <= events.count("redis.unavailable") <= 2, events.count("redis.unavailable")
        assert events.count("redis.recovered") >= 1


async def test_two_workers_on_one_port_serve_and_stop_within_the_timeout(redis_server, make_server, tmp_path):  # noqa: F811 - fixture
    server = make_server(write_config(tmp_path, redis_server.url, unique_prefix()), workers=2)
    url = await server.ready()
    assert url.endswith("/ws")
    pids = set()
    for i in range(12):  # the kernel spreads connections over both workers
        async with connect(url, **bearer(f"u{i}")) as c:
            await c.send("USER_MESSAGE", {"content": "hi"})
            frames = await c.until("AI_MESSAGE_START")
            pids.add(frames[-1]["metadata"]["sessionId"])
            await c.send("STOP_GENERATION", {})
            await c.until("AI_MESSAGE_END")
    async with connect(url, **bearer("ann")) as c:
        await c.send("USER_MESSAGE", {"content": "in flight at shutdown"})
        await c.until("AI_MESSAGE_CHUNK")
        took = server.terminate()
        end = (await c.until("AI_MESSAGE_END"))[-1]["data"]
    assert end["stopReason"] == "server_shutdown"
    assert server.proc.returncode == 0 and took < 3.0 + 3.0  # shutdown_timeout + margin


def test_more_than_one_worker_needs_a_shared_backend():
    from streamcore.adapters.workers import check_workers
    from streamcore.config import Config
    from streamcore.errors import ConfigError

    with pytest.raises(ConfigError, match=r"needs a shared backend: set \[redis\] url"):
        check_workers(Config(), 2)
    check_workers(Config(), 1)
