"""`telemetry-bridge rules list|add|remove|load`: manage threshold rules in PostgreSQL.

Every change is announced by the rules table's trigger (NOTIFY ``rules_changed``): each running
ingest reloads its rules within about a second, without a restart.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from bridge import console
from ingest.rule_rows import new_rule_id, rule_row
from ingest.rules import Rule, RuleError
from storage.alerts import (
    RULE_COLUMNS,
    delete_rule,
    insert_rule,
    load_rules,
    upsert_rule,
    upsert_rules,
)
from storage.pool import connect


def add_parser(sub: Any) -> None:
    rules = sub.add_parser(
        "rules",
        help="list, add, remove or load threshold rules",
        description="Threshold rules raise alerts (PROTOCOL.md section 5). Conditions: gt gte "
        "lt lte outside inside no_data. Changes apply to the running ingest within about a second.",
        epilog="example: telemetry-bridge rules add --id hot --metric temperature "
        "--condition gt --threshold 50 --clear 45 --for 30 --severity high --devices 'plant-*'",
    )
    actions = rules.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="print every rule")
    add = actions.add_parser("add", help="add or replace a rule")
    add.add_argument(
        "--id",
        dest="rule_id",
        help="replaces the rule with this id; without it a new rule gets a generated id (printed)",
    )
    add.add_argument("--metric", required=True)
    add.add_argument(
        "--condition",
        required=True,
        choices=("gt", "gte", "lt", "lte", "outside", "inside", "no_data"),
    )
    add.add_argument(
        "--threshold", required=True, type=float, help="the limit (seconds for no_data)"
    )
    add.add_argument("--threshold-high", type=float, help="upper bound for outside/inside")
    add.add_argument(
        "--clear", type=float, dest="clear_threshold", help="hysteresis: clear past this"
    )
    add.add_argument("--for", type=float, default=0.0, dest="for_s", help="seconds it must hold")
    add.add_argument(
        "--severity", default="warning", choices=("info", "warning", "high", "critical")
    )
    add.add_argument("--devices", default="*", help="comma-separated ids or *-globs (default all)")
    add.add_argument("--name", default="")
    add.add_argument("--title", default=Rule.title)
    add.add_argument("--message", default=Rule.message)
    add.add_argument("--disabled", action="store_true")
    remove = actions.add_parser("remove", help="delete a rule")
    remove.add_argument("rule_id")
    load = actions.add_parser("load", help="add or replace the rules of a TOML file ([[rules]])")
    load.add_argument("file", type=Path)


def _row(fields: dict[str, Any]) -> dict[str, Any]:
    return rule_row(fields, RULE_COLUMNS)


def _table(rules: list[dict[str, Any]]) -> str:
    """The rules as a table for a terminal (a pipe keeps one line per rule, for grep)."""
    t = console.table(
        ("rule_id", "metric", "condition", "threshold", "clear", "for_s", "severity", "devices"),
        right=("threshold", "clear", "for_s"),
    )
    for r in rules:
        high = r["threshold_high"]
        t.add_row(
            r["rule_id"] + ("" if r["enabled"] else " (disabled)"),
            r["metric"],
            r["condition"],
            console.format_value(r["threshold"])
            + ("" if high is None else ".." + console.format_value(high)),
            console.format_value(r["clear_threshold"]),
            console.format_value(r["for_s"]),
            r["severity"],
            ",".join(r["devices"]),
        )
    con = console.console_for(sys.stdout)
    with con.capture() as captured:
        con.print(t)
    return captured.get().rstrip("\n")


async def run(args: argparse.Namespace, database_url: str) -> str:
    conn = await connect(database_url)
    try:
        if args.action == "list":
            rules = await load_rules(conn)
            if not rules:
                return "no rules"
            if console.is_terminal(sys.stdout):
                return _table(rules)
            return "\n".join(
                f"{r['rule_id']}: {r['metric']} {r['condition']} {r['threshold']:g}"
                f"{'' if r['threshold_high'] is None else '..' + format(r['threshold_high'], 'g')}"
                f" for {r['for_s']:g}s -> {r['severity']} on {','.join(r['devices'])}"
                f"{'' if r['enabled'] else ' (disabled)'}"
                for r in rules
            )
        if args.action == "add":
            fields = {k: getattr(args, k) for k in RULE_COLUMNS if hasattr(args, k)}
            fields["enabled"] = not args.disabled
            if fields["rule_id"] is None:
                fields["rule_id"] = new_rule_id()
                row = _row(fields)
                if not await insert_rule(conn, row):  # pragma: no cover - 64 random bits
                    raise RuleError(f"rule {row['rule_id']} exists; try again")
            else:
                await upsert_rule(conn, _row(fields))
            return f"rule {fields['rule_id']} saved"
        if args.action == "remove":
            if not await delete_rule(conn, args.rule_id):
                raise RuleError(f"no rule {args.rule_id}")
            return f"rule {args.rule_id} removed"
        doc = tomllib.loads(args.file.read_text())
        entries = doc.get("rules", [])
        rows = [_row(e) for e in entries]
        await upsert_rules(conn, rows)
        return f"{len(rows)} rule(s) loaded from {args.file}"
    finally:
        await conn.close()
