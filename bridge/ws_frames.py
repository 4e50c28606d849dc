"""WebSocket text frames written as bytes, for a server connection with no extension.

Pure: payloads in, the bytes of their frames out (RFC 6455, section 5.2). A server's frames
are not masked, so a frame is a header that depends only on the payload's length, then the
payload itself. Framing a burst of payloads this way and writing the result once costs a
table lookup per frame; going through ``websockets``' protocol object costs a ``Frame``, its
``serialize()`` and a ``transport.write`` per frame, which was the front's largest cost at
1,000 clients (bench/fanout.py).

A connection that negotiated an extension (per-message deflate) must not get these: its
frames are compressed with its own compressor state, by ``websockets``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

__all__ = ["text_frame_header", "text_frames"]

_FIN_TEXT = 0x81  # FIN bit, opcode 1 (text)
# headers of payloads up to 125 bytes: one byte of length, the common case of small updates
_SHORT = tuple(bytes((_FIN_TEXT, n)) for n in range(126))
_MEDIUM = struct.Struct("!BBH").pack  # 126..65535 bytes: a 16-bit length after the marker 126


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, unfragmented text frame carrying ``length`` bytes."""
    if length < 126:
        return _SHORT[length]
    if length < 0x10000:
        return _MEDIUM(_FIN_TEXT, 126, length)
    return b"\x81\x7f" + length.to_bytes(8, "big")


def text_frames(payloads: Iterable[bytes]) -> bytes:
    """The frames of ``payloads`` (UTF-8 text) one after another, as one buffer to write."""
    parts: list[bytes] = []
    append = parts.append
    short, medium = _SHORT, _MEDIUM
    for payload in payloads:
        n = len(payload)
        if n < 126:
            append(short[n])
        elif n < 0x10000:
            append(medium(_FIN_TEXT, 126, n))
        else:
            append(text_frame_header(n))
        append(payload)
    return b"".join(parts)


def batch_frame(frames: list[bytes], timestamp: str) -> bytes:
    """The ``batch`` envelope of clients that asked for ``"batch": true``: the frames as they
    are (already JSON), not parsed and re-serialised."""
    head = b'{"type":"batch","messages":['
    return head + b",".join(frames) + b'],"timestamp":"' + timestamp.encode() + b'"}'
