"""The Node.js client of the Nexus seed, verbatim, against the bridge (events form, token in URL).

Needs node and npm (the `ws` package is installed into a temporary directory); skipped with
the reason when either is missing or the registry cannot be reached. Its `command` and
`telemetry` messages belong to the device-commands work and are not exercised here.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.helpers import wait_until
from tests.integration.frontkit import Stack
from tests.integration.test_seed_clients import seed_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRIVER = """
{client_code}

(async () => {{
  const client = new NexusWebSocketClient('{url}', '{token}');
  await client.connect();
  client.subscribe(['telemetry.updated'], (event) => {{
    console.log('EVENT ' + JSON.stringify(event));
  }});
  // the seed's own usage: telemetry from an agent, and a command
  setTimeout(() => client.sendTelemetry('agent-002', {{ cpu: 45.2, memory: 62.8 }}), 300);
  setTimeout(() => client.sendCommand('deploy', {{ version: '1.2.3', target: 'production' }}), 600);
}})().catch((err) => {{ console.error('FAILED', err); process.exit(1); }});
"""


@pytest.fixture(scope="module")
def node_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are needed to run the Nexus Node.js client")
    where = tmp_path_factory.mktemp("nexus-node")
    done = subprocess.run(
        ["npm", "install", "--no-save", "--no-audit", "--no-fund", "ws@8"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.skip(f"npm could not install ws: {done.stderr[-300:]}")
    return where


async def test_nexus_node_client_subscribes_and_receives_events(
    stack: Stack, node_ws: Path
) -> None:
    text = seed_text("nexus-websocket-bidirectional.txt")
    start = text.index("const WebSocket = require('ws');\n\nclass NexusWebSocketClient")
    end = text.index("// Usage example", start)
    script = node_ws / "client.js"
    script.write_text(
        DRIVER.format(
            client_code=text[start:end],
            url=f"{stack.url}/api/v1/events",
            token=stack.token(scope="telemetry:read telemetry:write commands:write"),
        )
    )
    inbox = stack.topics.device_command("production", "x").rsplit("/", 1)[0] + "/"
    stack.peer.subscribe(inbox + "+")
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        cwd=node_ws,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        seen = ""
        assert proc.stdout is not None
        while "Subscribed to events" not in seen:
            seen += (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        stack.reading("agent-001", cpu=42.5)
        while "EVENT " not in seen:
            seen += (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert "Connection established" in seen
        assert "Subscribed to events: [ 'telemetry.updated' ]" in seen
        assert '"device_id":"agent-001"' in seen and '"value":42.5' in seen
        while "Telemetry acknowledged" not in seen:
            seen += (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()

        # the "production" agent answers the deploy command
        async def command_sent() -> bool:
            return bool(stack.peer.messages(inbox))

        await wait_until(command_sent)
        sent = stack.peer.messages(inbox)[0]
        assert orjson.loads(sent.payload)["command"] == "deploy"
        stack.peer.publish(
            sent.topic + "/result", b'{"status": "ok", "output": "deployed", "done": true}'
        )
        while "status: 'success'" not in seen.partition("Command result")[2]:
            seen += (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert "device_id: 'production'" in seen.partition("Command result")[2]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
