"""Redis (or Valkey) behind the run log, the broker, the limiter and the stores.

Everything here is built by :class:`RedisBackends` from ``[redis]`` (``url``,
``key_prefix``, ``flush_interval_ms``); every key and channel starts with ``key_prefix``.

- **Run log**: one stream per run, ``{p}run:{id}``, and a hash ``{p}runmeta:{id}`` (owner,
  done). Appends are buffered and sent for all runs of the process in one pipeline per
  flush window (``flush_interval_ms``): the per-chunk cost on the hot path is a list append
  and a dict insertion. A stream entry is one batch (msgpack ``[(seq, kind, payload)...]``)
  whose id is ``{last seq}-0``; the seal is ``{last seq}-1``. Streams are capped with
  ``XADD MAXLEN ~`` and expire ``retention`` seconds after the run ends. While Redis is
  unreachable nothing is lost: the writer keeps the run's entries (they are its local
  list) and sends them again, all of them, once Redis answers (a restarted, empty Redis
  gets the whole run back; readers drop what they already have by ``seq``).
- **Broker**: one Pub/Sub channel, ``{p}bus``; publishing is queued and pipelined by a
  background task, so a publisher never waits on Redis.
- **Limiter**: a token bucket per user (``{p}rate:{user}``) and a lease set of running runs
  per owner (``{p}active:{owner}``), each updated by one Lua script, so the limits hold
  across workers; when Redis is unreachable the worker falls back to its own counts.
- **Stores**: conversation history as bounded lists with TTLs (``{p}conv:...``), objectives
  as a bounded hash per owner with a TTL (``{p}obj:...``).

Failures: a command that cannot reach Redis raises :class:`BackendUnavailable` (the
client gets a retryable ``SERVER_ERROR``); the outage is logged once (``redis.unavailable``)
and its end once (``redis.recovered``); background tasks retry with backoff. Nothing here
blocks the event loop. Cluster mode is not supported (scripts touch keys they derive).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import redis as _redis_sync
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError, ResponseError, WatchError
except ImportError:  # pragma: no cover - exercised by the CLI's own test
    raise ImportError(
        "the Python package 'redis' is not installed ([redis] url is set): pip install 'streamcore-llm[redis]'"
    ) from None

import anyio
import msgspec

from ..broker import ALL, TOPIC, USER, BusMessage
from ..errors import ProtocolError
from ..events import AppEvent, Ended, Entry, Failure, Kind, Started, expand
from ..log import get_logger
from ..objectives import Objective, apply_updates
from ..provider import ChatMessage
from ..ratelimit import TokenBucket
from ..runlog import RunInfo
from . import BackendUnavailable

__all__ = [
    "RedisBackends",
    "RedisRunLog",
    "RedisBroker",
    "RedisLimiter",
    "RedisConversationStore",
    "RedisObjectiveStore",
    "RedisPublisher",
    "AsyncRedisPublisher",
    "Health",
]

_log = get_logger("streamcore")

#: What counts as "Redis is unreachable" (ResponseError is a bug or a full server).
_DOWN = (RedisError, OSError)
#: seconds of silence on the broker's pub/sub connection before it is pinged, and seconds
#: the answer may take before the connection is taken for dead and made again.
_SUBSCRIBER_PING_AFTER = 5.0
_SUBSCRIBER_PONG_WITHIN = 5.0


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, str):  # Reasoning and other str subclasses
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode
_batch = msgspec.msgpack.Decoder(list[tuple[int, int, msgspec.Raw]]).decode
_payload = {
    Kind.STARTED: msgspec.msgpack.Decoder(Started).decode,
    Kind.TEXT: msgspec.msgpack.Decoder(str).decode,
    Kind.REASONING: msgspec.msgpack.Decoder(str).decode,
    Kind.FAILED: msgspec.msgpack.Decoder(Failure).decode,
    Kind.ENDED: msgspec.msgpack.Decoder(Ended).decode,
    Kind.APP: msgspec.msgpack.Decoder(AppEvent).decode,
}
_bus = msgspec.msgpack.Decoder(BusMessage).decode
_message = msgspec.msgpack.Decoder(tuple[str, str]).decode
_objective = msgspec.msgpack.Decoder(Objective).decode


def redact(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{host}")
    return urlunsplit(parts)


def make_client(
    url: str, *, socket_timeout: float = 2.0, max_connections: int | None = None, blocking: bool = False
) -> Any:
    """An asyncio client that fails fast: short timeouts, one retry, no backoff sleeps."""
    options: dict[str, Any] = dict(
        socket_timeout=socket_timeout,
        socket_connect_timeout=1.0,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
    )
    if blocking:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections or 256, timeout=5, **options
        )
        return aioredis.Redis(connection_pool=pool)
    if max_connections:
        options["max_connections"] = max_connections
    return aioredis.Redis.from_url(url, **options)


class Health:
    """Logs an outage once, and its end once."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        self.up = True
        self.since = 0.0

    def down(self, exc: BaseException, during: str) -> None:
        if self.up:
            self.up = False
            self.since = time.monotonic()
            if not isinstance(exc, _DOWN):
                # Not a connection error: redis-py has raised AttributeError and TypeError
                # from a connection torn down under it (redis/redis-py#2349, #3546). Taken
                # for an outage all the same; its traceback is logged once.
                _log.error("redis.unexpected_error", url=self.url, during=during, exc_info=exc)
            _log.error("redis.unavailable", url=self.url, during=during, error=f"{type(exc).__name__}: {exc}")

    def ok(self) -> None:
        if not self.up:
            self.up = True
            _log.warning("redis.recovered", url=self.url, outage_s=round(time.monotonic() - self.since, 2))


