"""The connection policy every adapter enforces, over real sockets.

Authentication, Origin allow-list, rate limits, idle and dead-peer detection, backpressure
with chunk merging, and slow clients: the same tests against each adapter.
"""

from __future__ import annotations

import socket
import time

import anyio
import anyio.lowlevel
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import InvalidStatus

from streamcore import Completion, ConnectionInfo
from streamcore.auth import AuthError
from streamcore.testing import memory_pair

from .helpers import ADAPTERS, TIMEOUT, ScriptedProvider, check_stream, connect, make_engine, running

pytestmark = [pytest.mark.anyio]
each_adapter = pytest.mark.parametrize("adapter", ADAPTERS + ["hypercorn"])

SECRET = "test-secret-that-is-long-enough-for-hs256"
DEMO = {"name": "demo", "options": {"delay_ms": 0}}


def token(sub="user-456", *, key=SECRET, alg="HS256", exp=300, **claims):
    payload = {"sub": sub, "exp": int(time.time()) + exp, **claims}
    return jwt.encode(payload, key, algorithm=alg)


async def expect_auth_failure(url, fragment, **kwargs):
    async with connect(url, **kwargs) as c:
        err = await c.recv()
        assert err["type"] == "ERROR"
        assert err["data"]["code"] == "AUTH_FAILED" and err["data"]["retryable"] is False
        assert fragment in err["data"]["message"]
        code, _ = await c.closed()
        assert code == 1008


# --- authentication -------------------------------------------------------------------------


@each_adapter
async def test_jwt_from_header_or_query_sets_user_id(adapter):
    engine = make_engine(None, provider=DEMO, auth={"jwt_secret": SECRET, "audience": "sc", "issuer": "me"})
    good = token(aud="sc", iss="me")
    async with running(engine, adapter) as url:
        async with connect(url, additional_headers={"Authorization": f"Bearer {good}"}) as c:
            await c.send("PING", {"timestamp": 1})
            pong = await c.recv()
            assert pong["metadata"]["userId"] == "user-456"
        async with connect(f"{url}?token={good}") as c:  # browsers cannot set headers
            await c.send("PING", {"timestamp": 1})
            assert (await c.recv())["metadata"]["userId"] == "user-456"
        await expect_auth_failure(url, "missing token")
        await expect_auth_failure(f"{url}?token={token(exp=-10, aud='sc', iss='me')}", "expired")
        await expect_auth_failure(f"{url}?token={token(key='wrong-secret-wrong-secret-wrong-secret', aud='sc', iss='me')}", "Signature")
        await expect_auth_failure(f"{url}?token={token(aud='other', iss='me')}", "Audience")
        await expect_auth_failure(f"{url}?token={token(aud='sc', iss='them')}", "issuer")
        await expect_auth_failure(f"{url}?token=garbage", "invalid token")
    assert engine.active == {}


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_jwt_with_public_key(alg, tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048) if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(pem)
    for source in (pem.decode(), str(key_file)):  # inline PEM or a path
        engine = make_engine(None, provider=DEMO, auth={"jwt_public_key": source})
        async with running(engine, "websockets") as url:
            async with connect(url, additional_headers={"Authorization": f"Bearer {token('alice', key=private, alg=alg)}"}) as c:
                await c.send("PING", {"timestamp": 1})
                assert (await c.recv())["metadata"]["userId"] == "alice"
            # An HS256 token signed with the public key text is refused (algorithm confusion).
            forged = jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, "not-the-key-not-the-key-not-the-key!", algorithm="HS256")
            await expect_auth_failure(f"{url}?token={forged}", "invalid token")


async def test_pluggable_verifier():
    async def verify(token, info):
        if token != "open-sesame":
            raise AuthError("unknown API key")
        return {"sub": "svc-1", "scope": "chat"}

    from streamcore import Config, Engine

    engine = Engine(Config(), provider=ScriptedProvider(), verifier=verify)
    for headers, expected in [({"authorization": "Bearer open-sesame"}, "svc-1"), ({}, None)]:
        conn, client = memory_pair()
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.serve, conn, ConnectionInfo(headers=headers))
            if expected:
                await client.send("PING", {"timestamp": 1})
                assert (await client.receive())["metadata"]["userId"] == expected
                await client.aclose()
            else:
                err = await client.receive()
                assert err["data"] == {"code": "AUTH_FAILED", "message": "unknown API key", "retryable": False}
                assert conn.close_code == 1008


