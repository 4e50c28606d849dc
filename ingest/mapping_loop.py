"""The ingest's mappings, kept current without a restart.

The mappings are loaded at start (a bad one stops the start with its message) and again when
they may have changed: a NOTIFY on ``mappings_changed`` (the ``mappings`` table's trigger,
storage/migrations/0008_mappings.sql), a changed fingerprint of the source (the mappings file's
mtime, checked every ``mappings_poll_s``), and every ``mappings_reload_s`` regardless.

A reload subscribes to the new filters first, then routes with the new set, then unsubscribes
from the filters no longer needed: no message on a kept or added topic is missed, and messages
received before the swap still find their mapping (ingest/preparing.py keeps the previous set
for what the new one does not route). A reload that fails keeps the mappings in use.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ingest.mapped import MappingRouter, MappingSource, NoMappings
from ingest.mqtt import AsyncMqtt
from ingest.prepared import IngestConfig, IngestStats
from ingest.preparing import Preparer
from ingest.rules_listener import RulesListener
from storage import names
from storage.mappings import held_subscriptions, remember_subscriptions
from storage.pool import connect

log = logging.getLogger(__name__)

MAPPINGS_CHANNEL = "mappings_changed"
APPLICATION_NAME = "telemetry-bridge-mappings-listener"
_MAX_FILTER_LEVELS = 32


def valid_filter(filter_: str) -> bool:
    """Whether a mapping's filter is one the ingest may subscribe to: a plain MQTT filter
    (wildcards whole levels, ``#`` last), not a ``$`` topic, not a shared subscription."""
    if not filter_ or filter_.startswith("$") or "\x00" in filter_ or len(filter_) > 512:
        return False
    levels = filter_.split("/")
    if len(levels) > _MAX_FILTER_LEVELS:
        return False
    for i, level in enumerate(levels):
        if ("+" in level or "#" in level) and level not in ("+", "#"):
            return False
        if level == "#" and i != len(levels) - 1:
            return False
    return True


class MappingLoop:
    """Loads the mappings into the preparer and keeps the MQTT subscriptions matching them."""

    def __init__(
        self, config: IngestConfig, stats: IngestStats, preparer: Preparer, source: MappingSource
    ) -> None:
        self._config = config
        self._stats = stats
        self._preparer = preparer
        self._source = source
        self.changed = asyncio.Event()
        self.listener: RulesListener | None = None
        if source.uses_database and config.mappings_listen:
            self.listener = RulesListener(
                config.database_url,
                self.changed,
                ping_s=config.rules_listen_ping_s,
                channel=MAPPINGS_CHANNEL,
                application_name=APPLICATION_NAME,
                what="mappings",
            )
        self.subscribed: list[str] = []  # what the ingest subscribes to for the mappings
        self.closing = False
        self._fingerprint: object = None

    def _subscription(self, filter_: str, unshared: set[str]) -> str:
        shared = self._config.shared_subscription and filter_ not in unshared
        return self._config.topics.mapped_subscription(filter_, shared=shared)

    async def _load(self) -> tuple[MappingRouter, list[str]]:
        self._fingerprint = self._source.fingerprint()
        router = await self._source.load()
        filters = list(dict.fromkeys(router.filters()))
        bad = [f for f in filters if not valid_filter(f)]
        if bad:
            raise ValueError(f"invalid mapping filter {names.safe_excerpt(bad[0])}")
        # a stateful mapping (Sparkplug) needs every message in every ingest: not shared
        unshared: set[str] = getattr(router, "unshared_filters", set)()
        return router, [self._subscription(f, unshared) for f in filters]

    async def start(self) -> list[str]:
        """The first load; the subscriptions the MQTT connection starts with."""
        router, self.subscribed = await self._load()
        self._preparer.use_mappings(router)
        if self.subscribed:
            log.info("mapped topics: %s", ", ".join(self.subscribed))
        return list(self.subscribed)

    async def drop_stale(self, mqtt: AsyncMqtt) -> list[str]:
        """Once connected: unsubscribe from mapped subscriptions the broker session may still
        hold from an earlier run (a mapping removed while this ingest was stopped), and record
        what is held now. A database error is logged: the stale ones then stay until the
        session expires, dead-lettering what arrives on them as no_mapping."""
        stale: list[str] = []
        try:
            conn = await connect(self._config.database_url)
            try:
                held = await held_subscriptions(conn, self._config.client_id)
                stale = [s for s in held if s not in self.subscribed]
                for sub in stale:
                    await mqtt.remove_subscription(sub)
                await remember_subscriptions(conn, self._config.client_id, self.subscribed)
            finally:
                await conn.close()
        except Exception as exc:
            log.warning("could not check the mapped subscriptions of an earlier run: %s", exc)
        if stale:
            log.info("left mapped subscriptions no mapping needs any more: %s", stale)
        return stale

    async def _remember(self) -> None:
        try:
            conn = await connect(self._config.database_url)
            try:
                await remember_subscriptions(conn, self._config.client_id, self.subscribed)
            finally:
                await conn.close()
        except Exception as exc:
            log.warning("could not record the mapped subscriptions: %s", exc)

    async def reload(self, mqtt: AsyncMqtt) -> bool:
        """Load again and apply; whether the new mappings are in use."""
        try:
            router, wanted = await self._load()
        except Exception as exc:
            self._stats.mapping_reload_errors += 1
            log.error("mappings not reloaded, the previous ones stay in use: %s", exc)
            return False
        added = [s for s in wanted if s not in self.subscribed]
        removed = [s for s in self.subscribed if s not in wanted]
        for sub in added:
            code = await mqtt.add_subscription(sub, 1)
            if code is not None and code >= 0x80:
                log.error("the broker refused the subscription to %s: reason 0x%02x", sub, code)
        self._preparer.use_mappings(router)
        for sub in removed:
            await mqtt.remove_subscription(sub)
        self.subscribed = wanted
        self._stats.mapping_reloads += 1
        if added or removed:
            log.info("mappings reloaded: subscribed to %s, unsubscribed from %s", added, removed)
            await self._remember()
        return True

    async def run(self, mqtt: AsyncMqtt) -> None:
        """Reload on a notification, a changed source, or the periodic timer; until closed."""
        cfg = self._config
        next_periodic = time.monotonic() + cfg.mappings_reload_s
        while not self.closing:
            try:
                await asyncio.wait_for(self.changed.wait(), cfg.mappings_poll_s)
            except TimeoutError:
                pass
            if self.closing:
                return
            now = time.monotonic()
            try:
                moved = self._source.fingerprint() != self._fingerprint
            except Exception:
                moved = False  # the periodic reload says what is wrong
            if not (self.changed.is_set() or moved or now >= next_periodic):
                continue
            # a burst of changes (a CLI run of several statements) becomes one reload
            await asyncio.sleep(cfg.rules_debounce_s)
            self.changed.clear()
            next_periodic = now + cfg.mappings_reload_s
            try:
                await self.reload(mqtt)
            except (ConnectionError, TimeoutError) as exc:
                # the connection went away mid-change: it resubscribes to the remembered list
                log.warning("mappings reload interrupted by the broker connection: %s", exc)


__all__ = ["MAPPINGS_CHANNEL", "MappingLoop", "NoMappings", "valid_filter"]