def _k(owner: str) -> str:
    # Owners may contain ':'; a length prefix keeps (owner, id) pairs unambiguous in keys.
    return f"{len(owner)}:{owner}"


# --- run log --------------------------------------------------------------------------------


class RedisLogWriter:
    """One run's handle on the Redis log.

    The run appends to ``entries`` itself: the hot path costs nothing more than in memory.
    The log's flusher sends what is new, for every live run, once per window.
    """

    __slots__ = (
        "run_id", "owner", "entries", "sent", "done", "sealed", "meta_sent", "expire_at", "key", "meta",
        "_log", "_flushed",
    )

    def __init__(self, log: RedisRunLog, run_id: str, owner: str) -> None:
        self.run_id = run_id
        self.owner = owner
        self.entries: list[Entry | str] = []
        #: how many entries Redis has.
        self.sent = 0
        self.done = False
        self.sealed = False
        self.meta_sent = False
        self.expire_at = 0.0
        self.key = log.prefix + "run:" + run_id
        self.meta = log.prefix + "runmeta:" + run_id
        self._log = log
        self._flushed: anyio.Event | None = None

    @property
    def append(self) -> Callable[[Entry | str], None]:
        """``entries.append`` (see :class:`~streamcore.runlog.LogWriter`)."""
        return self.entries.append

    def finish(self, size: int = 0) -> None:
        if self.done:
            return
        self.done = True
        self._log._wake.set()

    def dirty(self) -> bool:
        return self.sent < len(self.entries) or not self.meta_sent or (self.done and not self.sealed)

    async def flush(self) -> None:
        """Wait until Redis has everything appended so far (the seal too, once finished)."""
        while self.dirty():
            if self._flushed is None:
                self._flushed = anyio.Event()
            self._log._wake.set()
            await self._flushed.wait()


