"""Frames written as bytes equal those websockets itself builds for a server connection."""

import pytest
from websockets.frames import Frame, Opcode

from bridge.ws_frames import text_frame_header, text_frames


def _by_websockets(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000])
def test_one_frame_matches_websockets(length: int) -> None:
    payload = b"x" * length
    assert text_frames([payload]) == _by_websockets(payload)
    assert text_frame_header(length) + payload == _by_websockets(payload)


def test_a_burst_is_the_frames_in_order() -> None:
    payloads = [b'{"a":1}', b"y" * 200, b"", b"z" * 70000]
    assert text_frames(payloads) == b"".join(_by_websockets(p) for p in payloads)


def test_nothing_to_write_is_empty() -> None:
    assert text_frames([]) == b""
