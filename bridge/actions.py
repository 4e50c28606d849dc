"""Request/response operations of the front that touch the database: alerts and rules.

Handlers in ``session.py`` call these; they raise :class:`~bridge.protocol.ClientError` for
anything the client must hear about and never leak internals.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from bridge.auth import Principal
from bridge.protocol import ClientError
from ingest import names
from ingest.rule_rows import alert_from_row, new_rule_id, rule_row
from ingest.rules import RuleError
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from ingest.wire import alert_event
from storage import alerts as store
from storage.alerts import RULE_COLUMNS


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


class FrontActions:
    def __init__(self, pool: asyncpg.Pool, topics: Topics, stream: StreamPublisher) -> None:
        self.pool = pool
        self.topics = topics
        self.stream = stream

    async def ack_alert(
        self, alert_id: Any, principal: Principal, note: str | None = None
    ) -> dict[str, Any]:
        """Acknowledge an active alert and announce it on the alert's stream topic, so every
        live dashboard sees it (the WebSocket ``ack_alert`` and ``telemetry-bridge alerts
        ack`` both come here)."""
        if not principal.has("alerts:write"):
            raise ClientError(403, "forbidden", "the token lacks the scope alerts:write")
        if not isinstance(alert_id, str) or not 0 < len(alert_id) <= 64:
            raise ClientError(422, "validation_error", "alert_id must be a string")
        existing = await store.get_alert(self.pool, alert_id)
        if existing is None or not principal.sees(existing["device_id"]):
            raise ClientError(404, "not_found", "no such alert")  # same answer: no probing
        row = await store.acknowledge(self.pool, alert_id, principal.sub, note)
        if row is None:
            raise ClientError(409, "conflict", f"the alert is {existing['state']}, not active")
        alert = alert_from_row(row)
        self.stream.publish_many(
            [
                (
                    self.topics.alert(alert.severity, alert.device_id),
                    alert_event("acknowledged", alert),
                )
            ],
            retain=False,
        )
        return _jsonable(row)

    # -- rules (admin) -------------------------------------------------------------------------
    @staticmethod
    def _admin(principal: Principal) -> None:
        if "admin" not in principal.scopes:
            raise ClientError(403, "forbidden", "managing rules needs the admin scope")

    async def list_rules(self, principal: Principal) -> list[dict[str, Any]]:
        self._admin(principal)
        return [_jsonable(r) for r in await store.load_rules(self.pool)]

    async def save_rule(self, principal: Principal, rule: Any, *, create: bool) -> dict[str, Any]:
        self._admin(principal)
        if not isinstance(rule, dict):
            raise ClientError(422, "validation_error", "rule must be an object")
        fields = {("rule_id" if k == "id" else k): v for k, v in rule.items()}
        if create and fields.get("rule_id") is None:
            fields["rule_id"] = new_rule_id()  # the reply tells the client which
        if not names.is_device_id(fields.get("rule_id")):
            raise ClientError(
                422, "validation_error", "rule_id must be an id (A-Z a-z 0-9 _ . : -)"
            )
        if not create:
            existing = await store.get_rule(self.pool, fields["rule_id"])
            if existing is None:
                raise ClientError(404, "not_found", "no such rule")
            fields = {**existing, **fields}
        try:
            row = rule_row(fields, RULE_COLUMNS)
        except RuleError as exc:
            raise ClientError(422, "validation_error", str(exc)[:300]) from None
        # The ingest processes hear of the change from the rules table's trigger (NOTIFY) and
        # apply it within about a second.
        if not create:
            await store.upsert_rule(self.pool, row)
        elif not await store.insert_rule(self.pool, row):  # one statement: no create race
            raise ClientError(409, "conflict", "a rule with this rule_id exists; use update_rule")
        return _jsonable(row)

    async def delete_rule(self, principal: Principal, rule_id: Any) -> None:
        self._admin(principal)
        if not isinstance(rule_id, str) or not await store.delete_rule(self.pool, rule_id):
            raise ClientError(404, "not_found", "no such rule")
