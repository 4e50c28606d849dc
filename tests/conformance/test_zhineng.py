"""Zhineng-bridge (seeds/zhineng-bridge-api-examples.txt) against the real stack.

The bare host (``ws://host:port``, strict request/response: no greeting), ``authenticate``,
sessions (``list_sessions``, ``start_session``, ``send_command`` with streamed ``output``,
``stop_session``, ``delete_session``), every error code of the document's table, the HTTP
``/health``, ``/metrics`` and ``/status``; then its Python and JavaScript examples. Its
sessions run local tool processes; here the "tool" is a device (``tool_name`` = device id)
and the session is a conversation with it over MQTT (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.app import run_front
from bridge.config import Settings
from bridge.device_sessions import MAX_SESSIONS_PER_SUBJECT, DeviceSessions
from bridge.embedded import free_port
from ingest.topics import Topics
from tests.conformance.kit import EVERY_SCOPE, Node, ask, js_block, seed_text, send
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.integration.frontkit import SECRET, Stack, http_json, nothing_more, recv_type
from tests.integration.test_seed_clients import Output

pytestmark = pytest.mark.integration


async def zhineng(stack: Stack, scope: str = EVERY_SCOPE, **kw: Any) -> ClientConnection:
    """The document's connection: the bare host, then an ``authenticate`` message."""
    ws = await connect(stack.url, open_timeout=5)
    reply = await ask(ws, {"type": "authenticate", "token": stack.token(scope=scope, **kw)})
    assert reply["type"] == "auth_success", reply
    return ws


