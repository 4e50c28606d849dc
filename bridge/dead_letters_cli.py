"""`telemetry-bridge dead-letters`: the latest messages the ingest could never store, and why.

A payload is shown as text when it is UTF-8 (control characters escaped, long ones cut),
otherwise as hex; its size is always given. The stored payload itself may already be cut by
the ingest (ingest/dead_letters.py keeps enough to see what went wrong).
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any, TextIO

from rich.markup import escape

from bridge import console
from ingest import names
from ingest.payload import DEAD_LETTER_REASONS
from storage.dead_letters import latest_dead_letters
from storage.pool import connect

TEXT_CHARS = 300  # shown of a text payload
HEX_BYTES = 64  # shown of a binary payload
CSV_COLUMNS = ("received_at", "device_id", "topic", "reason", "detail", "size", "payload")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dead-letters",
        help="show the latest messages that could not be stored, with the reason",
        description="The newest dead letters first: time, device, topic, reason, detail and "
        "the payload (as text when it is UTF-8 text, else as hex), with its size.",
        epilog="example: telemetry-bridge dead-letters --device plant-a-7 --reason invalid_json",
    )
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--device", help="only this device id")
    p.add_argument("--reason", choices=DEAD_LETTER_REASONS, help="only this reason")
    p.add_argument(
        "--format",
        choices=console.FORMATS,
        default="table",
        help="table (the default), csv or json (payload in full, as text or base64)",
    )


def payload_text(payload: bytes) -> tuple[str, bool]:
    """(what to show, whether the payload is text). Text has its control characters escaped
    (a payload cannot move the terminal's cursor or ring its bell) and is cut at
    :data:`TEXT_CHARS`; anything else is shown as hex, cut at :data:`HEX_BYTES`."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        shown = payload[:HEX_BYTES].hex(" ")
        return (shown + " ..." if len(payload) > HEX_BYTES else shown), False
    escaped = "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in text[:TEXT_CHARS]
    )
    return (escaped + " ..." if len(text) > TEXT_CHARS else escaped), True


def _json_entry(row: dict[str, Any]) -> dict[str, Any]:
    payload: bytes = row.pop("payload")
    row["size"] = len(payload)
    try:
        row["payload_text"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        row["payload_base64"] = base64.b64encode(payload).decode("ascii")
    return row


def _csv_row(row: dict[str, Any]) -> list[Any]:
    payload: bytes = row["payload"]
    return [*(row[c] for c in CSV_COLUMNS[:-2]), len(payload), payload_text(payload)[0]]


def _print_blocks(rows: list[dict[str, Any]], out: TextIO) -> None:
    """One block per message: the fields on a line, then the detail and the payload (long
    free text reads badly in table cells)."""
    con = console.console_for(out)
    for row in rows:
        payload: bytes = row["payload"]
        shown, is_text = payload_text(payload)
        con.print(
            f"[bold]{console.cell(row['received_at'])}[/]  "
            f"device [cyan]{escape(row['device_id'] or '-')}[/]  "
            f"reason [yellow]{row['reason']}[/]  topic {escape(row['topic'])}"
        )
        if row["detail"]:
            con.print(f"  detail:  {escape(row['detail'])}")
        kind = "text" if is_text else "binary, hex"
        con.print(f"  payload ({len(payload):,} bytes, {kind}): {escape(shown)}")


async def run(args: argparse.Namespace, database_url: str, out: TextIO = sys.stdout) -> int:
    if args.device is not None and not names.is_device_id(args.device):
        raise ValueError(f"--device: not a valid device id: {args.device!r}")
    if not 1 <= args.limit <= 10_000:
        raise ValueError("--limit must be between 1 and 10000")
    conn = await connect(database_url, application_name="telemetry-bridge dead-letters")
    try:
        rows = await latest_dead_letters(
            conn, limit=args.limit, device_id=args.device, reason=args.reason
        )
    finally:
        await conn.close()
    if args.format == "json":
        entries = [_json_entry(r) for r in rows]
        console.write_json(out, {"dead_letters": entries, "count": len(entries)})
    elif args.format == "csv":
        console.write_csv(out, CSV_COLUMNS, (_csv_row(r) for r in rows))
    elif not rows:
        print("no dead letters", file=sys.stderr)
    else:
        _print_blocks(rows, out)
    return 0
