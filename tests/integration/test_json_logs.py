"""BRIDGE_LOG_FORMAT=json in real processes: every line on stderr is one JSON object with the
fields a collector indexes, the batch or connection it belongs to, and never a credential."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.embedded import free_port
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until

pytestmark = pytest.mark.integration

JWT_SECRET = "json-logs-test-secret-" + "q" * 40
# tokens that look like JWTs, each sent a different way; none may reach the log
BAD_TOKENS = {
    way: f"eyJhbGciOiJIUzI1NiJ9.eyJ{way}{uuid.uuid4().hex}.c2lnbmF0dXJl{uuid.uuid4().hex}"
    for way in ("query", "header", "message")
}
FIELDS = ("ts", "level", "logger", "message", "component")


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            env={**base, **env, "BRIDGE_LOG_FORMAT": "json"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def records(log: Path) -> list[dict[str, Any]]:
    """Every line of ``log`` as a JSON object with the common fields (asserted)."""
    docs = []
    for line in log.read_text().splitlines():
        doc = orjson.loads(line)  # raises on a line that is not JSON
        assert isinstance(doc, dict), line
        assert all(isinstance(doc.get(name), str) for name in FIELDS), line
        docs.append(doc)
    return docs


def logged(log: Path, needle: str) -> bool:
    return any(needle in doc["message"] for doc in records(log))


@pytest.mark.timeout(90)
async def test_ingest_logs_json_lines_with_the_batch(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    db_password, mqtt_password = f"db-{uuid.uuid4().hex}", f"mq-{uuid.uuid4().hex}"
    log = tmp_path / "ingest.err"
    proc = start(
        ["ingest"],
        {
            # trust authentication on the test server ignores the password, the broker's
            # listener takes anonymous users: both URLs carry one only to be kept out of logs
            "BRIDGE_DATABASE_URL": with_password(
                database_url, urlsplit(database_url).username or "postgres", db_password
            ),
            "BRIDGE_MQTT_URL": with_password(broker.url, "bridge-ingest", mqtt_password),
            "BRIDGE_MQTT_TOPIC_PREFIX": topic_prefix,
            "BRIDGE_INGEST_CLIENT_ID": f"jsonlogs-{uuid.uuid4().hex[:8]}",
            # one dead letter per device and minute: the next malformed readings are dropped
            # and reported in a warning after their batch's commit
            "BRIDGE_DEAD_LETTER_PER_DEVICE_PER_MIN": "1",
        },
        log,
    )
    try:

        async def subscribed() -> bool:
            assert proc.poll() is None, log.read_text()
            return logged(log, "ingest subscribed")

        await wait_until(subscribed, timeout=30)
        peer = MqttPeer(broker.url)
        try:
            topic = Topics(topic_prefix).device_telemetry("jsonlogs-1")
            assert peer.publish_many([(topic, b"{not json")] * 3) == 3
        finally:
            peer.close()

        async def reported() -> bool:
            assert proc.poll() is None, log.read_text()
            return logged(log, "over the per-device budget")

        await wait_until(reported, timeout=30)
    finally:
        stop(proc)
    docs = records(log)
    assert {doc["component"] for doc in docs} == {"ingest"}
    (report,) = [doc for doc in docs if "over the per-device budget" in doc["message"]]
    assert report["level"] == "WARNING" and isinstance(report["batch"], int)
    assert report["batch"] >= 1
    text = log.read_text()
    assert db_password not in text and mqtt_password not in text


@pytest.mark.timeout(90)
async def test_front_logs_json_lines_with_the_connection_and_no_token(
    broker: BrokerInfo, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "front.err"
    # DEBUG: websockets logs every request line and header, where the tokens travel
    proc = start(
        ["--log-level", "DEBUG", "serve"],
        {
            "BRIDGE_MQTT_URL": broker.url,
            "BRIDGE_JWT_SECRET": JWT_SECRET,
            "BRIDGE_WS_PORT": str(port),
            "BRIDGE_STATE_DIR": str(tmp_path),
        },
        log,
    )
    try:

        async def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        await wait_until(healthy, timeout=30)
        url = f"ws://127.0.0.1:{port}/ws"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{url}?token={BAD_TOKENS['query']}"):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                url, additional_headers={"Authorization": f"Bearer {BAD_TOKENS['header']}"}
            ):
                pass
        assert refused.value.response.status_code == 401
        # connected without a token, then a bad one in the auth message: the front answers
        # and closes the connection (1008) from its handler task
        async with connect(url) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": BAD_TOKENS["message"]}).decode())
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
        assert ws.close_code == 1008

        async def closed_logged() -> bool:
            return any(doc.get("connection") for doc in records(log))

        await wait_until(closed_logged, timeout=10)
    finally:
        stop(proc)
    docs = records(log)
    assert {doc["component"] for doc in docs} == {"front"}
    assert any(doc["logger"].startswith("websockets") for doc in docs)
    connections = {doc["connection"] for doc in docs if "connection" in doc}
    assert len(connections) == 1 and re.fullmatch(r"c_[0-9a-f]{12}", connections.pop())
    text = log.read_text()
    for token in BAD_TOKENS.values():
        # nor any piece of it: websockets' DEBUG line of a frame shows its head and tail
        secret = token.removeprefix("eyJhbGciOiJIUzI1NiJ9.")
        pieces = {secret[i : i + 10] for i in range(len(secret) - 9)}
        assert not [piece for piece in pieces if piece in text], token
    assert JWT_SECRET not in text
    assert "token=***" in text and "Authorization: Bearer ***" in text
