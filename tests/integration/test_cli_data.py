"""The data commands through the real CLI: `alerts` (list, ack), `dead-letters`, and
`simulate`'s progress, Ctrl-C and broker warnings, against real PostgreSQL and Mosquitto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from bridge.embedded import EmbeddedError, MosquittoProcess, free_port
from ingest.rules import Alert
from ingest.topics import Topics
from storage.alerts import save_alerts
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until
from tests.integration.test_cli import run_cli
from tests.procnet import children

pytestmark = pytest.mark.integration


def _alert(alert_id: str, device: str, severity: str, state: str, at: datetime) -> Alert:
    return Alert(
        alert_id=alert_id,
        rule_id="hot",
        device_id=device,
        metric="temperature",
        severity=severity,
        title=f"temperature on {device}",
        message="temperature is 51.23456",
        state=state,
        created_at=at.timestamp(),
        updated_at=at.timestamp(),
        threshold_value=50.0,
        actual_value=51.23456,
        resolved_at=at.timestamp() if state == "resolved" else None,
    )


async def test_alerts_list_and_ack_reaches_the_stream(
    database_url: str, broker: BrokerInfo, topic_prefix: str
) -> None:
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await save_alerts(
            conn,
            [
                ("value", _alert("al-open", "cli-a", "high", "active", now)),
                ("value", _alert("al-old", "cli-b", "critical", "resolved", now - timedelta(1))),
            ],
        )
    finally:
        await conn.close()
    env = {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_MQTT_URL": broker.url,
        "BRIDGE_MQTT_TOPIC_PREFIX": topic_prefix,
    }
    listed = run_cli("alerts", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["alert_id", "created_at", "severity", "state"]
    assert len(lines) == 2 and lines[1].split()[2:8] == [
        "high",
        "active",
        "cli-a",
        "temperature",
        "51.23",  # rounded for reading
        "50",
    ]
    every = run_cli("alerts", "--all", "--format", "json", env=env)
    assert [a["alert_id"] for a in orjson.loads(every.stdout)["alerts"]] == ["al-open", "al-old"]
    critical = run_cli("alerts", "--all", "--severity", "critical", "--format", "csv", env=env)
    assert critical.stdout.splitlines()[1].startswith("al-old,")
    recent = run_cli("alerts", "--all", "--since", "-1h", "--format", "json", env=env)
    assert orjson.loads(recent.stdout)["count"] == 1
    assert run_cli("alerts", "--device", "no/such", env=env).returncode == 2

    peer = MqttPeer(broker.url)
    try:
        peer.subscribe(Topics(topic_prefix).alerts_filter(None, None))
        ack = ("alerts", "ack", "al-open", "--note", "fan replaced", "--by", "ops")
        acked = run_cli(*ack, env=env)
        assert acked.returncode == 0, acked.stderr
        assert "alert al-open acknowledged by ops" in acked.stdout

        async def announced() -> bool:
            return any(
                orjson.loads(m.payload).get("event") == "acknowledged" for m in peer.messages()
            )

        await wait_until(announced, timeout=10)
    finally:
        peer.close()
    event = orjson.loads(peer.messages()[-1].payload)
    assert event["alert_id"] == "al-open" and event["acknowledged_by"] == "ops"
    row = orjson.loads(run_cli("alerts", "--format", "json", env=env).stdout)["alerts"][0]
    assert row["state"] == "acknowledged" and row["acknowledged_note"] == "fan replaced"
    again = run_cli("alerts", "ack", "al-open", env=env)
    assert again.returncode == 2 and "not active" in again.stderr
    missing = run_cli("alerts", "ack", "al-none", env=env)
    assert missing.returncode == 2 and "no such alert" in missing.stderr


async def test_dead_letters_show_a_malformed_message(
    database_url: str, broker: BrokerInfo, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    peer = MqttPeer(broker.url)
    try:
        async with running_ingest(broker.url, database_url, topics):
            peer.publish(topics.device_telemetry("cli-dl"), b'{"ts": oops\n\x1b[2J')
            peer.publish(topics.device_telemetry("cli-dl"), b"\xff\xfe\x00binary")

            async def stored() -> bool:
                conn = await asyncpg.connect(database_url)
                try:
                    return bool(await conn.fetchval("SELECT count(*) = 2 FROM dead_letters"))
                finally:
                    await conn.close()

            await wait_until(stored)
    finally:
        peer.close()
    env = {"BRIDGE_DATABASE_URL": database_url}
    shown = run_cli("dead-letters", "--device", "cli-dl", env=env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "device cli-dl" in out and "reason invalid_json" in out
    # text as text, with the terminal escape made harmless; binary as hex; both with sizes
    assert '(16 bytes, text): {"ts": oops\\n\\x1b[2J' in out and "\x1b" not in out
    assert "(9 bytes, binary, hex): ff fe 00 62" in out
    as_json = orjson.loads(run_cli("dead-letters", "--format", "json", env=env).stdout)
    texts = {e.get("payload_text") for e in as_json["dead_letters"]}
    assert '{"ts": oops\n\x1b[2J' in texts and as_json["count"] == 2
    none = run_cli("dead-letters", "--reason", "payload_too_large", env=env)
    assert none.returncode == 0 and none.stdout == "" and "no dead letters" in none.stderr


class _Simulate:
    """`telemetry-bridge simulate` in the background with its stderr read line by line."""

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(BRIDGE_MQTT_URL=mqtt_url, BRIDGE_MQTT_TOPIC_PREFIX=prefix)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "simulate", "--devices", "5", "--rate", "4"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    async def wait_for(self, needle: str, timeout: float = 15) -> None:
        async def seen() -> bool:
            assert self.proc.poll() is None, "".join(self.lines)
            return any(needle in line for line in self.lines)

        await wait_until(seen, timeout=timeout)

    def interrupt(self, sig: int = signal.SIGINT) -> str:
        self.proc.send_signal(sig)
        out = self.proc.communicate(timeout=15)[0]
        self._reader.join(5)
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


async def test_simulate_shows_progress_at_once_and_stops_on_ctrl_c(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    sim = _Simulate(broker.url, topic_prefix)
    try:
        # the first progress line comes after about a second, with what was really sent
        await sim.wait_for("s sent ")
        first = next(line for line in sim.lines if "s sent " in line)
        assert "sent 0 messages" not in first and "msg/s, errors 0" in first
        out = sim.interrupt()
    finally:
        sim.kill()
    assert sim.proc.returncode == 0, "".join(sim.lines)
    assert out.startswith("simulate: stopped; sent ") and "errors 0" in out
    assert "Traceback" not in "".join(sim.lines)


async def test_simulate_stops_its_workers_on_sigterm(broker: BrokerInfo, topic_prefix: str) -> None:
    """kill, systemd or a test's terminate(): the workers stop too, none is left publishing
    on its own (they were, after the parent died of the signal's default action)."""
    sim = _Simulate(broker.url, topic_prefix)
    try:
        await sim.wait_for("s sent ")
        workers = children(sim.proc.pid)
        assert workers
        out = sim.interrupt(signal.SIGTERM)
    finally:
        sim.kill()
    assert sim.proc.returncode == 0 and out.startswith("simulate: stopped; sent ")

    async def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in workers)

    await wait_until(gone, timeout=10)


async def test_simulate_warns_when_the_broker_goes_away(tmp_path: Path, topic_prefix: str) -> None:
    mosquitto = MosquittoProcess(tmp_path, port=free_port())
    try:
        url = mosquitto.start()
    except EmbeddedError as exc:
        pytest.skip(f"no MQTT broker: {exc}")
    sim = _Simulate(url, topic_prefix)
    try:
        await sim.wait_for("s sent ")
        mosquitto.stop()
        await sim.wait_for("warning: lost the broker at")
        mosquitto.start()
        await sim.wait_for("is back")
        sim.interrupt()
    finally:
        sim.kill()
        mosquitto.stop()
    assert sim.proc.returncode == 0
