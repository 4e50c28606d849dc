"""The front's message registry: for each client message type, its schema and its handler.

The schemas are the contract's models of client messages (``bridge/contract/ws_client.py``,
the same ones docs/asyncapi.json is made from), so what the dispatcher checks and what the
document promises cannot drift apart. The dispatcher (:meth:`Registry.dispatch`) looks up the
``type``, validates the message against its schema and calls the handler with a ``send``
callable for its replies.

The error a client gets for an invalid message is part of the wire contract (docs/protocol.md,
section 6): each handler's own checks say what is wrong in the protocol's words (pydantic's
texts do not). So a message its schema refuses still goes to its handler, which refuses it
with today's code and text; a schema never refuses what its handler accepts (the handler's
checks are the contract's rules), and a handler that does accept one is a schema that has
drifted: it is logged, and the unit tests (tests/unit/test_registry.py) hold the cases.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union, get_args

from pydantic import TypeAdapter, ValidationError, create_model

from bridge.contract import ws_client as c

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]
Owner = TypeVar("Owner")
# (owner, message, its id, send): a coroutine function, or a plain one when it needs no await
# (those are unit-tested without an event loop). A handler refuses a message by raising
# ClientError; one that refuses with a reply of its own instead (auth's auth_response)
# returns False.
Handler = Callable[[Owner, dict[str, Any], Any, Send], Awaitable[bool | None] | bool | None]

# The schema of each message type a client may send (docs/protocol.md sections 3, 5, 7, 8).
# ``subscribe`` has four forms: a channel, OpenFrame's topics, Nexus' events, o1's deployment.
SCHEMAS: dict[str, Any] = {
    "auth": c.Auth,
    "authenticate": c.Authenticate,
    "ping": c.ClientPing,
    "pong": c.ClientPong,
    "subscribe": Union[  # noqa: UP007 (a runtime union of classes for TypeAdapter)
        c.SubscribeChannel, c.SubscribeTopics, c.SubscribeEvents, c.SubscribeDeployment
    ],
    "subscribe-metrics": c.SubscribeMetrics,
    "subscribe-logs": c.SubscribeLogs,
    "unsubscribe": c.Unsubscribe,
    "list_subscriptions": c.ListSubscriptions,
    "batch": c.ClientBatch,
    "ack_alert": c.AckAlert,
    "command": c.Command,
    "start_session": c.StartSession,
    "send_command": c.SendCommand,
    "stop_session": c.StopSession,
    "delete_session": c.DeleteSession,
    "list_sessions": c.ListSessions,
    "telemetry": c.Telemetry,
    "query": c.Query,
    "list_rules": c.ListRules,
    "create_rule": c.CreateRule,
    "update_rule": c.UpdateRule,
    "delete_rule": c.DeleteRule,
}


@dataclass(frozen=True, slots=True)
class Entry(Generic[Owner]):
    schema: TypeAdapter[Any]
    handler: Handler[Owner]


class Registry(Generic[Owner]):
    """Message type -> (schema, handler); built once per process, shared by every session."""

    def __init__(self, handlers: Mapping[str, Handler[Owner]]) -> None:
        if set(handlers) != set(SCHEMAS):
            missing = sorted(set(SCHEMAS) ^ set(handlers))
            raise ValueError(f"every message type needs a schema and a handler: {missing}")
        self._entries = {t: Entry(TypeAdapter(_any_id(SCHEMAS[t])), h) for t, h in handlers.items()}
        self.types = frozenset(self._entries)
        self.drifted = 0  # messages a schema refused and its handler accepted

    def __contains__(self, type_: object) -> bool:
        return type_ in self._entries

    def valid(self, type_: str, msg: dict[str, Any]) -> bool:
        """Whether ``msg`` fits the schema of ``type_`` (a registered type)."""
        try:
            self._entries[type_].schema.validate_python(msg)
        except ValidationError:
            return False
        return True

    async def dispatch(
        self, owner: Owner, type_: str, msg: dict[str, Any], id_: Any, send: Send
    ) -> None:
        """Validate ``msg`` (of the registered ``type_``) and call its handler, which raises
        a :class:`bridge.protocol.ClientError` for what it refuses (the caller turns it into
        the error reply); ``id_`` is the message's id when a reply may echo it
        (:func:`message_id`)."""
        entry = self._entries[type_]
        valid = self.valid(type_, msg)
        result = entry.handler(owner, msg, id_, send)
        if isinstance(result, Awaitable):
            result = await result
        if not valid and result is not False:
            # reached only when the handler accepted what the schema refused: the schema is
            # stricter than the contract's rules (only the type is logged: no client data)
            self.drifted += 1
            log.warning("the schema of %s refused a message its handler accepted", type_)


def _any_id(schema: Any) -> Any:
    """The schema with any ``id`` allowed: a bad id is not echoed (:func:`message_id`) but
    the message is handled, so the schema must not refuse it."""
    members = get_args(schema) or (schema,)
    loose = tuple(
        create_model(m.__name__, __base__=m, __module__=__name__, id=(Any, None)) for m in members
    )
    return Union[loose] if len(loose) > 1 else loose[0]  # noqa: UP007


def message_id(msg: dict[str, Any]) -> Any:
    """The message's ``id`` when a reply may echo it (a string or integer of at most 128
    characters), else None: a bad id is not an error, it is just not echoed."""
    id_ = msg.get("id")
    if id_ is not None and not (
        isinstance(id_, str | int) and not isinstance(id_, bool) and len(str(id_)) <= 128
    ):
        return None
    return id_
