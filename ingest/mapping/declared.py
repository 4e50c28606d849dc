"""A :class:`~ingest.mapping.spec.MappingSpec` made into a working
:class:`~ingest.mapping.api.Mapping` (pure).

Everything that can be worked out once is, here in the constructor: the compiled topic
pattern, split paths, the time zone. What depends on a metric name (its transforms, whether
it is included, its unit) is worked out on its first sight and remembered in a bounded dict,
so a reading costs a dict lookup after that.
"""

from __future__ import annotations

import fnmatch
import zoneinfo
from collections.abc import Mapping as ReadOnly
from datetime import datetime, timedelta
from typing import Any

import orjson

from ingest import names
from ingest.mapping import json_payload as jp
from ingest.mapping.api import DeviceReadings, DeviceStatus, Entries, Extracted
from ingest.mapping.line_protocol import parse_lines
from ingest.mapping.pattern import compile_pattern
from ingest.mapping.spec import MappingSpec
from ingest.payload import MAX_ENTRIES, MAX_PAYLOAD_BYTES, MAX_READINGS, PayloadError, check_time
from ingest.storable import text_problem

_CACHE_MAX = 4_096
_SKIP = None  # a metric the spec leaves out
_NO_READINGS = Extracted(notes=("no readings in the message",))
_LP_DIVISORS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
Unit = str | None


def _transform_device(value: str, transforms: tuple[str, ...]) -> str:
    for name in transforms:
        if name == "lowercase":
            value = value.lower()
        elif name == "replace_spaces":
            value = value.replace(" ", "_")
        elif name == "replace_slashes":
            value = value.replace("/", ".")
    return value


