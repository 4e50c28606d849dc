"""What a Sparkplug B host must remember between messages, bounded (no I/O).

Per edge node (``group``/``edge``): the ``bdSeq`` of its current NBIRTH (an NDEATH with another
one is stale), the last ``seq`` (0-255, wrapping; a gap is noted), the metric definitions its
NBIRTH and DBIRTHs announced (name, datatype, unit; found by alias or by name) and which of its
devices are online (an NDEATH takes them all offline).

Every table is bounded and evicts the least recently used entry: at most ``max_nodes`` edge
nodes, ``max_metrics`` metric definitions and ``max_devices`` online devices per edge node. What
an eviction forgets shows up as it would after a restart of the bridge: a later NDATA/DDATA by
alias is dead-lettered ``sparkplug_unknown_alias`` until the node is born again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

DEFAULT_MAX_NODES = 4096
DEFAULT_MAX_METRICS = 4096
DEFAULT_MAX_DEVICES = 1024

# A metric definition is found by (device, alias) when the birth gave an alias, else by
# (device, name); device "" is the edge node itself.
Key = tuple[str, int | str]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric as its birth certificate announced it."""

    name: str  # the Sparkplug name, as sent
    metric: str | None  # its bridge metric name; None when not stored (see sparkplug.py)
    datatype: int
    unit: str | None = None


@dataclass(slots=True)
class Stats:
    """Plain counters for a scrape-time collector: cheap to bump on the hot path."""

    seq_gaps: int = 0
    stale_deaths: int = 0
    unknown_aliases: int = 0
    skipped_metrics: int = 0
    evicted_nodes: int = 0
    evicted_metrics: int = 0


@dataclass(slots=True)
class NodeState:
    bd_seq: int | None = None
    seq: int | None = None
    max_metrics: int = DEFAULT_MAX_METRICS
    max_devices: int = DEFAULT_MAX_DEVICES
    metrics: OrderedDict[Key, MetricDef] = field(default_factory=OrderedDict)
    devices: OrderedDict[str, None] = field(default_factory=OrderedDict)  # online ones

    def define(self, device: str, alias: int | None, definition: MetricDef, stats: Stats) -> None:
        key: Key = (device, alias if alias is not None else definition.name)
        self.metrics[key] = definition
        self.metrics.move_to_end(key)
        while len(self.metrics) > self.max_metrics:
            self.metrics.popitem(last=False)
            stats.evicted_metrics += 1

    def lookup(self, device: str, ref: int | str) -> MetricDef | None:
        key: Key = (device, ref)
        found = self.metrics.get(key)
        if found is not None:
            self.metrics.move_to_end(key)
        return found

    def forget_device(self, device: str) -> None:
        """Drop a device's definitions (a new DBIRTH redefines them; after DDEATH they are
        void). A scan: births and deaths are rare next to data."""
        for key in [k for k in self.metrics if k[0] == device]:
            del self.metrics[key]

    def device_online(self, device: str) -> None:
        self.devices[device] = None
        self.devices.move_to_end(device)
        while len(self.devices) > self.max_devices:
            self.devices.popitem(last=False)

    def device_offline(self, device: str) -> None:
        self.devices.pop(device, None)

    def next_seq(self, seq: int | None) -> int | None:
        """Record ``seq``; returns the expected value when it is not the one after the last
        (a gap), else None. Without a known last seq nothing can be missing."""
        expected = None if self.seq is None else (self.seq + 1) % 256
        if seq is not None:
            self.seq = seq
        if expected is not None and seq != expected:
            return expected
        return None


@dataclass(slots=True)
class HostState:
    """Every edge node's state, at most ``max_nodes`` of them (least recently heard evicted)."""

    max_nodes: int = DEFAULT_MAX_NODES
    max_metrics: int = DEFAULT_MAX_METRICS
    max_devices: int = DEFAULT_MAX_DEVICES
    stats: Stats = field(default_factory=Stats)
    nodes: OrderedDict[tuple[str, str], NodeState] = field(default_factory=OrderedDict)

    def get(self, group: str, edge: str) -> NodeState | None:
        key = (group, edge)
        node = self.nodes.get(key)
        if node is not None:
            self.nodes.move_to_end(key)
        return node

    def node(self, group: str, edge: str) -> NodeState:
        """The node's state, created (and the least recently heard evicted) when unknown."""
        found = self.get(group, edge)
        return found if found is not None else self.born(group, edge)

    def born(self, group: str, edge: str) -> NodeState:
        """A fresh state for the node: an NBIRTH voids everything said before it."""
        key = (group, edge)
        self.nodes.pop(key, None)
        node = NodeState(max_metrics=self.max_metrics, max_devices=self.max_devices)
        self.nodes[key] = node
        while len(self.nodes) > self.max_nodes:
            self.nodes.popitem(last=False)
            self.stats.evicted_nodes += 1
        return node

    def died(self, group: str, edge: str) -> None:
        self.nodes.pop((group, edge), None)
