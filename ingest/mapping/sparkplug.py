"""Eclipse Sparkplug B as a mapping: ``spBv1.0/{group}/{type}/{edge}[/{device}]`` (pure).

What a Sparkplug host application must do, done for the bridge (Sparkplug 3.0):

- Payloads are the specification's protobuf ``Payload`` (:mod:`.sparkplug_proto`).
- NBIRTH/DBIRTH define each metric's name, alias and datatype; NDATA/DDATA may name a metric
  by alias only, resolved from the birth. An alias without a birth seen (a bridge restart, an
  evicted node) dead-letters the message ``sparkplug_unknown_alias``: the edge node has to be
  born again. The bridge does not publish NCMD ``Node Control/Rebirth`` (it has no command
  path to devices); an operator restarts the edge node or asks it for a rebirth.
- Statuses: NBIRTH edge node online; NDEATH the edge node and every device of it offline;
  DBIRTH/DDEATH the device online/offline. An NDEATH whose ``bdSeq`` metric differs from the
  current NBIRTH's is stale (the broker sent the Will of an older session) and ignored. An
  NDEATH for a node whose birth was not seen cannot be checked and is taken as true.
- ``seq`` (0-255, wrapping) per edge node across NBIRTH, NDATA, DBIRTH, DDATA and DDEATH: a
  gap is a note and counted in :class:`~.sparkplug_state.Stats`, the message is still stored.
- STATE messages (``spBv1.0/STATE/...``) and commands (NCMD/DCMD) carry no readings: ignored.

Readings: every metric with a number becomes one: Int8..UInt64 (signed by datatype), Float,
Double, Boolean as 1/0, at the metric's timestamp, else the payload's, else the receive time
(milliseconds since the epoch, UTC); historical metrics keep their own timestamp. Not stored
(counted in ``Stats.skipped_metrics``; in a birth also named in a note): null values, transient
metrics (the spec says a host does not historize them), strings, bytes, datasets, templates,
DateTime, arrays, non-finite floats, names that cannot be a metric name, and the protocol's
own ``bdSeq`` and ``Node Control/...`` metrics. A metric's unit is its birth's ``engUnit``
property (the name Ignition and Tahu use), when there is one.

Metric names: Sparkplug folders ``/`` become ``.`` and spaces ``_``; the result must be a
valid metric name (ingest/names.py: letter or ``_`` first, ``A-Za-z0-9_.-``, at most 64), else
the metric is skipped and named in a note, never renamed further.

Device ids: ``{edge}`` for node messages, ``{edge}:{device}`` for device messages (option
``include_group`` prefixes ``{group}:``; ``separator`` may be one of ``: . _ -``). A level that
contains the separator, or an id that is not a valid device id, is dead-lettered
``invalid_device_id`` naming the topic levels: ``a.b`` + ``c`` and ``a`` + ``b.c`` must never
become the same device.

The state is per mapping and per process: all messages of one edge node must reach the same
ingest, in order. With several ingests on a shared subscription, give each its own groups
(option ``groups``: one mapping per group, each with its own filter) or subscribe Sparkplug
without sharing in one ingest; readings stored twice are idempotent anyway.
"""

from __future__ import annotations

from collections.abc import Mapping as ReadOnly
from datetime import datetime
from typing import Annotated, Any, Literal

from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ingest.mapping import sparkplug_proto as proto
from ingest.mapping.api import DeviceReadings, DeviceStatus, Extracted, Mapping
from ingest.mapping.sparkplug_readings import Converted, convert, definition
from ingest.mapping.sparkplug_state import (
    DEFAULT_MAX_DEVICES,
    DEFAULT_MAX_METRICS,
    DEFAULT_MAX_NODES,
    HostState,
    MetricDef,
    NodeState,
)
from ingest.payload import MAX_READINGS, PayloadError
from storage import names

NAMESPACE = "spBv1.0"
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA"})
IGNORED_TYPES = frozenset({"NCMD", "DCMD"})
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024  # births of large nodes are big; mosquitto allows more
_EMPTY = Extracted()

GroupId = Annotated[str, StringConstraints(pattern=f"^{names.PREFIX_LEVEL_PATTERN}$")]


