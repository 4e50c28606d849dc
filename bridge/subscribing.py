"""The client's requests about subscriptions: ``subscribe`` in each dialect's form,
``unsubscribe`` and ``list_subscriptions``.

Parsing and replies; the broker subscriptions, live delivery and replays they start are in
``bridge/delivery.py``. The forms (channel, topics, events, o1's subscribe-metrics and
subscribe-logs) are described in docs/protocol.md, sections 3, 7 and 8.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from bridge.delivery import Delivery
from bridge.dialects import EVENT_CHANNELS
from bridge.protocol import ClientError, message
from bridge.registry import Send
from bridge.subscription_set import RESUMABLE_CHANNELS, subscription_id
from bridge.subscriptions import (
    CHANNELS,
    FILTER_CHANNELS,
    Selector,
    authorize,
    filters_of,
    inapplicable,
    parse_channel_subscribe,
)
from ingest.names import safe_excerpt
from ingest.payload import parse_timestamp


class Subscribing(Delivery):
    async def _subscribe(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
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
            await self._subscribe_named(msg, id_, "topics", send)
        elif "events" in msg:
            await self._subscribe_named(msg, id_, "events", send)
        else:
            selector = parse_channel_subscribe(msg)
            since = self._since(msg, selector)
            existing = self.subscriptions.get(subscription_id(selector, "channel", ""))
            if existing is not None:
                # The same subscription again: it is live already, and whatever a `since`
                # asks for was replayed when it was made. Replaying again per repeat would
                # let one small message make the server read and queue 10,000 frames.
                authorize(selector, self.principal)  # type: ignore[arg-type]
                send(
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
            send(
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
                held = self.subscriptions.release_held(sub)  # no await: live resumes in order
                now = time.monotonic()
                for levels, event in held:
                    self._deliver_replayed(sub, levels, event, now)
            if sub.replay_again and not self.closed:
                # the broker link had a gap while this read storage: one more replay, queued
                # with the connection's other gap replays
                sub.replay_again = False
                self._replay_gap(sub)
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

    async def _subscribe_named(
        self, msg: dict[str, Any], id_: Any, dialect: str, send: Send
    ) -> None:
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
            send(message("subscription_confirmed", id_=id_, topics=names_, subscription_ids=ids))
        else:
            send(message("subscribed", id_=id_, events=names_, subscription_ids=ids))

    async def _subscribe_o1(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
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
        send(
            message(
                "subscribed",
                id_=id_,
                subscriptionId=sub.id,
                subscription_id=sub.id,
                subscription_ids=ids,
            )
        )

    async def _unsubscribe(self, msg: dict[str, Any], id_: Any, send: Send) -> None:
        """By ``subscription_id`` (o1: ``subscriptionId``): that one; by ``topics`` or
        ``events``: those named; by ``channel``: that channel's subscriptions, or with
        ``device_id`` those naming only devices among the ones given
        (:meth:`SubscriptionSet.named_by <bridge.subscription_set.SubscriptionSet.named_by>`)."""
        targets = self.subscriptions.named_by(msg)
        if not targets:
            raise ClientError(404, "not_found", "no matching subscription")
        for sub in targets:
            await self._remove(sub)
        ids = [s.id for s in targets]
        if "topics" in msg:
            send(
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
        send(message("unsubscribed", id_=id_, **fields))

    def _list(self, _msg: dict[str, Any], id_: Any, send: Send) -> None:
        subs = [s.describe() for s in self.subscriptions.values()]
        send(message("subscriptions_list", id_=id_, subscriptions=subs, count=len(subs)))
