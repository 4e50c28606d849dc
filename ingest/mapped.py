"""Mapped messages in the ingest: the seam to the mapping engine, and the checks that make a
mapping's output exactly as storable as a message in the bridge's own format (pure, no I/O).

The ingest never imports a concrete mapping: it is handed a :class:`MappingSource` whose
``load()`` returns a :class:`MappingRouter` (the engine's ``MappingSet``), at start and on every
reload. Whatever a mapping extracts is checked here again with the rules of ingest/payload.py
(device ids, metric names, finite values, units, the accepted time window, the per-message
limit), so a mapping with a bug can cost a dead letter, never a wrong row or a failed batch.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

from ingest.mapping.api import DeviceReadings, Entries, Extracted, Mapping
from ingest.payload import MAX_READINGS, MAX_UNIT_LENGTH, PayloadError, check_time
from ingest.storable import text_problem
from storage import names


class MappingRouter(Protocol):
    """The enabled mappings (the engine's ``MappingSet``)."""

    def filters(self) -> list[str]:
        """Every MQTT filter to subscribe to (without the deployment prefix)."""
        ...

    def route(self, topic: str) -> Mapping | None:
        """The mapping a topic (without the deployment prefix) belongs to, if any."""
        ...


class MappingSource(Protocol):
    """Where the ingest's mappings come from (bridge/mapping_sources.py assembles the real one
    from ``BRIDGE_MAPPINGS``, ``BRIDGE_MAPPINGS_FILE`` and the ``mappings`` table)."""

    # whether the ``mappings`` table is one of the sources (then the ingest LISTENs for changes)
    uses_database: bool

    async def load(self) -> MappingRouter:
        """A fresh router; raises (with a message for the operator) when a mapping is bad."""
        ...

    def fingerprint(self) -> object:
        """Cheap, checked every few seconds: a change asks for a reload (a file's mtime)."""
        ...


class NoMappings:
    """The router when no mapping is enabled."""

    def filters(self) -> list[str]:
        return []

    def route(self, topic: str) -> Mapping | None:
        return None


# Metric names and units seen valid: checked once, then a set lookup (bounded).
_GOOD_METRICS: set[str] = set()
_GOOD_MAX = 10_000


def checked_readings(
    mapping: Mapping,
    extracted: Extracted,
    received: datetime,
    *,
    max_future: timedelta,
    max_past: timedelta,
) -> tuple[list[DeviceReadings], int]:
    """The readings of ``extracted`` with every value checked, and how many there are.

    Raises :class:`PayloadError` for the whole message on the first problem, as the bridge's
    own format does: a message is stored whole or not at all."""
    out: list[DeviceReadings] = []
    count = 0
    for item in extracted.readings:
        device = item.device_id
        if not names.is_device_id(device):
            raise PayloadError(
                "invalid_device_id",
                f"{names.safe_excerpt(device)} from mapping {mapping.name} is not a valid "
                "device id",
            )
        entries: Entries = []
        for at, values in item.entries:
            check_time(at, received, max_future, max_past)
            for metric, (value, unit) in values.items():
                _check_reading(metric, value, unit)
            count += len(values)
            entries.append((at, values))
        out.append(DeviceReadings(device, entries))
    if count > MAX_READINGS:
        raise PayloadError(
            "too_many_readings", f"{count} readings exceed the limit of {MAX_READINGS}"
        )
    return out, count


def _check_reading(metric: str, value: float, unit: str | None) -> None:
    if metric not in _GOOD_METRICS:
        if not names.is_metric(metric):
            raise PayloadError(
                "validation_error", f"invalid metric name {names.safe_excerpt(metric)}"
            )
        if len(_GOOD_METRICS) < _GOOD_MAX:
            _GOOD_METRICS.add(metric)
    if type(value) is not float and type(value) is not int:
        raise PayloadError("validation_error", f"{metric}: the value is not a number")
    if not math.isfinite(value):
        raise PayloadError("validation_error", f"{metric}: the value is not finite")
    if unit is not None:
        if not isinstance(unit, str) or len(unit) > MAX_UNIT_LENGTH:
            raise PayloadError(
                "validation_error",
                f"{metric}: unit must be text of at most {MAX_UNIT_LENGTH} characters",
            )
        if problem := text_problem(unit):
            raise PayloadError("validation_error", f"{metric}: unit {problem}")


def checked_statuses(extracted: Extracted) -> list[tuple[str, str, str]]:
    """(device, status, reason) of every status in ``extracted``, checked."""
    out = []
    for st in extracted.statuses:
        if not names.is_device_id(st.device_id):
            raise PayloadError(
                "invalid_device_id",
                f"{names.safe_excerpt(st.device_id)} is not a valid device id",
            )
        if st.status not in names.DEVICE_STATUSES:
            raise PayloadError(
                "validation_error", f"unknown status {names.safe_excerpt(st.status)}"
            )
        reason = st.reason or "reported by device"
        if problem := text_problem(reason):
            raise PayloadError("validation_error", f"reason {problem}")
        out.append((st.device_id, st.status, reason[:200]))
    return out
