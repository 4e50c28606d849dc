"""A Python client for the bridge's WebSocket API that reconnects by itself.

    async with BridgeClient("ws://127.0.0.1:8765/ws", token) as client:
        async with client.subscribe("telemetry", device_id=["pump-1", "pump-2"]) as updates:
            async for update in updates:
                print(update.device_id, update.metric, update.value)

What it does for the caller:

- **Reconnects** with jittered exponential backoff when the connection drops (front restart,
  network), and **resubscribes**. Telemetry, alerts and devices subscriptions resume from the
  ``received_at`` of the last message the caller got (``since``), so nothing is missed, and
  messages already delivered are dropped if the server sends them again: the iterator sees
  no gap and no duplicate. (Other channels resubscribe without a replay.)
- **Requests** (``query``, ``command``, ``ack_alert``, ``request``) are correlated with their
  reply by ``id``. A request in flight when the connection drops raises
  :class:`ConnectionLostError` (commands are not idempotent, so it is not resent).
- **Tokens**: a fixed token, or ``token_provider`` (a function or coroutine function returning
  a fresh token) that is called before every connection and before the current token
  expires, and the new token is sent on the open connection (``auth``), so a long-lived
  client never gets closed with 4001.
- **Errors** from the server raise :class:`BridgeError` (with ``code``, ``error``,
  ``message``), :class:`AuthError` for 401/403. A subscription ends with ``BridgeError`` 507
  when the caller falls more than ``max_queue`` updates behind and 504 when its
  resubscription gets no reply: subscribe again with ``since=subscription.resume_point``.

The modules: ``messages`` (typed messages, frame parsing), ``errors``, ``requests`` (replies
matched by id), ``tokens`` and the bookkeeping of ``subscription`` (resume point, repeats
dropped: ``DeliveryLog``) are pure; ``subscription.Subscription`` is the caller's iterator,
``connection`` connects, reconnects and refreshes the token, and ``core`` is
:class:`BridgeClient`.
"""

from bridge.client.core import BridgeClient
from bridge.client.errors import AuthError, BridgeError, ClientClosedError, ConnectionLostError
from bridge.client.messages import (
    AlertEvent,
    DeviceStatus,
    Event,
    SystemStatus,
    TelemetryUpdate,
    Update,
    parse_live,
)
from bridge.client.subscription import RESUMABLE, SEEN_MEMORY, Subscription
from bridge.client.tokens import TokenProvider

__all__ = [
    "RESUMABLE",
    "SEEN_MEMORY",
    "AlertEvent",
    "AuthError",
    "BridgeClient",
    "BridgeError",
    "ClientClosedError",
    "ConnectionLostError",
    "DeviceStatus",
    "Event",
    "Subscription",
    "SystemStatus",
    "TelemetryUpdate",
    "TokenProvider",
    "Update",
    "parse_live",
]
