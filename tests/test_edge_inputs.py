"""Inputs at the edges, each once mishandled (found in review; each test failed before):
a resumed run's own failure, a ping across a drop, a degenerate model reply, a token of
the other accepted algorithm, an upstream's unreadable or huge ``Retry-After``."""

from __future__ import annotations

import contextlib
import socket
import time

import anyio
import anyio.abc
import jwt
import msgspec
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from streamcore.client import ConnectionLost, GenerationFailed, InvalidMessage, StreamcoreClient
from streamcore.errors import ProviderError
from streamcore.protocol import ErrorCode
from streamcore.provider import ChatMessage, GenerationRequest, collect_text
from streamcore.providers.openai import OpenAIProvider
from streamcore.testing import memory_pair
from streamcore.transport import ConnectionInfo

from .helpers import TIMEOUT, ScriptedProvider, make_engine, running

pytestmark = pytest.mark.anyio

PIECES = ("Once ", "upon ", "a ", "time.")


def _fast_client(url: str, **kwargs) -> StreamcoreClient:
    options = {"reconnect_delay": 0.01, "reconnect_decay": 1.0, "jitter": 0, "ping_interval": None, **kwargs}
    return StreamcoreClient(url, **options)


# --- client: a resumed run's own ERROR is not a refusal of the RESUME -----------------------


@pytest.mark.parametrize(
    "failure, expected",
    [
        (ProviderError("the model provider failed"), GenerationFailed),
        (ProviderError("the model provider rejected the request", code=ErrorCode.INVALID_MESSAGE), InvalidMessage),
    ],
)
async def test_client_resumed_run_error_is_the_runs_error_not_a_resume_refusal(failure, expected):
    # The run fails after the client resumed it: the server sends the run's ERROR (with
    # messageId and seq) echoing the RESUME's id as requestId. The client must raise the
    # run's error, as it does without a reconnect, not take it for a refused RESUME.
    provider = ScriptedProvider(PIECES, gate_after=2, error=failure, error_after=2)
    engine = make_engine(provider)
    async with running(engine, "websockets") as url, _fast_client(url) as client:
        with anyio.fail_after(TIMEOUT):
            reply = await client.send_message("tell me a story")
            pieces = aiter(reply)
            seen = ""
            while seen != "".join(PIECES[:2]):  # the first pieces may come merged
                seen += await pieces.__anext__()
            await provider.reached_gate.wait()
            for session in list(engine.sessions):
                await session.close(1012, "cut")
            provider.gate.set()  # the run fails while the client is away (replayed on RESUME)
            with pytest.raises(expected):
                await reply.result()


# --- objectives: parsing a model's reply must not stall the event loop ----------------------


async def test_objective_reply_of_an_open_fence_and_whitespace_fails_fast():
    # A model (or a hostile upstream) answers GENERATE_OBJECTIVE with an opening code fence
    # and a few kilobytes of newlines (a JSON-mode model that degenerates into whitespace).
    # strip_code_fence's regex backtracks cubically on it, synchronously, in the event loop:
    # every connection of the server freezes. The reply must fail at once instead.
    provider = ScriptedProvider(("```json\n", "\n" * 4000))
    engine = make_engine(provider)
    conn, client = memory_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo())
        with anyio.fail_after(TIMEOUT):  # the old parser took about 30 s on this reply
            await client.send("GENERATE_OBJECTIVE", {"prompt": "Apprendre le piano"}, id="g")
            frames = await client.receive_until("AI_MESSAGE_END")
        await client.aclose()
    errors = [f for f in frames if f["type"] == "ERROR"]
    assert errors and errors[0]["data"]["code"] == "GENERATION_FAILED"
    assert frames[-1]["data"]["stopReason"] == "error"


# --- auth: a token of the other configured algorithm is AUTH_FAILED, not a crash ------------


