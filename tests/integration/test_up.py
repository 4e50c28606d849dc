"""`telemetry-bridge up` with embedded services: data flows, and state survives a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _start_up(state: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_STATE_DIR"] = str(state)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "up"], env=env, stdout=out, stderr=out
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)


def _simulate(state: Path, count: int) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_STATE_DIR"] = str(state)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "simulate",
            "--devices",
            "5",
            "--rate",
            "50",
            "--count",
            str(count),
            "--metrics",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.mark.timeout(180)
async def test_up_runs_embedded_services_and_keeps_state_across_restarts(tmp_path: Path) -> None:
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL wheel is not installed")
    state, log = tmp_path / "state", tmp_path / "up.log"
    runtime = state / "runtime.json"

    async def started() -> bool:
        assert proc.poll() is None, log.read_text()
        return runtime.is_file() and "ingest subscribed" in log.read_text()

    proc = _start_up(state, log)
    try:
        await wait_until(started, timeout=60)
        out = _simulate(state, 100)
        assert "sent 100 messages (300 readings)" in out and "unacked 0" in out
        db_url = json.loads(runtime.read_text())["database_url"]

        async def stored(n: int) -> bool:
            conn = await asyncpg.connect(db_url)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM readings")) >= n
            finally:
                await conn.close()

        await wait_until(lambda: stored(300), timeout=30)
    finally:
        _stop(proc)
    assert not runtime.exists(), "runtime.json must go away with the process"

    log.write_text("")
    proc = _start_up(state, log)
    try:
        await wait_until(started, timeout=60)
        db_url = json.loads(runtime.read_text())["database_url"]
        _simulate(state, 100)
        await wait_until(lambda: stored(600), timeout=30)
        conn = await asyncpg.connect(db_url)
        try:
            assert int(await conn.fetchval("SELECT count(*) FROM readings")) == 600
            assert int(await conn.fetchval("SELECT count(*) FROM devices")) == 5
        finally:
            await conn.close()
    finally:
        _stop(proc)
