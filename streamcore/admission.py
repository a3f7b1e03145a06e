"""Connection admission: how many connections one IP, one user and the process may hold.

The engine asks before it serves a connection: :meth:`ConnectionLimits.admit` with the
client's address (before authentication, so a flood of handshakes costs nothing), then
:meth:`Lease.bind_user` once the token named a user. A refused connection gets one
``ERROR RATE_LIMIT`` (retryable, with ``retryAfter``) and is closed with 1008, and a log
line says which limit refused it. Every admitted connection releases its lease when it
ends, whatever happened.

Counting happens in this process, synchronously (no await between the check and the
count), so two handshakes racing can never both take the last place. With several
workers each enforces its own limits: divide them by the number of workers.

IPv6 clients are counted per /64 network (one subscriber usually holds a whole /64, so
counting single addresses would let one client open a connection per address).
``X-Forwarded-For`` is not trusted: behind a reverse proxy every connection comes from the
proxy's address, so raise ``max_connections_per_ip`` there or enforce it in the proxy.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import anyio

from .errors import ConnectionClosed, StreamcoreError
from .log import get_logger
from .protocol import ErrorCode, ErrorData, EventType
from .transport import CloseReason

__all__ = [
    "ConnectionLimits",
    "ConnectionRefused",
    "Lease",
    "client_ip",
    "refuse",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_IP",
    "MAX_CONNECTIONS_PER_USER",
]

_log = get_logger("streamcore")

#: Connections one process serves at once (``[limits] max_connections``).
MAX_CONNECTIONS = 10_000
#: Connections from one IP address (IPv6: one /64) at once (``[limits] max_connections_per_ip``).
MAX_CONNECTIONS_PER_IP = 100
#: Connections of one authenticated user at once (``[limits] max_connections_per_user``).
MAX_CONNECTIONS_PER_USER = 20


class ConnectionRefused(StreamcoreError):
    """A connection over a limit: ``RATE_LIMIT``, retryable, with ``retry_after_ms``.

    Attributes:
        limit: the config key of the limit (``limits.max_connections_per_ip``...).
    """

    code = ErrorCode.RATE_LIMIT

    def __init__(self, message: str, *, limit: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message, code=ErrorCode.RATE_LIMIT, retryable=True, retry_after_ms=retry_after_ms)
        self.limit = limit


def client_ip(client: str | None) -> str | None:
    """The address to count a connection under, from ``ConnectionInfo.client``.

    ``"203.0.113.5:50123"`` gives ``"203.0.113.5"``; ``"2001:db8::1:50123"`` (or
    ``"[2001:db8::1]:50123"``) gives ``"2001:db8::/64"``. None or an unparsable value gives
    None (not counted per IP, still counted in the total).
    """
    if not client:
        return None
    host = client
    if host.startswith("["):  # [v6]:port
        host = host[1:].partition("]")[0]
    else:
        head, sep, port = host.rpartition(":")
        if sep and port.isdigit():
            host = head
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:256] or None  # a unix socket path or a name: count it as given
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Lease:
    """One admitted connection's place; :meth:`release` it when the connection ends."""

    __slots__ = ("_limits", "ip", "user_id", "_released")

    def __init__(self, limits: ConnectionLimits, ip: str | None) -> None:
        self._limits = limits
        self.ip = ip
        self.user_id: str | None = None
        self._released = False

    def bind_user(self, user_id: str | None) -> None:
        """Count this connection for ``user_id`` too (None: anonymous, nothing to count).

        Raises:
            ConnectionRefused: the user already holds ``max_connections_per_user``.
        """
        if user_id is None or self.user_id is not None or self._released:
            return
        limits = self._limits
        held = limits.per_user.get(user_id, 0)
        if held >= limits.max_per_user:
            limits.refused += 1
            raise ConnectionRefused(
                f"too many connections for this user (at most {limits.max_per_user}); close one or retry later",
                limit="limits.max_connections_per_user",
                retry_after_ms=limits.retry_after_ms,
            )
        limits.per_user[user_id] = held + 1
        self.user_id = user_id

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if self._released:
            return
        self._released = True
        limits = self._limits
        limits.total -= 1
        _decrement(limits.per_ip, self.ip)
        _decrement(limits.per_user, self.user_id)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _decrement(counts: dict[str, int], key: str | None) -> None:
    if key is None:
        return
    held = counts.get(key, 0)
    if held <= 1:
        counts.pop(key, None)
    else:
        counts[key] = held - 1


