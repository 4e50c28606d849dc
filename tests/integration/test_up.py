"""`telemetry-bridge up` with embedded services: data flows, state survives a restart, one `up`
per state directory, and the banner only once everything is up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from bridge.embedded import free_port
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def state_root() -> Iterator[Path]:
    """Where `up` keeps its state: outside pytest's temp root. Run as root, the embedded
    PostgreSQL runs as a user of its own that must reach its directory, and every pytest
    session that starts makes pytest's root private again (one started by another run on
    the machine broke a test here with "could not bind Unix address: Permission denied")."""
    root = Path(tempfile.mkdtemp(prefix="tb-up-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _env(state: Path, ws_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.pop("TELEMETRY_BRIDGE_COMMAND", None)
    # unbuffered: the banner (stdout) and the log (stderr) land in the file in their order
    env.update(BRIDGE_STATE_DIR=str(state), BRIDGE_WS_PORT=str(ws_port), PYTHONUNBUFFERED="1")
    return {**env, **extra}


def _start_up(
    state: Path, log: Path, ws_port: int | None = None, **extra: str
) -> subprocess.Popen[bytes]:
    env = _env(state, ws_port or free_port(), **extra)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "up"], env=env, stdout=out, stderr=out
        )


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return str(json.loads(response.read())["status"])
    except OSError:
        return None


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
async def test_up_runs_embedded_services_and_keeps_state_across_restarts(
    tmp_path: Path, state_root: Path
) -> None:
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL wheel is not installed")
    state, log = state_root / "state", tmp_path / "up.log"
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


def _cli(state: Path, ws_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env=_env(state, ws_port),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(180)
async def test_a_second_up_on_the_state_dir_refuses_and_leaves_the_first_alone(
    tmp_path: Path, state_root: Path
) -> None:
    pytest.importorskip("pgserver", reason="the embedded PostgreSQL wheel is not installed")
    state, log, port = state_root / "state", tmp_path / "up.log", free_port()
    runtime = state / "runtime.json"
    first = _start_up(state, log, port, TELEMETRY_BRIDGE_COMMAND="./run")

    async def banner() -> bool:
        assert first.poll() is None, log.read_text()
        return "telemetry-bridge is up" in log.read_text()

    try:
        await wait_until(banner, timeout=60)
        # the banner comes once the front answers and the ingest is subscribed, not before
        assert _health(port) == "healthy", log.read_text()
        text = log.read_text()
        up_at = text.index("telemetry-bridge is up")
        assert text.index("ingest subscribed") < up_at and text.index("front listening") < up_at
        assert "./run token --sub me" in text and "telemetry-bridge token" not in text
        assert f"ws://127.0.0.1:{port}/ws" in text
        files = [runtime, state / "mosquitto" / "port", state / "jwt_secret"]
        before = {path: path.read_bytes() for path in files}

        # the same command again, in another terminal: refused at once, in one line
        second = _cli(state, port, "up")
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert "another `up` is running" in line and f"pid {first.pid}" in line, line
        assert f"ws://127.0.0.1:{port}/ws" in line and "since " in line
        assert "is up" not in second.stdout
        assert {path: path.read_bytes() for path in files} == before
        assert first.poll() is None

        # and the first one keeps serving: doctor, simulate, db-url all reach it
        doctor = _cli(state, port, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        _simulate(state, 50)
        url = _cli(state, port, "db-url").stdout.strip()
        assert url == json.loads(runtime.read_text())["database_url"]

        async def stored() -> bool:
            conn = await asyncpg.connect(url)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM readings")) >= 150
            finally:
                await conn.close()

        await wait_until(stored, timeout=30)
        assert _health(port) == "healthy"
    finally:
        _stop(first)
    assert first.returncode == 0, log.read_text()


@pytest.mark.timeout(60)
def test_a_start_that_fails_shows_no_banner(tmp_path: Path, state_root: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "up"],
            env=_env(state_root / "state", port),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2, done.stderr
    assert "is up" not in done.stdout + done.stderr
    assert "BRIDGE_WS_PORT" in done.stderr and f"127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2, done.stderr
    assert not (state_root / "state" / "runtime.json").exists()
