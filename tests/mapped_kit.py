"""Small mappings of our own for the ingest's tests and benchmark (ingest/mapped.py's seam).

They stand in for the mapping engine's built-in profiles: just enough of Tasmota's shapes
(``tele/<device>/SENSOR`` JSON with a local ``Time``, ``tele/<device>/LWT`` Online/Offline) and
of ESPHome's bare numbers to exercise everything the ingest does with a mapping's output.
"""

from __future__ import annotations

from collections.abc import Mapping as ReadOnly
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.mapping.api import DeviceReadings, DeviceStatus, Entries, Extracted, Mapping
from ingest.mapping_source import MappingEntry, MappingError
from ingest.payload import PayloadError
from storage import names


class Pattern:
    """``tele/{device}/SENSOR``-style topic patterns: ``{name}`` levels and literals."""

    def __init__(self, pattern: str) -> None:
        self.levels = pattern.split("/")
        self.filter = "/".join("+" if lv.startswith("{") else lv for lv in self.levels)

    def match(self, topic: str) -> ReadOnly[str, str] | None:
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        found = {}
        for want, got in zip(self.levels, parts, strict=True):
            if want.startswith("{"):
                found[want[1:-1]] = got
            elif want != got:
                return None
        return found


def _device(levels: ReadOnly[str, str]) -> str:
    device = levels["device"]
    if not names.is_device_id(device):
        raise PayloadError(
            "invalid_device_id",
            f"topic level device {names.safe_excerpt(device)} is not a valid device id",
        )
    return device


def _leaves(doc: Any, prefix: str, out: dict[str, tuple[float, str | None]]) -> None:
    if isinstance(doc, dict):
        for key, value in doc.items():
            _leaves(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        out[prefix] = (float(doc), None)


class TeleSensor:
    """Tasmota-like SENSOR JSON: every numeric leaf flattened with ``.``, ``Time`` as the ts."""

    def __init__(self, name: str = "tele_sensor", pattern: str = "tele/{device}/SENSOR") -> None:
        self.name = name
        self._pattern = Pattern(pattern)
        self.filter = self._pattern.filter

    def match(self, topic: str) -> ReadOnly[str, str] | None:
        return self._pattern.match(topic)

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        levels = self.match(topic)
        assert levels is not None
        device = _device(levels)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError("invalid_json", f"not UTF-8 JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise PayloadError("invalid_shape", "a SENSOR payload is a JSON object")
        at = received
        if isinstance(doc.get("Time"), str):
            at = datetime.fromisoformat(doc["Time"]).replace(tzinfo=UTC)
        values: dict[str, tuple[float, str | None]] = {}
        _leaves({k: v for k, v in doc.items() if k != "Time"}, "", values)
        entries: Entries = [(at, values)] if values else []
        notes = ("no numeric value",) if not values else ()
        return Extracted(readings=[DeviceReadings(device, entries)], notes=notes)


class Lwt:
    """Tasmota-like ``tele/<device>/LWT``: ``Online`` / ``Offline`` as the device's status."""

    def __init__(self, name: str = "tele_lwt") -> None:
        self.name = name
        self._pattern = Pattern("tele/{device}/LWT")
        self.filter = self._pattern.filter

    def match(self, topic: str) -> ReadOnly[str, str] | None:
        return self._pattern.match(topic)

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        levels = self.match(topic)
        assert levels is not None
        status = payload.decode("utf-8", "replace").strip().lower()
        if status not in ("online", "offline"):
            raise PayloadError("validation_error", "an LWT is Online or Offline")
        return Extracted(statuses=[DeviceStatus(_device(levels), status, "LWT")])


class BareNumber:
    """ESPHome-like ``<node>/sensor/<metric>/state`` with a bare number."""

    def __init__(self, name: str = "bare") -> None:
        self.name = name
        self._pattern = Pattern("{device}/sensor/{metric}/state")
        self.filter = self._pattern.filter

    def match(self, topic: str) -> ReadOnly[str, str] | None:
        return self._pattern.match(topic)

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        levels = self.match(topic)
        assert levels is not None
        try:
            value = float(payload)
        except ValueError:
            raise PayloadError("validation_error", "not a number") from None
        entries: Entries = [(received, {levels["metric"]: (value, None)})]
        return Extracted(readings=[DeviceReadings(_device(levels), entries)])


class Broken:
    """A mapping with a bug: it raises what no mapping should."""

    name = "broken"
    filter = "broken/+"

    def match(self, topic: str) -> ReadOnly[str, str] | None:
        return {} if topic.startswith("broken/") else None

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        raise KeyError("a bug")


class Router:
    """A MappingRouter over a list; ``extra_filters`` are subscribed but routed nowhere."""

    def __init__(self, mappings: list[Mapping], extra_filters: tuple[str, ...] = ()) -> None:
        self.mappings = mappings
        self.extra = list(extra_filters)

    def filters(self) -> list[str]:
        return [m.filter for m in self.mappings] + self.extra

    def route(self, topic: str) -> Mapping | None:
        if topic.startswith("devices/"):
            return None
        return next((m for m in self.mappings if m.match(topic) is not None), None)


class ListSource:
    """A MappingSource whose mappings a test changes (``set``) to see the ingest reload."""

    uses_database = False

    def __init__(self, router: Router) -> None:
        self.router = router
        self.version = 0
        self.fail = False

    def set(self, router: Router) -> None:
        self.router = router
        self.version += 1

    async def load(self) -> Router:
        if self.fail:
            raise ValueError("the mappings file is broken")
        return self.router

    def fingerprint(self) -> object:
        return self.version


class KitEngine:
    """A MappingEngine (ingest/mapping_source.py) over the mappings above: profiles by name,
    and a spec ``{topic = "a/{device}/b"}`` read like Tasmota's SENSOR."""

    PROFILES = {"tele_sensor": TeleSensor, "tele_lwt": Lwt, "bare": BareNumber}

    def profiles(self) -> dict[str, str]:
        return {name: f"test profile {name}" for name in self.PROFILES}

    def build(self, entries: Sequence[MappingEntry]) -> Router:
        mappings: list[Mapping] = []
        for e in entries:
            if e.profile is not None:
                if e.profile not in self.PROFILES:
                    raise MappingError(f"mapping {e.name}: no profile {e.profile}")
                mappings.append(self.PROFILES[e.profile](e.name))
            elif e.spec is not None and isinstance(e.spec.get("topic"), str):
                mappings.append(TeleSensor(e.name, e.spec["topic"]))
            else:
                raise MappingError(f"mapping {e.name}: a spec needs a topic")
        return Router(mappings)
