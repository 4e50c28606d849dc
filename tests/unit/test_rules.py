"""The rule engine as tables: thresholds, for, hysteresis, no-data, escalation, resolution,
acknowledgement and restart. Time is passed in; nothing sleeps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ingest.rules import Rule, RuleEngine, RuleError

HOT = Rule("hot", "temperature", "gt", 50.0, severity="warning", clear_threshold=45.0)
CRIT = Rule("crit", "temperature", "gt", 80.0, severity="critical", clear_threshold=75.0)


def run(engine: RuleEngine, feed: list[tuple[float, float]], device: str = "d1") -> list[str]:
    """Feed (time, value) pairs; return 'event:severity' strings in order."""
    out = []
    for now, value in feed:
        out += [
            f"{e.event}:{e.alert.severity}" for e in engine.feed(device, "temperature", value, now)
        ]
    return out


@pytest.mark.parametrize(
    ("condition", "threshold", "high", "value", "breached"),
    [
        ("gt", 10, None, 10.1, True),
        ("gt", 10, None, 10, False),
        ("gte", 10, None, 10, True),
        ("lt", 10, None, 9.9, True),
        ("lt", 10, None, 10, False),
        ("lte", 10, None, 10, True),
        ("outside", 10, 20, 9, True),
        ("outside", 10, 20, 15, False),
        ("outside", 10, 20, 21, True),
        ("inside", 10, 20, 15, True),
        ("inside", 10, 20, 25, False),
    ],
)
def test_conditions(
    condition: str, threshold: float, high: float | None, value: float, breached: bool
) -> None:
    rule = Rule("r", "m", condition, threshold, threshold_high=high)  # type: ignore[arg-type]
    assert rule.breached(value) is breached


CASES = [
    ("below-never-fires", [HOT], [(0, 20), (1, 49.9)], []),
    ("fires-once", [HOT], [(0, 51), (1, 60), (2, 55)], ["created:warning"]),
    (
        "hysteresis-no-flap",
        [HOT],
        [(0, 51), (1, 49), (2, 51), (3, 48), (4, 51)],
        ["created:warning"],
    ),
    ("resolves-past-clear", [HOT], [(0, 51), (1, 44.9)], ["created:warning", "resolved:warning"]),
    (
        "refires-after-resolve",
        [HOT],
        [(0, 51), (1, 40), (2, 52)],
        ["created:warning", "resolved:warning", "created:warning"],
    ),
    ("escalates", [HOT, CRIT], [(0, 60), (1, 85)], ["created:warning", "updated:critical"]),
    ("critical-directly", [HOT, CRIT], [(0, 90)], ["created:critical"]),
    ("critical-hysteresis-holds", [HOT, CRIT], [(0, 90), (1, 78), (2, 81)], ["created:critical"]),
    (
        "steps-down-then-resolves",
        [HOT, CRIT],
        [(0, 90), (1, 74), (2, 60), (3, 44)],
        ["created:critical", "updated:warning", "resolved:warning"],
    ),
]


@pytest.mark.parametrize(("name", "rules", "feed", "expected"), CASES, ids=[c[0] for c in CASES])
def test_lifecycle(
    name: str, rules: list[Rule], feed: list[tuple[float, float]], expected: list[str]
) -> None:
    engine = RuleEngine()
    engine.set_rules(rules)
    assert run(engine, feed) == expected


def test_for_duration_must_hold() -> None:
    engine = RuleEngine()
    engine.set_rules([Rule("slow", "temperature", "gt", 50.0, for_s=10)])
    assert run(engine, [(0, 60), (5, 60), (6, 40), (7, 60), (16, 60)]) == []  # broken at 6
    assert run(engine, [(17, 60)]) == ["created:warning"]  # held 7 -> 17
    engine2 = RuleEngine()
    engine2.set_rules([Rule("slow", "temperature", "gt", 50.0, for_s=10)])
    run(engine2, [(0, 60)])
    assert [e.event for e in engine2.tick(9.9)] == []
    assert [e.event for e in engine2.tick(10.0)] == ["created"]  # no new reading needed


def test_no_data_fires_on_silence_and_resolves_on_data() -> None:
    engine = RuleEngine()
    engine.set_rules([Rule("quiet", "temperature", "no_data", 30.0, severity="high")])
    engine.feed("d1", "temperature", 20, now=0)
    assert engine.tick(29) == []
    events = engine.tick(30)
    assert [(e.event, e.alert.severity, e.alert.actual_value) for e in events] == [
        ("created", "high", None)
    ]
    assert engine.tick(60) == []  # one open alert, not one per tick
    assert [e.event for e in engine.feed("d1", "temperature", 21, now=61)] == ["resolved"]


def test_device_selectors() -> None:
    engine = RuleEngine()
    engine.set_rules([Rule("plant", "temperature", "gt", 50.0, devices=("plant-a-*", "x1"))])
    assert run(engine, [(0, 60)], device="plant-a-7") == ["created:warning"]
    assert run(engine, [(0, 60)], device="plant-b-7") == []
    assert run(engine, [(0, 60)], device="x1") == ["created:warning"]


def test_acknowledge_then_resolve_and_escalation_needs_a_new_ack() -> None:
    engine = RuleEngine()
    engine.set_rules([HOT, CRIT])
    [created] = engine.feed("d1", "temperature", 60, now=0)
    ack = engine.acknowledge(created.alert.alert_id, "alice", now=1)
    assert (
        ack is not None
        and ack.alert.state == "acknowledged"
        and ack.alert.acknowledged_by == "alice"
    )
    assert engine.acknowledge(created.alert.alert_id, "alice", now=2) is None  # already
    [esc] = engine.feed("d1", "temperature", 90, now=3)
    assert esc.event == "updated" and esc.alert.state == "active"
    assert esc.alert.alert_id == created.alert.alert_id  # still one alert
    [res] = engine.feed("d1", "temperature", 10, now=4)
    assert res.event == "resolved" and res.alert.resolved_at == 4


def test_restart_restores_open_alerts() -> None:
    first = RuleEngine()
    first.set_rules([HOT])
    [created] = first.feed("d1", "temperature", 60, now=0)
    second = RuleEngine()
    second.set_rules([HOT])
    second.restore([created.alert], last_seen={("d1", "temperature"): 0})
    assert second.feed("d1", "temperature", 61, now=1) == []  # no duplicate alert
    assert [e.event for e in second.feed("d1", "temperature", 40, now=2)] == ["resolved"]


def test_templates() -> None:
    rule = Rule(
        "t",
        "temperature",
        "gt",
        50.0,
        title="{device_id} hot",
        message="{value} > {threshold} {nope}",
    )
    engine = RuleEngine()
    engine.set_rules([rule])
    [e] = engine.feed("d9", "temperature", 51.5, now=0)
    assert e.alert.title == "d9 hot"
    assert e.alert.message == "{value} > {threshold} {nope}"  # unknown field: left as written


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metric": "bad metric"},
        {"condition": "between"},
        {"severity": "urgent"},
        {"condition": "outside"},
        {"condition": "no_data", "threshold": 0},
        {"for_s": -1},
        {"devices": ("a/+",)},
    ],
)
def test_invalid_rules(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"rule_id": "r", "metric": "m", "condition": "gt", "threshold": 1.0}
    with pytest.raises((RuleError, ValueError)):
        Rule(**{**base, **kwargs})  # type: ignore[arg-type]


def test_rule_row_from_user_input() -> None:
    from ingest.rule_rows import rule_row
    from storage.alerts import RULE_COLUMNS

    row = rule_row(
        {"id": "r1", "metric": "t", "condition": "gt", "threshold": 1, "devices": "a-*, b"},
        RULE_COLUMNS,
    )
    assert (
        row["rule_id"] == "r1" and row["devices"] == ["a-*", "b"] and row["severity"] == "warning"
    )
    bads: tuple[dict[str, object], ...] = (
        {"id": "r 1", "metric": "t", "condition": "gt", "threshold": 1},
        {"id": "r1", "metric": "t", "condition": "gt"},
        {"id": "r1", "metric": "t", "condition": "gt", "threshold": 1, "colour": "red"},
        {"id": "r1", "metric": "t", "condition": "gt", "threshold": "high"},
    )
    for bad in bads:
        with pytest.raises(RuleError):
            rule_row(bad, RULE_COLUMNS)


def test_generated_rule_ids_are_valid_and_distinct() -> None:
    from ingest import names
    from ingest.rule_rows import new_rule_id, rule_row
    from storage.alerts import RULE_COLUMNS

    ids = {new_rule_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(names.is_device_id(i) and i.startswith("rule-") for i in ids)
    row = rule_row(
        {"rule_id": ids.pop(), "metric": "t", "condition": "gt", "threshold": 1}, RULE_COLUMNS
    )
    assert row["rule_id"].startswith("rule-")


def test_set_rules_swaps_the_whole_set_and_leaves_the_old_one_intact() -> None:
    engine = RuleEngine()
    engine.set_rules([HOT])
    before = engine.rules
    assert run(engine, [(0, 51)]) == ["created:warning"]
    engine.set_rules([CRIT])
    # an evaluation holding the previous mapping still sees a whole, unchanged rule set
    assert before == {"hot": HOT} and engine.rules == {"crit": CRIT}
    assert ("hot", "d1", "temperature") not in engine._tracks  # timers of deleted rules go


@pytest.mark.parametrize("change", ["delete", "disable"])
def test_an_alert_ends_when_its_rule_is_deleted_or_disabled(change: str) -> None:
    engine = RuleEngine()
    engine.set_rules([HOT])
    assert run(engine, [(0, 60)]) == ["created:warning"]
    engine.set_rules([] if change == "delete" else [replace(HOT, enabled=False)])
    # still above the threshold, but no rule holds it open any more; nothing new fires
    assert run(engine, [(1, 60), (2, 70)]) == ["resolved:warning"]


def test_an_event_keeps_its_kind_when_the_rule_is_gone() -> None:
    quiet = Rule("quiet", "temperature", "no_data", 10.0, severity="info")
    engine = RuleEngine()
    engine.set_rules([quiet])
    engine.feed("d1", "temperature", 1.0, 0)
    created = engine.tick(20)
    assert [(e.event, e.kind) for e in created] == [("created", "no_data")]
    engine.set_rules([])  # deleted before the event was stored: the kind does not depend on it
    assert [(e.event, e.kind) for e in engine.feed("d1", "temperature", 1.0, 21)] == [
        ("resolved", "no_data")
    ]
