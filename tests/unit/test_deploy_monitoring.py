"""The monitoring files in deploy/: Prometheus rules and config (checked and unit-tested by
promtool), and the Grafana dashboard, which cannot run here (Grafana is not packaged for
Debian): its structure, every PromQL expression parsed by promtool, every metric name and
label against the agreed catalogue, every SQL relation against the migrations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "telemetry-bridge.json"
MIGRATIONS = ROOT / "storage" / "migrations"

# The metric catalogue: name -> (type, labels). The rules and the dashboard are checked
# against it here; tests/integration/test_prometheus.py checks that `up` exposes exactly these
# types and labels.
CATALOGUE: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels))
    for name, kind, labels in [
        # ingest
        ("bridge_ingest_messages_received_total", "counter", ()),
        ("bridge_ingest_messages_committed_total", "counter", ()),
        ("bridge_ingest_readings_received_total", "counter", ()),
        ("bridge_ingest_readings_stored_total", "counter", ()),
        ("bridge_ingest_readings_duplicate_total", "counter", ()),
        ("bridge_ingest_dead_letters_total", "counter", ("reason",)),
        ("bridge_ingest_dead_letters_dropped_total", "counter", ()),
        ("bridge_ingest_batch_messages", "histogram", ()),
        ("bridge_ingest_commit_duration_seconds", "histogram", ()),
        ("bridge_ingest_reading_delay_seconds", "histogram", ()),
        ("bridge_ingest_inflight_messages", "gauge", ()),
        ("bridge_ingest_db_retries_total", "counter", ()),
        ("bridge_ingest_database_up", "gauge", ()),
        ("bridge_ingest_last_commit_timestamp_seconds", "gauge", ()),
        ("bridge_ingest_rules_evaluated_total", "counter", ()),
        ("bridge_ingest_alerts_raised_total", "counter", ()),
        ("bridge_ingest_stream_dropped_total", "counter", ()),
        ("bridge_ingest_broker_connected", "gauge", ()),
        # scheduler
        ("bridge_scheduler_job_duration_seconds", "histogram", ("task",)),
        ("bridge_scheduler_job_runs_total", "counter", ("task", "outcome")),
        ("bridge_scheduler_job_last_success_timestamp_seconds", "gauge", ("task",)),
        ("bridge_scheduler_rollup_lag_seconds", "gauge", ("rollup",)),
        # front
        ("bridge_connections", "gauge", ("dialect",)),
        ("bridge_connections_accepted_total", "counter", ()),
        ("bridge_handshakes_refused_total", "counter", ("reason",)),
        ("bridge_auth_failures_total", "counter", ("reason",)),
        ("bridge_subscriptions", "gauge", ("channel",)),
        ("bridge_broker_subscriptions", "gauge", ()),
        ("bridge_broker_connected", "gauge", ()),
        ("bridge_broker_messages_received_total", "counter", ()),
        ("bridge_deliveries_total", "counter", ()),
        ("bridge_messages_sent_total", "counter", ()),
        ("bridge_messages_received_total", "counter", ()),
        ("bridge_frames_conflated_total", "counter", ()),
        ("bridge_frames_dropped_total", "counter", ()),
        ("bridge_slow_clients_closed_total", "counter", ()),
        ("bridge_message_handling_seconds", "histogram", ("type",)),
        ("bridge_database_up", "gauge", ()),
        # Prometheus's own, per target
        ("up", "gauge", ()),
    ]
}
# What Prometheus adds to every scraped series (and renames a clashing `job` to).
TARGET_LABELS = {"job", "instance", "task", "role", "deployment"}
FUNCTIONS = {
    "abs", "absent", "avg", "clamp_min", "count", "deriv", "histogram_quantile", "increase",
    "irate", "max", "max_over_time", "min", "min_over_time", "rate", "scalar", "sum", "time",
    "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset"}
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _dashboard_promql() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"] if "expr" in t]


def _dashboard_sql() -> list[str]:
    return [t["rawSql"] for p in _panels() for t in p["targets"] if "rawSql" in t]


def _alert_exprs() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's range variables replaced, as Prometheus sees it."""
    for variable, value in GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    return expr


def promql_names(expr: str) -> tuple[set[str], set[str], set[str]]:
    """The metric names, label names and function names an expression uses. A small lexer,
    not a parser (promtool parses): strings, matchers, ranges and grouping clauses are taken
    out first so that what remains are metric names, functions, keywords and numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^{}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^{}]*\}", " ", expr)
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)
    clause = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)"
    for names in re.findall(clause, expr):
        labels |= {n.strip() for n in names.split(",") if n.strip()}
    expr = re.sub(clause, " ", expr)
    expr = re.sub(r"\b(?:group_left|group_right)\b", " ", expr)
    functions = set(re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*\(", expr)) - KEYWORDS
    words = set(re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)(?!\s*\(|[\w:])", expr))
    return words - KEYWORDS - FUNCTIONS, labels, functions


def _catalogue_entry(name: str) -> tuple[str, frozenset[str]] | None:
    """The catalogue's metric a series name belongs to (histograms have _bucket, _sum, _count)."""
    if name in CATALOGUE and CATALOGUE[name][0] != "histogram":
        return CATALOGUE[name]
    base, _, suffix = name.rpartition("_")
    if suffix in {"bucket", "sum", "count"} and CATALOGUE.get(base, ("", None))[0] == "histogram":
        labels = CATALOGUE[base][1] | ({"le"} if suffix == "bucket" else set())
        return "histogram", frozenset(labels)
    return None