async def test_objectives_and_limits_follow_the_token_subject():
    engine = make_engine(None, provider=DEMO, auth={"jwt_secret": SECRET}, limits={"max_concurrent_generations": 1})
    async with running(engine, "asgi") as url:
        alice = f"{url}?token={token('alice')}"
        async with connect(alice) as a1, connect(alice) as a2, connect(f"{url}?token={token('bob')}") as b:
            await a1.send("GENERATE_OBJECTIVE", {"prompt": "Apprendre le piano"})
            objective = (await a1.until("OBJECTIVE_GENERATED"))[-1]["data"]["objective"]
            await a2.send("UPDATE_OBJECTIVE", {"objectiveId": objective["id"], "updates": {"title": "Mine"}})
            assert (await a2.recv())["data"]["objective"]["title"] == "Mine"  # same user, other socket
            await b.send("UPDATE_OBJECTIVE", {"objectiveId": objective["id"], "updates": {"title": "Bob's"}})
            assert (await b.recv())["data"]["code"] == "INVALID_MESSAGE"  # not bob's


async def test_concurrency_limit_is_per_user_across_connections():
    provider = ScriptedProvider(("a", "b"), gate_after=1)
    engine = make_engine(provider, auth={"jwt_secret": SECRET}, limits={"max_concurrent_generations": 1})
    async with running(engine, "websockets") as url:
        alice = f"{url}?token={token('alice')}"
        async with connect(alice) as a1, connect(alice) as a2, connect(f"{url}?token={token('bob')}") as b:
            await a1.send("USER_MESSAGE", {"content": "one"})
            await a1.until("AI_MESSAGE_CHUNK")
            await a2.send("USER_MESSAGE", {"content": "two"}, id="a2")
            err = await a2.recv()
            assert err["data"]["code"] == "RATE_LIMIT" and err["data"]["retryAfter"] > 0 and err["data"]["requestId"] == "a2"
            await b.send("USER_MESSAGE", {"content": "bob"})  # another user is not affected
            frames = await b.until("AI_MESSAGE_CHUNK")
            provider.gate.set()
            check_stream(frames + await b.until("AI_MESSAGE_END"))


# --- origin -------------------------------------------------------------------------------


@each_adapter
async def test_origin_allow_list(adapter):
    engine = make_engine(None, provider=DEMO, security={"allowed_origins": ["https://app.example.com"]})
    async with running(engine, adapter) as url:
        async with connect(url, origin="https://app.example.com") as c:
            await c.send("PING", {"timestamp": 1})
            assert (await c.recv())["type"] == "PONG"
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, origin="https://evil.example.net"):
                pass
        assert info.value.response.status_code == 403
        async with connect(url) as c:  # no Origin: not a browser page, no hijacking possible
            await c.send("PING", {"timestamp": 1})
            assert (await c.recv())["type"] == "PONG"
    assert engine.sessions == set()


# --- rate limits, idle, dead peers ---------------------------------------------------------------


@each_adapter
async def test_message_rate_limit_keeps_the_connection(adapter):
    engine = make_engine(None, provider=DEMO, limits={"messages_per_interval": 2, "interval": 30})
    async with running(engine, adapter) as url, connect(url) as c:
        for i in range(2):
            await c.send("USER_MESSAGE", {"content": f"q{i}"})
            check_stream(await c.until("AI_MESSAGE_END"))
        await c.send("USER_MESSAGE", {"content": "one too many"}, id="late")
        err = (await c.recv())["data"]
        assert err["code"] == "RATE_LIMIT" and err["retryable"] is True and err["requestId"] == "late"
        assert 0 < err["retryAfter"] <= 15_000
        # Still open (PINGs cost a token too now: the socket's own ping shows it lives).
        with anyio.fail_after(5):
            await (await c.ws.ping())


@each_adapter
async def test_idle_connection_is_closed_1001(adapter):
    engine = make_engine(None, provider=DEMO, limits={"idle_timeout": 0.4})
    async with running(engine, adapter) as url, connect(url) as c:
        code, reason = await c.closed()
        assert code == 1001 and reason == "idle timeout"


