"""A declarative mapping: one topic pattern and how to read its payloads (pure).

The same model is read from a TOML file (:mod:`ingest.mapping.toml_file`), stored as rows by
the ``mappings`` command and used by the built-in profiles. Everything a spec says is checked
here, once, at load time: a spec that validates can be compiled and never fails per message
for a reason of its own.

Paths into a JSON payload are dotted (``ENERGY.Power``, ``params.switch:0.apower``; a list
index is a number: ``Voltage.0``). Metric names and unit texts follow the bridge's own format
(:mod:`ingest.names`). Globs in ``include``/``exclude``/``units`` are :mod:`fnmatch` patterns
on the metric name (after ``metric_transforms``).
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from ingest import names
from ingest.mapping.pattern import PatternError, compile_pattern

PayloadKind = Literal["json_leaves", "json_paths", "bare_number", "line_protocol", "status"]
TimeFormat = Literal["none", "iso8601", "unix_s", "unix_ms", "unix_us", "unix_ns"]
Precision = Literal["ns", "us", "ms", "s"]

# Opt-in rewrites of a name found in a topic or payload, applied in the order listed. They can
# make two names equal (``a b`` and ``a_b``): that is why they are never applied unasked.
DEVICE_TRANSFORMS = ("lowercase", "replace_spaces", "replace_slashes")
METRIC_TRANSFORMS = ("colon_to_underscore", "lowercase", "replace_spaces")
DeviceTransform = Literal["lowercase", "replace_spaces", "replace_slashes"]
MetricTransform = Literal["colon_to_underscore", "lowercase", "replace_spaces"]

MappingName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Path = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Unit = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSpec(_Strict):
    """Where the device id comes from: a named topic level, or else a payload path."""

    level: str | None = "device"
    path: Path | None = None
    transforms: tuple[DeviceTransform, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _path_instead_of_level(cls, data: Any) -> Any:
        # {path = "src"} alone means the payload, not the payload and the default level
        if isinstance(data, dict) and data.get("path") is not None and "level" not in data:
            return {**data, "level": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DeviceSpec:
        if (self.level is None) == (self.path is None):
            raise ValueError("device: give exactly one of level or path")
        return self


class TimestampSpec(_Strict):
    """Where the device's own time is. ``none`` (or a missing value): the receive time."""

    path: Path | None = None
    format: TimeFormat = "none"
    # a naive ISO time (Tasmota sends local time without an offset) is read in this zone
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _path_for_payload_time(self) -> TimestampSpec:
        if self.format != "none" and self.path is None:
            raise ValueError(f"timestamp format {self.format} needs a path")
        return self


class LineProtocolSpec(_Strict):
    """InfluxDB line protocol: where the device is and how fields become metrics. The time is
    each line's own (at ``precision``), else the receive time; ``timestamp`` is not used."""

    device_tag: str | None = None  # None: the device comes from the topic (``device``)
    metric_style: Literal["field", "measurement.field"] = "field"
    precision: Precision = "ns"


class MappingSpec(_Strict):
    name: MappingName
    topic: str  # pattern with named levels, see ingest.mapping.pattern
    exclude_topics: tuple[str, ...] = ()  # patterns this mapping leaves alone
    payload: PayloadKind
    device: DeviceSpec = DeviceSpec()
    timestamp: TimestampSpec = TimestampSpec()
    # json_leaves: the subtree to flatten (``params``), else the whole document
    root: Path | None = None
    # json_paths: metric name -> path
    paths: dict[str, Path] = Field(default_factory=dict)
    # bare_number: a fixed metric name, or the topic level naming it
    metric: str | None = None
    metric_level: str | None = None
    # true/false and the words ON/OFF as 1/0 (else they are skipped like any text)
    booleans: bool = False
    metric_transforms: tuple[MetricTransform, ...] = ()
    include: tuple[Glob, ...] = ()  # empty: every metric
    exclude: tuple[Glob, ...] = ()
    units: dict[Glob, Unit] = Field(default_factory=dict)  # glob -> fixed unit
    unit_paths: dict[Glob, Path] = Field(default_factory=dict)  # glob -> payload path of unit
    unit_aliases: dict[Word, Unit] = Field(default_factory=dict)  # "C" -> "°C"
    # a message whose value at path is not one of the words is ignored (not dead-lettered)
    only_if: dict[Path, tuple[Word, ...]] = Field(default_factory=dict)
    # status: payload word (or JSON value at status_path) -> online | offline
    status_words: dict[Word, Literal["online", "offline"]] = Field(default_factory=dict)
    status_path: Path | None = None
    line_protocol: LineProtocolSpec = LineProtocolSpec()

    @field_validator("topic")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            compile_pattern(value)
        except PatternError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("exclude_topics")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                compile_pattern(text)
            except PatternError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("paths")
    @classmethod
    def _metric_names(cls, value: dict[str, str]) -> dict[str, str]:
        for metric in value:
            names.metric(metric)  # InvalidName is a ValueError: pydantic reports it
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MappingSpec:
        levels = compile_pattern(self.topic).names
        by_tag = self.payload == "line_protocol" and self.line_protocol.device_tag is not None
        if not by_tag and self.device.level is not None and self.device.level not in levels:
            raise ValueError(f"device level {{{self.device.level}}} is not in {self.topic!r}")
        kind = self.payload
        if kind == "json_paths" and not self.paths:
            raise ValueError("payload json_paths needs paths")
        if kind == "bare_number":
            if (self.metric is None) == (self.metric_level is None):
                raise ValueError("payload bare_number needs exactly one of metric, metric_level")
            if self.metric is not None:
                names.metric(self.metric)
            if self.metric_level is not None and self.metric_level not in levels:
                raise ValueError(f"metric level {{{self.metric_level}}} is not in {self.topic!r}")
        if kind == "status" and not self.status_words:
            raise ValueError("payload status needs status_words")
        if kind == "line_protocol" and self.line_protocol.device_tag is not None:
            if self.device.path is not None:
                raise ValueError("line_protocol takes its device from a tag or a topic level")
        return self
