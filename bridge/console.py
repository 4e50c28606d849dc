"""Output of the data commands (`query`, `alerts`, `dead-letters`, `rules list`).

A person at a terminal gets rich tables; a pipe gets plain aligned text without colour codes
(or CSV/JSON with ``--format``), so ``| grep`` and ``| awk`` keep working. ``NO_COLOR`` is
honoured (rich reads it). Number formatting is pure and tested on its own.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from ingest.wire import iso_ms

FORMATS = ("table", "csv", "json")

# Wide enough that a pipe never gets a table wrapped at 80 columns.
PIPE_WIDTH = 10_000


def is_terminal(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def console_for(out: TextIO) -> Console:
    """A rich console on ``out``: styled on a terminal, plain and unwrapped on a pipe."""
    if is_terminal(out):
        return Console(file=out, highlight=False)
    return Console(
        file=out,
        force_terminal=False,
        no_color=True,
        highlight=False,
        width=PIPE_WIDTH,
        soft_wrap=True,
    )


def format_value(value: float | None, digits: int = 4) -> str:
    """A measurement rounded for reading: ``digits`` significant digits, except that the
    integer part is never rounded away (1013.27 -> ``1013``, 21.347 -> ``21.35``, 0.012345 ->
    ``0.01235``); no trailing zeros; exponent form only for the very small or very large."""
    if value is None:
        return ""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 15 or magnitude < -4:
        return f"{value:.{digits}g}"
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def format_count(value: float | None) -> str:
    """A count stored as double precision: an integer."""
    return "" if value is None else str(round(value))


def cell(value: Any) -> str:
    """A table cell: times as ISO-8601 (UTC, ms), None as empty."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_ms(value)
    return str(value)


def jsonable(value: Any) -> Any:
    return iso_ms(value) if isinstance(value, datetime) else value


def write_json(out: TextIO, body: Any) -> None:
    # datetimes through jsonable (ms and Z, as everywhere), not orjson's own isoformat
    options = orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATETIME
    out.write(orjson.dumps(body, default=jsonable, option=options).decode())
    out.write("\n")


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell(v) for v in row] for row in rows)


def table(
    columns: Sequence[str],
    *,
    right: Sequence[str] = (),
    show_header: bool = True,
    widths: dict[str, int] | None = None,
) -> Table:
    """A borderless table (a pipe reads it as whitespace-separated columns); ``right``
    names the columns aligned right (numbers)."""
    t = Table(box=None, show_header=show_header, header_style="bold", pad_edge=False)
    for name in columns:
        t.add_column(
            name,
            justify="right" if name in right else "left",
            min_width=(widths or {}).get(name),
            no_wrap=True,
        )
    return t


def print_table(out: TextIO, t: Table) -> None:
    """On a pipe without the padding after the last column (``cut``/``awk`` friendly)."""
    if is_terminal(out):
        console_for(out).print(t)
        return
    buffer = io.StringIO()
    console_for(buffer).print(t)
    out.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