class RedisRunLog:
    """The run log on Redis Streams (see the module docstring).

    Args:
        client: an asyncio Redis client for commands.
        blocking: a client for ``XREAD BLOCK`` (a bounded pool of its own).
        prefix: key prefix.
        retention: seconds a finished run stays readable.
        flush_interval: seconds appends may wait to be sent together (the flusher looks
            at every live run once per window; idle, it backs off to 16 ms).
        running_ttl: seconds a running run's keys live without being refreshed.
        maxlen: stream entries (batches) kept per run, approximately.
    """

    def __init__(
        self,
        client: Any,
        blocking: Any,
        *,
        prefix: str = "streamcore:",
        retention: float = 300.0,
        flush_interval: float = 0.002,
        running_ttl: float = 3600.0,
        maxlen: int = 100_000,
        health: Health | None = None,
    ) -> None:
        self.client = client
        self.blocking = blocking
        self.prefix = prefix
        self.retention = retention
        self.flush_interval = max(0.0005, flush_interval)
        self.running_ttl = running_ttl
        self.maxlen = maxlen
        self.health = health or Health("redis")
        #: writers not yet sealed in Redis, in the order they opened.
        self._live: dict[RedisLogWriter, None] = {}
        self._wake = anyio.Event()
        #: flushes and batches sent (for benchmarks).
        self.flushes = 0
        self.batches = 0

    def start(self, task_group: Any) -> None:
        task_group.start_soon(self._flusher)

    def open(self, run_id: str, owner: str) -> RedisLogWriter:
        writer = RedisLogWriter(self, run_id, owner)
        self._live[writer] = None
        self._wake.set()
        return writer

    async def _flusher(self) -> None:
        backoff = 0.0
        idle = self.flush_interval
        while True:
            if not self._live:
                self._wake = anyio.Event()
                await self._wake.wait()
            with anyio.move_on_after(idle):
                self._wake = anyio.Event()
                await self._wake.wait()
                if self.flush_interval > 0:  # woken early (a seal, a flush): still batch
                    await anyio.sleep(self.flush_interval)
            dirty = [w for w in self._live if w.dirty()]
            if not dirty:
                idle = min(idle * 2, 0.016)
                continue
            idle = self.flush_interval
            try:
                await self._write(dirty)
            except Exception as exc:  # _DOWN, or a client error on a broken connection
                self.health.down(exc, "runlog.append")
                for writer in self._live:
                    # Redis may have restarted empty: send every live run again, whole.
                    writer.sent = 0
                    writer.sealed = False
                    writer.meta_sent = False
                backoff = min(1.0, backoff * 2 or 0.05)
                await anyio.sleep(backoff)
                continue
            backoff = 0.0
            self.health.ok()
            for writer in dirty:
                if writer.sealed:
                    self._live.pop(writer, None)

    async def _write(self, batch: list[RedisLogWriter]) -> None:
        pipe = self.client.pipeline(transaction=False)
        done: list[tuple[RedisLogWriter, int, bool]] = []
        now = time.monotonic()
        for w in batch:
            n = len(w.entries)  # seqs run from 1 without gaps: n is the last one
            if w.sent < n:
                pipe.xadd(
                    w.key, {b"e": _encode(expand(w.entries, w.sent, n))}, id=f"{n}-0", maxlen=self.maxlen,
                    approximate=True,
                )
                self.batches += 1
            if not w.meta_sent:
                pipe.hset(w.meta, "owner", w.owner)
            seal = w.done and not w.sealed
            if seal:
                pipe.xadd(w.key, {b"s": b"1"}, id=f"{n}-1")
                pipe.hset(w.meta, "done", "1")
                ms = int(self.retention * 1000)
                pipe.pexpire(w.key, ms)
                pipe.pexpire(w.meta, ms)
            elif not w.meta_sent or now > w.expire_at:
                ms = int(self.running_ttl * 1000)
                pipe.pexpire(w.key, ms)
                pipe.pexpire(w.meta, ms)
                w.expire_at = now + self.running_ttl / 2
            done.append((w, n, seal))
        results = await pipe.execute(raise_on_error=False)
        self.flushes += 1
        for result in results:
            # An id already there means a resend after a lost reply: the data is in.
            if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                _log.error("runlog.redis_error", error=str(result))
            elif isinstance(result, BaseException) and not isinstance(result, ResponseError):
                raise result
        for w, n, seal in done:
            w.sent = max(w.sent, n)
            w.meta_sent = True
            if seal:
                w.sealed = True
            if w._flushed is not None and not w.dirty():
                w._flushed.set()
                w._flushed = None

    async def flush_all(self) -> None:
        """Send what is pending now (once; the caller bounds it in time)."""
        dirty = [w for w in self._live if w.dirty()]
        if dirty:
            await self._write(dirty)
            for writer in dirty:
                if writer.sealed:
                    self._live.pop(writer, None)

    async def info(self, run_id: str) -> RunInfo | None:
        key = self.prefix + "run:" + run_id
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.prefix + "runmeta:" + run_id)
                pipe.xrevrange(key, count=1)
                meta, last = await pipe.execute()
        except _DOWN as exc:
            self.health.down(exc, "runlog.info")
            raise BackendUnavailable() from None
        self.health.ok()
        owner = meta.get(b"owner")
        if owner is None:
            return None
        last_seq = int(last[0][0].split(b"-")[0]) if last else 0
        return RunInfo(run_id, owner.decode(), meta.get(b"done") == b"1", last_seq)

    async def read(self, run_id: str, after: int, *, wait: float = 0.0) -> tuple[list[Entry], bool]:
        key = self.prefix + "run:" + run_id
        try:
            if wait > 0:
                resp = await self.blocking.xread({key: f"{after}-0"}, count=1000, block=max(1, int(wait * 1000)))
            else:
                resp = await self.client.xread({key: f"{after}-0"}, count=1000)
            if not resp:
                done = await self.client.hget(self.prefix + "runmeta:" + run_id, "done")
                if done == b"1":
                    # The run's last flush may have landed between the read and this look:
                    # ``done`` is written after the last entries, so a second read has them.
                    resp = await self.client.xread({key: f"{after}-0"}, count=1000)
                    if not resp:
                        return [], True
                else:
                    # Unknown or expired reads as sealed; a known run with nothing new is not.
                    exists = done is not None or await self.client.exists(self.prefix + "runmeta:" + run_id)
                    return [], not exists
        except _DOWN as exc:
            self.health.down(exc, "runlog.read")
            raise BackendUnavailable() from None
        self.health.ok()
        entries: list[Entry] = []
        sealed = False
        cursor = after
        for _key, items in resp:
            for _id, fields in items:
                raw = fields.get(b"e")
                if raw is None:
                    sealed = sealed or b"s" in fields
                    continue
                for seq, kind, payload in _batch(raw):
                    if seq > cursor:
                        entries.append((seq, kind, _payload[kind](payload)))
                        cursor = seq
        return entries, sealed

    async def aclose(self) -> None:
        try:
            await self.flush_all()
        except _DOWN as exc:
            self.health.down(exc, "runlog.close")


