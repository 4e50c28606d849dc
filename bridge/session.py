"""One WebSocket client: authentication state, subscriptions, dispatch of its messages.

Handlers never touch the socket: replies and live frames go into the client's
:class:`~bridge.outbound.OutboundQueue`, which one writer task (in ``server.py``) drains.
Live frames are built once per broker message and subscription shape and shared by every
client with the same subscription (the subscription id is a hash of its content).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson

from bridge import protocol
from bridge.actions import FrontActions
from bridge.auth import AuthError, JwtVerifier, Principal
from bridge.commands import Commands
from bridge.device_sessions import DeviceSession, DeviceSessions
from bridge.dialects import EVENT_CHANNELS, live_frame, shared_frame
from bridge.history import History, replay_key
from bridge.hub import Hub
from bridge.limits import FrontLimits, TokenBucket
from bridge.outbound import OutboundQueue, SharedBudget
from bridge.protocol import ClientError, bad_request, encode, message
from bridge.subscription_set import (
    RESUMABLE_CHANNELS,
    RESUME_FIELD,
    Subscription,
    device_of,
    subscription_id,
)
from bridge.subscriptions import (
    CHANNELS,
    FILTER_CHANNELS,
    Selector,
    SubscriptionError,
    authorize,
    filters_of,
    inapplicable,
    parse_channel_subscribe,
    parse_devices,
)
from ingest.names import safe_excerpt
from ingest.payload import parse_timestamp

log = logging.getLogger(__name__)

__all__ = ["CLOSE_TOO_MANY_CONNECTIONS", "FrontLimits", "Session"]  # FrontLimits: bridge/limits.py

MAX_BATCH = 50
REPLAY_CHUNK = 500  # replayed frames queued before waiting for the client to read them
REPLAY_DEDUP_S = 10.0
# A connection refused because its subject has too many: the close code mirrors the handshake's
# HTTP 429, as 4001 (token expired) mirrors 401.
CLOSE_TOO_MANY_CONNECTIONS = 4029


class Session:
    def __init__(
        self,
        *,
        client_id: str,
        hub: Hub,
        verifier: JwtVerifier | None,
        auth_required: bool,
        limits: FrontLimits,
        principal: Principal | None,
        wake: Callable[[], None],
        send_now: Callable[[bytes], bool] | None = None,
        snapshot: Callable[
            [Selector, Principal], Awaitable[list[tuple[tuple[str, ...], dict[str, Any]]]]
        ]
        | None = None,
        on_principal: Callable[[Principal], None] | None = None,
        actions: FrontActions | None = None,
        commands: Commands | None = None,
        device_sessions: DeviceSessions | None = None,
        history: History | None = None,
        budget: SharedBudget | None = None,
        wait_room: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.client_id = client_id
        self.hub = hub
        self.verifier = verifier
        self.auth_required = auth_required
        self.limits = limits
        self.principal = principal
        self.queue = OutboundQueue(
            limits.queue_capacity,
            limits.max_behind_s,
            max_bytes=limits.queue_max_bytes,
            room_bytes=limits.room_bytes,
            budget=budget,
        )
        # Waits until the client has read enough of what is queued for it (False: it will
        # not, the connection is closing). Long outputs (replays, batches) await it between
        # chunks, so what one request makes the server hold is bounded too.
        self._wait_room = wait_room
        self._strikes = TokenBucket(limits.rate_strikes_per_s, limits.rate_strike_burst)
        self._held = 0  # live messages held across this client's running replays
        self.subscriptions: dict[str, Subscription] = {}
        self._interval_subs = 0
        self.bucket = TokenBucket(limits.messages_per_s, limits.burst)
        self.received = 0
        self.errors = 0  # error replies sent (o1's processorStats)
        self._wake = wake
        # Writes a live frame at once if the connection can take it (nothing queued before it,
        # transport not paused); False means queue it. None: always queue (tests, batch).
        self._send_now = send_now
        self._snapshot = snapshot
        self._on_principal = on_principal
        self.actions = actions
        self.commands = commands
        self.device_sessions = device_sessions
        self.history = history
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.close_request: tuple[int, str] | None = None
        self.batch_mode = False  # set by a subscribe with "batch": true
        self._forget_hub = (
            hub.on_resubscribed(self._broker_link_restored) if history is not None else None
        )

    # -- output ------------------------------------------------------------------------------
    def reply(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "error":
            self.errors += 1
        self.queue.put(encode(msg), time.monotonic(), force=True)
        self._wake()

    def reply_wake(self) -> None:
        self._wake()

    def error(self, exc: ClientError, id_: Any = None) -> None:
        self.reply(protocol.error_message(exc, id_))

    def request_close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
        self._wake()

    async def room(self) -> bool:
        """True once the client has read enough of its queue for more output to be made
        for it; False when it never will (the connection is closing)."""
        if self.closed or self.close_request is not None:
            return False
        if self.queue.room() or self._wait_room is None:
            return True
        self._wake()  # what was queued without a wake (replayed frames) must start moving
        return await self._wait_room()

    # -- input -------------------------------------------------------------------------------
    async def handle_frame(self, raw: str | bytes) -> None:
        self.received += 1
        if self.principal is None and self.received > self.limits.preauth_messages:
            # an unauthenticated connection gets a few tries, not a service
            self.request_close(1008, "authenticate first")
            return
        now = time.monotonic()
        wait = self.bucket.take(now)
        if wait:
            if self._strikes.take(now):
                self.request_close(1008, "message rate limit exceeded")
                return
            self.error(
                ClientError(429, "rate_limit_exceeded", "too many messages", retry_after=wait)
            )
            return
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.error(ClientError(400, "invalid_json", "frames must be UTF-8 JSON text"))
                return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.error(ClientError(400, "invalid_json", "message is not valid JSON"))
            return
        await self.handle_message(msg)

    async def handle_message(self, msg: Any, in_batch: bool = False) -> None:
        id_ = msg.get("id") if isinstance(msg, dict) else None
        if id_ is not None and not (
            isinstance(id_, str | int) and not isinstance(id_, bool) and len(str(id_)) <= 128
        ):
            id_ = None
        try:
            if not isinstance(msg, dict):
                raise bad_request("message must be a JSON object")
            type_ = msg.get("type")
            if not isinstance(type_, str):
                raise bad_request("message has no type")
            if self.principal is None and type_ not in ("auth", "authenticate", "ping", "pong"):
                raise ClientError(
                    401, "unauthorized", "authenticate first: send {type: auth, token}"
                )
            handler = self._handlers().get(type_)
            if handler is None:
                raise bad_request(f"unknown message type {protocol_excerpt(type_)}")
            if type_ == "batch" and in_batch:
                raise bad_request("a batch cannot contain a batch")
            await handler(msg, id_)
        except ClientError as exc:
            self.error(exc, id_)
        except SubscriptionError as exc:
            self.error(ClientError(exc.code, exc.error, exc.message), id_)
        except Exception:
            log.exception(
                "error handling a %s message",
                protocol_excerpt(msg.get("type")) if isinstance(msg, dict) else "?",
            )
            self.reply(protocol.internal_error(id_))

    def _handlers(self) -> dict[str, Callable[[dict[str, Any], Any], Awaitable[None]]]:
        return {
            "auth": self._auth,
            "authenticate": self._auth,
            "ping": self._ping,
            "pong": self._pong,
            "subscribe": self._subscribe,
            "subscribe-metrics": self._subscribe_o1,
            "subscribe-logs": self._subscribe_o1,
            "unsubscribe": self._unsubscribe,
            "list_subscriptions": self._list,
            "batch": self._batch,
            "ack_alert": self._ack_alert,
            "command": self._command,
            "start_session": self._sessions,
            "send_command": self._sessions,
            "stop_session": self._sessions,
            "delete_session": self._sessions,
            "list_sessions": self._sessions,
            "telemetry": self._telemetry,
            "query": self._query,
            "list_rules": self._rules,
            "create_rule": self._rules,
            "update_rule": self._rules,
            "delete_rule": self._rules,
        }

    async def _sessions(self, msg: dict[str, Any], id_: Any) -> None:
        assert self.principal is not None
        manager = self.device_sessions
        if manager is None:
            raise ClientError(503, "unavailable", "sessions are not available on this front")
        kind, p = msg["type"], self.principal
        if kind == "list_sessions":
            if msg.get("data") not in (None, {}):  # the Zhineng clients send an empty one
                raise ClientError(422, "validation_error", "list_sessions takes no filters")
            sessions = manager.list(p)
            self.reply(message("sessions_list", id_=id_, sessions=sessions, count=len(sessions)))
        elif kind == "start_session":
            ses = await manager.start(p, msg, self.reply)
            self.reply(
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
            self.reply(message("command_sent", id_=id_, session_id=ses.session_id))
        elif kind == "stop_session":
            ses = await manager.stop(p, msg)
            self.reply(
                message("session_stopped", id_=id_, session_id=ses.session_id, status=ses.status)
            )
        else:
            ses = await manager.delete(p, msg)
            self.reply(message("session_deleted", id_=id_, session_id=ses.session_id))

    def _need_commands(self) -> Commands:
        if self.commands is None:
            raise ClientError(503, "unavailable", "commands are not available on this front")
        return self.commands

    async def _command(self, msg: dict[str, Any], id_: Any) -> None:
        assert self.principal is not None
        commands = self._need_commands()
        commands.validate(self.principal, msg)  # errors now, not from the background task
        running = sum(1 for t in self._tasks if t.get_name().startswith("command-"))
        if running >= self.limits.commands_in_flight:
            raise ClientError(
                429,
                "rate_limit_exceeded",
                f"at most {self.limits.commands_in_flight} commands in flight per connection",
            )
        principal = self.principal

        async def run() -> None:
            try:
                await commands.run(principal, msg, id_, self.reply)
            except ClientError as exc:
                self.error(exc, id_)
            except Exception:
                log.exception("command failed")
                self.reply(protocol.internal_error(id_))

        task = asyncio.create_task(run(), name=f"command-{self.client_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _telemetry(self, msg: dict[str, Any], id_: Any) -> None:
        assert self.principal is not None
        device, count = await self._need_commands().telemetry(self.principal, msg)
        self.reply(
            message("telemetry_ack", id_=id_, device_id=device, agentId=device, readings=count)
        )

    async def _query(self, msg: dict[str, Any], id_: Any) -> None:
        if self.history is None:
            raise ClientError(503, "unavailable", "stored telemetry is not available")
        assert self.principal is not None
        params = {k: v for k, v in msg.items() if k not in ("type", "id")}
        if params.get("format", "json") != "json":
            raise ClientError(422, "validation_error", "format: json over WebSocket (CSV: HTTP)")
        body = await self.history.query(self.principal, params)
        self.reply(message("query_result", id_=id_, **body))

    def _need_actions(self) -> FrontActions:
        if self.actions is None:
            raise ClientError(503, "unavailable", "this front has no database configured")
        return self.actions

    async def _ack_alert(self, msg: dict[str, Any], id_: Any) -> None:
        assert self.principal is not None
        alert = await self._need_actions().ack_alert(msg.get("alert_id"), self.principal)
        self.reply(message("alert_acknowledged", id_=id_, alert_id=alert["alert_id"], alert=alert))

    async def _rules(self, msg: dict[str, Any], id_: Any) -> None:
        assert self.principal is not None
        actions, kind = self._need_actions(), msg["type"]
        if kind == "list_rules":
            rules = await actions.list_rules(self.principal)
            self.reply(message("rules_list", id_=id_, rules=rules, count=len(rules)))
        elif kind == "delete_rule":
            await actions.delete_rule(self.principal, msg.get("rule_id"))
            self.reply(message("rule_deleted", id_=id_, rule_id=msg.get("rule_id")))
        else:
            rule = await actions.save_rule(
                self.principal, msg.get("rule"), create=kind == "create_rule"
            )
            reply = "rule_created" if kind == "create_rule" else "rule_updated"
            self.reply(message(reply, id_=id_, rule_id=rule["rule_id"], rule=rule))

    # -- handlers ------------------------------------------------------------------------------
    async def _auth(self, msg: dict[str, Any], id_: Any) -> None:
        """First authentication of a connection, or a refresh of its token (same subject).

        A refresh takes effect at once: live delivery reads ``self.principal`` per message,
        and what the new token no longer allows (subscriptions, device sessions) ends here.
        """
        legacy = msg["type"] == "authenticate"
        if self.verifier is None:
            raise ClientError(503, "unavailable", "authentication is not configured on this server")
        try:
            principal = self.verifier.verify(msg.get("token"), now=time.time())  # type: ignore[arg-type]
        except AuthError as exc:
            self._auth_failed(ClientError(401, exc.error, exc.message), id_, legacy)
            if self.principal is None:
                self.request_close(1008, "authentication failed")
            return
        previous = self.principal
        if previous is not None and principal.sub != previous.sub:
            raise ClientError(403, "forbidden", "a refreshed token must be for the same subject")
        if self._on_principal is not None:
            try:
                # the front's admission of a subject (per-subject connection limit); it must
                # run before the principal is set, so a refused connection stays anonymous
                self._on_principal(principal)
            except ClientError as exc:
                self._auth_failed(exc, id_, legacy)
                if previous is None:
                    self.request_close(CLOSE_TOO_MANY_CONNECTIONS, exc.message)
                return
        self.principal = principal
        # No await from the principal's change to the end of _withdraw: nothing the new token
        # forbids is delivered in between.
        withdrawn = self._withdraw(principal) if previous is not None else None
        if legacy:
            self.reply(
                message("auth_success", id_=id_, client_id=self.client_id, user=principal.sub)
            )
        else:
            self.reply(
                message(
                    "auth_response",
                    id_=id_,
                    success=True,
                    client_id=self.client_id,
                    user=principal.sub,
                )
            )
        if withdrawn is not None:
            await self._finish_refresh(principal, *withdrawn)

    def _auth_failed(self, exc: ClientError, id_: Any, legacy: bool) -> None:
        if legacy:
            self.error(exc, id_)
        else:
            self.reply(
                message(
                    "auth_response",
                    id_=id_,
                    success=False,
                    code=exc.code,
                    error=exc.error,
                    message=exc.message,
                )
            )

    def _withdraw(
        self, principal: Principal
    ) -> tuple[list[tuple[Subscription, SubscriptionError]], tuple[DeviceSession, ...]]:
        """Take from this connection, without awaiting, what a refreshed ``principal`` could
        not have had: subscriptions it could not make now (scope or named device gone) and
        device sessions it could not start. Releasing them at the broker takes awaits
        (:meth:`_finish_refresh`); until then a withdrawn subscription's listener parks what
        it still gets in ``held``, which nothing releases once the subscription has left the
        session, and a revoked device session's output is dropped."""
        ended = []
        for sub in list(self.subscriptions.values()):
            try:
                authorize(sub.selector, principal)
            except SubscriptionError as exc:
                sub.held = []
                del self.subscriptions[sub.id]
                ended.append((sub, exc))
                continue
            # Latest values waiting for a frequency flush were accepted under the old claim.
            if sub.pending:
                sub.pending = {
                    k: v
                    for k, v in sub.pending.items()
                    if (device := device_of(k)) is None or principal.sees(device)
                }
        self._count_intervals()
        revoked = (
            self.device_sessions.revoke(principal, self.reply)
            if self.device_sessions is not None
            else ()
        )
        return ended, revoked

    async def _finish_refresh(
        self,
        principal: Principal,
        ended: list[tuple[Subscription, SubscriptionError]],
        revoked: tuple[DeviceSession, ...],
    ) -> None:
        """The rest of a refresh, after the reply: tell the client what ended, release it at
        the broker and the devices, and fit the remaining subscriptions' broker filters to
        the new claim."""
        for sub, exc in ended:
            self.reply(
                message(
                    "subscription_ended",
                    subscription_id=sub.id,
                    channel=sub.selector.channel,
                    code=exc.code,
                    error=exc.error,
                    message=exc.message,
                )
            )
        for ses in revoked:
            reason = (
                "the token lacks the scope commands:write"
                if not principal.has("commands:write")
                else f"the token does not allow device {ses.device_id}"
            )
            self.reply(
                message(
                    "session_ended",
                    session_id=ses.session_id,
                    tool_name=ses.device_id,
                    device_id=ses.device_id,
                    code=403,
                    error="forbidden",
                    message=reason,
                )
            )
        for sub, _exc in ended:
            await self._remove(sub)
        if self.device_sessions is not None and revoked:
            await self.device_sessions.release(revoked)
        for sub in list(self.subscriptions.values()):
            await self._refilter(sub, principal)

    async def _refilter(self, sub: Subscription, principal: Principal) -> None:
        """A subscription that names no device is translated into filters for the ids of an
        exact-list claim (``Selector.mqtt_filters``): after a refresh, follow the new list,
        so devices it adds are delivered and the broker stops sending ones it dropped
        (delivery checks the claim per message in any case). New filters are added before
        old ones go: a device covered by both is never missed, though a message that
        arrives in between can match both and come twice."""
        filters = sub.selector.mqtt_filters(self.hub.topics, principal)
        if filters == sub.filters or sub.listener is None:
            return
        old, sub.filters = sub.filters, filters
        for f in filters:
            if f not in old:
                await self.hub.add(f, sub.listener)
        for f in old:
            if f not in filters:
                await self.hub.remove(f, sub.listener)

    async def _ping(self, msg: dict[str, Any], id_: Any) -> None:
        fields = {"client_timestamp": msg["timestamp"]} if "timestamp" in msg else {}
        if "timestamp" in msg:
            # echo it under its own name too; our own envelope timestamp follows
            reply = message("pong", id_=id_, **fields)
            reply["timestamp"] = msg["timestamp"]
            reply["server_timestamp"] = protocol.now_iso()
            self.reply(reply)
        else:
            self.reply(message("pong", id_=id_))

    async def _pong(self, _msg: dict[str, Any], _id: Any) -> None:
        """A client's answer to an application-level ping (the Nexus client sends one when it
        gets a ``ping`` message): nothing to reply. The bridge's own keepalive is the
        WebSocket ping frame."""

    async def _batch(self, msg: dict[str, Any], id_: Any) -> None:
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

    async def _subscribe(self, msg: dict[str, Any], id_: Any) -> None:
        if "deploymentId" in msg:
            # o1's deployments: nothing on a telemetry bridge is one
            deployment = safe_excerpt(msg.get("deploymentId"), 64)
            raise ClientError(
                404,
                "not_found",
                f"no deployment {deployment}: this bridge has none; subscribe to a device's "
                "readings with subscribe-metrics or its log lines with subscribe-logs "
                "(host = the device id), or subscribe with a channel, topics or events",
                details={"deploymentId": deployment},
            )
        if not isinstance(msg.get("batch", False), bool):
            raise ClientError(422, "validation_error", "batch must be true or false")
        if msg.get("batch") is True:
            self.batch_mode = True
        if "topics" in msg:
            await self._subscribe_named(msg, id_, "topics")
        elif "events" in msg:
            await self._subscribe_named(msg, id_, "events")
        else:
            selector = parse_channel_subscribe(msg)
            since = self._since(msg, selector)
            existing = self.subscriptions.get(subscription_id(selector, "channel", ""))
            if existing is not None:
                # The same subscription again: it is live already, and whatever a `since`
                # asks for was replayed when it was made. Replaying again per repeat would
                # let one small message make the server read and queue 10,000 frames.
                authorize(selector, self.principal)  # type: ignore[arg-type]
                self.reply(
                    message(
                        "subscribed",
                        id_=id_,
                        subscription_id=existing.id,
                        channel=existing.selector.channel,
                        mqtt_topics=list(existing.filters),
                        existing=True,
                    )
                )
                return
            # Where a replay after a broker-link gap would start if nothing has been delivered
            # yet: the database clock, read *before* the broker subscription exists, and no
            # await between the subscription and the `subscribed` reply (live frames must not
            # overtake it).
            resume_from = None
            if (
                self.history is not None
                and selector.channel in RESUMABLE_CHANNELS
                and not selector.interval_s  # latest-value sampling: nothing to fill in
            ):
                resume_from = since or await self.history.now()
            # held until `subscribed` is queued: a message that reaches the listener while the
            # broker subscriptions are being made must not overtake the reply naming its id
            sub = await self._add(selector, "channel", "", hold=True)
            if resume_from is not None:
                sub.resume_point = resume_from.isoformat()
            self.reply(
                message(
                    "subscribed",
                    id_=id_,
                    subscription_id=sub.id,
                    channel=sub.selector.channel,
                    mqtt_topics=list(sub.filters),
                )
            )
            if since is not None:
                await self._replay(sub, since)
            else:
                held = self._release_held(sub)  # no await: live resumes in order
                now = time.monotonic()
                for levels, event in held:
                    self._deliver_replayed(sub, levels, event, now)
            await self._send_snapshot(sub)

    def _since(self, msg: dict[str, Any], selector: Selector) -> datetime | None:
        value = msg.get("since")
        if value is None:
            return None
        if self.history is None:
            raise ClientError(503, "unavailable", "stored messages are not available")
        if selector.channel not in RESUMABLE_CHANNELS:
            raise ClientError(
                422, "validation_error", "since: only telemetry, alerts and devices can resume"
            )
        try:
            return parse_timestamp(value)
        except ValueError:
            raise ClientError(
                422, "validation_error", "since: epoch milliseconds or ISO-8601 (a received_at)"
            ) from None

    async def _replay(self, sub: Subscription, since: datetime) -> None:
        """Stored messages after ``since``, then the live ones that arrived meanwhile (minus
        those storage already had), then ``replay_complete``: no gap, no duplicate.

        The broker subscription exists before storage is read, so a message committed after
        the read is held live; one committed before it is in storage (and maybe also held).
        """
        assert self.history is not None and self.principal is not None
        try:
            events, truncated = await self.history.replay(
                sub.selector, self.principal, since, self.limits.replay_max
            )
        except BaseException:
            self._release_held(sub)
            raise
        seen = set()
        for start in range(0, len(events), REPLAY_CHUNK):
            # live messages keep collecting in sub.held while this waits for the client
            if not await self.room():
                self._release_held(sub)
                return
            now = time.monotonic()
            for levels, event in events[start : start + REPLAY_CHUNK]:
                seen.add(replay_key(levels, event))
                self._deliver_replayed(sub, levels, event, now)
        now = time.monotonic()
        held = self._release_held(sub)  # no await from here on: live resumes in order
        for levels, event in held:
            key = replay_key(levels, event)
            if key in seen:
                seen.discard(key)
            else:
                self._deliver_replayed(sub, levels, event, now)
        # A reading committed just before storage was read can have its live copy still in
        # flight (ingest -> broker -> here): drop it when it comes.
        sub.replayed, sub.replayed_until = seen, now + REPLAY_DEDUP_S
        self.reply(
            message(
                "replay_complete",
                subscription_id=sub.id,
                count=len(events),
                truncated=truncated,
            )
        )

    def _release_held(self, sub: Subscription) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        held, sub.held = sub.held or [], None
        self._held -= len(held)
        return held

    def _deliver_replayed(
        self, sub: Subscription, levels: tuple[str, ...], event: dict[str, Any], now: float
    ) -> None:
        principal = self.principal
        if principal is None or not sub.selector.accepts(principal, device_of(levels), event):
            return  # read under a token since refreshed to fewer rights
        if sub.resume_point is not None:
            sub.resume_point = event.get(RESUME_FIELD.get(levels[0], "ts")) or sub.resume_point
        self.queue.put(live_frame(sub, levels, event), now, force=True)

    async def _subscribe_named(self, msg: dict[str, Any], id_: Any, dialect: str) -> None:
        names_ = msg.get(dialect)
        if not isinstance(names_, list) or not 0 < len(names_) <= 20:
            raise ClientError(422, "validation_error", f"{dialect} must be a list of 1-20 names")
        for key in ("snapshot", "since", "channel", "topics" if dialect == "events" else "events"):
            if key in msg:
                raise ClientError(
                    422,
                    "validation_error",
                    f"{key}: not in the {dialect} form of subscribe (one form per message)",
                )
        # one filters object for several topics: each filter applies to the topics that have
        # its field, and one that applies to none of them is refused
        filters = filters_of({k: v for k, v in msg.items() if k not in (dialect, "batch")})
        used: set[str] = set()
        selectors = []
        for name in names_:
            channel = (
                name
                if dialect == "topics"
                else EVENT_CHANNELS.get(name)
                if isinstance(name, str)
                else None
            )
            if channel not in CHANNELS:
                allowed = CHANNELS if dialect == "topics" else tuple(EVENT_CHANNELS)
                raise ClientError(
                    422,
                    "validation_error",
                    f"unknown {dialect[:-1]} {safe_excerpt(name)}; one of {', '.join(allowed)}",
                )
            wrong = inapplicable(channel, filters)
            applicable = {k: v for k, v in filters.items() if k not in wrong}
            used.update(applicable)
            selector = parse_channel_subscribe({"channel": channel}, filters=applicable)
            selectors.append((name, selector))
        unused = [k for k in filters if k not in used]
        if unused:
            where = "; ".join(f"{k} applies to {', '.join(FILTER_CHANNELS[k])}" for k in unused)
            raise ClientError(
                422,
                "validation_error",
                f"filter {', '.join(unused)} applies to none of the {dialect} named ({where})",
            )
        subs = [await self._add(sel, dialect, name) for name, sel in selectors]
        ids = [s.id for s in subs]
        if dialect == "topics":
            self.reply(
                message("subscription_confirmed", id_=id_, topics=names_, subscription_ids=ids)
            )
        else:
            self.reply(message("subscribed", id_=id_, events=names_, subscription_ids=ids))

    async def _subscribe_o1(self, msg: dict[str, Any], id_: Any) -> None:
        logs = msg["type"] == "subscribe-logs"
        takes = (
            ("host", "application", "search", "level")
            if logs
            else ("host", "application", "metrics")
        )
        for key in msg:
            if key not in ("type", "id", *takes):
                raise ClientError(
                    422,
                    "validation_error",
                    f"{msg['type']} takes {', '.join(takes)}, not {safe_excerpt(key)}",
                )
        filters = {
            "device_id" if k == "host" else k: msg[k]
            for k in takes
            if msg.get(k) is not None and (logs or k != "application")
        }
        selector = parse_channel_subscribe(
            {"channel": "logs" if logs else "telemetry"}, filters=filters
        )
        application = msg.get("application")
        if application is not None and not (
            isinstance(application, str) and 0 < len(application) <= 64
        ):
            raise ClientError(
                422, "validation_error", "application must be text of 1-64 characters"
            )
        # On logs, `application` selects log lines; readings belong to a device, not to an
        # application, so on metrics it only labels the messages (o1's client shows it).
        label = application or ""
        sub = await self._add(selector, "o1-logs" if logs else "o1-metrics", label)
        ids = [sub.id]
        if not logs and self.principal is not None and self.principal.has("devices:read"):
            # o1's metrics are host CPU/memory/disk: the bridge's own system/{component}
            # status, for the component named by `host` (or every component), showing the
            # `metrics` named (o1's cpu/memory/disk or the status's own field names).
            system = parse_channel_subscribe(
                {"channel": "system"},
                filters={k: v for k, v in filters.items() if k in ("device_id", "metrics")},
            )
            ids.append((await self._add(system, "o1-metrics", label, parent=sub.id)).id)
        self.reply(
            message(
                "subscribed",
                id_=id_,
                subscriptionId=sub.id,
                subscription_id=sub.id,
                subscription_ids=ids,
            )
        )

    async def _add(
        self,
        selector: Selector,
        dialect: str,
        label: str,
        hold: bool = False,
        parent: str | None = None,
    ) -> Subscription:
        assert self.principal is not None
        authorize(selector, self.principal)
        sub_id = subscription_id(selector, dialect, label)
        if sub_id in self.subscriptions:
            return self.subscriptions[sub_id]
        if len(self.subscriptions) >= self.limits.max_subscriptions:
            raise ClientError(
                429,
                "rate_limit_exceeded",
                f"at most {self.limits.max_subscriptions} subscriptions per connection",
            )
        sub = Subscription(
            sub_id, selector, selector.mqtt_filters(self.hub.topics, self.principal), dialect, label
        )
        sub.listener = self._listener(sub)
        sub.parent = parent
        if hold:
            sub.held = []
        self.subscriptions[sub_id] = sub
        self._count_intervals()
        for f in sub.filters:
            await self.hub.add(f, sub.listener)
        return sub

    def _listener(self, sub: Subscription) -> Callable[..., None]:
        def on_event(
            levels: tuple[str, ...], event: dict[str, Any], _retained: bool, frames: dict[Any, Any]
        ) -> None:
            principal = self.principal
            if principal is None or self.closed or self.subscriptions.get(sub.id) is not sub:
                return  # gone: closed, unsubscribed, or ended by a refreshed token
            device = device_of(levels)
            if not sub.selector.accepts(principal, device, event):
                return
            if levels[0] == "system" and sub.selector.devices is not None:
                if event.get("component") not in sub.selector.devices:
                    return
            if levels[0] == "alerts" and sub.dialect == "events" and event.get("event"):
                if sub.label != f"alert.{event.get('event')}":
                    return
            if sub.held is not None:
                if self._held >= self.limits.replay_max:
                    # a replay this client is slow to take: what arrives meanwhile is
                    # bounded like its queue, and the loss is reported (warning)
                    self.queue.count_dropped(1)
                    return
                sub.held.append((levels, event))
                self._held += 1
                return
            if sub.replayed is not None:
                if time.monotonic() > sub.replayed_until:
                    sub.replayed = None
                elif (key := replay_key(levels, event)) in sub.replayed:
                    sub.replayed.discard(key)
                    return
            if sub.selector.interval_s and levels[0] in ("telemetry", "system"):
                sub.pending[levels] = event  # the latest per reading or component
                return
            if sub.resume_point is not None:
                sub.resume_point = event.get(RESUME_FIELD.get(levels[0], "ts")) or sub.resume_point
            frame = shared_frame(sub, levels, event, frames)
            if not self.queue and self._send_now is not None and self._send_now(frame):
                return  # written straight to the transport: nothing queued, nothing to wake
            conflate = (sub.id, levels[1], levels[2]) if levels[0] == "telemetry" else None
            self.queue.put(frame, time.monotonic(), key=conflate)
            self._wake()

        return on_event

    @property
    def has_intervals(self) -> bool:
        """Whether a subscription asked for a frequency (the ticker flushes only those). Kept
        as a flag: the ticker asks every connection ten times a second, and computing it each
        time was 4% of the front's CPU at 1,000 clients (py-spy)."""
        return self._interval_subs > 0

    def _count_intervals(self) -> None:
        self._interval_subs = sum(1 for s in self.subscriptions.values() if s.selector.interval_s)

    def flush_intervals(self, now: float) -> None:
        """Frequency-limited subscriptions: the latest value per (device, metric) per interval."""
        for sub in self.subscriptions.values():
            interval = sub.selector.interval_s
            if not interval or now < sub.next_flush:
                continue
            sub.next_flush = now + interval
            pending, sub.pending = sub.pending, {}
            for levels, event in pending.items():
                frame = live_frame(sub, levels, event)
                self.queue.put(frame, now, key=(sub.id, *levels[1:]))
            if pending:
                self._wake()

    async def _send_snapshot(self, sub: Subscription) -> None:
        if not sub.selector.snapshot or self._snapshot is None or self.principal is None:
            return
        for levels, event in await self._snapshot(sub.selector, self.principal):
            frame = live_frame(sub, levels, event)
            conflate = (sub.id, levels[1], levels[2]) if levels[0] == "telemetry" else None
            self.queue.put(frame, time.monotonic(), key=conflate)
        self.reply(message("snapshot_complete", subscription_id=sub.id))

    async def _unsubscribe(self, msg: dict[str, Any], id_: Any) -> None:
        """By ``subscription_id`` (o1: ``subscriptionId``): that one; by ``topics`` or
        ``events``: those named; by ``channel``: that channel's subscriptions, or with
        ``device_id`` those naming only devices among the ones given."""
        sub_id = msg.get("subscription_id", msg.get("subscriptionId"))
        targets: list[Subscription] = []
        if sub_id is not None:
            if not isinstance(sub_id, str) or sub_id not in self.subscriptions:
                raise ClientError(404, "not_found", "no such subscription")
            targets = [self.subscriptions[sub_id]]
            targets += [s for s in self.subscriptions.values() if s.parent == sub_id]
        elif "topics" in msg or "events" in msg:
            dialect = "topics" if "topics" in msg else "events"
            wanted = msg.get(dialect)
            if not isinstance(wanted, list):
                raise ClientError(422, "validation_error", f"{dialect} must be a list")
            targets = [
                s for s in self.subscriptions.values() if s.dialect == dialect and s.label in wanted
            ]
        elif "channel" in msg:
            targets = self._channel_targets(msg)
        else:
            raise ClientError(
                422, "validation_error", "name a subscription_id, channel, topics or events"
            )
        if not targets:
            raise ClientError(404, "not_found", "no matching subscription")
        for sub in targets:
            await self._remove(sub)
        ids = [s.id for s in targets]
        if "topics" in msg:
            self.reply(
                message(
                    "unsubscription_confirmed", id_=id_, topics=msg["topics"], subscription_ids=ids
                )
            )
            return
        fields: dict[str, Any] = {"subscription_ids": ids, "subscription_id": ids[0]}
        if "events" in msg:  # the events that were subscribed, in the order asked
            gone = {s.label for s in targets}
            fields["events"] = [e for e in dict.fromkeys(msg["events"]) if e in gone]
        elif "channel" in msg:
            fields["channel"] = msg["channel"]
        self.reply(message("unsubscribed", id_=id_, **fields))

    def _channel_targets(self, msg: dict[str, Any]) -> list[Subscription]:
        channel = msg.get("channel")
        if channel not in CHANNELS:
            raise ClientError(
                422, "validation_error", f"channel must be one of {', '.join(CHANNELS)}"
            )
        filters = msg.get("filters") or {}
        if not isinstance(filters, dict):
            raise ClientError(422, "validation_error", "filters must be an object")
        devices = parse_devices(msg.get("device_id", filters.get("device_id")))
        subs = [
            s
            for s in self.subscriptions.values()
            if s.dialect == "channel" and s.selector.channel == channel
        ]
        if devices is None:
            return subs
        wanted = set(devices)
        named = [s for s in subs if s.selector.devices is not None]
        partly = [
            s.id
            for s in named
            if wanted & set(s.selector.devices or ())
            and not set(s.selector.devices or ()) <= wanted
        ]
        if partly:
            raise ClientError(
                422,
                "validation_error",
                f"subscription {', '.join(partly)} also covers other devices: unsubscribe it "
                "by subscription_id, or name all its devices",
            )
        return [s for s in named if set(s.selector.devices or ()) <= wanted]

    async def _remove(self, sub: Subscription) -> None:
        self.subscriptions.pop(sub.id, None)
        self._count_intervals()
        for f in sub.filters:
            await self.hub.remove(f, sub.listener)  # type: ignore[arg-type]

    async def _list(self, _msg: dict[str, Any], id_: Any) -> None:
        subs = [s.describe() for s in self.subscriptions.values()]
        self.reply(message("subscriptions_list", id_=id_, subscriptions=subs, count=len(subs)))

    def _broker_link_restored(self) -> None:
        """The front's broker connection was lost and is back: whatever the stream carried
        meanwhile never arrived here. Each resumable subscription replays it from storage
        (after its last delivered message), exactly as a client's ``since`` would, so the
        client sees no gap without having to notice anything (then ``replay_complete``)."""
        if self.closed or self.principal is None:
            return
        for sub in self.subscriptions.values():
            if sub.resume_point is None:
                continue  # not resumable
            if sub.held is not None:
                # a replay is running and may have read storage before what is now
                # announced was committed: run one more when it finishes
                sub.replay_again = True
                continue
            try:
                since = parse_timestamp(sub.resume_point)
            except (TypeError, ValueError):
                continue
            sub.held = []  # live messages from now on wait for the replay (no await before)
            task = asyncio.create_task(self._replay_logged(sub, since))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _replay_logged(self, sub: Subscription, since: datetime) -> None:
        try:
            await self._replay(sub, since)
        except ClientError as exc:
            self.error(exc)
        except Exception:
            log.exception("replay after the broker reconnected failed")
            self.reply(protocol.internal_error(None))
        if sub.replay_again and not self.closed:
            sub.replay_again = False
            self._broker_link_restored()

    async def close(self) -> None:
        """Release every broker subscription (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.queue.clear()  # its bytes go back to the process-wide budget
        if self._forget_hub is not None:
            self._forget_hub()
        for task in list(self._tasks):
            task.cancel()
        if self.device_sessions is not None:
            await self.device_sessions.connection_closed(self.reply)
        for sub in list(self.subscriptions.values()):
            await self._remove(sub)


def protocol_excerpt(value: Any) -> str:
    from ingest.names import safe_excerpt

    return safe_excerpt(value, 40)
