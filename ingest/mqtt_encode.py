"""MQTT 3.1.1 / 5 packets a client sends, as bytes (no I/O). Section numbers refer to the
MQTT 5.0 standard; ingest/mqtt_packets.py decodes what comes back and re-exports these."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "DISCONNECT",
    "PINGREQ",
    "PINGRESP",
    "connect",
    "mqtt_string",
    "puback",
    "publish",
    "publish_many",
    "subscribe",
    "unsubscribe",
    "varint",
]

_SMALL = [bytes((i,)) for i in range(128)]  # one-byte varints, the common remaining lengths

PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
# Normal disconnection: 3.1.1's DISCONNECT, and MQTT 5's with reason 0 and no properties
# (a remaining length of 0 means exactly that, section 3.14.2.1).
DISCONNECT = b"\xe0\x00"


def varint(n: int) -> bytes:
    """Variable Byte Integer (section 1.5.5): 7 bits a byte, least significant first."""
    if n < 128:
        if n < 0:
            raise ValueError("a variable byte integer is not negative")
        return _SMALL[n]
    if n > 268_435_455:
        raise ValueError("a variable byte integer has at most 4 bytes")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def mqtt_string(data: bytes) -> bytes:
    """A length-prefixed string or binary (section 1.5.4)."""
    if len(data) > 0xFFFF:
        raise ValueError("an MQTT string has at most 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect(
    client_id: str,
    *,
    v5: bool,
    clean_start: bool = True,
    keepalive: int = 30,
    username: str | None = None,
    password: str | None = None,
    session_expiry_s: int = 0,
    receive_maximum: int = 65535,
) -> bytes:
    """CONNECT (section 3.1). For 3.1.1, ``clean_start`` is its Clean Session flag and the
    v5 properties are left out."""
    flags = 0x02 if clean_start else 0
    if username is not None:
        flags |= 0x80
        if password is not None:
            flags |= 0x40
    variable = mqtt_string(b"MQTT") + bytes((5 if v5 else 4, flags)) + keepalive.to_bytes(2, "big")
    if v5:
        props = b""
        if session_expiry_s:
            props += b"\x11" + session_expiry_s.to_bytes(4, "big")
        if receive_maximum != 65535:  # 65535 is the default (section 3.1.2.11.3)
            props += b"\x21" + receive_maximum.to_bytes(2, "big")
        variable += varint(len(props)) + props
    payload = mqtt_string(client_id.encode())
    if username is not None:
        payload += mqtt_string(username.encode())
        if password is not None:
            payload += mqtt_string(password.encode())
    return _packet(0x10, variable + payload)


def subscribe(
    packet_id: int,
    filters: Sequence[str],
    *,
    v5: bool,
    qos: int = 0,
    no_local: bool = False,
    retain_as_published: bool = False,
    retain_handling: int = 0,
    subscription_id: int = 0,
) -> bytes:
    """SUBSCRIBE (section 3.8): every filter with the same options; ``subscription_id`` (0:
    none) names the subscriptions in the copies the broker sends for them (section 3.8.2.1.2).
    3.1.1 has only the QoS bits of the options byte."""
    if not filters:
        raise ValueError("SUBSCRIBE needs at least one filter")
    options = qos
    if v5:
        options |= (no_local << 2) | (retain_as_published << 3) | (retain_handling << 4)
        props = b"\x0b" + varint(subscription_id) if subscription_id else b""
        head = packet_id.to_bytes(2, "big") + varint(len(props)) + props
    else:
        head = packet_id.to_bytes(2, "big")
    option = bytes((options,))
    body = head + b"".join(mqtt_string(f.encode()) + option for f in filters)
    return _packet(0x82, body)


def unsubscribe(packet_id: int, filters: Sequence[str], *, v5: bool) -> bytes:
    """UNSUBSCRIBE (section 3.10)."""
    if not filters:
        raise ValueError("UNSUBSCRIBE needs at least one filter")
    head = packet_id.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    return _packet(0xA2, head + b"".join(mqtt_string(f.encode()) for f in filters))


def publish(
    topic: str | bytes,
    payload: bytes,
    *,
    v5: bool,
    qos: int = 0,
    retain: bool = False,
    packet_id: int = 0,
    dup: bool = False,
) -> bytes:
    """PUBLISH (section 3.3); ``packet_id`` only for QoS 1 and 2."""
    name = topic.encode() if isinstance(topic, str) else topic
    if qos and not packet_id:
        raise ValueError("a QoS 1 or 2 PUBLISH needs a packet id")
    first = 0x30 | (dup << 3) | (qos << 1) | retain
    pid = packet_id.to_bytes(2, "big") if qos else b""
    props = b"\x00" if v5 else b""
    size = 2 + len(name) + len(pid) + len(props) + len(payload)
    return b"".join(
        (bytes((first,)), varint(size), len(name).to_bytes(2, "big"), name, pid, props, payload)
    )


def publish_many(
    items: Iterable[tuple[str, bytes]], *, v5: bool, retain: bool = False
) -> tuple[bytes, int]:
    """Many QoS 0 PUBLISH packets framed into one bytes for one write: (bytes, how many)."""
    first = _SMALL[0x31 if retain else 0x30]
    extra = 3 if v5 else 2  # topic length field, and the empty property list of MQTT 5
    props = b"\x00" if v5 else b""
    parts: list[bytes] = []
    add = parts.append
    n = 0
    for topic, payload in items:
        name = topic.encode()
        tlen = len(name)
        size = extra + tlen + len(payload)
        add(first)
        add(_SMALL[size] if size < 128 else varint(size))
        add(tlen.to_bytes(2, "big"))
        add(name)
        if v5:
            add(props)
        add(payload)
        n += 1
    return b"".join(parts), n


def puback(packet_id: int) -> bytes:
    """PUBACK with success: the same four bytes in 3.1.1 and 5 (section 3.4.2.1)."""
    return b"\x40\x02" + packet_id.to_bytes(2, "big")
