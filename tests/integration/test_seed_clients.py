"""The client code of the seed documents, run against the bridge.

Each client is the seed's own code, adapted only in URLs, tokens and device names, with one
exception stated where it applies: websockets 14 renamed ``extra_headers`` to
``additional_headers``, so the OpenFrame example's call is routed through a one-line alias.
"""

from __future__ import annotations

import asyncio
import re
import types
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.helpers import wait_until
from tests.integration.frontkit import Stack
from tests.seeds.valtronics_client import ValtronicsWebSocketClient

pytestmark = pytest.mark.integration

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def seed_text(name: str) -> str:
    path = SEEDS / name
    if not path.is_file():
        pytest.skip(f"seed document {path} not found (run from a checkout beside shared/)")
    return path.read_text()


class Output:
    """Collects what the seed code prints."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def read(self) -> str:
        self.text += self.capsys.readouterr().out
        return self.text

    async def wait_for(self, pattern: str, timeout: float = 10) -> None:
        async def seen() -> bool:
            return re.search(pattern, self.read()) is not None

        await wait_until(seen, timeout=timeout)


async def test_valtronics_python_client(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(capsys)
    client = ValtronicsWebSocketClient(f"{stack.url}/ws", stack.token())
    await client.connect()
    await client.subscribe("telemetry", {"device_id": "valve-1"})
    await client.subscribe("alerts", {"severity": ["critical", "warning"]})
    await client.subscribe("devices")
    listener = asyncio.create_task(client.listen())
    stack.reading("valve-2", pressure=9.9)  # not subscribed
    stack.reading("valve-1", pressure=3.25)
    await out.wait_for(r"Telemetry update for device valve-1: \{'pressure': \{'value': 3\.25")
    assert "Telemetry update for device valve-2" not in out.read()  # filtered out
    # the "devices" channel: a device's first reading brings it online
    await out.wait_for(r"Device valve-1 status changed: None -> online")
    assert "Authentication successful" in out.read()
    await client.ping()
    await client.unsubscribe("telemetry")
    await out.wait_for("Unsubscribed from telemetry")
    await client.disconnect()
    await asyncio.wait_for(listener, 5)


def _openframe_function(url: str, token: str) -> Any:
    text = seed_text("openframe-websocket-api.txt")
    start = text.index("async def connect_websocket():")
    end = text.index("# Run the client", start)
    code = text[start:end].replace("wss://api.openframe.io/v1/ws", url).replace("your_token", token)

    def connect(uri: str, extra_headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return websockets.connect(uri, additional_headers=extra_headers, **kw)  # the one rename

    shim = types.SimpleNamespace(connect=connect, exceptions=websockets.exceptions)
    namespace: dict[str, Any] = {"websockets": shim, "asyncio": asyncio, "json": __import__("json")}
    exec(compile(code, "openframe-seed", "exec"), namespace)  # noqa: S102 - the seed's own code
    return namespace["connect_websocket"]


async def test_openframe_python_client(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(capsys)
    run = _openframe_function(f"{stack.url}/v1/ws", stack.token())
    task = asyncio.create_task(run())
    try:
        await out.wait_for(r"'type': 'subscription_confirmed', 'topics': \['devices', 'alerts'\]")
        # a device status event on the validated stream reaches the "devices" topic
        stack.peer.publish(
            stack.topics.status("of-1"),
            b'{"device_id": "of-1", "old_status": "online", "new_status": "offline", '
            b'"reason": "silence", "last_seen": null, "ts": "2026-11-22T00:00:00.000Z"}',
            qos=0,
        )
        # with the document's field names (id, status, last_seen)
        await out.wait_for(
            r"'type': 'event', 'topic': 'devices', 'event': 'device_update', "
            r"'data': \{'id': 'of-1', 'status': 'offline', 'last_seen': None"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_zhineng_python_examples(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(capsys)
    text = seed_text("zhineng-bridge-api-examples.txt")
    start = text.index("async def connect_with_auth():")
    end = text.index("asyncio.run(connect_with_auth())", start)
    code = text[start:end].replace("wss://your-domain.com:8765", stack.url)
    code = code.replace("your-jwt-token-here", stack.token())
    namespace: dict[str, Any] = {
        "websockets": websockets,
        "asyncio": asyncio,
        "json": __import__("json"),
    }
    exec(compile(code, "zhineng-seed", "exec"), namespace)  # noqa: S102 - the seed's own code
    await namespace["connect_with_auth"]()
    assert "Authentication successful" in out.read()
    assert "Sessions: {'type': 'sessions_list', 'sessions': [], 'count': 0" in out.read()

    start = text.index("import requests")
    end = text.index("status = get_status()", start)
    http_code = text[start:end].replace(
        "http://localhost:8000", stack.url.replace("ws://", "http://")
    )
    http_ns: dict[str, Any] = {}
    await asyncio.to_thread(exec, compile(http_code, "zhineng-http-seed", "exec"), http_ns)
    printed = out.read()
    assert "Health status: healthy" in printed
    assert "Rate limiting enabled: True" in printed
    status = await asyncio.to_thread(http_ns["get_status"])
    assert status["service"] == "telemetry-bridge"