class SparkplugOptions(BaseModel):
    """The ``sparkplug_b`` profile's options (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    groups: tuple[GroupId, ...] = ()  # empty: every group, one mapping on spBv1.0/#
    include_group: bool = False  # device id {group}:{edge}[:{device}]
    separator: Literal[":", ".", "_", "-"] = ":"
    max_edge_nodes: int = Field(default=DEFAULT_MAX_NODES, ge=1, le=1_000_000)
    max_metrics_per_node: int = Field(default=DEFAULT_MAX_METRICS, ge=1, le=1_000_000)
    max_devices_per_node: int = Field(default=DEFAULT_MAX_DEVICES, ge=1, le=1_000_000)
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1024, le=256 * 1024 * 1024)


class SparkplugMapping:
    """One Sparkplug B host view: every group, or one group when ``group`` is given."""

    # Births define the aliases and the bdSeq that later messages are read with, so every
    # ingest must see every message of an edge node: its filter is never a shared
    # subscription (ingest/mapping_loop.py). Two ingests then store the same readings,
    # which the (device, metric, ts) key keeps to one row each.
    stateful = True

    def __init__(self, options: SparkplugOptions | None = None, group: str | None = None) -> None:
        self.options = options or SparkplugOptions()
        self.group = group
        self.name = "sparkplug_b" if group is None else f"sparkplug_b.{group}"
        self.filter = f"{NAMESPACE}/#" if group is None else f"{NAMESPACE}/{group}/#"
        self.state = HostState(
            max_nodes=self.options.max_edge_nodes,
            max_metrics=self.options.max_metrics_per_node,
            max_devices=self.options.max_devices_per_node,
        )
        self.stats = self.state.stats

    # -- Mapping ----------------------------------------------------------------------------
    def match(self, topic: str) -> ReadOnly[str, str] | None:
        parts = topic.split("/")
        if parts[0] != NAMESPACE or len(parts) < 2:
            return None
        if self.group is not None and parts[1] != self.group:
            return None
        keys = ("group", "type", "edge", "device")
        return dict(zip(keys, parts[1:5], strict=False))

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        parts = topic.split("/")
        if parts[0] != NAMESPACE or len(parts) < 2:
            raise PayloadError(
                "sparkplug_invalid_topic", f"not a Sparkplug B topic: {names.safe_excerpt(topic)}"
            )
        if parts[1] == "STATE" or (len(parts) > 2 and parts[2] in IGNORED_TYPES):
            return _EMPTY
        kind = parts[2] if len(parts) > 2 else ""
        levels = 4 if kind in NODE_TYPES else 5 if kind in DEVICE_TYPES else 0
        if len(parts) != levels:
            raise PayloadError(
                "sparkplug_invalid_topic",
                f"{names.safe_excerpt(topic, 120)} is not spBv1.0/group/NBIRTH|NDEATH|NDATA/edge"
                " or spBv1.0/group/DBIRTH|DDEATH|DDATA/edge/device",
            )
        group, edge = parts[1], parts[3]
        device = parts[4] if levels == 5 else ""
        node_id = self._device_id(group, edge, "")
        device_id = self._device_id(group, edge, device) if device else node_id
        if len(payload) > self.options.max_payload_bytes:
            raise PayloadError(
                "payload_too_large",
                f"payload of {len(payload)} bytes exceeds {self.options.max_payload_bytes} bytes",
            )
        try:
            message = proto.Payload.FromString(payload)
        except DecodeError as exc:
            raise PayloadError(
                "sparkplug_invalid_payload", f"not a Sparkplug B protobuf payload: {exc}"
            ) from None
        where = names.safe_excerpt("/".join(parts[1:2] + parts[3:]), 200)
        if kind == "NBIRTH":
            return self._nbirth(group, edge, node_id, message, received, where)
        if kind == "NDEATH":
            return self._ndeath(group, edge, node_id, message, where)
        # Only a birth creates state: data from a node never born must not evict one that was.
        found = self.state.node(group, edge) if kind == "DBIRTH" else self.state.get(group, edge)
        node = found if found is not None else NodeState()
        notes = self._seq(node, message, kind, where)
        if kind == "DBIRTH":
            node.forget_device(device)
            self._define(node, device, message)
            node.device_online(device)
            out = self._readings(node, device, message, received, where, birth=True)
            return _with(
                out, device_id, where, notes, [DeviceStatus(device_id, "online", "DBIRTH")]
            )
        if kind == "DDEATH":
            node.device_offline(device)
            node.forget_device(device)
            return Extracted(statuses=[DeviceStatus(device_id, "offline", "DDEATH")], notes=notes)
        out = self._readings(node, device, message, received, where, birth=False)
        return _with(out, device_id, where, notes, [])

    # -- message kinds ----------------------------------------------------------------------
    def _nbirth(
        self, group: str, edge: str, node_id: str, message: Any, received: datetime, where: str
    ) -> Extracted:
        node = self.state.born(group, edge)
        node.bd_seq = _bd_seq(message)
        node.seq = message.seq if message.HasField("seq") else None
        notes = [] if node.bd_seq is not None else [f"sparkplug {where}: NBIRTH without bdSeq"]
        self._define(node, "", message)
        out = self._readings(node, "", message, received, where, birth=True)
        return _with(out, node_id, where, notes, [DeviceStatus(node_id, "online", "NBIRTH")])

    def _ndeath(self, group: str, edge: str, node_id: str, message: Any, where: str) -> Extracted:
        node = self.state.get(group, edge)
        bd_seq = _bd_seq(message)
        if node is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            self.stats.stale_deaths += 1
            return Extracted(
                notes=[
                    f"sparkplug {where}: stale NDEATH ignored (bdSeq {bd_seq}, current"
                    f" NBIRTH bdSeq {node.bd_seq})"
                ]
            )
        sep = self.options.separator
        statuses = [DeviceStatus(node_id, "offline", "NDEATH")]
        if node is not None:
            statuses += [
                DeviceStatus(f"{node_id}{sep}{d}", "offline", "NDEATH") for d in node.devices
            ]
        self.state.died(group, edge)
        return Extracted(statuses=statuses)

    def _define(self, node: NodeState, device: str, message: Any) -> None:
        """Record a birth's metric definitions (name, alias, datatype, unit)."""
        for metric in message.metrics:
            if metric.name:
                alias = metric.alias if metric.HasField("alias") else None
                node.define(device, alias, definition(metric), self.stats)

    def _seq(self, node: NodeState, message: Any, kind: str, where: str) -> list[str]:
        seq = message.seq if message.HasField("seq") else None
        expected = node.next_seq(seq)
        if expected is None:
            return []
        self.stats.seq_gaps += 1
        return [f"sparkplug {where}: seq gap in {kind}: expected {expected}, got {seq}"]

    def _readings(
        self,
        node: NodeState,
        device: str,
        message: Any,
        received: datetime,
        where: str,
        *,
        birth: bool,
    ) -> Converted:
        converted = convert(node, device, message, received)
        self.stats.skipped_metrics += converted.skipped
        if converted.unknown_aliases:
            self.stats.unknown_aliases += 1
            shown = ", ".join(str(a) for a in converted.unknown_aliases[:5])
            raise PayloadError(
                "sparkplug_unknown_alias",
                f"{where}: metric alias {shown} not defined by a birth certificate seen by the"
                " bridge; the edge node must publish a new NBIRTH/DBIRTH",
            )
        if converted.count > MAX_READINGS:
            raise PayloadError(
                "too_many_readings",
                f"{converted.count} readings exceed the limit of {MAX_READINGS}",
            )
        if not birth:
            converted.why_skipped.clear()  # the birth named them already: no note per message
        return converted

    def _device_id(self, group: str, edge: str, device: str) -> str:
        sep = self.options.separator
        levels = [("group", group)] if self.options.include_group else []
        levels.append(("edge node", edge))
        if device:
            levels.append(("device", device))
        for what, level in levels:
            if sep in level:
                raise PayloadError(
                    "invalid_device_id",
                    f"Sparkplug {what} id {names.safe_excerpt(level, 70)} contains the"
                    f" separator {sep!r} of the bridge's device ids (it would be ambiguous)",
                )
        candidate = sep.join(level for _, level in levels)
        if not names.is_device_id(candidate):
            raise PayloadError(
                "invalid_device_id",
                f"Sparkplug {' + '.join(w for w, _ in levels)} id"
                f" {names.safe_excerpt(candidate, 70)} is not a valid device id: expected"
                " 1-64 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit",
            )
        return candidate