@pytest.mark.parametrize("adapter", ["websockets", "asgi"])
async def test_dead_peer_is_detected_by_protocol_pings(adapter):
    engine = make_engine(None, provider=DEMO, limits={"ping_interval": 0.2, "ping_timeout": 0.3, "idle_timeout": 120})
    async with running(engine, adapter) as url:
        host, port = url.split("/")[2].split(":")
        # A peer that completes the handshake and then never reads nor answers pings.
        stream = await anyio.connect_tcp(host, int(port))
        await stream.send(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b"101" in (await stream.receive()).split(b"\r\n")[0]
        with anyio.fail_after(TIMEOUT):
            while not engine.sessions:
                await anyio.sleep(0.01)
            while engine.sessions:  # the server gives up on it by itself
                await anyio.sleep(0.05)
        await stream.aclose()


# --- backpressure ---------------------------------------------------------------------------------


class BulkProvider:
    """Many chunks, yielding to the event loop between them as a network-bound model does."""

    model = "bulk"

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks, self.size = chunks, size
        self.closed = 0

    def text(self) -> str:
        return "".join(self.piece(i) for i in range(self.chunks))

    def piece(self, i: int) -> str:
        return f"{i:07d}" + "x" * (self.size - 7)

    async def stream(self, request):
        try:
            for i in range(self.chunks):
                yield self.piece(i)
                await anyio.lowlevel.checkpoint()
            yield Completion()
        finally:
            self.closed += 1


def slow_socket_connect(url, **kwargs):
    """A client with a tiny receive buffer and queue, so the server feels backpressure soon."""
    host, port = url.split("/")[2].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sets the window
    sock.settimeout(TIMEOUT)
    sock.connect((host, int(port)))  # loopback: immediate
    sock.setblocking(False)
    return connect(url, sock=sock, max_queue=1, max_size=None, **kwargs)


async def wait_until(predicate, what):
    """Wait for a condition the test can observe, bounded in time."""
    with anyio.fail_after(TIMEOUT):
        while not predicate():
            await anyio.sleep(0.01)


# Hypercorn is left out here: it serves the protocol (see the suites above) but behind it
# frames were seen draining to a client that was not reading, so no backpressure reaches
# the engine there (noted in the README).
backpressure_adapters = pytest.mark.parametrize("adapter", ADAPTERS)


@backpressure_adapters
async def test_slow_reader_gets_merged_chunks_nothing_lost(adapter):
    provider = BulkProvider(chunks=20_000, size=320)  # 6.4 MB: more than any kernel buffer
    engine = make_engine(
        provider,
        # An END carrying the whole 6.4 MB text must fit a frame for check_stream's comparison.
        limits={"send_buffer_bytes": 16 * 1024, "max_frame_bytes": 16 << 20},
        runs={"max_run_bytes": 8 << 20},
    )
    async with running(engine, adapter) as url:
        async with slow_socket_connect(url) as c:
            await c.send("USER_MESSAGE", {"content": "go"})
            # Read nothing until the server's send buffer for us is full: from then on this
            # reader lags and later catches up from the run log, merged.
            await wait_until(lambda: any(s.outbox.full for s in engine.sessions), "backpressure")
            for s in engine.sessions:
                assert s.outbox.pending <= s.outbox.limit + 320  # bounded memory
            # Now read as fast as possible (a bigger receive buffer, just to keep the test short).
            c.ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            frames = await c.until("AI_MESSAGE_END")
    end = check_stream(frames)  # order kept, contiguous index, concatenation == full text
    assert end["content"] == provider.text() and end["stopReason"] == "complete"
    chunks = [f for f in frames if f["type"] == "AI_MESSAGE_CHUNK"]
    assert len(chunks) < provider.chunks  # fewer, larger chunks
    assert max(len(f["data"]["content"]) for f in chunks) > 64


class FloodOrShort(BulkProvider):
    """Floods when asked to "flood", answers briefly otherwise."""

    async def stream(self, request):
        if request.messages[-1].content != "flood":
            yield "short answer"
            return
        async for item in super().stream(request):
            yield item


@backpressure_adapters
async def test_client_that_stops_reading_is_closed_and_others_are_unaffected(adapter):
    provider = FloodOrShort(chunks=200_000, size=64)
    engine = make_engine(provider, limits={"send_buffer_bytes": 16 * 1024, "slow_client_timeout": 0.5})
    async with running(engine, adapter) as url:
        async with slow_socket_connect(url) as stuck, connect(url) as healthy:
            await stuck.send("USER_MESSAGE", {"content": "flood"})
            await wait_until(lambda: any(s.subscriptions for s in engine.sessions), "flood started")
            stuck_session = next(s for s in engine.sessions if s.subscriptions)
            await healthy.send("USER_MESSAGE", {"content": "still there?"})
            assert check_stream(await healthy.until("AI_MESSAGE_END"))["content"] == "short answer"
            # The stuck client never reads: the server closes it after the grace period.
            await wait_until(lambda: stuck_session not in engine.sessions, "stuck client closed")
            await healthy.send("PING", {"timestamp": 5})
            assert (await healthy.recv())["type"] == "PONG"
    assert provider.closed == 1
