"""`telemetry-bridge doctor` against real services: what works says ok, what is wrong says
FAIL with the fix, and the exit status tells a script which; with a running ingest's metrics,
its broker link, database, in-flight messages and dead letters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from bridge.embedded import free_port
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.integration.metrics_kit import (
    bridge_env,
    bridge_process,
    key,
    scrape_until,
    wait_scrapable,
)

pytestmark = pytest.mark.integration
SECRET = "doctor-secret-" + "d" * 40


def _doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", "doctor", "--no-front"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.split()[1:2] == [name])


def test_healthy_deployment(broker: BrokerInfo, database_url: str, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "bridge", "migrate"],
        env={**os.environ, "BRIDGE_DATABASE_URL": database_url},
        check=True,
        capture_output=True,
    )
    result = _doctor(
        {
            "BRIDGE_DATABASE_URL": database_url,
            "BRIDGE_MQTT_URL": broker.url,
            "BRIDGE_JWT_SECRET": SECRET,
            "BRIDGE_STATE_DIR": str(tmp_path),
        }
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("jwt", "database", "migrations", "clock", "broker"):
        assert _line(result.stdout, name).startswith("ok"), result.stdout
    assert _line(result.stdout, "round").startswith("ok")
    # the test broker is the development one: anonymous clients are accepted, said as a warning
    assert _line(result.stdout, "acl").startswith("warn")


async def test_broken_deployment_says_what_to_fix(admin_database_url: str, tmp_path: Path) -> None:
    name = f"tb_doctor_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')  # reachable, but never migrated
    try:
        result = await asyncio.to_thread(
            _doctor,
            {
                "BRIDGE_DATABASE_URL": admin_database_url.rsplit("/", 1)[0] + f"/{name}",
                "BRIDGE_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",  # nothing listens
                "BRIDGE_STATE_DIR": str(tmp_path),  # no JWT secret anywhere
            },
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert result.returncode == 1
    out = result.stdout
    assert _line(out, "jwt").startswith("FAIL")
    assert _line(out, "migrations").startswith("FAIL") and "telemetry-bridge migrate" in out
    assert _line(out, "broker").startswith("FAIL") and "is mosquitto running" in out


def test_invalid_settings_are_named_without_their_values() -> None:
    result = _doctor({"BRIDGE_MQTT_URL": "http://user:hunter2@host", "BRIDGE_WS_PORT": "x"})
    assert result.returncode == 2
    assert "BRIDGE_MQTT_URL: unsupported MQTT URL scheme 'http'" in result.stderr
    assert "BRIDGE_WS_PORT:" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.timeout(120)
async def test_doctor_reads_the_running_ingests_metrics(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = bridge_env(
        database_url,
        broker.url,
        topic_prefix,
        tmp_path,
        BRIDGE_METRICS_PORT=str(port),
        BRIDGE_JWT_SECRET=SECRET,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    peer = MqttPeer(broker.url)
    log = tmp_path / "ingest.log"
    try:
        with bridge_process("ingest", env, log) as proc:
            await wait_scrapable(url, proc, log)
            result = await asyncio.to_thread(_doctor, env)
            out = result.stdout
            assert result.returncode == 0, out + result.stderr
            assert _line(out, "broker-link").startswith("ok"), out
            assert _line(out, "database-up").startswith("ok"), out
            assert _line(out, "in-flight").startswith("ok"), out
            assert _line(out, "dead-letters").startswith("ok"), out

            async def subscribed() -> bool:
                return "ingest subscribed" in log.read_text()

            await wait_until(subscribed, timeout=30)
            peer.publish(Topics(topic_prefix).device_telemetry("doc-1"), b"{not json")

            await scrape_until(
                url, {key("bridge_ingest_dead_letters_total", reason="invalid_json"): 1}
            )
            out = (await asyncio.to_thread(_doctor, env)).stdout
            assert _line(out, "dead-letters").startswith("warn"), out
            assert "1 since the ingest started (invalid_json: 1)" in out
            assert "dead_letters table" in out  # the fix
        # the ingest stopped: its metrics port no longer answers, which is said, not failed
        out = (await asyncio.to_thread(_doctor, env)).stdout
        assert _line(out, "metrics").startswith("warn"), out
        assert "BRIDGE_METRICS_PORT" in out
    finally:
        peer.close()