def _bd_seq(message: Any) -> int | None:
    for metric in message.metrics:
        if metric.name == "bdSeq":
            kind = metric.WhichOneof("value")
            if kind in ("int_value", "long_value"):
                return int(getattr(metric, kind))
    return None


def _with(
    out: Converted, device_id: str, where: str, notes: list[str], statuses: list[DeviceStatus]
) -> Extracted:
    if out.why_skipped:
        notes = [*notes, f"sparkplug {where}: not stored: {out.describe_skipped()}"]
    readings = [DeviceReadings(device_id, out.entries)] if out.entries else []
    return Extracted(readings=readings, statuses=statuses, notes=notes)


def sparkplug_profile(options: dict[str, Any]) -> list[Mapping]:
    """The built-in profile ``sparkplug_b``: one mapping on ``spBv1.0/#``, or one per group
    listed in ``options["groups"]``. Raises pydantic's ValidationError for a bad option."""
    parsed = SparkplugOptions.model_validate(options)
    if not parsed.groups:
        return [SparkplugMapping(parsed)]
    return [SparkplugMapping(parsed, group) for group in dict.fromkeys(parsed.groups)]


__all__ = [
    "NAMESPACE",
    "MetricDef",
    "SparkplugMapping",
    "SparkplugOptions",
    "sparkplug_profile",
]
