"""The contract between the ingest and a mapping (no I/O).

The ingest subscribes to every enabled mapping's :attr:`Mapping.filter` (shared when the
ingest is), asks :meth:`MappingSet.route` which mapping a message's topic belongs to, and calls
its :meth:`Mapping.extract`. What comes back is stored exactly like a message in the bridge's
own format: readings idempotent on (device, metric, ts), acknowledged after commit; a
:class:`~ingest.payload.PayloadError` dead-letters the message with its reason, never mangling
it into another device's data.
"""

from __future__ import annotations

from collections.abc import Mapping as ReadOnly
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# What one message yields for one device, in the shape ingest/payload.py's parse_entries
# returns: [(ts, {metric: (value, unit)})]. ts is the device's own time when the payload has
# one, else the receive time handed to extract().
Entries = list[tuple[datetime, dict[str, tuple[float, str | None]]]]


@dataclass(frozen=True, slots=True)
class DeviceReadings:
    device_id: str  # validated with ingest.names.is_device_id before it is returned
    entries: Entries


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A status the device's firmware reports (Sparkplug birth/death, an LWT): stored like
    ``devices/{id}/status``."""

    device_id: str
    status: str  # "online" | "offline"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Extracted:
    readings: Sequence[DeviceReadings] = ()
    statuses: Sequence[DeviceStatus] = ()
    # facts worth a log line or a metric, not a dead letter (a Sparkplug sequence gap)
    notes: Sequence[str] = field(default_factory=tuple)


class Mapping(Protocol):
    """One topic pattern and how to read its payloads."""

    name: str  # unique within a MappingSet; shown in logs, metrics labels and dead letters
    filter: str  # the MQTT subscription filter covering the pattern (e.g. "tele/+/SENSOR")

    def match(self, topic: str) -> ReadOnly[str, str] | None:
        """The named levels of ``topic`` ({"device": "kitchen"}), or None if not this one's."""
        ...

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        """What the message says. Raises ingest.payload.PayloadError (with a stable reason
        code) for a message that can never be stored."""
        ...
