"""The mapping engine as the ingest and the CLI use it (ingest/mapping_source.py): the
built-in profiles with a line each, and the router of a list of configured entries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ingest.mapping.api import Mapping
from ingest.mapping.declared import DeclaredMapping
from ingest.mapping.mapset import MappingSet
from ingest.mapping.profiles import build_profile, profile_names
from ingest.mapping.spec import MappingSpec

if TYPE_CHECKING:
    from ingest.mapping_source import MappingEntry

DESCRIPTIONS = {
    "tasmota": "Tasmota: tele/<device>/SENSOR and STATE JSON, LWT online/offline",
    "shelly_gen2": "Shelly Gen2: <device>/events/rpc NotifyStatus, <device>/online",
    "zigbee2mqtt": "zigbee2mqtt: zigbee2mqtt/<name> JSON, <name>/availability",
    "esphome": "ESPHome: <node>/sensor/<name>/state bare numbers, <node>/status",
    "influx_line": "InfluxDB line protocol, as Telegraf publishes it: telegraf/<host>/<plugin>",
    "sparkplug_b": "Eclipse Sparkplug B: spBv1.0/<group>/N|D BIRTH, DATA, DEATH (protobuf)",
}


def profiles() -> dict[str, str]:
    return {name: DESCRIPTIONS.get(name, name) for name in profile_names()}


def build(entries: Sequence[MappingEntry]) -> MappingSet:
    """The router of ``entries`` (topics without the deployment prefix: the ingest strips
    it). ValueError naming the entry for anything that cannot be used."""
    mappings: list[Mapping] = []
    for entry in entries:
        try:
            if entry.profile is not None:
                mappings.extend(build_profile(entry.profile, **entry.options))
            else:
                spec = MappingSpec.model_validate({"name": entry.name, **(entry.spec or {})})
                mappings.append(DeclaredMapping(spec))
        except (ValueError, ValidationError) as exc:
            where = f" ({entry.origin})" if entry.origin else ""
            raise ValueError(f"mapping {entry.name}{where}: {exc}") from None
    try:
        return MappingSet(mappings)
    except ValueError as exc:  # the same profile enabled twice: its mappings' names clash
        raise ValueError(f"{exc}: is one profile enabled twice?") from None
