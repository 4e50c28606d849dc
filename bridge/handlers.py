"""The client's requests other than authentication and subscriptions: device sessions,
commands, telemetry sent by a client, stored-data queries, alerts, rules, ping, batch.

Each handler takes the parsed message and its ``id`` and answers with ``reply``/``error``
(``bridge/session_state.py``); the message types and their replies are in docs/protocol.md,
section 3, and the seed dialects' own in section 8.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bridge import protocol
from bridge.actions import FrontActions
from bridge.commands import Commands
from bridge.errors import ws_error
from bridge.protocol import ClientError, message
from bridge.registry import Send
from bridge.session_state import SessionState

log = logging.getLogger(__name__)

MAX_BATCH = 50


class Handlers(SessionState):
    async def _sessions(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        assert self.principal is not None
        manager = self.device_sessions
        if manager is None:
            raise ClientError(503, "unavailable", "sessions are not available on this front")
        kind, p = msg["type"], self.principal
        if kind == "list_sessions":
            if msg.get("data") not in (None, {}):  # the Zhineng clients send an empty one
                raise ClientError(422, "validation_error", "list_sessions takes no filters")
            sessions = manager.list(p)
            send(message("sessions_list", id_=id_, sessions=sessions, count=len(sessions)))
        elif kind == "start_session":
            ses = await manager.start(p, msg, self.reply)
            send(
                message(
                    "session_started",
                    id_=id_,
                    session_id=ses.session_id,
                    tool_name=ses.device_id,
                    status=ses.status,
                )
            )
        elif kind == "send_command":
            ses = await manager.input(p, msg)
            send(message("command_sent", id_=id_, session_id=ses.session_id))
        elif kind == "stop_session":
            ses = await manager.stop(p, msg)
            send(message("session_stopped", id_=id_, session_id=ses.session_id, status=ses.status))
        else:
            ses = await manager.delete(p, msg)
            send(message("session_deleted", id_=id_, session_id=ses.session_id))

    def _need_commands(self) -> Commands:
        if self.commands is None:
            raise ClientError(503, "unavailable", "commands are not available on this front")
        return self.commands

    async def _command(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        assert self.principal is not None
        commands = self._need_commands()
        commands.validate(self.principal, msg)  # errors now, not from the background task
        running = sum(1 for t in self._tasks or () if t.get_name().startswith("command-"))
        if running >= self.limits.commands_in_flight:
            raise ClientError(
                429,
                "rate_limit_exceeded",
                f"at most {self.limits.commands_in_flight} commands in flight per connection",
            )
        principal = self.principal

        async def run() -> None:
            try:
                await commands.run(principal, msg, id_, send)
            except Exception as exc:  # the one ladder: only unknown errors log
                send(ws_error(exc, id_, what="command"))

        task = asyncio.create_task(run(), name=f"command-{self.client_id}")
        self._track(task)

    async def _telemetry(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        assert self.principal is not None
        device, count = await self._need_commands().telemetry(self.principal, msg)
        send(message("telemetry_ack", id_=id_, device_id=device, agentId=device, readings=count))

    async def _query(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        if self.history is None:
            raise ClientError(503, "unavailable", "stored telemetry is not available")
        assert self.principal is not None
        params = {k: v for k, v in msg.items() if k not in ("type", "id")}
        if params.get("format", "json") != "json":
            raise ClientError(422, "validation_error", "format: json over WebSocket (CSV: HTTP)")
        async with self.storage_turn():
            body = await self.history.query(self.principal, params)
        send(message("query_result", id_=id_, **body))

    def _need_actions(self) -> FrontActions:
        if self.actions is None:
            raise ClientError(503, "unavailable", "this front has no database configured")
        return self.actions

    async def _ack_alert(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        assert self.principal is not None
        alert = await self._need_actions().ack_alert(msg.get("alert_id"), self.principal)
        send(message("alert_acknowledged", id_=id_, alert_id=alert["alert_id"], alert=alert))

    async def _rules(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        assert self.principal is not None
        actions, kind = self._need_actions(), msg["type"]
        if kind == "list_rules":
            rules = await actions.list_rules(self.principal)
            send(message("rules_list", id_=id_, rules=rules, count=len(rules)))
        elif kind == "delete_rule":
            await actions.delete_rule(self.principal, msg.get("rule_id"))
            send(message("rule_deleted", id_=id_, rule_id=msg.get("rule_id")))
        else:
            rule = await actions.save_rule(
                self.principal, msg.get("rule"), create=kind == "create_rule"
            )
            reply = "rule_created" if kind == "create_rule" else "rule_updated"
            send(message(reply, id_=id_, rule_id=rule["rule_id"], rule=rule))

    def _ping(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        fields = {"client_timestamp": msg["timestamp"]} if "timestamp" in msg else {}
        if "timestamp" in msg:
            # echo it under its own name too; our own envelope timestamp follows
            reply = message("pong", id_=id_, **fields)
            reply["timestamp"] = msg["timestamp"]
            reply["server_timestamp"] = protocol.now_iso()
            send(reply)
        else:
            send(message("pong", id_=id_))

    def _pong(self, _msg: dict[str, Any], _id: Any, send: Send) -> None:
        """A client's answer to an application-level ping (the Nexus client sends one when it
        gets a ``ping`` message): nothing to reply. The bridge's own keepalive is the
        WebSocket ping frame."""

    async def _batch(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        items = msg.get("messages")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
            raise ClientError(
                422, "validation_error", f"batch.messages must be a list of 1-{MAX_BATCH} messages"
            )
        # a batch costs what its items would cost sent one by one (its frame paid for one)
        wait = self.bucket.take(time.monotonic(), len(items) - 1) if len(items) > 1 else 0.0
        if wait:
            raise ClientError(
                429,
                "rate_limit_exceeded",
                f"a batch of {len(items)} counts as {len(items)} messages",
                retry_after=wait,
            )
        for item in items:
            if not await self.room():
                return
            await self.handle_message(item, in_batch=True)
