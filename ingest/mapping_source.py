"""Where the ingest's mappings come from: ``BRIDGE_MAPPINGS`` (built-in profiles by name), the
file ``BRIDGE_MAPPINGS_FILE`` (TOML) and the ``mappings`` table, all three at once.

Each source yields :class:`MappingEntry` items (a profile with options, or a declarative
spec); the mapping engine turns them into the router the ingest uses (:class:`MappingEngine`,
ingest/mapped.py). Names are unique across the sources: a clash is an error the operator sees,
never one mapping silently shadowing another.

The file::

    [mappings.plugs]            # a built-in profile, with its options
    profile = "tasmota"
    options = { }

    [mappings.greenhouse]       # a declarative spec (ingest/mapping/spec.py)
    topic = "greenhouse/{device}/data"
    payload = "json_leaves"
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ingest.mapped import MappingRouter, NoMappings
from storage.mappings import load_mappings
from storage.pool import connect

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class MappingError(ValueError):
    """A mapping that cannot be used, with a message for the operator."""


@dataclass(frozen=True)
class MappingEntry:
    name: str
    profile: str | None = None  # a built-in profile's name ...
    options: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] | None = None  # ... or a declarative spec
    origin: str = ""  # where it was found, for messages: "BRIDGE_MAPPINGS", a path, "database"


class MappingEngine(Protocol):
    """What the ingest and the CLI need of the mapping engine (ingest/mapping/)."""

    def profiles(self) -> dict[str, str]:
        """Built-in profile name -> a one-line description."""
        ...

    def build(self, entries: Sequence[MappingEntry]) -> MappingRouter:
        """The router of ``entries``; raises MappingError (or ValueError) for a bad one."""
        ...


_ENGINE: MappingEngine | None = None


def use_engine(engine: MappingEngine | None) -> None:
    """Set the engine (tests set a small one of their own; None: the default again)."""
    global _ENGINE
    _ENGINE = engine


def engine() -> MappingEngine:
    """The mapping engine: the one set with :func:`use_engine`, else the package's own
    (``ingest.mapping.engine``, which provides ``profiles()`` and ``build(entries)``)."""
    if _ENGINE is not None:
        return _ENGINE
    try:
        module: Any = importlib.import_module("ingest.mapping.engine")
    except ImportError as exc:
        raise MappingError(f"the mapping engine is not available: {exc}") from None
    found: MappingEngine = module
    return found


def parse_profiles(value: str) -> list[MappingEntry]:
    """``BRIDGE_MAPPINGS=tasmota,esphome``: each built-in profile under its own name."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    return [MappingEntry(name=p, profile=p, origin="BRIDGE_MAPPINGS") for p in items]


def parse_file(text: str, origin: str) -> list[MappingEntry]:
    """The ``[mappings.<name>]`` tables of a TOML mappings file."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{origin}: not valid TOML: {exc}") from None
    tables = doc.get("mappings", {})
    unknown = set(doc) - {"mappings"}
    if unknown or not isinstance(tables, dict):
        raise MappingError(f"{origin}: only [mappings.<name>] tables belong here")
    return [entry(name, table, origin) for name, table in tables.items()]


def entry(name: str, table: Any, origin: str) -> MappingEntry:
    """One mapping's table: ``profile`` (+ ``options``) or a spec."""
    if not re.match(NAME_PATTERN, name):
        raise MappingError(f"{origin}: invalid mapping name {name[:70]!r}")
    if not isinstance(table, dict):
        raise MappingError(f"{origin}: mapping {name} must be a table")
    if "profile" in table:
        options = table.get("options", {})
        if set(table) - {"profile", "options"} or not isinstance(options, dict):
            raise MappingError(
                f"{origin}: mapping {name}: a profile takes only `profile` and `options`"
            )
        return MappingEntry(name, profile=str(table["profile"]), options=options, origin=origin)
    return MappingEntry(name, spec=dict(table), origin=origin)


def unique(entries: Sequence[MappingEntry]) -> list[MappingEntry]:
    seen: dict[str, str] = {}
    for e in entries:
        if e.name in seen:
            raise MappingError(
                f"mapping {e.name} is defined twice ({seen[e.name]} and {e.origin}); "
                "give one of them another name"
            )
        seen[e.name] = e.origin
    return list(entries)


class ConfiguredMappings:
    """The ingest's :class:`~ingest.mapped.MappingSource` over the three sources."""

    def __init__(
        self,
        *,
        profiles: str = "",
        file: Path | None = None,
        database_url: str | None = None,
        mapping_engine: MappingEngine | None = None,
    ) -> None:
        self._profiles = parse_profiles(profiles)
        self._file = file
        self._database_url = database_url
        self._engine = mapping_engine
        self.uses_database = database_url is not None

    async def entries(self) -> list[MappingEntry]:
        found = list(self._profiles)
        if self._file is not None:
            try:
                text = await asyncio.to_thread(self._file.read_text)
            except OSError as exc:
                raise MappingError(f"BRIDGE_MAPPINGS_FILE: {exc}") from None
            found += parse_file(text, str(self._file))
        if self._database_url is not None:
            conn = await connect(self._database_url)
            try:
                rows = await load_mappings(conn, enabled_only=True)
            finally:
                await conn.close()
            found += [
                MappingEntry(r["name"], r["profile"], r["options"], r["spec"], "database")
                for r in rows
            ]
        return unique(found)

    async def load(self) -> MappingRouter:
        entries = await self.entries()
        if not entries:
            return NoMappings()  # the bridge's own format only: no engine needed
        return (self._engine or engine()).build(entries)

    def fingerprint(self) -> object:
        if self._file is None:
            return None
        try:
            st = os.stat(self._file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)
