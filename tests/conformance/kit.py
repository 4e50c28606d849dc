"""Helpers of the conformance suite: talking to the stack, feeding it real data, running the
seed documents' own client code.

Data enters the way it does in production: readings and log lines are published by a device
on ``devices/{id}/...`` and go through the ingest and PostgreSQL; alerts come from a rule the
ingest evaluates; only the bridge's system status (published by the front's scheduler every
so often) is published here directly on ``system/{component}``, as that scheduler does.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.helpers import wait_until
from tests.integration.frontkit import Stack, recv
from tests.integration.test_seed_clients import SEEDS, seed_text

__all__ = ["SEEDS", "seed_text"]

EVERY_SCOPE = "telemetry:read telemetry:write alerts:read alerts:write devices:read commands:write"


async def send(ws: ClientConnection, msg: dict[str, Any] | str) -> None:
    await ws.send(msg if isinstance(msg, str) else orjson.dumps(msg).decode())


async def ask(
    ws: ClientConnection, msg: dict[str, Any] | str, timeout: float = 5
) -> dict[str, Any]:
    """Send one message and return the next frame (the reply: nothing else is subscribed)."""
    await send(ws, msg)
    return await recv(ws, timeout)


async def authed(stack: Stack, scope: str = EVERY_SCOPE, path: str = "/ws", **kw: Any) -> Any:
    """A connection authenticated at the handshake, its ``connected`` greeting read."""
    ws = await stack.client(stack.token(scope=scope, **kw), path=path)
    assert (await recv(ws))["type"] == "connected"
    return ws


def log_line(stack: Stack, device: str, **fields: Any) -> None:
    topic = stack.topics.device_telemetry(device).removesuffix("telemetry") + "logs"
    stack.peer.publish(topic, orjson.dumps(fields), qos=1)


def system_status(stack: Stack, component: str, **fields: Any) -> None:
    body = {
        "component": component,
        "cpu_usage": 12.5,
        "memory_usage": 40.0,
        "disk_usage": 70.1,
        "active_connections": 3,
        **fields,
    }
    stack.peer.publish(stack.topics.system(component), orjson.dumps(body), qos=0)


def device_status(stack: Stack, device: str, old: str | None, new: str, reason: str) -> None:
    """What the ingest publishes on ``status/{device}`` when a device's status changes (the
    scheduler's offline detection takes minutes; this is its message, published directly)."""
    body = {
        "device_id": device,
        "old_status": old,
        "new_status": new,
        "reason": reason,
        "last_seen": "2026-01-01T11:45:00.000Z",
        "ts": "2026-01-01T12:00:00.000000Z",
    }
    stack.peer.publish(stack.topics.status(device), orjson.dumps(body), qos=0)


async def make_rule(stack: Stack, **rule: Any) -> dict[str, Any]:
    admin = await authed(stack, scope="admin", sub="conformance-admin")
    try:
        reply = await ask(admin, {"type": "create_rule", "rule": rule})
        assert reply["type"] == "rule_created", reply
        return reply["rule"]  # type: ignore[no-any-return]
    finally:
        await admin.close()


async def raise_alert(
    stack: Stack,
    ws: ClientConnection,
    device: str,
    metric: str,
    high: float,
    low: float,
    match: Callable[[dict[str, Any]], bool] = lambda f: f["type"] == "alert",
) -> dict[str, Any]:
    """Cross a rule's threshold until a frame ``match``-ing the alert arrives on ``ws`` (the
    ingest reloads rules every 0.5 s in this stack)."""
    for _ in range(40):
        stack.reading(device, **{metric: high})
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await recv(ws, left)
            except TimeoutError:
                break
            if match(frame):
                return frame
        stack.reading(device, **{metric: low})
    raise AssertionError("no alert raised")


async def frames(ws: ClientConnection, within: float = 0.8) -> list[dict[str, Any]]:
    """Every frame that arrives until the connection has been quiet for ``within`` seconds."""
    out = []
    while True:
        try:
            out.append(await recv(ws, within))
        except TimeoutError:
            return out


async def committed(stack: Stack, device: str, metric: str) -> None:
    """Wait until a reading of ``device``/``metric`` is on the validated stream (stored)."""
    topic = stack.topics.telemetry(device, metric)
    stack.peer.subscribe(topic)

    async def seen() -> bool:
        return bool(stack.peer.messages(topic))

    await wait_until(seen)


def js_block(text: str, start: str, end: str) -> str:
    """The code of a seed document from the line starting ``start`` up to (not including)
    the line starting ``end``."""
    i = text.index(start)
    j = text.index(end, i + len(start))
    return text[i:j]


class Node:
    """A node process running a script; its printed lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = ""

    @classmethod
    async def run(cls, where: Path, script: str) -> Node:
        path = where / f"seed-{time.monotonic_ns()}.js"
        path.write_text(script)
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(path),
            cwd=where,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.out)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"node never printed {pattern!r}; it printed:\n{self.out[-3000:]}")
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not line:
                pytest.fail(f"node exited before printing {pattern!r}:\n{self.out[-3000:]}")
            self.out += line.decode()
        return found

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
