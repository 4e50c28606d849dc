"""The front's database health check, on a connection of its own.

It used to borrow a connection from the front's pool: with every pool connection held (by
stalled CSV exports, once) the check timed out waiting for one and ``/health`` reported the
database down while PostgreSQL was fine. A dedicated connection answers "is the database
reachable" and nothing else; a busy pool is a capacity question, not a health one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from storage.health import ping
from storage.pool import connect

log = logging.getLogger(__name__)


class DatabaseProbe:
    def __init__(self, dsn: str, interval_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.dsn = dsn
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.ok = True  # until the first check says otherwise: the pool just connected
        self._conn: asyncpg.Connection | None = None

    async def run(self) -> None:
        """Check now and every ``interval_s`` until cancelled."""
        try:
            while True:
                ok = await self.check()
                if ok and not self.ok:
                    log.info("database reachable again")
                elif not ok and self.ok:
                    log.warning("database unreachable (health check)")
                self.ok = ok
                await asyncio.sleep(self.interval_s)
        finally:
            self._drop()

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self.dsn, connect_timeout=self.timeout_s)
                await ping(self._conn)
            return True
        except Exception:  # any failure means "down" until a fresh connection answers
            self._drop()
            return False

    def _drop(self) -> None:
        # terminate(), not close(): a connection that just timed out may never answer a
        # polite close, and the probe must not hang on it.
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.terminate()
            self._conn = None
