"""The ingest's rules and alerts: keep the rule set current, feed it stored readings, tick it,
store the alert events and publish them on ``alerts/{severity}/{device_id}``.

It owns a small pool of its own (rules, open alerts, alert writes), apart from the batch
writers' connections, so a slow alert write never holds a batch's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg

from ingest.prepared import IngestConfig, IngestStats
from ingest.rule_rows import alert_from_row, rule_from_row
from ingest.rules import AlertEvent, Rule, RuleEngine
from ingest.rules_listener import RulesListener
from ingest.stream import StreamPublisher
from ingest.wire import alert_event
from storage import names
from storage.alerts import (
    acknowledged_open,
    last_readings,
    load_rules,
    open_alerts,
    save_alerts,
)
from storage.errors import is_transient
from storage.pool import create_pool
from storage.readings import ReadingRow

log = logging.getLogger(__name__)


class RulesLoop:
    def __init__(self, config: IngestConfig, stats: IngestStats, stream: StreamPublisher) -> None:
        self.config = config
        self.stats = stats
        self._stream = stream
        self.engine = RuleEngine()
        self.restored = False  # the first load (rules, open alerts) is done
        self._changed = asyncio.Event()
        self.listener = RulesListener(
            config.database_url, self._changed, ping_s=config.rules_listen_ping_s
        )
        self._pool: asyncpg.Pool | None = None
        self._unsaved: list[AlertEvent] = []  # alert events whose write failed; retried
        # Set before the task is cancelled: the loop ends on it even when Python 3.11's
        # wait_for swallows a cancellation (see RulesListener.close).
        self.closing = False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def run(self) -> None:
        """Keep the engine's rules current and tick it once a second.

        A change to the rules table reaches every ingest process within about
        ``rules_debounce_s`` plus one query: the listener (ingest/rules_listener.py) sets
        ``_changed`` on each notification, and a burst of them (``rules load``) costs one
        reload. Every ``rules_reload_s`` the rules are read anyway, should a notification have
        been lost (the listening connection down, LISTEN impossible behind a proxy).
        """
        cfg = self.config
        changed = self._changed
        last_load = 0.0
        next_tick = 0.0
        while not self.closing:
            try:
                if not self.restored:
                    changed.clear()  # what this load reads needs no second reload
                    if self._pool is None:
                        self._pool = await create_pool(cfg.database_url, min_size=1, max_size=2)
                    self._set_rules(await self._fetch_rules())
                    silent_metrics = sorted(
                        {r.metric for r in self.engine.rules.values() if r.kind == "no_data"}
                    )
                    self.engine.restore(
                        [alert_from_row(r) for r in await open_alerts(self._pool)],
                        await last_readings(self._pool, silent_metrics),
                    )
                    self.restored = True
                    last_load = time.monotonic()
                elif changed.is_set() or time.monotonic() - last_load >= cfg.rules_reload_s:
                    if changed.is_set():
                        # notifications arriving meanwhile fold into this one reload
                        await asyncio.sleep(cfg.rules_debounce_s)
                    # cleared before reading: a change committed during the read sets it again
                    changed.clear()
                    try:
                        await self._reload_rules()
                    except Exception:
                        changed.set()  # not read yet: try again after the pause below
                        raise
                    last_load = time.monotonic()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + 1.0
                    await self.handle_alerts(self.engine.tick(time.time()))
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("rule evaluation failed")
                else:
                    log.warning("rules/alerts storage unavailable: %s", exc)
                # a pause, also when a notification is pending: no busy loop while it is down
                await asyncio.sleep(1.0)
            wait = max(0.0, min(next_tick, last_load + cfg.rules_reload_s) - time.monotonic())
            if not changed.is_set() and wait > 0:
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    pass

    async def _reload_rules(self) -> None:
        assert self._pool is not None
        self._set_rules(await self._fetch_rules())
        self.stats.rules_reloads += 1
        acked = await acknowledged_open(self._pool)
        self.engine.sync_acknowledged(
            {a["alert_id"]: (a["acknowledged_at"].timestamp(), a["acknowledged_by"]) for a in acked}
        )

    def _set_rules(self, rules: list[Rule]) -> None:
        """Swap the whole rule set in one step (the engine replaces its mapping, it never edits
        it), between two batches: a batch is evaluated without awaiting, on this same event
        loop, so it sees either the old rules or the new ones, never a mix."""
        before = self.engine.rules
        self.engine.set_rules(rules)
        if set(before) != set(self.engine.rules) or any(
            before[k] != r for k, r in self.engine.rules.items()
        ):
            log.info("rules loaded: %d (%d enabled)", len(rules), sum(r.enabled for r in rules))

    async def _fetch_rules(self) -> list[Rule]:
        assert self._pool is not None
        rules = []
        for row in await load_rules(self._pool):
            try:
                rules.append(rule_from_row(row))
            except ValueError as exc:
                log.error("ignoring rule %s: %s", names.safe_excerpt(row.get("rule_id")), exc)
        return rules

    def feed(self, rows: Sequence[ReadingRow], now: float) -> list[AlertEvent]:
        """The alert events of a committed batch's readings, in device-time order."""
        engine = self.engine
        watched = engine.metrics
        if not watched:
            return []
        events: list[AlertEvent] = []
        evaluated = [r for r in rows if r[1] in watched]
        self.stats.rules_evaluated += len(evaluated)
        for r in sorted(evaluated, key=lambda r: r[2]):
            events.extend(engine.feed(r[0], r[1], r[3], now))
        return events

    async def after_commit(self, rows: Sequence[ReadingRow], committed: float) -> None:
        """Evaluate a committed batch; a failed alert write is kept and retried later."""
        if not self.restored:  # not before the open alerts are known: no duplicates
            return
        try:
            await self.handle_alerts(self.feed(rows, committed))
        except Exception as exc:  # kept in _unsaved and retried with the next batch/tick
            log.warning("storing alerts failed (%s); will retry", exc)

    async def handle_alerts(self, events: list[AlertEvent]) -> None:
        """Store, then publish on alerts/{severity}/{device_id}. A failed write is retried."""
        events = self._unsaved + events
        self._unsaved = []
        if not events:
            return
        try:
            assert self._pool is not None
            async with self._pool.acquire() as conn:
                await save_alerts(conn, [(e.kind, e.alert) for e in events])
        except Exception:
            self._unsaved = events[-10_000:]
            raise
        topics = self.config.topics
        self._stream.publish_many(
            [
                (topics.alert(e.alert.severity, e.alert.device_id), alert_event(e.event, e.alert))
                for e in events
            ],
            retain=False,
        )
        self.stats.alerts += len(events)