async def test_jwt_public_key_token_with_the_other_default_algorithm_is_auth_failed():
    # With jwt_public_key set and no `algorithms`, RS256 and ES256 are both accepted. An RSA
    # key and a token whose header says ES256 make PyJWT raise InvalidKeyError, which is not
    # an InvalidTokenError: serve() raised it instead of answering AUTH_FAILED + close 1008.
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    forged = jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, ec.generate_private_key(ec.SECP256R1()),
                        algorithm="ES256")
    engine = make_engine(ScriptedProvider(), auth={"jwt_public_key": pem})
    conn, client = memory_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.serve, conn, ConnectionInfo(headers={"authorization": f"Bearer {forged}"}))
        with anyio.fail_after(TIMEOUT):
            err = await client.receive()
    assert err["type"] == "ERROR" and err["data"]["code"] == "AUTH_FAILED"
    assert conn.close_code == 1008
    assert engine.admission.total == 0


# --- openai provider: a 429 whose Retry-After is not a number nor a date stays RATE_LIMIT ----


@contextlib.asynccontextmanager
async def _one_answer_server(answer: bytes):
    """An HTTP server on 127.0.0.1 that answers every request with ``answer``."""

    async def handle(stream):
        async with stream:
            buffered = BufferedByteReceiveStream(stream)
            head = await buffered.receive_until(b"\r\n\r\n", 65536)
            length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:")]
            await buffered.receive_exactly(length[0] if length else 0)
            await stream.send(answer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("value", ["soon", "inf"])
async def test_openai_429_with_an_unparsable_retry_after_is_still_rate_limit(value):
    body = b'{"error": {"message": "slow down", "type": "rate_limit"}}'
    answer = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: %b\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (value.encode(), len(body), body))
    async with _one_answer_server(answer) as base_url:
        provider = OpenAIProvider(model="m", base_url=base_url, api_key_env="REVIEW3_NO_SUCH_KEY")
        try:
            with anyio.fail_after(TIMEOUT), pytest.raises(ProviderError) as caught:
                await collect_text(provider, GenerationRequest([ChatMessage("user", "x")]))
        finally:
            await provider.aclose()
    assert caught.value.code == ErrorCode.RATE_LIMIT and caught.value.retryable


# --- client: a pending ping() ends when the client closes -----------------------------------


async def test_client_ping_pending_while_offline_ends_when_the_client_is_closed():
    # ping() while the server is unreachable queues the PING and waits for its PONG. When
    # the client is closed the PING is never sent, yet ping() kept waiting forever (and its
    # entry stayed in the client's table of pending pings).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}/ws"  # nothing listens there
    client = _fast_client(url, reconnect_attempts=1_000_000, reconnect_delay=0.05)
    outcome: list[BaseException] = []

    async def ping() -> None:
        try:
            await client.ping()
        except Exception as exc:
            outcome.append(exc)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await client.connect()  # the first attempt failed; it keeps retrying
            tg.start_soon(ping)
            await anyio.wait_all_tasks_blocked()
            assert client.queue_size == 1  # the PING waits for a connection
            await client.aclose()
    assert outcome and isinstance(outcome[0], ConnectionLost)
    assert client._pongs == {}


async def test_openai_429_with_a_huge_retry_after_still_sends_the_error_to_a_msgpack_client():
    # `Retry-After: 1e30` became retryAfter = 10**33 ms: MessagePack cannot encode it, and the
    # run's ERROR was silently dropped (the client got AI_MESSAGE_END stopReason "error"
    # with no ERROR before it).
    body = b'{"error": {"message": "slow down"}}'
    answer = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1e30\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body))
    async with _one_answer_server(answer) as base_url:
        provider = OpenAIProvider(model="m", base_url=base_url, api_key_env="REVIEW3_NO_SUCH_KEY")
        engine = make_engine(provider)
        conn, client = memory_pair()
        frames = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.serve, conn, ConnectionInfo(subprotocol="streamcore.msgpack"))
            with anyio.fail_after(TIMEOUT):
                await client.send_raw(msgspec.msgpack.encode(
                    {"id": "r1", "type": "USER_MESSAGE", "timestamp": 1, "data": {"content": "hi"}}))
                while not frames or frames[-1]["type"] != "AI_MESSAGE_END":
                    frames.append(msgspec.msgpack.decode(await client._inbound.receive()))
            await client.aclose()
        await engine.aclose()
    errors = [f["data"] for f in frames if f["type"] == "ERROR"]
    assert errors and errors[0]["code"] == "RATE_LIMIT", [f["type"] for f in frames]
