"""The command line as an operator uses it: `token`, `serve`, `migrate`, and clear config errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from bridge.auth import JwtVerifier
from bridge.embedded import free_port
from tests.helpers import BrokerInfo, wait_until

pytestmark = pytest.mark.integration
SECRET = "cli-test-secret-" + "z" * 40


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_mints_what_the_front_accepts() -> None:
    done = run_cli(
        "token",
        "--sub",
        "alice",
        "--scope",
        "telemetry:read",
        "--devices",
        "a-*,b1",
        env={"BRIDGE_JWT_SECRET": SECRET},
    )
    assert done.returncode == 0, done.stderr
    principal = JwtVerifier("HS256", SECRET).verify(done.stdout.strip())
    assert principal.sub == "alice" and principal.devices == ("a-*", "b1")


def test_token_without_a_secret_says_how_to_fix(tmp_path: Path) -> None:
    done = run_cli("token", "--sub", "a", env={"BRIDGE_STATE_DIR": str(tmp_path)})
    assert done.returncode == 2 and "BRIDGE_JWT_SECRET" in done.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BRIDGE_MQTT_URL": "http://x", "BRIDGE_JWT_SECRET": SECRET}, "scheme"),
        (
            {"BRIDGE_MQTT_URL": "mqtt://127.0.0.1:1", "BRIDGE_JWT_SECRET": "short"},
            "at least 32 bytes",
        ),
        ({"BRIDGE_MQTT_TOPIC_PREFIX": "a/#", "BRIDGE_JWT_SECRET": SECRET}, "invalid topic prefix"),
    ],
)
def test_serve_refuses_bad_configuration_clearly(
    env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    # a private state dir: no secret left behind by an earlier `up` on this machine
    done = run_cli("serve", env={**env, "BRIDGE_STATE_DIR": str(tmp_path)})
    assert done.returncode == 2 and needle in done.stderr, done.stderr


async def test_serve_runs_and_answers_health(broker: BrokerInfo, database_url: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_MQTT_URL=broker.url,
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_JWT_SECRET=SECRET,
        BRIDGE_WS_PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def healthy() -> bool:
            assert proc.poll() is None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    return bool(orjson.loads(r.read())["status"] == "healthy")
            except OSError:
                return False

        await wait_until(healthy, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, out
    assert SECRET not in out


async def test_rules_add_list_load_remove(database_url: str, tmp_path: Path) -> None:
    env = {"BRIDGE_DATABASE_URL": database_url}
    done = run_cli(
        "rules",
        "add",
        "--id",
        "hot",
        "--metric",
        "temperature",
        "--condition",
        "gt",
        "--threshold",
        "50",
        "--clear",
        "45",
        "--severity",
        "high",
        "--devices",
        "plant-*",
        env=env,
    )
    assert done.returncode == 0 and "rule hot saved" in done.stdout, done.stderr
    bad = run_cli(
        "rules",
        "add",
        "--id",
        "bad",
        "--metric",
        "temperature",
        "--condition",
        "outside",
        "--threshold",
        "5",
        env=env,
    )
    assert bad.returncode == 2 and "threshold_high" in bad.stderr
    file = tmp_path / "rules.toml"
    file.write_text(
        '[[rules]]\nid = "cold"\nmetric = "temperature"\ncondition = "lt"\nthreshold = 0.0\n'
        'severity = "warning"\n\n[[rules]]\nid = "quiet"\nmetric = "temperature"\n'
        'condition = "no_data"\nthreshold = 600.0\nseverity = "info"\n'
    )
    assert run_cli("rules", "load", str(file), env=env).returncode == 0
    listed = run_cli("rules", "list", env=env).stdout
    assert "hot: temperature gt 50 for 0s -> high on plant-*" in listed
    assert "cold:" in listed and "quiet:" in listed
    assert run_cli("rules", "remove", "cold", env=env).returncode == 0
    assert "cold:" not in run_cli("rules", "list", env=env).stdout
    assert run_cli("rules", "remove", "cold", env=env).returncode == 2


async def test_query_prints_table_csv_and_json(database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from storage.readings import ReadingWriter

    t0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    writer = ReadingWriter(database_url)
    try:
        await writer.write(
            [
                ("cli-1", "temperature", t0 + timedelta(seconds=20 * i), float(i), "C", t0)
                for i in range(9)
            ]
        )
    finally:
        await writer.close()
    env = {"BRIDGE_DATABASE_URL": database_url}
    span = ["--device", "cli-1", "--from", t0.isoformat(), "--to", "2026-11-21T09:03:00Z"]

    table = run_cli("query", *span, env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["device_id", "metric", "ts", "value", "unit"] and len(lines) == 10
    assert lines[1].split() == ["cli-1", "temperature", "2026-11-21T09:00:00.000Z", "0", "C"]
    assert lines[9].split()[3:] == ["8", "C"]
    assert "\x1b" not in table.stdout and all(line == line.rstrip() for line in lines)
    counts = run_cli("query", *span, "--bucket", "1m", "--agg", "count", env=env)
    assert [line.split()[3:] for line in counts.stdout.splitlines()[1:]] == [["3"]] * 3

    csv_out = run_cli("query", *span, "--bucket", "1m", "--agg", "sum", "--format", "csv", env=env)
    assert csv_out.stdout.splitlines() == [
        "device_id,metric,ts,value",
        "cli-1,temperature,2026-11-21T09:00:00.000Z,3.0",
        "cli-1,temperature,2026-11-21T09:01:00.000Z,12.0",
        "cli-1,temperature,2026-11-21T09:02:00.000Z,21.0",
    ]
    page = run_cli("query", *span, "--limit", "4", "--format", "json", env=env)
    body = orjson.loads(page.stdout)
    assert body["count"] == 4 and body["truncated"] and body["next_cursor"]
    rest = run_cli("query", *span, "--cursor", body["next_cursor"], "--format", "json", env=env)
    assert orjson.loads(rest.stdout)["count"] == 5

    bad = run_cli("query", *span, "--bucket", "1m", "--agg", "median", env=env)
    assert bad.returncode == 2 and "agg: one of avg" in bad.stderr
    late = run_cli("query", "--device", "cli-1", "--from", "now", "--to", "-1h", env=env)
    assert late.returncode == 2 and "from must be before to" in late.stderr
    recent = run_cli("query", "--device", "cli-1", "--from", "-1h", env=env)
    assert recent.returncode == 0 and recent.stdout == ""  # nothing in the last hour
