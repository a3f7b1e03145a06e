"""WebSocket data frames from a server, encoded here for the direct write paths.

The websockets library's Sans-I/O protocol builds every frame through ``send_text``:
a ``Frame`` dataclass, its checks, a loop over the negotiated extensions, a ``struct``
pack and a list of pending writes, about 1.2 us of Python per frame on the benchmark VM.
Once a server connection has no extension (no permessage-deflate) and does not log
frames at debug level, a data frame it sends is its two-to-ten-byte header (RFC 6455,
section 5.2: FIN set, no mask) followed by the payload, and sending one changes nothing
in the protocol's state but its fragmentation flag, which stays clear for a whole
message. :func:`plain_server` tells when that holds; :func:`encode` then writes the
bytes in about 0.2 us.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

__all__ = ["TEXT", "BINARY", "encode", "encode_one", "plain_server"]

#: the first header byte of a final text / binary frame: FIN and the opcode.
TEXT = 0x81
BINARY = 0x82

_SHORT = {first: [bytes((first, n)) for n in range(126)] for first in (TEXT, BINARY)}
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def plain_server(conn: Any) -> bool:
    """True when ``conn`` (a websockets ``Protocol``) is a server's with nothing that
    changes or records a data frame: no extension negotiated, no frame logging.

    Decide once the handshake is done (extensions are negotiated there). A caller that
    writes frames itself still checks, per write, that the connection is open, that no
    fragmented message is under way and that the protocol has no pending ``writes``
    (those go first, through ``data_to_send``).
    """
    from websockets.protocol import Side

    try:  # a websockets release without one of these keeps the protocol's own path
        return (conn.side is Side.SERVER and not conn.extensions and not conn.debug
                and type(conn.writes) is list and conn.expect_continuation_frame is False)
    except AttributeError:
        return False


def encode_one(first: int, frame: bytes) -> bytes:
    """``frame`` (a payload) as one final unmasked data frame; see :func:`encode`."""
    n = len(frame)
    if n < 126:
        return _SHORT[first][n] + frame
    if n < 65536:
        return _MEDIUM(first, 126, n) + frame
    return _LONG(first, 127, n) + frame


def encode(first: int, frames: Sequence[bytes]) -> bytes:
    """``frames`` (payloads) as final unmasked data frames, each its own, concatenated.

    Args:
        first: :data:`TEXT` or :data:`BINARY`.
        frames: the payloads, text already UTF-8.
    """
    if len(frames) == 1:  # the usual case when chunks leave one by one
        return encode_one(first, frames[0])
    short = _SHORT[first]
    out: list[bytes] = []
    for frame in frames:
        n = len(frame)
        if n < 126:
            out.append(short[n])
        elif n < 65536:
            out.append(_MEDIUM(first, 126, n))
        else:
            out.append(_LONG(first, 127, n))
        out.append(frame)
    return b"".join(out)
