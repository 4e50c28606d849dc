"""`telemetry-bridge alerts [ack ID]`: list alerts, acknowledge one.

Listing reads the same query as ``GET /api/v1/alerts``. Acknowledging goes through the very
code of the WebSocket ``ack_alert`` (:class:`~bridge.actions.FrontActions`): the row changes
in PostgreSQL and the ``acknowledged`` event goes out on the alert's stream topic, so every
open dashboard sees the acknowledgement at once, whoever made it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from bridge import console, identities
from bridge.actions import FrontActions
from bridge.auth import Principal
from bridge.protocol import ClientError
from ingest import names
from ingest.mqtt import MqttEndpoint
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from storage.alerts import find_alerts
from storage.pool import connect, create_pool
from storage.query_spec import QueryError, parse_time

TABLE_COLUMNS = (
    "alert_id",
    "created_at",
    "severity",
    "state",
    "device_id",
    "metric",
    "value",
    "threshold",
    "title",
)
CSV_COLUMNS = (
    *TABLE_COLUMNS[:6],
    "actual_value",
    "threshold_value",
    "title",
    "message",
    "acknowledged_at",
    "acknowledged_by",
    "acknowledged_note",
    "resolved_at",
)
MAX_NOTE = 1000
BROKER_WAIT_S = 5.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "alerts",
        help="list alerts (open ones by default) or acknowledge one",
        description="List the alerts raised by the threshold rules, newest first: the open "
        "ones (active or acknowledged) unless --all. `alerts ack ID` acknowledges an active "
        "alert; open dashboards see it at once.",
        epilog="examples: telemetry-bridge alerts --severity critical --since -1d\n"
        "          telemetry-bridge alerts ack 3f2c... --note 'door left open, closed'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--all", action="store_true", help="resolved alerts too")
    p.add_argument("--device", help="only this device id")
    p.add_argument("--severity", choices=names.SEVERITIES, help="only this severity")
    p.add_argument("--since", help="created at or after: ISO-8601, epoch ms or -1h, -7d")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--format", choices=console.FORMATS, default="table")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    ack = actions.add_parser("ack", help="acknowledge an active alert")
    ack.add_argument("alert_id")
    ack.add_argument("--note", help="why, or what was done (kept with the alert)")
    ack.add_argument("--by", help="who acknowledges (default: your login name)")


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    if args.device is not None and not names.is_device_id(args.device):
        raise ValueError(f"--device: not a valid device id: {args.device!r}")
    if not 1 <= args.limit <= 10_000:
        raise ValueError("--limit must be between 1 and 10000")
    try:
        since = parse_time(args.since, "--since", datetime.now(UTC)) if args.since else None
    except QueryError as exc:
        raise ValueError(str(exc)) from None
    return {
        "state": None if args.all else "open",
        "severity": args.severity,
        "device_id": args.device,
        "start": since,
        "end": None,
        "limit": args.limit,
    }


def table_row(alert: dict[str, Any]) -> tuple[str, ...]:
    return (
        alert["alert_id"],
        console.cell(alert["created_at"]),
        alert["severity"],
        alert["state"],
        alert["device_id"],
        alert["metric"],
        console.format_value(alert["actual_value"]),
        console.format_value(alert["threshold_value"]),
        alert["title"],
    )


async def list_alerts(args: argparse.Namespace, database_url: str, out: TextIO) -> int:
    filters = _filters(args)
    conn = await connect(database_url, application_name="telemetry-bridge alerts")
    try:
        rows = [dict(r) for r in await find_alerts(conn, **filters)]
    finally:
        await conn.close()
    if args.format == "json":
        console.write_json(out, {"alerts": rows, "count": len(rows)})
    elif args.format == "csv":
        console.write_csv(out, CSV_COLUMNS, ([r.get(c) for c in CSV_COLUMNS] for r in rows))
    elif not rows:
        print("no open alerts" if not args.all else "no alerts", file=sys.stderr)
    else:
        t = console.table(TABLE_COLUMNS, right=("value", "threshold"))
        for row in rows:
            t.add_row(*table_row(row))
        console.print_table(out, t)
    return 0


async def acknowledge(
    args: argparse.Namespace,
    database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    out: TextIO,
) -> int:
    note = args.note.strip() if args.note else None
    if note is not None and len(note) > MAX_NOTE:
        raise ValueError(f"--note: at most {MAX_NOTE} characters")
    by = (args.by or getpass.getuser()).strip()
    if not 0 < len(by) <= 64:
        raise ValueError("--by: 1 to 64 characters")
    endpoint = MqttEndpoint.from_url(mqtt_url)
    stream = StreamPublisher(endpoint, identities.tool_id(endpoint, "cli-ack"))
    await stream.start()
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        try:
            await asyncio.wait_for(stream.connected.wait(), BROKER_WAIT_S)
        except TimeoutError:
            print(
                f"telemetry-bridge: warning: the broker at {endpoint.redacted()} does not "
                "answer; open dashboards will see the acknowledgement when they reload",
                file=sys.stderr,
            )
        # Everything the CLI can reach it may acknowledge: whoever holds the database URL
        # is an operator.
        principal = Principal(sub=by, scopes=frozenset({"alerts:write"}))
        actions = FrontActions(pool, Topics(topic_prefix), stream)
        try:
            alert = await actions.ack_alert(args.alert_id, principal, note)
        except ClientError as exc:
            raise ValueError(f"alert {args.alert_id}: {exc}") from None
    finally:
        await pool.close()
        await stream.stop()  # sends DISCONNECT after the event: the broker has it
    if args.format == "json":
        console.write_json(out, alert)
    else:
        print(f"alert {alert['alert_id']} acknowledged by {by}", file=out)
    return 0


async def run(
    args: argparse.Namespace,
    database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    out: TextIO = sys.stdout,
) -> int:
    if args.action == "ack":
        return await acknowledge(args, database_url, mqtt_url, topic_prefix, out)
    return await list_alerts(args, database_url, out)
