"""Commands to devices (Nexus form) and telemetry sent by WebSocket clients.

A command is recorded, published to ``devices/{id}/commands/{command_id}`` at QoS 1, and its
result awaited on ``.../{command_id}/result`` through the hub (one exact-topic listener per
pending command). ``running`` results are forwarded as progress; ``ok``/``error`` finish it;
silence past ``timeout_s`` answers ``timeout`` with code 504.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from bridge.auth import Principal
from bridge.hub import Hub
from bridge.protocol import ClientError, message
from ingest import names
from ingest.payload import PayloadError, parse_telemetry
from storage.commands import finish_command, record_command

COMMAND_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
MAX_TIMEOUT_S = 600.0
DEFAULT_TIMEOUT_S = 10.0


def _device(msg: dict[str, Any]) -> str:
    """The addressed device: device_id, agentId, or (Nexus sends commands with only
    parameters) parameters.agentId / device_id / target."""
    device = msg.get("device_id", msg.get("agentId"))
    params = msg.get("parameters")
    if device is None and isinstance(params, dict):
        device = params.get("agentId", params.get("device_id", params.get("target")))
    if device is None:
        raise ClientError(
            422, "validation_error", "name the device: device_id, agentId or parameters.target"
        )
    try:
        return names.device_id(device)
    except names.InvalidName as exc:
        raise ClientError(422, "validation_error", str(exc)) from None


class Commands:
    def __init__(self, hub: Hub, pool: asyncpg.Pool | None) -> None:
        self.hub = hub
        self.pool = pool

    def validate(
        self, principal: Principal, msg: dict[str, Any]
    ) -> tuple[str, str, dict[str, Any], float]:
        if not principal.has("commands:write"):
            raise ClientError(403, "forbidden", "the token lacks the scope commands:write")
        device = _device(msg)
        if not principal.sees(device):
            raise ClientError(403, "forbidden", f"the token does not allow device {device}")
        command = msg.get("command")
        if not isinstance(command, str) or not COMMAND_RE.match(command):
            raise ClientError(422, "validation_error", "command must be a name of 1-64 characters")
        parameters = msg.get("parameters") or {}
        if not isinstance(parameters, dict) or len(orjson.dumps(parameters)) > 16_384:
            raise ClientError(422, "validation_error", "parameters must be an object under 16 KiB")
        timeout = msg.get("timeout_s", DEFAULT_TIMEOUT_S)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TIMEOUT_S
        ):
            raise ClientError(
                422, "validation_error", f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g}"
            )
        return device, command, parameters, float(timeout)

    async def run(
        self,
        principal: Principal,
        msg: dict[str, Any],
        id_: Any,
        reply: Callable[[dict[str, Any]], None],
    ) -> None:
        """Send one command and report its result(s); runs as its own task."""
        device, command, parameters, timeout = self.validate(principal, msg)
        command_id = f"cmd_{uuid.uuid4().hex[:16]}"
        topics = self.hub.topics
        results: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)

        def on_result(
            _levels: tuple[str, ...], event: dict[str, Any], _r: bool, _f: dict[Any, Any]
        ) -> None:
            if not results.full():
                results.put_nowait(event)

        result_topic = topics.device_command_result(device, command_id)
        await self.hub.add(result_topic, on_result)
        try:
            await self._record(command_id, device, command, parameters, timeout, principal.sub)
            try:
                await self.hub.publish(
                    topics.device_command(device, command_id),
                    orjson.dumps(
                        {"command": command, "parameters": parameters, "timeout_s": timeout}
                    ),
                    qos=1,
                )
            except (ConnectionError, OSError) as exc:
                raise ClientError(503, "unavailable", "the broker is not reachable") from exc

            def answer(status: str, data: Any, **extra: Any) -> None:
                reply(
                    message(
                        "command_result",
                        id_=id_,
                        commandId=command_id,
                        command_id=command_id,
                        device_id=device,
                        status=status,
                        data=data,
                        **extra,
                    )
                )

            deadline = time.monotonic() + timeout
            while True:
                try:
                    event = await asyncio.wait_for(
                        results.get(), max(0.0, deadline - time.monotonic())
                    )
                except TimeoutError:
                    await self._finish(command_id, "timeout", None)
                    answer(
                        "timeout",
                        None,
                        code=504,
                        error="timeout",
                        message=f"no result within {timeout:g} s",
                    )
                    return
                status = event.get("status")
                done = event.get("done", status in ("ok", "error"))
                if status == "running" and not done:
                    answer("running", event, progress=event.get("progress"))
                    continue
                final = "success" if status == "ok" else "error"
                await self._finish(command_id, final, event)
                answer(final, event)
                return
        finally:
            await self.hub.remove(result_topic, on_result)

    async def _record(
        self,
        command_id: str,
        device: str,
        command: str,
        parameters: dict[str, Any],
        timeout_s: float,
        by: str,
    ) -> None:
        if self.pool is None:
            return
        await record_command(self.pool, command_id, device, command, parameters, timeout_s, by)

    async def _finish(self, command_id: str, status: str, result: Any) -> None:
        if self.pool is None:
            return
        await finish_command(self.pool, command_id, status, result)

    async def telemetry(self, principal: Principal, msg: dict[str, Any]) -> tuple[str, int]:
        """Telemetry from a client: validated like a device's, then sent through the ingest."""
        if not principal.has("telemetry:write"):
            raise ClientError(403, "forbidden", "the token lacks the scope telemetry:write")
        device = _device(msg)
        if not principal.sees(device):
            raise ClientError(403, "forbidden", f"the token does not allow device {device}")
        payload: dict[str, Any] = {"values": msg.get("metrics")}
        if msg.get("timestamp") is not None:
            payload["ts"] = msg["timestamp"]
        raw = orjson.dumps(payload)
        try:
            readings = parse_telemetry(device, raw, datetime.now(UTC))
        except PayloadError as exc:
            raise ClientError(422, "validation_error", exc.message) from None
        try:
            await self.hub.publish(self.hub.topics.device_telemetry(device), raw, qos=1)
        except (ConnectionError, OSError) as exc:
            raise ClientError(503, "unavailable", "the broker is not reachable") from exc
        return device, len(readings)
