"""MQTT 3.1.1 / 5 packets as bytes, and a decoder fed bytes: no I/O, no asyncio. (The
encoders live in ingest/mqtt_encode.py, the packets decoded into in ingest/mqtt_types.py; both
are re-exported here: one codec, one import.)

The asyncio shell (ingest/mqtt.py, ingest/stream.py) only moves bytes in and out of this
module, as the websockets library keeps its protocol sans-I/O. Only what this project sends
and receives is here: a client that connects, subscribes, publishes at QoS 0/1 and receives.

Receiving is the hot path (every reading of the ingest, every delivery of the front), so a
PUBLISH becomes exactly one :class:`Message` whose fields are read straight from the packet:
no property objects, and properties other than Subscription Identifier are skipped by length.
Section numbers below refer to the MQTT 5.0 standard (OASIS, 2019).
"""

from __future__ import annotations

from ingest.mqtt_encode import (
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    connect,
    mqtt_string,
    puback,
    publish,
    publish_many,
    subscribe,
    unsubscribe,
    varint,
)
from ingest.mqtt_types import (
    ConnAck,
    Disconnect,
    Message,
    Packet,
    PingResp,
    ProtocolError,
    PubAck,
    SubAck,
    UnsubAck,
    connack_reason,
)

__all__ = [
    "DISCONNECT",
    "PINGREQ",
    "PINGRESP",
    "ConnAck",
    "Decoder",
    "Disconnect",
    "Message",
    "Packet",
    "PingResp",
    "ProtocolError",
    "PubAck",
    "SubAck",
    "UnsubAck",
    "connack_reason",
    "connect",
    "mqtt_string",
    "puback",
    "publish",
    "publish_many",
    "read_varint",
    "split_packets",
    "subscribe",
    "unsubscribe",
    "varint",
]


# -- decoding ----------------------------------------------------------------------------------
_PING_RESP = PingResp()

# Property identifier -> how its value is laid out (section 2.2.2.2): 1, 2 or 4 fixed bytes;
# "v" a variable byte integer; "s" a length-prefixed string or binary; "p" a string pair.
_PROPERTY_KIND: dict[int, int | str] = {
    0x01: 1, 0x02: 4, 0x03: "s", 0x08: "s", 0x09: "s", 0x0B: "v", 0x11: 4, 0x12: "s",
    0x13: 2, 0x15: "s", 0x16: "s", 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: "s", 0x1C: "s",
    0x1F: "s", 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "p", 0x27: 4,
    0x28: 1, 0x29: 1, 0x2A: 1,
}  # fmt: skip