# --- broker ---------------------------------------------------------------------------------


class RedisBroker:
    """The broker on one Redis Pub/Sub channel, ``{prefix}bus``.

    ``publish`` queues (bounded: the oldest queued messages are dropped past ``max_queue``
    and the drop is logged); a background task sends the queue in one pipeline. Another task
    holds the subscription and reconnects after an outage.
    """

    shared = True

    def __init__(
        self, client: Any, *, prefix: str = "streamcore:", health: Health | None = None, max_queue: int = 10_000
    ) -> None:
        self.client = client
        self.channel = (prefix + "bus").encode()
        self.health = health or Health("redis")
        self._handlers: list[Callable[[BusMessage], None]] = []
        self._queue: deque[bytes] = deque()
        self._max_queue = max_queue
        self._event = anyio.Event()
        self._ready = anyio.Event()
        self.dropped = 0
        self.received = 0

    def subscribe(self, handler: Callable[[BusMessage], None]) -> None:
        self._handlers.append(handler)

    def start(self, task_group: Any) -> None:
        task_group.start_soon(self._publisher)
        task_group.start_soon(self._subscriber)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (bounded) until the subscription is live; False on timeout."""
        with anyio.move_on_after(timeout):
            await self._ready.wait()
            return True
        return False

    def publish(self, message: BusMessage) -> None:
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _log.warning("broker.queue_full", dropped=self.dropped)
        self._queue.append(_encode(message))
        self._event.set()

    async def _publisher(self) -> None:
        while True:
            await self._event.wait()
            self._event = anyio.Event()
            while self._queue:
                items = [self._queue.popleft() for _ in range(min(len(self._queue), 500))]
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for item in items:
                            pipe.publish(self.channel, item)
                        await pipe.execute()
                    self.health.ok()
                except Exception as exc:  # _DOWN, or a client error on a broken connection
                    # Other workers miss what is published during an outage (this
                    # worker's own clients already got it): nothing is kept to replay.
                    self.health.down(exc, "broker.publish")
                    self.dropped += len(items)
                    self._queue.clear()
                    break

    async def _subscriber(self) -> None:
        backoff = 0.0
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._ready.set()
                self.health.ok()
                backoff = 0.0
                heard, pinged = anyio.current_time(), False
                while True:
                    # Bounded waits, and a PING after a silence: a connection that died
                    # without a reset (a crashed host, a failover, a dropped NAT entry)
                    # would otherwise be waited on until the kernel gives up, hours later,
                    # with this worker deaf to the others and its health still "up".
                    msg = await pubsub.get_message(timeout=1.0)
                    now = anyio.current_time()
                    if msg is None:
                        silent = now - heard
                        if not pinged and silent >= _SUBSCRIBER_PING_AFTER:
                            await pubsub.ping()
                            pinged = True
                        elif pinged and silent >= _SUBSCRIBER_PING_AFTER + _SUBSCRIBER_PONG_WITHIN:
                            raise ConnectionError("the pub/sub connection stopped answering")
                        continue
                    heard, pinged = now, False  # anything heard, a PONG included
                    if msg.get("type") != "message":
                        continue
                    try:
                        message = _bus(msg["data"])
                    except msgspec.DecodeError:
                        _log.warning("broker.bad_message")
                        continue
                    self.received += 1
                    for handler in self._handlers:
                        try:
                            handler(message)
                        except Exception:
                            _log.exception("broker.handler_failed", kind=message.kind)
            except Exception as exc:  # _DOWN, or a client error on a broken connection
                self._ready = anyio.Event()
                self.health.down(exc, "broker.subscribe")
                backoff = min(1.0, backoff * 2 or 0.05)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    try:
                        await pubsub.aclose()
                    except Exception:
                        pass
            await anyio.sleep(backoff)

    async def aclose(self) -> None:
        if self._queue:
            items = list(self._queue)
            self._queue.clear()
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for item in items:
                        pipe.publish(self.channel, item)
                    await pipe.execute()
            except _DOWN:
                pass
        self._handlers.clear()


class _Publish:
    """What RedisPublisher and AsyncRedisPublisher share: building bus messages."""

    def __init__(self, key_prefix: str) -> None:
        self.channel = (key_prefix + "bus").encode()
        self.origin = "pub-" + msgspec.json.encode(time.time_ns()).decode()

    def _msg(self, kind: str, target: str | None, type: str, data: Any) -> bytes:
        return _encode(BusMessage(self.origin, kind, target, type, data))


class RedisPublisher(_Publish):
    """Publish to clients of every worker from any process (a job, a script), no engine.

    Synchronous (see :class:`AsyncRedisPublisher` in async code). Each call returns how
    many server processes received the message.

    Example::

        pub = RedisPublisher("redis://127.0.0.1:6379/0")
        pub.publish("indexing", "INDEXING_PROGRESS", {"done": 3, "total": 10})
    """

    def __init__(self, url: str, *, key_prefix: str = "streamcore:") -> None:
        super().__init__(key_prefix)
        self.client = _redis_sync.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)

    def publish(self, topic: str, type: str, data: Any) -> int:
        """Send ``type``/``data`` to the clients subscribed to ``topic``."""
        return self.client.publish(self.channel, self._msg(TOPIC, topic, type, data))

    def broadcast(self, type: str, data: Any) -> int:
        """Send to every connected client."""
        return self.client.publish(self.channel, self._msg(ALL, None, type, data))

    def send_to_user(self, user_id: str, type: str, data: Any) -> int:
        """Send to every connection of ``user_id``, on any worker."""
        return self.client.publish(self.channel, self._msg(USER, user_id, type, data))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RedisPublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncRedisPublisher(_Publish):
    """:class:`RedisPublisher` for async code (``await pub.publish(...)``)."""

    def __init__(self, url: str, *, key_prefix: str = "streamcore:") -> None:
        super().__init__(key_prefix)
        self.client = make_client(url, socket_timeout=5)

    async def publish(self, topic: str, type: str, data: Any) -> int:
        return await self.client.publish(self.channel, self._msg(TOPIC, topic, type, data))

    async def broadcast(self, type: str, data: Any) -> int:
        return await self.client.publish(self.channel, self._msg(ALL, None, type, data))

    async def send_to_user(self, user_id: str, type: str, data: Any) -> int:
        return await self.client.publish(self.channel, self._msg(USER, user_id, type, data))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncRedisPublisher:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# --- limiter --------------------------------------------------------------------------------

_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or cap
local stamp = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1, math.ceil((1 - tokens) / rate))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return wait
"""

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""


