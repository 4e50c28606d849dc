"""Interactive command sessions with a device (Zhineng-bridge form).

A session is a conversation on ``devices/{id}/commands/{session_id}``: the bridge publishes
``session.start``, ``session.input`` (one line per ``send_command``) and ``session.stop``
(QoS 1); the device streams its output on ``.../{session_id}/result`` as
``{"output": "...", "status": "running" | "ok" | "error", "done": bool}``, which reaches the
client that started the session as ``output`` messages. Sessions belong to their subject, and a
token reaches only those on devices its ``devices`` claim covers (listing, input, stop, delete):
a session on a device the token cannot see answers 404, exactly like another subject's, so a
token learns nothing about it. Sending input needs ``commands:write``. Closing the connection
that started a session stops it; so does a refreshed token on that connection that no longer
reaches the device (:meth:`DeviceSessions.revoke`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.auth import Principal
from bridge.hub import Hub
from bridge.protocol import ClientError, message
from ingest import names

MAX_SESSIONS_PER_SUBJECT = 20
MAX_LINE = 4096


@dataclass
class DeviceSession:
    session_id: str
    device_id: str
    owner: str
    args: list[str]
    reply: Callable[[dict[str, Any]], None]
    status: str = "running"
    created_at: float = field(default_factory=time.time)
    outputs: int = 0
    listener: Any = None

    def describe(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "tool_name": self.device_id,
            "device_id": self.device_id,
            "status": self.status,
            "created_at": self.created_at,
            "outputs": self.outputs,
        }


class DeviceSessions:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sessions: dict[str, DeviceSession] = {}

    def _mine(self, principal: Principal, session_id: Any) -> DeviceSession:
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None or not _visible(principal, session):
            raise ClientError(404, "not_found", "no such session")  # others' look the same
        return session

    async def _send(self, session: DeviceSession, command: str, parameters: dict[str, Any]) -> None:
        topic = self.hub.topics.device_command(session.device_id, session.session_id)
        payload = {"command": command, "parameters": parameters, "session_id": session.session_id}
        try:
            await self.hub.publish(topic, orjson.dumps(payload), qos=1)
        except (ConnectionError, OSError) as exc:
            raise ClientError(503, "unavailable", "the broker is not reachable") from exc

    async def start(
        self, principal: Principal, msg: dict[str, Any], reply: Callable[[dict[str, Any]], None]
    ) -> DeviceSession:
        if not principal.has("commands:write"):
            raise ClientError(403, "forbidden", "the token lacks the scope commands:write")
        try:
            device = names.device_id(msg.get("tool_name", msg.get("device_id")))
        except names.InvalidName as exc:
            raise ClientError(422, "validation_error", str(exc)) from None
        if not principal.sees(device):
            raise ClientError(403, "forbidden", f"the token does not allow device {device}")
        args = msg.get("args") or []
        if (
            not isinstance(args, list)
            or len(args) > 64
            or not all(isinstance(a, str) and len(a) <= 1024 for a in args)
        ):
            raise ClientError(422, "validation_error", "args must be a list of at most 64 strings")
        if (
            sum(1 for s in self.sessions.values() if s.owner == principal.sub)
            >= MAX_SESSIONS_PER_SUBJECT
        ):
            raise ClientError(
                429, "rate_limit_exceeded", f"at most {MAX_SESSIONS_PER_SUBJECT} sessions"
            )
        session = DeviceSession(f"ses_{uuid.uuid4().hex[:16]}", device, principal.sub, args, reply)

        def on_output(
            _levels: tuple[str, ...], event: dict[str, Any], _r: bool, _f: dict[Any, Any]
        ) -> None:
            if self.sessions.get(session.session_id) is not session:
                return  # forgotten (revoked): its broker listener is on its way out
            session.outputs += 1
            output = event.get("output")
            session.reply(
                message(
                    "output",
                    session_id=session.session_id,
                    output=output if isinstance(output, str) else orjson.dumps(output).decode(),
                    status=event.get("status"),
                    done=bool(event.get("done", False)),
                )
            )
            if event.get("done") and event.get("status") in ("ok", "error"):
                session.status = "finished"

        session.listener = on_output
        self.sessions[session.session_id] = session  # first: on_output delivers only for these
        await self.hub.add(
            self.hub.topics.device_command_result(device, session.session_id), on_output
        )
        await self._send(session, "session.start", {"args": args})
        return session

    async def input(self, principal: Principal, msg: dict[str, Any]) -> DeviceSession:
        session = self._mine(principal, msg.get("session_id"))
        if not principal.has("commands:write"):
            raise ClientError(403, "forbidden", "the token lacks the scope commands:write")
        line = msg.get("command")
        if not isinstance(line, str) or len(line) > MAX_LINE:
            raise ClientError(
                422, "validation_error", f"command must be text of at most {MAX_LINE} characters"
            )
        if session.status != "running":
            raise ClientError(409, "conflict", f"the session is {session.status}")
        await self._send(session, "session.input", {"line": line})
        return session

    async def stop(self, principal: Principal, msg: dict[str, Any]) -> DeviceSession:
        session = self._mine(principal, msg.get("session_id"))
        if session.status == "running":
            await self._send(session, "session.stop", {})
        session.status = "stopped"
        return session

    async def delete(self, principal: Principal, msg: dict[str, Any]) -> DeviceSession:
        session = await self.stop(principal, msg)
        await self._forget(session)
        return session

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sessions.values() if _visible(principal, s)]

    async def _forget(self, session: DeviceSession) -> None:
        self.sessions.pop(session.session_id, None)
        await self.hub.remove(
            self.hub.topics.device_command_result(session.device_id, session.session_id),
            session.listener,
        )

    async def connection_closed(self, reply: Callable[[dict[str, Any]], None]) -> None:
        """The connection that started these sessions is gone: stop and forget them."""
        for session in [s for s in self.sessions.values() if s.reply == reply]:
            await self._end(session)

    def revoke(
        self, principal: Principal, reply: Callable[[dict[str, Any]], None]
    ) -> tuple[DeviceSession, ...]:
        """The connection answering to ``reply`` now holds ``principal`` (a refreshed token):
        forget, at once, the sessions it started that the new token could not have started
        (scope or device gone), so their output reaches nobody from here on, and return them.
        The caller then awaits :meth:`release` to stop them at the device."""
        may_command = principal.has("commands:write")
        revoked = tuple(
            s
            for s in self.sessions.values()
            if s.reply == reply and not (may_command and _visible(principal, s))
        )
        for session in revoked:
            self.sessions.pop(session.session_id, None)
        return revoked

    async def release(self, sessions: tuple[DeviceSession, ...]) -> None:
        """Stop revoked sessions at their devices and drop their broker listeners."""
        for session in sessions:
            await self._end(session)

    async def _end(self, session: DeviceSession) -> None:
        if session.status == "running":
            try:
                await self._send(session, "session.stop", {})
            except ClientError:
                pass  # the broker is away: nothing can reach the device; forget it anyway
            session.status = "stopped"
        await self._forget(session)


def _visible(principal: Principal, session: DeviceSession) -> bool:
    """Whether ``principal`` may know of ``session``: its own subject's, on a device it sees."""
    return session.owner == principal.sub and principal.sees(session.device_id)
