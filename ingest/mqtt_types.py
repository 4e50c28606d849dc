"""The values ingest/mqtt_packets.py's decoder turns bytes into, and the one error it raises.

The clients (ingest/mqtt.py, ingest/stream.py, and bridge/hub.py for the CONNACK) import them
from here; the codec re-exports them for the tests and benchmarks that take the whole codec
from one module. Section numbers refer to the MQTT 5.0 standard (OASIS, 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConnAck",
    "Disconnect",
    "Message",
    "Packet",
    "PingResp",
    "ProtocolError",
    "PubAck",
    "SubAck",
    "UnsubAck",
    "connack_reason",
]


class ProtocolError(ValueError):
    """The peer sent bytes that are not a packet we accept (malformed, or not for a client).

    The only error the decoder raises; the connection that produced it must be closed."""


class Message:
    """A received PUBLISH: what the ingest and the front read, and nothing else.

    ``mid`` is the packet id (0 at QoS 0); ``subscription_ids`` the Subscription Identifiers
    the broker named (an empty tuple when none, as always over 3.1.1)."""

    __slots__ = ("dup", "mid", "payload", "qos", "retain", "subscription_ids", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        mid: int = 0,
        subscription_ids: tuple[int, ...] = (),
        dup: bool = False,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.mid = mid
        self.subscription_ids = subscription_ids
        self.dup = dup

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, payload={self.payload[:40]!r}, qos={self.qos}, "
            f"retain={self.retain}, mid={self.mid}, subscription_ids={self.subscription_ids})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason_code: int
    # from the MQTT 5 properties; a broker that says nothing offers both (section 3.2.2.3)
    subscription_ids_available: bool = True
    server_keepalive: int | None = None


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]  # granted QoS (0-2) or a failure (0x80 and up)


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int
    reason_codes: tuple[int, ...]  # empty over 3.1.1, which has none


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    reason_code: int = 0


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0


Packet = Message | ConnAck | SubAck | UnsubAck | PubAck | PingResp | Disconnect


# CONNACK refusals, for one clear line in the log (sections 3.2.2.2 and 3.1.1's 3.2.2.3).
_REASONS_5 = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}
_REASONS_311 = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def connack_reason(code: int, *, v5: bool) -> str:
    """``"bad user name or password (0x86)"``: a CONNACK reason code in words."""
    words = (_REASONS_5 if v5 else _REASONS_311).get(code, "refused")
    return f"{words} (0x{code:02x})"