class _RedisBucket:
    __slots__ = ("limiter", "key", "local")

    def __init__(self, limiter: RedisLimiter, key: str, local: TokenBucket) -> None:
        self.limiter = limiter
        self.key = key
        self.local = local

    def take(self) -> Any:
        return self.limiter._take(self)


#: slot releases kept for a retry while Redis is unreachable (see RedisLimiter.release).
_MAX_UNRELEASED = 10_000


class RedisLimiter:
    """Rate and concurrency limits per user across workers (atomic Lua scripts).

    Args:
        messages, interval: the token bucket (``[limits] messages_per_interval``, ``interval``).
        lease: seconds a run's slot is held at most (a crashed worker's slots expire).
        timeout: seconds a limit check may take before the worker decides alone.
    """

    shared = True

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "streamcore:",
        messages: int = 30,
        interval: float = 10.0,
        lease: float = 900.0,
        timeout: float = 0.5,
        health: Health | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.messages = messages
        self.interval = interval
        self.lease = lease
        self.timeout = timeout
        self.health = health or Health("redis")
        self._rate = client.register_script(_RATE)
        self._acquire = client.register_script(_ACQUIRE)
        # Fallbacks while Redis is unreachable: this worker's own counts.
        from ..limits import MemoryLimiter

        self._local = MemoryLimiter(messages, interval)
        #: slots whose release failed (Redis unreachable), by owner: freed at that owner's
        #: next acquire, not only when their lease ends (a user would be refused for it).
        self._unreleased: dict[str, set[str]] = {}

    def rate(self, session: Any) -> Any:
        local = self._local.rate(session)
        user_id = getattr(session, "user_id", None)
        if not user_id:
            return local  # an anonymous connection's bucket is its own: no need to share it
        return _RedisBucket(self, self.prefix + "rate:" + user_id, local)

    def release_rate(self, session: Any) -> None:
        self._local.release_rate(session)

    async def _take(self, bucket: _RedisBucket) -> int:
        try:
            with anyio.fail_after(self.timeout):
                wait = await self._rate(
                    keys=[bucket.key],
                    args=[self.messages, self.messages / (self.interval * 1000), int(self.interval * 2000) + 1000],
                )
            self.health.ok()
            return int(wait)
        except (*_DOWN, TimeoutError) as exc:
            self.health.down(exc, "limits.rate")
            return bucket.local.take()

    def try_acquire(self, owner: str, run_id: str, limit: int) -> None:
        return None

    async def acquire(self, owner: str, run_id: str, limit: int) -> bool:
        local = self._local.try_acquire(owner, run_id, 1 << 30)
        key = self.prefix + "active:" + owner
        try:
            with anyio.fail_after(self.timeout):
                stale = self._unreleased.get(owner)
                if stale:
                    await self.client.zrem(key, *stale)
                    del self._unreleased[owner]
                ok = await self._acquire(keys=[key], args=[limit, run_id, self.lease])
            self.health.ok()
        except (*_DOWN, TimeoutError) as exc:
            self.health.down(exc, "limits.acquire")
            ok = self._local.active(owner) <= limit
        if not ok and local:
            self._local.release_now(owner, run_id)
        return bool(ok)

    async def release(self, owner: str, run_id: str) -> None:
        self._local.release_now(owner, run_id)
        try:
            with anyio.fail_after(self.timeout):
                await self.client.zrem(self.prefix + "active:" + owner, run_id)
        except (*_DOWN, TimeoutError) as exc:
            self.health.down(exc, "limits.release")
            # Retried at the owner's next acquire; bounded (past it, the lease expires it).
            if sum(map(len, self._unreleased.values())) < _MAX_UNRELEASED:
                self._unreleased.setdefault(owner, set()).add(run_id)

    async def aclose(self) -> None:
        await self._local.aclose()