class ConnectionLimits:
    """Connection counts of one process: in total, per IP and per user.

    Args:
        max_connections: connections at once, all clients together.
        max_per_ip: connections at once from one address (IPv6: one /64).
        max_per_user: connections at once of one authenticated user.
        retry_after_ms: the ``retryAfter`` a refused client is given.

    Example::

        limits = ConnectionLimits.from_config(config.limits)
        lease = limits.admit(client_ip(info.client))     # raises ConnectionRefused
        try:
            lease.bind_user(user_id)                      # after authentication
            ...
        finally:
            lease.release()
    """

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        max_per_ip: int = MAX_CONNECTIONS_PER_IP,
        max_per_user: int = MAX_CONNECTIONS_PER_USER,
        *,
        retry_after_ms: int = 1000,
    ) -> None:
        for name, value in (("max_connections", max_connections), ("max_per_ip", max_per_ip),
                            ("max_per_user", max_per_user)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.max_per_user = max_per_user
        self.retry_after_ms = retry_after_ms
        #: connections admitted and not yet released.
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.per_user: dict[str, int] = {}
        #: connections refused so far.
        self.refused = 0

    @classmethod
    def from_config(cls, limits: Any) -> ConnectionLimits:
        """Limits from a ``[limits]`` section (keys it lacks take the defaults)."""
        return cls(
            getattr(limits, "max_connections", MAX_CONNECTIONS),
            getattr(limits, "max_connections_per_ip", MAX_CONNECTIONS_PER_IP),
            getattr(limits, "max_connections_per_user", MAX_CONNECTIONS_PER_USER),
            retry_after_ms=getattr(limits, "retry_after_ms", 1000),
        )

    def admit(self, ip: str | None, user_id: str | None = None) -> Lease:
        """Take a place for a connection from ``ip`` (and ``user_id`` when already known).

        Raises:
            ConnectionRefused: over ``max_connections``, ``max_connections_per_ip`` or
                ``max_connections_per_user``; nothing is counted then.
        """
        if self.total >= self.max_connections:
            self.refused += 1
            raise ConnectionRefused(
                "the server is at its connection limit; retry later",
                limit="limits.max_connections",
                retry_after_ms=self.retry_after_ms,
            )
        if ip is not None and self.per_ip.get(ip, 0) >= self.max_per_ip:
            self.refused += 1
            raise ConnectionRefused(
                f"too many connections from this address (at most {self.max_per_ip}); close one or retry later",
                limit="limits.max_connections_per_ip",
                retry_after_ms=self.retry_after_ms,
            )
        lease = Lease(self, ip)
        self.total += 1
        if ip is not None:
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        if user_id is not None:
            try:
                lease.bind_user(user_id)
            except ConnectionRefused:
                lease.release()
                raise
        return lease

    def check(self, ip: str | None, user_id: str | None = None) -> str | None:
        """Why a connection from ``ip`` (``user_id``) would be refused now, or None."""
        try:
            self.admit(ip, user_id).release()
        except ConnectionRefused as exc:
            self.refused -= 1  # only asked
            return exc.limit
        return None


async def refuse(
    conn: Any, codec: Any, exc: ConnectionRefused, *, client: str | None = None, timeout: float = 2.0
) -> None:
    """Tell a refused client why (``ERROR RATE_LIMIT``), close with 1008, log one line.

    Bounded by ``timeout``: a client that does not read cannot hold the server.
    """
    _log.warning("connection.refused", client=client, limit=exc.limit, reason=exc.message)
    with anyio.move_on_after(timeout, shield=True):
        try:
            frame = codec.encode(
                EventType.ERROR, ErrorData(exc.code, exc.message, True, None, exc.retry_after_ms)
            )
            await conn.send(frame)
            await conn.close(CloseReason.POLICY, "too many connections")
        except ConnectionClosed:
            pass