def read_varint(data: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the variable byte integer at ``pos``."""
    value = shift = 0
    while True:
        if pos >= end:
            raise ProtocolError("truncated variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("variable byte integer longer than 4 bytes")


def _properties(
    data: bytes, pos: int, end: int, *, one: bool = False
) -> tuple[dict[int, int], list[int], int]:
    """Walk a property list: (integer properties by id, subscription identifiers, position
    after the list). Strings and binaries are skipped by their length, never copied. With
    ``one``, read just the property at ``pos`` (no length prefix) and return after it."""
    if one:
        stop = end
    else:
        length, pos = read_varint(data, pos, end)
        stop = pos + length
        if stop > end:
            raise ProtocolError("property length beyond the packet")
    numbers: dict[int, int] = {}
    sids: list[int] = []
    while pos < stop:
        ident = data[pos]
        kind = _PROPERTY_KIND.get(ident)
        pos += 1
        if kind is None:
            raise ProtocolError(f"unknown property 0x{ident:02x}")
        if kind == "v":
            value, pos = read_varint(data, pos, stop)
            if ident == 0x0B:
                if value == 0:
                    raise ProtocolError("subscription identifier 0")
                sids.append(value)
            if one:
                return numbers, sids, pos
            continue
        if kind == "s" or kind == "p":
            for _ in range(1 if kind == "s" else 2):
                if pos + 2 > stop:
                    raise ProtocolError("truncated property")
                pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
            if pos > stop:
                raise ProtocolError("truncated property")
            if one:
                return numbers, sids, pos
            continue
        assert isinstance(kind, int)
        if pos + kind > stop:
            raise ProtocolError("truncated property")
        numbers[ident] = int.from_bytes(data[pos : pos + kind], "big")
        pos += kind
        if one:
            return numbers, sids, pos
    return numbers, sids, stop


def _publish_properties(data: bytes, pos: int, end: int) -> tuple[tuple[int, ...], int]:
    """A PUBLISH's property list: (its subscription identifiers, position after the list).
    Subscription identifiers are all the front receives, so they are read inline; any other
    property goes through the general walk."""
    length, pos = read_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise ProtocolError("property length beyond the packet")
    sids: tuple[int, ...] = ()
    while pos < stop:
        if data[pos] == 0x0B:
            value = data[pos + 1] if pos + 1 < stop else 0x80
            if value < 0x80:
                pos += 2
            else:
                value, pos = read_varint(data, pos + 1, stop)
            if value == 0:
                raise ProtocolError("subscription identifier 0")
            sids += (value,)
        else:
            _, found, pos = _properties(data, pos, stop, one=True)
            sids += tuple(found)
    return sids, stop


def split_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete packet off the front of ``buffer``, undecoded: [(packet type,
    body)]. For tools that look at raw packets (bench/fanout.py's MQTT-over-WebSocket
    clients); the bridge itself uses :class:`Decoder`."""
    packets: list[tuple[int, bytes]] = []
    pos, end = 0, len(buffer)
    while pos + 2 <= end:
        try:
            size, start = read_varint(buffer, pos + 1, end)
        except ProtocolError:
            if end - pos > 5:
                raise
            break  # the remaining length itself is not complete yet
        if start + size > end:
            break
        packets.append((buffer[pos] >> 4, bytes(buffer[start : start + size])))
        pos = start + size
    del buffer[:pos]
    return packets


class Decoder:
    """Incremental: :meth:`feed` takes whatever bytes arrived and returns every packet they
    complete, in order; an incomplete tail waits for the next call."""

    __slots__ = ("_rest", "v5")

    def __init__(self, *, v5: bool) -> None:
        self.v5 = v5
        self._rest = b""

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for more."""
        return len(self._rest)

    def feed(self, data: bytes) -> list[Packet]:
        if self._rest:
            data = self._rest + data
        out: list[Packet] = []
        add = out.append
        end = len(data)
        pos = 0
        v5 = self.v5
        try:
            while pos + 2 <= end:
                first = data[pos]
                # remaining length (section 2.1.4): the one-byte case inline, it is the usual
                size = data[pos + 1]
                start = pos + 2
                if size & 0x80:
                    size, start = read_varint(data, pos + 1, end)
                stop = start + size
                if stop > end:
                    break
                if first & 0xF0 == 0x30:  # PUBLISH, the hot path
                    qos = (first >> 1) & 3
                    tlen = (data[start] << 8) | data[start + 1]
                    at = start + 2 + tlen
                    topic = data[start + 2 : at].decode()
                    mid = 0
                    if qos:
                        if qos == 3:
                            raise ProtocolError("PUBLISH with QoS 3")
                        mid = (data[at] << 8) | data[at + 1]
                        at += 2
                    sids: tuple[int, ...] = ()
                    if v5:
                        if data[at] == 0:  # no properties: the usual case
                            at += 1
                        else:
                            sids, at = _publish_properties(data, at, stop)
                    if at > stop:
                        raise ProtocolError("PUBLISH shorter than its topic")
                    add(
                        Message(
                            topic,
                            data[at:stop],
                            qos,
                            bool(first & 1),
                            mid,
                            sids,
                            bool(first & 8),
                        )
                    )
                else:
                    add(self._control(first, data, start, stop))
                pos = stop
        except IndexError:
            raise ProtocolError("packet shorter than its fields") from None
        except UnicodeDecodeError:
            raise ProtocolError("topic name is not UTF-8") from None
        self._rest = data[pos:] if pos < end else b""
        return out

    def _control(self, first: int, data: bytes, start: int, stop: int) -> Packet:
        kind = first >> 4
        size = stop - start
        v5 = self.v5
        if kind == 2:  # CONNACK, section 3.2
            if size < 2 or first & 0x0F:
                raise ProtocolError("malformed CONNACK")
            sids_ok, keepalive = True, None
            if v5 and size > 2:
                numbers, _, _ = _properties(data, start + 2, stop)
                sids_ok = numbers.get(0x29, 1) == 1
                keepalive = numbers.get(0x13)
            return ConnAck(bool(data[start] & 1), data[start + 1], sids_ok, keepalive)
        if kind in (9, 11):  # SUBACK, UNSUBACK: sections 3.9, 3.11
            if size < 2:
                raise ProtocolError("malformed SUBACK/UNSUBACK")
            pid = (data[start] << 8) | data[start + 1]
            at = start + 2
            if v5:
                _, _, at = _properties(data, at, stop)
            codes = tuple(data[at:stop])
            if kind == 9:
                if not codes:
                    raise ProtocolError("SUBACK without reason codes")
                return SubAck(pid, codes)
            return UnsubAck(pid, codes)
        if kind == 4:  # PUBACK, section 3.4: reason code and properties may be left out
            if size < 2:
                raise ProtocolError("malformed PUBACK")
            return PubAck((data[start] << 8) | data[start + 1], data[start + 2] if size > 2 else 0)
        if kind == 13:  # PINGRESP
            if size:
                raise ProtocolError("malformed PINGRESP")
            return _PING_RESP
        if kind == 14 and v5:  # DISCONNECT from the server, section 3.14
            return Disconnect(data[start] if size else 0)
        raise ProtocolError(f"unexpected packet type {kind} for a client")
