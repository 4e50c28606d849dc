"""Mappings from a TOML file, and back (pure: text in, text out; the caller reads the file).

::

    profiles = ["tasmota", "zigbee2mqtt"]          # built-in profiles switched on by name

    [profile_options.influx_line]                   # keyword options of one profile
    topic = "telegraf/{host}"
    device_tag = "host"

    [[mapping]]                                     # a mapping of your own (MappingSpec)
    name = "boiler"
    topic = "plant/{device}/data"
    payload = "json_paths"
    paths = { flow_temp = "t.flow", return_temp = "t.return" }
    timestamp = { path = "at", format = "unix_ms" }
    units = { "*_temp" = "°C" }

Everything is validated on load; an error names the mapping and the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ingest.mapping.api import Mapping
from ingest.mapping.declared import DeclaredMapping
from ingest.mapping.profiles import build_profile
from ingest.mapping.spec import MappingSpec

_TOP_KEYS = {"profiles", "profile_options", "mapping"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


class MappingFileError(ValueError):
    """A mappings file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class MappingFile:
    profiles: tuple[str, ...] = ()
    profile_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    specs: tuple[MappingSpec, ...] = ()

    def mappings(self) -> list[Mapping]:
        """Every mapping the file switches on: the profiles' first, then its own."""
        out: list[Mapping] = []
        for name in self.profiles:
            try:
                out.extend(build_profile(name, **self.profile_options.get(name, {})))
            except ValueError as exc:
                raise MappingFileError(str(exc)) from None
        out.extend(DeclaredMapping(spec) for spec in self.specs)
        return out


def loads(text: str) -> MappingFile:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingFileError(f"not TOML: {exc}") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise MappingFileError(f"unknown keys {sorted(unknown)}; expected {sorted(_TOP_KEYS)}")
    profiles = doc.get("profiles", [])
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise MappingFileError("profiles must be a list of profile names")
    options = doc.get("profile_options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise MappingFileError("profile_options must hold one table per profile")
    stray = set(options) - set(profiles)
    if stray:
        raise MappingFileError(f"profile_options for profiles not switched on: {sorted(stray)}")
    raw_specs = doc.get("mapping", [])
    if not isinstance(raw_specs, list):
        raise MappingFileError("mapping must be an array of tables ([[mapping]])")
    specs: list[MappingSpec] = []
    for index, raw in enumerate(raw_specs):
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            specs.append(MappingSpec.model_validate(raw))
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            place = f"{label}: {where}" if where else str(label)
            raise MappingFileError(f"mapping {place}: {message}") from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise MappingFileError("two mappings share a name")
    return MappingFile(tuple(profiles), options, tuple(specs))


# -- writing --------------------------------------------------------------------------------
def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(_table(value)) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _table(values: dict[str, Any]) -> list[str]:
    # None means "not set": TOML has no null, and leaving it out gives the same default
    return [f"{_key(k)} = {_value(v)}" for k, v in values.items() if v is not None]


def dumps(mapping_file: MappingFile) -> str:
    """The TOML text :func:`loads` reads back into an equal MappingFile."""
    lines: list[str] = []
    if mapping_file.profiles:
        lines.append(f"profiles = {_value(list(mapping_file.profiles))}")
    for name, options in mapping_file.profile_options.items():
        lines += ["", f"[profile_options.{_key(name)}]", *_table(options)]
    for spec in mapping_file.specs:
        lines += ["", "[[mapping]]", *_table(spec.model_dump(mode="json", exclude_defaults=True))]
    return "\n".join(lines).lstrip("\n") + "\n"


def dumps_specs(specs: Sequence[MappingSpec]) -> str:
    return dumps(MappingFile(specs=tuple(specs)))