# --- conversations --------------------------------------------------------------------------

_ADD_TURN = """
for i = 8, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
local n = redis.call('LLEN', KEYS[1])
local maxm = tonumber(ARGV[1])
if n > maxm then
  redis.call('LTRIM', KEYS[1], n - maxm, -1)
  n = maxm
end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local total = 0
for _, v in ipairs(items) do total = total + string.len(v) end
local i = 1
local maxb = tonumber(ARGV[2])
while n > 1 and total > maxb do
  total = total - string.len(items[i])
  redis.call('LPOP', KEYS[1])
  i = i + 1
  n = n - 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  for _, cid in ipairs(old) do redis.call('DEL', ARGV[7] .. cid) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return n
"""

_DROP_OWNER = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, cid in ipairs(ids) do redis.call('DEL', ARGV[1] .. cid) end
redis.call('DEL', KEYS[1])
return #ids
"""


class RedisConversationStore:
    """Conversation history on Redis: a bounded list per conversation, with a TTL.

    Bounds as in memory: ``max_messages`` and ``max_bytes`` (of stored messages) per
    conversation, ``per_owner`` conversations per owner (least recently used go first);
    the total is bounded by ``ttl`` (seconds since last use) instead of a count.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "streamcore:",
        max_messages: int = 20,
        max_bytes: int = 256 * 1024,
        per_owner: int = 50,
        ttl: float = 7 * 86400.0,
        health: Health | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.per_owner = per_owner
        self.ttl = ttl
        self.health = health or Health("redis")
        self._add = client.register_script(_ADD_TURN)
        self._drop = client.register_script(_DROP_OWNER)

    def _keys(self, owner: str, conversation_id: str) -> tuple[str, str, str]:
        base = self.prefix + "conv:" + _k(owner) + ":"
        return base + conversation_id, self.prefix + "convs:" + owner, base

    async def history(self, owner: str, conversation_id: str) -> list[ChatMessage]:
        key, index, _ = self._keys(owner, conversation_id)
        ms = int(self.ttl * 1000)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.zadd(index, {conversation_id: time.time()}, xx=True)
                pipe.pexpire(key, ms)
                raw, *_ = await pipe.execute()
        except _DOWN as exc:
            self.health.down(exc, "conversations.history")
            raise BackendUnavailable() from None
        self.health.ok()
        return [ChatMessage(*_message(item)) for item in raw]

    async def add_turn(self, owner: str, conversation_id: str, messages: list[ChatMessage]) -> None:
        if self.max_messages == 0 or not messages:
            return
        key, index, base = self._keys(owner, conversation_id)
        items = []
        for m in messages:
            content = m.content if len(m.content) <= self.max_bytes else m.content[-self.max_bytes:]
            items.append(_encode((m.role, content)))
        try:
            await self._add(
                keys=[key, index],
                args=[
                    self.max_messages, self.max_bytes, self.per_owner, int(self.ttl * 1000), time.time(),
                    conversation_id, base, *items,
                ],
            )
        except _DOWN as exc:
            # Recorded after the reply ended, where nobody could be told: the turn is
            # lost (logged), the worker goes on.
            self.health.down(exc, "conversations.add_turn")
            _log.warning("conversations.turn_lost", conversation_id=conversation_id[:64])
            return
        self.health.ok()

    async def drop_owner(self, owner: str) -> None:
        try:
            await self._drop(keys=[self.prefix + "convs:" + owner], args=[self.prefix + "conv:" + _k(owner) + ":"])
        except _DOWN as exc:
            self.health.down(exc, "conversations.drop_owner")  # the TTL removes them

    async def aclose(self) -> None:
        return None


