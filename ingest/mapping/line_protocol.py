"""InfluxDB line protocol, parsed and written (pure).

What Telegraf and every InfluxDB client publish::

    weather,device=w1,site=a temperature=21.5,humidity=40i 1700000000000000000

One line is ``measurement[,tag=value...] field=value[,field=value...] [timestamp]``. Escapes
follow the InfluxDB v2 reference (docs.influxdata.com/influxdb/v2/reference/syntax/
line-protocol/): in a measurement ``\\,`` and ``\\ ``; in tag keys, tag values and field keys
also ``\\=``; in a string field value ``\\"`` and ``\\\\``; ``\\\\`` is one backslash
everywhere, and a backslash before anything else is itself. Field values are floats (``1``,
``-1.5e3``), integers ``1i``, unsigned integers ``1u``, booleans (``t``, ``true``, ``F``...),
or double-quoted strings. Blank lines and ``#`` comments are skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ingest.payload import PayloadError

FieldValue = float | int | bool | str
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_INT = re.compile(r"[-+]?\d+", re.ASCII)
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_INT64 = 2**63
_UINT64 = 2**64


@dataclass(frozen=True, slots=True)
class Line:
    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, FieldValue] = field(default_factory=dict)
    timestamp: int | None = None


def _fail(number: int, message: str) -> PayloadError:
    return PayloadError("invalid_line_protocol", f"line {number}: {message}")


def _read_name(text: str, start: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to the first unescaped character of ``stops``; return it unescaped and the
    index of that stop (len(text) when none)."""
    out: list[str] = []
    i, n = start, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
            continue
        if char in stops:
            break
        out.append(char)
        i += 1
    return "".join(out), i


def _read_string(text: str, start: int, number: int) -> tuple[str, int]:
    """A double-quoted field value from ``start`` (its opening quote); returns the text and
    the index after the closing quote."""
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise _fail(number, "string field value without its closing quote")


def _number(raw: str, number: int, key: str) -> FieldValue:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw.endswith(("i", "u")) and _INT.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        low, high = (-_INT64, _INT64) if raw[-1] == "i" else (0, _UINT64)
        if not low <= value < high:
            raise _fail(number, f"field {key}: integer {raw} out of range")
        return value
    if _FLOAT.fullmatch(raw):
        parsed = float(raw)
        if math.isfinite(parsed):
            return parsed
    raise _fail(number, f"field {key}: {raw[:40]!r} is not a line protocol value")


def parse_line(text: str, number: int = 1) -> Line:
    """One non-empty, non-comment line; raises PayloadError(invalid_line_protocol)."""
    if "\\" not in text and '"' not in text:
        return _parse_plain(text, number)
    return _parse_escaped(text, number)


def _parse_plain(text: str, number: int) -> Line:
    """A line without escapes or strings (nearly every line): split, no scanning."""
    parts = text.split(" ")
    if not parts[0]:
        raise _fail(number, "no measurement")
    if len(parts) != 2:
        parts = [part for part in parts if part]  # runs of spaces between the sections
        if len(parts) not in (2, 3):
            if len(parts) < 2:
                raise _fail(number, "no fields after the measurement and tags")
            raise _fail(number, f"timestamp {' '.join(parts[2:])[:40]!r} is not an integer")
    head = parts[0].split(",")
    measurement = head[0]
    if not measurement:
        raise _fail(number, "no measurement")
    tags: dict[str, str] = {}
    for pair in head[1:]:
        key, eq, value = pair.partition("=")
        if not key or not eq:
            raise _fail(number, "a tag must be key=value")
        if not value:
            raise _fail(number, f"tag {key} has no value")
        tags[key] = value
    fields: dict[str, FieldValue] = {}
    for pair in parts[1].split(","):
        key, eq, raw = pair.partition("=")
        if not key or not eq:
            raise _fail(number, "a field must be key=value")
        if not raw:
            raise _fail(number, f"field {key} has no value")
        fields[key] = _number(raw, number, key)
    timestamp: int | None = None
    if len(parts) == 3:
        if not _INT.fullmatch(parts[2]):
            raise _fail(number, f"timestamp {parts[2][:40]!r} is not an integer")
        timestamp = int(parts[2])
    return Line(measurement, tags, fields, timestamp)


def _parse_escaped(text: str, number: int) -> Line:
    measurement, i = _read_name(text, 0, ", ", ",\\ ")
    if not measurement:
        raise _fail(number, "no measurement")
    n = len(text)
    tags: dict[str, str] = {}
    while i < n and text[i] == ",":
        key, i = _read_name(text, i + 1, ",= ", ",= \\")
        if i >= n or text[i] != "=" or not key:
            raise _fail(number, "a tag must be key=value")
        value, i = _read_name(text, i + 1, ", ", ",= \\")
        if not value:
            raise _fail(number, f"tag {key} has no value")
        tags[key] = value
    if i >= n or text[i] != " ":
        raise _fail(number, "no fields after the measurement and tags")
    while i < n and text[i] == " ":
        i += 1
    fields: dict[str, FieldValue] = {}
    while True:
        key, i = _read_name(text, i, ",= ", ",= \\")
        if i >= n or text[i] != "=" or not key:
            raise _fail(number, "a field must be key=value")
        i += 1
        if i < n and text[i] == '"':
            fields[key], i = _read_string(text, i, number)
        else:
            end = i
            while end < n and text[end] not in ", ":
                end += 1
            if end == i:
                raise _fail(number, f"field {key} has no value")
            fields[key] = _number(text[i:end], number, key)
            i = end
        if i < n and text[i] == ",":
            i += 1
            continue
        break
    timestamp: int | None = None
    rest = text[i:].strip(" ")
    if rest:
        if not _INT.fullmatch(rest):
            raise _fail(number, f"timestamp {rest[:40]!r} is not an integer")
        timestamp = int(rest)
    return Line(measurement, tags, fields, timestamp)


def parse_lines(payload: str, max_lines: int) -> list[Line]:
    """Every line of ``payload`` (``\\n`` or ``\\r\\n`` separated); at most ``max_lines``."""
    out: list[Line] = []
    for number, raw in enumerate(payload.split("\n"), start=1):
        text = raw.rstrip("\r")
        if not text.strip(" \t") or text.lstrip(" \t").startswith("#"):
            continue
        if len(out) >= max_lines:
            raise PayloadError("too_many_entries", f"more than {max_lines} lines")
        out.append(parse_line(text.lstrip(" \t"), number))
    return out


# Writing: the inverse of the parser (tests, benchmarks, and examples in the docs).
def _escape(text: str, special: str) -> str:
    out = text.replace("\\", "\\\\")
    for char in special:
        out = out.replace(char, "\\" + char)
    return out


def _format_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_line(line: Line) -> str:
    parts = [_escape(line.measurement, ", ")]
    parts.extend(f",{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in line.tags.items())
    fields = ",".join(f"{_escape(k, ',= ')}={_format_value(v)}" for k, v in line.fields.items())
    text = "".join(parts) + " " + fields
    return text if line.timestamp is None else f"{text} {line.timestamp}"
