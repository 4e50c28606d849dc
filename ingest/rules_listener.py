"""Hear of rule changes as they commit: LISTEN on ``rules_changed`` over a dedicated connection.

A trigger on the rules table (storage/migrations/0006_rules_notify.sql) notifies the channel
for every statement that changes it, whoever runs it: the CLI, the WebSocket front, psql. Every
ingest process listens, so all of them reload, not just one. The listener only sets an
:class:`asyncio.Event`; the ingest's rules loop debounces it and reloads the table (notifications
are hints: their payload is not trusted to carry the change).

The connection is its own, never a pooled one (a pooled connection would stop listening when it
is handed back), and it must be a real session: behind a transaction-pooling proxy such as
PgBouncer in transaction mode LISTEN does not work, and only the periodic reload applies changes.

When the connection is lost (the server restarts, ``pg_terminate_backend``, a network failure
found by the periodic ping) the listener reconnects with jittered backoff and LISTENs again;
since changes made meanwhile were announced to nobody, every (re)connection also asks for one
reload.
"""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from storage.errors import is_transient
from storage.health import ping
from storage.pool import connect

log = logging.getLogger(__name__)

RULES_CHANNEL = "rules_changed"
# What the listening connection is called in pg_stat_activity.
APPLICATION_NAME = "telemetry-bridge-rules-listener"


class RulesListener:
    """Sets ``changed`` on every notification and after every (re)connection; runs until
    cancelled."""

    def __init__(
        self,
        database_url: str,
        changed: asyncio.Event,
        *,
        ping_s: float = 15.0,
        max_backoff_s: float = 10.0,
        channel: str = RULES_CHANNEL,
        application_name: str = APPLICATION_NAME,
        what: str = "rules",
    ) -> None:
        # The same listener serves the mappings (ingest/mapping_loop.py): another channel.
        self._channel = channel
        self._application_name = application_name
        self._what = what
        self._url = database_url
        self._changed = changed
        self._ping_s = ping_s
        self._max_backoff_s = max_backoff_s
        self.listening = False
        self.connections = 0  # successful LISTENs since start (more than 1: it reconnected)
        self.notifications = 0
        self._closed = False

    def close(self) -> None:
        """Stop for good: the loop ends at its next step even if a cancellation was lost.

        Python 3.11's ``asyncio.wait_for`` returns the inner result instead of raising when a
        cancellation arrives just as the awaited thing completes, so a loop that reconnects on
        every error could outlive its cancellation (and then retry against a dropped database
        forever). Owners call this before they cancel the task."""
        self._closed = True

    def _notified(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        self.notifications += 1
        self._changed.set()

    async def run(self) -> None:
        delay = 0.2
        while not self._stopping():
            try:
                await self._listen()
            except Exception as exc:
                if self._stopping():
                    break
                if self.listening:  # it was up: start the backoff over
                    delay = 0.2
                log.log(
                    logging.WARNING if is_transient(exc) else logging.ERROR,
                    "%s listener: %s: %s; %s still reload periodically, "
                    "listening again in about %.1fs",
                    self._what,
                    type(exc).__name__,
                    exc,
                    self._what,
                    delay,
                )
            finally:
                self.listening = False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._max_backoff_s)

    def _stopping(self) -> bool:
        task = asyncio.current_task()
        return self._closed or (task is not None and task.cancelling() > 0)

    async def _listen(self) -> None:
        """One connection: LISTEN, then watch it until it is lost (raises)."""
        conn = await connect(self._url, application_name=self._application_name)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(self._channel, self._notified)
            self.listening = True
            self.connections += 1
            if self.connections > 1:
                log.info("listening for %s changes again", self._what)
            # Changes committed while nobody listened were announced to nobody.
            self._changed.set()
            await self._watch(conn, lost)
        finally:
            conn.terminate()  # no await: safe when cancelled, and the peer may be gone

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return never; raise once the connection is gone. An idle connection learns of a
        silently dead peer only when it sends something, hence the ping."""
        while not lost.is_set() and not self._stopping():
            try:
                await asyncio.wait_for(lost.wait(), self._ping_s)
            except TimeoutError:
                await ping(conn, timeout_s=5)
        raise ConnectionError("the listening connection was closed")
