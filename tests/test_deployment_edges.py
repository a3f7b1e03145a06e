"""Deployment edges, each once mishandled (found in review; each test failed before): an
idle close to a client that stopped reading, workers' routes and port, out-of-range
config values, a Redis outage during a slot release, a pub/sub connection gone silent."""

from __future__ import annotations

import socket

import anyio
import pytest

from streamcore import Completion

from .helpers import ADAPTERS, TIMEOUT, connect, make_engine, running
from .test_policy import BulkProvider, wait_until
from .test_redis_fixtures import redis_server, unique_prefix  # noqa: F401 - fixture
from .test_workers import ServerProcess

pytestmark = pytest.mark.anyio


def slow_socket_connect(url, **kwargs):
    host, port = url.split("/")[2].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(TIMEOUT)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return connect(url, sock=sock, max_queue=1, max_size=None, **kwargs)


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_idle_close_of_a_client_that_stopped_reading_is_bounded(adapter):
    """A client sends one request, its reply ends while it is not reading (the writer
    waits for the socket), and it sends nothing more: the idle timeout fires before the
    slow-client check. The idle close must not wait forever for a socket that never
    drains (and must not switch the slow-client check off): the connection ends."""
    engine = make_engine(
        BulkProvider(chunks=3000, size=1024),  # 3 MB: more than every buffer between us
        limits={"idle_timeout": 1.0},  # the slow-client check keeps its default (15 s)
    )
    async with running(engine, adapter) as url:
        async with slow_socket_connect(url) as c:
            await c.send("USER_MESSAGE", {"content": "go"})
            await wait_until(lambda: len(engine.sessions) == 1, "the session")
            session = next(iter(engine.sessions))
            # The reply ended; the writer is stuck in a send the client never reads.
            await wait_until(lambda: all(s.source.sealed for s in session.subscriptions.values()), "the run sealed")
            await wait_until(lambda: session._closing_for == "idle", "the idle close")  # before the slow-client check
            await wait_until(lambda: session not in engine.sessions, "the session freed")


# --- streamcore serve --workers N ------------------------------------------------------------


def workers_config(directory, url: str, *, server: str, port: int = 0):
    path = directory / f"streamcore-{server}.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nserver = "{server}"\nshutdown_timeout = 2.0\n'
        f'[redis]\nurl = "{url}"\nkey_prefix = "{unique_prefix()}"\n'
        '[provider]\nname = "demo"\noptions = { delay_ms = 0, words = 5 }\n'
    )
    return path


@pytest.fixture
def server_process():
    started: list[ServerProcess] = []

    def make(config, workers: int) -> ServerProcess:
        started.append(ServerProcess(config, workers))
        return started[-1]

    yield make
    for server in started:
        server.terminate()
        server.kill()


@pytest.mark.slow
async def test_workers_under_uvicorn_serve_the_sse_routes(redis_server, server_process, tmp_path):  # noqa: F811
    """README: `streamcore serve` (uvicorn) serves the SSE routes ([sse]) out of the box.
    With --workers N each worker serves only the WebSocket app: POST /sse gets 405."""
    import httpx

    server = server_process(workers_config(tmp_path, redis_server.url, server="uvicorn"), 2)
    ws_url = await server.ready()
    base = "http://" + ws_url.split("/")[2]
    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        response = await http.post("/sse", json={"type": "USER_MESSAGE", "data": {"content": "bonjour"}})
    assert response.status_code == 200, (response.status_code, response.text[:200])
    assert response.headers["content-type"] == "text/event-stream"


@pytest.mark.slow
async def test_workers_under_websockets_listen_on_the_port_they_announce(redis_server, server_process, tmp_path):  # noqa: F811
    """`--port 0 --workers N` picks one free port for every worker (run_workers' docstring);
    with `server = "websockets"` each worker binds a port of its own (config port 0) and
    nobody listens on the announced one."""
    server = server_process(workers_config(tmp_path, redis_server.url, server="websockets"), 2)
    url = await server.ready()
    async with connect(url) as c:
        await c.send("PING", {"timestamp": 7})
        assert (await c.recv())["type"] == "PONG"


# --- Redis limiter ---------------------------------------------------------------------------


