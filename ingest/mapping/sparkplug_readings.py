"""Sparkplug B metrics to readings (pure): names, values by datatype, timestamps.

The rules are documented in :mod:`ingest.mapping.sparkplug`; this module applies them to one
decoded payload, using the metric definitions of the edge node's births.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.mapping import sparkplug_proto as proto
from ingest.mapping.api import Entries
from ingest.mapping.sparkplug_state import MetricDef, NodeState
from ingest.payload import MAX_UNIT_LENGTH, PayloadError
from ingest.storable import text_problem
from storage import names

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The protocol's own metrics: bookkeeping and commands, not measurements.
PROTOCOL_METRICS = frozenset({"bdSeq"})
PROTOCOL_FOLDERS = ("Node Control/", "Device Control/")
UNIT_PROPERTIES = ("engUnit", "engUnits")
_SIGNED_BITS = {proto.INT8: 8, proto.INT16: 16, proto.INT32: 32, proto.INT64: 64}
_UNSIGNED = frozenset({proto.UINT8, proto.UINT16, proto.UINT32, proto.UINT64})
# Sparkplug names seen, mapped to their metric names (None: not storable); bounded.
_NAMES: dict[str, str | None] = {}
_NAMES_MAX = 10_000


def metric_name(name: str) -> str | None:
    """The bridge metric name for a Sparkplug metric name: folders ``/`` become ``.`` and
    spaces ``_``; None when the result is not a valid metric name or the metric is the
    protocol's own (``bdSeq``, ``Node Control/...``)."""
    found = _NAMES.get(name, "")
    if found != "":
        return found
    mapped: str | None = name.replace("/", ".").replace(" ", "_")
    if name in PROTOCOL_METRICS or name.startswith(PROTOCOL_FOLDERS) or not names.is_metric(mapped):
        mapped = None
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = mapped
    return mapped


def _unit(metric: Any) -> str | None:
    if not metric.HasField("properties"):
        return None
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key in UNIT_PROPERTIES and value.WhichOneof("value") == "string_value":
            unit = value.string_value
            if 0 < len(unit) <= MAX_UNIT_LENGTH and text_problem(unit) is None:
                return str(unit)
    return None


def definition(metric: Any) -> MetricDef:
    """What a birth says of one metric."""
    return MetricDef(
        name=metric.name,
        metric=metric_name(metric.name),
        datatype=metric.datatype,
        unit=_unit(metric),
    )


def ms_to_datetime(ms: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise PayloadError(
            "timestamp_out_of_range", f"timestamp {ms} ms is not a representable time"
        ) from None


def number(metric: Any, datatype: int) -> float | str:
    """The metric's value as a float, or why it is not stored (a short word for the note)."""
    kind = metric.WhichOneof("value")
    if kind == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    if kind == "float_value" or kind == "double_value":
        value = getattr(metric, kind)
        return float(value) if math.isfinite(value) else "non-finite"
    if kind == "int_value" or kind == "long_value":
        raw = getattr(metric, kind)
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:
            # Two's complement in the unsigned field: an Int8 -5 arrives as 251 from some
            # encoders and as 4294967291 from others; the low bits say the same.
            raw &= (1 << bits) - 1
            return float(raw - (1 << bits) if raw >> (bits - 1) else raw)
        if datatype in _UNSIGNED:
            return float(raw)
        return proto.DATATYPE_NAMES.get(datatype, "unknown datatype") if datatype else "untyped"
    if kind is None:
        return "no value"
    return proto.DATATYPE_NAMES.get(datatype) or kind.removesuffix("_value")


@dataclass(slots=True)
class Converted:
    entries: Entries = field(default_factory=list)
    count: int = 0
    skipped: int = 0
    why_skipped: Counter[str] = field(default_factory=Counter)
    unknown_aliases: list[int] = field(default_factory=list)

    def describe_skipped(self) -> str:
        return ", ".join(f"{n} {why}" for why, n in sorted(self.why_skipped.items()))


def convert(node: NodeState, device: str, message: Any, received: datetime) -> Converted:
    """The payload's metrics as entries [(ts, {metric: (value, unit)})], grouped by time."""
    out = Converted()
    by_ts: dict[int | None, dict[str, tuple[float, str | None]]] = {}
    payload_ts = message.timestamp if message.HasField("timestamp") else None
    for metric in message.metrics:
        if metric.name:  # some encoders send an empty name next to the alias
            found = node.lookup(device, metric.name)
            if found is None and metric.HasField("alias"):
                found = node.lookup(device, metric.alias)
            name = found.metric if found is not None else metric_name(metric.name)
            if name is None and metric.name not in PROTOCOL_METRICS:
                if not metric.name.startswith(PROTOCOL_FOLDERS):
                    _skip(out, f"invalid name {names.safe_excerpt(metric.name, 40)}")
                continue
        elif metric.HasField("alias"):
            found = node.lookup(device, metric.alias)
            if found is None:
                out.unknown_aliases.append(metric.alias)
                continue
            name = found.metric
            if name is None:
                out.skipped += 1
                continue
        else:
            _skip(out, "without name or alias")
            continue
        if name is None:
            continue  # bdSeq and the like
        if metric.is_null:
            out.skipped += 1  # a value not known yet: normal, not worth a note
            continue
        if metric.is_transient:
            _skip(out, "transient")
            continue
        if metric.HasField("datatype"):
            datatype = metric.datatype
        else:
            datatype = found.datatype if found is not None else 0
        value = number(metric, datatype)
        if isinstance(value, str):
            _skip(out, value)
            continue
        ts = metric.timestamp if metric.HasField("timestamp") else payload_ts
        values = by_ts.get(ts)
        if values is None:
            values = by_ts[ts] = {}
        values[name] = (value, found.unit if found is not None else None)
    for ts, values in by_ts.items():
        at = received if ts is None else ms_to_datetime(ts)
        out.entries.append((at, values))
        out.count += len(values)
    return out


def _skip(out: Converted, why: str) -> None:
    out.skipped += 1
    out.why_skipped[why] += 1
