"""Rules and alerts as rows: what storage returns (``rule_from_row``, ``alert_from_row``) and
what users type (``rule_row``: CLI, TOML, WebSocket), checked into the engine's value objects
(ingest/rules.py), which know nothing of rows."""

from __future__ import annotations

import uuid

from ingest.rules import Alert, Rule, RuleError
from storage import names


def rule_from_row(row: dict[str, object]) -> Rule:
    """A rule as stored (storage/alerts.py RULE_COLUMNS) -> Rule; raises RuleError if invalid."""
    return Rule(
        rule_id=str(row["rule_id"]),
        name=str(row.get("name") or ""),
        metric=str(row["metric"]),
        condition=row["condition"],  # type: ignore[arg-type]
        threshold=float(row["threshold"]),  # type: ignore[arg-type]
        threshold_high=None if row.get("threshold_high") is None else float(row["threshold_high"]),  # type: ignore[arg-type]
        clear_threshold=None
        if row.get("clear_threshold") is None
        else float(row["clear_threshold"]),  # type: ignore[arg-type]
        for_s=float(row.get("for_s") or 0),  # type: ignore[arg-type]
        severity=str(row["severity"]),
        devices=tuple(row.get("devices") or ("*",)),  # type: ignore[arg-type]
        title=str(row.get("title") or Rule.title),
        message=str(row.get("message") or Rule.message),
        enabled=bool(row.get("enabled", True)),
    )


def alert_from_row(row: dict[str, object]) -> Alert:
    def epoch(v: object) -> float | None:
        return None if v is None else v.timestamp()  # type: ignore[attr-defined]

    return Alert(
        alert_id=str(row["alert_id"]),
        rule_id=str(row["rule_id"]),
        device_id=str(row["device_id"]),
        metric=str(row["metric"]),
        severity=str(row["severity"]),
        title=str(row["title"]),
        message=str(row["message"]),
        state=str(row["state"]),
        created_at=epoch(row["created_at"]) or 0.0,
        updated_at=epoch(row["updated_at"]) or 0.0,
        threshold_value=float(row["threshold_value"] or 0.0),  # type: ignore[arg-type]
        actual_value=None if row["actual_value"] is None else float(row["actual_value"]),  # type: ignore[arg-type]
        acknowledged_at=epoch(row.get("acknowledged_at")),
        acknowledged_by=row.get("acknowledged_by"),  # type: ignore[arg-type]
        resolved_at=epoch(row.get("resolved_at")),
    )


RULE_DEFAULTS: dict[str, object] = {
    "name": "",
    "threshold_high": None,
    "clear_threshold": None,
    "for_s": 0.0,
    "severity": "warning",
    "title": Rule.title,
    "message": Rule.message,
    "enabled": True,
}


def new_rule_id() -> str:
    """The id of a rule created without one (``create_rule``, ``rules add`` without ``--id``):
    ``rule-`` and 16 random hex digits, a valid id by the same check as any given id."""
    rule_id = f"rule-{uuid.uuid4().hex[:16]}"
    if not names.is_device_id(rule_id):  # pragma: no cover - the format above always passes
        raise RuleError(f"generated rule id {rule_id} is invalid")
    return rule_id


def rule_row(fields: dict[str, object], columns: tuple[str, ...]) -> dict[str, object]:
    """User input (CLI, TOML, WebSocket) -> a complete, validated row of ``columns``.

    ``id`` is accepted for ``rule_id``; ``devices`` may be a comma-separated string. Raises
    :class:`RuleError` saying what is missing, unknown or invalid.
    """
    fields = {("rule_id" if k == "id" else k): v for k, v in fields.items()}
    devices = fields.get("devices", ["*"])
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    row = {**RULE_DEFAULTS, **fields, "devices": devices}
    if unknown := sorted(set(row) - set(columns)):
        raise RuleError(f"unknown rule fields: {', '.join(unknown)}")
    if missing := [c for c in columns if c not in row]:
        raise RuleError(f"rule {fields.get('rule_id', '?')} lacks {', '.join(missing)}")
    if not names.is_device_id(row["rule_id"]):
        raise RuleError("rule_id must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    try:
        rule_from_row(row)
    except (TypeError, ValueError) as exc:
        raise RuleError(str(exc)) from None
    return {c: row[c] for c in columns}