def _check_expression(expr: str) -> list[str]:
    """What is wrong with one expression: brackets, unknown metrics, functions or labels,
    rate() of a gauge."""
    problems = []
    for opening, closing in ("()", "{}", "[]"):
        depth = 0
        for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
            depth += (char == opening) - (char == closing)
            if depth < 0:
                break
        if depth != 0:
            problems.append(f"unbalanced {opening}{closing}")
    metrics, labels, functions = promql_names(expr)
    known_labels = set(TARGET_LABELS)
    for name in metrics:
        entry = _catalogue_entry(name)
        if entry is None:
            problems.append(f"metric {name} is not in the catalogue")
        else:
            known_labels |= entry[1]
    problems += [f"unknown function {f}" for f in functions - FUNCTIONS]
    problems += [f"label {label} is on none of its metrics" for label in labels - known_labels]
    for fn, name in re.findall(r"\b(rate|irate|increase)\(\s*([A-Za-z_:][\w:]*)", expr):
        entry = _catalogue_entry(name)
        if entry is not None and entry[0] not in {"counter", "histogram"}:
            problems.append(f"{fn}() of {name}, a {entry[0]}")
    return problems


# ---- Prometheus ---------------------------------------------------------------------------------


def test_promtool_checks_the_alerting_rules() -> None:
    result = _run(_promtool(), "check", "rules", "deploy/prometheus/alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerting_rules_pass() -> None:
    result = _run(_promtool(), "test", "rules", "deploy/prometheus/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_example_config_and_its_rule_file() -> None:
    result = _run(_promtool(), "check", "config", "deploy/prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # rule_files resolved relative to the config


def test_every_alert_is_unit_tested_and_tells_the_operator_what_to_do() -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule.get("for"), f"{name} has no for:"
        assert {"summary", "description"} <= rule["annotations"].keys(), name
        assert "telemetry-bridge doctor" in rule["annotations"]["description"], name
        assert name in firing, f"no test makes {name} fire"
        assert name in quiet, f"no test checks that {name} stays quiet"


def test_alert_expressions_use_catalogue_metrics_and_labels() -> None:
    problems = {expr: p for expr in _alert_exprs() if (p := _check_expression(expr))}
    assert not problems


# ---- Grafana -------------------------------------------------------------------------------------


def test_dashboard_declares_its_datasource_variables() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["DS_POSTGRES"]["type"] == "datasource"
    assert variables["DS_POSTGRES"]["query"] == "grafana-postgresql-datasource"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Ingest", "Front", "Scheduler", "Data (PostgreSQL)"]


def test_every_panel_has_a_datasource_and_targets() -> None:
    expected = {
        "prometheus": ("${DS_PROMETHEUS}", "expr"),
        "grafana-postgresql-datasource": ("${DS_POSTGRES}", "rawSql"),
    }
    ids = set()
    for panel in _panels():
        title = panel["title"]
        assert panel["id"] not in ids, title
        ids.add(panel["id"])
        kind = panel["datasource"]["type"]
        uid, field = expected[kind]
        assert panel["datasource"]["uid"] == uid, title
        assert panel["targets"], title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), title
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title
            assert target[field].strip(), title


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        cells = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_dashboard_promql_uses_catalogue_metrics_and_labels() -> None:
    exprs = _dashboard_promql()
    assert len(exprs) > 20
    problems = {expr: p for expr in exprs if (p := _check_expression(_as_promql(expr)))}
    assert not problems


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    """promtool has no expression check of its own, but it parses recording rules: each
    expression becomes one, with Grafana's range variables replaced."""
    promtool = _promtool()
    rules = [
        {"record": f"dashboard_expression_{i}", "expr": _as_promql(expr)}
        for i, expr in enumerate(_dashboard_promql())
    ]
    assert not any("$" in r["expr"] for r in rules), "a Grafana variable left unreplaced"
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def migration_relations() -> set[str]:
    """Every table and view the migrations create (partitions are made by functions)."""
    pattern = r"\bCREATE\s+(?:MATERIALIZED\s+)?(?:TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)"
    text = "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql")))
    return set(re.findall(pattern, text, flags=re.IGNORECASE))


def sql_relations(query: str) -> set[str]:
    """The relations a query reads (after FROM and JOIN)."""
    return set(re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", query, flags=re.IGNORECASE))


def test_lexers_find_what_they_should() -> None:
    """The helpers above are what makes the other tests able to fail."""
    metrics, labels, functions = promql_names(
        'sum by (reason) (rate(bridge_x_total{reason!="a"}[5m])) / ignoring (reason)'
        " group_left sum(rate(bridge_y_total[5m])) > 0.01 and on () up == 0"
    )
    assert metrics == {"bridge_x_total", "bridge_y_total", "up"}
    assert labels == {"reason"}
    assert functions == {"sum", "rate"}
    assert _check_expression("rate(bridge_ingest_inflight_messages[5m])")
    assert _check_expression("sum(rate(bridge_ingest_readings_stored[5m])")
    assert _check_expression("bridge_connections{dialekt='x'}")
    assert not _check_expression("bridge_ingest_batch_messages_bucket{le='1'}")
    assert "devices" in migration_relations()
    assert sql_relations("SELECT 1 FROM a JOIN b USING (x) WHERE y IN (SELECT z FROM c)") == {
        "a",
        "b",
        "c",
    }


def test_dashboard_sql_reads_only_relations_from_the_migrations() -> None:
    known = migration_relations()
    assert {"device_latest", "telemetry_1h", "open_alerts", "devices"} <= known
    queries = _dashboard_sql()
    assert queries
    for query in queries:
        relations = sql_relations(query)
        assert relations, query
        assert relations <= known, f"{relations - known} in {query}"