class Device:
    """A device answering session input on its command topic, as a tool process would."""

    def __init__(self, stack: Stack, device: str) -> None:
        self.stack = stack
        self.inbox = stack.topics.device_command(device, "x").rsplit("/", 1)[0] + "/"
        stack.peer.subscribe(self.inbox + "+")

    def commands(self) -> list[tuple[str, dict[str, Any]]]:
        return [(m.topic, orjson.loads(m.payload)) for m in self.stack.peer.messages(self.inbox)]

    async def received(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        async def enough() -> bool:
            return len(self.commands()) >= count

        await wait_until(enough)
        return self.commands()

    async def answer(self, line: str, output: str, done: bool = False) -> None:
        async def got_line() -> bool:
            return any(c["parameters"].get("line") == line for _, c in self.commands())

        await wait_until(got_line)
        topic = next(t for t, c in self.commands() if c["parameters"].get("line") == line)
        body = {"output": output, "status": "ok" if done else "running", "done": done}
        self.stack.peer.publish(topic + "/result", orjson.dumps(body))


# -- connection and authentication ----------------------------------------------------------------


async def test_bare_host_is_request_response(stack: Stack) -> None:
    ws = await connect(stack.url, open_timeout=5)
    await nothing_more(ws, 0.3)  # no greeting: the first frame is the answer to the first message
    reply = await ask(ws, {"type": "authenticate", "token": stack.token(sub="zh")})
    assert reply["type"] == "auth_success" and reply["user"] == "zh"
    await ws.close()


async def test_token_in_the_url_on_the_bare_host(stack: Stack) -> None:
    ws = await connect(f"{stack.url}/?token={stack.token()}", open_timeout=5)
    reply = await ask(ws, {"type": "list_sessions", "data": {}})
    assert reply["type"] == "sessions_list"
    await ws.close()


async def test_authentication_failure_is_error_401_then_close(stack: Stack) -> None:
    ws = await connect(stack.url, open_timeout=5)
    reply = await ask(ws, {"type": "authenticate", "token": "your-jwt-token-here"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 401, "invalid_token")
    assert reply["message"]
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


# -- sessions: every message and field -------------------------------------------------------------


async def test_session_lifecycle(stack: Stack) -> None:
    device = Device(stack, "crush")
    ws = await zhineng(stack)
    listed = await ask(ws, {"type": "list_sessions", "data": {}})
    assert (listed["type"], listed["sessions"], listed["count"]) == ("sessions_list", [], 0)

    started = await ask(ws, {"type": "start_session", "tool_name": "crush", "args": ["--help"]})
    assert started["type"] == "session_started"
    assert (started["tool_name"], started["status"]) == ("crush", "running")
    session_id = started["session_id"]
    start = await device.received(1)
    assert start[0][1]["command"] == "session.start"
    assert start[0][1]["parameters"] == {"args": ["--help"]}

    listed = await ask(ws, {"type": "list_sessions", "data": {}})
    assert listed["count"] == 1 and listed["sessions"][0]["session_id"] == session_id
    assert listed["sessions"][0]["tool_name"] == "crush"

    sent = await ask(
        ws, {"type": "send_command", "session_id": session_id, "command": "npm install"}
    )
    assert (sent["type"], sent["session_id"]) == ("command_sent", session_id)
    await device.answer("npm install", "added 12 packages\n")
    output = await recv_type(ws, "output")
    assert (output["session_id"], output["output"]) == (session_id, "added 12 packages\n")

    stopped = await ask(ws, {"type": "stop_session", "session_id": session_id})
    assert (stopped["type"], stopped["session_id"], stopped["status"]) == (
        "session_stopped",
        session_id,
        "stopped",
    )
    assert (await device.received(3))[-1][1]["command"] == "session.stop"
    deleted = await ask(ws, {"type": "delete_session", "session_id": session_id})
    assert (deleted["type"], deleted["session_id"]) == ("session_deleted", session_id)
    assert (await ask(ws, {"type": "list_sessions", "data": {}}))["count"] == 0
    await ws.close()


# -- the document's error table: every code --------------------------------------------------------


async def test_400_bad_request(stack: Stack) -> None:
    ws = await zhineng(stack)
    for frame in ('{"type": "open_sesame"}', "not json", '{"data": {}}'):
        reply = await ask(ws, frame)
        assert (reply["type"], reply["code"]) == ("error", 400) and reply["message"]
    await ws.close()


async def test_401_unauthorized(stack: Stack) -> None:
    ws = await connect(stack.url, open_timeout=5)
    reply = await ask(ws, {"type": "list_sessions", "data": {}})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 401, "unauthorized")
    await ws.close()


async def test_403_forbidden(stack: Stack) -> None:
    ws = await zhineng(stack, scope="telemetry:read")  # no commands:write
    reply = await ask(ws, {"type": "start_session", "tool_name": "crush"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 403, "forbidden")
    await ws.close()
    ws = await zhineng(stack, devices=["plant-*"])
    reply = await ask(ws, {"type": "start_session", "tool_name": "crush"})
    assert (reply["type"], reply["code"]) == ("error", 403)
    await ws.close()


@pytest.mark.parametrize("kind", ["send_command", "stop_session", "delete_session"])
async def test_404_not_found(stack: Stack, kind: str) -> None:
    ws = await zhineng(stack)
    reply = await ask(ws, {"type": kind, "session_id": "session-uuid-here", "command": "ls"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 404, "not_found")
    await ws.close()


async def test_404_for_another_subjects_session(stack: Stack) -> None:
    Device(stack, "crush")
    owner = await zhineng(stack, sub="owner")
    session_id = (await ask(owner, {"type": "start_session", "tool_name": "crush"}))["session_id"]
    other = await zhineng(stack, sub="other")
    reply = await ask(other, {"type": "stop_session", "session_id": session_id})
    assert (reply["code"], reply["error"]) == (404, "not_found")
    assert (await ask(other, {"type": "list_sessions", "data": {}}))["count"] == 0
    await owner.close()
    await other.close()


async def test_409_conflict(stack: Stack) -> None:
    Device(stack, "crush")
    ws = await zhineng(stack)
    session_id = (await ask(ws, {"type": "start_session", "tool_name": "crush"}))["session_id"]
    await ask(ws, {"type": "stop_session", "session_id": session_id})
    reply = await ask(ws, {"type": "send_command", "session_id": session_id, "command": "ls"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 409, "conflict")
    await ws.close()


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "start_session", "tool_name": "crush/../x"},
        {"type": "start_session", "tool_name": "crush", "args": "--help"},
        {"type": "start_session"},
        {"type": "list_sessions", "data": {"tool_name": "crush"}},  # no filters: refused
    ],
)
async def test_422_validation_error(stack: Stack, msg: dict[str, Any]) -> None:
    ws = await zhineng(stack)
    reply = await ask(ws, msg)
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 422, "validation_error")
    await ws.close()


