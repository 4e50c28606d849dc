"""`telemetry-bridge doctor` against real services: what works says ok, what is wrong says
FAIL with the fix, and the exit status tells a script which."""

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
from tests.helpers import BrokerInfo

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
