"""One WebSocket client: its session, made of parts that each hold one concern.

:class:`Session` is what ``bridge/server.py`` makes per connection and drives: it reads the
client's frames (``handle_frame``: rate limits, JSON), dispatches each message by ``type``
(``handle_message``, through ``REGISTRY``: each type's schema and handler, bridge/registry.py),
authenticates and refreshes the token, and releases everything on ``close``. Its parts:

- ``bridge/session_state.py``: the connection's state and output (``reply``, ``room``...);
- ``bridge/handlers.py``: commands, device sessions, telemetry, query, alerts, rules, batch;
- ``bridge/subscribing.py``: subscribe/unsubscribe in each dialect's form;
- ``bridge/delivery.py``: broker subscriptions, live delivery, snapshots and replays;
- ``bridge/subscription_set.py`` and ``bridge/dialects.py``: the pure bookkeeping and frames.

The messages and their replies are in docs/protocol.md, section 3.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from bridge.auth import AuthError, Principal
from bridge.device_sessions import DeviceSession
from bridge.errors import ws_error
from bridge.handlers import Handlers
from bridge.limits import FrontLimits
from bridge.protocol import ClientError, bad_request, message
from bridge.registry import Registry, Send, message_id
from bridge.subscribing import Subscribing
from bridge.subscription_set import Subscription
from bridge.subscriptions import SubscriptionError

log = logging.getLogger(__name__)

# FrontLimits: bridge/limits.py
__all__ = ["CLOSE_TOO_MANY_CONNECTIONS", "MESSAGE_TYPES", "FrontLimits", "Session"]

# A connection refused because its subject has too many: the close code mirrors the handshake's
# HTTP 429, as 4001 (token expired) mirrors 401.
CLOSE_TOO_MANY_CONNECTIONS = 4029


class Session(Subscribing, Handlers):
    # -- input -------------------------------------------------------------------------------
    async def handle_frame(self, raw: str | bytes, default_channel: str | None = None) -> str:
        """One frame from the client; returns its message type for the handling-time metric
        (one of :data:`MESSAGE_TYPES`, or "other" for anything else: refused before it was
        read, not JSON, or of no known type). On a ``/ws/{channel}`` path, *default_channel*
        is that channel: a subscribe that names none gets it (docs/protocol.md)."""
        self.received += 1
        if self.principal is None and self.received > self.limits.preauth_messages:
            # an unauthenticated connection gets a few tries, not a service
            self.request_close(1008, "authenticate first")
            return "other"
        now = time.monotonic()
        wait = self.bucket.take(now)
        if wait:
            if self._strikes.take(now):
                self.request_close(1008, "message rate limit exceeded")
                return "other"
            self.error(
                ClientError(429, "rate_limit_exceeded", "too many messages", retry_after=wait)
            )
            return "other"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.error(ClientError(400, "invalid_json", "frames must be UTF-8 JSON text"))
                return "other"
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.error(ClientError(400, "invalid_json", "message is not valid JSON"))
            return "other"
        if default_channel is not None:
            _default_channel(msg, default_channel)
        await self.handle_message(msg)
        type_ = msg.get("type") if isinstance(msg, dict) else None
        return type_ if isinstance(type_, str) and type_ in MESSAGE_TYPES else "other"

    async def handle_message(self, msg: Any, in_batch: bool = False) -> None:
        id_ = message_id(msg) if isinstance(msg, dict) else None
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
            if type_ not in REGISTRY:
                raise bad_request(f"unknown message type {protocol_excerpt(type_)}")
            if type_ == "batch" and in_batch:
                raise bad_request("a batch cannot contain a batch")
            await REGISTRY.dispatch(self, type_, msg, id_, self.reply)
        except Exception as exc:  # the one ladder (bridge/errors.py): only unknown ones log
            kind = protocol_excerpt(msg.get("type")) if isinstance(msg, dict) else "?"
            self.reply(ws_error(exc, id_, what=f"handling a {kind} message"))

    # -- authentication and token refresh ---------------------------------------------------
    async def _auth(self, msg: dict[str, Any], id_: Any, send: Send) -> bool:
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
            return False
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
                return False
        self.principal = principal
        # No await from the principal's change to the end of _withdraw: nothing the new token
        # forbids is delivered in between.
        withdrawn = self._withdraw(principal) if previous is not None else None
        if legacy:
            send(message("auth_success", id_=id_, client_id=self.client_id, user=principal.sub))
        else:
            send(
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
        return True

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
        ended = self.subscriptions.withdraw(principal)
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

    # -- end -----------------------------------------------------------------------------------
    async def close(self) -> None:
        """Release every broker subscription (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.queue.clear()  # its bytes go back to the process-wide budget
        if self._forget_hub is not None:
            self._forget_hub()
        for task in list(self._tasks or ()):
            task.cancel()
        if self.device_sessions is not None:
            await self.device_sessions.connection_closed(self.reply)
        for sub in list(self.subscriptions.values()):
            await self._remove(sub)


def protocol_excerpt(value: Any) -> str:
    from ingest.names import safe_excerpt

    return safe_excerpt(value, 40)


# Each message type a client may send: its schema (bridge/contract/ws_client.py) and handler.
REGISTRY: Registry[Session] = Registry(
    {
        "auth": Session._auth,
        "authenticate": Session._auth,
        "ping": Session._ping,
        "pong": Session._pong,
        "subscribe": Session._subscribe,
        "subscribe-metrics": Session._subscribe_o1,
        "subscribe-logs": Session._subscribe_o1,
        "unsubscribe": Session._unsubscribe,
        "list_subscriptions": Session._list,
        "batch": Session._batch,
        "ack_alert": Session._ack_alert,
        "command": Session._command,
        "start_session": Session._sessions,
        "send_command": Session._sessions,
        "stop_session": Session._sessions,
        "delete_session": Session._sessions,
        "list_sessions": Session._sessions,
        "telemetry": Session._telemetry,
        "query": Session._query,
        "list_rules": Session._rules,
        "create_rule": Session._rules,
        "update_rule": Session._rules,
        "delete_rule": Session._rules,
    }
)

# The message types a client may send: the label values of the handling-time histogram;
# anything else is counted as "other", so a client cannot make up labels.
MESSAGE_TYPES = REGISTRY.types


def _default_channel(msg: Any, channel: str) -> None:
    """On /ws/{channel}, a subscribe that names no channel (nor topics or events, the other
    dialects' ways of saying what it wants) gets that one; the parsed frame is changed in
    place so that it is parsed only once."""
    if isinstance(msg, dict) and msg.get("type") == "subscribe" and "channel" not in msg:
        if "topics" not in msg and "events" not in msg:
            msg["channel"] = channel