async def test_429_too_many_sessions(stack: Stack) -> None:
    ws = await zhineng(stack)
    for _ in range(MAX_SESSIONS_PER_SUBJECT):
        assert (await ask(ws, {"type": "start_session", "tool_name": "crush"}))["type"] == (
            "session_started"
        )
    reply = await ask(ws, {"type": "start_session", "tool_name": "crush"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 429, "rate_limit_exceeded")
    await ws.close()


async def test_500_internal_error_without_detail(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: Any) -> Any:
        raise RuntimeError("secret internal detail at /srv/bridge")

    monkeypatch.setattr(DeviceSessions, "list", broken)  # the front runs in this process
    ws = await zhineng(stack)
    reply = await ask(ws, {"type": "list_sessions", "data": {}})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 500, "internal_error")
    assert "secret" not in json.dumps(reply) and "Traceback" not in json.dumps(reply)
    await ws.close()


@pytest.fixture
async def front_without_database(broker: BrokerInfo, topic_prefix: str) -> AsyncIterator[Stack]:
    """A front configured with no database: what needs one answers 503."""
    port = free_port()
    settings = Settings(
        mqtt_url=broker.url, jwt_secret=SECRET, ws_port=port, mqtt_topic_prefix=topic_prefix
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_front(settings, broker.url, None, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    peer = MqttPeer(broker.url, client_id=f"peer-{uuid.uuid4().hex[:8]}")
    try:
        yield Stack(port, Topics(topic_prefix), peer)
    finally:
        peer.close()
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_503_unavailable(front_without_database: Stack) -> None:
    ws = await zhineng(front_without_database)
    for msg in (
        {"type": "query", "device_id": "crush", "metric": "t", "from": "-1h"},
        {"type": "ack_alert", "alert_id": "al_1"},
    ):
        reply = await ask(ws, msg)
        assert (reply["type"], reply["code"], reply["error"]) == ("error", 503, "unavailable")
    await ws.close()


async def test_504_timeout(stack: Stack) -> None:
    """A request the device never answers: the command's result is 504 ``timeout``."""
    ws = await zhineng(stack)
    await send(ws, {"type": "command", "device_id": "crush", "command": "reboot", "timeout_s": 0.3})
    reply = await recv_type(ws, "command_result")
    assert (reply["code"], reply["error"], reply["status"]) == (504, "timeout", "timeout")
    await ws.close()


# -- HTTP endpoints -------------------------------------------------------------------------------


async def test_health(stack: Stack) -> None:
    health = await http_json(stack, "/health")
    assert health["status"] == "healthy"
    assert health["checks"] == {"mqtt": "ok", "database": "ok"}


async def test_metrics(stack: Stack) -> None:
    metrics = await http_json(stack, "/metrics")
    assert metrics["rate_limiting"]["enabled"] is True
    assert {"connections", "messages"} <= metrics.keys()


async def test_status(stack: Stack) -> None:
    status = await http_json(stack, "/status")
    assert status["service"] == "telemetry-bridge" and status["version"]
    assert status["features"] == {
        "wss_enabled": False,
        "auth_required": True,
        "rate_limiting": True,
        "compression": True,
    }


# -- the document's examples ----------------------------------------------------------------------


def python_example(text: str, start: str, end: str, stack: Stack, uri: str) -> dict[str, Any]:
    code = js_block(text, start, end)
    code = code.replace("ws://localhost:8765", uri).replace("wss://your-domain.com:8765", uri)
    code = code.replace("your-jwt-token-here", stack.token(scope=EVERY_SCOPE))
    namespace: dict[str, Any] = {"websockets": websockets, "asyncio": asyncio, "json": json}
    exec(compile(code, "zhineng-seed", "exec"), namespace)  # noqa: S102 - the seed's own code
    return namespace


async def test_python_basic_connection(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    text = seed_text("zhineng-bridge-api-examples.txt")
    # the document's basic example sends no token: it goes in the URL
    ns = python_example(
        text, "async def connect():", "# Run", stack, f"{stack.url}/?token={stack.token()}"
    )
    await ns["connect"]()
    out = capsys.readouterr().out
    assert "Connected to Zhineng-bridge" in out
    assert "Received: {'type': 'sessions_list', 'sessions': [], 'count': 0" in out


async def test_python_complete_session_example(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    text = seed_text("zhineng-bridge-api-examples.txt")
    ns = python_example(
        text,
        "class ZhinengBridgeClient:",
        "asyncio.run(main())",
        stack,
        f"{stack.url}/?token={stack.token(scope=EVERY_SCOPE)}",
    )
    out = Output(capsys)
    device = Device(stack, "crush")
    task = asyncio.create_task(ns["main"]())
    try:
        await out.wait_for("Active sessions: 0")
        await out.wait_for(r"Session started: ses_[0-9a-f]{16}")
        topic = (await device.received(1))[0][0]
        stack.peer.publish(
            topic + "/result", b'{"output": "Usage: crush [options]", "status": "running"}'
        )
        await out.wait_for(
            r"Received: \{'type': 'output', 'session_id': 'ses_[0-9a-f]+', "
            r"'output': 'Usage: crush \[options\]'"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.2)  # the example's disconnect in its finally


async def test_python_http_examples(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    text = seed_text("zhineng-bridge-api-examples.txt")
    code = js_block(text, "import requests", "Go\n")
    code = code.replace("http://localhost:8000", stack.url.replace("ws://", "http://"))
    namespace: dict[str, Any] = {"requests": requests}
    await asyncio.to_thread(exec, compile(code, "zhineng-http", "exec"), namespace)
    out = capsys.readouterr().out
    assert "Health status: healthy" in out
    assert "Rate limiting enabled: True" in out
    assert "WSS enabled: False" in out


JS_DRIVER = """
const WebSocket = require('ws');
{auth_example}
{functions}
// the document's steps chained: auth, list, start, command, stop, delete
ws.onmessage = (event) => {{
    const message = JSON.parse(event.data);
    console.log('GOT ' + JSON.stringify(message));
    if (message.type === 'auth_success') listSessions();
    else if (message.type === 'sessions_list' && message.count === 0)
        startSession('crush', ['--help']);
    else if (message.type === 'session_started') sendCommand(message.session_id, 'npm install');
    else if (message.type === 'output') stopSession(message.session_id);
    else if (message.type === 'session_stopped') deleteSession(message.session_id);
    else if (message.type === 'session_deleted') console.log('DONE');
}};
"""


def js_function(text: str, head: str) -> str:
    start = text.index(head)
    return text[start : text.index("\n}\n", start) + 3]


async def test_javascript_examples(stack: Stack, node_ws: Path) -> None:
    text = seed_text("zhineng-bridge-api-examples.txt")
    auth_example = js_block(
        text, "const ws = new WebSocket('wss://your-domain.com:8765');", "List Available Sessions"
    )
    auth_example = auth_example.replace("wss://your-domain.com:8765", stack.url)
    auth_example = auth_example.replace("your-jwt-token-here", stack.token(scope=EVERY_SCOPE))
    functions = "".join(
        js_function(text, f"function {name}(")
        for name in ("listSessions", "startSession", "sendCommand", "stopSession", "deleteSession")
    )
    device = Device(stack, "crush")
    node = await Node.run(node_ws, JS_DRIVER.format(auth_example=auth_example, functions=functions))
    try:
        await node.wait_for(r'GOT \{"type":"session_started"')
        await device.answer("npm install", "added 12 packages")
        await node.wait_for(r'GOT \{"type":"output".*"output":"added 12 packages"')
        await node.wait_for("DONE")
        assert '"type":"error"' not in node.out
    finally:
        await node.stop()
