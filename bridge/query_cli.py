"""`telemetry-bridge query`: stored telemetry from the command line, straight from PostgreSQL.

The same query layer as ``GET /api/v1/telemetry`` and the WebSocket ``query`` message, so the
parameters and the errors are the same. CSV and table output stream through a server-side
cursor (a year of readings does not sit in memory); JSON prints one page and its cursor.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from bridge import console
from bridge.history import csv_chunk, page_body
from ingest.wire import iso_ms
from storage.pool import connect
from storage.query_spec import QueryError, TelemetryQuery, parse_query
from storage.telemetry import run_query, stream_rows
from storage.units import latest_units

TABLE_COLUMNS = ("device_id", "metric", "ts", "value", "unit")


def add_parser(sub: Any) -> None:
    q = sub.add_parser(
        "query",
        help="query stored telemetry (raw or aggregated), as a table, CSV or JSON",
        description="Read stored readings or aggregates. Times are epoch ms, ISO-8601, 'now' "
        "or relative (-1h, -7d). Buckets from 1s to 1d; whole minutes and hours are answered "
        "from the rollups.",
        epilog="example: telemetry-bridge query --device d1 --metric temperature --from -1h "
        "--bucket 1m --agg avg [--format csv]",
    )
    q.add_argument("--device", action="append", required=True, help="device id (repeatable)")
    q.add_argument("--metric", action="append", help="metric (repeatable; default all)")
    q.add_argument("--from", dest="start", default="-1h", help="start (default -1h)")
    q.add_argument("--to", dest="end", default="now", help="end, exclusive (default now)")
    q.add_argument("--bucket", help="aggregate into buckets: 1m, 5m, 1h, 1d ...")
    q.add_argument("--agg", help="avg min max sum count first last (default avg)")
    q.add_argument("--fill", help="empty buckets: none, null, previous or zero")
    q.add_argument("--limit", type=int, help="rows per JSON page (CSV/table: everything)")
    q.add_argument("--cursor", help="next_cursor of the previous JSON page")
    q.add_argument("--source", choices=("auto", "raw", "rollup"), help=argparse.SUPPRESS)
    q.add_argument(
        "--format",
        choices=console.FORMATS,
        default="table",
        help="table (values rounded, with units; the default), csv or json (exact values)",
    )


def join_time_options(argv: list[str]) -> list[str]:
    """``--from -1h`` -> ``--from=-1h`` (also ``--to``, ``--since``): argparse would take
    ``-1h`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--from", "--to", "--since") and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {
        "device_id": args.device,
        "metric": args.metric,
        "from": args.start,
        "to": args.end,
        "bucket": args.bucket,
        "agg": args.agg,
        "fill": args.fill,
        "limit": args.limit,
        "cursor": args.cursor,
        "source": args.source,
        "format": "json" if args.format == "json" else "csv",
    }
    return {k: v for k, v in params.items() if v is not None}


async def run(args: argparse.Namespace, database_url: str, out: TextIO = sys.stdout) -> int:
    try:
        query = parse_query(_params(args), datetime.now(UTC))
    except QueryError as exc:
        raise ValueError(str(exc)) from None
    conn = await connect(database_url)
    try:
        if args.format == "json":
            page = await run_query(conn, query)
            out.write(orjson.dumps(page_body(query, page), option=orjson.OPT_INDENT_2).decode())
            out.write("\n")
            return 0
        if args.format == "csv":
            header = True
            async for rows in stream_rows(conn, query):
                out.write(csv_chunk(rows, header).decode())
                header = False
            if header:
                out.write(csv_chunk([], True).decode())
            return 0
        if not await _print_table(conn, query, out):
            print("no data in the range", file=sys.stderr)
        return 0
    finally:
        await conn.close()


Row = tuple[str, str, datetime, float | None]


def table_rows(
    rows: list[Row], units: dict[tuple[str, str], str], *, counts: bool
) -> list[tuple[str, str, str, str, str]]:
    """Rows as shown: values rounded by magnitude (counts as integers), with their unit."""
    fmt = console.format_count if counts else console.format_value
    return [
        (device, metric, iso_ms(ts), fmt(value), "" if counts else units.get((device, metric), ""))
        for device, metric, ts, value in rows
    ]


async def _print_table(conn: Any, query: TelemetryQuery, out: TextIO) -> bool:
    """Stream the answer as tables of one fetched chunk each (memory stays flat); the column
    widths only grow, so the chunks line up. Whether there was a row."""
    units = await latest_units(conn, list(query.devices))
    counts = query.bucket is not None and query.agg == "count"
    widths = {"device_id": max(map(len, query.devices)), "ts": 24, "value": 8}
    first = True
    async for rows in stream_rows(conn, query):
        shown = table_rows(rows, units, counts=counts)
        for name, i in (("metric", 1), ("value", 3), ("unit", 4)):
            widths[name] = max(widths.get(name, len(name)), *(len(r[i]) for r in shown))
        t = console.table(TABLE_COLUMNS, right=("value",), show_header=first, widths=widths)
        for row in shown:
            t.add_row(*row)
        console.print_table(out, t)
        first = False
    return not first