async def test_redis_limiter_slot_released_during_an_outage_is_freed_after_recovery(redis_server):  # noqa: F811
    """A run that ends while Redis is unreachable cannot ZREM its concurrency slot; once
    Redis answers again the slot must not stay held for the whole lease (650 s by
    default), or the user gets RATE_LIMIT with no run going."""
    from streamcore.backends.redis import RedisLimiter, make_client

    client, admin = make_client(redis_server.url), make_client(redis_server.url)
    limiter = RedisLimiter(client, prefix=unique_prefix(), timeout=0.5)
    try:
        with anyio.fail_after(TIMEOUT):
            assert await limiter.acquire("u:ann", "msg-1", 1)
            # An outage for writes: the release of msg-1's slot cannot reach Redis.
            await admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
            try:
                await limiter.release("u:ann", "msg-1")  # bounded by the limiter's timeout
                assert not limiter.health.up
            finally:
                await admin.execute_command("CLIENT", "UNPAUSE")
            # Redis is back; ann has no run going anywhere.
            assert await limiter.acquire("u:ann", "msg-2", 1)
    finally:
        await limiter.aclose()
        for c in (client, admin):
            await c.aclose()


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable, value",
    [
        # 0 s to answer a ping: every connection is closed 1011 at its first ping.
        ("STREAMCORE_LIMITS_PING_TIMEOUT", "0"),
        ("STREAMCORE_LIMITS_PING_INTERVAL", "-1"),
        # NaN passes `value <= 0`: no connection is ever idle.
        ("STREAMCORE_LIMITS_IDLE_TIMEOUT", "nan"),
        # A bucket that never refills divides by zero in the read loop once it is empty.
        ("STREAMCORE_LIMITS_INTERVAL", "inf"),
    ],
)
def test_config_refuses_out_of_bounds_timeouts(variable, value):
    """README: bad values stop the server at start with a message naming them."""
    from streamcore.config import load_config
    from streamcore.errors import ConfigError

    with pytest.raises(ConfigError, match=variable):
        load_config(env={variable: value})


class _Blackhole:
    """A TCP relay to redis-server; ``freeze()`` makes the connections open so far a
    blackhole (bytes are taken and never delivered, no RST: a Redis host that crashed, a
    failover, a dropped NAT entry) while new connections reach Redis as before."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = anyio.Event()
        self._old: list[anyio.Event] = []

    async def handle(self, client) -> None:
        freeze = anyio.Event()
        self._old.append(freeze)
        async with client, await anyio.connect_tcp("127.0.0.1", self.port) as upstream:

            async def pump(src, dst) -> None:
                try:
                    async for data in src:
                        if freeze.is_set():
                            await anyio.sleep_forever()
                        await dst.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, client, upstream)
                tg.start_soon(pump, upstream, client)

    def freeze(self) -> None:
        for event in self._old:
            event.set()


@pytest.mark.slow
async def test_redis_broker_resubscribes_after_its_connection_goes_silent(redis_server):  # noqa: F811
    """The subscriber waits for Pub/Sub messages with no deadline and never pings: once its
    connection silently dies, this worker gets nothing from the others (broadcasts, STOP
    from another worker, watchers' heartbeats) until the kernel's keepalive gives up (over
    two hours), while its health still says up. Messages published after Redis is
    reachable again must arrive within a bounded time (here 30 s, twice the client's
    health_check_interval)."""
    from streamcore.backends.redis import RedisBroker, _encode, make_client
    from streamcore.broker import ALL, BusMessage

    prefix = unique_prefix()
    relay = _Blackhole(redis_server.port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    publisher = make_client(redis_server.url)
    got: list[BusMessage] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, relay.handle)
        client = make_client(f"redis://127.0.0.1:{port}/0")
        broker = RedisBroker(client, prefix=prefix)
        broker.subscribe(got.append)
        broker.start(tg)
        try:
            assert await broker.wait_ready(TIMEOUT)

            async def delivered(n: int) -> bool:
                message = _encode(BusMessage("w-other", ALL, None, "EVT", {"n": n}))
                await publisher.publish((prefix + "bus").encode(), message)
                with anyio.move_on_after(0.5):
                    while not any(m.data == {"n": n} for m in got):
                        await anyio.sleep(0.01)
                    return True
                return False

            with anyio.fail_after(TIMEOUT):
                assert await delivered(0)
            relay.freeze()
            with anyio.fail_after(30):
                n = 1
                while not await delivered(n):
                    n += 1
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await broker.aclose()
                await client.aclose()
                await publisher.aclose()
                await listener.aclose()
