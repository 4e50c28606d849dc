"""Pieces of the capture test: a WebSocket client that records every frame both ways, a
device that answers commands over MQTT, and the check of recorded traffic against
docs/asyncapi.json."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import orjson
import paho.mqtt.client as paho
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.contract.schemas import check_frame, doc, problems
from tests.helpers import MqttPeer
from tests.integration.frontkit import Stack

EVERY_SCOPE = (
    "telemetry:read telemetry:write alerts:read alerts:write devices:read commands:write admin"
)


class Recorder:
    """One client connection of a dialect: what it sent and every frame it got, in order."""

    def __init__(self, dialect: str, ws: ClientConnection) -> None:
        self.dialect = dialect
        self.ws = ws
        self.sent: list[dict[str, Any]] = []
        self.invalid: list[dict[str, Any]] = []  # sent on purpose to be refused
        self.got: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, stack: Stack, dialect: str, path: str, token: str | None = None, query: bool = False
    ) -> Recorder:
        url = stack.url + path
        headers = None
        if token is not None and query:
            url += f"?token={token}"
        elif token is not None:
            headers = {"Authorization": f"Bearer {token}"}
        return cls(dialect, await connect(url, additional_headers=headers, open_timeout=5))

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.got.append(orjson.loads(raw))
                self._new.set()

    async def send(self, msg: dict[str, Any], invalid: bool = False) -> int:
        """Send ``msg`` (``invalid``: one the server must refuse, and so must the schema);
        the index of the first frame that can be its reply."""
        (self.invalid if invalid else self.sent).append(msg)
        mark = len(self.got)
        await self.ws.send(orjson.dumps(msg).decode())
        return mark

    async def wait(
        self, type_: str, since: int = 0, timeout: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        """The first frame from ``since`` on of ``type_`` whose ``fields`` match."""
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.got[since:]:
                if frame.get("type") == type_ and all(frame.get(k) == v for k, v in fields.items()):
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                tail = [f.get("type") for f in self.got[since:]][-20:]
                raise AssertionError(f"{self.dialect}: no {type_} {fields or ''}; got {tail}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def ask(self, msg: dict[str, Any], reply: str, **fields: Any) -> dict[str, Any]:
        return await self.wait(reply, await self.send(msg), **fields)

    async def refused(self, msg: dict[str, Any], code: int) -> dict[str, Any]:
        return await self.wait("error", await self.send(msg, invalid=True), code=code)

    def types(self) -> set[str]:
        return {f.get("type", "?") for f in self.got}

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class AnsweringDevice:
    """Devices that answer every command on ``devices/+/commands/+`` as real ones would: a
    ``running`` step with progress, then ``ok`` (a session's input: its output line)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.peer = MqttPeer(stack.peer.url)
        self.inbox = stack.topics.device_command("x", "y").replace("/x/", "/+/")[:-1] + "+"
        self.peer.client.on_message = self._answer
        self.peer.subscribe(self.inbox)

    def _answer(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        command = orjson.loads(msg.payload)
        if command.get("session_id"):
            line = command.get("parameters", {}).get("line") or command["command"]
            steps = [{"status": "running", "output": f"> {line}", "done": False}]
        else:
            steps = [
                {"status": "running", "progress": 50, "done": False},
                {"status": "ok", "output": "done", "done": True, "data": {"uptime_s": 12}},
            ]
        for step in steps:
            self.peer.client.publish(msg.topic + "/result", orjson.dumps(step), qos=1)

    def close(self) -> None:
        self.peer.close()


def _address_pattern(address: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(address)) + "$")


def mqtt_problems(
    prefix: str, messages: list[paho.MQTTMessage], rejected: set[bytes]
) -> tuple[list[str], set[str]]:
    """Check every captured publication against the channel its topic is; ``rejected`` are
    payloads published on purpose as invalid, which the schema must refuse too. Returns the
    failures and the channels seen."""
    channels = [
        (key, _address_pattern(ch["address"]), next(iter(ch["messages"])))
        for key, ch in doc()["channels"].items()
        if ch["servers"][0]["$ref"] == "#/servers/mqtt"
    ]
    failures: list[str] = []
    seen: set[str] = set()
    for m in messages:
        topic = m.topic.removeprefix(prefix + "/")
        matched = [(k, name) for k, pattern, name in channels if pattern.match(topic)]
        if not matched:
            failures.append(f"{m.topic}: a topic the document does not list")
            continue
        key, name = matched[0]
        try:
            payload = orjson.loads(m.payload)
        except orjson.JSONDecodeError:
            payload = m.payload.decode("utf-8", "replace")  # a bare status word
        issues = problems(name, payload)
        if m.payload in rejected:
            if not issues:
                failures.append(f"{m.topic}: the schema accepts what the bridge rejects: {payload}")
            continue
        seen.add(key)
        failures += [f"{m.topic} {m.payload[:300]!r}: {issue}" for issue in issues]
    return failures, seen


def ws_problems(recorders: list[Recorder]) -> tuple[list[str], dict[str, set[str]]]:
    """Every frame each recorder got (and every message it sent) against its dialect's
    channel; the message names seen per channel."""
    failures: list[str] = []
    seen: dict[str, set[str]] = {}
    for rec in recorders:
        channel = f"ws_{rec.dialect}"
        names = seen.setdefault(channel, set())
        for action, items in (("receive", rec.sent), ("send", rec.got)):
            for item in items:
                try:
                    names.add(check_frame(channel, action, item))
                except AssertionError as exc:
                    failures.append(str(exc))
                if action == "send" and item.get("type") == "batch":  # the frames inside
                    for inner in item.get("messages", []):
                        try:
                            names.add(check_frame(channel, action, inner))
                        except AssertionError as exc:
                            failures.append(f"inside a batch: {exc}")
        for item in rec.invalid:
            try:
                check_frame(channel, "receive", item)
            except AssertionError:
                continue
            failures.append(f"{channel}: the schema accepts what the server refuses: {item}")
    return failures, seen
