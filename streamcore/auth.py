"""Connection policy at the handshake: who the client is, and where it comes from.

Authentication is off unless ``[auth]`` sets a key (or an application passes its own
verifier). The token comes from ``Authorization: Bearer`` or, for browsers, which cannot
set headers on a WebSocket, from the ``token`` query parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Union

from .config import AuthConfig
from .errors import StreamcoreError
from .protocol import ErrorCode
from .transport import ConnectionInfo

__all__ = ["AuthError", "Verifier", "JWTVerifier", "bearer_token", "origin_allowed"]

#: ``verify(token, info) -> user id`` (or claims with ``sub``); may be async; raises
#: :class:`AuthError` to refuse.
Verifier = Callable[[Union[str, None], ConnectionInfo], Union[Any, Awaitable[Any]]]


class AuthError(StreamcoreError):
    """The client's token is missing or bad (``AUTH_FAILED``, then close 1008)."""

    code = ErrorCode.AUTH_FAILED


def bearer_token(info: ConnectionInfo) -> str | None:
    """The token from ``Authorization: Bearer …``, else from the ``token`` query parameter."""
    header = info.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return info.query.get("token") or None


class JWTVerifier:
    """Verifies JWTs: HS256 with a shared secret, or RS256/ES256 with a public key.

    Expiry is always enforced (a token without ``exp`` is refused), and ``sub`` names the
    user. Audience and issuer are checked when configured.
    """

    def __init__(self, config: AuthConfig) -> None:
        try:
            import jwt
        except ImportError:  # pragma: no cover - depends on the install
            raise ImportError("JWT auth needs PyJWT: pip install 'streamcore-llm[jwt]'") from None
        self._jwt = jwt
        if config.jwt_public_key:
            key = config.jwt_public_key
            if not key.lstrip().startswith("-----BEGIN"):
                key = Path(key).read_text(encoding="utf-8")
            self._key: Any = key
            self._algorithms = config.algorithms or ["RS256", "ES256"]
        else:
            self._key = config.jwt_secret
            self._algorithms = config.algorithms or ["HS256"]
        self._audience = config.audience
        self._issuer = config.issuer

    def __call__(self, token: str | None, info: ConnectionInfo) -> dict[str, Any]:
        if not token:
            raise AuthError("missing token: send Authorization: Bearer <jwt> or ?token=<jwt>")
        jwt = self._jwt
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as exc:
            # InvalidTokenError, and InvalidKeyError too: a token of an accepted algorithm
            # the key cannot verify (an ES256 token for an RSA key) is refused, never a
            # crash. PyJWT's messages name the failed check and never echo the key.
            raise AuthError(f"invalid token: {exc}") from None


async def authenticate(verifier: Verifier, info: ConnectionInfo) -> ConnectionInfo:
    """Run ``verifier`` and return ``info`` with ``user_id`` and ``claims`` filled in."""
    result = verifier(bearer_token(info), info)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, dict):
        user = result.get("sub")
        claims = result
    else:
        user, claims = result, None
    if not user or not isinstance(user, str):
        raise AuthError("token has no subject")
    info.user_id = user
    info.claims = claims
    return info


def origin_allowed(allowed: list[str], origin: str | None) -> bool:
    """Whether a handshake from ``origin`` may proceed.

    An empty allow-list allows every origin (documented: set one in production). A request
    without ``Origin`` is not from a browser page, so cross-site hijacking does not apply.
    """
    if not allowed or origin is None:
        return True
    origin = origin.rstrip("/").lower()
    return any(origin == a.rstrip("/").lower() for a in allowed) or "*" in allowed
