"""Rules and alerts in PostgreSQL; the engine that evaluates them is ingest/rules.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

RULE_COLUMNS = (
    "rule_id",
    "name",
    "metric",
    "devices",
    "condition",
    "threshold",
    "threshold_high",
    "clear_threshold",
    "for_s",
    "severity",
    "title",
    "message",
    "enabled",
)


async def load_rules(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {', '.join(RULE_COLUMNS)} FROM rules ORDER BY rule_id")
    return [dict(r) for r in rows]


async def get_rule(conn: asyncpg.Connection | asyncpg.Pool, rule_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {', '.join(RULE_COLUMNS)} FROM rules WHERE rule_id = $1", rule_id
    )
    return None if row is None else dict(row)


async def upsert_rule(conn: asyncpg.Connection | asyncpg.Pool, rule: dict[str, Any]) -> None:
    cols = ", ".join(RULE_COLUMNS)
    params = ", ".join(f"${i + 1}" for i in range(len(RULE_COLUMNS)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in RULE_COLUMNS[1:])
    await conn.execute(
        f"INSERT INTO rules ({cols}) VALUES ({params}) "
        f"ON CONFLICT (rule_id) DO UPDATE SET {updates}, updated_at = now()",
        *[rule[c] for c in RULE_COLUMNS],
    )


async def insert_rule(conn: asyncpg.Connection | asyncpg.Pool, rule: dict[str, Any]) -> bool:
    """Store a new rule; False (nothing written) when its rule_id is taken."""
    cols = ", ".join(RULE_COLUMNS)
    params = ", ".join(f"${i + 1}" for i in range(len(RULE_COLUMNS)))
    status = await conn.execute(
        f"INSERT INTO rules ({cols}) VALUES ({params}) ON CONFLICT (rule_id) DO NOTHING",
        *[rule[c] for c in RULE_COLUMNS],
    )
    return bool(status == "INSERT 0 1")


async def upsert_rules(conn: asyncpg.Connection, rules: list[dict[str, Any]]) -> None:
    """Store every rule, or none of them (one transaction)."""
    async with conn.transaction():
        for rule in rules:
            await upsert_rule(conn, rule)


async def delete_rule(conn: asyncpg.Connection | asyncpg.Pool, rule_id: str) -> bool:
    return (await conn.execute("DELETE FROM rules WHERE rule_id = $1", rule_id)) == "DELETE 1"


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


async def save_alerts(conn: asyncpg.Connection, alerts: list[tuple[str, Any]]) -> None:
    """Upsert (kind, Alert) rows by alert_id, in one transaction."""
    if not alerts:
        return
    async with conn.transaction():
        for kind, a in alerts:
            await conn.execute(
                """
                INSERT INTO alerts (alert_id, rule_id, device_id, metric, kind, severity, title,
                    message, state, threshold_value, actual_value, created_at, updated_at,
                    acknowledged_at, acknowledged_by, resolved_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                ON CONFLICT (alert_id) DO UPDATE SET rule_id = EXCLUDED.rule_id,
                    severity = EXCLUDED.severity, title = EXCLUDED.title,
                    message = EXCLUDED.message, state = EXCLUDED.state,
                    threshold_value = EXCLUDED.threshold_value,
                    actual_value = EXCLUDED.actual_value, updated_at = EXCLUDED.updated_at,
                    acknowledged_at = COALESCE(EXCLUDED.acknowledged_at, alerts.acknowledged_at),
                    acknowledged_by = COALESCE(EXCLUDED.acknowledged_by, alerts.acknowledged_by),
                    resolved_at = EXCLUDED.resolved_at
                """,
                a.alert_id,
                a.rule_id,
                a.device_id,
                a.metric,
                kind,
                a.severity,
                a.title,
                a.message,
                a.state,
                a.threshold_value,
                a.actual_value,
                _ts(a.created_at),
                _ts(a.updated_at),
                _ts(a.acknowledged_at),
                a.acknowledged_by,
                _ts(a.resolved_at),
            )


async def find_alerts(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    state: str | None,
    severity: str | None,
    device_id: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[Any]:
    """Alerts newest first; each filter applies when given (state ``open``: not resolved)."""
    return await conn.fetch(
        "SELECT * FROM alerts WHERE ($1::text IS NULL OR "
        "  (CASE WHEN $1 = 'open' THEN state <> 'resolved' ELSE state = $1 END)) "
        "AND ($2::text IS NULL OR severity = $2) AND ($3::text IS NULL OR device_id = $3) "
        "AND ($4::timestamptz IS NULL OR created_at >= $4) "
        "AND ($5::timestamptz IS NULL OR created_at <= $5) "
        "ORDER BY created_at DESC LIMIT $6",
        state,
        severity,
        device_id,
        start,
        end,
        limit,
    )


async def open_alerts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM alerts WHERE state <> 'resolved'")
    return [dict(r) for r in rows]


async def acknowledge(
    conn: asyncpg.Connection | asyncpg.Pool, alert_id: str, by: str, note: str | None = None
) -> dict[str, Any] | None:
    """active -> acknowledged (with an optional note); None when there is no such active
    alert."""
    row = await conn.fetchrow(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), "
        "acknowledged_by = $2, acknowledged_note = $3, updated_at = now() "
        "WHERE alert_id = $1 AND state = 'active' RETURNING *",
        alert_id,
        by,
        note,
    )
    return dict(row) if row else None


async def get_alert(
    conn: asyncpg.Connection | asyncpg.Pool, alert_id: str
) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM alerts WHERE alert_id = $1", alert_id)
    return dict(row) if row else None


async def acknowledged_open(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT alert_id, acknowledged_at, acknowledged_by FROM alerts WHERE state = 'acknowledged'"
    )
    return [dict(r) for r in rows]


async def last_readings(
    conn: asyncpg.Connection | asyncpg.Pool, metrics: list[str]
) -> dict[tuple[str, str], float]:
    """When each (device, metric) was last heard from: no_data rules resume after a restart."""
    if not metrics:
        return {}
    rows = await conn.fetch(
        "SELECT device_id, metric, extract(epoch FROM received_at) AS at FROM latest_values "
        "WHERE metric = ANY($1::text[])",
        metrics,
    )
    return {(r["device_id"], r["metric"]): float(r["at"]) for r in rows}