# --- objectives -----------------------------------------------------------------------------

_ADD_OBJECTIVE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  for _, id in ipairs(old) do redis.call('HDEL', KEYS[1], id) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""


class RedisObjectiveStore:
    """Objectives on Redis: one hash per owner, the oldest dropped past ``max_per_owner``,
    expiring ``ttl`` seconds after the owner's last change."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "streamcore:",
        max_per_owner: int = 1000,
        ttl: float = 30 * 86400.0,
        health: Health | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.max_per_owner = max_per_owner
        self.ttl = ttl
        self.health = health or Health("redis")
        self._add = client.register_script(_ADD_OBJECTIVE)

    def _keys(self, owner: str) -> tuple[str, str]:
        return self.prefix + "obj:" + _k(owner), self.prefix + "objorder:" + _k(owner)

    async def add(self, owner: str, objective: Objective) -> None:
        key, order = self._keys(owner)
        try:
            await self._add(
                keys=[key, order],
                args=[objective.id, _encode(objective), time.time_ns(), self.max_per_owner, int(self.ttl * 1000)],
            )
        except _DOWN as exc:
            # Stored after the run ended: the client still gets OBJECTIVE_GENERATED; a
            # later UPDATE_OBJECTIVE of it gets an error. Logged, never raised.
            self.health.down(exc, "objectives.add")
            _log.warning("objectives.not_stored", objective_id=objective.id)
            return
        self.health.ok()

    async def get(self, owner: str, objective_id: str) -> Objective | None:
        try:
            raw = await self.client.hget(self._keys(owner)[0], objective_id)
        except _DOWN as exc:
            self.health.down(exc, "objectives.get")
            raise BackendUnavailable() from None
        return None if raw is None else _objective(raw)

    async def update(self, owner: str, objective_id: str, updates: dict[str, Any]) -> Objective:
        key, order = self._keys(owner)
        ms = int(self.ttl * 1000)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hget(key, objective_id)
                        if raw is None:
                            raise ProtocolError(f"unknown objective {objective_id[:128]!r}")
                        updated = apply_updates(_objective(raw), updates)
                        pipe.multi()
                        pipe.hset(key, objective_id, _encode(updated))
                        pipe.pexpire(key, ms)
                        pipe.pexpire(order, ms)
                        await pipe.execute()
                        self.health.ok()
                        return updated
                    except WatchError:
                        continue
        except _DOWN as exc:
            self.health.down(exc, "objectives.update")
            raise BackendUnavailable() from None

    async def drop_owner(self, owner: str) -> None:
        try:
            await self.client.delete(*self._keys(owner))
        except _DOWN as exc:
            self.health.down(exc, "objectives.drop_owner")

    async def aclose(self) -> None:
        return None


# --- all of them ----------------------------------------------------------------------------


class RedisBackends:
    """Every Redis backend of one engine, sharing two clients and one outage log.

    Attributes: ``runlog``, ``broker``, ``limiter``, ``conversations``, ``objectives``.
    """

    def __init__(self, config: Any) -> None:
        rc = config.redis
        if not rc.url:
            raise ValueError("[redis] url is not set")
        self.url = rc.url
        prefix = rc.key_prefix
        lim = config.limits
        runs = config.runs
        self.health = health = Health(rc.url)
        self.client = make_client(rc.url)
        # XREAD BLOCK holds a connection for its wait: its own bounded pool.
        self.blocking = make_client(rc.url, socket_timeout=5.0, max_connections=512, blocking=True)
        running_ttl = runs.retention + 2 * lim.generation_timeout + lim.first_chunk_timeout + 4 * runs.cleanup_timeout
        self.runlog = RedisRunLog(
            self.client,
            self.blocking,
            prefix=prefix,
            retention=runs.retention,
            flush_interval=rc.flush_interval_ms / 1000,
            running_ttl=running_ttl,
            health=health,
        )
        self.broker = RedisBroker(self.client, prefix=prefix, health=health)
        self.limiter = RedisLimiter(
            self.client,
            prefix=prefix,
            messages=lim.messages_per_interval,
            interval=lim.interval,
            lease=2 * lim.generation_timeout + lim.first_chunk_timeout + 4 * runs.cleanup_timeout,
            health=health,
        )
        self.conversations = RedisConversationStore(
            self.client,
            prefix=prefix,
            max_messages=lim.history_messages,
            max_bytes=lim.history_bytes,
            per_owner=lim.conversations_per_owner,
            health=health,
        )
        self.objectives = RedisObjectiveStore(self.client, prefix=prefix, health=health)

    async def aclose(self) -> None:
        for client in (self.client, self.blocking):
            with anyio.move_on_after(1.0):
                try:
                    await client.aclose()
                except Exception:
                    pass
