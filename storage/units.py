"""The unit each (device, metric) reports, for output that shows values with their units."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def latest_units(
    conn: asyncpg.Connection | asyncpg.Pool, devices: Sequence[str]
) -> dict[tuple[str, str], str]:
    """(device_id, metric) -> the unit of its latest reading (one row per series, from
    ``latest_values``: no scan of the readings). Series without a unit are left out."""
    rows = await conn.fetch(
        "SELECT device_id, metric, unit FROM latest_values "
        "WHERE device_id = ANY($1::text[]) AND unit IS NOT NULL AND unit <> ''",
        list(devices),
    )
    return {(r["device_id"], r["metric"]): r["unit"] for r in rows}