class DeclaredMapping:
    """One spec, ready for messages. Satisfies :class:`ingest.mapping.api.Mapping`."""

    def __init__(
        self,
        spec: MappingSpec,
        *,
        max_bytes: int = MAX_PAYLOAD_BYTES,
        max_future: timedelta = timedelta(hours=1),
        max_past: timedelta = timedelta(days=30),
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.pattern = compile_pattern(spec.topic)
        self.filter = self.pattern.filter
        self._excluded = tuple(compile_pattern(text) for text in spec.exclude_topics)
        self._max_bytes, self._max_future, self._max_past = max_bytes, max_future, max_past
        self._zone = zoneinfo.ZoneInfo(spec.timestamp.timezone)
        self._ts_path = jp.split_path(spec.timestamp.path) if spec.timestamp.path else None
        self._device_path = jp.split_path(spec.device.path) if spec.device.path else None
        self._root = jp.split_path(spec.root) if spec.root else ()
        self._paths = {metric: jp.split_path(path) for metric, path in spec.paths.items()}
        self._only_if = {jp.split_path(p): frozenset(w) for p, w in spec.only_if.items()}
        self._unit_paths = {glob: jp.split_path(p) for glob, p in spec.unit_paths.items()}
        self._status_path = jp.split_path(spec.status_path) if spec.status_path else None
        # raw leaf path -> (metric name, fixed unit, unit path) or _SKIP
        self._metrics: dict[str, tuple[str, Unit, tuple[str, ...] | None] | None] = {}

    def limited(
        self, *, max_bytes: int, max_future: timedelta, max_past: timedelta
    ) -> DeclaredMapping:
        """The same mapping under the ingest's configured limits (IngestConfig's
        max_payload_bytes, max_future, max_past); profiles are built with the defaults."""
        return DeclaredMapping(
            self.spec, max_bytes=max_bytes, max_future=max_future, max_past=max_past
        )

    # -- the Mapping protocol -------------------------------------------------------------
    def match(self, topic: str) -> ReadOnly[str, str] | None:
        levels = self.pattern.match(topic)
        if levels is None or any(p.match(topic) is not None for p in self._excluded):
            return None
        return levels

    def extract(self, topic: str, payload: bytes, received: datetime) -> Extracted:
        levels = self.match(topic)
        if levels is None:
            raise PayloadError("unprocessable", f"topic is not one of mapping {self.name}'s")
        if len(payload) > self._max_bytes:
            raise PayloadError(
                "payload_too_large",
                f"payload of {len(payload)} bytes exceeds {self._max_bytes} bytes",
            )
        if not payload:
            raise PayloadError("empty", "the message has no payload")
        kind = self.spec.payload
        if kind == "line_protocol":
            return self._line_protocol(levels, payload, received)
        if kind == "bare_number":
            return self._bare_number(levels, payload, received)
        if kind == "status":
            return self._status(levels, payload)
        doc = _json(payload)
        if type(doc) is not dict:
            raise PayloadError("invalid_shape", "payload must be a JSON object")
        for parts, words in self._only_if.items():
            if jp.get_path(doc, parts) not in words:
                return Extracted(notes=("ignored: not a message this mapping reads",))
        device = self._device(levels, doc)
        at = self._time(doc, received)
        if kind == "json_paths":
            values = self._chosen(doc)
        else:
            values = self._leaves(doc)
        if not values:
            return _NO_READINGS
        return Extracted(readings=(DeviceReadings(device, [(at, values)]),))

    # -- pieces -----------------------------------------------------------------------------
    def _device(self, levels: ReadOnly[str, str], doc: Any = None) -> str:
        if self._device_path is not None:
            raw = jp.get_path(doc, self._device_path)
            source = f"payload path {self.spec.device.path}"
        else:
            raw = levels.get(self.spec.device.level or "")
            source = f"topic level {{{self.spec.device.level}}}"
        return self._valid_device(raw, source)

    def _valid_device(self, raw: Any, source: str) -> str:
        if type(raw) is not str:
            raise PayloadError("invalid_device_id", f"no device id at {source}")
        value = _transform_device(raw, self.spec.device.transforms)
        if not names.is_device_id(value):
            raise PayloadError(
                "invalid_device_id",
                f"{source} gives {names.safe_excerpt(raw)!s}, which is not a device id "
                "(1-64 of A-Z a-z 0-9 _ . : - starting with a letter or digit); "
                "a mapping may opt into device transforms",
            )
        return value

    def _time(self, doc: Any, received: datetime) -> datetime:
        at = received
        if self._ts_path is not None:
            raw = jp.get_path(doc, self._ts_path)
            if raw is not None:
                at = jp.device_time(raw, self.spec.timestamp.format, self._zone)
        check_time(at, received, self._max_future, self._max_past)
        return at

    def _metric(self, raw_name: str) -> tuple[str, Unit, tuple[str, ...] | None] | None:
        """What a leaf path becomes: (metric, fixed unit, unit path) or None to skip it.
        Decided once per name; an invalid name refuses the message like our own format."""
        if raw_name in self._metrics:
            return self._metrics[raw_name]
        spec = self.spec
        name = raw_name
        for transform in spec.metric_transforms:
            if transform == "colon_to_underscore":
                name = name.replace(":", "_")
            elif transform == "lowercase":
                name = name.lower()
            elif transform == "replace_spaces":
                name = name.replace(" ", "_")
        decided: tuple[str, Unit, tuple[str, ...] | None] | None
        if (spec.include and not any(fnmatch.fnmatchcase(name, g) for g in spec.include)) or any(
            fnmatch.fnmatchcase(name, g) for g in spec.exclude
        ):
            decided = _SKIP
        else:
            if not names.is_metric(name):
                raise PayloadError(
                    "validation_error",
                    f"invalid metric name {names.safe_excerpt(name, 70)!s} (from "
                    f"{names.safe_excerpt(raw_name, 70)!s}); exclude it or add a metric transform",
                )
            unit = next((u for g, u in spec.units.items() if fnmatch.fnmatchcase(name, g)), None)
            unit_path = next(
                (p for g, p in self._unit_paths.items() if fnmatch.fnmatchcase(name, g)), None
            )
            decided = (name, unit, unit_path)
        if len(self._metrics) < _CACHE_MAX:
            self._metrics[raw_name] = decided
        return decided

    def _unit(self, doc: Any, fixed: Unit, path: tuple[str, ...] | None) -> Unit:
        if path is None:
            return fixed
        raw = jp.get_path(doc, path)
        if type(raw) is not str or not raw:
            return fixed
        unit = self.spec.unit_aliases.get(raw, raw)
        if len(unit) > 32 or text_problem(unit):
            return fixed  # a unit is decoration: a strange one is dropped, not the reading
        return unit

    def _leaves(self, doc: Any) -> dict[str, tuple[float, Unit]]:
        source = jp.get_path(doc, self._root) if self._root else doc
        if source is None:
            return {}
        if type(source) is not dict and type(source) is not list:
            raise PayloadError("invalid_shape", "payload must be a JSON object")
        values: dict[str, tuple[float, Unit]] = {}
        cache = self._metrics
        for raw_name, value in jp.leaves(source, self.spec.booleans, MAX_READINGS):
            decided = cache[raw_name] if raw_name in cache else self._metric(raw_name)
            if decided is not None:
                name, unit, unit_path = decided
                if unit_path is not None:
                    unit = self._unit(doc, unit, unit_path)
                values[name] = (value, unit)
        return values

    def _chosen(self, doc: Any) -> dict[str, tuple[float, Unit]]:
        values: dict[str, tuple[float, Unit]] = {}
        for metric, parts in self._paths.items():
            value = jp.number(jp.get_path(doc, parts), self.spec.booleans)
            if value is not None:
                decided = self._metric(metric)
                if decided is not None:
                    values[decided[0]] = (value, self._unit(doc, decided[1], decided[2]))
        return values

    def _bare_number(
        self, levels: ReadOnly[str, str], payload: bytes, received: datetime
    ) -> Extracted:
        device = self._device(levels)
        text = payload.decode("utf-8", "replace").strip()
        raw: Any
        try:
            raw = float(text) if text not in ("ON", "OFF") else text
        except ValueError:
            raise PayloadError(
                "validation_error", f"payload {names.safe_excerpt(text)!s} is not a number"
            ) from None
        value = jp.number(raw, self.spec.booleans)
        if value is None:
            return _NO_READINGS  # nan (a sensor without a value) or ON/OFF not asked for
        metric_name = self.spec.metric or levels.get(self.spec.metric_level or "", "")
        decided = self._metric(metric_name)
        if decided is None:
            return _NO_READINGS
        entries: Entries = [(received, {decided[0]: (value, decided[1])})]
        return Extracted(readings=(DeviceReadings(device, entries),))

    def _status(self, levels: ReadOnly[str, str], payload: bytes) -> Extracted:
        # a plain word ("Online", Shelly's bare JSON true/false) or a JSON object's field
        raw: Any = payload.decode("utf-8", "replace").strip()
        if self._status_path is not None and raw.startswith("{"):
            raw = jp.get_path(_json(payload), self._status_path)
        device = self._device(levels)
        status = self.spec.status_words.get(raw) if type(raw) is str else None
        if status is None:
            raise PayloadError(
                "validation_error",
                f"status {names.safe_excerpt(raw)!s} is none of "
                f"{', '.join(sorted(self.spec.status_words))}",
            )
        return Extracted(statuses=(DeviceStatus(device, status, f"{self.name}: {raw}"),))

    def _line_protocol(
        self, levels: ReadOnly[str, str], payload: bytes, received: datetime
    ) -> Extracted:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("invalid_line_protocol", "payload is not UTF-8") from None
        options = self.spec.line_protocol
        divisor = _LP_DIVISORS[options.precision]
        topic_device = None if options.device_tag else self._device(levels)
        by_device: dict[str, dict[datetime, dict[str, tuple[float, Unit]]]] = {}
        count = 0
        for line in parse_lines(text, MAX_ENTRIES):
            if options.device_tag:
                device = self._valid_device(
                    line.tags.get(options.device_tag), f"tag {options.device_tag}"
                )
            else:
                device = topic_device or ""
            at = received
            if line.timestamp is not None:
                at = jp.device_time(line.timestamp * divisor, "unix_ns", self._zone)
            check_time(at, received, self._max_future, self._max_past)
            values = by_device.setdefault(device, {}).setdefault(at, {})
            for key, raw in line.fields.items():
                value = jp.number(raw, True) if type(raw) is bool else jp.number(raw, False)
                if value is None:
                    continue  # strings are not readings
                full = key if options.metric_style == "field" else f"{line.measurement}.{key}"
                decided = self._metric(full)
                if decided is not None:
                    values[decided[0]] = (value, decided[1])
                    count += 1
            if count > MAX_READINGS:
                raise PayloadError(
                    "too_many_readings", f"more than {MAX_READINGS} readings in one message"
                )
        readings = tuple(
            DeviceReadings(device, [(at, v) for at, v in times.items() if v])
            for device, times in by_device.items()
            if any(times.values())
        )
        return Extracted(readings=readings) if readings else _NO_READINGS


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("invalid_json", f"not UTF-8 JSON: {exc}") from None
